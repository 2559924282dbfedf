#!/usr/bin/env bash
# What each activation path costs in next-token distributions: for every
# model given (default: the default model, the Qwen2.5-Coder GGUFs of
# scripts/fetch-model.sh when present, and the 1B-shaped models of
# quant-matrix.sh when present), `pagoda quality` compares int8 and int8x2
# activations (f16 KV cache, the server's default) with f32 activations and
# an f32 cache over tests/fixtures/quality_text.txt, and prints one markdown
# row per model and path. Not part of CI.
#
#   scripts/bench/quality-matrix.sh                       everything present, 1024 tokens
#   TOKENS=512 scripts/bench/quality-matrix.sh models/x.gguf ...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

TOKENS="${TOKENS:-1024}"
cargo build --release --locked -p pagoda-server >&2
if [[ $# -gt 0 ]]; then
    models=("$@")
else
    models=(models/SmolLM2-135M-Instruct.Q4_1.gguf)
    for m in models/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf models/Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf \
        target/bench-models/llama-1b.{Q4_0,Q8_0,Q4_K_M,Q5_K_M,Q6_K,Q3_K_M,Q2_K,Q5_0,IQ4_NL}.gguf; do
        [[ -f "$m" ]] && models+=("$m")
    done
fi
echo "| model | activations | auto picks | mean KL (nats) | p99 KL | top-1 agreement | perplexity |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for m in "${models[@]}"; do
    auto=$(target/release/pagoda quality --model "$m" --max-tokens 2 --json 2>/dev/null \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["precision"].split(" activations")[0].split("; ")[-1])')
    for a in int8 int8x2; do
        target/release/pagoda quality --model "$m" --activations "$a" --max-tokens "$TOKENS" --json 2>/dev/null \
            | AUTO="$auto" python3 -c '
import json, os, sys
d = json.load(sys.stdin)
act = d["setting"].split()[0].split("=")[1]
row = [d["model"], act, os.environ["AUTO"], "%.2e" % d["mean_kl"], "%.2e" % d["p99_kl"],
       "%.2f%% of %d" % (100 * d["top1_agreement"], d["positions"]),
       "%.3f (f32: %.3f)" % (d["candidate_perplexity"], d["reference_perplexity"])]
print("| " + " | ".join(row) + " |")'
    done
done
