//! What the engine's integration tests share.

use pagoda_engine::EngineEvent;
use pagoda_models::{BlockId, CausalLm, LogitsWanted, PagedKvCache, SeqChunk};

/// The tokens a request's events carried so far (a failure panics).
pub fn tokens(events: &flume::Receiver<EngineEvent>) -> Vec<u32> {
    events
        .try_iter()
        .filter_map(|e| match e {
            EngineEvent::Token { token, .. } => Some(token),
            EngineEvent::Failed(e) => panic!("request failed: {e}"),
            EngineEvent::Finished { .. } => None,
        })
        .collect()
}

/// Greedy decoding of `prompt` by the model alone, one pool for every
/// layer (no window pool): the reference for the engine's window pool.
pub fn greedy_unsplit(model: &dyn CausalLm, prompt: &[u32], steps: usize) -> Vec<u32> {
    let positions = prompt.len() + steps;
    let blocks = positions.div_ceil(4);
    let mut cache = PagedKvCache::new(model.kv_layout(), 4, blocks).expect("cache");
    let table: Vec<BlockId> = (0..blocks as u32).map(BlockId).collect();
    let mut tokens = prompt.to_vec();
    let mut start = 0;
    for _ in 0..steps {
        let logits = model
            .forward(
                &[SeqChunk {
                    tokens: &tokens[start..],
                    start_pos: start,
                    block_table: &table,
                    window_table: &[],
                    logits: LogitsWanted::Last,
                }],
                &mut cache,
            )
            .expect("forward");
        let row = logits.row(0);
        let next = (0..row.len())
            .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
            .expect("logits") as u32;
        start = tokens.len();
        tokens.push(next);
    }
    tokens.split_off(prompt.len())
}
