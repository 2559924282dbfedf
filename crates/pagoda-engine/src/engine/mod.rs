//! The engine core: one synchronous [`EngineCore::step`] runs three steps,
//! in order: **schedule** (which sequences run and how many of their tokens,
//! [`crate::scheduler`]), **execute** (one forward pass over all of them,
//! with the grammar masks of those about to sample computed beside it), and
//! **update** (each sampling sequence's next token by the rules of
//! [`next_token`], its event sent, finished choices dropped). It owns the
//! KV pool and the block tables; the model keeps no state. Each sequence
//! is one record in the scheduler (tokens, progress and its
//! [`state::ChoiceState`]); each request one [`state::RequestState`].
//! [`crate::handle`] runs it on its own thread.
//!
//! The folder: [`state`] (what is kept per request and per choice),
//! [`next_token`] (the per-choice rules: thinking budget, suppression,
//! grammar), [`fork`] (choices 1..n of a request split off choice 0),
//! [`sink`] (where events go), [`stats`] (counters). The scripted model of
//! the unit tests (`scripted.rs`) drives every path without a real model.

mod fork;
mod next_token;
#[cfg(test)]
mod scripted;
mod sink;
mod state;
mod stats;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use pagoda_models::{CausalLm, KvDtype, LogitsWanted, PagedKvCache, SeqChunk};

pub use sink::EventSink;
pub use stats::EngineStats;

use crate::admission::{Admit, EngineLimits, Limit, SubmitError};
use crate::block_manager::BlockManager;
use crate::ids::{RequestId, SeqId};
use crate::kv_budget::{
    splits_pool, window_blocks_for, window_blocks_per_seq, KvBudget, KvBudgetError,
};
use crate::request::{EngineEvent, EngineFailure, FinishReason};
use crate::sampler::TokenLogprobs;
use crate::scheduler::{AdmitError, ScheduledChunk, Scheduler, SchedulerConfig, StepPlan};
use crate::step_cost::{StepCost, StepLatency};
use next_token::{next_token, Next};
use state::{ChoiceState, RequestState};

/// Sizes of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Positions per KV block.
    pub block_size: usize,
    /// Blocks in the KV pool.
    pub num_blocks: usize,
    /// Keep freed full blocks for reuse by later requests.
    pub prefix_caching: bool,
    /// Scheduling limits.
    pub scheduler: SchedulerConfig,
    /// The element type of the KV pool.
    pub kv_dtype: KvDtype,
}

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineInitError {
    /// The KV budget buys no pool.
    #[error(transparent)]
    Budget(#[from] KvBudgetError),
    /// The pool could not be allocated.
    #[error(transparent)]
    Model(#[from] pagoda_models::ModelError),
}

/// The engine's state and its step.
pub struct EngineCore {
    model: Arc<dyn CausalLm>,
    cache: PagedKvCache,
    blocks: BlockManager,
    /// Every sequence's record: its tokens and progress, and its choice's state.
    scheduler: Scheduler<ChoiceState>,
    requests: HashMap<RequestId, RequestState>,
    next_seq: u64,
    limits: EngineLimits,
    stats: EngineStats,
    /// How a step's prompt tokens are bounded, and what steps cost.
    latency: StepLatency,
    step_cost: StepCost,
}

impl std::fmt::Debug for EngineCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineCore")
            .field("stats", &self.stats)
            .finish()
    }
}

impl EngineCore {
    /// Allocates the KV pool for `model` and an idle engine.
    pub fn new(model: Arc<dyn CausalLm>, config: EngineConfig) -> pagoda_models::Result<Self> {
        Self::with_window_blocks(model, config, None)
    }

