//! Splits a reasoning model's streamed output into its thinking and its
//! answer, as DeepSeek's API returns them (`reasoning_content` beside
//! `content`): the thinking block's tags never reach either part, tags split
//! across tokens are recognised (the text that could still be the start of
//! one is held back), and the whitespace around the block is trimmed.
//!
//! ```text
//!   "<think>\n" "Two plus" " two is four.\n</th" "ink>\n\n" "4"
//!    └ open ┘    └───── reasoning ─────────┘ └ close tag ┘  └ content ┘
//! ```
//!
//! The output may start inside the block (templates that end the prompt
//! with `<think>\n`), may open it itself, or may never think; a block that
//! never closes is all reasoning. A marker that begins an answer by itself
//! (a tool call's opening, such as DeepSeek's `<｜tool▁calls▁begin｜>`) ends
//! an unclosed block and goes to the content, so tool calls are never
//! swallowed by the reasoning. Reference: vLLM's `reasoning/` parsers.

use std::sync::Arc;

use crate::output::partial_match::partial_suffix;

/// The markup of a model's thinking block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasoningTags {
    /// Opens the block, e.g. `<think>`.
    pub open: String,
    /// Closes it, e.g. `</think>`.
    pub close: String,
    /// Markers that begin the answer even inside an unclosed block.
    pub answer_markers: Vec<String>,
    /// Tags that are special tokens of the vocabulary (decoding, which
    /// skips special tokens, drops them): their ids and text, fed to the
    /// parser directly.
    pub special_ids: Vec<(u32, String)>,
}

impl ReasoningTags {
    /// The text of `token` when it is a tag that decoding drops.
    pub fn special_text(&self, token: u32) -> Option<&str> {
        self.special_ids
            .iter()
            .find(|(id, _)| *id == token)
            .map(|(_, text)| text.as_str())
    }
}

/// What one step of the parser releases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    /// New thinking text.
    pub reasoning: String,
    /// New answer text.
    pub content: String,
    /// Whether the close tag was consumed in this step.
    pub closed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace yet: the output may still open a block.
    Start,
    /// Inside the block; `fresh` until its first non-space text.
    Reasoning { fresh: bool },
    /// The answer; `fresh` right after a block, until its first non-space text.
    Content { fresh: bool },
}

/// The splitter of one choice's output.
#[derive(Debug, Clone)]
pub struct ReasoningParser {
    tags: Arc<ReasoningTags>,
    state: State,
    /// Text received but not released yet.
    held: String,
}

impl ReasoningParser {
    /// A parser for `tags`; `starts_inside` when the prompt opened the block.
    pub fn new(tags: Arc<ReasoningTags>, starts_inside: bool) -> Self {
        Self {
            tags,
            state: if starts_inside {
                State::Reasoning { fresh: true }
            } else {
                State::Start
            },
            held: String::new(),
        }
    }

    /// Whether the parser is inside the thinking block.
    pub fn in_reasoning(&self) -> bool {
        matches!(self.state, State::Reasoning { .. })
    }

    /// The tags it splits on.
    pub fn tags(&self) -> &ReasoningTags {
        &self.tags
    }

