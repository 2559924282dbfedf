#!/usr/bin/env bash
# Builds the benchmark's peer, llama.cpp's `llama-server`, and its
# `llama-quantize` (which turns an f16 GGUF from scripts/bench/make_model.py
# into Q4_K_M, Q8_0, ...) from the source package of llama-cpp-python 0.3.36
# on PyPI (which vendors llama.cpp), for this machine's CPU (GGML_NATIVE).
# cmake and ninja come from PyPI into .venv-bench. Idempotent: the binaries
# are kept in target/peer/build/bin/ and rebuilt only when one is missing.
# Prints llama-server's path on its last line. Not part of CI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
URL="https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-$VERSION.tar.gz"
peer=target/peer
bin="$peer/build/bin/llama-server"
quantize="$peer/build/bin/llama-quantize"

if [[ -x "$bin" && -x "$quantize" ]]; then
    echo "build-llama-server: $bin and $quantize are built" >&2
    echo "$bin"
    exit 0
fi
venv=.venv-bench
if [[ ! -x "$venv/bin/cmake" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet -r scripts/bench/requirements.txt
fi
mkdir -p "$peer"
tarball="$peer/llama_cpp_python-$VERSION.tar.gz"
if [[ ! -f "$tarball" ]]; then
    echo "build-llama-server: downloading llama-cpp-python $VERSION (source)" >&2
    curl -fsSL -o "$tarball.part" "$URL"
    mv "$tarball.part" "$tarball"
fi
echo "$SHA256  $tarball" | sha256sum -c --quiet - || {
    echo "build-llama-server: checksum mismatch for $tarball" >&2
    rm -f "$tarball"
    exit 1
}
rm -rf "$peer/src" && mkdir -p "$peer/src"
tar -xzf "$tarball" -C "$peer/src" --strip-components=1
echo "build-llama-server: building llama-server and llama-quantize (a few minutes on 2 cores)" >&2
# llama-server and llama-quantize both live under tools/, which needs
# LLAMA_BUILD_COMMON and LLAMA_BUILD_TOOLS. LLAMA_USE_PREBUILT_UI=OFF: the
# server's web UI would be fetched from Hugging Face at build time, which is
# not reachable here; the API works without it.
PATH="$PWD/$venv/bin:$PATH" cmake -S "$peer/src/vendor/llama.cpp" -B "$peer/build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >&2
PATH="$PWD/$venv/bin:$PATH" cmake --build "$peer/build" --target llama-server llama-quantize -j "$(nproc)" >&2
for b in "$bin" "$quantize"; do
    [[ -x "$b" ]] || { echo "build-llama-server: the build left no $b" >&2; exit 1; }
done
echo "$bin"
