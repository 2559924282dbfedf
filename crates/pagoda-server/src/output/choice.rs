//! One choice's output, from engine events to text: incremental
//! detokenization, the reasoning split, stop strings, tool calls, finish
//! reasons and log-probabilities.

use pagoda_api::response::FinishReason;
use pagoda_api::ApiError;
use pagoda_engine::sampler::TokenLogprobs;
use pagoda_engine::EngineEvent;
use pagoda_models::{IncrementalDecoder, Tokenizer};

use crate::capabilities::tool_format::ToolCallFormat;
use crate::http::errors::engine_failure;
use crate::http::state::AppState;
use crate::output::label::Endpoint;
use crate::output::reasoning_parser::ReasoningParser;
use crate::output::stop_strings::StopMatcher;
use crate::output::tool_calls::{ToolCallParser, ToolEvent};

/// The text of one token, for log-probability entries.
pub fn token_text(state: &AppState, id: u32) -> String {
    text_of(&state.text.tokenizer, id)
}

fn text_of(tokenizer: &Tokenizer, id: u32) -> String {
    tokenizer.decode(&[id], false).unwrap_or_default()
}

/// What a choice produced in one step.
#[derive(Debug, Default)]
pub struct ChoiceDelta {
    /// New text (the answer, for a reasoning model).
    pub text: String,
    /// New thinking text of a reasoning model (always before any answer text).
    pub reasoning: String,
    /// Whether the token behind this delta belongs to the thinking block
    /// (its log-probabilities go with the reasoning, not the answer).
    pub reasoning_token: bool,
    /// Log-probabilities of the tokens behind it: (token text, logprobs).
    pub logprobs: Vec<(String, TokenLogprobs)>,
    /// New pieces of tool calls (the answer text holds none of them).
    pub calls: Vec<CallPiece>,
    /// Set when the choice is done.
    pub finish_reason: Option<FinishReason>,
}

/// A piece of one tool call: its first piece carries the id and name, the
/// others fragments of the arguments' JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallPiece {
    /// Which call of the choice.
    pub index: usize,
    /// The call's id and function name (first piece only).
    pub head: Option<(String, String)>,
    /// A fragment of the arguments.
    pub arguments: String,
}

/// One choice's detokenizer, reasoning splitter, stop matcher and tool-call
/// parser. Stop strings apply to the answer only, not to a reasoning
/// model's thinking; tool calls are read from the answer.
pub struct ChoiceOutput {
    decoder: IncrementalDecoder,
    reasoning: Option<ReasoningParser>,
    stops: StopMatcher,
    tools: Option<ToolCallParser>,
    /// Tokens generated.
    pub tokens: usize,
    /// Of them, tokens of the thinking block (its tags included).
    pub reasoning_tokens: usize,
    /// Set once finished.
    pub finish_reason: Option<FinishReason>,
}

impl ChoiceOutput {
    /// A fresh choice with these stop strings; `reasoning` splits a
    /// reasoning model's thinking from its answer, `tools` reads tool calls
    /// out of the answer.
    pub fn new(
        stops: Vec<String>,
        reasoning: Option<ReasoningParser>,
        tools: Option<ToolCallParser>,
    ) -> Self {
        Self {
            decoder: IncrementalDecoder::new(true),
            reasoning,
            stops: StopMatcher::new(stops),
            tools,
            tokens: 0,
            reasoning_tokens: 0,
            finish_reason: None,
        }
    }

    /// Runs decoded text through the reasoning splitter and the stop
    /// matcher; `end` releases everything held.
    fn release(&mut self, piece: &str, end: bool) -> ChoiceDelta {
        let was_reasoning = self.in_reasoning();
        // Without a reasoning splitter the piece goes to the stop matcher as it is.
        let split = match &mut self.reasoning {
            Some(parser) => {
                let mut split = parser.push(piece);
                if end {
                    let rest = parser.finish();
                    split.reasoning.push_str(&rest.reasoning);
                    split.content.push_str(&rest.content);
                }
                Some(split)
            }
            None => None,
        };
        let (content, reasoning, closed) = match &split {
            Some(s) => (s.content.as_str(), s.reasoning.as_str(), s.closed),
            None => (piece, "", false),
        };
        // A token is the block's when it opens it or leaves it open, and when
        // it closes it (not when a tool call's opening ends the block: that
        // token is the answer's).
        let reasoning_token = self.in_reasoning() || (was_reasoning && closed);
        let released = self.stops.push(content);
        let mut text = released.text;
        if end && !released.stopped {
            text.push_str(&self.stops.flush());
        }
        let calls = match &mut self.tools {
            Some(parser) => {
                let mut events = parser.push(&text);
                if end || released.stopped {
                    events.extend(parser.finish());
                }
                text.clear();
                split_calls(events, parser.format(), &mut text)
            }
            None => Vec::new(),
        };
        ChoiceDelta {
            text,
            reasoning: reasoning.to_string(),
            reasoning_token,
            logprobs: Vec::new(),
            finish_reason: released.stopped.then_some(
                if calls.is_empty() && self.num_calls() == 0 {
                    FinishReason::Stop
                } else {
                    FinishReason::ToolCalls
                },
            ),
            calls,
        }
    }

