//! The real default model, SmolLM2-135M-Instruct (GGUF Q4_1), against its
//! references: greedy continuations of plain and chat prompts equal those of
//! Hugging Face transformers loading the same GGUF, and the tokenizer rebuilt
//! from GGUF metadata encodes a varied corpus exactly as llama.cpp does. Also
//! the real DeepSeek-R1-Distill-Qwen tokenizer, from the header of a
//! truncated GGUF (`scripts/fetch-model.sh r1-part`), and Gemma 3 270M's
//! SentencePiece tokenizer (`scripts/fetch-model.sh gemma3-270m`), and the
//! greedy continuations of the real Gemma 3 270M and Qwen2.5-Coder-0.5B.
//!
//! The reference ids were recorded by `scripts/make_fixtures.py --smollm2`
//! and `--r1-part` into `tests/fixtures/*.json`.

mod common;

use std::path::Path;

use common::{default_model, fixtures, greedy, ids};
use pagoda_models::{
    load_model, load_model_with, load_tokenizer, ActivationChoice, Activations, KvDtype,
    LoadOptions, RenderOptions, Tokenizer,
};
use serde_json::Value;

fn reference(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(name)).expect("reference"))
        .expect("json")
}

fn require(path: &Path) {
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-model.sh first",
        path.display()
    );
}

fn check_tokenization(tokenizer: &Tokenizer, cases: &Value, add_special_tokens: bool) {
    for case in cases.as_array().expect("cases") {
        let text = case["text"].as_str().expect("text");
        let got = tokenizer.encode(text, add_special_tokens).expect("encode");
        assert_eq!(got, ids(&case["ids"]), "tokenization of {text:?}");
        assert_eq!(
            tokenizer.decode(&got, false).expect("decode"),
            text,
            "round trip of {text:?}"
        );
    }
}

#[test]
fn smollm2_tokenizer_matches_llama_cpp() {
    let path = default_model();
    require(&path);
    let (tokenizer, _) = load_tokenizer(&path).expect("tokenizer");
    check_tokenization(
        &tokenizer,
        &reference("smollm2_reference.json")["tokenization"],
        true,
    );
    assert_eq!(
        tokenizer.eos().map(|t| (t.id, t.text.as_str())),
        Some((2, "<|im_end|>"))
    );
    assert_eq!(tokenizer.bos().map(|t| t.id), Some(1));
}

fn with(activations: Activations) -> LoadOptions {
    LoadOptions {
        activations: activations.into(),
        ..LoadOptions::default()
    }
}

#[test]
fn smollm2_greedy_matches_transformers() {
    // f32 activations: the same arithmetic as transformers on the
    // dequantized GGUF; the default (int8x2 on this model): within f32
    // noise of it.
    greedy_matches_transformers(&with(Activations::F32));
    greedy_matches_transformers(&LoadOptions::default());
}

fn greedy_matches_transformers(options: &LoadOptions) {
    let path = default_model();
    require(&path);
    let loaded = load_model_with(&path, options).expect("load");
    let r = reference("smollm2_reference.json");
    let template = loaded
        .chat_template
        .as_ref()
        .expect("SmolLM2 ships a chat template");
    for case in r["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let text = case["text"].as_str().expect("text");
        let prompt = if case["chat"].as_bool().expect("chat") {
            let messages = [serde_json::json!({"role": "user", "content": text})];
            let rendered = template
                .render(
                    &messages,
                    &RenderOptions {
                        add_generation_prompt: true,
                        ..Default::default()
                    },
                )
                .expect("render");
            assert_eq!(
                rendered,
                case["prompt_text"].as_str().expect("prompt text"),
                "{name}"
            );
            loaded.tokenizer.encode(&rendered, false).expect("encode")
        } else {
            loaded.tokenizer.encode(text, true).expect("encode")
        };
        assert_eq!(prompt, ids(&case["prompt_ids"]), "{name}: prompt ids");
        let expected = ids(&case["greedy_ids"]);
        let got = greedy(
            loaded.model.as_ref(),
            &prompt,
            expected.len(),
            loaded.tokenizer.stop_ids(),
        );
        assert_eq!(
            got, expected,
            "{name}: greedy continuation with {}",
            loaded.precision
        );
    }
}