    /// Adds `text` and returns what can be released now.
    pub fn push(&mut self, text: &str) -> Split {
        let mut buf = std::mem::take(&mut self.held);
        buf.push_str(text);
        let mut out = Split::default();
        loop {
            match self.state {
                State::Start => {
                    let rest = buf.trim_start();
                    if let Some(after) = rest.strip_prefix(self.tags.open.as_str()) {
                        buf = after.to_string();
                        self.state = State::Reasoning { fresh: true };
                    } else if rest.is_empty() || self.tags.open.starts_with(rest) {
                        self.held = buf;
                        return out;
                    } else {
                        self.state = State::Content { fresh: false };
                    }
                }
                State::Reasoning { fresh } => {
                    if fresh {
                        buf = buf.trim_start().to_string();
                        // The prompt opened the block and the model opens
                        // it again: one open tag is dropped.
                        if let Some(after) = buf.strip_prefix(self.tags.open.as_str()) {
                            buf = after.to_string();
                            continue;
                        }
                        if buf.is_empty() || self.tags.open.starts_with(buf.as_str()) {
                            self.held = buf;
                            return out;
                        }
                        self.state = State::Reasoning { fresh: false };
                    }
                    match self.first_end(&buf) {
                        Some((at, skip)) => {
                            out.reasoning.push_str(buf[..at].trim_end());
                            out.closed |= skip > 0;
                            buf = buf[at + skip..].to_string();
                            self.state = State::Content { fresh: true };
                        }
                        None => {
                            // Hold back what may begin a tag or marker, and
                            // trailing whitespace (trimmed if the block ends).
                            let keep = self.partial_end(&buf);
                            let cut = buf[..buf.len() - keep].trim_end().len();
                            out.reasoning.push_str(&buf[..cut]);
                            self.held = buf[cut..].to_string();
                            return out;
                        }
                    }
                }
                State::Content { fresh } => {
                    if fresh {
                        buf = buf.trim_start().to_string();
                        if buf.is_empty() {
                            return out;
                        }
                        self.state = State::Content { fresh: false };
                    }
                    // Stray tags never reach the answer.
                    let tags = [self.tags.open.as_str(), self.tags.close.as_str()];
                    for tag in tags {
                        if buf.contains(tag) {
                            buf = buf.replace(tag, "");
                        }
                    }
                    let keep = partial_suffix(&buf, &tags);
                    out.content.push_str(&buf[..buf.len() - keep]);
                    self.held = buf[buf.len() - keep..].to_string();
                    return out;
                }
            }
        }
    }

    /// Releases whatever is held at the end of the output.
    pub fn finish(&mut self) -> Split {
        let held = std::mem::take(&mut self.held);
        match self.state {
            State::Start | State::Content { .. } => Split {
                content: held,
                ..Split::default()
            },
            State::Reasoning { .. } => Split {
                reasoning: held.trim_end().to_string(),
                ..Split::default()
            },
        }
    }

    /// Where the block ends in `buf`: (offset, bytes to skip). The close tag
    /// is skipped; an answer marker stays, to begin the content.
    fn first_end(&self, buf: &str) -> Option<(usize, usize)> {
        let close = buf
            .find(self.tags.close.as_str())
            .map(|at| (at, self.tags.close.len()));
        let marker = self
            .tags
            .answer_markers
            .iter()
            .filter_map(|m| buf.find(m.as_str()))
            .min()
            .map(|at| (at, 0));
        match (close, marker) {
            (Some(c), Some(m)) => Some(if m.0 < c.0 { m } else { c }),
            (c, m) => c.or(m),
        }
    }

