#!/usr/bin/env python3
"""Generates pagoda's reference fixtures with Hugging Face transformers.

Run by hand, in a virtual environment outside the repository:

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch transformers safetensors gguf accelerate
    /tmp/ref/bin/pip install llama-cpp-python==0.3.36   # optional: the GGUF tokenizer reference
    /tmp/ref/bin/python scripts/make_fixtures.py            # tiny checkpoints + their references
    /tmp/ref/bin/python scripts/make_fixtures.py --threads 1 --only tiny-deepseek-v2,tiny-deepseek-v3,tiny-r1-qwen2
    /tmp/ref/bin/python scripts/make_fixtures.py --smollm2 models/SmolLM2-135M-Instruct.Q4_1.gguf
    /tmp/ref/bin/python scripts/make_fixtures.py --gguf tiny-deepseek-v2 --llama-cpp DIR
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
    tiny-llama, tiny-llama-bf16, tiny-llama-f16-sharded, tiny-qwen2: llama (llama3 rope
        scaling, tied head; f32, bf16, sharded f16) and qwen2 (qkv biases), the trained
        384-token byte-level BPE and a ChatML template.
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
tests/fixtures/tiny-deepseek-v2.gguf            tiny-deepseek-v2 converted by llama.cpp's
                                              convert_hf_to_gguf.py (f32; see make_gguf)
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


# Qwen2's pre-tokenizer (as in Qwen2's and DeepSeek-R1-Distill-Qwen's tokenizer.json,
# and as transformers 5's Qwen2Tokenizer rebuilds it whatever tokenizer.json says).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def train_tokenizer(vocab_size, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"), qwen2=False):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    if qwen2:
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
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
        special_tokens=list(special_tokens),
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


TINY_FIXTURES = ["tiny-llama", "tiny-llama-bf16", "tiny-llama-f16-sharded", "tiny-qwen2",
                 "tiny-deepseek-v2", "tiny-deepseek-v3", "tiny-r1-qwen2"]


def make_tiny_all(only=None):
    vocab_size = 384
    tokenizer = train_tokenizer(vocab_size)
    assert tokenizer.get_vocab_size() == vocab_size, tokenizer.get_vocab_size()
    wanted = set(TINY_FIXTURES if only is None else only)
    unknown = wanted - set(TINY_FIXTURES)
    if unknown:
        sys.exit(f"unknown fixture(s) {sorted(unknown)} (known: {', '.join(TINY_FIXTURES)})")
    jobs = {
        "tiny-llama": lambda: make_tiny("tiny-llama", "llama", "f32", tied=True, shard=False, tokenizer=tokenizer, vocab_size=vocab_size),
        "tiny-llama-bf16": lambda: make_tiny("tiny-llama-bf16", "llama", "bf16", tied=True, shard=False, tokenizer=tokenizer, vocab_size=vocab_size),
        "tiny-llama-f16-sharded": lambda: make_tiny("tiny-llama-f16-sharded", "llama", "f16", tied=False, shard=True, tokenizer=tokenizer, vocab_size=vocab_size),
        "tiny-qwen2": lambda: make_tiny("tiny-qwen2", "qwen2", "f32", tied=False, shard=False, tokenizer=tokenizer, vocab_size=vocab_size),
        "tiny-deepseek-v2": lambda: make_deepseek("tiny-deepseek-v2", "deepseek_v2", tokenizer),
        "tiny-deepseek-v3": lambda: make_deepseek("tiny-deepseek-v3", "deepseek_v3", tokenizer),
        "tiny-r1-qwen2": lambda: make_r1_qwen2("tiny-r1-qwen2"),
    }
    for name in TINY_FIXTURES:
        if name in wanted:
            jobs[name]()


# ---------------------------------------------------------------------------
# DeepSeek-V2 / V3 (MLA + MoE) and an R1-distill-style reasoning fixture.
# ---------------------------------------------------------------------------

# Routing near-ties would make the 1e-4 logit tolerance meaningless (a float
# difference flips an expert), so the seed is also redrawn until every routing
# decision the reference makes (group choice and expert choice, at every position
# of every forward pass) has a score gap of at least this.
MIN_ROUTE_MARGIN = 2e-4

DEEPSEEK_COMMON = dict(
    vocab_size=384,
    hidden_size=64,
    # Dense MLP (layer 0), routed experts and the shared experts all have different
    # widths (64, 16, 16 * n_shared_experts), so that a shape mix-up cannot pass; the
    # widths are below the brief's 128/32 to keep each fixture directory under 1 MB.
    intermediate_size=64,
    moe_intermediate_size=16,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=4,
    kv_lora_rank=32,
    qk_nope_head_dim=16,
    qk_rope_head_dim=8,
    v_head_dim=16,
    n_routed_experts=8,
    first_k_dense_replace=1,
    n_group=4,
    topk_group=2,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    initializer_range=0.25,
    bos_token_id=0,
    eos_token_id=2,
)

# Keys that the real checkpoints' config.json carry and that transformers ignores
# (moe_layer_freq is implied by first_k_dense_replace; scoring_func and topk_method
# by the model type): written so that a loader that reads them sees real values.
DEEPSEEK_V2_EXTRA = {"moe_layer_freq": 1, "scoring_func": "softmax"}
DEEPSEEK_V3_EXTRA = {"moe_layer_freq": 1, "scoring_func": "sigmoid", "topk_method": "noaux_tc"}

# DeepSeek-V3's YaRN, written in config.json exactly as DeepSeek-V3's own config
# writes it (legacy "rope_scaling" with "type", rope_theta at the top level). With
# qk_rope_head_dim 8, rope_theta 500 (instead of 10000) makes the YaRN ramp
# non-degenerate: frequency 0 extrapolated, 1 blended half-half, 2 and 3
# interpolated (with 10000 the ramp has no blended frequency at this tiny dim).
# max_position_embeddings = factor * original (as DeepSeek-V3: 163840 = 40 * 4096).
DEEPSEEK_V3_ROPE_THETA = 500.0
DEEPSEEK_V3_YARN = {
    "beta_fast": 32,
    "beta_slow": 1,
    "factor": 4.0,
    "mscale": 1.0,
    "mscale_all_dim": 1.0,
    "original_max_position_embeddings": 32,
    "type": "yarn",
}


def deepseek_config(family):
    from transformers import DeepseekV2Config, DeepseekV3Config

    if family == "deepseek_v2":
        # V2-Lite-style attention (q_lora_rank None: a plain q_proj), DeepSeek-V2 (236B)
        # style routing: softmax scores, group-limited greedy, no renormalisation.
        # n_shared_experts 2 as in DeepSeek-V2-Lite (shared width = 2 * 16).
        # 3 experts per token: V2's group score is the group's best expert, so with
        # num_experts_per_tok <= topk_group the group limit can never change the choice
        # (the top-k experts' groups are always the top groups); DeepSeek-V2 itself has
        # 6 experts per token from 3 groups.
        config = DeepseekV2Config(
            q_lora_rank=None,
            num_experts_per_tok=3,
            n_shared_experts=2,
            topk_method="group_limited_greedy",
            norm_topk_prob=False,
            routed_scaling_factor=1.5,
            max_position_embeddings=256,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            **DEEPSEEK_V2_EXTRA,
            **DEEPSEEK_COMMON,
        )
    else:
        yarn = {k: v for k, v in DEEPSEEK_V3_YARN.items() if k != "type"}
        config = DeepseekV3Config(
            q_lora_rank=24,
            num_experts_per_tok=2,
            n_shared_experts=1,
            norm_topk_prob=True,
            routed_scaling_factor=2.5,
            max_position_embeddings=int(yarn["factor"] * yarn["original_max_position_embeddings"]),
            rope_parameters={"rope_type": "yarn", "rope_theta": DEEPSEEK_V3_ROPE_THETA, **yarn},
            rope_interleave=True,
            num_mtp_layers=0,
            **DEEPSEEK_COMMON,
        )
    config._attn_implementation = "eager"
    return config


def deepseek_config_json(family, path):
    """Rewrites the config.json transformers saved. V2 stays as transformers 5 writes it
    (rope_parameters, head_dim = qk_rope_head_dim, qk_head_dim); V3 is made to look like
    DeepSeek-V3's own config.json (rope_scaling with "type", top-level rope_theta, no
    head_dim / qk_head_dim keys), so that both spellings are covered. The reference
    is computed from the model reloaded from this file, and make_deepseek checks
    that transformers read the rope back as intended."""
    c = json.loads(path.read_text())
    if family == "deepseek_v3":
        rp = c.pop("rope_parameters")
        c["rope_theta"] = rp["rope_theta"]
        c["rope_scaling"] = dict(DEEPSEEK_V3_YARN)
        c.pop("head_dim", None)
        c.pop("qk_head_dim", None)
        c.update(DEEPSEEK_V3_EXTRA)
    path.write_text(json.dumps(dict(sorted(c.items())), indent=2) + "\n")


class RouteRecorder:
    """Forward hooks on every MoE gate: the smallest routing score gap seen, and, when
    `capture` is set, the experts each token of the current forward pass chose."""

    def __init__(self, model):
        self.min_margin = float("inf")
        self.capture = None  # {layer: [[experts of token 0], ...]} while recording
        self.diag = {"tokens": 0, "group_vs_plain_topk": 0, "bias_changes_choice": 0, "sets": set()}
        self.handles = []
        for i, layer in enumerate(model.model.layers):
            gate = getattr(layer.mlp, "gate", None)
            if gate is not None:
                self.handles.append(gate.register_forward_hook(self.hook(i)))

    def hook(self, layer_idx):
        def fn(gate, inputs, output):
            _, _, idx = output
            h = inputs[0].reshape(-1, gate.hidden_dim).float()
            logits = torch.nn.functional.linear(h, gate.weight.float()).double()
            n, g, k, kg = gate.num_experts, gate.num_group, gate.top_k, gate.topk_group
            if hasattr(gate, "e_score_correction_bias"):  # V3: sigmoid, bias for the choice only
                scores = logits.sigmoid()
                choice = scores + gate.e_score_correction_bias.double()
                group = choice.view(-1, g, n // g).topk(2, dim=-1).values.sum(-1)
            else:  # V2: softmax, the group score is its best expert
                scores = logits.softmax(-1)
                choice = scores
                group = choice.view(-1, g, n // g).max(-1).values
            gs = group.sort(-1, descending=True).values
            group_gap = (gs[:, kg - 1] - gs[:, kg]).min().item()
            top_groups = group.topk(kg, -1).indices
            mask = torch.zeros_like(group).scatter_(1, top_groups, 1).bool()
            mask = mask.unsqueeze(-1).expand(-1, g, n // g).reshape(-1, n)
            masked = choice.masked_fill(~mask, float("-inf"))
            ms = masked.sort(-1, descending=True).values
            expert_gap = (ms[:, k - 1] - ms[:, k]).min().item()
            self.min_margin = min(self.min_margin, group_gap, expert_gap)
            chosen = masked.topk(k, -1).indices.sort(-1).values
            # transformers' own choice must be the one recomputed here (else a near-tie)
            if not torch.equal(chosen, idx.sort(-1).values):
                self.min_margin = 0.0
            if self.capture is not None:
                self.capture[str(layer_idx)] = chosen.tolist()
                plain = choice.topk(k, -1).indices.sort(-1).values
                self.diag["tokens"] += chosen.shape[0]
                self.diag["group_vs_plain_topk"] += int((plain != chosen).any(-1).sum())
                if hasattr(gate, "e_score_correction_bias"):
                    nb = scores.view(-1, g, n // g).topk(2, dim=-1).values.sum(-1)
                    nb_mask = torch.zeros_like(nb).scatter_(1, nb.topk(kg, -1).indices, 1).bool()
                    nb_mask = nb_mask.unsqueeze(-1).expand(-1, g, n // g).reshape(-1, n)
                    nb_chosen = scores.masked_fill(~nb_mask, float("-inf")).topk(k, -1).indices.sort(-1).values
                    self.diag["bias_changes_choice"] += int((nb_chosen != chosen).any(-1).sum())
                self.diag["sets"].update(tuple(r) for r in chosen.tolist())
        return fn


def make_deepseek(name, family, tokenizer):
    """Tiny DeepSeek-V2 / V3: MLA attention, one dense layer then two MoE layers."""
    for seed in range(SEED, SEED + 100):
        if make_deepseek_seeded(name, family, tokenizer, seed):
            return
    sys.exit(f"{name}: no seed gave greedy and routing margins of {MIN_MARGIN} / {MIN_ROUTE_MARGIN}")


def perturb_norms(model):
    """Norm scales and biases are ones/zeros at init: perturb them so the test sees them
    (covers q_a_layernorm and kv_a_layernorm, whose names contain "norm")."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n or n.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.3)


