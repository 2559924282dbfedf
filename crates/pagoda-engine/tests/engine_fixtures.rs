//! Every model family through the paged engine, against Hugging Face
//! transformers: the tiny random-weight checkpoints of
//! `scripts/make_fixtures.py` (llama, qwen2, qwen3, Qwen3-MoE, Mistral, Mixtral, Phi-3, Gemma 3, DeepSeek-V2 and DeepSeek-V3
//! with multi-head latent attention and mixture of experts) decode greedily
//! exactly the tokens transformers did — each prompt alone, and all of them
//! together in small blocks under a small step budget, so that prompts are
//! chunked, sequences share steps and the pool runs out (preemption).

use std::path::PathBuf;
use std::sync::Arc;

use pagoda_engine::{
    EngineConfig, EngineCore, EngineEvent, Request, RequestId, SamplingParams, SchedulerConfig,
    StopCondition,
};
mod common;

use common::greedy_unsplit;
use pagoda_models::{load_model, CausalLm, KvDtype};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// The fixture's prompts and transformers' greedy continuations.
fn reference(name: &str) -> Vec<(Vec<u32>, Vec<u32>)> {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).expect("reference");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .expect("ids")
            .iter()
            .map(|t| t.as_u64().expect("id") as u32)
            .collect()
    };
    let prompts = json["prompts"].as_array().expect("prompts");
    let greedy = json["greedy"].as_array().expect("greedy");
    prompts
        .iter()
        .zip(greedy)
        .map(|(p, g)| (ids(p), ids(g)))
        .collect()
}

fn greedy_request(prompt: &[u32], max_tokens: usize) -> Request {
    Request {
        prompt: prompt.to_vec(),
        sampling: SamplingParams::greedy(),
        stop: StopCondition {
            max_tokens,
            min_tokens: 0,
            eos_token_ids: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: true,
        },
        n: 1,
        reasoning: None,
        grammar: None,
    }
}

/// Runs `requests` together; each one's tokens.
fn run(
    model: &Arc<dyn CausalLm>,
    config: EngineConfig,
    requests: &[Request],
) -> (Vec<Vec<u32>>, u64) {
    let mut engine = EngineCore::new(model.clone(), config).expect("engine");
    let mut streams = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let (tx, rx) = flume::unbounded();
        engine
            .add_request(RequestId(i as u64), r.clone(), Box::new(tx))
            .expect("accepted");
        streams.push(rx);
    }
    for _ in 0..10_000 {
        if engine.is_idle() {
            break;
        }
        engine.step();
    }
    assert!(engine.is_idle(), "the engine did not finish");
    assert_eq!(engine.stats().blocks_used, 0, "every block is free again");
    assert_eq!(
        engine.stats().window_blocks_used,
        0,
        "every window block too"
    );
    let tokens = streams.iter().map(common::tokens).collect();
    (tokens, engine.stats().preemptions)
}

fn config(
    block_size: usize,
    num_blocks: usize,
    max_num_seqs: usize,
    budget: usize,
) -> EngineConfig {
    EngineConfig {
        block_size,
        num_blocks,
        prefix_caching: true,
        scheduler: SchedulerConfig {
            max_num_seqs,
            max_tokens_per_step: budget,
            max_waiting: 64,
        },
        kv_dtype: KvDtype::F32,
    }
}

