//! Finds the tool calls in a model's streamed output text, in the markup of
//! its [`ToolCallFormat`], and splits the output into answer text and calls
//! (each a function name and its arguments' JSON text).
//!
//! ```text
//!   "Checking.\n" "<tool_call>\n{\"name\": \"f\", \"arguments\": " "{\"a\": 1}}\n</tool_call>"
//!    └ content ┘   └────────── call 0: name "f" ─────────────┘    └ arguments ┘
//! ```
//!
//! Markers and JSON may be split across chunks anywhere: text that may still
//! become a call is held back, and released as answer text as soon as it
//! cannot. When the output is *trusted* (a grammar forced it to be calls), a
//! call's name is released as soon as it is known and its arguments as they
//! arrive; otherwise a call is released only once it is whole and valid (a
//! known function, arguments a JSON object), and anything else is answer
//! text, exactly as written. Either way a call's arguments are the exact
//! text of the arguments object in the output, so streamed and non-streamed
//! results agree. Reference: vLLM's `tool_parsers/`.
//!
//! This module is the streaming state machine, common to every format;
//! [`json_scan`] scans the JSON of a call object, and each format's markup is
//! in its own file: [`hermes`] (`<tool_call>` tags), [`llama3_json`] (Llama
//! 3.x JSON calls), [`deepseek`] (DeepSeek's markup), [`mistral`]
//! (`[TOOL_CALLS]` and an array) and [`json`] (plain JSON, a call or an
//! array of calls).

mod deepseek;
mod hermes;
mod json;
mod json_scan;
mod llama3_json;
mod mistral;

use std::ops::Range;

use crate::capabilities::tool_format::ToolCallFormat;
use crate::output::partial_match::partial_suffix;
use deepseek::{scan_deepseek, DS_CALLS_BEGIN, DS_CALLS_END, DS_CALL_BEGIN};
use hermes::{scan_hermes, HERMES_OPEN};
use json::scan_json;
use json_scan::{skip_ws, Found, Resume, Stop};
use llama3_json::scan_llama3;
use mistral::{opens_array, scan_mistral};

/// One thing the parser recognised in the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolEvent {
    /// Plain answer text.
    Content(String),
    /// A call begins: its 0-based index among this choice's calls, and the
    /// function name.
    CallBegin {
        /// The call's index among this choice's calls.
        index: usize,
        /// The function called.
        name: String,
    },
    /// A fragment of the call's arguments (a JSON object's text;
    /// concatenated over a call they form the whole arguments JSON string).
    Arguments {
        /// The call's index among this choice's calls.
        index: usize,
        /// The next piece of the arguments' text.
        fragment: String,
    },
}

/// Where the parser stands in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hermes, before the first text that is not whitespace: a bare call
    /// object there (`{"name": …`, no `<tool_call>` tags, as small Qwen2.5
    /// models write it) is read as the plain JSON format, whole answer and
    /// all, as llama.cpp's Hermes parser also accepts it.
    Start,
    /// Answer text, watched for a call's opening marker (Hermes, DeepSeek).
    Text,
    /// At the start of a call (`first`: of a list, whose opening markup it
    /// may carry).
    Call { first: bool },
    /// After a call: whitespace and separators are held.
    Between,
    /// Answer text to the end of the output.
    Rest,
}

/// A trusted call being streamed.
#[derive(Debug, Clone)]
struct Streaming {
    /// Its index among the calls.
    index: usize,
    /// Bytes of the held text accounted for by what was released.
    consumed: usize,
    /// Bytes of its arguments released.
    args_sent: usize,
}

