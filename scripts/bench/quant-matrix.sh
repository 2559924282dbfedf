#!/usr/bin/env bash
# pagoda against llama.cpp's server on a 1B-class model in every common GGUF
# type, side by side in one run (scripts/bench/quant_matrix.py prints the
# table). Builds pagoda in release, the peer and its llama-quantize from one
# llama.cpp source (scripts/bench/build-llama-server.sh), writes the model
# once with random weights and the default model's tokenizer
# (scripts/bench/make_model.py), quantizes it into each type, and measures
# the machine's read bandwidth for the decode bound. Not part of CI.
#
#   scripts/bench/quant-matrix.sh                      every type, one round
#   TYPES="Q4_K_M Q8_0" scripts/bench/quant-matrix.sh --rounds 3
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

TYPES="${TYPES:-Q4_0 Q8_0 Q4_K_M Q5_K_M Q6_K Q3_K_M Q2_K Q5_0 IQ4_NL}"
dir=target/bench-models

scripts/fetch-model.sh >&2
cargo build --release --locked -p pagoda-server >&2
cargo build --release --locked -p pagoda-models --example kernel_speed >&2
peer=$(scripts/bench/build-llama-server.sh | tail -n 1)
quantize="$(dirname "$peer")/llama-quantize"
[[ -x .venv-bench/bin/python ]] || python3 -m venv .venv-bench
.venv-bench/bin/python -m pip install --quiet -r scripts/bench/requirements.txt
mkdir -p "$dir"
[[ -f "$dir/llama-1b.f16.gguf" ]] || .venv-bench/bin/python scripts/bench/make_model.py --out "$dir/llama-1b.f16.gguf"
models=()
for t in $TYPES; do
    out="$dir/llama-1b.$t.gguf"
    [[ -f "$out" ]] || "$quantize" "$dir/llama-1b.f16.gguf" "$out" "$t" 2 >&2
    models+=("$out")
done
bandwidth=$(target/release/examples/kernel_speed bandwidth)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); read bandwidth ${bandwidth} GB/s"
exec .venv-bench/bin/python scripts/bench/quant_matrix.py \
    --pagoda target/release/pagoda --llama-server "$peer" --threads "$(nproc)" \
    --bandwidth "$bandwidth" --models "${models[@]}" "$@"
