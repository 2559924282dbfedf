#!/usr/bin/env python3
"""Generates pagoda's reference fixtures with Hugging Face transformers.

Run by hand, in a virtual environment outside the repository:

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch transformers safetensors gguf accelerate sentencepiece
    /tmp/ref/bin/pip install llama-cpp-python==0.3.36   # optional: the GGUF tokenizer reference
    /tmp/ref/bin/python scripts/make_fixtures.py            # tiny checkpoints + their references
    /tmp/ref/bin/python scripts/make_fixtures.py --threads 1 --only tiny-deepseek-v2,tiny-deepseek-v3,tiny-r1-qwen2
    /tmp/ref/bin/python scripts/make_fixtures.py --smollm2 models/SmolLM2-135M-Instruct.Q4_1.gguf
    /tmp/ref/bin/python scripts/make_fixtures.py --spm-tokenizer models/gemma-3-270m.Q4_K_M.gguf
    /tmp/ref/bin/python scripts/make_fixtures.py --real models/gemma-3-270m.Q4_K_M.gguf  (also the Qwen2.5-Coder GGUFs)
    /tmp/ref/bin/python scripts/make_fixtures.py --gguf tiny-deepseek-v2 --llama-cpp DIR
    /tmp/ref/bin/python scripts/make_fixtures.py --gguf tiny-deepseek-v3 --llama-cpp DIR
    /tmp/ref/bin/python scripts/make_fixtures.py --gguf tiny-qwen3 --llama-cpp DIR
                        # DIR: vendor/llama.cpp of the llama-cpp-python 0.3.36 sdist

--only makes just the named tiny fixtures (the others are left as they are); --fixtures DIR
writes under DIR instead, to check that a run reproduces the committed files. Weights,
tokenizers and configs are reproduced bit for bit; the reference logits only with the same
thread count and CPU (the summation order of torch's f32 kernels; differences ~1e-6).

Outputs (committed, so CI needs no Python ML stack):

tests/fixtures/<name>/        tiny random-weight checkpoints (config.json, safetensors,
                              tokenizer.json, tokenizer_config.json, generation_config.json)
tests/fixtures/<name>/reference.safetensors   logits of every position of every prompt
tests/fixtures/<name>/reference.json          prompts, greedy continuations, tokenizer and
                                              chat-template cases
    tiny-llama, tiny-llama-bf16, tiny-llama-f16-sharded, tiny-qwen2, tiny-qwen3, tiny-mistral: llama
        (llama3 rope scaling, tied head; f32, bf16, sharded f16), qwen2 (qkv biases) and
        qwen3 (per-head q/k RMSNorm, head_dim 32 > hidden/heads); tiny-mistral: a sliding
        window of 4 positions on every layer; the trained 384-token byte-level BPE and a
        ChatML template.
    tiny-gemma3: Gemma3ForCausalLM, five sliding layers then a global one (see
        scripts/fixtures/gemma3.py).
    tiny-deepseek-v2: DeepseekV2ForCausalLM, MLA with a plain q_proj (q_lora_rank None,
        as V2-Lite), kv_lora_rank 32, qk_nope/rope/v head dims 16/8/16, layer 0 dense and
        layers 1-2 MoE (8 routed experts of width 16, 2 shared, softmax scores,
        group_limited_greedy over 4 groups choosing 2, 3 experts per token, no
        renormalisation, routed_scaling_factor 1.5), plain rope.
    tiny-deepseek-v3: DeepseekV3ForCausalLM, the same with q_lora_rank 24 (q_a_proj,
        q_a_layernorm, q_b_proj), sigmoid scores with a non-zero e_score_correction_bias
        (saved as model.layers.N.mlp.gate.e_score_correction_bias), top-2-sum group
        scores, 2 experts per token, renormalised, routed_scaling_factor 2.5, and YaRN
        (factor 4 over an original 32 positions, mscale = mscale_all_dim = 1) written
        as DeepSeek-V3's config.json writes it (rope_scaling with "type").
        Both DeepSeek fixtures: the norms are perturbed, the seed is redrawn until every
        routing decision has a score gap of MIN_ROUTE_MARGIN, and reference.json also has
        the experts each prompt token chose ("routing", for debugging) and the rope.
    tiny-r1-qwen2: Qwen2ForCausalLM weights with an R1-distill-style tokenizer (Qwen2's
        pre-tokenizer, BPE of 360 tokens, then R1's added tokens: begin/end of sentence,
        User, Assistant as special; <think>, </think> and DeepSeek's tool markers added
        but not special; 375 in all, the model's vocabulary padded to 384), the begin
        token prepended on encode, and the REAL DeepSeek-R1-Distill-Qwen chat template
        (read from the header of models/DeepSeek-R1-Distill-Qwen-7B.Q4_K_M.part0000.gguf,
        scripts/fetch-model.sh r1-part). That template's generation prompt ends with
        <｜Assistant｜> alone: chat_template_think.jinja is the same template with
        <think>\n appended there (as DeepSeek's later revision of the template does).
        reference.json adds "specials", "added_tokens" and "chat_cases" (reasoning
        history, which the template strips, and a tool call, with both templates).
tests/fixtures/tiny-mixtral.q8_0.gguf, .q8_0-dequant.gguf   quantized by llama-quantize, and its
                                              twin dequantized to f32 (--q8-0 tiny-mixtral)
tests/fixtures/tiny-deepseek-v2.gguf, tiny-deepseek-v3.gguf, tiny-qwen3.gguf   converted by llama.cpp's
                                              convert_hf_to_gguf.py (f32; see make_gguf in
                                              scripts/fixtures/gguf_files.py)
tests/fixtures/gemma3_270m_reference.json     greedy continuations of the real Gemma 3 270M by
                                              transformers loading the same GGUF (--real)
tests/fixtures/gemma3_tokenizer_reference.json  llama.cpp's tokenization of a varied corpus with
                                              Gemma 3 270M's SentencePiece vocabulary (--spm-tokenizer)
tests/fixtures/smollm2_reference.json         greedy continuations of the real default model
                                              by transformers loading the same GGUF, and
                                              llama.cpp's tokenization of a varied corpus
tests/fixtures/templates/*.expected.json      chat templates rendered by transformers' renderer
                                              (tool_requests.expected.json: the OpenAI requests
                                              of tool_requests.json, with calls, results and
                                              offered tools, through Llama 3.1's and R1's)

This script only reads the command line; the generators are the package scripts/fixtures/,
one module per kind of output (its __init__.py lists them): common (prompts, the trained
tokenizer, greedy margins, reference files), llama_qwen, deepseek (and the routing
diagnostics), r1, tiny (--only), gguf_files (--gguf), smollm2, r1_tokenizer (--r1-part)
and templates. --help works with any python; the rest needs the venv above.
"""