/// Gemma 3 270M's SentencePiece vocabulary (`tokenizer.ggml.model =
/// "llama"`, 262,144 tokens, scores, byte fallback, no space prefix)
/// encodes the corpus exactly as llama.cpp does
/// (`scripts/make_fixtures.py --spm-tokenizer`).
#[test]
fn gemma3_sentencepiece_tokenizer_matches_llama_cpp() {
    let path = default_model().with_file_name("gemma-3-270m.Q4_K_M.gguf");
    require(&path);
    let (tokenizer, _) = load_tokenizer(&path).expect("tokenizer");
    let r = reference("gemma3_tokenizer_reference.json");
    check_tokenization(&tokenizer, &r["tokenization"], false);
    for case in r["tokenization_with_bos"].as_array().expect("cases") {
        let text = case["text"].as_str().expect("text");
        assert_eq!(
            tokenizer.encode(text, true).expect("encode"),
            ids(&case["ids"]),
            "{text:?} with BOS"
        );
    }
    assert_eq!(tokenizer.bos().map(|t| t.id), Some(2));
    assert_eq!(tokenizer.eos().map(|t| t.id), Some(1));
}

#[test]
fn r1_distill_tokenizer_and_template_from_a_truncated_gguf() {
    let path = default_model().with_file_name("DeepSeek-R1-Distill-Qwen-7B.Q4_K_M.part0000.gguf");
    require(&path);
    let (tokenizer, template) = load_tokenizer(&path).expect("the header is complete");
    check_tokenization(
        &tokenizer,
        &reference("r1_tokenizer_reference.json")["tokenization"],
        false,
    );
    assert_eq!(tokenizer.bos().map(|t| t.id), Some(151_646));
    assert_eq!(tokenizer.eos().map(|t| t.id), Some(151_643));
    // add_bos_token is set in this GGUF: a plain encode starts with BOS.
    assert_eq!(tokenizer.encode("hi", true).expect("encode")[0], 151_646);
    let template = template.expect("R1 ships a chat template");
    assert_eq!(template.source().chars().count(), 2081);

    let err = load_model(&path)
        .expect_err("the weights are incomplete")
        .to_string();
    assert!(
        err.contains("truncated") && err.contains("part0000.gguf"),
        "{err}"
    );
}

/// Logits of every position of `prompt`, computed in one chunk.
fn all_logits(model: &dyn pagoda_models::CausalLm, prompt: &[u32]) -> Vec<f32> {
    let blocks = prompt.len().div_ceil(4);
    let mut cache = common::cache_for(model, blocks);
    let table: Vec<pagoda_models::BlockId> =
        (0..blocks as u32).map(pagoda_models::BlockId).collect();
    model
        .forward(
            &[pagoda_models::SeqChunk {
                tokens: prompt,
                start_pos: 0,
                block_table: &table,
                window_table: &[],
                logits: pagoda_models::LogitsWanted::All,
            }],
            &mut cache,
        )
        .expect("forward")
        .data
}

#[test]
fn int8_activations_stay_close_to_f32_ones_on_the_real_model() {
    let path = default_model();
    require(&path);
    let fast = load_model_with(&path, &with(Activations::Int8)).expect("load");
    let slow = load_model_with(&path, &with(Activations::F32)).expect("load");
    let prompt = fast
        .tokenizer
        .encode(
            "The capital of France is Paris. The capital of Germany is",
            true,
        )
        .expect("encode");
    let (a, b) = (
        all_logits(fast.model.as_ref(), &prompt),
        all_logits(slow.model.as_ref(), &prompt),
    );
    let vocab = fast.model.config().vocab_size;
    let mut worst = 0.0f32;
    for (ra, rb) in a.chunks_exact(vocab).zip(b.chunks_exact(vocab)) {
        let diff = ra
            .iter()
            .zip(rb)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        worst = worst.max(diff);
    }
    // 8-bit activations are noisier than f32 ones (measured here: at most
    // ~1.4 on logits spanning ~30), but they pick the same tokens.
    assert!(worst < 2.0, "int8 activations moved a logit by {worst}");
    for (pos, (ra, rb)) in a.chunks_exact(vocab).zip(b.chunks_exact(vocab)).enumerate() {
        assert_eq!(common::argmax(ra), common::argmax(rb), "position {pos}");
    }
    let p2 = fast
        .tokenizer
        .encode("The capital of France is", true)
        .expect("encode");
    let greedy = common::greedy(fast.model.as_ref(), &p2, 3, &[]);
    assert_eq!(
        fast.tokenizer.decode(&greedy, false).expect("decode"),
        " Paris.\n"
    );
}