    /// [`Self::new`]; a model with sliding-window layers beside global ones
    /// gets a window pool of `window_blocks` blocks (by default, enough for
    /// every running sequence's window, at most `num_blocks`).
    fn with_window_blocks(
        model: Arc<dyn CausalLm>,
        config: EngineConfig,
        window_blocks: Option<usize>,
    ) -> pagoda_models::Result<Self> {
        let layout = model.kv_layout().with_dtype(config.kv_dtype);
        let window = layout.window.filter(|_| splits_pool(layout)).map(|w| {
            let step = config.scheduler.max_tokens_per_step;
            let per_seq = window_blocks_per_seq(w.positions, config.block_size, step);
            let blocks = window_blocks.unwrap_or_else(|| {
                let seqs = config.scheduler.max_num_seqs;
                window_blocks_for(w.positions, config.block_size, step, seqs)
                    .min(config.num_blocks)
                    .max(per_seq)
            });
            (blocks, w.positions)
        });
        let cache = match window {
            Some((blocks, _)) => PagedKvCache::with_window_pool(
                layout,
                config.block_size,
                config.num_blocks,
                blocks,
            )?,
            None => PagedKvCache::new(layout, config.block_size, config.num_blocks)?,
        };
        let mut block_manager =
            BlockManager::new(config.num_blocks, config.block_size, config.prefix_caching);
        if let Some((blocks, positions)) = window {
            block_manager = block_manager.with_window_pool(blocks, positions);
        }
        let capacity = config.block_size * config.num_blocks;
        let limits = EngineLimits {
            vocab_size: model.config().vocab_size,
            model_context: model.config().max_position_embeddings,
            pool_tokens: capacity,
            max_seqs: config.scheduler.max_num_seqs,
            max_waiting: config.scheduler.max_waiting,
        };
        Ok(Self {
            model,
            cache,
            blocks: block_manager,
            scheduler: Scheduler::with_states(config.scheduler, capacity),
            requests: HashMap::new(),
            next_seq: 0,
            limits,
            stats: EngineStats {
                blocks_total: config.num_blocks,
                window_blocks_total: window.map_or(0, |(blocks, _)| blocks),
                ..EngineStats::default()
            },
            latency: StepLatency::Fixed,
            step_cost: StepCost::new(),
        })
    }

    /// Sizes the KV pool from `budget` (bytes, or a fraction of the memory
    /// available now), allocates it once, and logs how many blocks and
    /// tokens fit.
    pub fn with_budget(
        model: Arc<dyn CausalLm>,
        budget: KvBudget,
        block_size: usize,
        prefix_caching: bool,
        scheduler: SchedulerConfig,
        kv_dtype: KvDtype,
    ) -> Result<Self, EngineInitError> {
        let layout = model.kv_layout().with_dtype(kv_dtype);
        let size = match layout.window.filter(|_| splits_pool(layout)) {
            Some(w) => {
                let step = scheduler.max_tokens_per_step;
                budget.split_pool_size(
                    layout,
                    block_size,
                    window_blocks_per_seq(w.positions, block_size, step),
                    window_blocks_for(w.positions, block_size, step, scheduler.max_num_seqs),
                )?
            }
            None => budget.pool_size(layout, block_size)?,
        };
        if let (Some(window_blocks), Some(w)) = (size.window_blocks, layout.window) {
            let (windowed, global) = layout.window_and_global_layers();
            tracing::info!(
                window_blocks,
                window = w.positions,
                windowed_layers = windowed,
                global_layers = global,
                "sliding-window layers get a pool of their own: a sequence holds only the \
                 blocks its window covers, the whole context in the global layers only"
            );
        }
        tracing::info!(
            blocks = size.num_blocks,
            block_size,
            tokens = size.tokens(),
            mib = size.bytes / (1024 * 1024),
            bytes_per_token = layout.bytes_per_token(),
            multi_head_bytes_per_token = layout.multi_head_bytes_per_token(),
            kv_dtype = kv_dtype.name(),
            prefix_caching,
            "KV pool allocated"
        );
        let core = Self::with_window_blocks(
            model,
            EngineConfig {
                block_size,
                num_blocks: size.num_blocks,
                prefix_caching,
                scheduler,
                kv_dtype,
            },
            size.window_blocks,
        )?;
        let limits = core.limits();
        if let (served, Limit::KvPool) = limits.served_context() {
            tracing::warn!(
                served_context = served,
                model_context = limits.model_context,
                "the KV pool holds fewer tokens than the model's context window: \
                 requests are limited to {served} tokens (prompt plus max_tokens); \
                 give the pool more memory to serve the whole window"
            );
        }
        Ok(core)
    }

    /// Bounds each step's prompt tokens by `latency` (the default is
    /// [`StepLatency::Fixed`]: the scheduler's `max_tokens_per_step`).
    /// With a target, a step with decoding sequences takes the prompt
    /// tokens that the measured costs say fit in it, at least one block's
    /// worth (prefill never stops), at most `max_tokens_per_step`.
    pub fn with_step_latency(mut self, latency: StepLatency) -> Self {
        self.latency = latency;
        self
    }

    /// Current counters.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// What a request must fit in.
    pub fn limits(&self) -> EngineLimits {
        self.limits
    }

    /// Whether nothing is waiting or running.
    pub fn is_idle(&self) -> bool {
        self.scheduler.is_idle()
    }

    /// Whether another request can be queued now.
    pub fn can_accept(&self) -> bool {
        self.scheduler.can_queue()
    }