    /// Calls made so far.
    pub fn num_calls(&self) -> usize {
        self.tools.as_ref().map_or(0, ToolCallParser::num_calls)
    }

    fn in_reasoning(&self) -> bool {
        self.reasoning
            .as_ref()
            .is_some_and(ReasoningParser::in_reasoning)
    }

    /// Ends the choice with `reason` (the engine finished it, or the
    /// request ran out of time): what is held back is released, unless it
    /// completes a stop string, which makes the reason `stop`.
    pub fn finish(&mut self, tokenizer: &Tokenizer, reason: FinishReason) -> ChoiceDelta {
        let text = self.decoder.flush(tokenizer).unwrap_or_default();
        let mut delta = self.release(&text, true);
        let mut reason = delta.finish_reason.unwrap_or(reason);
        // A turn that called functions ends for them (unless cut short).
        if reason == FinishReason::Stop && self.num_calls() > 0 {
            reason = FinishReason::ToolCalls;
        }
        self.finish_reason = Some(reason);
        delta.finish_reason = Some(reason);
        delta
    }
}

/// Sorts a tool parser's events into answer text (appended to `text`) and
/// call pieces, giving each new call an id of `format`'s kind.
fn split_calls(
    events: Vec<ToolEvent>,
    format: ToolCallFormat,
    text: &mut String,
) -> Vec<CallPiece> {
    let mut calls = Vec::new();
    for event in events {
        match event {
            ToolEvent::Content(t) => text.push_str(&t),
            ToolEvent::CallBegin { index, name } => calls.push(CallPiece {
                index,
                head: Some((format.new_call_id(), name)),
                arguments: String::new(),
            }),
            // Heads go alone (`arguments: ""`), as OpenAI streams them.
            ToolEvent::Arguments { index, fragment } => calls.push(CallPiece {
                index,
                head: None,
                arguments: fragment,
            }),
        }
    }
    calls
}

/// The engine's reason as the API names it.
fn reason(r: pagoda_engine::FinishReason) -> FinishReason {
    match r {
        pagoda_engine::FinishReason::Stop => FinishReason::Stop,
        pagoda_engine::FinishReason::Length => FinishReason::Length,
    }
}

