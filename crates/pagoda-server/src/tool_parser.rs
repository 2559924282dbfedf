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

use std::ops::Range;

use serde_json::{Map, Value};

use crate::partial_match::partial_suffix;
use crate::tool_format::ToolCallFormat;

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const PYTHON_TAG: &str = "<|python_tag|>";
const DS_CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
const DS_CALLS_END: &str = "<｜tool▁calls▁end｜>";
const DS_CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
const DS_CALL_END: &str = "<｜tool▁call▁end｜>";
const DS_SEP: &str = "<｜tool▁sep｜>";

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

/// Why scanning stopped short of a whole call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The text so far may still become a call.
    More,
    /// The text can no longer be a call.
    Bad,
}

/// What scanning a call's text found so far.
#[derive(Debug, Default)]
struct Found {
    /// The function's name (one on offer) and where its text ends.
    name: Option<(String, usize)>,
    /// The arguments object's text so far.
    args: Option<Range<usize>>,
    /// Where scanning the value still open stopped.
    resume: Option<Resume>,
}

/// Where scanning a string, object or array stopped for want of text, to
/// go on from there when more comes (so that a long value is not scanned
/// again from its start on every chunk).
#[derive(Debug, Clone, Copy)]
struct Resume {
    /// Where the value starts.
    start: usize,
    /// Where scanning stopped.
    pos: usize,
    /// Objects and arrays open.
    depth: usize,
    /// Inside a string.
    in_string: bool,
    /// Right after a backslash in a string.
    escaped: bool,
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
                ToolCallFormat::Hermes | ToolCallFormat::DeepSeek => State::Text,
                ToolCallFormat::Llama3Json | ToolCallFormat::Json => State::Call { first: true },
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

    /// Calls released so far.
    pub fn num_calls(&self) -> usize {
        self.calls
    }

    /// Whether calls are held until the whole output is known to be calls.
    fn defers(&self) -> bool {
        self.format == ToolCallFormat::Json && !self.trusted
    }