    /// The block pool (for tests of the no-leak invariant).
    pub fn block_manager(&self) -> &BlockManager {
        &self.blocks
    }

    fn new_seq(&mut self) -> SeqId {
        self.next_seq += 1;
        SeqId(self.next_seq)
    }

    /// Queues `request` (checked against the limits unless it was
    /// admitted under them already); its events go to `sink`.
    pub fn add_request(
        &mut self,
        id: RequestId,
        request: impl Admit,
        sink: Box<dyn EventSink>,
    ) -> Result<(), SubmitError> {
        let admitted = request.admit(&self.limits)?;
        let schedule = admitted.schedule();
        let request = admitted.into_request();
        let needed = request.prompt.len() + request.stop.max_tokens;
        let seq = self.new_seq();
        let choice = ChoiceState::new(id, 0, &request);
        self.scheduler
            .add_scheduled(seq, request.prompt.clone(), needed, choice, schedule)
            .map_err(|e| match e {
                AdmitError::QueueFull(_) => SubmitError::QueueFull,
                // Checked against the same pool just above.
                AdmitError::TooLong { capacity, .. } => SubmitError::TooLong {
                    prompt: request.prompt.len(),
                    max_tokens: request.stop.max_tokens,
                    max: capacity,
                    limit: Limit::KvPool,
                },
            })?;
        self.requests
            .insert(id, RequestState::new(request, sink, seq));
        Ok(())
    }

    /// Drops `id` and frees its blocks.
    pub fn abort(&mut self, id: RequestId) {
        if let Some(state) = self.requests.remove(&id) {
            for seq in state.seqs {
                self.scheduler.remove(seq, &mut self.blocks);
            }
        }
    }

    /// Drops requests nobody listens to, and single choices their listener
    /// cancelled (only once the choices have forked: before that, choice 0
    /// carries the shared prompt).
    fn abort_closed(&mut self) {
        let mut closed = Vec::new();
        let mut cancelled = Vec::new();
        for (id, r) in &self.requests {
            if r.sink.is_closed() {
                closed.push(*id);
            } else if !r.unforked {
                cancelled.extend(r.seqs.iter().copied().filter(|seq| {
                    self.scheduler
                        .state(*seq)
                        .is_some_and(|s| r.sink.is_choice_cancelled(s.choice))
                }));
            }
        }
        for id in closed {
            self.abort(id);
        }
        for seq in cancelled {
            self.drop_seq(seq);
        }
    }

    /// Removes one sequence (a finished or cancelled choice) and, with its
    /// last sequence, its request.
    fn drop_seq(&mut self, seq: SeqId) {
        let Some(state) = self.scheduler.remove(seq, &mut self.blocks) else {
            return;
        };
        if let Some(r) = self.requests.get_mut(&state.request) {
            r.seqs.retain(|&s| s != seq);
            if r.seqs.is_empty() && !r.unforked {
                self.requests.remove(&state.request);
            }
        }
    }

    /// Runs one step: abort abandoned requests, schedule, one forward pass,
    /// sampling, events. Returns the number of tokens computed.
    pub fn step(&mut self) -> usize {
        let started = std::time::Instant::now();
        let forward_before = self.stats.forward_micros;
        let computed = self.step_inner();
        if self.stats.forward_micros != forward_before || computed > 0 {
            self.stats.step_micros += started.elapsed().as_micros() as u64;
        }
        computed
    }

    fn step_inner(&mut self) -> usize {
        self.abort_closed();
        let decoding = self.scheduler.num_decoding();
        let cap = self.scheduler.config().max_tokens_per_step;
        let prompt_budget =
            self.step_cost
                .prompt_budget(self.latency, decoding, self.blocks.block_size(), cap);
        self.stats.prompt_budget = prompt_budget;
        let plan = self
            .scheduler
            .schedule_with(&mut self.blocks, prompt_budget);
        self.stats.preemptions += plan.preempted.len() as u64;
        if plan.chunks.is_empty() {
            self.refresh_stats();
            return 0;
        }
        let started = std::time::Instant::now();
        let Some(mut logits) = self.execute(&plan) else {
            self.refresh_stats();
            return 0;
        };
        let computed: usize = plan.chunks.iter().map(|c| c.len).sum();
        self.stats.computed_tokens += computed as u64;
        self.update(&plan.chunks, &mut logits);
        self.learn_step_cost(&plan, started.elapsed());
        self.stats.steps += 1;
        self.refresh_stats();
        computed
    }

