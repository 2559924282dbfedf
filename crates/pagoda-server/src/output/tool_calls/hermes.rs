//! Hermes tool calls (Hermes and Qwen templates): each call a JSON object
//! between `<tool_call>` and `</tool_call>`, anywhere in the answer text.
//! Reference: vLLM's `hermes_tool_parser.py`.

use super::json_scan::{expect, scan_call_object, skip_ws, Found, Stop};

pub(super) const HERMES_OPEN: &str = "<tool_call>";
pub(super) const HERMES_CLOSE: &str = "</tool_call>";

/// `<tool_call>{…}</tool_call>`, maybe after whitespace.
pub(super) fn scan_hermes(s: &str, names: &[String], found: &mut Found) -> Result<usize, Stop> {
    let i = skip_ws(s, expect(s, skip_ws(s, 0), HERMES_OPEN)?);
    let end = scan_call_object(s, i, names, found)?;
    expect(s, skip_ws(s, end), HERMES_CLOSE)
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::ToolEvent;

    /// Small Qwen2.5 models often leave the tags out: an answer that is a
    /// bare call object is a call; one that only begins like one is not.
    #[test]
    fn hermes_answers_that_are_a_bare_call() {
        let text = "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}";
        assert_eq!(
            parse_both(H, text),
            (
                String::new(),
                vec![call("get_weather", r#"{"city": "Paris"}"#)]
            )
        );
        let text = "\n [{\"name\": \"f\", \"arguments\": {}}]";
        assert_eq!(parse_both(H, text).1, vec![]);
        for text in [
            "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}} and more",
            "{\"name\": \"rm\", \"arguments\": {}}",
            "{\"answer\": 42}",
            "  ",
        ] {
            assert_content(H, text);
        }
    }

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
}