def reference_logits(ref_model, prompts, recorder=None):
    logits, greedy_out, margins, routing = {}, [], [], []
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            if recorder is not None:
                recorder.capture = {}
            logits[f"logits.{i}"] = ref_model(torch.tensor([prompt])).logits[0].float().contiguous()
            if recorder is not None:
                routing.append(recorder.capture)
                recorder.capture = None
            toks, margin = greedy(ref_model, prompt, GREEDY_STEPS)
            greedy_out.append(toks)
            margins.append(margin)
    return logits, greedy_out, margins, routing


def write_chatml_tokenizer(out, tokenizer):
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|endoftext|>",
        "eos_token": {"content": "<|im_end|>", "special": True},
        "chat_template": CHATML,
    }, indent=2))


def make_deepseek_seeded(name, family, tokenizer, seed):
    from transformers import AutoModelForCausalLM, GenerationConfig
    from transformers.utils.chat_template_utils import render_jinja_template

    torch.manual_seed(seed)
    config = deepseek_config(family)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    perturb_norms(model)
    with torch.no_grad():
        for n, b in model.named_buffers():
            if n.endswith("e_score_correction_bias"):  # zeros at init, a buffer (not a parameter)
                b.copy_(torch.randn_like(b) * 0.5)
    model.eval()
    out = FIXTURES / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(out, safe_serialization=True)
    deepseek_config_json(family, out / "config.json")
    GenerationConfig(eos_token_id=[2], bos_token_id=0, temperature=0.7, top_p=0.9, do_sample=True).save_pretrained(out)
    write_chatml_tokenizer(out, tokenizer)

    ref_model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
    ref_model.eval()
    # The reloaded model is the one in memory: same rope, same softmax scale, same weights
    # (the experts are saved one tensor each, and fused again on load).
    assert ref_model.config.rope_parameters["rope_type"] == config.rope_parameters["rope_type"]
    assert torch.equal(ref_model.model.rotary_emb.inv_freq, model.model.rotary_emb.inv_freq)
    assert ref_model.model.rotary_emb.attention_scaling == model.model.rotary_emb.attention_scaling
    assert ref_model.model.layers[0].self_attn.scaling == model.model.layers[0].self_attn.scaling
    with torch.no_grad():
        probe = torch.tensor([PROMPTS[2]])
        assert torch.equal(ref_model(probe).logits, model(probe).logits), "reload changed the model"
    from safetensors import safe_open
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    if family == "deepseek_v3":
        for i in range(config.first_k_dense_replace, config.num_hidden_layers):
            assert f"model.layers.{i}.mlp.gate.e_score_correction_bias" in saved, "bias not saved"
            assert torch.equal(ref_model.model.layers[i].mlp.gate.e_score_correction_bias,
                               model.model.layers[i].mlp.gate.e_score_correction_bias)

    recorder = RouteRecorder(ref_model)
    logits, greedy_out, margins, routing = reference_logits(ref_model, PROMPTS, recorder)
    save_file(logits, str(out / "reference.safetensors"))
    rendered = render_jinja_template(
        conversations=[CHAT_MESSAGES], chat_template=CHATML, add_generation_prompt=True,
        bos_token="<|endoftext|>", eos_token="<|im_end|>",
    )[0][0]
    rot = ref_model.model.rotary_emb
    reference = {
        "generator": "scripts/make_fixtures.py",
        "seed": seed,
        "transformers_dtype": "float32",
        "prompts": PROMPTS,
        "greedy": greedy_out,
        "greedy_min_margin": margins,
        "routing_min_margin": recorder.min_margin,
        # For debugging only (the logits are the test): the experts (ascending ids) that
        # each token of each prompt chose, per MoE layer, in the prompt's forward pass.
        "routing": routing,
        "rope": {"inv_freq": rot.inv_freq.tolist(), "cos_sin_scale": rot.attention_scaling,
                 "softmax_scale": ref_model.model.layers[0].self_attn.scaling},
        "tokenizer": [{"text": t, "ids": tokenizer.encode(t).ids} for t in TOKENIZER_CORPUS],
        "chat": {"messages": CHAT_MESSAGES, "rendered": rendered,
                 "ids": tokenizer.encode(rendered, add_special_tokens=False).ids},
    }
    (out / "reference.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False))
    d = recorder.diag
    ok = (min(margins) >= MIN_MARGIN and recorder.min_margin >= MIN_ROUTE_MARGIN
          and d["group_vs_plain_topk"] > 0 and len(d["sets"]) > 3
          and (family != "deepseek_v3" or d["bias_changes_choice"] > 0))
    print(f"{name}: seed {seed}, min greedy margin {min(margins):.4f}, min routing margin "
          f"{recorder.min_margin:.5f}; over the prompts' {d['tokens']} (token, MoE layer) routings: "
          f"{len(d['sets'])} distinct expert sets, group-limited != plain top-k for {d['group_vs_plain_topk']}"
          + (f", the bias changes the choice for {d['bias_changes_choice']}" if family == "deepseek_v3" else "")
          + ("" if ok else "  -> redraw"))
    return ok


# R1-distill-style reasoning fixture: Qwen2 weights, DeepSeek-R1-Distill-Qwen's tokens.
R1_BPE_SIZE = 360
# In the order of the real tokenizer (151643 end, 151644 User, 151645 Assistant, 151646
# begin, 151648 <think>, 151649 </think>), then DeepSeek-V3/R1's tool markers. The real
# R1-Distill-Qwen vocabulary does NOT have the tool markers (its template writes them as
# plain text); they are here as DeepSeek-V3 / R1 have them: added, not special.
R1_ADDED = [
    ("<｜end▁of▁sentence｜>", True),
    ("<｜User｜>", True),
    ("<｜Assistant｜>", True),
    ("<｜begin▁of▁sentence｜>", True),
    ("<think>", False),
    ("</think>", False),
    ("<｜tool▁calls▁begin｜>", False),
    ("<｜tool▁calls▁end｜>", False),
    ("<｜tool▁call▁begin｜>", False),
    ("<｜tool▁call▁end｜>", False),
    ("<｜tool▁sep｜>", False),
    ("<｜tool▁outputs▁begin｜>", False),
    ("<｜tool▁outputs▁end｜>", False),
    ("<｜tool▁output▁begin｜>", False),
    ("<｜tool▁output▁end｜>", False),
]
R1_BOS, R1_EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
R1_MODEL_VOCAB = 384  # the tokenizer has 375: the embedding is padded, as real checkpoints' are
R1_PART = ROOT / "models" / "DeepSeek-R1-Distill-Qwen-7B.Q4_K_M.part0000.gguf"

R1_CORPUS = TOKENIZER_CORPUS + [
    "<｜User｜>What is 1+1?<｜Assistant｜><think>\nEasy.\n</think>\n\n2<｜end▁of▁sentence｜>",
    "<think>thinking</think>answer",
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
    "{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
]

R1_CHAT = [
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "<think>\nsecret\n</think>\n\nAnswer"},
    {"role": "user", "content": "And 3 + 3?"},
]
R1_TOOL_CHAT = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
    {"role": "tool", "content": "22C"},
]


