//! Continuous batching: which sequences run in the next step and how many
//! of their tokens, under a per-step token budget and a cap on running
//! sequences (after vLLM v1's scheduler).
//!
//! There are no prefill and decode phases: each sequence's computed tokens
//! catch up with its tokens. Decoding sequences go first, then the prompt
//! chunks of running sequences, then admissions.
//!
//! Who runs is decided by one order over every sequence, running or
//! waiting ([`Schedule`]): by `priority` (lower first), then by the
//! sequence's place among its tenant's live sequences (a tenant's first
//! sequence before anyone's second: a fair share between API keys or
//! clients), then by arrival. Waiting sequences are admitted in that order;
//! the first one that does not fit stops admission, so none is overtaken
//! by a worse one. When every seat is taken and a waiting sequence ranks
//! before a running one, the worst running one is preempted to seat it;
//! when the pool runs out of blocks, the worst running sequence is
//! preempted (its blocks freed, to be recomputed later, mostly from the
//! prefix cache) and nothing new is admitted that step.

use std::collections::{HashMap, VecDeque};

use crate::block_manager::BlockManager;
use crate::ids::SeqId;

/// Limits of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Most sequences running at once.
    pub max_num_seqs: usize,
    /// Most tokens computed in one step (prefill chunks and decode tokens together).
    pub max_tokens_per_step: usize,
    /// Most sequences waiting for admission; beyond it, submission fails at once.
    pub max_waiting: usize,
}

/// Why a sequence was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// The waiting queue is full.
    #[error("the waiting queue is full ({0} sequences)")]
    QueueFull(usize),
    /// The sequence could never fit the KV pool, even alone.
    #[error("{needed} positions needed but the KV pool holds {capacity}")]
    TooLong {
        /// Positions the sequence may reach.
        needed: usize,
        /// Positions in the whole pool.
        capacity: usize,
    },
}

/// One sequence's share of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledChunk {
    /// The sequence.
    pub seq: SeqId,
    /// First position to compute.
    pub start: usize,
    /// Number of tokens to compute.
    pub len: usize,
    /// Whether the chunk reaches the sequence's last token (a new token is sampled).
    pub wants_logits: bool,
}

/// The decision for one step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepPlan {
    /// Chunks to compute, in batch order.
    pub chunks: Vec<ScheduledChunk>,
    /// Sequences preempted in this step (their KV is gone; they wait again).
    pub preempted: Vec<SeqId>,
}

/// Where a sequence stands in the order of who runs: its priority and
/// whose it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Schedule {
    /// Lower runs first (vLLM's `priority` extension); 0 by default.
    pub priority: i32,
    /// Whose the request is (an API key or a client address, hashed):
    /// tenants share the seats fairly.
    pub tenant: u64,
}

/// One sequence's record: its tokens, its progress, and whatever else its
/// owner keeps for it (`state`: the engine's per-choice state), so that a
/// sequence is one record in one map.
#[derive(Debug, Clone)]
struct Sequence<T> {
    tokens: Vec<u32>,
    num_computed: usize,
    state: T,
    schedule: Schedule,
    /// When it arrived (a counter; kept across preemption).
    arrival: u64,
}

/// A sequence's place in the order of who runs (smaller first).
type Rank = (i32, usize, u64);

/// The continuous-batching scheduler, holding every sequence's record
/// with a `T` of its owner's beside the tokens.
#[derive(Debug)]
pub struct Scheduler<T = ()> {
    config: SchedulerConfig,
    capacity: usize,
    seqs: HashMap<SeqId, Sequence<T>>,
    waiting: VecDeque<SeqId>,
    running: Vec<SeqId>,
    next_arrival: u64,
}

impl Scheduler {
    /// A scheduler for a pool of `capacity` positions, keeping no state
    /// beside the tokens.
    pub fn new(config: SchedulerConfig, capacity: usize) -> Self {
        Self::with_states(config, capacity)
    }
}

impl<T: Default> Scheduler<T> {
    /// Queues a new sequence with its prompt and a default state (see
    /// [`Scheduler::add_with`]).
    pub fn add(&mut self, seq: SeqId, prompt: Vec<u32>, max_len: usize) -> Result<(), AdmitError> {
        self.add_with(seq, prompt, max_len, T::default())
    }
}