/// Applies one engine event to the choices; returns the choice index and
/// its delta, or an error for a failed request.
pub fn apply_event(
    tokenizer: &Tokenizer,
    choices: &mut [ChoiceOutput],
    event: EngineEvent,
    endpoint: Endpoint,
) -> Result<Option<(usize, ChoiceDelta)>, ApiError> {
    match event {
        EngineEvent::Token {
            choice,
            token,
            logprobs,
        } => {
            let Some(c) = choices.get_mut(choice) else {
                return Ok(None);
            };
            if c.finish_reason.is_some() {
                return Ok(None);
            }
            c.tokens += 1;
            let mut piece = c
                .decoder
                .push(tokenizer, token)
                .map_err(|e| crate::http::errors::internal("decoding tokens", e))?;
            // A tag the vocabulary marks special is dropped by decoding.
            if let Some(text) = c
                .reasoning
                .as_ref()
                .and_then(|p| p.tags().special_text(token))
            {
                piece.push_str(text);
            }
            let mut delta = c.release(&piece, false);
            if delta.reasoning_token {
                c.reasoning_tokens += 1;
            }
            if let Some(lp) = logprobs {
                delta.logprobs.push((text_of(tokenizer, token), lp));
            }
            if delta.finish_reason.is_some() {
                c.finish_reason = delta.finish_reason;
            }
            Ok(Some((choice, delta)))
        }
        EngineEvent::Finished {
            choice, reason: r, ..
        } => {
            let Some(c) = choices.get_mut(choice) else {
                return Ok(None);
            };
            if c.finish_reason.is_some() {
                return Ok(None);
            }
            Ok(Some((choice, c.finish(tokenizer, reason(r)))))
        }
        EngineEvent::Failed(e) => Err(engine_failure(e, endpoint.prompt_param())),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;
    use crate::output::reasoning_parser::ReasoningTags;

    /// The tiny R1-style fixture's tokenizer: `<think>`/`</think>` are
    /// single added tokens, as in the real R1 vocabulary.
    fn tokenizer() -> Tokenizer {
        let dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-r1-qwen2");
        pagoda_models::load_tokenizer(&dir).expect("tokenizer").0
    }

    fn parser(starts_inside: bool) -> ReasoningParser {
        let tags = ReasoningTags {
            open: "<think>".into(),
            close: "</think>".into(),
            answer_markers: vec!["<｜tool▁calls▁begin｜>".into()],
            special_ids: Vec::new(),
        };
        ReasoningParser::new(Arc::new(tags), starts_inside)
    }

    /// Feeds `ids` as engine token events, then a finish; returns
    /// (reasoning, content, finish_reason, reasoning_tokens, tokens).
    fn run(
        t: &Tokenizer,
        ids: &[u32],
        starts_inside: bool,
        stops: &[&str],
    ) -> (String, String, FinishReason, usize, usize) {
        let stops = stops.iter().map(|s| s.to_string()).collect();
        let mut choices = vec![ChoiceOutput::new(stops, Some(parser(starts_inside)), None)];
        let (mut reasoning, mut content, mut finish) = (String::new(), String::new(), None);
        let events = ids
            .iter()
            .map(|&token| EngineEvent::Token {
                choice: 0,
                token,
                logprobs: None,
            })
            .chain([EngineEvent::Finished {
                choice: 0,
                reason: pagoda_engine::FinishReason::Length,
                prompt_tokens: 1,
                completion_tokens: ids.len(),
            }]);
        for event in events {
            if let Some((_, d)) =
                apply_event(t, &mut choices, event, Endpoint::Chat).expect("applies")
            {
                assert!(
                    d.reasoning.is_empty() || content.is_empty(),
                    "reasoning after content"
                );
                reasoning.push_str(&d.reasoning);
                content.push_str(&d.text);
                finish = finish.or(d.finish_reason);
            }
        }
        let c = &choices[0];
        (
            reasoning,
            content,
            finish.expect("finished"),
            c.reasoning_tokens,
            c.tokens,
        )
    }

    #[test]
    fn scripted_token_streams_split_into_reasoning_and_answer() {
        let t = tokenizer();
        let encode = |s: &str| t.encode(s, false).expect("encode");
        let think = t.token_to_id("<think>").expect("<think> is one token");
        let close = t.token_to_id("</think>").expect("</think> is one token");

        // The model opens the block itself; tags are single tokens.
        let ids = encode("<think>\nTwo and two.\n</think>\n\nFour.");
        assert_eq!(ids[0], think);
        let at_close = ids.iter().position(|&i| i == close).expect("close tag");
        let (r, c, f, rt, n) = run(&t, &ids, false, &[]);
        assert_eq!(
            (r.as_str(), c.as_str(), f),
            ("Two and two.", "Four.", FinishReason::Length)
        );
        assert_eq!(rt, at_close + 1, "the block's tokens, both tags included");
        assert_eq!(n, ids.len());

        // The prompt opened the block; a stop string applies to the answer
        // only (the same text in the thinking does not stop it).
        let ids = encode("Say STOP here.\n</think>\n\nAnswer STOP more");
        let (r, c, f, _, _) = run(&t, &ids, true, &["STOP"]);
        assert_eq!(
            (r.as_str(), c.as_str(), f),
            ("Say STOP here.", "Answer ", FinishReason::Stop)
        );

        // The close tag spelled out in pieces rather than as its token.
        let mut ids = encode("hmm\n");
        for piece in ["</", "th", "ink", ">"] {
            ids.extend(t.encode(piece, false).expect("encode"));
        }
        assert!(!ids.contains(&close));
        ids.extend(encode("ok"));
        let (r, c, _, _, _) = run(&t, &ids, true, &[]);
        assert_eq!((r.as_str(), c.as_str()), ("hmm", "ok"));

        // Never closed: all reasoning, by length.
        let (r, c, f, rt, n) = run(&t, &encode("still going"), true, &[]);
        assert_eq!(
            (r.as_str(), c.as_str(), f),
            ("still going", "", FinishReason::Length)
        );
        assert_eq!(rt, n);

        // A DeepSeek tool call in an unclosed block is the answer's.
        let call = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f";
        let plan = encode("plan\n");
        let (r, c, _, rt, _) = run(&t, &encode(&format!("plan\n{call}")), true, &[]);
        assert_eq!((r.as_str(), c.as_str()), ("plan", call));
        assert_eq!(rt, plan.len(), "the call's first token is the answer's");
    }
}
