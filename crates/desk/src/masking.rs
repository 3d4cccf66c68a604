//! Hides card numbers and operator-configured patterns in message text before it
//! is stored or shown to anyone else. Players paste card numbers into support chats;
//! they must not end up in transcripts, exports or an agent's screen.
//!
//! A card number is a run of 13 to 19 digits, optionally grouped by single spaces
//! or hyphens, that passes the Luhn check. Every digit but the last four is
//! replaced by `•`, keeping the grouping, so the player and the agent can still
//! tell which card was meant. Players often type something right beside it (the
//! security code, the expiry's month, another number), which makes the run as a
//! whole no card number: then each card-shaped stretch of its groups is one
//! (a single group of 13 to 19 digits, or groups of four or more digits with a
//! last group of three or more), the longest first. A single group of more than
//! 19 digits is not a card number and is left alone (order and reference
//! numbers). Configured patterns (regular expressions) are replaced by
//! `[hidden]` as a whole.
//!
//! Masking is a pure function of the text, so a resend of the same message masks
//! to the same stored text and is recognised as a resend.

use regex::Regex;
use std::sync::OnceLock;

/// What replaces a match of a configured pattern.
pub const HIDDEN: &str = "[hidden]";
/// What replaces a hidden digit of a card number.
pub const MASK_DIGIT: char = '•';

/// Runs of digits that may hold card numbers: 13 or more digits, single spaces
/// or hyphens between groups.
fn card_runs() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\d(?:[ -]?\d){12,}").expect("valid card regex"))
}

/// The masking rules in force.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Extra patterns from configuration.
    patterns: Vec<Regex>,
}

impl Masker {
    /// Card numbers, and these extra patterns (regular expressions, as given one per
    /// line: a line's trailing `\r` is dropped and blank lines are skipped). Fails
    /// with the first pattern that does not compile, or that matches empty text
    /// (it would hide the gap between every two characters).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        let patterns = patterns
            .iter()
            .map(|p| p.as_ref().trim_end_matches('\r'))
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                let re = Regex::new(p).map_err(|e| {
                    // The parser's text draws the pattern with a caret over
                    // several lines; its last line says what is wrong.
                    let text = e.to_string();
                    let why = text.lines().last().unwrap_or_default().trim().to_owned();
                    format!("mask pattern {p:?}: {why}")
                })?;
                if re.is_match("") {
                    return Err(format!(
                        "mask pattern {p:?} matches empty text: it must match at least one character"
                    ));
                }
                Ok(re)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { patterns })
    }

    /// [`mask`](Self::mask), or the text as it was when nothing had to be hidden.
    pub fn masked(&self, text: String) -> String {
        self.mask(&text).unwrap_or(text)
    }

    /// The text with card numbers and configured patterns hidden, or `None` when
    /// nothing had to be hidden.
    pub fn mask(&self, text: &str) -> Option<String> {
        let mut changed = false;
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for run in card_runs().find_iter(text) {
            for card in cards_in(run.as_str()) {
                let (start, end) = (run.start() + card.start, run.start() + card.end);
                out.push_str(&text[last..start]);
                let digits = text[start..end]
                    .chars()
                    .filter(char::is_ascii_digit)
                    .count();
                let keep_from = digits - 4;
                let mut seen = 0;
                for c in text[start..end].chars() {
                    if c.is_ascii_digit() {
                        out.push(if seen < keep_from { MASK_DIGIT } else { c });
                        seen += 1;
                    } else {
                        out.push(c);
                    }
                }
                last = end;
                changed = true;
            }
        }
        out.push_str(&text[last..]);
        for pattern in &self.patterns {
            // Only what the pattern matched of the text: a zero-length match (a
            // `\b`, say) hides nothing.
            let mut hidden = String::with_capacity(out.len());
            let mut last = 0;
            for m in pattern.find_iter(&out).filter(|m| !m.is_empty()) {
                hidden.push_str(&out[last..m.start()]);
                hidden.push_str(HIDDEN);
                last = m.end();
            }
            if last > 0 {
                hidden.push_str(&out[last..]);
                out = hidden;
                changed = true;
            }
        }
        changed.then_some(out)
    }
}

/// Where the card numbers are in one run of [`card_runs`], as byte ranges of it:
/// the whole run if it is one; otherwise, from the left, the longest card-shaped
/// stretch of whole groups starting at each group (see the module's header),
/// continuing after it.
fn cards_in(run: &str) -> Vec<std::ops::Range<usize>> {
    let is_card = |s: &str| {
        let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
        (13..=19).contains(&digits.len()) && luhn(&digits)
    };
    if is_card(run) {
        return std::iter::once(0..run.len()).collect();
    }
    // Groups of ASCII digits, as byte ranges of the run.
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    let mut from = None;
    for (i, c) in run.char_indices() {
        if c.is_ascii_digit() {
            from.get_or_insert(i);
        } else if let Some(f) = from.take() {
            groups.push(f..i);
        }
    }
    if let Some(f) = from {
        groups.push(f..run.len());
    }
    let mut cards = Vec::new();
    let mut i = 0;
    while i < groups.len() {
        let mut longest = None;
        let mut digits = 0;
        for j in i..groups.len() {
            digits += groups[j].len();
            if digits > 19 {
                break;
            }
            let shaped =
                j == i || (groups[i..j].iter().all(|g| g.len() >= 4) && groups[j].len() >= 3);
            if digits >= 13 && shaped && is_card(&run[groups[i].start..groups[j].end]) {
                longest = Some(j);
            }
        }
        match longest {
            Some(j) => {
                cards.push(groups[i].start..groups[j].end);
                i = j + 1;
            }
            None => i += 1,
        }
    }
    cards
}