impl<T> Scheduler<T> {
    /// A scheduler for a pool of `capacity` positions whose records each
    /// keep a `T` of their owner's.
    pub fn with_states(config: SchedulerConfig, capacity: usize) -> Self {
        Self {
            config,
            capacity,
            seqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            next_arrival: 0,
        }
    }

    /// The limits.
    pub fn config(&self) -> SchedulerConfig {
        self.config
    }

    /// Queues a new sequence with its prompt and its owner's `state`;
    /// `max_len` is the most positions it may reach (prompt plus generated
    /// tokens).
    pub fn add_with(
        &mut self,
        seq: SeqId,
        prompt: Vec<u32>,
        max_len: usize,
        state: T,
    ) -> Result<(), AdmitError> {
        self.add_scheduled(seq, prompt, max_len, state, Schedule::default())
    }

    /// [`Self::add_with`] at `schedule`'s place in the order of who runs.
    pub fn add_scheduled(
        &mut self,
        seq: SeqId,
        prompt: Vec<u32>,
        max_len: usize,
        state: T,
        schedule: Schedule,
    ) -> Result<(), AdmitError> {
        if max_len > self.capacity {
            return Err(AdmitError::TooLong {
                needed: max_len,
                capacity: self.capacity,
            });
        }
        if self.waiting.len() >= self.config.max_waiting {
            return Err(AdmitError::QueueFull(self.config.max_waiting));
        }
        let arrival = self.arrival();
        self.seqs.insert(
            seq,
            Sequence {
                tokens: prompt,
                num_computed: 0,
                state,
                schedule,
                arrival,
            },
        );
        self.waiting.push_back(seq);
        Ok(())
    }

    fn arrival(&mut self) -> u64 {
        self.next_arrival += 1;
        self.next_arrival
    }

    /// Where `seq` stands in the order of who runs.
    pub fn schedule_of(&self, seq: SeqId) -> Schedule {
        self.seqs.get(&seq).map(|s| s.schedule).unwrap_or_default()
    }

    /// Every live sequence's rank: (priority, its place among its tenant's
    /// live sequences by arrival, arrival).
    fn ranks(&self) -> HashMap<SeqId, Rank> {
        let mut by_tenant: HashMap<u64, Vec<(u64, SeqId)>> = HashMap::new();
        for (&id, s) in &self.seqs {
            by_tenant
                .entry(s.schedule.tenant)
                .or_default()
                .push((s.arrival, id));
        }
        let mut ranks = HashMap::with_capacity(self.seqs.len());
        for list in by_tenant.values_mut() {
            list.sort_unstable();
            for (place, &(arrival, id)) in list.iter().enumerate() {
                let priority = self.seqs.get(&id).map_or(0, |s| s.schedule.priority);
                ranks.insert(id, (priority, place, arrival));
            }
        }
        ranks
    }

    /// Puts the waiting sequences in the order they are admitted and the
    /// running ones in the order they are served (so the worst running
    /// sequence is the last: the one preempted first).
    fn sort_by_rank(&mut self, ranks: &HashMap<SeqId, Rank>) {
        let rank = |id: &SeqId| {
            ranks
                .get(id)
                .copied()
                .unwrap_or((i32::MAX, usize::MAX, u64::MAX))
        };
        self.waiting.make_contiguous().sort_by_key(rank);
        self.running.sort_by_key(rank);
    }

    /// The owner's state of `seq`.
    pub fn state(&self, seq: SeqId) -> Option<&T> {
        self.seqs.get(&seq).map(|s| &s.state)
    }

    /// The tokens of `seq` and its owner's state, to change.
    pub fn state_mut(&mut self, seq: SeqId) -> Option<(&[u32], &mut T)> {
        self.seqs
            .get_mut(&seq)
            .map(|s| (s.tokens.as_slice(), &mut s.state))
    }

