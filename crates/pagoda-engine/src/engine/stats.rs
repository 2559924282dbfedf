//! The engine's counters and gauges, published after every step for logs
//! and metrics.

/// Counters and gauges of the engine, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Sequences waiting.
    pub waiting: usize,
    /// Sequences running.
    pub running: usize,
    /// KV blocks held by sequences.
    pub blocks_used: usize,
    /// KV blocks in the pool.
    pub blocks_total: usize,
    /// Window-pool blocks held by sequences (sliding-window layers with a
    /// pool of their own; 0 without).
    pub window_blocks_used: usize,
    /// Blocks in the window pool (0: none).
    pub window_blocks_total: usize,
    /// Prompt tokens the last step could take (its chunk budget: the
    /// inter-token target's share, or the fixed step budget).
    pub prompt_budget: usize,
    /// Prefix-cache block hits so far.
    pub prefix_hits: u64,
    /// Prefix-cache block misses so far.
    pub prefix_misses: u64,
    /// Prompt tokens computed so far (recomputation after preemption included).
    pub computed_tokens: u64,
    /// Tokens generated so far.
    pub generated_tokens: u64,
    /// Sequences preempted so far.
    pub preemptions: u64,
    /// Steps run so far.
    pub steps: u64,
    /// Wall time of those steps, microseconds.
    pub step_micros: u64,
    /// The part of it spent in the model's forward pass, microseconds; the
    /// rest is the engine's own overhead (scheduling, block tables,
    /// sampling, events).
    pub forward_micros: u64,
    /// Grammar masks computed so far (one per constrained token).
    pub masks: u64,
    /// Time spent computing them, microseconds (beside the forward pass).
    pub mask_micros: u64,
    /// Time steps waited for masks after their forward pass had finished,
    /// microseconds: what structured output added to the steps.
    pub mask_wait_micros: u64,
}