    /// Bytes at the end of `buf` that may begin the close tag or a marker.
    fn partial_end(&self, buf: &str) -> usize {
        let mut ends: Vec<&str> = vec![self.tags.close.as_str()];
        ends.extend(self.tags.answer_markers.iter().map(String::as_str));
        partial_suffix(buf, &ends)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOOLS: &str = "<｜tool▁calls▁begin｜>";

    fn tags() -> Arc<ReasoningTags> {
        Arc::new(ReasoningTags {
            open: "<think>".into(),
            close: "</think>".into(),
            answer_markers: vec![TOOLS.into()],
            special_ids: Vec::new(),
        })
    }

    /// Runs `pieces` through a parser; returns (reasoning, content) and
    /// checks that reasoning never follows content.
    fn run(starts_inside: bool, pieces: &[&str]) -> (String, String) {
        let mut p = ReasoningParser::new(tags(), starts_inside);
        let (mut reasoning, mut content) = (String::new(), String::new());
        let mut push = |s: Split| {
            assert!(
                s.reasoning.is_empty() || content.is_empty(),
                "reasoning {:?} after content {content:?}",
                s.reasoning
            );
            reasoning.push_str(&s.reasoning);
            content.push_str(&s.content);
        };
        for piece in pieces {
            push(p.push(piece));
        }
        push(p.finish());
        (reasoning, content)
    }

    fn one_char_at_a_time(text: &str) -> Vec<String> {
        text.chars().map(String::from).collect()
    }

    #[test]
    fn a_block_opened_by_the_model_is_split_out() {
        let (r, c) = run(
            false,
            &[
                "<think>\n",
                "Two plus two",
                " is four.\n",
                "</think>\n\n",
                "4",
            ],
        );
        assert_eq!((r.as_str(), c.as_str()), ("Two plus two is four.", "4"));
    }

    #[test]
    fn output_that_starts_inside_the_block_is_reasoning_until_the_close() {
        let (r, c) = run(true, &["Let me think", ".\n</think>", "\n\nParis."]);
        assert_eq!((r.as_str(), c.as_str()), ("Let me think.", "Paris."));
    }

    #[test]
    fn tags_split_anywhere_are_recognised() {
        let text = "<think>\nstep one\nstep two\n</think>\n\nThe answer.";
        for pieces in [
            one_char_at_a_time(text),
            vec![
                "<th".into(),
                "ink>st".into(),
                "ep one\nstep two\n</".into(),
                "think".into(),
                ">\n\nThe answer.".into(),
            ],
        ] {
            let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let (r, c) = run(false, &pieces);
            assert_eq!(r, "step one\nstep two");
            assert_eq!(c, "The answer.");
        }
    }

    #[test]
    fn an_unclosed_block_is_all_reasoning() {
        let (r, c) = run(true, &["still thinking", " about it </thi"]);
        assert_eq!(r, "still thinking about it </thi");
        assert_eq!(c, "");
    }

    #[test]
    fn a_model_that_does_not_think_answers_verbatim() {
        let (r, c) = run(false, &["  Hello", " world <b>", "</b>"]);
        assert_eq!((r.as_str(), c.as_str()), ("", "  Hello world <b></b>"));
        // Something that starts like the tag but is not.
        let (r, c) = run(false, &["<thin", "king cap>"]);
        assert_eq!((r.as_str(), c.as_str()), ("", "<thinking cap>"));
    }

    #[test]
    fn tags_never_reach_the_content() {
        let (r, c) = run(false, &["<think>a</think>b<think>", "c</th", "ink>d"]);
        assert_eq!((r.as_str(), c.as_str()), ("a", "bcd"));
    }

    #[test]
    fn a_tool_call_ends_an_unclosed_block_and_is_kept_in_the_content() {
        let call = format!("{TOOLS}<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather");
        let pieces: Vec<String> = one_char_at_a_time(&format!("I should call a tool.\n{call}"));
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let (r, c) = run(true, &pieces);
        assert_eq!(r, "I should call a tool.");
        assert_eq!(c, call);
        // After a closed block, calls are content as they are.
        let (r, c) = run(true, &["plan</think>\n\n", &call]);
        assert_eq!((r.as_str(), c.as_str()), ("plan", call.as_str()));
    }

    #[test]
    fn whitespace_inside_reasoning_is_kept_and_only_its_ends_trimmed() {
        let (r, _) = run(true, &["\n\n a ", "  \n", " b  ", "\n</think>"]);
        assert_eq!(r, "a   \n b");
    }

    #[test]
    fn an_open_tag_repeated_after_the_prompt_opened_the_block_is_dropped() {
        let (r, c) = run(true, &["\n<th", "ink>\nidea", "</think>x"]);
        assert_eq!((r.as_str(), c.as_str()), ("idea", "x"));
    }

    #[test]
    fn closed_says_when_the_close_tag_was_consumed() {
        let mut p = ReasoningParser::new(tags(), true);
        assert!(!p.push("a</thi").closed);
        assert!(p.push("nk>b").closed);
        let mut p = ReasoningParser::new(tags(), true);
        assert!(!p.push(&format!("a{TOOLS}")).closed, "a marker is no close");
    }

    #[test]
    fn in_reasoning_follows_the_tags() {
        let mut p = ReasoningParser::new(tags(), false);
        assert!(!p.in_reasoning());
        p.push("<think>");
        assert!(p.in_reasoning());
        p.push("x</think>");
        assert!(!p.in_reasoning());
    }
}