    /// The tokens and the owner's state of each chunk's sequence, in the
    /// chunks' order (each sequence at most once in a plan); one pass over
    /// the records, so that a step can read the tokens while it changes
    /// the states.
    pub fn chunk_views(&mut self, chunks: &[ScheduledChunk]) -> Vec<(&[u32], &mut T)> {
        let mut views: Vec<Option<(&[u32], &mut T)>> = chunks.iter().map(|_| None).collect();
        for (seq, s) in self.seqs.iter_mut() {
            if let Some(i) = chunks.iter().position(|c| c.seq == *seq) {
                views[i] = Some((s.tokens.as_slice(), &mut s.state));
            }
        }
        // Every chunk was scheduled from a record, so none is missing.
        debug_assert!(views.iter().all(Option::is_some));
        views.into_iter().flatten().collect()
    }

    /// The tokens of `seq` (prompt, then generated).
    pub fn tokens(&self, seq: SeqId) -> &[u32] {
        self.seqs
            .get(&seq)
            .map(|s| s.tokens.as_slice())
            .unwrap_or(&[])
    }

    /// Sequences waiting for admission.
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Sequences running.
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Whether there is nothing to do.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Whether `seq` is known (waiting or running).
    pub fn contains(&self, seq: SeqId) -> bool {
        self.seqs.contains_key(&seq)
    }

    fn preempt(&mut self, seq: SeqId, blocks: &mut BlockManager) {
        blocks.free(seq);
        if let Some(s) = self.seqs.get_mut(&seq) {
            s.num_computed = 0;
        }
        // It keeps its arrival: in its place of the order again.
        self.waiting.push_front(seq);
    }

    /// Decides the next step, taking KV blocks for every scheduled chunk,
    /// with the whole step budget open to prefill.
    pub fn schedule(&mut self, blocks: &mut BlockManager) -> StepPlan {
        self.schedule_with(blocks, self.config.max_tokens_per_step)
    }

    /// Running sequences that decode (one token to compute) in the next
    /// step, as far as the step budget goes.
    pub fn num_decoding(&self) -> usize {
        self.running
            .iter()
            .filter(|s| {
                self.seqs
                    .get(s)
                    .is_some_and(|q| q.tokens.len() - q.num_computed == 1)
            })
            .count()
            .min(self.config.max_tokens_per_step)
    }