/// The Luhn checksum of a card number, most significant digit first.
fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 {
                    d2 - 9
                } else {
                    d2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cards() -> Masker {
        Masker::new::<&str>(&[]).unwrap()
    }

    #[test]
    fn luhn_valid_card_numbers_are_masked_but_the_last_four() {
        let m = cards();
        assert_eq!(
            m.mask("my card is 4111 1111 1111 1111, thanks").as_deref(),
            Some("my card is •••• •••• •••• 1111, thanks")
        );
        assert_eq!(
            m.mask("4111-1111-1111-1111").as_deref(),
            Some("••••-••••-••••-1111")
        );
        assert_eq!(
            m.mask("5500005555555559").as_deref(),
            Some("••••••••••••5559")
        );
        // 15-digit Amex, 19-digit card.
        assert_eq!(
            m.mask("378282246310005").as_deref(),
            Some("•••••••••••0005")
        );
        assert_eq!(
            m.mask("6304000000000000000 ok").as_deref(),
            Some("•••••••••••••••0000 ok")
        );
        // Two cards in one message.
        assert_eq!(
            m.mask("4111111111111111 or 5500005555555559").as_deref(),
            Some("••••••••••••1111 or ••••••••••••5559")
        );
    }

    #[test]
    fn a_card_number_beside_other_digits_is_still_masked() {
        let m = cards();
        // The security code, the expiry's month, a number before it.
        assert_eq!(
            m.mask("4111111111111111 123").as_deref(),
            Some("••••••••••••1111 123")
        );
        assert_eq!(
            m.mask("5500-0000-0000-0004 12/28").as_deref(),
            Some("••••-••••-••••-0004 12/28")
        );
        assert_eq!(
            m.mask("12 4012888888881881").as_deref(),
            Some("12 ••••••••••••1881")
        );
        assert_eq!(
            m.mask("card 4111 1111 1111 1111 cvv 123").as_deref(),
            Some("card •••• •••• •••• 1111 cvv 123")
        );
        assert_eq!(
            m.mask("4111 1111 1111 1111 737").as_deref(),
            Some("•••• •••• •••• 1111 737")
        );
        // Two cards in one run.
        assert_eq!(
            m.mask("4111111111111111 5500005555555559").as_deref(),
            Some("••••••••••••1111 ••••••••••••5559")
        );
    }

    #[test]
    fn numbers_that_are_not_cards_are_left_alone() {
        let m = cards();
        // Luhn fails.
        assert_eq!(m.mask("4111 1111 1111 1112"), None);
        // Too short, too long.
        assert_eq!(m.mask("order 123456789012"), None);
        assert_eq!(m.mask("ref 41111111111111110000000"), None);
        // Ordinary chat.
        assert_eq!(m.mask("I won 1000 on spin 42 at 10:15"), None);
        assert_eq!(m.mask(""), None);
        // Two spaces break a group: these are two short numbers.
        assert_eq!(m.mask("4111 1111  1111 1111"), None);
        // Short groups are not how card numbers are written: two phone numbers,
        // some of whose stretches pass the Luhn check ("123 45 67 0533 765 43 24").
        assert_eq!(m.mask("call 0532 123 45 67 0533 765 43 24"), None);
        assert_eq!(m.mask("ids 12 345 678 901 234 56"), None);
    }

    #[test]
    fn configured_patterns_are_hidden_and_bad_ones_refused() {
        let m = Masker::new(&[r"\bTR\d{2}(?: ?\d{4}){5} ?\d{2}\b"]).unwrap();
        assert_eq!(
            m.mask("IBAN: TR33 0006 1005 1978 6457 8413 26 please")
                .as_deref(),
            Some("IBAN: [hidden] please")
        );
        assert_eq!(m.mask("no bank details"), None);
        assert!(Masker::new(&["("]).is_err());
    }

    #[test]
    fn blank_lines_and_line_ends_are_dropped_and_empty_matches_refused() {
        // As `PITBOSS_MASK_PATTERNS=$'AB\\d{7}\r\n\n'` splits.
        let m = Masker::new(&["AB\\d{7}\r", "", "  "]).unwrap();
        assert_eq!(
            m.mask("hello AB1234567 world").as_deref(),
            Some("hello [hidden] world")
        );
        assert_eq!(m.mask("hello world"), None, "nothing between the letters");
        for bad in ["x*", "(?:)", "^"] {
            let err = Masker::new(&[bad]).unwrap_err();
            assert!(err.contains("empty text"), "{bad}: {err}");
        }
        // Matching nothing but a place in the text hides nothing.
        let m = Masker::new(&["\\b"]).unwrap();
        assert_eq!(m.mask("hello world"), None);
    }

    #[test]
    fn masking_is_deterministic_and_idempotent() {
        let m = cards();
        let once = m.mask("card 4111111111111111").unwrap();
        assert_eq!(m.mask("card 4111111111111111").unwrap(), once);
        assert_eq!(m.mask(&once), None, "masked text has nothing left to hide");
    }
}
