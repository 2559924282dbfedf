//! Llama 3.x JSON tool calls: the answer is one call object or several
//! separated by `;`, the first maybe after `<|python_tag|>`; `"parameters"`
//! holds the arguments. Reference: vLLM's `llama_tool_parser.py`.

use super::json_scan::{expect, scan_call_object, skip_ws, Found, Stop};

pub(super) const PYTHON_TAG: &str = "<|python_tag|>";

/// `{…}`: the first after optional whitespace and `<|python_tag|>`, the
/// others after whitespace and an optional `;`.
pub(super) fn scan_llama3(
    s: &str,
    first: bool,
    names: &[String],
    found: &mut Found,
) -> Result<usize, Stop> {
    let mut i = skip_ws(s, 0);
    if first && !s[i..].starts_with('{') {
        i = skip_ws(s, expect(s, i, PYTHON_TAG)?);
    } else if !first && s[i..].starts_with(';') {
        i = skip_ws(s, i + 1);
    }
    scan_call_object(s, i, names, found)
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;

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
}
