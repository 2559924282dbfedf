#!/usr/bin/env bash
# pagoda's whole test suite, as CI runs it (.ci/run calls this script).
#
# Fetches what the tests need (the default model; the header of the real
# DeepSeek-R1-Distill-Qwen GGUF for tokenizer tests; the real Gemma 3 270M
# and Qwen2.5-Coder-0.5B-Instruct for greedy parity and real tool calling; Debian's chromium and
# chromedriver for the playground test; the pinned Python clients in .venv),
# checks formatting and lints, builds the workspace (the
# `pagoda` binary that the end-to-end tests run), runs every Rust test, then
# the Python suite: the official `openai` SDK, the deployment files
# (hadolint, manifests, the binary as the image starts it), the web
# playground in headless Chromium, and a derandomized schemathesis run
# against the real server (fixed examples, no time budget: the gate passes
# or fails alike on every run; scripts/explore.sh explores further).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "fetching test models"
scripts/fetch-model.sh
scripts/fetch-model.sh r1-part
scripts/fetch-model.sh gemma3-270m
scripts/fetch-model.sh qwen2.5-coder-0.5b

step "headless browser for the playground test (Debian chromium, chromedriver)"
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    sudo=""
    [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver >/dev/null
fi
chromium --version

step "python clients (.venv)"
python=$(scripts/python-env.sh | tail -n 1)

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build"
cargo build --workspace --all-targets --locked

step "cargo test"
cargo test --workspace --locked

step "python suite (openai SDK, schemathesis)"
# pytest exits 5 when it collects nothing: that, too, is a failure.
(cd tests/python && "../../$python" -m pytest -q -p no:cacheprovider)
