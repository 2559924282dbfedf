#!/usr/bin/env bash
# Creates (or refreshes) .venv with the Python packages the test suite uses:
# the official `openai` SDK, pytest and schemathesis, pinned in
# tests/python/requirements.txt. Idempotent: does nothing when .venv already
# holds exactly those pins. Prints the venv's python on its last line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

req=tests/python/requirements.txt
venv=.venv
stamp="$venv/.pagoda-requirements"
python=${PYTHON:-python3}

if ! command -v "$python" >/dev/null 2>&1; then
    echo "python-env: $python not found; install Python 3.9+ (Debian: python3 python3-venv)" >&2
    exit 1
fi
if [[ -x "$venv/bin/python" && -f "$stamp" ]] && cmp -s "$req" "$stamp"; then
    echo "python-env: $venv is up to date" >&2
else
    echo "python-env: installing $(grep -cv '^\s*\(#\|$\)' "$req") pinned packages into $venv" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
fi
echo "$venv/bin/python"
