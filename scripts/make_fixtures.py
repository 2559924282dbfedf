#!/usr/bin/env python3
"""Generates pagoda's reference fixtures with Hugging Face transformers.

Run by hand, in a virtual environment outside the repository:

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch transformers safetensors gguf accelerate
    /tmp/ref/bin/pip install llama-cpp-python==0.3.36   # optional: the GGUF tokenizer reference
    /tmp/ref/bin/python scripts/make_fixtures.py            # tiny checkpoints + their references
    /tmp/ref/bin/python scripts/make_fixtures.py --smollm2 models/SmolLM2-135M-Instruct.Q4_1.gguf

Outputs (committed, so CI needs no Python ML stack):

tests/fixtures/<name>/        tiny random-weight checkpoints (config.json, safetensors,
                              tokenizer.json, tokenizer_config.json, generation_config.json)
tests/fixtures/<name>/reference.safetensors   logits of every position of every prompt
tests/fixtures/<name>/reference.json          prompts, greedy continuations, tokenizer and
                                              chat-template cases
tests/fixtures/smollm2_reference.json         greedy continuations of the real default model
                                              by transformers loading the same GGUF, and
                                              llama.cpp's tokenization of a varied corpus
tests/fixtures/templates/*.expected.json      chat templates rendered by transformers' renderer
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

SEED = 1234
GREEDY_STEPS = 12
# Token-id prompts: a single token, a short one, one that crosses block boundaries.
PROMPTS = [
    [5],
    [17, 42, 99, 7, 250, 31],
    [3 + (i * 37) % 300 for i in range(40)],
]

TOKENIZER_CORPUS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n\nprint(add(12, 345))",
    "Numbers: 0 1 2 3 42 1000 3.14159 -7",
    "Ünïcödé: café, naïve, 東京, Москва, 😀",
    "   leading and    inner   whitespace\t\ttabs\n\n\nnewlines   ",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
]

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a tiny test model.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CHAT_MESSAGES = [
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3 + 3?"},
]


def train_tokenizer(vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    corpus = TOKENIZER_CORPUS * 3 + [
        "the model reads tokens and writes tokens; attention looks back over the cache.",
        "fn main() { let x = vec![1, 2, 3]; println!(\"{:?}\", x); }",
        "In 1889 the tower was finished; it is 330 metres tall.",
    ] * 5
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    return tok


def greedy(model, prompt, steps):
    """Greedy decoding by full recomputation; also returns the smallest top-1/top-2 margin."""
    ids = list(prompt)
    margin = float("inf")
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([ids])).logits[0, -1].double()
            top = torch.topk(logits, 2)
            margin = min(margin, float(top.values[0] - top.values[1]))
            ids.append(int(torch.argmax(logits)))
    return ids[len(prompt):], margin


MIN_MARGIN = 0.01


def make_tiny(name, family, dtype, tied, shard, tokenizer, vocab_size):
    """Makes a fixture, re-drawing the weights until greedy decoding has no near-ties
    (a top-1/top-2 logit margin of at least MIN_MARGIN), so that it is a fair test."""
    for seed in range(SEED, SEED + 50):
        if make_tiny_seeded(name, family, dtype, tied, shard, tokenizer, vocab_size, seed) >= MIN_MARGIN:
            return
    sys.exit(f"{name}: no seed gave a greedy margin of {MIN_MARGIN}")


def make_tiny_seeded(name, family, dtype, tied, shard, tokenizer, vocab_size, seed):
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, GenerationConfig
    from transformers.utils.chat_template_utils import render_jinja_template

    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tied,
        initializer_range=0.25,
        bos_token_id=0,
        eos_token_id=2,
    )
    if family == "llama":
        config = LlamaConfig(
            rope_theta=10000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 4.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
            **common,
        )
    else:
        config = Qwen2Config(rope_theta=10000.0, **common)
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        # Norm scales and biases are ones/zeros at init: perturb them so the test sees them.
        for n, p in model.named_parameters():
            if "norm" in n or n.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.3)
    out = FIXTURES / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    model.to(save_dtype).save_pretrained(out, max_shard_size="60KB" if shard else "50GB", safe_serialization=True)
    GenerationConfig(eos_token_id=[2], bos_token_id=0, temperature=0.7, top_p=0.9, do_sample=True).save_pretrained(out)
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|endoftext|>",
        "eos_token": {"content": "<|im_end|>", "special": True},
        "chat_template": CHATML,
    }, indent=2))

    # The reference computes in f32 from the weights as saved (half precision
    # checkpoints are widened, exactly what pagoda does on the CPU).
    ref_model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
    ref_model.eval()
    logits = {}
    greedy_out = []
    margins = []
    with torch.no_grad():
        for i, prompt in enumerate(PROMPTS):
            logits[f"logits.{i}"] = ref_model(torch.tensor([prompt])).logits[0].float().contiguous()
            toks, margin = greedy(ref_model, prompt, GREEDY_STEPS)
            greedy_out.append(toks)
            margins.append(margin)
    save_file(logits, str(out / "reference.safetensors"))
    rendered = render_jinja_template(
        conversations=[CHAT_MESSAGES], chat_template=CHATML, add_generation_prompt=True,
        bos_token="<|endoftext|>", eos_token="<|im_end|>",
    )[0][0]
    reference = {
        "generator": "scripts/make_fixtures.py",
        "seed": seed,
        "transformers_dtype": "float32",
        "prompts": PROMPTS,
        "greedy": greedy_out,
        "greedy_min_margin": margins,
        "tokenizer": [{"text": t, "ids": tokenizer.encode(t).ids} for t in TOKENIZER_CORPUS],
        "chat": {"messages": CHAT_MESSAGES, "rendered": rendered,
                 "ids": tokenizer.encode(rendered, add_special_tokens=False).ids},
    }
    (out / "reference.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False))
    print(f"{name}: seed {seed}, min greedy margin {min(margins):.4f}")
    return min(margins)


def make_tiny_all():
    vocab_size = 384
    tokenizer = train_tokenizer(vocab_size)
    assert tokenizer.get_vocab_size() == vocab_size, tokenizer.get_vocab_size()
    make_tiny("tiny-llama", "llama", "f32", tied=True, shard=False, tokenizer=tokenizer, vocab_size=vocab_size)
    make_tiny("tiny-llama-bf16", "llama", "bf16", tied=True, shard=False, tokenizer=tokenizer, vocab_size=vocab_size)
    make_tiny("tiny-llama-f16-sharded", "llama", "f16", tied=False, shard=True, tokenizer=tokenizer, vocab_size=vocab_size)
    make_tiny("tiny-qwen2", "qwen2", "f32", tied=False, shard=False, tokenizer=tokenizer, vocab_size=vocab_size)


SMOLLM2_PROMPTS = [
    {"name": "plain-paris", "chat": False, "text": "The capital of France is"},
    {"name": "plain-code", "chat": False, "text": "def fibonacci(n):\n    "},
    {"name": "plain-list", "chat": False, "text": "Three primary colours are red,"},
    {"name": "chat-capital", "chat": True, "text": "What is the capital of France?"},
    {"name": "chat-math", "chat": True, "text": "What is 12 times 12?"},
    {"name": "chat-haiku", "chat": True, "text": "Write a haiku about the sea."},
]

SMOLLM2_TOKENIZER_CORPUS = TOKENIZER_CORPUS + [
    "1234567890 and 3.5e-10 and 2026-11-28 and 1,000,000",
    "fn main() {\n\tlet v: Vec<u32> = (0..10).collect();\n}",
    "    indented\n        more\n\n\n\n    back",
    "Hello<|im_end|>world<|endoftext|>!",
    "I'm sure they'll say it's John's, isn't it? We've done what you'd do.",
    "Ελληνικά, العربية, हिन्दी, 한국어, ไทย",
    "emoji 👩‍👩‍👧‍👦 and 🇫🇷 flags",
    "tabs\tand\u00a0nbsp and zero\u200bwidth",
    "<p class=\"x\">HTML &amp; entities</p>",
    "SELECT * FROM t WHERE a >= 10 AND b <> 'x';",
    "  ",
    "a",
]


def make_smollm2(gguf_path):
    from transformers import AutoModelForCausalLM
    from transformers.utils.chat_template_utils import render_jinja_template
    from gguf import GGUFReader

    gguf_path = Path(gguf_path).resolve()
    reader = GGUFReader(str(gguf_path))
    template = reader.fields["tokenizer.chat_template"].contents()
    try:
        from llama_cpp import Llama
    except ImportError:
        sys.exit("llama-cpp-python is needed for the GGUF tokenizer reference (see the docstring)")
    vocab = Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)

    def llama_cpp_ids(text, special):
        return vocab.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    model.eval()
    cases = []
    for p in SMOLLM2_PROMPTS:
        if p["chat"]:
            text = render_jinja_template(
                conversations=[[{"role": "user", "content": p["text"]}]], chat_template=template,
                add_generation_prompt=True, bos_token="<|im_start|>", eos_token="<|im_end|>",
            )[0][0]
        else:
            text = p["text"]
        ids = llama_cpp_ids(text, special=True)
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False,
                                 eos_token_id=2, pad_token_id=2)
        gen = out[0, len(ids):].tolist()
        _, margin = greedy(model, ids, min(len(gen), 24)) if gen else (None, None)
        cases.append({**p, "prompt_text": text, "prompt_ids": ids, "greedy_ids": gen, "min_margin": margin})
        print(p["name"], repr(text[-40:]), len(ids), gen, f"margin {margin:.3f}")
    tokenization = [{"text": t, "ids": llama_cpp_ids(t, special=True)} for t in SMOLLM2_TOKENIZER_CORPUS]
    result = {
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "generator": "scripts/make_fixtures.py --smollm2 (transformers loading the GGUF, dequantized to f32; "
                     "tokenization by llama.cpp via llama-cpp-python)",
        "max_new_tokens": 24,
        "cases": cases,
        "tokenization": tokenization,
    }
    (FIXTURES / "smollm2_reference.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))


def read_gguf_metadata(path):
    """Reads a GGUF header by hand: works on truncated files, which gguf.GGUFReader rejects.
    Returns {key: (value_type, array_item_type or None, value)}."""
    import struct

    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF", "not a GGUF file"
        _version, = struct.unpack("<I", f.read(4))
        _n_tensors, n_kv = struct.unpack("<QQ", f.read(16))
        scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

        def read_str():
            n, = struct.unpack("<Q", f.read(8))
            return f.read(n).decode("utf-8")

        def read_value(t):
            if t == 8:
                return read_str()
            if t == 9:
                item_type, = struct.unpack("<I", f.read(4))
                n, = struct.unpack("<Q", f.read(8))
                return [read_value(item_type) for _ in range(n)]
            c = scalar[t]
            return struct.unpack("<" + c, f.read(struct.calcsize(c)))[0]

        meta = {}
        for _ in range(n_kv):
            key = read_str()
            t, = struct.unpack("<I", f.read(4))
            if t == 9:
                pos = f.tell()
                item_type, = struct.unpack("<I", f.read(4))
                f.seek(pos)
            else:
                item_type = None
            meta[key] = (t, item_type, read_value(t))
        return meta


def make_r1_tokenizer_reference(part_path):
    """llama.cpp's tokenization of a corpus with the real DeepSeek-R1-Distill-Qwen tokenizer.
    llama.cpp refuses the truncated file even for its vocabulary, so its metadata is copied
    into a header-only GGUF first."""
    import tempfile
    from gguf import GGUFValueType, GGUFWriter
    from llama_cpp import Llama

    meta = read_gguf_metadata(part_path)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r1-vocab.gguf")
        writer = GGUFWriter(out, meta["general.architecture"][2])
        for key, (t, item_type, value) in meta.items():
            if key in ("general.architecture", "GGUF.version"):
                continue
            sub = GGUFValueType(item_type) if item_type is not None else None
            writer.add_key_value(key, value, GGUFValueType(t), sub_type=sub)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        vocab = Llama(model_path=out, vocab_only=True, verbose=False)
        corpus = SMOLLM2_TOKENIZER_CORPUS + [
            "<｜User｜>What is 1+1?<｜Assistant｜><think>\nEasy.\n</think>\n\n2<｜end▁of▁sentence｜>",
            "中文分词测试：今天天气很好。",
        ]
        cases = [{"text": t, "ids": vocab.tokenize(t.encode("utf-8"), add_bos=False, special=True)} for t in corpus]
    result = {
        "model": Path(part_path).name,
        "generator": "scripts/make_fixtures.py --r1-part (llama.cpp via llama-cpp-python, vocab_only)",
        "tokenization": cases,
    }
    (FIXTURES / "r1_tokenizer_reference.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print("r1 tokenizer reference:", len(cases), "cases")


def render_templates():
    """Renders the real chat templates in tests/fixtures/templates with transformers' renderer."""
    from transformers.utils.chat_template_utils import render_jinja_template

    tdir = FIXTURES / "templates"
    specials = json.loads((tdir / "specials.json").read_text())
    conversations = json.loads((tdir / "conversations.json").read_text())
    for path in sorted(tdir.glob("*.jinja")):
        name = path.stem
        template = path.read_text()
        bos, eos = specials[name]["bos_token"], specials[name]["eos_token"]
        expected = []
        for conv in conversations:
            for agp in (True, False):
                try:
                    rendered = render_jinja_template(
                        conversations=[conv["messages"]], chat_template=template,
                        add_generation_prompt=agp, bos_token=bos, eos_token=eos,
                    )[0][0]
                    expected.append({"conversation": conv["name"], "add_generation_prompt": agp, "rendered": rendered})
                except Exception as e:  # the template itself rejects the conversation
                    expected.append({"conversation": conv["name"], "add_generation_prompt": agp, "error": str(e)})
        (tdir / f"{name}.expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False))
        print(name, len(expected), "renderings")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smollm2", metavar="GGUF", help="write the reference of the real default model")
    ap.add_argument("--templates", action="store_true", help="render the real chat templates")
    ap.add_argument("--r1-part", metavar="GGUF", help="write llama.cpp's tokenization with the R1 tokenizer")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.smollm2:
        make_smollm2(args.smollm2)
    elif args.r1_part:
        make_r1_tokenizer_reference(args.r1_part)
    elif args.templates:
        render_templates()
    else:
        make_tiny_all()


if __name__ == "__main__":
    main()
