//! `n > 1`: a request computes its prompt once. When choice 0's prompt is
//! done, choices 1..n fork from it, sharing its full KV blocks and copying
//! the partially filled last one, and each samples its first token from the
//! same logits with its own seed (`seed + i`). A choice that finds no free
//! block for the copy waits and recomputes its prompt, mostly from the
//! prefix cache.

use crate::block_manager::Fork;
use crate::ids::{RequestId, SeqId};

use super::state::ChoiceState;
use super::EngineCore;

impl EngineCore {
    /// Creates choices 1..n of request `request_id` from choice 0
    /// (`parent`), whose prompt has just been computed; each samples its
    /// first token from `logits`.
    pub(super) fn fork_choices(&mut self, request_id: RequestId, parent: SeqId, logits: &[f32]) {
        let Some(r) = self.requests.get_mut(&request_id) else {
            return;
        };
        r.unforked = false;
        let (n, prompt_len) = (r.request.n, r.request.prompt.len());
        for choice in 1..n {
            // A choice's first token may have found the listener gone and
            // aborted the whole request: then no more choices are made.
            if !self.requests.contains_key(&request_id) {
                break;
            }
            let child = self.new_seq();
            let Some(r) = self.requests.get_mut(&request_id) else {
                break;
            };
            let state = ChoiceState::new(request_id, choice, &r.request);
            r.seqs.push(child);
            let prompt = r.request.prompt.clone();
            match self.blocks.fork(parent, child, prompt_len) {
                Fork::Shared { copy, window_copy } => {
                    if let Some((src, dst)) = copy {
                        self.cache.copy_block(src, dst);
                    }
                    if let Some((src, dst)) = window_copy {
                        self.cache.copy_window_block(src, dst);
                    }
                    self.scheduler
                        .fork(parent, child, prompt, prompt_len, state);
                    self.sample_and_emit(child, &mut logits.to_vec());
                }
                Fork::NoFreeBlock => {
                    let schedule = self.scheduler.schedule_of(parent);
                    self.scheduler.add_front(child, prompt, state, schedule)
                }
            }
        }
        if self
            .requests
            .get(&request_id)
            .is_some_and(|r| r.seqs.is_empty())
        {
            self.requests.remove(&request_id);
        }
    }
}
