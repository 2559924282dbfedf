//! A scanner of the JSON in a call's text, that reports how far it got:
//! where a value ends, whether the text so far may still become a call
//! ([`Stop::More`]) or cannot ([`Stop::Bad`]), and where to resume when more
//! text comes. The formats share it for the `{"name": …, "arguments": {…}}`
//! object and the arguments object.

use std::ops::Range;

use serde_json::{Map, Value};

/// Why scanning stopped short of a whole call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// The text so far may still become a call.
    More,
    /// The text can no longer be a call.
    Bad,
}

/// What scanning a call's text found so far.
#[derive(Debug, Default)]
pub(super) struct Found {
    /// The function's name (one on offer) and where its text ends.
    pub(super) name: Option<(String, usize)>,
    /// The arguments object's text so far.
    pub(super) args: Option<Range<usize>>,
    /// Where scanning the value still open stopped.
    pub(super) resume: Option<Resume>,
}

/// Where scanning a string, object or array stopped for want of text, to
/// go on from there when more comes (so that a long value is not scanned
/// again from its start on every chunk).
#[derive(Debug, Clone, Copy)]
pub(super) struct Resume {
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

/// The first byte from `i` on that is not JSON whitespace.
pub(super) fn skip_ws(s: &str, mut i: usize) -> usize {
    let b = s.as_bytes();
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Expects `lit` at `i`: where it ends.
pub(super) fn expect(s: &str, i: usize, lit: &str) -> Result<usize, Stop> {
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
pub(super) fn scan_string(s: &str, i: usize) -> Result<usize, Stop> {
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
pub(super) fn skip_value(s: &str, i: usize, found: &mut Found) -> Result<usize, Stop> {
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
pub(super) fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Stop> {
    serde_json::from_str(text).map_err(|_| Stop::Bad)
}

/// Records a function name if it is on offer.
pub(super) fn found_name(
    name: &str,
    end: usize,
    names: &[String],
    found: &mut Found,
) -> Result<(), Stop> {
    if found.name.is_some() || !names.iter().any(|n| n == name) {
        return Err(Stop::Bad);
    }
    found.name = Some((name.to_string(), end));
    Ok(())
}

/// Scans the arguments object starting at `i`: its end.
pub(super) fn scan_args(s: &str, i: usize, found: &mut Found) -> Result<usize, Stop> {
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
pub(super) fn scan_call_object(
    s: &str,
    i: usize,
    names: &[String],
    found: &mut Found,
) -> Result<usize, Stop> {
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