    /// Decides the next step with at most `prefill_budget` prompt tokens
    /// (the tokens of sequences with more than one token to compute, and
    /// the admissions): every decoding sequence first — so that a prefill
    /// never delays a running stream beyond its own share of the step —
    /// then the running sequences still prefilling, then the waiting ones,
    /// each in the order of who runs. The whole step stays within
    /// `max_tokens_per_step`.
    pub fn schedule_with(&mut self, blocks: &mut BlockManager, prefill_budget: usize) -> StepPlan {
        let mut plan = StepPlan::default();
        let mut budget = self.config.max_tokens_per_step;
        let mut prefill = prefill_budget.max(1);
        let ranks = self.ranks();
        // Prompt chunks go best-ranked first (a fair share's newcomer
        // before a flood's older prefills); victims are taken from the end.
        self.sort_by_rank(&ranks);
        // Every seat taken and a better sequence waiting: the worst running
        // one gives its seat up.
        while self.running.len() >= self.config.max_num_seqs {
            let (Some(best), Some(worst)) = (
                self.waiting.front().and_then(|s| ranks.get(s)),
                self.running.last().and_then(|s| ranks.get(s)),
            ) else {
                break;
            };
            if best >= worst {
                break;
            }
            let Some(victim) = self.running.pop() else {
                break;
            };
            self.preempt(victim, blocks);
            plan.preempted.push(victim);
        }
        if !plan.preempted.is_empty() {
            self.sort_by_rank(&ranks);
        }
        let seat_preemptions = plan.preempted.len();
        // With several tenants, a tenant's first sequence prefills outside
        // the prompt budget (within the step budget): a fair share's
        // newcomer starts at once instead of waiting on the inter-token
        // target; it is one sequence per tenant, so the others' streams
        // barely notice.
        let several_tenants = {
            let mut tenants = self.seqs.values().map(|s| s.schedule.tenant);
            let first = tenants.next();
            tenants.any(|t| Some(t) != first)
        };
        let newcomer = |id: &SeqId| several_tenants && ranks.get(id).is_some_and(|r| r.1 == 0);

        for decoding in [true, false] {
            let mut i = 0;
            while i < self.running.len() && budget > 0 {
                let seq = self.running[i];
                let (start, remaining) = match self.seqs.get(&seq) {
                    Some(s) => (s.num_computed, s.tokens.len() - s.num_computed),
                    None => {
                        self.running.remove(i);
                        continue;
                    }
                };
                if (remaining == 1) != decoding {
                    i += 1;
                    continue;
                }
                let exempt = !decoding && newcomer(&seq);
                if !decoding && prefill == 0 && !exempt {
                    break;
                }
                let len = if decoding {
                    1
                } else if exempt {
                    remaining.min(budget)
                } else {
                    remaining.min(budget).min(prefill)
                };
                let mut scheduled = false;
                loop {
                    if blocks.allocate(seq, start, start + len) {
                        scheduled = true;
                        break;
                    }
                    // The worst is last, never before `i`.
                    let Some(victim) = self.running.pop() else {
                        break;
                    };
                    self.preempt(victim, blocks);
                    plan.preempted.push(victim);
                    if victim == seq {
                        break;
                    }
                }
                if !scheduled {
                    break;
                }
                plan.chunks.push(ScheduledChunk {
                    seq,
                    start,
                    len,
                    wants_logits: len == remaining,
                });
                budget -= len;
                if !decoding {
                    prefill = prefill.saturating_sub(len);
                }
                i += 1;
            }
            if plan.preempted.len() > seat_preemptions {
                // The pool is short: nothing more this step (a preempted
                // sequence may have been planned already; drop its chunk).
                plan.chunks.retain(|c| !plan.preempted.contains(&c.seq));
                return plan;
            }
        }

        while budget > 0 && self.running.len() < self.config.max_num_seqs {
            let Some(&seq) = self.waiting.front() else {
                break;
            };
            let exempt = newcomer(&seq);
            if prefill == 0 && !exempt {
                break;
            }
            let Some(s) = self.seqs.get_mut(&seq) else {
                self.waiting.pop_front();
                continue;
            };
            if s.num_computed == 0 {
                s.num_computed = blocks.attach_cached_prefix(seq, &s.tokens);
            }
            let (start, remaining) = (s.num_computed, s.tokens.len() - s.num_computed);
            let len = if exempt {
                remaining.min(budget)
            } else {
                remaining.min(budget).min(prefill)
            };
            if !blocks.allocate(seq, start, start + len) {
                // Keep no blocks while waiting: a cached prefix must not pin the pool.
                blocks.free(seq);
                s.num_computed = 0;
                break;
            }
            self.waiting.pop_front();
            self.running.push(seq);
            plan.chunks.push(ScheduledChunk {
                seq,
                start,
                len,
                wants_logits: len == remaining,
            });
            budget -= len;
            prefill = prefill.saturating_sub(len);
        }
        plan
    }

    /// Records that `chunk` was computed and registers its full blocks in the prefix cache.
    pub fn complete(&mut self, chunk: &ScheduledChunk, blocks: &mut BlockManager) {
        if let Some(s) = self.seqs.get_mut(&chunk.seq) {
            s.num_computed = s.num_computed.max(chunk.start + chunk.len);
            blocks.commit(chunk.seq, &s.tokens, s.num_computed);
        }
    }

    /// Appends a sampled token to `seq`.
    pub fn append(&mut self, seq: SeqId, token: u32) {
        if let Some(s) = self.seqs.get_mut(&seq) {
            s.tokens.push(token);
        }
    }

    /// Adds `child`, a fork of the running `parent` whose first `computed`
    /// positions are already in `child`'s blocks, right after its parent.
    /// A request's choices run together, so this may exceed `max_num_seqs`
    /// for as long as they run.
    pub fn fork(
        &mut self,
        parent: SeqId,
        child: SeqId,
        tokens: Vec<u32>,
        computed: usize,
        state: T,
    ) {
        let schedule = self.schedule_of(parent);
        let arrival = self.arrival();
        self.seqs.insert(
            child,
            Sequence {
                tokens,
                num_computed: computed,
                state,
                schedule,
                arrival,
            },
        );
        let at = self
            .running
            .iter()
            .position(|&s| s == parent)
            .map_or(self.running.len(), |i| i + 1);
        self.running.insert(at, child);
    }

