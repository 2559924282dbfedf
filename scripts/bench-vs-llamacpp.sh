#!/usr/bin/env bash
# pagoda against llama.cpp's server on the same GGUF, side by side in one
# run (see scripts/bench/serve_bench.py for the workload). Builds pagoda in
# release and the peer from source (scripts/bench/build-llama-server.sh);
# extra arguments go to the driver, e.g. --rounds 5 or
# --pagoda-args "--activations int8". Not part of CI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/fetch-model.sh
cargo build --release --locked -p pagoda-server >&2
peer=$(scripts/bench/build-llama-server.sh | tail -n 1)
[[ -x .venv-bench/bin/python ]] || {
    python3 -m venv .venv-bench
    .venv-bench/bin/python -m pip install --quiet -r scripts/bench/requirements.txt
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
exec .venv-bench/bin/python scripts/bench/serve_bench.py \
    --pagoda target/release/pagoda --llama-server "$peer" \
    --model models/SmolLM2-135M-Instruct.Q4_1.gguf --threads "$(nproc)" "$@"
