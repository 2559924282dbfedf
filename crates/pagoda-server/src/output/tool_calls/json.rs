//! Plain JSON tool calls (the format of models without markup of their own):
//! the whole answer is one call object or an array of them.

use super::json_scan::{scan_call_object, skip_ws, Found, Stop};

/// `{…}`; the first after optional whitespace and `[`.
pub(super) fn scan_json(
    s: &str,
    first: bool,
    names: &[String],
    found: &mut Found,
) -> Result<usize, Stop> {
    let mut i = skip_ws(s, 0);
    if first && s[i..].starts_with('[') {
        i = skip_ws(s, i + 1);
    }
    scan_call_object(s, i, names, found)
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::{ToolCallParser, ToolEvent};

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
