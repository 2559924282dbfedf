#!/usr/bin/env bash
# pagoda's whole test suite, as CI runs it (.ci/run calls this script).
#
# Fetches what the tests need (the default model; the header of the real
# DeepSeek-R1-Distill-Qwen GGUF for tokenizer tests), checks formatting and
# lints, builds the workspace (the `pagoda` binary that the end-to-end tests
# run) and runs every Rust test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "fetching test models"
scripts/fetch-model.sh
scripts/fetch-model.sh r1-part

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build"
cargo build --workspace --all-targets --locked

step "cargo test"
cargo test --workspace --locked
