//! Prompt-lookup drafting (n-gram speculation, as vLLM's `ngram` method and
//! Saxena's prompt lookup decoding): the tokens that followed the latest
//! earlier occurrence of the sequence's last `n` tokens are proposed as
//! its next ones — no draft model, and on input-grounded work (summaries,
//! edits, code that repeats its context) often right. The longest `n` in
//! `min_n..=max_n` that matches wins; verification ([`crate::spec_accept`])
//! keeps the output exactly the target's.

/// Up to `k` tokens proposed to follow `tokens`, from the latest earlier
/// occurrence of its last `n` tokens (`n` from `max_n` down to `min_n`);
/// empty when none matches.
pub fn propose(tokens: &[u32], min_n: usize, max_n: usize, k: usize) -> Vec<u32> {
    let len = tokens.len();
    if k == 0 || min_n == 0 || min_n > max_n {
        return Vec::new();
    }
    for n in (min_n..=max_n.min(len.saturating_sub(1))).rev() {
        let suffix = &tokens[len - n..];
        // The latest start before the suffix itself whose n tokens match
        // and that has at least one token after it.
        if let Some(start) = (0..len - n).rev().find(|&s| &tokens[s..s + n] == suffix) {
            let from = start + n;
            let to = (from + k).min(len);
            return tokens[from..to].to_vec();
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_longest_match_proposes_what_followed_it() {
        //            0  1  2  3  4  5  6  7  8  9 10
        let tokens = [5, 6, 7, 8, 9, 1, 6, 7, 2, 6, 7];
        // "6 7" last occurred at 6..8, followed by 2, 6, 7.
        assert_eq!(propose(&tokens, 1, 3, 3), vec![2, 6, 7]);
        assert_eq!(propose(&tokens, 1, 3, 1), vec![2]);
        // A longer n-gram wins over a later, shorter one.
        let tokens = [1, 2, 3, 4, 9, 3, 4, 1, 2, 3, 4];
        // "2 3 4" (n = 3) occurred at 1..4, followed by 9, 3, 4.
        assert_eq!(propose(&tokens, 2, 3, 3), vec![9, 3, 4]);
        // With n = 2 only, "3 4" last occurred at 5..7, followed by 1, 2, 3.
        assert_eq!(propose(&tokens, 2, 2, 3), vec![1, 2, 3]);
    }

    #[test]
    fn nothing_is_proposed_without_a_match() {
        assert!(propose(&[1, 2, 3, 4], 1, 3, 4).is_empty());
        assert!(propose(&[], 1, 3, 4).is_empty());
        assert!(propose(&[7], 1, 3, 4).is_empty());
        assert!(propose(&[7, 7], 1, 3, 0).is_empty());
        assert!(propose(&[7, 7], 0, 3, 2).is_empty());
        // "7" at 0 matches the last "7", followed by the last token itself.
        assert_eq!(propose(&[7, 7], 1, 3, 2), vec![7]);
    }
}
