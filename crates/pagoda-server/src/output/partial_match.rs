//! What streamed text must hold back: the longest suffix that could still
//! grow into one of some strings (a stop string, a reasoning tag), so that
//! such a string is never half-sent, whatever the token boundaries.

/// Bytes at the end of `text` that are a proper prefix of one of `targets`
/// (always a whole number of UTF-8 characters).
pub fn partial_suffix<S: AsRef<str>>(text: &str, targets: &[S]) -> usize {
    targets
        .iter()
        .map(|t| {
            let t = t.as_ref();
            (1..t.len().min(text.len() + 1))
                .rev()
                .find(|&n| {
                    text.is_char_boundary(text.len() - n) && t.starts_with(&text[text.len() - n..])
                })
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_growing_suffix_is_held() {
        assert_eq!(partial_suffix("abc </th", &["</think>"]), 4);
        assert_eq!(partial_suffix("abc <", &["</think>", "<tool_call>"]), 1);
        assert_eq!(partial_suffix("abc", &["</think>"]), 0);
        // A complete match is not a partial one.
        assert_eq!(partial_suffix("x END", &["END"]), 0);
        // Never inside a character.
        assert_eq!(partial_suffix("é", &["\u{e9}x"]), 2);
        assert_eq!(partial_suffix("a", &[] as &[&str]), 0);
    }
}