def r1_chat_templates():
    """The real chat template from the R1 GGUF header, and the variant whose generation
    prompt opens the reasoning (DeepSeek's later revision of the template)."""
    if not R1_PART.exists():
        sys.exit(f"{R1_PART} is missing: run scripts/fetch-model.sh r1-part")
    real = read_gguf_metadata(R1_PART)["tokenizer.chat_template"][2]
    gen_prompt = "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %}"
    assert real.endswith(gen_prompt), "the real template's generation prompt changed"
    think = real[: -len(gen_prompt)] + "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"
    return real, think


def r1_tokenizer():
    from tokenizers import AddedToken, processors

    tok = train_tokenizer(R1_BPE_SIZE, special_tokens=(), qwen2=True)
    assert tok.get_vocab_size() == R1_BPE_SIZE, tok.get_vocab_size()
    for content, special in R1_ADDED:  # one at a time, to keep the order of the ids
        t = AddedToken(content, special=special, normalized=False)
        (tok.add_special_tokens if special else tok.add_tokens)([t])
    bos = tok.token_to_id(R1_BOS)
    # As the real tokenizer: add_bos_token, i.e. encode(add_special_tokens=True) prepends
    # <｜begin▁of▁sentence｜> (the chat template writes it itself: encode the rendered
    # prompt without special tokens).
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{R1_BOS} $A", pair=f"{R1_BOS} $A {R1_BOS} $B",
                                      special_tokens=[(R1_BOS, bos)]),
    ])
    return tok


