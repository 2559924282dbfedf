#!/usr/bin/env python3
"""Writes a llama-architecture GGUF with random weights, for speed runs.

The default shape is Llama-3.2-1B-like (hidden 2048, 16 layers, 32 query /
8 KV heads, head dim 64, FFN 8192, rope theta 500000, context 8192) with an
untied output head. The tokenizer and chat template (every `tokenizer.*`
key) come from the default model, SmolLM2-135M-Instruct, so the vocabulary
is 49152 and any prompt the server accepts for SmolLM2 works here.

Weights are normal(0, 0.02) from a fixed seed (norms are 1.0), so the
output is deterministic and activations stay finite; the text it generates
is noise. Matrices are F16 by default (--dtype bf16|f32 for the others);
norms are always F32, as llama.cpp's converter writes them. Tensors are
generated and written one at a time, so memory stays around the size of the
largest tensor (the embedding) rather than the file.

    .venv-bench/bin/python scripts/bench/make_model.py --out target/bench-models/llama-1b.f16.gguf
    target/peer/build/bin/llama-quantize target/bench-models/llama-1b.f16.gguf \\
        target/bench-models/llama-1b.Q4_K_M.gguf Q4_K_M 2

Needs the `gguf` and `numpy` packages (scripts/bench/requirements.txt).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TOKENIZER = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
ARCH = "llama"

DTYPES = {
    # name: (numpy storage dtype, GGML type, general.file_type)
    "f16": (np.float16, GGMLQuantizationType.F16, LlamaFileType.MOSTLY_F16),
    "bf16": (np.uint16, GGMLQuantizationType.BF16, LlamaFileType.MOSTLY_BF16),
    "f32": (np.float32, GGMLQuantizationType.F32, LlamaFileType.ALL_F32),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="the GGUF file to write")
    p.add_argument("--hidden", type=int, default=2048, help="embedding length (default 2048)")
    p.add_argument("--layers", type=int, default=16, help="block count (default 16)")
    p.add_argument("--heads", type=int, default=32, help="query heads (default 32)")
    p.add_argument("--kv-heads", type=int, default=8, help="key/value heads (default 8)")
    p.add_argument("--ffn", type=int, default=8192, help="feed-forward length (default 8192)")
    p.add_argument("--context", type=int, default=8192, help="context length (default 8192)")
    p.add_argument("--rope-theta", type=float, default=500000.0, help="rope base (default 500000)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="f16", help="matrix type (default f16)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--tokenizer-from", type=Path, default=DEFAULT_TOKENIZER,
                   help="GGUF whose tokenizer.* keys are copied (default: the SmolLM2 default model)")
    a = p.parse_args()
    if a.hidden % a.heads:
        p.error(f"--hidden {a.hidden} is not a multiple of --heads {a.heads}")
    if a.heads % a.kv_heads:
        p.error(f"--heads {a.heads} is not a multiple of --kv-heads {a.kv_heads}")
    if (a.hidden // a.heads) % 2:
        p.error("the head dimension (hidden / heads) must be even for rope")
    return a


def tokenizer_fields(path: Path) -> tuple[list[tuple[str, object, GGUFValueType, GGUFValueType | None]], int]:
    """Every tokenizer.* key of `path`, as (key, value, type, array sub-type); and the vocab size."""
    if not path.is_file():
        sys.exit(f"make_model: {path} is missing (scripts/fetch-model.sh fetches the default model)")
    reader = GGUFReader(path)
    out = []
    vocab = None
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        main = field.types[0]
        sub = field.types[-1] if main == GGUFValueType.ARRAY else None
        if sub == GGUFValueType.ARRAY:
            sys.exit(f"make_model: {key} is a nested array, which this script does not copy")
        value = field.contents()
        if main == GGUFValueType.ARRAY and len(value) == 0:
            continue  # the writer refuses empty arrays; llama.cpp treats absent as empty
        out.append((key, value, main, sub))
        if key == "tokenizer.ggml.tokens":
            vocab = len(value)
    if vocab is None:
        sys.exit(f"make_model: {path} has no tokenizer.ggml.tokens")
    return out, vocab


def to_storage(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "f16":
        return x.astype(np.float16)
    if dtype == "bf16":
        # Round to nearest even on the upper 16 bits of the f32 pattern
        # (the values here are small and finite, so no NaN handling needed).
        bits = x.astype(np.float32).view(np.uint32)
        bits = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
        return (bits >> np.uint32(16)).astype(np.uint16)
    return x.astype(np.float32, copy=False)


def main() -> None:
    a = parse_args()
    t0 = time.monotonic()
    tok_fields, vocab = tokenizer_fields(a.tokenizer_from)
    head_dim = a.hidden // a.heads
    kv_dim = head_dim * a.kv_heads
    storage, ggml_type, file_type = DTYPES[a.dtype]

    # (name, numpy shape (rows = outputs, cols = inputs), is a matrix)
    tensors: list[tuple[str, tuple[int, ...], bool]] = [("token_embd.weight", (vocab, a.hidden), True)]
    for i in range(a.layers):
        b = f"blk.{i}"
        tensors += [
            (f"{b}.attn_norm.weight", (a.hidden,), False),
            (f"{b}.attn_q.weight", (a.hidden, a.hidden), True),
            (f"{b}.attn_k.weight", (kv_dim, a.hidden), True),
            (f"{b}.attn_v.weight", (kv_dim, a.hidden), True),
            (f"{b}.attn_output.weight", (a.hidden, a.hidden), True),
            (f"{b}.ffn_norm.weight", (a.hidden,), False),
            (f"{b}.ffn_gate.weight", (a.ffn, a.hidden), True),
            (f"{b}.ffn_up.weight", (a.ffn, a.hidden), True),
            (f"{b}.ffn_down.weight", (a.hidden, a.ffn), True),
        ]
    tensors += [("output_norm.weight", (a.hidden,), False), ("output.weight", (vocab, a.hidden), True)]
    n_params = sum(int(np.prod(s)) for _, s, _ in tensors)

    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(a.out.name + ".partial")
    w = GGUFWriter(tmp, ARCH)
    w.add_type("model")
    w.add_name(f"random llama {n_params / 1e9:.2f}B ({a.dtype}, seed {a.seed})")
    w.add_description("random weights from scripts/bench/make_model.py, for speed measurement only")
    w.add_context_length(a.context)
    w.add_embedding_length(a.hidden)
    w.add_block_count(a.layers)
    w.add_feed_forward_length(a.ffn)
    w.add_head_count(a.heads)
    w.add_head_count_kv(a.kv_heads)
    w.add_rope_freq_base(a.rope_theta)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(vocab)
    w.add_file_type(int(file_type))
    for key, value, main, sub in tok_fields:
        w.add_key_value(key, value, main, sub_type=sub)

    for name, shape, is_matrix in tensors:
        if is_matrix:
            nbytes = int(np.prod(shape)) * np.dtype(storage).itemsize
            w.add_tensor_info(name, shape, np.dtype(storage), nbytes, raw_dtype=ggml_type)
        else:
            w.add_tensor_info(name, shape, np.dtype(np.float32), int(np.prod(shape)) * 4)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(a.seed)
    for n, (name, shape, is_matrix) in enumerate(tensors):
        if is_matrix:
            x = rng.standard_normal(shape, dtype=np.float32)
            x *= np.float32(0.02)
            data = to_storage(x, a.dtype)
            del x
        else:
            data = np.ones(shape, dtype=np.float32)
        w.write_tensor_data(data)
        del data
        if n % 9 == 0 or n == len(tensors) - 1:
            print(f"make_model: {n + 1}/{len(tensors)} tensors written", file=sys.stderr, flush=True)
    w.close()
    os.replace(tmp, a.out)
    size = a.out.stat().st_size
    print(f"make_model: wrote {a.out} ({n_params:,} parameters, {size:,} bytes, "
          f"{a.dtype}, {time.monotonic() - t0:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