    /// Feeds the step's time to the cost model (decoding sequences: the
    /// chunks of one token; prompt tokens: the rest).
    fn learn_step_cost(&mut self, plan: &StepPlan, took: std::time::Duration) {
        if self.latency == StepLatency::Fixed {
            return;
        }
        let decoding = plan.chunks.iter().filter(|c| c.len == 1).count();
        let prompt: usize = plan
            .chunks
            .iter()
            .filter(|c| c.len > 1)
            .map(|c| c.len)
            .sum();
        let was_warm = self.step_cost.warmed_up();
        self.step_cost
            .observe(prompt, decoding, took.as_secs_f64() * 1e3);
        if !was_warm && self.step_cost.warmed_up() {
            let d = self.scheduler.config().max_num_seqs;
            tracing::info!(
                decode_step_ms_at_1 = format!("{:.1}", self.step_cost.predict(0, 1)),
                decode_step_ms_at_max_seqs = format!("{:.1}", self.step_cost.predict(0, d)),
                prompt_token_ms = format!(
                    "{:.3}",
                    self.step_cost.predict(1, 0) - self.step_cost.predict(0, 0)
                ),
                target_ms_at_max_seqs = self
                    .step_cost
                    .target_ms(self.latency, d)
                    .map(|t| format!("{t:.1}")),
                "step costs measured: prompt chunks are sized to the inter-token target"
            );
        }
    }

    /// One forward pass over the planned chunks, the grammar masks of the
    /// sequences about to sample computed on another thread meanwhile.
    /// Returns the logits (a row per sampling chunk, in order), or `None`
    /// when the pass failed (its requests have then failed too).
    fn execute(&mut self, plan: &StepPlan) -> Option<pagoda_models::Logits> {
        // One pass over the planned sequences' records: their tokens and
        // block tables (borrowed, not copied) make the batch, and the
        // grammars of those about to sample are taken for their masks.
        let mut batch: Vec<SeqChunk<'_>> = Vec::with_capacity(plan.chunks.len());
        // (Nothing is allocated when no sequence has a grammar.)
        let mut constrained = Vec::new();
        let views = self.scheduler.chunk_views(&plan.chunks);
        for (c, (tokens, choice)) in plan.chunks.iter().zip(views) {
            batch.push(SeqChunk {
                tokens: &tokens[c.start..c.start + c.len],
                start_pos: c.start,
                block_table: self.blocks.table(c.seq),
                window_table: self.blocks.window_table(c.seq),
                logits: if c.wants_logits {
                    LogitsWanted::Last
                } else {
                    LogitsWanted::None
                },
            });
            if c.wants_logits {
                constrained.extend(choice.active_constraint());
            }
        }
        let masks = constrained.len() as u64;
        let started = std::time::Instant::now();
        let (result, forward_micros, mask_micros) = std::thread::scope(|scope| {
            let masks = (!constrained.is_empty()).then(|| {
                scope.spawn(move || constrained.into_iter().map(|c| c.prepare()).sum::<u64>())
            });
            let result = self.model.forward(&batch, &mut self.cache);
            let forward_micros = started.elapsed().as_micros() as u64;
            // A mask that failed (the thread panicked) is computed again,
            // and its error reported, when the token is sampled.
            let mask_micros = masks.map(|h| h.join().unwrap_or(0)).unwrap_or(0);
            (result, forward_micros, mask_micros)
        });
        let wait_micros = (started.elapsed().as_micros() as u64).saturating_sub(forward_micros);
        self.stats.forward_micros += forward_micros;
        self.stats.masks += masks;
        self.stats.mask_micros += mask_micros;
        self.stats.mask_wait_micros += wait_micros;
        match result {
            Ok(logits) => Some(logits),
            Err(e) => {
                let failure = EngineFailure::Forward(e.to_string());
                let failed: Vec<RequestId> = plan
                    .chunks
                    .iter()
                    .filter_map(|c| self.scheduler.state(c.seq).map(|s| s.request))
                    .collect();
                for id in failed {
                    self.fail(id, failure.clone());
                }
                None
            }
        }
    }

    /// Records what each chunk computed and, for each chunk that reached
    /// its sequence's end, decides and sends the next token.
    fn update(&mut self, chunks: &[ScheduledChunk], logits: &mut pagoda_models::Logits) {
        let vocab = logits.vocab_size;
        let mut rows = logits.data.chunks_exact_mut(vocab);
        for chunk in chunks {
            self.scheduler.complete(chunk, &mut self.blocks);
            if chunk.wants_logits {
                if let Some(row) = rows.next() {
                    self.on_logits(chunk.seq, row);
                }
            }
        }
    }