import argparse
import os
import sys

from fixtures import TINY_FIXTURES


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smollm2", metavar="GGUF", help="write the reference of the real default model")
    ap.add_argument("--templates", action="store_true", help="render the real chat templates")
    ap.add_argument("--r1-part", metavar="GGUF", help="write llama.cpp's tokenization with the R1 tokenizer")
    ap.add_argument("--real", metavar="GGUF", help="write transformers' greedy continuations of a real "
                    "model (Gemma 3 270M, Qwen2.5-Coder 0.5B/1.5B) to its *_reference.json")
    ap.add_argument("--spm-tokenizer", metavar="GGUF", help="write llama.cpp's tokenization with a "
                    "SentencePiece GGUF vocabulary (Gemma 3 270M) to gemma3_tokenizer_reference.json")
    ap.add_argument("--only", metavar="NAME[,NAME]",
                    help="make only these tiny fixtures (default: all of them): " + ", ".join(TINY_FIXTURES))
    ap.add_argument("--fixtures", metavar="DIR", help="write under DIR instead of tests/fixtures "
                    "(e.g. to check that a run reproduces the committed files)")
    ap.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    ap.add_argument("--gguf", metavar="NAME", help="convert tests/fixtures/NAME (e.g. tiny-deepseek-v2) "
                    "to NAME.gguf with llama.cpp's convert_hf_to_gguf.py (see make_gguf; needs --llama-cpp)")
    ap.add_argument("--q8-0", metavar="NAME", help="quantize tests/fixtures/NAME.gguf to Q8_0 with "
                    "llama-quantize (--llama-quantize) and write its dequantized f32 twin")
    ap.add_argument("--llama-quantize", metavar="BIN", help="llama.cpp's llama-quantize for --q8-0 "
                    "(scripts/bench/build-llama-server.sh builds it)")
    ap.add_argument("--llama-cpp", metavar="DIR", help="a llama.cpp source tree (vendor/llama.cpp of the "
                    "llama-cpp-python 0.3.36 sdist) for --gguf")
    args = ap.parse_args()
    if args.gguf and not args.llama_cpp:
        sys.exit("--gguf needs --llama-cpp DIR (vendor/llama.cpp of the llama-cpp-python 0.3.36 sdist)")
    try:
        from fixtures import common
    except ImportError as e:
        sys.exit(f"make_fixtures.py: {e}")
    import torch

    if args.fixtures:
        common.set_fixtures(args.fixtures)
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    if args.smollm2:
        from fixtures.smollm2 import make_smollm2
        make_smollm2(args.smollm2)
    elif args.real:
        from fixtures.real_gguf import make_real_reference
        make_real_reference(args.real)
    elif args.spm_tokenizer:
        from fixtures.spm_tokenizer import make_spm_tokenizer_reference
        make_spm_tokenizer_reference(args.spm_tokenizer)
    elif args.r1_part:
        from fixtures.r1_tokenizer import make_r1_tokenizer_reference
        make_r1_tokenizer_reference(args.r1_part)
    elif args.templates:
        from fixtures.templates import render_templates
        render_templates()
    elif args.q8_0:
        from fixtures.gguf_files import make_q8_0
        if not args.llama_quantize:
            sys.exit("--q8-0 needs --llama-quantize BIN")
        make_q8_0(args.q8_0, args.llama_quantize)
    elif args.gguf:
        from fixtures.gguf_files import make_gguf
        make_gguf(args.gguf, args.llama_cpp)
    else:
        from fixtures.tiny import make_tiny_all
        make_tiny_all(args.only.split(",") if args.only else None)


if __name__ == "__main__":
    main()
