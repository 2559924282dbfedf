//! Stop strings over a stream of text deltas: text is released only when no
//! stop string can still begin in it, so a stop string is never half-sent,
//! and matching works across token boundaries.

/// Text released by one step of a [`StopMatcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// Text safe to send.
    pub text: String,
    /// Whether a stop string matched (the text ends just before it).
    pub stopped: bool,
}

/// Holds back the end of the text while it could still be a stop string's start.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// A matcher for `stops` (none empty).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            held: String::new(),
            stopped: false,
        }
    }

    /// Adds `delta` and returns what can be sent now.
    pub fn push(&mut self, delta: &str) -> Released {
        if self.stopped {
            return Released {
                text: String::new(),
                stopped: true,
            };
        }
        self.held.push_str(delta);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            self.stopped = true;
            let text = self.held[..at].to_string();
            self.held.clear();
            return Released {
                text,
                stopped: true,
            };
        }
        // Keep the longest suffix of `held` that is a prefix of some stop string.
        let keep = crate::output::partial_match::partial_suffix(&self.held, &self.stops);
        let cut = self.held.len() - keep;
        let text = self.held[..cut].to_string();
        self.held.drain(..cut);
        Released {
            text,
            stopped: false,
        }
    }

    /// The held-back text, at the end of generation without a match.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], deltas: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for d in deltas {
            let r = m.push(d);
            out.push_str(&r.text);
            if r.stopped {
                return (out, true);
            }
        }
        out.push_str(&m.flush());
        (out, false)
    }

    #[test]
    fn stops_across_deltas_never_leak() {
        assert_eq!(
            run(&["END"], &["Hello E", "N", "D and more"]),
            ("Hello ".into(), true)
        );
        assert_eq!(run(&["\n\n"], &["a\n", "\nb"]), ("a".into(), true));
        assert_eq!(
            run(&["xyz"], &["ab", "cx", "y", "q"]),
            ("abcxyq".into(), false)
        );
        assert_eq!(
            run(&["two", "one"], &["zero one two"]),
            ("zero ".into(), true)
        );
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn held_text_is_released_as_soon_as_it_cannot_start_a_stop() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(m.push("abc ST").text, "abc ");
        assert_eq!(m.push("ART").text, "START");
        assert_eq!(m.push("é ST").text, "é ");
    }
}