    fn refresh_stats(&mut self) {
        let pool = self.blocks.pool();
        let cache = pool.stats();
        self.stats.waiting = self.scheduler.num_waiting();
        self.stats.running = self.scheduler.num_running();
        self.stats.blocks_used = pool.num_used();
        self.stats.window_blocks_used = self.blocks.window_pool().map_or(0, |p| p.num_used());
        self.stats.prefix_hits = cache.hits;
        self.stats.prefix_misses = cache.misses;
    }

    /// Decides the next token of `seq` from its logits and sends it; the
    /// first choice of a request with `n > 1` then forks the others.
    fn on_logits(&mut self, seq: SeqId, logits: &mut [f32]) {
        let Some(request_id) = self.scheduler.state(seq).map(|s| s.request) else {
            return;
        };
        let fork_now = self
            .requests
            .get(&request_id)
            .is_some_and(|r| r.unforked && r.seqs.first() == Some(&seq));
        let pristine = fork_now.then(|| logits.to_vec());
        self.sample_and_emit(seq, logits);
        if let Some(pristine) = pristine {
            self.fork_choices(request_id, seq, &pristine);
        }
    }

    fn sample_and_emit(&mut self, seq: SeqId, logits: &mut [f32]) {
        let Some((tokens, choice)) = self.scheduler.state_mut(seq) else {
            return;
        };
        let Some(request) = self.requests.get(&choice.request) else {
            return;
        };
        let generated = tokens.len().saturating_sub(choice.prompt_len) + 1;
        let id = choice.request;
        match next_token(choice, request, tokens, logits) {
            Next::Close(tokens) => self.append_forced(seq, &tokens),
            Next::Token {
                token,
                logprobs,
                stop,
            } => {
                self.emit(seq, token, logprobs, generated, stop);
            }
            Next::Failed(failure) => self.fail(id, failure),
        }
    }

    /// Ends request `id` with an error event.
    fn fail(&mut self, id: RequestId, failure: EngineFailure) {
        tracing::warn!(request = id.0, %failure, "request failed in the engine");
        if let Some(r) = self.requests.get(&id) {
            r.sink.send(EngineEvent::Failed(failure));
        }
        self.abort(id);
    }

    /// Sends `token`, the `generated`-th of `seq`'s output, and either ends
    /// the choice (a stop token, or `max_tokens` reached) or appends the
    /// token to the sequence. Returns whether the choice goes on.
    fn emit(
        &mut self,
        seq: SeqId,
        token: u32,
        logprobs: Option<TokenLogprobs>,
        generated: usize,
        stop: bool,
    ) -> bool {
        let Some(state) = self.scheduler.state(seq) else {
            return false;
        };
        let Some(request) = self.requests.get(&state.request) else {
            return false;
        };
        let finish = if stop {
            Some(FinishReason::Stop)
        } else if generated >= request.request.stop.max_tokens {
            Some(FinishReason::Length)
        } else {
            None
        };
        let (choice, request_id, prompt_len) = (state.choice, state.request, state.prompt_len);
        self.stats.generated_tokens += 1;
        let mut alive = request.sink.send(EngineEvent::Token {
            choice,
            token,
            logprobs,
        });
        let goes_on = finish.is_none();
        match finish {
            Some(reason) => {
                alive &= request.sink.send(EngineEvent::Finished {
                    choice,
                    reason,
                    prompt_tokens: prompt_len,
                    completion_tokens: generated,
                });
                self.drop_seq(seq);
            }
            None => self.scheduler.append(seq, token),
        }
        if !alive {
            self.abort(request_id);
            return false;
        }
        goes_on
    }

    /// Appends `tokens` to `seq`'s output as if generated (the engine's own
    /// close of a thinking block), sending each; stops at `max_tokens`.
    /// With log-probabilities asked for, each forced token has log-probability
    /// 0 (it was certain) and no alternatives.
    fn append_forced(&mut self, seq: SeqId, tokens: &[u32]) {
        for &token in tokens {
            let Some((tokens, state)) = self.scheduler.state_mut(seq) else {
                return;
            };
            let wants_logprobs = self
                .requests
                .get(&state.request)
                .is_some_and(|r| r.request.sampling.logprobs.is_some());
            let logprobs = wants_logprobs.then(|| TokenLogprobs {
                logprob: 0.0,
                top: Vec::new(),
            });
            let generated = tokens.len() - state.prompt_len + 1;
            if !self.emit(seq, token, logprobs, generated, false) {
                return;
            }
        }
    }
}