    /// The markers that open a call in answer text.
    fn openings(&self) -> &'static [&'static str] {
        match self.format {
            ToolCallFormat::Hermes => &[HERMES_OPEN],
            ToolCallFormat::DeepSeek => &[DS_CALLS_BEGIN, DS_CALL_BEGIN],
            ToolCallFormat::Llama3Json | ToolCallFormat::Json => &[],
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
                if first && self.format == ToolCallFormat::Json {
                    self.in_array = self.buf.trim_start().starts_with('[');
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
                            ToolCallFormat::Llama3Json | ToolCallFormat::Json => State::Rest,
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
            ToolCallFormat::Llama3Json | ToolCallFormat::Json => self.state = State::Rest,
        }
    }

    fn between(&mut self, out: &mut Vec<ToolEvent>, end: bool) -> bool {
        let b = self.buf.as_bytes();
        let i = skip_ws(&self.buf, 0);
        let rest = &self.buf[i..];
        if rest.is_empty() {
            if end {
                if self.format == ToolCallFormat::Json && self.in_array {
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
            ToolCallFormat::Json => {
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

/// The first byte from `i` on that is not JSON whitespace.
fn skip_ws(s: &str, mut i: usize) -> usize {
    let b = s.as_bytes();
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Expects `lit` at `i`: where it ends.
fn expect(s: &str, i: usize, lit: &str) -> Result<usize, Stop> {
    let rest = &s[i..];
    if rest.starts_with(lit) {
        Ok(i + lit.len())
    } else if lit.starts_with(rest) {
        Err(Stop::More)
    } else {
        Err(Stop::Bad)
    }
}

/// The end of the JSON string that starts (with its quote) at `i`.
fn scan_string(s: &str, i: usize) -> Result<usize, Stop> {
    let b = s.as_bytes();
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Ok(j + 1),
            _ => j += 1,
        }
    }
    Err(Stop::More)
}

/// The end of the JSON value that starts at `i` (its validity is checked
/// by parsing it afterwards), going on from `found.resume` if it is there.
fn skip_value(s: &str, i: usize, found: &mut Found) -> Result<usize, Stop> {
    let b = s.as_bytes();
    match b.get(i) {
        None => Err(Stop::More),
        Some(b'"' | b'{' | b'[') => {
            let mut r = match found.resume {
                Some(r) if r.start == i => r,
                _ => Resume {
                    start: i,
                    pos: i,
                    depth: 0,
                    in_string: false,
                    escaped: false,
                },
            };
            while r.pos < b.len() {
                let c = b[r.pos];
                r.pos += 1;
                if r.in_string {
                    if r.escaped {
                        r.escaped = false;
                    } else if c == b'\\' {
                        r.escaped = true;
                    } else if c == b'"' {
                        r.in_string = false;
                        if r.depth == 0 {
                            return Ok(r.pos);
                        }
                    }
                    continue;
                }
                match c {
                    b'"' => r.in_string = true,
                    b'{' | b'[' => r.depth += 1,
                    b'}' | b']' => {
                        r.depth = r.depth.saturating_sub(1);
                        if r.depth == 0 {
                            return Ok(r.pos);
                        }
                    }
                    _ => {}
                }
            }
            found.resume = Some(r);
            Err(Stop::More)
        }
        Some(_) => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            if j == b.len() {
                Err(Stop::More)
            } else if j == i {
                Err(Stop::Bad)
            } else {
                Ok(j)
            }
        }
    }
}

/// Parses a JSON value's text as `T`.
fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Stop> {
    serde_json::from_str(text).map_err(|_| Stop::Bad)
}

/// Records a function name if it is on offer.
fn found_name(name: &str, end: usize, names: &[String], found: &mut Found) -> Result<(), Stop> {
    if found.name.is_some() || !names.iter().any(|n| n == name) {
        return Err(Stop::Bad);
    }
    found.name = Some((name.to_string(), end));
    Ok(())
}

/// Scans the arguments object starting at `i`: its end.
fn scan_args(s: &str, i: usize, found: &mut Found) -> Result<usize, Stop> {
    if found.args.is_some() {
        return Err(Stop::Bad);
    }
    match s.as_bytes().get(i) {
        None => return Err(Stop::More),
        Some(b'{') => {}
        Some(_) => return Err(Stop::Bad),
    }
    match skip_value(s, i, found) {
        Ok(end) => {
            parse::<Map<String, Value>>(&s[i..end])?;
            found.args = Some(i..end);
            Ok(end)
        }
        Err(Stop::More) => {
            found.args = Some(i..s.len());
            Err(Stop::More)
        }
        Err(Stop::Bad) => Err(Stop::Bad),
    }
}

/// Scans a `{"name": …, "arguments": {…}}` object starting at `i` (other
/// keys are ignored; `"parameters"` is `"arguments"`): its end.
fn scan_call_object(s: &str, i: usize, names: &[String], found: &mut Found) -> Result<usize, Stop> {
    let b = s.as_bytes();
    let mut i = expect(s, i, "{")?;
    loop {
        i = skip_ws(s, i);
        match b.get(i) {
            None => return Err(Stop::More),
            Some(b'"') => {}
            Some(_) => return Err(Stop::Bad),
        }
        let key_end = scan_string(s, i)?;
        let key: String = parse(&s[i..key_end])?;
        let start = skip_ws(s, expect(s, skip_ws(s, key_end), ":")?);
        let end = match key.as_str() {
            "name" => {
                let end = skip_value(s, start, found)?;
                let name: String = parse(&s[start..end])?;
                found_name(&name, end, names, found)?;
                end
            }
            "arguments" | "parameters" => scan_args(s, start, found)?,
            _ => {
                let end = skip_value(s, start, found)?;
                parse::<Value>(&s[start..end])?;
                end
            }
        };
        i = skip_ws(s, end);
        match b.get(i) {
            None => return Err(Stop::More),
            Some(b',') => i += 1,
            Some(b'}') if found.name.is_some() && found.args.is_some() => return Ok(i + 1),
            Some(_) => return Err(Stop::Bad),
        }
    }
}

/// `<tool_call>{…}</tool_call>`, maybe after whitespace.
fn scan_hermes(s: &str, names: &[String], found: &mut Found) -> Result<usize, Stop> {
    let i = skip_ws(s, expect(s, skip_ws(s, 0), HERMES_OPEN)?);
    let end = scan_call_object(s, i, names, found)?;
    expect(s, skip_ws(s, end), HERMES_CLOSE)
}

/// `{…}`: the first after optional whitespace and `<|python_tag|>`, the
/// others after whitespace and an optional `;`.
fn scan_llama3(s: &str, first: bool, names: &[String], found: &mut Found) -> Result<usize, Stop> {
    let mut i = skip_ws(s, 0);
    if first && !s[i..].starts_with('{') {
        i = skip_ws(s, expect(s, i, PYTHON_TAG)?);
    } else if !first && s[i..].starts_with(';') {
        i = skip_ws(s, i + 1);
    }
    scan_call_object(s, i, names, found)
}

/// `{…}`; the first after optional whitespace and `[`.
fn scan_json(s: &str, first: bool, names: &[String], found: &mut Found) -> Result<usize, Stop> {
    let mut i = skip_ws(s, 0);
    if first && s[i..].starts_with('[') {
        i = skip_ws(s, i + 1);
    }
    scan_call_object(s, i, names, found)
}

/// An optional code fence (three backquotes and a language tag) at `i`:
/// where what follows it begins.
fn skip_fence(s: &str, i: usize) -> Result<usize, Stop> {
    let b = s.as_bytes();
    match expect(s, i, "```") {
        Ok(mut j) => {
            while j < b.len() && b[j].is_ascii_alphanumeric() {
                j += 1;
            }
            if j == b.len() {
                return Err(Stop::More);
            }
            Ok(skip_ws(s, j))
        }
        Err(Stop::More) => Err(Stop::More),
        Err(Stop::Bad) => Ok(i),
    }
}

/// Whitespace, `[<｜tool▁calls▁begin｜>]<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n`
/// "```json\n" `{…}` "\n```" `<｜tool▁call▁end｜>` (fences optional).
fn scan_deepseek(s: &str, names: &[String], found: &mut Found) -> Result<usize, Stop> {
    let b = s.as_bytes();
    let mut i = skip_ws(s, 0);
    if s[i..].starts_with(DS_CALLS_BEGIN) {
        i = skip_ws(s, i + DS_CALLS_BEGIN.len());
    }
    i = skip_ws(s, expect(s, i, DS_CALL_BEGIN)?);
    i = skip_ws(s, expect(s, i, "function")?);
    i = skip_ws(s, expect(s, i, DS_SEP)?);
    let start = i;
    while i < b.len() && !(b[i].is_ascii_whitespace() || matches!(b[i], b'`' | b'{' | b'<')) {
        i += 1;
    }
    if i == b.len() {
        return Err(Stop::More);
    }
    found_name(&s[start..i], i, names, found)?;
    let start = skip_fence(s, skip_ws(s, i))?;
    let end = scan_args(s, start, found)?;
    let i = skip_fence(s, skip_ws(s, end))?;
    expect(s, i, DS_CALL_END)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Calls = Vec<(String, String)>;

    fn names() -> Vec<String> {
        ["get_weather", "search", "f"].map(String::from).to_vec()
    }

    /// Merges adjacent content and a call's consecutive argument fragments.
    fn normalize(events: &[ToolEvent]) -> Vec<ToolEvent> {
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
    fn reduce(events: &[ToolEvent]) -> (String, Calls) {
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
    fn feed(format: ToolCallFormat, trusted: bool, text: &str, sizes: &[usize]) -> Vec<ToolEvent> {
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
    fn events(format: ToolCallFormat, trusted: bool, text: &str) -> Vec<ToolEvent> {
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
    fn parse(format: ToolCallFormat, text: &str) -> (String, Calls) {
        reduce(&events(format, false, text))
    }

    /// Both modes, which must agree: the result.
    fn parse_both(format: ToolCallFormat, text: &str) -> (String, Calls) {
        let untrusted = events(format, false, text);
        assert_eq!(events(format, true, text), untrusted, "{text:?}");
        reduce(&untrusted)
    }

    fn call(name: &str, args: &str) -> (String, String) {
        (name.to_string(), args.to_string())
    }

    /// Malformed or foreign text is all content, in both modes.
    fn assert_content(format: ToolCallFormat, text: &str) {
        assert_eq!(parse(format, text), (text.to_string(), vec![]), "{text:?}");
    }

    const H: ToolCallFormat = ToolCallFormat::Hermes;
    const L: ToolCallFormat = ToolCallFormat::Llama3Json;
    const D: ToolCallFormat = ToolCallFormat::DeepSeek;
    const J: ToolCallFormat = ToolCallFormat::Json;

    const TRICKY: &str = r#"{"s": "{\"}", "t": "a\\", "u": "Zürich ｜▁ 東京 😀 }]"}"#;

    #[test]
    fn hermes_one_call() {
        let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        assert_eq!(
            parse_both(H, text),
            (
                String::new(),
                vec![call("get_weather", r#"{"city": "Paris"}"#)]
            )
        );
    }

    #[test]
    fn hermes_several_calls_with_content_around() {
        let text = format!(
            "Let me look.\n<tool_call>\n{{\"name\": \"f\", \"arguments\": {{}}}}\n</tool_call>\n\
             <tool_call>{{\"name\": \"search\", \"parameters\": {{\"q\": \"a < b\"}}}}</tool_call>  \
             <tool_call>\n{{\"name\": \"f\", \"arguments\": {TRICKY}}}\n</tool_call>\nDone <tool"
        );
        assert_eq!(
            parse_both(H, &text),
            (
                "Let me look.\n\nDone <tool".to_string(),
                vec![
                    call("f", "{}"),
                    call("search", r#"{"q": "a < b"}"#),
                    call("f", TRICKY)
                ]
            )
        );
        // Content between calls stays between them.
        let text = "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call> and <tool_call>{\"name\": \"f\", \"arguments\": {\"x\": 1}}</tool_call>\n";
        let events = events(H, false, text);
        assert_eq!(
            events,
            vec![
                ToolEvent::CallBegin {
                    index: 0,
                    name: "f".into()
                },
                ToolEvent::Arguments {
                    index: 0,
                    fragment: "{}".into()
                },
                ToolEvent::Content(" and ".into()),
                ToolEvent::CallBegin {
                    index: 1,
                    name: "f".into()
                },
                ToolEvent::Arguments {
                    index: 1,
                    fragment: "{\"x\": 1}".into()
                },
            ]
        );
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
    fn hermes_arguments_may_come_first() {
        let text = "<tool_call>{\"arguments\": {\"a\": [1, {\"b\": null}]}, \"name\": \"f\", \"id\": 3}</tool_call>";
        assert_eq!(
            parse_both(H, text),
            (String::new(), vec![call("f", r#"{"a": [1, {"b": null}]}"#)])
        );
    }

    #[test]
    fn hermes_non_calls_are_content() {
        for text in [
            // Malformed JSON.
            "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": }}</tool_call>",
            "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}</tool_call> after",
            "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}} oops</tool_call>",
            // Unknown function.
            "<tool_call>{\"name\": \"rm\", \"arguments\": {}}</tool_call>",
            // Arguments that are not an object.
            "<tool_call>{\"name\": \"f\", \"arguments\": \"{}\"}</tool_call>",
            "<tool_call>{\"name\": \"f\"}</tool_call>",
            // Unclosed at the end.
            "Sure. <tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}",
            "<tool_call>{\"name\": \"f\", \"argu",
            "a <tool_call> b",
            "<tool_call",
            "x </tool_call> <tool_call>",
        ] {
            assert_content(H, text);
        }
        // Unknown names are content in trusted mode too.
        let text = "<tool_call>{\"name\": \"rm\", \"arguments\": {}}</tool_call>";
        assert_eq!(reduce(&events(H, true, text)), (text.to_string(), vec![]));
    }

    #[test]
    fn hermes_a_bad_call_does_not_hide_a_good_one() {
        let good = "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>";
        let bad = "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}";
        let (content, calls) = parse(H, &format!("{bad}{good}"));
        assert_eq!(content, bad);
        assert_eq!(calls, vec![call("f", "{}")]);
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

    #[test]
    fn llama3_calls() {
        let text = "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}";
        assert_eq!(
            parse_both(L, text),
            (
                String::new(),
                vec![call("get_weather", r#"{"city": "Paris"}"#)]
            )
        );
        let text = format!(
            "\n <|python_tag|>{{\"name\": \"f\", \"parameters\": {{}}}}; {{\"name\": \"search\", \"arguments\": {{\"q\": 1}}}};\n{{\"name\": \"f\", \"parameters\": {TRICKY}}}\n"
        );
        assert_eq!(
            parse_both(L, &text),
            (
                String::new(),
                vec![
                    call("f", "{}"),
                    call("search", "{\"q\": 1}"),
                    call("f", TRICKY)
                ]
            )
        );
        // Text after the calls is content.
        let text = "{\"name\": \"f\", \"parameters\": {}}\n\nI called f.";
        assert_eq!(
            parse_both(L, text),
            ("\n\nI called f.".to_string(), vec![call("f", "{}")])
        );
        // A bad second call: the rest is content.
        let text = "{\"name\": \"f\", \"parameters\": {}}; {\"name\": \"rm\", \"parameters\": {}}";
        assert_eq!(
            parse(L, text),
            (
                "; {\"name\": \"rm\", \"parameters\": {}}".to_string(),
                vec![call("f", "{}")]
            )
        );
    }

    #[test]
    fn llama3_non_calls_are_content() {
        for text in [
            "Sure! {\"name\": \"f\", \"parameters\": {}}",
            "The answer is 4.",
            "  <|python_tag|>brave_search.call(query=\"x\")",
            "{\"name\": \"f\", \"parameters\": {\"a\": tru}}",
            "{\"name\": \"rm\", \"parameters\": {}}",
            "{\"name\": \"f\", \"parameters\": {\"a\": 1}",
            "<|python_",
            "\n\n",
            "{}",
        ] {
            assert_content(L, text);
        }
    }

    fn ds_call(name: &str, args: &str) -> String {
        format!("<｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n{args}\n```<｜tool▁call▁end｜>")
    }

    #[test]
    fn deepseek_calls() {
        let text = format!(
            "<｜tool▁calls▁begin｜>{}<｜tool▁calls▁end｜>",
            ds_call("get_weather", r#"{"city": "Paris"}"#)
        );
        assert_eq!(
            parse_both(D, &text),
            (
                String::new(),
                vec![call("get_weather", r#"{"city": "Paris"}"#)]
            )
        );
        // Content before, three calls, no end marker.
        let text = format!(
            "I'll check.\n\n<｜tool▁calls▁begin｜>{}\n{}\n{}\n",
            ds_call("f", "{}"),
            ds_call("search", "{\"q\": \"東京\"}"),
            ds_call("f", TRICKY)
        );
        assert_eq!(
            parse_both(D, &text),
            (
                "I'll check.\n\n".to_string(),
                vec![
                    call("f", "{}"),
                    call("search", "{\"q\": \"東京\"}"),
                    call("f", TRICKY)
                ]
            )
        );
        // No fences, loose whitespace, text after the list.
        let text = "<｜tool▁calls▁begin｜>\n<｜tool▁call▁begin｜> function <｜tool▁sep｜>f\n{\"a\": 1}\n<｜tool▁call▁end｜>\n<｜tool▁calls▁end｜>\nDone.";
        assert_eq!(
            parse_both(D, text),
            ("\nDone.".to_string(), vec![call("f", "{\"a\": 1}")])
        );
    }

    #[test]
    fn deepseek_non_calls_are_content() {
        for text in [
            format!(
                "<｜tool▁calls▁begin｜>{}",
                ds_call("f", "{\"a\": }")
            ),
            format!("<｜tool▁calls▁begin｜>{}", ds_call("rm", "{}")),
            format!("<｜tool▁calls▁begin｜>{}", ds_call("f", "[1]")),
            "x <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{\"a\": 1}".to_string(),
            "<｜tool▁calls▁begin｜><｜tool▁call▁be".to_string(),
            "<｜tool▁".to_string(),
            "plain ｜▁ text".to_string(),
        ] {
            assert_content(D, &text);
        }
        // A bad call after a good one: the rest is content.
        let text = format!(
            "<｜tool▁calls▁begin｜>{}\n{}<｜tool▁calls▁end｜>",
            ds_call("f", "{}"),
            ds_call("rm", "{}")
        );
        let (content, calls) = parse(D, &text);
        assert_eq!(calls, vec![call("f", "{}")]);
        assert_eq!(
            content,
            format!("\n{}<｜tool▁calls▁end｜>", ds_call("rm", "{}"))
        );
    }

    #[test]
    fn json_calls() {
        let text = " {\"name\": \"f\", \"arguments\": {\"a\": 1}}\n";
        assert_eq!(
            parse_both(J, text),
            (String::new(), vec![call("f", "{\"a\": 1}")])
        );
        let text = format!(
            "[{{\"name\": \"f\", \"arguments\": {{}}}}, {{\"name\": \"search\", \"arguments\": {{\"q\": \"x\"}}}},\n {{\"name\": \"f\", \"arguments\": {TRICKY}}}]"
        );
        assert_eq!(
            parse_both(J, &text),
            (
                String::new(),
                vec![
                    call("f", "{}"),
                    call("search", "{\"q\": \"x\"}"),
                    call("f", TRICKY)
                ]
            )
        );
        // Untrusted calls wait for the end of the output.
        let mut parser = ToolCallParser::new(J, names(), false);
        assert_eq!(parser.push("{\"name\": \"f\", \"arguments\": {}}"), vec![]);
        assert_eq!(parser.finish().len(), 2);
        assert_eq!(parser.num_calls(), 1);
    }

    #[test]
    fn json_non_calls_are_content() {
        for text in [
            "Hello!",
            "{\"answer\": 42}",
            "{\"name\": \"f\", \"arguments\": {}} and more",
            "[{\"name\": \"f\", \"arguments\": {}}] and more",
            "[{\"name\": \"f\", \"arguments\": {}}, {\"name\": \"rm\", \"arguments\": {}}]",
            "[{\"name\": \"f\", \"arguments\": {}}",
            "[]",
            "[1, 2]",
            "{\"name\": \"f\", \"arguments\": {\"a\": 1}",
            "  ",
        ] {
            assert_content(J, text);
        }
        // Plain text is released at once.
        let mut parser = ToolCallParser::new(J, names(), false);
        assert_eq!(parser.push(" Hi"), vec![ToolEvent::Content(" Hi".into())]);
    }
}
