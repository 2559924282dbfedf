//! The window pool on a real model: Gemma 3 270M (GGUF Q4_K_M, window 512,
//! 15 sliding and 3 global layers; `scripts/fetch-model.sh gemma3-270m`).
//! A prompt of about 900 tokens, prefilled in chunks that cross the window,
//! decodes through the engine (sliding layers in their own pool, blocks
//! given back as they leave the window) exactly as the model alone with
//! one pool holding every layer's whole context — alone and three at once.

mod common;

use std::path::PathBuf;

use common::greedy_unsplit;
use pagoda_engine::{
    EngineConfig, EngineCore, Request, RequestId, SamplingParams, SchedulerConfig, StopCondition,
};
use pagoda_models::{load_model, KvDtype};

#[test]
fn gemma3_270m_decodes_alike_with_its_window_pool() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join("models/gemma-3-270m.Q4_K_M.gguf");
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-model.sh gemma3-270m",
        path.display()
    );
    let loaded = load_model(&path).expect("load");
    let text = std::fs::read_to_string(root.join("tests/fixtures/quality_text.txt")).expect("text");
    let mut prompt = loaded.tokenizer.encode(&text, true).expect("encode");
    prompt.truncate(900);
    let steps = 12;
    let want = greedy_unsplit(loaded.model.as_ref(), &prompt, steps);
    let config = EngineConfig {
        block_size: 16,
        num_blocks: 256,
        prefix_caching: false,
        scheduler: SchedulerConfig {
            max_num_seqs: 3,
            max_tokens_per_step: 256,
            max_waiting: 8,
        },
        kv_dtype: KvDtype::F32,
    };
    for copies in [1u64, 3] {
        let mut engine = EngineCore::new(loaded.model.clone(), config).expect("engine");
        // Three windows of 32 blocks with a partial one on either side, and
        // a step of 256 tokens: 3 · 34 + 16.
        assert_eq!(engine.stats().window_blocks_total, 118);
        let per_seq = (512 + 256 - 1usize).div_ceil(16) + 1;
        let mut streams = Vec::new();
        for i in 0..copies {
            let (tx, rx) = flume::unbounded();
            let request = Request {
                prompt: prompt.clone(),
                sampling: SamplingParams::greedy(),
                stop: StopCondition {
                    max_tokens: steps,
                    min_tokens: 0,
                    eos_token_ids: Vec::new(),
                    stop_token_ids: Vec::new(),
                    ignore_eos: true,
                },
                n: 1,
                reasoning: None,
                grammar: None,
            };
            engine
                .add_request(RequestId(i), request, Box::new(tx))
                .expect("accepted");
            streams.push(rx);
        }
        let mut most_window = 0;
        for _ in 0..1_000 {
            if engine.is_idle() {
                break;
            }
            engine.step();
            most_window = most_window.max(engine.stats().window_blocks_used);
        }
        assert!(engine.is_idle());
        assert!(
            most_window <= (copies as usize * per_seq).min(118),
            "{most_window}"
        );
        for rx in &streams {
            assert_eq!(common::tokens(rx), want, "{copies} at once");
        }
        assert_eq!(engine.stats().blocks_used, 0);
        assert_eq!(engine.stats().window_blocks_used, 0);
    }
}