/// What a KV cache of `dtype` does on the real model against an f32 one:
/// the largest logit difference over every position of the reference
/// prompts, and how many of transformers' greedy tokens it keeps (f32
/// activations, to isolate the cache): `(max |Δ|, identical, total)`.
fn kv_cache_effect(dtype: KvDtype) -> (f32, usize, usize) {
    let path = default_model();
    require(&path);
    let loaded = load_model_with(&path, &with(Activations::F32)).expect("load");
    let model = loaded.model.as_ref();
    let r = reference("smollm2_reference.json");
    let (mut worst, mut agree, mut total) = (0.0f32, 0, 0);
    for case in r["cases"].as_array().expect("cases") {
        let prompt = ids(&case["prompt_ids"]);
        let exact = common::prompt_logits_in(model, &prompt, KvDtype::F32);
        let stored = common::prompt_logits_in(model, &prompt, dtype);
        worst = worst.max(common::max_abs_diff(&exact, &stored));
        let expected = ids(&case["greedy_ids"]);
        let got = common::greedy_in(
            model,
            &prompt,
            expected.len(),
            loaded.tokenizer.stop_ids(),
            dtype,
        );
        total += expected.len();
        agree += got
            .iter()
            .zip(&expected)
            .take_while(|(a, b)| a == b)
            .count();
    }
    eprintln!(
        "{} KV cache: max |Δ logit| {worst:.4} over the reference prompts; greedy tokens {agree}/{total} identical",
        dtype.name()
    );
    (worst, agree, total)
}

/// The f16 cache (the server's default) keeps every greedy token.
#[test]
fn an_f16_kv_cache_keeps_the_greedy_tokens_and_moves_logits_little() {
    let (worst, agree, total) = kv_cache_effect(KvDtype::F16);
    // Measured: ~0.05 on logits spanning ~30 (f16 keeps 11 significant bits).
    assert!(worst < 0.1, "an f16 cache moved a logit by {worst}");
    assert_eq!(agree, total, "greedy tokens with an f16 cache");
}

/// The Q8_0 cache: 8 bits per value move logits about as much as 8-bit
/// activations do (measured: 0.95; int8 activations: up to ~1.5), and
/// greedy text drifts from transformers' on some prompts.
#[test]
fn a_q8_0_kv_cache_stays_close() {
    let (worst, agree, total) = kv_cache_effect(KvDtype::Q8_0);
    assert!(worst < 1.5, "a Q8_0 cache moved a logit by {worst}");
    assert!(agree * 2 >= total, "greedy tokens kept: {agree}/{total}");
}

