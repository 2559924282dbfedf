//! DeepSeek (V3, R1) tool calls: a list between `<｜tool▁calls▁begin｜>` and
//! `<｜tool▁calls▁end｜>` of calls, each `<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME`
//! and its arguments' JSON (in a code fence or not), up to
//! `<｜tool▁call▁end｜>`. Reference: vLLM's `deepseekv3_tool_parser.py`.

use super::json_scan::{expect, found_name, scan_args, skip_ws, Found, Stop};

pub(super) const DS_CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
pub(super) const DS_CALLS_END: &str = "<｜tool▁calls▁end｜>";
pub(super) const DS_CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
pub(super) const DS_CALL_END: &str = "<｜tool▁call▁end｜>";
pub(super) const DS_SEP: &str = "<｜tool▁sep｜>";

/// An optional code fence (three backquotes and a language tag) at `i`:
/// where what follows it begins.
pub(super) fn skip_fence(s: &str, i: usize) -> Result<usize, Stop> {
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
pub(super) fn scan_deepseek(s: &str, names: &[String], found: &mut Found) -> Result<usize, Stop> {
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
    use super::super::tests::*;

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
}
