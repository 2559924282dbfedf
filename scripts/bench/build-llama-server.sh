#!/usr/bin/env bash
# Builds the benchmark's peer, llama.cpp's `llama-server`, and its
# `llama-quantize` (which turns an f16 GGUF from scripts/bench/make_model.py
# into Q4_K_M, Q8_0, ...) from the source package of llama-cpp-python 0.3.36
# on PyPI (which vendors llama.cpp), for this machine's CPU: the x86 ISA
# extensions /proc/cpuinfo lists, except AMX (see below). cmake and ninja come
# from PyPI into .venv-bench. Idempotent: the binaries are kept in
# target/peer/build/bin/ and rebuilt only when one is missing or the build
# options changed. Prints llama-server's path on its last line. Not part of CI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
URL="https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-$VERSION.tar.gz"
peer=target/peer
bin="$peer/build/bin/llama-server"
quantize="$peer/build/bin/llama-quantize"
stamp="$peer/build/pagoda-build-options"

# The CPU features, as ggml's options. Not GGML_NATIVE: -march=native turns on
# ggml's AMX kernels on CPUs that list AMX, and on this project's Xeon VMs
# (which do) they crash llama-server in its warm-up matmul (SIGSEGV at
# ldtilecfg / SIGILL in tinygemm_kernel_amx, llama.cpp of 0.3.36), so AMX
# stays off and the other extensions are enabled one by one from /proc/cpuinfo.
cpu_opts=(-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
if [[ "$(uname -m)" == x86_64 && -r /proc/cpuinfo ]]; then
    flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
    has() { local f; for f in "$@"; do [[ "$flags" == *" $f "* ]] || return 1; done; }
    onoff() { if has "$@"; then echo ON; else echo OFF; fi; }
    cpu_opts+=(
        -DGGML_SSE42="$(onoff sse4_2)" -DGGML_AVX="$(onoff avx)" -DGGML_AVX2="$(onoff avx2)"
        -DGGML_FMA="$(onoff fma)" -DGGML_F16C="$(onoff f16c)" -DGGML_BMI2="$(onoff bmi2)"
        -DGGML_AVX_VNNI="$(onoff avx_vnni)"
        -DGGML_AVX512="$(onoff avx512f avx512cd avx512vl avx512dq avx512bw)"
        -DGGML_AVX512_VBMI="$(onoff avx512vbmi)" -DGGML_AVX512_VNNI="$(onoff avx512_vnni)"
        -DGGML_AVX512_BF16="$(onoff avx512_bf16)"
    )
else
    cpu_opts=(-DGGML_NATIVE=ON)
fi
# llama-server and llama-quantize both live under tools/, which needs
# LLAMA_BUILD_COMMON and LLAMA_BUILD_TOOLS. LLAMA_USE_PREBUILT_UI=OFF: the
# server's web UI would be fetched from Hugging Face at build time, which is
# not reachable here; the API works without it.
cmake_opts=(
    -DCMAKE_BUILD_TYPE=Release "${cpu_opts[@]}"
    -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
)

if [[ -x "$bin" && -x "$quantize" && "$(cat "$stamp" 2>/dev/null)" == "$VERSION ${cmake_opts[*]}" ]]; then
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
rm -f "$stamp"
PATH="$PWD/$venv/bin:$PATH" cmake -S "$peer/src/vendor/llama.cpp" -B "$peer/build" -G Ninja \
    "${cmake_opts[@]}" >&2
PATH="$PWD/$venv/bin:$PATH" cmake --build "$peer/build" --target llama-server llama-quantize -j "$(nproc)" >&2
for b in "$bin" "$quantize"; do
    [[ -x "$b" ]] || { echo "build-llama-server: the build left no $b" >&2; exit 1; }
done
echo "$VERSION ${cmake_opts[*]}" > "$stamp"
echo "$bin"
