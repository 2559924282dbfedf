//! The engine core: one synchronous `step` schedules, runs one forward pass
//! over every scheduled sequence, samples, and sends each request its
//! events. It owns the KV pool and the block tables; the model keeps no
//! state. [`crate::handle`] runs it on its own thread.
//!
//! A request with `n > 1` computes its prompt once: when the first choice's
//! prompt is done, the other choices fork from it (sharing its full KV
//! blocks, copying the partial last one) and sample their first token from
//! the same logits with their own seeds.

use std::collections::HashMap;
use std::sync::Arc;

use pagoda_models::{CausalLm, LogitsWanted, PagedKvCache, SeqChunk};

use crate::admission::{EngineLimits, Limit, SubmitError};
use crate::block_manager::{BlockManager, Fork};
use crate::constraint::Constraint;
use crate::ids::{RequestId, SeqId};
use crate::kv_budget::{KvBudget, KvBudgetError};
use crate::reasoning::Thinking;
use crate::request::{EngineEvent, EngineFailure, FinishReason, Request};
use crate::sampler::{History, Sampler};
use crate::scheduler::{AdmitError, Scheduler, SchedulerConfig};

/// Where a request's events go.
pub trait EventSink: Send {
    /// Delivers `event`; false when nobody listens any more.
    fn send(&self, event: EngineEvent) -> bool;
    /// Whether the listener is gone (the request should be aborted).
    fn is_closed(&self) -> bool;
    /// Whether the listener no longer wants choice `choice` (say, a stop
    /// string ended it); that choice alone is dropped.
    fn is_choice_cancelled(&self, _choice: usize) -> bool {
        false
    }
}

impl EventSink for flume::Sender<EngineEvent> {
    fn send(&self, event: EngineEvent) -> bool {
        flume::Sender::send(self, event).is_ok()
    }

    fn is_closed(&self) -> bool {
        self.is_disconnected()
    }
}

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

struct SeqState {
    request: RequestId,
    choice: usize,
    sampler: Sampler,
    prompt_len: usize,
    /// Where the choice stands in its thinking (budgeted requests only).
    thinking: Option<Thinking>,
    /// The grammar its output must match, if any.
    constraint: Option<Constraint>,
}

/// The grammar that applies to a choice's next token: none while it is
/// thinking (a grammar shapes the answer, not the thinking).
fn active_constraint(
    thinking: Option<Thinking>,
    constraint: &mut Option<Constraint>,
) -> Option<&mut Constraint> {
    match thinking {
        Some(Thinking::Inside(_)) => None,
        _ => constraint.as_mut(),
    }
}

struct RequestState {
    request: Request,
    sink: Box<dyn EventSink>,
    seqs: Vec<SeqId>,
    /// Every id that ends a choice, computed once.
    stop_ids: Vec<u32>,
    /// What a choice with a grammar may not sample while it thinks: the
    /// stop ids and the single-token answer markers, so that it ends its
    /// thinking only with the close tag and its answer always comes, held
    /// to the grammar (empty without a grammar or without reasoning).
    banned_while_thinking: Vec<u32>,
    /// Choices still to fork from choice 0 once its prompt is computed.
    unforked: bool,
}