    /// Queues `seq` at the front of the waiting queue (used for a fork that
    /// found no free block: it recomputes its prompt, mostly from the prefix cache).
    pub fn add_front(&mut self, seq: SeqId, tokens: Vec<u32>, state: T, schedule: Schedule) {
        let arrival = self.arrival();
        self.seqs.insert(
            seq,
            Sequence {
                tokens,
                num_computed: 0,
                state,
                schedule,
                arrival,
            },
        );
        self.waiting.push_front(seq);
    }

    /// Whether one more sequence can wait.
    pub fn can_queue(&self) -> bool {
        self.waiting.len() < self.config.max_waiting
    }

    /// Removes `seq` (finished or aborted), frees its blocks and returns
    /// its owner's state.
    pub fn remove(&mut self, seq: SeqId, blocks: &mut BlockManager) -> Option<T> {
        blocks.free(seq);
        self.running.retain(|&s| s != seq);
        self.waiting.retain(|&s| s != seq);
        self.seqs.remove(&seq).map(|s| s.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_num_seqs: usize, budget: usize) -> SchedulerConfig {
        SchedulerConfig {
            max_num_seqs,
            max_tokens_per_step: budget,
            max_waiting: 8,
        }
    }

    #[test]
    fn long_prompts_are_chunked_and_decodes_share_the_step() {
        let mut bm = BlockManager::new(64, 4, true);
        let mut s = Scheduler::new(config(4, 10), 256);
        s.add(SeqId(1), (0..25).collect(), 40).expect("queued");
        s.add(SeqId(2), (100..103).collect(), 40).expect("queued");
        let plan = s.schedule(&mut bm);
        assert_eq!(
            plan.chunks,
            vec![ScheduledChunk {
                seq: SeqId(1),
                start: 0,
                len: 10,
                wants_logits: false
            }]
        );
        s.complete(&plan.chunks[0], &mut bm);
        let plan = s.schedule(&mut bm);
        assert_eq!(
            plan.chunks[0],
            ScheduledChunk {
                seq: SeqId(1),
                start: 10,
                len: 10,
                wants_logits: false
            }
        );
        s.complete(&plan.chunks[0], &mut bm);
        let plan = s.schedule(&mut bm);
        assert_eq!(
            plan.chunks,
            vec![
                ScheduledChunk {
                    seq: SeqId(1),
                    start: 20,
                    len: 5,
                    wants_logits: true
                },
                ScheduledChunk {
                    seq: SeqId(2),
                    start: 0,
                    len: 3,
                    wants_logits: true
                },
            ]
        );
    }

    /// Decoding sequences are always scheduled; prompt chunks (a running
    /// prefill, then admissions) share the prompt budget, which never stops
    /// a prefill (at least one token), and the whole step stays within the
    /// step budget.
    #[test]
    fn decodes_are_scheduled_and_prompt_chunks_share_the_prompt_budget() {
        let mut bm = BlockManager::new(64, 4, true);
        let mut s = Scheduler::new(config(4, 32), 256);
        s.add(SeqId(2), (100..103).collect(), 40).expect("queued");
        let plan = s.schedule_with(&mut bm, 64);
        s.complete(&plan.chunks[0], &mut bm);
        s.append(SeqId(2), 7);
        s.add(SeqId(1), (0..40).collect(), 60).expect("queued");
        s.add(SeqId(3), (200..210).collect(), 60).expect("queued");
        assert_eq!(s.num_decoding(), 1);
        let lens = |plan: &StepPlan| -> Vec<(SeqId, usize)> {
            plan.chunks.iter().map(|c| (c.seq, c.len)).collect()
        };
        // Seq 2 decodes; seq 1's prompt gets the budget of 5; seq 3 waits.
        let plan = s.schedule_with(&mut bm, 5);
        assert_eq!(lens(&plan), vec![(SeqId(2), 1), (SeqId(1), 5)]);
        for c in &plan.chunks {
            s.complete(c, &mut bm);
        }
        s.append(SeqId(2), 8);
        // A budget of 0 still moves the prompt on by one token.
        let plan = s.schedule_with(&mut bm, 0);
        assert_eq!(lens(&plan), vec![(SeqId(2), 1), (SeqId(1), 1)]);
        for c in &plan.chunks {
            s.complete(c, &mut bm);
        }
        s.append(SeqId(2), 9);
        // A large budget: seq 1's rest (34), then seq 3 within the step cap
        // of 32 (1 decode + 31 prompt tokens).
        let plan = s.schedule_with(&mut bm, 100);
        assert_eq!(lens(&plan), vec![(SeqId(2), 1), (SeqId(1), 31)]);
        assert!(plan.chunks.iter().map(|c| c.len).sum::<usize>() <= 32);
    }

    fn running_set(s: &Scheduler) -> Vec<SeqId> {
        let mut r = s.running.clone();
        r.sort();
        r
    }

    /// One tenant floods the seats; another's single request takes a seat
    /// at the next step, from the flooder's last sequence (preempted, to
    /// wait in its place), not after the flood.
    #[test]
    fn a_tenants_single_request_is_not_queued_behind_a_flood() {
        let mut bm = BlockManager::new(256, 4, true);
        let mut s = Scheduler::new(config(4, 64), 256);
        let flood = Schedule {
            priority: 0,
            tenant: 1,
        };
        for i in 0..8 {
            s.add_scheduled(SeqId(i), vec![1, 2, 3], 20, (), flood)
                .expect("queued");
        }
        let plan = s.schedule(&mut bm);
        assert_eq!(plan.chunks.len(), 4);
        for c in &plan.chunks {
            s.complete(c, &mut bm);
            s.append(c.seq, 7);
        }
        let single = Schedule {
            priority: 0,
            tenant: 2,
        };
        s.add_scheduled(SeqId(100), (40..50).collect(), 20, (), single)
            .expect("queued");
        // A prompt budget of 1 token: the newcomer (its tenant's first
        // sequence) still prefills its whole prompt in this step.
        let plan = s.schedule_with(&mut bm, 1);
        assert_eq!(plan.preempted, vec![SeqId(3)]);
        assert!(plan
            .chunks
            .iter()
            .any(|c| c.seq == SeqId(100) && c.len == 10 && c.wants_logits));
        assert_eq!(
            running_set(&s),
            vec![SeqId(0), SeqId(1), SeqId(2), SeqId(100)]
        );
        // The flood's next sequences wait; the preempted one is first of them.
        assert_eq!(s.waiting.front(), Some(&SeqId(3)));
        // Nothing changes while the ranks hold.
        for c in &plan.chunks {
            s.complete(c, &mut bm);
            s.append(c.seq, 8);
        }
        assert!(s.schedule(&mut bm).preempted.is_empty());
    }

    /// Lower `priority` runs first: it takes the seat of the worst running
    /// sequence; a higher one waits behind everything of lower priority.
    #[test]
    fn priority_orders_admission_and_preemption() {
        let mut bm = BlockManager::new(256, 4, true);
        let mut s = Scheduler::new(config(2, 64), 256);
        let at = |priority| Schedule {
            priority,
            tenant: 0,
        };
        s.add_scheduled(SeqId(1), vec![1, 2], 20, (), at(0))
            .expect("q");
        s.add_scheduled(SeqId(2), vec![1, 2], 20, (), at(0))
            .expect("q");
        s.add_scheduled(SeqId(3), vec![1, 2], 20, (), at(5))
            .expect("q");
        let plan = s.schedule(&mut bm);
        assert_eq!(running_set(&s), vec![SeqId(1), SeqId(2)]);
        for c in &plan.chunks {
            s.complete(c, &mut bm);
            s.append(c.seq, 7);
        }
        s.add_scheduled(SeqId(4), vec![1, 2], 20, (), at(-1))
            .expect("q");
        let plan = s.schedule(&mut bm);
        assert_eq!(plan.preempted, vec![SeqId(2)]);
        assert_eq!(running_set(&s), vec![SeqId(1), SeqId(4)]);
        // Seq 2 (priority 0) is ahead of seq 3 (priority 5) in the queue.
        assert_eq!(
            s.waiting.iter().copied().collect::<Vec<_>>(),
            vec![SeqId(2), SeqId(3)]
        );
    }

    /// Out of blocks, the sequence that gives way is the one that ranks
    /// last (here the flooding tenant's second), not the newest.
    #[test]
    fn out_of_blocks_the_worst_ranked_sequence_gives_way() {
        // 4 blocks of 2: three sequences of 2 tokens, then their growth.
        let mut bm = BlockManager::new(4, 2, false);
        let mut s = Scheduler::new(config(4, 16), 8);
        let of = |tenant| Schedule {
            priority: 0,
            tenant,
        };
        s.add_scheduled(SeqId(1), vec![1, 2], 6, (), of(1))
            .expect("q");
        s.add_scheduled(SeqId(2), vec![1, 2], 6, (), of(1))
            .expect("q");
        s.add_scheduled(SeqId(3), vec![1, 2], 6, (), of(2))
            .expect("q");
        let plan = s.schedule(&mut bm);
        assert_eq!(plan.chunks.len(), 3);
        for c in &plan.chunks {
            s.complete(c, &mut bm);
            s.append(c.seq, 9);
        }
        // Each needs a second block; one is free: seq 2 (tenant 1's second)
        // gives way although seq 3 is newer.
        let plan = s.schedule(&mut bm);
        assert_eq!(plan.preempted, vec![SeqId(2)]);
        assert_eq!(running_set(&s), vec![SeqId(1), SeqId(3)]);
    }

    #[test]
    fn a_full_queue_and_an_impossible_sequence_are_refused() {
        let mut s = Scheduler::new(
            SchedulerConfig {
                max_num_seqs: 1,
                max_tokens_per_step: 8,
                max_waiting: 1,
            },
            16,
        );
        assert_eq!(
            s.add(SeqId(1), vec![1], 17),
            Err(AdmitError::TooLong {
                needed: 17,
                capacity: 16
            })
        );
        s.add(SeqId(1), vec![1], 8).expect("queued");
        assert_eq!(s.add(SeqId(2), vec![1], 8), Err(AdmitError::QueueFull(1)));
    }

    #[test]
    fn the_newest_sequence_is_preempted_when_blocks_run_out() {
        // 3 blocks of 2: two sequences of 2 tokens fit, but not their growth.
        let mut bm = BlockManager::new(3, 2, false);
        let mut s = Scheduler::new(config(4, 16), 6);
        s.add(SeqId(1), vec![1, 2], 6).expect("queued");
        s.add(SeqId(2), vec![3, 4], 6).expect("queued");
        let plan = s.schedule(&mut bm);
        assert_eq!(plan.chunks.len(), 2);
        for c in &plan.chunks {
            s.complete(c, &mut bm);
            s.append(c.seq, 9);
        }
        // Both now need a second block; one is free.
        let plan = s.schedule(&mut bm);
        assert_eq!(
            plan.chunks.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![SeqId(1)]
        );
        // Seq 2, the newest, gave way: its blocks are freed and it waits again.
        assert_eq!(plan.preempted, vec![SeqId(2)]);
        assert_eq!((s.num_running(), s.num_waiting()), (1, 1));
        assert!(bm.table(SeqId(2)).is_empty());
        s.complete(&plan.chunks[0], &mut bm);
        s.remove(SeqId(1), &mut bm);
        // It comes back and recomputes everything it had, generated token included.
        let plan = s.schedule(&mut bm);
        assert_eq!(
            plan.chunks,
            vec![ScheduledChunk {
                seq: SeqId(2),
                start: 0,
                len: 3,
                wants_logits: true
            }]
        );
    }

    #[test]
    fn a_cached_prefix_is_attached_on_admission() {
        let mut bm = BlockManager::new(16, 4, true);
        let mut s = Scheduler::new(config(4, 64), 64);
        let prompt: Vec<u32> = (0..10).collect();
        s.add(SeqId(1), prompt.clone(), 12).expect("queued");
        let plan = s.schedule(&mut bm);
        s.complete(&plan.chunks[0], &mut bm);
        s.remove(SeqId(1), &mut bm);
        s.add(SeqId(2), prompt, 12).expect("queued");
        let plan = s.schedule(&mut bm);
        assert_eq!(
            plan.chunks,
            vec![ScheduledChunk {
                seq: SeqId(2),
                start: 8,
                len: 2,
                wants_logits: true
            }]
        );
        assert_eq!(bm.cache_stats().hits, 2);
    }
}
