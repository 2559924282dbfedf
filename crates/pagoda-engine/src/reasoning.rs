//! The thinking budget of reasoning models (DeepSeek-R1 and its distills,
//! QwQ, Qwen3...): a choice may think for at most so many tokens, then the
//! engine closes the thinking block itself by appending the close tag, and
//! the model goes on to its answer.
//!
//! The engine sees only token ids: the tags are given as id sequences
//! (`<think>` and `</think>` are single added tokens in these vocabularies).
//! Splitting the text into reasoning and answer is the server's business.
//!
//! ```text
//!   prompt … <｜Assistant｜><think>\n      (the prompt opened the block: starts inside)
//!   output   t0 t1 … t(max-1) | \n</think>\n\n | answer …
//!            └── thinking ──┘   └ appended ┘
//! ```

/// How the engine bounds a choice's thinking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasoningLimit {
    /// The output begins inside the thinking block (the prompt ended with
    /// the open tag); otherwise the block starts where `open` is generated.
    pub starts_inside: bool,
    /// The ids of the open tag.
    pub open: Vec<u32>,
    /// The ids of the close tag, which ends the block when generated.
    pub close: Vec<u32>,
    /// Id sequences of markers that begin an answer by themselves (a tool
    /// call's opening): generated inside the block, they end it too.
    pub markers: Vec<Vec<u32>>,
    /// Most tokens of thinking (after the open tag) before the engine closes it.
    pub max_tokens: usize,
    /// What the engine appends to close the block (the ids of, say,
    /// `"\n</think>\n\n"`); not empty.
    pub close_with: Vec<u32>,
}

/// Where one choice stands in its thinking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Thinking {
    /// No block has opened yet.
    NotYet,
    /// Inside the block, with this many tokens of thinking so far.
    Inside(usize),
    /// The block has closed (by the model or by the engine): no more budget.
    Done,
}

impl Thinking {
    /// The state at the start of a choice's output.
    pub(crate) fn start(limit: &ReasoningLimit) -> Self {
        if limit.starts_inside {
            Thinking::Inside(0)
        } else {
            Thinking::NotYet
        }
    }

    /// Whether the budget is spent: the engine must close the block now
    /// instead of sampling.
    pub(crate) fn must_close(self, limit: &ReasoningLimit) -> bool {
        matches!(self, Thinking::Inside(n) if n >= limit.max_tokens)
    }

    /// The state after the model generated `next` following `output`.
    pub(crate) fn after(self, limit: &ReasoningLimit, output: &[u32], next: u32) -> Self {
        match self {
            Thinking::NotYet if ends_with(output, next, &limit.open) => Thinking::Inside(0),
            Thinking::Inside(_)
                if ends_with(output, next, &limit.close)
                    || limit.markers.iter().any(|m| ends_with(output, next, m)) =>
            {
                Thinking::Done
            }
            Thinking::Inside(n) => Thinking::Inside(n + 1),
            other => other,
        }
    }
}

impl ReasoningLimit {
    /// The markers that are single tokens: what a choice whose answer has a
    /// grammar may not sample while thinking (its answer must begin where
    /// the grammar starts, after the close tag).
    pub(crate) fn single_token_markers(&self) -> impl Iterator<Item = u32> + '_ {
        self.markers.iter().filter_map(|m| match m.as_slice() {
            [id] => Some(*id),
            _ => None,
        })
    }
}

/// Whether `output` followed by `next` ends with `tag` (without copying).
fn ends_with(output: &[u32], next: u32, tag: &[u32]) -> bool {
    match tag.split_last() {
        Some((&last, head)) => last == next && output.ends_with(head),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: u32 = 10;
    const CLOSE: u32 = 11;
    const TOOL: u32 = 12;

    fn limit(starts_inside: bool, max_tokens: usize) -> ReasoningLimit {
        ReasoningLimit {
            starts_inside,
            open: vec![OPEN],
            close: vec![CLOSE],
            markers: vec![vec![TOOL]],
            max_tokens,
            close_with: vec![5, CLOSE, 5],
        }
    }

    /// Feeds `tokens` one by one; returns the state after each.
    fn run(limit: &ReasoningLimit, tokens: &[u32]) -> Vec<Thinking> {
        let mut state = Thinking::start(limit);
        (0..tokens.len())
            .map(|i| {
                state = state.after(limit, &tokens[..i], tokens[i]);
                state
            })
            .collect()
    }

    #[test]
    fn a_block_opened_by_the_prompt_counts_from_the_first_token() {
        let l = limit(true, 2);
        assert!(!Thinking::start(&l).must_close(&l));
        let states = run(&l, &[1, 2]);
        assert_eq!(states, [Thinking::Inside(1), Thinking::Inside(2)]);
        assert!(states[1].must_close(&l));
    }

    #[test]
    fn a_zero_budget_closes_before_the_first_token() {
        let l = limit(true, 0);
        assert!(Thinking::start(&l).must_close(&l));
    }

    #[test]
    fn a_block_opened_by_the_model_counts_after_its_tag() {
        let l = limit(false, 3);
        let states = run(&l, &[OPEN, 1, 2, CLOSE, 3]);
        assert_eq!(
            states,
            [
                Thinking::Inside(0),
                Thinking::Inside(1),
                Thinking::Inside(2),
                Thinking::Done,
                Thinking::Done
            ]
        );
        assert!(states.iter().all(|s| !s.must_close(&l)));
    }

    #[test]
    fn a_tool_call_marker_ends_the_block_and_nothing_reopens_it() {
        let l = limit(true, 100);
        let states = run(&l, &[1, TOOL, OPEN, 2]);
        assert_eq!(states[1], Thinking::Done);
        assert_eq!(states[3], Thinking::Done);
    }

    #[test]
    fn multi_token_tags_match_as_sequences() {
        let l = ReasoningLimit {
            starts_inside: false,
            open: vec![7, 8],
            close: vec![8, 7],
            markers: Vec::new(),
            max_tokens: 10,
            close_with: vec![8, 7],
        };
        let states = run(&l, &[8, 7, 8, 1, 8, 7]);
        assert_eq!(
            states[1],
            Thinking::NotYet,
            "the close tag alone opens nothing"
        );
        assert_eq!(states[2], Thinking::Inside(0));
        assert_eq!(states[3], Thinking::Inside(1));
        assert_eq!(states[5], Thinking::Done);
    }
}