/// The engine's state and its step.
pub struct EngineCore {
    model: Arc<dyn CausalLm>,
    cache: PagedKvCache,
    blocks: BlockManager,
    scheduler: Scheduler,
    seqs: HashMap<SeqId, SeqState>,
    requests: HashMap<RequestId, RequestState>,
    next_seq: u64,
    limits: EngineLimits,
    stats: EngineStats,
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
        let cache = PagedKvCache::new(model.kv_layout(), config.block_size, config.num_blocks)?;
        let capacity = config.block_size * config.num_blocks;
        let limits = EngineLimits {
            vocab_size: model.config().vocab_size,
            model_context: model.config().max_position_embeddings,
            pool_tokens: capacity,
        };
        Ok(Self {
            model,
            cache,
            blocks: BlockManager::new(config.num_blocks, config.block_size, config.prefix_caching),
            scheduler: Scheduler::new(config.scheduler, capacity),
            seqs: HashMap::new(),
            requests: HashMap::new(),
            next_seq: 0,
            limits,
            stats: EngineStats {
                blocks_total: config.num_blocks,
                ..EngineStats::default()
            },
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
    ) -> Result<Self, EngineInitError> {
        let layout = model.kv_layout();
        let size = budget.pool_size(layout, block_size)?;
        tracing::info!(
            blocks = size.num_blocks,
            block_size,
            tokens = size.tokens(),
            mib = size.bytes / (1024 * 1024),
            bytes_per_token = layout.bytes_per_token(),
            multi_head_bytes_per_token = layout.multi_head_bytes_per_token(),
            prefix_caching,
            "KV pool allocated"
        );
        let core = Self::new(
            model,
            EngineConfig {
                block_size,
                num_blocks: size.num_blocks,
                prefix_caching,
                scheduler,
            },
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

    /// Queues `request`; its events go to `sink`.
    pub fn add_request(
        &mut self,
        id: RequestId,
        request: Request,
        sink: Box<dyn EventSink>,
    ) -> Result<(), SubmitError> {
        self.limits.check(&request)?;
        let needed = request.prompt.len() + request.stop.max_tokens;
        let seq = self.new_seq();
        self.scheduler
            .add(seq, request.prompt.clone(), needed)
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
        let sampler = Sampler::new(request.sampling.clone());
        self.seqs.insert(
            seq,
            SeqState {
                request: id,
                choice: 0,
                sampler,
                prompt_len: request.prompt.len(),
                thinking: request.reasoning.as_ref().map(Thinking::start),
                constraint: request.grammar.as_ref().map(Constraint::new),
            },
        );
        let unforked = request.n > 1;
        let stop_ids = request.stop.stop_ids();
        let banned_while_thinking = match (&request.grammar, &request.reasoning) {
            (Some(_), Some(limit)) => stop_ids
                .iter()
                .copied()
                .chain(limit.single_token_markers())
                .collect(),
            _ => Vec::new(),
        };
        self.requests.insert(
            id,
            RequestState {
                stop_ids,
                banned_while_thinking,
                request,
                sink,
                seqs: vec![seq],
                unforked,
            },
        );
        Ok(())
    }

    /// Drops `id` and frees its blocks.
    pub fn abort(&mut self, id: RequestId) {
        if let Some(state) = self.requests.remove(&id) {
            for seq in state.seqs {
                self.scheduler.remove(seq, &mut self.blocks);
                self.seqs.remove(&seq);
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
                    self.seqs
                        .get(seq)
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
        self.scheduler.remove(seq, &mut self.blocks);
        let Some(state) = self.seqs.remove(&seq) else {
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
        let plan = self.scheduler.schedule(&mut self.blocks);
        self.stats.preemptions += plan.preempted.len() as u64;
        if plan.chunks.is_empty() {
            self.refresh_stats();
            return 0;
        }
        let tables: Vec<Vec<pagoda_models::BlockId>> = plan
            .chunks
            .iter()
            .map(|c| self.blocks.table(c.seq).to_vec())
            .collect();
        let batch: Vec<SeqChunk<'_>> = plan
            .chunks
            .iter()
            .zip(&tables)
            .map(|(c, table)| SeqChunk {
                tokens: &self.scheduler.tokens(c.seq)[c.start..c.start + c.len],
                start_pos: c.start,
                block_table: table,
                logits: if c.wants_logits {
                    LogitsWanted::Last
                } else {
                    LogitsWanted::None
                },
            })
            .collect();
        // The grammar masks of the sequences about to sample are computed
        // on another thread while the forward pass runs.
        // (Nothing is allocated when no sequence has a grammar.)
        let samples = |seq: &SeqId| plan.chunks.iter().any(|c| c.wants_logits && c.seq == *seq);
        let constrained: Vec<&mut Constraint> = self
            .seqs
            .iter_mut()
            .filter(|(seq, s)| s.constraint.is_some() && samples(seq))
            .filter_map(|(_, s)| active_constraint(s.thinking, &mut s.constraint))
            .collect();
        let masks = constrained.len() as u64;
        let forward_started = std::time::Instant::now();
        let (result, forward_micros, mask_micros, wait_micros) = std::thread::scope(|scope| {
            let masks = (!constrained.is_empty()).then(|| {
                scope.spawn(move || constrained.into_iter().map(|c| c.prepare()).sum::<u64>())
            });
            let result = self.model.forward(&batch, &mut self.cache);
            let forward_micros = forward_started.elapsed().as_micros() as u64;
            // A mask that failed (the thread panicked) is computed again,
            // and its error reported, when the token is sampled.
            let mask_micros = masks.map(|h| h.join().unwrap_or(0)).unwrap_or(0);
            let wait_micros =
                (forward_started.elapsed().as_micros() as u64).saturating_sub(forward_micros);
            (result, forward_micros, mask_micros, wait_micros)
        });
        self.stats.forward_micros += forward_micros;
        self.stats.masks += masks;
        self.stats.mask_micros += mask_micros;
        self.stats.mask_wait_micros += wait_micros;
        drop(batch);
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                let failed: Vec<RequestId> = plan
                    .chunks
                    .iter()
                    .filter_map(|c| self.seqs.get(&c.seq).map(|s| s.request))
                    .collect();
                for id in failed {
                    if let Some(r) = self.requests.get(&id) {
                        r.sink
                            .send(EngineEvent::Failed(EngineFailure::Forward(e.to_string())));
                    }
                    self.abort(id);
                }
                self.refresh_stats();
                return 0;
            }
        };
        let computed: usize = plan.chunks.iter().map(|c| c.len).sum();
        self.stats.computed_tokens += computed as u64;
        let vocab = logits.vocab_size;
        let mut data = logits.data;
        let mut rows = data.chunks_exact_mut(vocab);
        for chunk in &plan.chunks {
            self.scheduler.complete(chunk, &mut self.blocks);
            if chunk.wants_logits {
                if let Some(row) = rows.next() {
                    self.on_logits(chunk.seq, row);
                }
            }
        }
        self.stats.steps += 1;
        self.refresh_stats();
        computed
    }

    fn refresh_stats(&mut self) {
        let pool = self.blocks.pool();
        let cache = pool.stats();
        self.stats.waiting = self.scheduler.num_waiting();
        self.stats.running = self.scheduler.num_running();
        self.stats.blocks_used = pool.num_used();
        self.stats.prefix_hits = cache.hits;
        self.stats.prefix_misses = cache.misses;
    }

    /// Samples the next token of `seq` from its logits and sends it.
    fn on_logits(&mut self, seq: SeqId, logits: &mut [f32]) {
        let Some(request_id) = self.seqs.get(&seq).map(|s| s.request) else {
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
        let Some(state) = self.seqs.get_mut(&seq) else {
            return;
        };
        let Some(request) = self.requests.get(&state.request) else {
            return;
        };
        let limit = request.request.reasoning.as_ref();
        if let (Some(limit), Some(thinking)) = (limit, state.thinking) {
            if thinking.must_close(limit) {
                // The thinking budget is spent: close the block instead of
                // sampling; the next step computes the appended tokens.
                state.thinking = Some(Thinking::Done);
                let close = limit.close_with.clone();
                self.append_forced(seq, &close);
                return;
            }
        }
        let tokens = self.scheduler.tokens(seq);
        let (prompt, output) = tokens.split_at(state.prompt_len.min(tokens.len()));
        let stop_ids = &request.stop_ids;
        let thinking = matches!(state.thinking, Some(Thinking::Inside(_)));
        let suppressed: &[u32] = if thinking && state.constraint.is_some() {
            &request.banned_while_thinking
        } else if output.len() < request.request.stop.min_tokens {
            stop_ids
        } else {
            &[]
        };
        let mut constraint = active_constraint(state.thinking, &mut state.constraint);
        if let Some(c) = constraint.as_deref_mut() {
            if let Err(e) = c.apply(logits) {
                let id = state.request;
                self.fail(id, EngineFailure::Grammar(e.to_string()));
                return;
            }
        }
        let mut sampled = state.sampler.sample(
            logits,
            History {
                prompt,
                output,
                suppressed,
            },
        );
        let mut stop = stop_ids.contains(&sampled.token);
        if let Some(c) = constraint {
            match c.settle(sampled.token, stop_ids) {
                Ok((token, ends)) => (sampled.token, stop) = (token, ends),
                Err(e) => {
                    let id = state.request;
                    self.fail(id, EngineFailure::Grammar(e.to_string()));
                    return;
                }
            }
        }
        if let (Some(limit), Some(thinking)) = (limit, state.thinking) {
            state.thinking = Some(thinking.after(limit, output, sampled.token));
        }
        let generated = output.len() + 1;
        self.emit(seq, sampled.token, sampled.logprobs, generated, stop);
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
        logprobs: Option<crate::sampler::TokenLogprobs>,
        generated: usize,
        stop: bool,
    ) -> bool {
        let Some(state) = self.seqs.get(&seq) else {
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
            let Some(state) = self.seqs.get(&seq) else {
                return;
            };
            let wants_logprobs = self
                .requests
                .get(&state.request)
                .is_some_and(|r| r.request.sampling.logprobs.is_some());
            let logprobs = wants_logprobs.then(|| crate::sampler::TokenLogprobs {
                logprob: 0.0,
                top: Vec::new(),
            });
            let generated = self.scheduler.tokens(seq).len() - state.prompt_len + 1;
            if !self.emit(seq, token, logprobs, generated, false) {
                return;
            }
        }
    }

    /// Creates choices 1..n of a request from choice 0 (`parent`), whose
    /// prompt has just been computed; each samples its first token from `logits`.
    fn fork_choices(&mut self, request_id: RequestId, parent: SeqId, logits: &[f32]) {
        let Some(r) = self.requests.get_mut(&request_id) else {
            return;
        };
        r.unforked = false;
        let (n, prompt, sampling) = (
            r.request.n,
            r.request.prompt.clone(),
            r.request.sampling.clone(),
        );
        let thinking = r.request.reasoning.as_ref().map(Thinking::start);
        let grammar = r.request.grammar.clone();
        for choice in 1..n {
            // A choice's first token may have found the listener gone and
            // aborted the whole request: then no more choices are made.
            if !self.requests.contains_key(&request_id) {
                break;
            }
            let child = self.new_seq();
            let mut params = sampling.clone();
            params.seed = params.seed.map(|s| s.wrapping_add(choice as u64));
            let sampler = Sampler::new(params);
            self.seqs.insert(
                child,
                SeqState {
                    request: request_id,
                    choice,
                    sampler,
                    prompt_len: prompt.len(),
                    thinking,
                    constraint: grammar.as_ref().map(Constraint::new),
                },
            );
            if let Some(r) = self.requests.get_mut(&request_id) {
                r.seqs.push(child);
            }
            match self.blocks.fork(parent, child, prompt.len()) {
                Fork::Shared { copy } => {
                    if let Some((src, dst)) = copy {
                        self.cache.copy_block(src, dst);
                    }
                    self.scheduler
                        .fork(parent, child, prompt.clone(), prompt.len());
                    self.sample_and_emit(child, &mut logits.to_vec());
                }
                // No block for the copy: the choice waits and recomputes its
                // prompt (from the prefix cache where it can).
                Fork::NoFreeBlock => self.scheduler.add_front(child, prompt.clone()),
            }
        }
        if let Some(r) = self.requests.get(&request_id) {
            if r.seqs.is_empty() {
                self.requests.remove(&request_id);
            }
        }
    }
}
