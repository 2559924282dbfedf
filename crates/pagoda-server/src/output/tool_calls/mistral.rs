//! Mistral tool calls (Mistral 7B v0.3, Nemo, Mixtral 8x22B): the answer is
//! `[TOOL_CALLS]` and a JSON array of `{"name": …, "arguments": {…}}`
//! objects. `[TOOL_CALLS]` is a control token, so it is usually gone from
//! the decoded text: the array alone, at the start of the answer, is read
//! the same way. Reference: vLLM's `mistral_tool_parser.py`.

use super::json_scan::{scan_call_object, skip_ws, Found, Stop};

/// The marker Mistral models write before their calls.
pub(super) const MISTRAL_CALLS: &str = "[TOOL_CALLS]";

/// `{…}`: the first after optional whitespace, `[TOOL_CALLS]` and `[`.
pub(super) fn scan_mistral(
    s: &str,
    first: bool,
    names: &[String],
    found: &mut Found,
) -> Result<usize, Stop> {
    let mut i = skip_ws(s, 0);
    if first {
        let rest = &s[i..];
        if rest.starts_with(MISTRAL_CALLS) {
            i = skip_ws(s, i + MISTRAL_CALLS.len());
        } else if MISTRAL_CALLS.starts_with(rest) {
            // Maybe the marker, maybe an array's `[`: more text decides.
            return Err(Stop::More);
        }
        if s[i..].starts_with('[') {
            i = skip_ws(s, i + 1);
        }
    }
    scan_call_object(s, i, names, found)
}

/// Whether the calls in `s` (from its start) are in an array.
pub(super) fn opens_array(s: &str) -> bool {
    let s = s.trim_start();
    s.strip_prefix(MISTRAL_CALLS)
        .unwrap_or(s)
        .trim_start()
        .starts_with('[')
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::ToolCallParser;

    #[test]
    fn mistral_calls_with_and_without_the_marker() {
        let text =
            "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]";
        assert_eq!(
            parse_both(M, text),
            (
                String::new(),
                vec![call("get_weather", r#"{"city": "Paris"}"#)]
            )
        );
        let text = format!(
            "[TOOL_CALLS][{{\"name\": \"f\", \"arguments\": {{}}}}, {{\"name\": \"search\", \"arguments\": {{\"q\": \"x\"}}}}, {{\"name\": \"f\", \"arguments\": {TRICKY}}}]"
        );
        assert_eq!(
            parse_both(M, &text),
            (
                String::new(),
                vec![
                    call("f", "{}"),
                    call("search", "{\"q\": \"x\"}"),
                    call("f", TRICKY)
                ]
            )
        );
        // The marker decoded away (a control token): the bare array.
        let text = " [{\"name\": \"f\", \"arguments\": {\"a\": 1}}]";
        assert_eq!(
            parse_both(M, text),
            (String::new(), vec![call("f", "{\"a\": 1}")])
        );
        // Split anywhere, the marker included.
        let mut parser = ToolCallParser::new(M, names(), true);
        let mut events = Vec::new();
        for piece in [
            "[TOOL",
            "_CALLS",
            "][{\"na",
            "me\": \"f\", \"argu",
            "ments\": {}}]",
        ] {
            events.extend(parser.push(piece));
        }
        events.extend(parser.finish());
        assert_eq!(reduce(&events), (String::new(), vec![call("f", "{}")]));
    }

    #[test]
    fn mistral_non_calls_are_content() {
        for text in [
            "Paris is sunny.",
            "[TOOL_CALLS] Sorry",
            "[TOOL_CALLS][{\"name\": \"rm\", \"arguments\": {}}]",
            "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}}",
            "[1, 2]",
            "[TOOL",
        ] {
            assert_content(M, text);
        }
    }
}