/// The streaming recogniser of tool calls in one choice's output.
#[derive(Debug, Clone)]
pub struct ToolCallParser {
    format: ToolCallFormat,
    names: Vec<String>,
    trusted: bool,
    state: State,
    /// Text received and not released yet, from the point parsing is at.
    buf: String,
    /// Calls released.
    calls: usize,
    /// The trusted call being released, once its name was.
    streaming: Option<Streaming>,
    /// Json: the calls are in an array not closed yet.
    in_array: bool,
    /// DeepSeek: a call list is open (its end marker not seen).
    list_open: bool,
    /// Json, untrusted: events of calls that are whole but not released,
    /// as the output may still turn out not to be calls.
    deferred: Vec<ToolEvent>,
    /// How many calls `deferred` holds.
    deferred_calls: usize,
    /// The text `deferred` was parsed from (the answer text if it fails).
    deferred_text: String,
    /// Where scanning the held call stopped (valid while `buf` only grows).
    resume: Option<Resume>,
    /// Calls returned at most (`parallel_tool_calls: false`: one); later
    /// ones are parsed but not released.
    max_calls: usize,
}

impl ToolCallParser {
    /// A parser for `format`. `names`: the functions on offer (a call to
    /// another name is not a call: its text is content). `trusted`: a
    /// grammar forced the output to be well-formed calls, so each call's
    /// name is released as soon as it is known and its arguments as they
    /// arrive; otherwise each call is held until whole and released only if
    /// valid (else its text is content).
    pub fn new(format: ToolCallFormat, names: Vec<String>, trusted: bool) -> Self {
        Self {
            format,
            names,
            trusted,
            state: match format {
                ToolCallFormat::Hermes => State::Start,
                ToolCallFormat::DeepSeek => State::Text,
                _ => State::Call { first: true },
            },
            buf: String::new(),
            calls: 0,
            streaming: None,
            in_array: false,
            list_open: false,
            deferred: Vec::new(),
            deferred_calls: 0,
            deferred_text: String::new(),
            resume: None,
            max_calls: usize::MAX,
        }
    }

    /// The same parser returning at most `n` calls of a turn: a model that
    /// writes more than the request allows (`parallel_tool_calls: false`
    /// under `tool_choice: auto`, where no grammar bounds it) has its later
    /// calls left out, as vLLM does.
    pub fn at_most(mut self, n: usize) -> Self {
        self.max_calls = n;
        self
    }

    /// Leaves out the events of calls past `max_calls`.
    fn bounded(&self, mut events: Vec<ToolEvent>) -> Vec<ToolEvent> {
        let max = self.max_calls;
        events.retain(|e| match e {
            ToolEvent::Content(_) => true,
            ToolEvent::CallBegin { index, .. } | ToolEvent::Arguments { index, .. } => *index < max,
        });
        events
    }