def make_r1_qwen2(name):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, Qwen2Config
    from transformers.utils.chat_template_utils import render_jinja_template

    real, think = r1_chat_templates()
    tokenizer = r1_tokenizer()
    n_tok = tokenizer.get_vocab_size(with_added_tokens=True)
    assert n_tok == R1_BPE_SIZE + len(R1_ADDED) <= R1_MODEL_VOCAB
    ids = {content: tokenizer.token_to_id(content) for content, _ in R1_ADDED}
    bos, eos = ids[R1_BOS], ids[R1_EOS]

    def render(messages, template, agp=True):
        return render_jinja_template(conversations=[messages], chat_template=template, add_generation_prompt=agp,
                                     bos_token=R1_BOS, eos_token=R1_EOS)[0][0]

    def enc(text):
        return tokenizer.encode(text, add_special_tokens=False).ids

    # A fourth prompt with the added tokens in it: the think template's generation prompt.
    think_prompt = render([R1_CHAT[0]], think)
    prompts = PROMPTS + [enc(think_prompt)]

    for seed in range(SEED, SEED + 100):
        torch.manual_seed(seed)
        config = Qwen2Config(
            vocab_size=R1_MODEL_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
            tie_word_embeddings=False, initializer_range=0.25, bos_token_id=bos, eos_token_id=eos,
            rope_theta=10000.0,
        )
        config._attn_implementation = "eager"
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        perturb_norms(model)
        out = FIXTURES / name
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        model.save_pretrained(out, safe_serialization=True)
        # As DeepSeek-R1-Distill-Qwen's generation_config.json.
        GenerationConfig(bos_token_id=bos, eos_token_id=eos, do_sample=True, temperature=0.6,
                         top_p=0.95).save_pretrained(out)
        tokenizer.save(str(out / "tokenizer.json"))

        def added(content, special):
            return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": False,
                    "rstrip": False, "single_word": False, "special": special}
        (out / "tokenizer_config.json").write_text(json.dumps({
            "add_bos_token": True,
            "add_eos_token": False,
            "added_tokens_decoder": {str(ids[c]): added(c, s) for c, s in R1_ADDED},
            "bos_token": added(R1_BOS, True),
            "eos_token": added(R1_EOS, True),
            "pad_token": added(R1_EOS, True),
            "clean_up_tokenization_spaces": False,
            "legacy": True,
            "model_max_length": 16384,
            "tokenizer_class": "LlamaTokenizerFast",
            "unk_token": None,
            "chat_template": real,
        }, indent=2, ensure_ascii=False))
        (out / "chat_template_think.jinja").write_text(think)

        ref_model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
        ref_model.eval()
        logits, greedy_out, margins, _ = reference_logits(ref_model, prompts)
        in_vocab = all(t < n_tok for g in greedy_out for t in g)
        ok = min(margins) >= MIN_MARGIN and in_vocab
        print(f"{name}: seed {seed}, min greedy margin {min(margins):.4f}"
              + ("" if in_vocab else ", greedy emits a padding id") + ("" if ok else "  -> redraw"))
        if ok:
            break
    else:
        sys.exit(f"{name}: no seed gave a greedy margin of {MIN_MARGIN}")
    save_file(logits, str(out / "reference.safetensors"))

    def case(case_name, messages, template_name, agp=True):
        text = render(messages, real if template_name == "real" else think, agp)
        return {"name": case_name, "template": template_name, "add_generation_prompt": agp,
                "messages": messages, "rendered": text, "ids": enc(text)}

    chat = case("reasoning-history", R1_CHAT, "real")
    reference = {
        "generator": "scripts/make_fixtures.py",
        "seed": seed,
        "transformers_dtype": "float32",
        "prompts": prompts,
        "greedy": greedy_out,
        "greedy_min_margin": margins,
        "tokenizer_size": n_tok,
        "model_vocab_size": R1_MODEL_VOCAB,
        "specials": {c: ids[c] for c in ("<think>", "</think>", R1_EOS, "<｜tool▁calls▁begin｜>")},
        "added_tokens": [{"content": c, "id": ids[c], "special": s} for c, s in R1_ADDED],
        # encode(text, add_special_tokens=True) prepends the begin token; ids_no_special without.
        "tokenizer": [{"text": t, "ids": tokenizer.encode(t).ids, "ids_no_special": enc(t)} for t in R1_CORPUS],
        "chat": {k: chat[k] for k in ("messages", "rendered", "ids")},
        # template "real": tokenizer_config.json's; "think": chat_template_think.jinja.
        "chat_cases": [
            chat,
            case("reasoning-history", R1_CHAT, "think"),
            case("reasoning-history-no-generation-prompt", R1_CHAT[:2], "real", agp=False),
            case("tool-call", R1_TOOL_CHAT, "real"),
            case("tool-call", R1_TOOL_CHAT, "think"),
        ],
    }
    (out / "reference.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False))

    # transformers' own tokenizer, loaded from the files written, agrees.
    hf = AutoTokenizer.from_pretrained(out)
    for t in R1_CORPUS:
        assert hf(t)["input_ids"] == tokenizer.encode(t).ids, t
    assert hf.apply_chat_template(R1_CHAT, tokenize=False, add_generation_prompt=True) == chat["rendered"]
    print(f"{name}: tokenizer {n_tok} tokens (model vocab {R1_MODEL_VOCAB}), specials {reference['specials']}")



def make_gguf(name, llama_cpp_dir):
    """Converts tests/fixtures/NAME to tests/fixtures/NAME.gguf (f32) with the
    convert_hf_to_gguf.py that llama-cpp-python 0.3.36's sdist vendors (the same
    package scripts/bench/build-llama-server.sh fetches and sha-checks; pass its
    vendor/llama.cpp as --llama-cpp). Nothing in that tree is modified. Two
    workarounds, applied to a temporary copy of the fixture / in this process only:

    - transformers 5's AutoTokenizer rejects the tiny fixtures' tokenizer_config.json
      ({"content": ..., "special": true} without "__type": "AddedToken"), so the copy
      has eos_token as a plain string;
    - the converter identifies the BPE pre-tokenizer by hashing a tokenization and
      knows no hash of our trained vocabulary: where it finds none, it is told
      "gpt-2", which is exactly our pre-tokenizer (ByteLevel with GPT-2's regex).

    Beware: GGUF has no key for DeepSeek-V2's topk_method. llama.cpp scores a group by
    the sum of its top two experts whenever expert_group_count > 1 (DeepSeek-V3's rule),
    while transformers' V2 group_limited_greedy scores it by its best expert; for
    tiny-deepseek-v2 the two rules choose different experts for 6 of the 94 (token,
    MoE layer) routings of the reference prompts, so llama.cpp's logits for this GGUF
    are not the reference's.
    """
    import tempfile

    llama_cpp_dir = Path(llama_cpp_dir).resolve()
    src = FIXTURES / name
    dest = FIXTURES / f"{name}.gguf"
    sys.path[:0] = [str(llama_cpp_dir / "gguf-py"), str(llama_cpp_dir)]
    import conversion.base as conversion_base
    import convert_hf_to_gguf

    known_pre = conversion_base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer):
        try:
            return known_pre(self, tokenizer)
        except NotImplementedError:
            return "gpt-2"

    conversion_base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / name
        shutil.copytree(src, model_dir, ignore=shutil.ignore_patterns("reference.*"))
        tc_path = model_dir / "tokenizer_config.json"
        tc = json.loads(tc_path.read_text())
        for key in ("bos_token", "eos_token", "pad_token"):
            if isinstance(tc.get(key), dict):
                tc[key] = tc[key]["content"]
        tc_path.write_text(json.dumps(tc, indent=2))
        sys.argv = ["convert_hf_to_gguf.py", str(model_dir), "--outtype", "f32", "--outfile", str(dest)]
        convert_hf_to_gguf.main()

    from gguf import GGUFReader
    reader = GGUFReader(str(dest))
    print(f"{dest.name}: {dest.stat().st_size} bytes")
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key not in ("tokenizer.ggml.model", "tokenizer.ggml.pre") \
                and not key.endswith("_id") and not key.startswith("tokenizer.ggml.add_"):
            print(f"  {key}: [{len(field.data)} items]")
        elif key != "tokenizer.chat_template":
            print(f"  {key}: {field.contents()!r}")
        else:
            print(f"  {key}: <{len(field.contents())} chars>")
    for t in reader.tensors:
        print(f"  tensor {t.name} {list(t.shape)} {t.tensor_type.name}")


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
    ap.add_argument("--only", metavar="NAME[,NAME]",
                    help="make only these tiny fixtures (default: all of them): " + ", ".join(TINY_FIXTURES))
    ap.add_argument("--fixtures", metavar="DIR", help="write under DIR instead of tests/fixtures "
                    "(e.g. to check that a run reproduces the committed files)")
    ap.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    ap.add_argument("--gguf", metavar="NAME", help="convert tests/fixtures/NAME (e.g. tiny-deepseek-v2) "
                    "to NAME.gguf with llama.cpp's convert_hf_to_gguf.py (see make_gguf; needs --llama-cpp)")
    ap.add_argument("--llama-cpp", metavar="DIR", help="a llama.cpp source tree (vendor/llama.cpp of the "
                    "llama-cpp-python 0.3.36 sdist) for --gguf")
    args = ap.parse_args()
    global FIXTURES
    if args.fixtures:
        FIXTURES = Path(args.fixtures).resolve()
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    if args.smollm2:
        make_smollm2(args.smollm2)
    elif args.r1_part:
        make_r1_tokenizer_reference(args.r1_part)
    elif args.templates:
        render_templates()
    elif args.gguf:
        if not args.llama_cpp:
            sys.exit("--gguf needs --llama-cpp DIR (vendor/llama.cpp of the llama-cpp-python 0.3.36 sdist)")
        make_gguf(args.gguf, args.llama_cpp)
    else:
        make_tiny_all(args.only.split(",") if args.only else None)


if __name__ == "__main__":
    main()