fn check(name: &str) {
    let model = load_model(&fixture(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .model;
    let cases = reference(name);
    let requests: Vec<Request> = cases
        .iter()
        .map(|(p, g)| greedy_request(p, g.len()))
        .collect();
    let expected: Vec<Vec<u32>> = cases.into_iter().map(|(_, g)| g).collect();
    for (r, want) in requests.iter().zip(&expected) {
        let (got, _) = run(&model, config(16, 16, 1, 512), std::slice::from_ref(r));
        assert_eq!(&got[0], want, "{name}: alone");
    }
    // Blocks of 4, a 7-token step budget: chunked prompts, shared steps.
    let (got, _) = run(&model, config(4, 64, 8, 7), &requests);
    assert_eq!(got, expected, "{name}: batched");
    // Twice each prompt, in a pool too small for all: preemption and
    // prefix-cache hits.
    let twice: Vec<Request> = requests.iter().chain(&requests).cloned().collect();
    let (got, preemptions) = run(&model, config(4, 16, 6, 16), &twice);
    let want: Vec<Vec<u32>> = expected.iter().chain(&expected).cloned().collect();
    assert_eq!(got, want, "{name}: under pressure");
    assert!(
        preemptions > 0,
        "{name}: the pool was meant to force preemption"
    );
    // Three greedy choices of each prompt fork from it (sharing its full
    // blocks, copying the partial one, as prompts of 1 and 6 tokens in
    // 4-position blocks leave): each choice is the reference.
    for (r, want) in requests.iter().zip(&expected) {
        let mut three = r.clone();
        three.n = 3;
        let mut engine = EngineCore::new(model.clone(), config(4, 64, 8, 64)).expect("engine");
        let (tx, rx) = flume::unbounded();
        engine
            .add_request(RequestId(0), three, Box::new(tx))
            .expect("accepted");
        for _ in 0..10_000 {
            if engine.is_idle() {
                break;
            }
            engine.step();
        }
        let mut choices = vec![Vec::new(); 3];
        for e in rx.try_iter() {
            if let EngineEvent::Token { choice, token, .. } = e {
                choices[choice].push(token);
            }
        }
        assert_eq!(choices, vec![want.clone(); 3], "{name}: forked choices");
        assert_eq!(
            engine.stats().blocks_used,
            0,
            "{name}: every block is free again"
        );
        assert_eq!(
            engine.stats().window_blocks_used,
            0,
            "{name}: window blocks"
        );
    }
}

#[test]
fn llama_decodes_as_transformers_through_the_engine() {
    check("tiny-llama");
}

#[test]
fn qwen2_decodes_as_transformers_through_the_engine() {
    check("tiny-qwen2");
}

#[test]
fn qwen3_decodes_as_transformers_through_the_engine() {
    check("tiny-qwen3");
}

#[test]
fn mistral_decodes_as_transformers_through_the_engine() {
    check("tiny-mistral");
}

#[test]
fn phi3_decodes_as_transformers_through_the_engine() {
    check("tiny-phi3");
}

#[test]
fn qwen3_moe_decodes_as_transformers_through_the_engine() {
    check("tiny-qwen3-moe");
}

#[test]
fn mixtral_decodes_as_transformers_through_the_engine() {
    check("tiny-mixtral");
}

#[test]
fn gemma3_decodes_as_transformers_through_the_engine() {
    check("tiny-gemma3");
}

#[test]
fn deepseek_v2_decodes_as_transformers_through_the_engine() {
    check("tiny-deepseek-v2");
}

#[test]
fn deepseek_v3_decodes_as_transformers_through_the_engine() {
    check("tiny-deepseek-v3");
}

/// Gemma 3's sliding layers (window 4) keep their keys and values in a pool
/// of their own, and a sequence holds only the blocks its window covers:
/// over 100 positions the main pool holds all 25 blocks, the window pool
/// never more than a step's window (4 blocks of 4 with a step of 8 tokens),
/// and the tokens are those of one pool holding everything. Run again, the
/// prompt is found in both pools' prefix caches, and every block of both
/// pools is free at the end.
#[test]
fn gemma3_sequences_hold_only_their_window_in_the_window_pool() {
    let model = load_model(&fixture("tiny-gemma3")).expect("load").model;
    let vocab = model.config().vocab_size as u32;
    let prompt: Vec<u32> = (0..40u32).map(|i| (i * 37 + 11) % vocab).collect();
    let want = greedy_unsplit(model.as_ref(), &prompt, 60);
    let mut engine = EngineCore::new(model.clone(), config(4, 64, 8, 8)).expect("engine");
    // 8 windows of one block with a partial one on either side, and a step's 2.
    assert_eq!(engine.stats().window_blocks_total, 26);
    let mut computed = Vec::new();
    for round in 0..2u64 {
        let before = engine.stats().computed_tokens;
        let (tx, rx) = flume::unbounded();
        engine
            .add_request(RequestId(round), greedy_request(&prompt, 60), Box::new(tx))
            .expect("accepted");
        let (mut most_main, mut most_window) = (0, 0);
        for _ in 0..10_000 {
            if engine.is_idle() {
                break;
            }
            engine.step();
            most_main = most_main.max(engine.stats().blocks_used);
            most_window = most_window.max(engine.stats().window_blocks_used);
        }
        assert_eq!(common::tokens(&rx), want, "round {round}");
        assert_eq!(
            most_main, 25,
            "round {round}: the main pool holds everything"
        );
        assert!(
            most_window <= 4,
            "round {round}: {most_window} window blocks held"
        );
        assert_eq!(engine.stats().blocks_used, 0);
        assert_eq!(engine.stats().window_blocks_used, 0);
        computed.push(engine.stats().computed_tokens - before);
    }
    // 40 prompt tokens and 59 fed back; then the prompt's first 36
    // positions (9 whole blocks, the last window's 8th and 9th among them)
    // come from the caches.
    assert_eq!(computed, [99, 99 - 36]);
}