    /// Feeds new output text (chunked anyhow); returns what can be released
    /// now, in order.
    pub fn push(&mut self, text: &str) -> Vec<ToolEvent> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        while self.step(&mut out, false) {}
        self.bounded(out)
    }

    /// End of output: releases everything held. An incomplete or malformed
    /// call is released as content, exactly as written.
    pub fn finish(&mut self) -> Vec<ToolEvent> {
        let mut out = Vec::new();
        while self.step(&mut out, true) {}
        self.bounded(out)
    }

    /// The markup this parser reads.
    pub fn format(&self) -> ToolCallFormat {
        self.format
    }

    /// Calls released so far.
    pub fn num_calls(&self) -> usize {
        self.calls
    }

    /// Whether calls are held until the whole output is known to be calls.
    fn defers(&self) -> bool {
        self.array_format() && !self.trusted
    }

    /// Whether the calls may be a JSON array (the whole answer).
    fn array_format(&self) -> bool {
        matches!(self.format, ToolCallFormat::Json | ToolCallFormat::Mistral)
    }

    /// The markers that open a call in answer text.
    fn openings(&self) -> &'static [&'static str] {
        match self.format {
            ToolCallFormat::Hermes => &[HERMES_OPEN],
            ToolCallFormat::DeepSeek => &[DS_CALLS_BEGIN, DS_CALL_BEGIN],
            _ => &[],
        }
    }

    /// Releases the first `n` held bytes as content.
    fn release(&mut self, n: usize, out: &mut Vec<ToolEvent>) {
        push_content(out, &self.buf[..n]);
        self.buf.drain(..n);
    }

    /// One move of the state machine; false when it must wait for more text
    /// (or, at the end, has released everything).
    fn step(&mut self, out: &mut Vec<ToolEvent>, end: bool) -> bool {
        match self.state {
            State::Rest => {
                let mut text = std::mem::take(&mut self.deferred_text);
                text.push_str(&self.buf);
                self.buf.clear();
                self.deferred.clear();
                self.deferred_calls = 0;
                push_content(out, &text);
                false
            }
            State::Start => {
                let i = skip_ws(&self.buf, 0);
                match self.buf.as_bytes().get(i) {
                    None if !end => false,
                    Some(b'{') => {
                        self.format = ToolCallFormat::Json;
                        self.state = State::Call { first: true };
                        true
                    }
                    _ => {
                        self.state = State::Text;
                        true
                    }
                }
            }
            State::Text => self.text(out, end),
            State::Call { first } => self.call(first, out, end),
            State::Between => self.between(out, end),
        }
    }

    fn text(&mut self, out: &mut Vec<ToolEvent>, end: bool) -> bool {
        let openings = self.openings();
        if let Some(at) = openings.iter().filter_map(|m| self.buf.find(m)).min() {
            self.release(at, out);
            self.state = State::Call { first: true };
            return true;
        }
        let keep = if end {
            0
        } else {
            partial_suffix(&self.buf, openings)
        };
        self.release(self.buf.len() - keep, out);
        false
    }

    fn call(&mut self, first: bool, out: &mut Vec<ToolEvent>, end: bool) -> bool {
        let mut found = Found {
            resume: self.resume.take(),
            ..Found::default()
        };
        let s = self.buf.as_str();
        let names = self.names.as_slice();
        let scanned = match self.format {
            ToolCallFormat::Hermes => scan_hermes(s, names, &mut found),
            ToolCallFormat::Llama3Json => scan_llama3(s, first, names, &mut found),
            ToolCallFormat::DeepSeek => scan_deepseek(s, names, &mut found),
            ToolCallFormat::Json => scan_json(s, first, names, &mut found),
            ToolCallFormat::Mistral => scan_mistral(s, first, names, &mut found),
        };
        let resume = found.resume.take();
        match (scanned, found.name, found.args) {
            (Ok(len), Some(name), Some(args)) => {
                if self.trusted {
                    self.stream(Some(name), Some(args), out);
                    self.streaming = None;
                } else {
                    let index = self.calls + self.deferred_calls;
                    let events = [
                        ToolEvent::CallBegin {
                            index,
                            name: name.0,
                        },
                        ToolEvent::Arguments {
                            index,
                            fragment: self.buf[args].to_string(),
                        },
                    ];
                    if self.defers() {
                        self.deferred.extend(events);
                        self.deferred_calls += 1;
                    } else {
                        out.extend(events);
                        self.calls += 1;
                    }
                }
                if self.defers() {
                    self.deferred_text.push_str(&self.buf[..len]);
                }
                if first && self.array_format() {
                    self.in_array = opens_array(&self.buf);
                }
                self.list_open = true;
                self.buf.drain(..len);
                self.state = State::Between;
                true
            }
            (Err(Stop::More), name, args) => {
                if self.trusted {
                    self.stream(name, args, out);
                }
                if !end {
                    self.resume = resume;
                    return false;
                }
                if self.streaming.take().is_some() {
                    // A trusted call cut short keeps what it released; the
                    // rest is a prefix of its markup.
                    self.buf.clear();
                    self.state = State::Rest;
                    return false;
                }
                self.not_a_call(out);
                true
            }
            _ => {
                match self.streaming.take() {
                    // Released in part already: the rest is content.
                    Some(streaming) => {
                        self.buf.drain(..streaming.consumed);
                        self.state = match self.format {
                            ToolCallFormat::Hermes | ToolCallFormat::DeepSeek => State::Text,
                            _ => State::Rest,
                        };
                    }
                    None => self.not_a_call(out),
                }
                true
            }
        }
    }

    /// Trusted: releases a call's name once known and its new arguments.
    fn stream(
        &mut self,
        name: Option<(String, usize)>,
        args: Option<Range<usize>>,
        out: &mut Vec<ToolEvent>,
    ) {
        if self.streaming.is_none() {
            let Some((name, name_end)) = name else {
                return;
            };
            let index = self.calls;
            out.push(ToolEvent::CallBegin { index, name });
            self.calls += 1;
            self.streaming = Some(Streaming {
                index,
                consumed: name_end,
                args_sent: 0,
            });
        }
        let (Some(streaming), Some(args)) = (self.streaming.as_mut(), args) else {
            return;
        };
        let from = args.start + streaming.args_sent;
        if args.end > from {
            out.push(ToolEvent::Arguments {
                index: streaming.index,
                fragment: self.buf[from..args.end].to_string(),
            });
            streaming.args_sent = args.end - args.start;
        }
        streaming.consumed = streaming.consumed.max(args.end);
    }

    /// The held call is not one: its text becomes content.
    fn not_a_call(&mut self, out: &mut Vec<ToolEvent>) {
        match self.format {
            ToolCallFormat::Hermes | ToolCallFormat::DeepSeek => {
                // Only the opening marker (and whitespace before it): a
                // later one may still open a call.
                let i = skip_ws(&self.buf, 0);
                let marker = self
                    .openings()
                    .iter()
                    .find(|m| self.buf[i..].starts_with(**m))
                    .map_or(self.buf.len(), |m| i + m.len());
                self.release(marker, out);
                self.list_open = false;
                self.state = State::Text;
            }
            _ => self.state = State::Rest,
        }
    }

    fn between(&mut self, out: &mut Vec<ToolEvent>, end: bool) -> bool {
        let b = self.buf.as_bytes();
        let i = skip_ws(&self.buf, 0);
        let rest = &self.buf[i..];
        if rest.is_empty() {
            if end {
                if self.array_format() && self.in_array {
                    // An array never closed: not calls.
                    self.state = State::Rest;
                    return true;
                }
                // Whitespace after the last call is dropped.
                self.buf.clear();
                self.calls += self.deferred_calls;
                self.deferred_calls = 0;
                self.deferred_text.clear();
                out.append(&mut self.deferred);
            }
            return false;
        }
        match self.format {
            ToolCallFormat::Hermes => {
                if rest.starts_with(HERMES_OPEN) {
                    self.state = State::Call { first: true };
                    return true;
                }
                if !end && HERMES_OPEN.starts_with(rest) {
                    return false;
                }
                self.state = State::Text;
            }
            ToolCallFormat::DeepSeek => {
                if self.list_open {
                    if rest.starts_with(DS_CALL_BEGIN) {
                        self.state = State::Call { first: false };
                        return true;
                    }
                    if rest.starts_with(DS_CALLS_END) {
                        self.buf.drain(..i + DS_CALLS_END.len());
                        self.list_open = false;
                        return true;
                    }
                    if !end && (DS_CALL_BEGIN.starts_with(rest) || DS_CALLS_END.starts_with(rest)) {
                        return false;
                    }
                }
                self.state = State::Text;
            }
            ToolCallFormat::Llama3Json => {
                // Calls are separated by `;` (or just whitespace).
                let j = if b[i] == b';' {
                    skip_ws(&self.buf, i + 1)
                } else {
                    i
                };
                match b.get(j) {
                    Some(b'{') => self.state = State::Call { first: false },
                    None if !end => return false,
                    _ => self.state = State::Rest,
                }
            }
            ToolCallFormat::Json | ToolCallFormat::Mistral => {
                if !self.in_array {
                    // Only whitespace may follow the call.
                    self.state = State::Rest;
                    return true;
                }
                match b[i] {
                    b',' => {
                        let j = skip_ws(&self.buf, i + 1);
                        match b.get(j) {
                            Some(b'{') => {
                                if self.defers() {
                                    self.deferred_text.push_str(&self.buf[..j]);
                                }
                                self.buf.drain(..j);
                                self.state = State::Call { first: false };
                            }
                            None if !end => return false,
                            _ => self.state = State::Rest,
                        }
                    }
                    b']' => {
                        if self.defers() {
                            self.deferred_text.push_str(&self.buf[..=i]);
                        }
                        self.buf.drain(..=i);
                        self.in_array = false;
                    }
                    _ => self.state = State::Rest,
                }
            }
        }
        true
    }
}