/// What `pagoda quality` reports, on the first 384 tokens of its text: the
/// default int8x2 activations stay within f32 noise of f32 ones (every
/// most-likely token the same), while one 8-bit pass (llama.cpp's
/// arithmetic) moves the distributions measurably.
#[test]
fn int8x2_activations_keep_the_f32_distributions_on_the_real_model() {
    use pagoda_models::quality::{compare, Side};
    let path = default_model();
    require(&path);
    let text = std::fs::read_to_string(fixtures().join("quality_text.txt")).expect("text");
    let reference = load_model_with(&path, &with(Activations::F32)).expect("load");
    let mut tokens = reference.tokenizer.encode(&text, true).expect("encode");
    tokens.truncate(384);
    let f32_side = Side {
        model: reference.model.as_ref(),
        kv: KvDtype::F32,
    };
    let measure = |activations: Activations| {
        let loaded = load_model_with(&path, &with(activations)).expect("load");
        let d = compare(
            f32_side,
            Side {
                model: loaded.model.as_ref(),
                kv: KvDtype::F32,
            },
            &tokens,
            192,
        )
        .expect("compare");
        eprintln!("{}: {d:?}", activations.name());
        d
    };
    let same = measure(Activations::F32);
    assert_eq!((same.mean_kl, same.top1_agreement), (0.0, 1.0));
    assert_eq!(same.positions, 382);
    let default = measure(ActivationChoice::Auto.resolve(134_515_008));
    assert_eq!(default, measure(Activations::Int8x2));
    assert!(default.mean_kl < 1e-5, "{default:?}");
    assert_eq!(default.top1_agreement, 1.0, "{default:?}");
    let int8 = measure(Activations::Int8);
    // Measured: ~3e-3 nats on the whole text, ~97.5% of tokens agreeing.
    assert!(int8.mean_kl > 100.0 * default.mean_kl, "{int8:?}");
    assert!(int8.top1_agreement < 1.0, "{int8:?}");
}

/// A real model's greedy continuations of its reference prompts equal those
/// of transformers loading the same GGUF (`scripts/make_fixtures.py
/// --real`), with f32 activations and with the default ones.
fn real_greedy_matches_transformers(file: &str, reference_name: &str) {
    let path = default_model().with_file_name(file);
    require(&path);
    let r = reference(reference_name);
    for options in [with(Activations::F32), LoadOptions::default()] {
        let loaded = load_model_with(&path, &options).expect("load");
        for case in r["cases"].as_array().expect("cases") {
            let text = case["text"].as_str().expect("text");
            let prompt = loaded.tokenizer.encode(text, true).expect("encode");
            assert_eq!(prompt, ids(&case["prompt_ids"]), "{text:?}: prompt ids");
            let expected = ids(&case["greedy_ids"]);
            let got = greedy(loaded.model.as_ref(), &prompt, expected.len(), &[]);
            assert_eq!(got, expected, "{text:?} with {}", loaded.precision);
        }
    }
}

/// The real Gemma 3 270M (GGUF Q4_K_M: sliding and global layers, a
/// SentencePiece vocabulary).
#[test]
fn gemma3_270m_greedy_matches_transformers() {
    real_greedy_matches_transformers("gemma-3-270m.Q4_K_M.gguf", "gemma3_270m_reference.json");
}

/// The real Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M, 1.1 GB; its default
/// activations are int8, so only the f32 path is held to transformers'
/// tokens here). Outside the gate (the file is a 1.1 GB download): run
/// `scripts/fetch-model.sh qwen2.5-coder-1.5b` and `cargo test -p
/// pagoda-models --test default_model -- --ignored`.
#[test]
#[ignore = "needs the 1.1 GB Qwen2.5-Coder-1.5B (scripts/fetch-model.sh qwen2.5-coder-1.5b)"]
fn qwen25_coder_15b_greedy_matches_transformers() {
    let file = "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf";
    let path = default_model().with_file_name(file);
    require(&path);
    let r = reference("qwen2.5_coder_1.5b_reference.json");
    let loaded = load_model_with(&path, &with(Activations::F32)).expect("load");
    for case in r["cases"].as_array().expect("cases") {
        let text = case["text"].as_str().expect("text");
        let prompt = loaded.tokenizer.encode(text, true).expect("encode");
        assert_eq!(prompt, ids(&case["prompt_ids"]), "{text:?}: prompt ids");
        let expected = ids(&case["greedy_ids"]);
        let got = greedy(loaded.model.as_ref(), &prompt, expected.len(), &[]);
        assert_eq!(got, expected, "{text:?}");
    }
}

/// The real Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M with Q5_0 and Q8_0
/// fallbacks; `scripts/fetch-model.sh qwen2.5-coder-0.5b`): code, prose and
/// a chat turn.
#[test]
fn qwen25_coder_05b_greedy_matches_transformers() {
    real_greedy_matches_transformers(
        "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        "qwen2.5_coder_0.5b_reference.json",
    );
}