/// Appends `text` to `out` as content, merged with content just before.
fn push_content(out: &mut Vec<ToolEvent>, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(ToolEvent::Content(last)) = out.last_mut() {
        last.push_str(text);
    } else {
        out.push(ToolEvent::Content(text.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) type Calls = Vec<(String, String)>;

    pub(super) fn names() -> Vec<String> {
        ["get_weather", "search", "f"].map(String::from).to_vec()
    }

    /// Merges adjacent content and a call's consecutive argument fragments.
    pub(super) fn normalize(events: &[ToolEvent]) -> Vec<ToolEvent> {
        let mut out: Vec<ToolEvent> = Vec::new();
        for event in events {
            match (out.last_mut(), event) {
                (Some(ToolEvent::Content(a)), ToolEvent::Content(b)) => a.push_str(b),
                (
                    Some(ToolEvent::Arguments { index: i, fragment }),
                    ToolEvent::Arguments {
                        index: j,
                        fragment: more,
                    },
                ) if i == j => fragment.push_str(more),
                _ => out.push(event.clone()),
            }
        }
        out
    }

    /// The content and the calls (name, arguments) of some events.
    pub(super) fn reduce(events: &[ToolEvent]) -> (String, Calls) {
        let mut content = String::new();
        let mut calls: Calls = Vec::new();
        for event in events {
            match event {
                ToolEvent::Content(text) => content.push_str(text),
                ToolEvent::CallBegin { index, name } => {
                    assert_eq!(*index, calls.len(), "calls are numbered in order");
                    calls.push((name.clone(), String::new()));
                }
                ToolEvent::Arguments { index, fragment } => {
                    assert_eq!(*index + 1, calls.len(), "arguments of the last call");
                    calls[*index].1.push_str(fragment);
                }
            }
        }
        (content, calls)
    }

    /// Feeds `text` in chunks of `sizes` characters (cycling).
    pub(super) fn feed(
        format: ToolCallFormat,
        trusted: bool,
        text: &str,
        sizes: &[usize],
    ) -> Vec<ToolEvent> {
        let mut parser = ToolCallParser::new(format, names(), trusted);
        let mut events = Vec::new();
        let mut rest = text;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let cut = rest
                .char_indices()
                .nth(size)
                .map_or(rest.len(), |(at, _)| at);
            events.extend(parser.push(&rest[..cut]));
            rest = &rest[cut..];
        }
        events.extend(parser.finish());
        for event in &events {
            assert_ne!(event, &ToolEvent::Content(String::new()), "empty content");
        }
        let (_, calls) = reduce(&events);
        assert_eq!(parser.num_calls(), calls.len());
        normalize(&events)
    }

    /// Parses `text` whole, a character at a time and in uneven chunks:
    /// all must agree.
    pub(super) fn events(format: ToolCallFormat, trusted: bool, text: &str) -> Vec<ToolEvent> {
        let whole = feed(format, trusted, text, &[usize::MAX]);
        assert_eq!(feed(format, trusted, text, &[1]), whole, "{text:?}");
        assert_eq!(
            feed(format, trusted, text, &[1, 3, 7, 2]),
            whole,
            "{text:?}"
        );
        assert_eq!(feed(format, trusted, text, &[5, 2, 11]), whole, "{text:?}");
        whole
    }

    /// Untrusted parse of `text`.
    pub(super) fn parse(format: ToolCallFormat, text: &str) -> (String, Calls) {
        reduce(&events(format, false, text))
    }

    /// Both modes, which must agree: the result.
    pub(super) fn parse_both(format: ToolCallFormat, text: &str) -> (String, Calls) {
        let untrusted = events(format, false, text);
        assert_eq!(events(format, true, text), untrusted, "{text:?}");
        reduce(&untrusted)
    }

    pub(super) fn call(name: &str, args: &str) -> (String, String) {
        (name.to_string(), args.to_string())
    }

    /// Malformed or foreign text is all content, in both modes.
    pub(super) fn assert_content(format: ToolCallFormat, text: &str) {
        assert_eq!(parse(format, text), (text.to_string(), vec![]), "{text:?}");
    }

    pub(super) const H: ToolCallFormat = ToolCallFormat::Hermes;
    pub(super) const L: ToolCallFormat = ToolCallFormat::Llama3Json;
    pub(super) const D: ToolCallFormat = ToolCallFormat::DeepSeek;
    pub(super) const J: ToolCallFormat = ToolCallFormat::Json;
    pub(super) const M: ToolCallFormat = ToolCallFormat::Mistral;

    pub(super) const TRICKY: &str = r#"{"s": "{\"}", "t": "a\\", "u": "Zürich ｜▁ 東京 😀 }]"}"#;

    pub(super) fn ds_call(name: &str, args: &str) -> String {
        format!("<｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n{args}\n```<｜tool▁call▁end｜>")
    }

    #[test]
    fn at_most_one_call_leaves_out_the_later_ones_and_keeps_the_text() {
        let text = "Sure. <tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call> then <tool_call>{\"name\": \"search\", \"arguments\": {\"q\": 1}}</tool_call>";
        for trusted in [false, true] {
            let mut parser = ToolCallParser::new(H, names(), trusted).at_most(1);
            let mut events = Vec::new();
            for c in text.chars() {
                events.extend(parser.push(&c.to_string()));
            }
            events.extend(parser.finish());
            assert_eq!(
                reduce(&normalize(&events)),
                ("Sure.  then ".to_string(), vec![call("f", "{}")]),
                "trusted: {trusted}"
            );
        }
    }

    #[test]
    fn trusted_calls_stream_as_they_arrive() {
        let mut parser = ToolCallParser::new(H, names(), true);
        assert_eq!(
            parser.push("Hi <tool_call>\n{\"name\": \"se"),
            vec![ToolEvent::Content("Hi ".into())]
        );
        assert_eq!(
            parser.push("arch\", \"arguments\": {\"q\": \"x"),
            vec![
                ToolEvent::CallBegin {
                    index: 0,
                    name: "search".into()
                },
                ToolEvent::Arguments {
                    index: 0,
                    fragment: "{\"q\": \"x".into()
                }
            ]
        );
        assert_eq!(
            parser.push("}\"}}\n</tool"),
            vec![ToolEvent::Arguments {
                index: 0,
                fragment: "}\"}".into()
            }]
        );
        assert_eq!(parser.push("_call>"), vec![]);
        assert_eq!(parser.finish(), vec![]);
        assert_eq!(parser.num_calls(), 1);

        // Cut short: what was released stays a call.
        let mut parser = ToolCallParser::new(D, names(), true);
        let mut events = parser.push(
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{\"a\": [1,",
        );
        events.extend(parser.finish());
        assert_eq!(
            reduce(&events),
            (String::new(), vec![call("f", "{\"a\": [1,")])
        );
    }

    #[test]
    fn every_split_point_gives_the_same_result() {
        let cases = [
            (H, format!("a<tool_call>\n{{\"name\": \"f\", \"arguments\": {TRICKY}}}\n</tool_call>\n<tool_call>{{\"name\": \"search\", \"arguments\": {{}}}}</tool_call> b")),
            (L, format!("<|python_tag|>{{\"name\": \"f\", \"parameters\": {TRICKY}}}; {{\"name\": \"f\", \"parameters\": {{}}}}")),
            (D, format!("x<｜tool▁calls▁begin｜>{}\n{}<｜tool▁calls▁end｜>", ds_call("f", TRICKY), ds_call("search", "{}"))),
            (J, format!("[{{\"name\": \"f\", \"arguments\": {TRICKY}}}]")),
        ];
        for (format, text) in cases {
            for trusted in [false, true] {
                let whole = feed(format, trusted, &text, &[usize::MAX]);
                assert_eq!(reduce(&whole).1.len(), 2 - usize::from(format == J));
                for at in 1..text.chars().count() {
                    assert_eq!(
                        feed(format, trusted, &text, &[at, usize::MAX]),
                        whole,
                        "{text:?} at {at}"
                    );
                }
            }
        }
    }
}
