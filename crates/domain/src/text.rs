//! Text people type that others see: a person's name and the bidirectional controls that must never
//! reach a page. Names are normalised (NFC) and checked against Unicode UTS #39 (the General
//! Security Profile's allowed characters, single script); chat text loses its bidi controls.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;
use unicode_security::{GeneralSecurityProfile, MixedScript};

/// Longest name part, in characters (after normalisation).
pub const MAX_NAME_CHARS: usize = 50;
/// Combining marks allowed on one base letter (Russian needs one, for stress: «е́»; Vietnamese two).
pub const MAX_STACKED_MARKS: usize = 2;

/// True for the characters that change the order text is shown in (Unicode UAX #9): embeddings,
/// overrides, isolates and the implicit marks. `U+202E` turns «gpj.exe» into what looks like
/// «exe.jpg», and in a chat it reverses the messages around it.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` without its bidi controls ([`is_bidi_control`]), so it cannot reorder the text around it.
pub fn without_bidi_controls(s: &str) -> String {
    s.chars().filter(|c| !is_bidi_control(*c)).collect()
}

/// A first or last name: NFC, 1–50 characters, letters joined by single spaces, hyphens or
/// apostrophes; every letter allowed by UTS #39 (which refuses invisible letters such as the
/// Hangul filler U+3164); at most two combining marks on a letter; one script (no Cyrillic name
/// with a Latin «а» in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

/// Why a name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty, or longer than [`MAX_NAME_CHARS`].
    #[error("a name has 1 to 50 characters")]
    Length,
    /// A character that is not a letter, a mark or a separator (digits, symbols, invisible,
    /// zero-width and bidi characters), or a separator out of place.
    #[error("a name has letters, spaces, hyphens and apostrophes only")]
    Character,
    /// More than [`MAX_STACKED_MARKS`] combining marks on one letter.
    #[error("too many accents on one letter")]
    StackedMarks,
    /// Letters of more than one script.
    #[error("a name is written in one alphabet")]
    MixedScript,
}

impl PersonName {
    /// Parses a name as typed.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let s: String = raw.trim().nfc().collect();
        let n = s.chars().count();
        if !(1..=MAX_NAME_CHARS).contains(&n) {
            return Err(NameError::Length);
        }
        let mut prev: Option<char> = None;
        let mut marks = 0;
        for c in s.chars() {
            if is_combining_mark(c) {
                // A mark sits on a letter (not on a separator, not first), and only a few stack.
                marks += 1;
                if !prev.is_some_and(|p| p.is_alphabetic() || is_combining_mark(p)) || !c.identifier_allowed() {
                    return Err(NameError::Character);
                }
                if marks > MAX_STACKED_MARKS {
                    return Err(NameError::StackedMarks);
                }
            } else if c.is_alphabetic() {
                if !c.identifier_allowed() {
                    return Err(NameError::Character);
                }
                marks = 0;
            } else if matches!(c, ' ' | '-' | '\'') {
                // Between letters only: no leading, trailing or doubled separators.
                if !prev.is_some_and(|p| p.is_alphabetic() || is_combining_mark(p)) {
                    return Err(NameError::Character);
                }
                marks = 0;
            } else {
                return Err(NameError::Character);
            }
            prev = Some(c);
        }
        if !prev.is_some_and(|p| p.is_alphabetic() || is_combining_mark(p)) {
            return Err(NameError::Character);
        }
        if !s.as_str().is_single_script() {
            return Err(NameError::MixedScript);
        }
        Ok(Self(s))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(s: &str) -> String {
        PersonName::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}")).into_string()
    }

    #[test]
    fn real_names_pass_and_are_normalised() {
        assert_eq!(ok("  Иван "), "Иван");
        assert_eq!(ok("Анна-Мария"), "Анна-Мария");
        assert_eq!(ok("Салтыков-Щедрин"), "Салтыков-Щедрин");
        assert_eq!(ok("Д'Артаньян"), "Д'Артаньян");
        assert_eq!(ok("Алёна"), "Алёна");
        assert_eq!(ok("O'Brien"), "O'Brien");
        assert_eq!(ok("Nguyễn"), "Nguyễn");
        assert_eq!(ok("Мария Тереза"), "Мария Тереза");
        // «ё» typed as «е» + U+0308 is stored composed (NFC), as a keyboard types it.
        assert_eq!(ok("Але\u{0308}на"), "Алёна");
        // A stress mark (one combining acute) is kept.
        assert_eq!(ok("Ве\u{0301}ра"), "Ве\u{0301}ра");
    }

    /// The characters of issue 20's report: all refused.
    #[test]
    fn invisible_bidi_zero_width_and_stacked_characters_are_refused() {
        assert_eq!(PersonName::parse("\u{3164}"), Err(NameError::Character), "Hangul filler, looks blank");
        assert_eq!(PersonName::parse("Иван\u{3164}"), Err(NameError::Character));
        assert_eq!(PersonName::parse("\u{FFA0}"), Err(NameError::Character), "halfwidth Hangul filler");
        assert_eq!(PersonName::parse("\u{115F}\u{1160}"), Err(NameError::Character));
        assert_eq!(PersonName::parse("\u{2800}"), Err(NameError::Character), "braille blank");
        assert_eq!(PersonName::parse("Ив\u{202E}нав"), Err(NameError::Character), "right-to-left override");
        assert_eq!(PersonName::parse("\u{2067}Иван"), Err(NameError::Character), "isolate");
        assert_eq!(PersonName::parse("Ив\u{200B}ан"), Err(NameError::Character), "zero-width space");
        assert_eq!(PersonName::parse("Ив\u{200D}ан"), Err(NameError::Character), "zero-width joiner");
        assert_eq!(PersonName::parse("Ив\u{00AD}ан"), Err(NameError::Character), "soft hyphen");
        assert_eq!(PersonName::parse("И\u{0301}\u{0301}\u{0301}ван"), Err(NameError::StackedMarks), "zalgo");
        assert_eq!(PersonName::parse("\u{0301}Иван"), Err(NameError::Character), "a mark on nothing");
        assert_eq!(PersonName::parse("   "), Err(NameError::Length));
        assert_eq!(PersonName::parse(&"я".repeat(51)), Err(NameError::Length));
        assert_eq!(PersonName::parse("-"), Err(NameError::Character), "no letter");
        assert_eq!(PersonName::parse("' -"), Err(NameError::Character));
        assert_eq!(PersonName::parse("Иван  Петров"), Err(NameError::Character), "two spaces");
        assert_eq!(PersonName::parse("R2D2"), Err(NameError::Character));
        assert_eq!(PersonName::parse("<b>"), Err(NameError::Character));
    }

    /// UTS #39 §5.1 mixed-script detection: a Cyrillic name with a Latin letter is refused.
    #[test]
    fn mixed_script_confusables_are_refused() {
        // «Иванов» with a Latin «a» (U+0061) and with a Latin «o» (U+006F).
        assert_eq!(PersonName::parse("Ивaнов"), Err(NameError::MixedScript));
        assert_eq!(PersonName::parse("Иванoв"), Err(NameError::MixedScript));
        // «Paypal» with a Cyrillic «а».
        assert_eq!(PersonName::parse("Pаypal"), Err(NameError::MixedScript));
        assert_eq!(PersonName::parse("Анна Mary"), Err(NameError::MixedScript));
    }

    #[test]
    fn bidi_controls_are_removed() {
        assert_eq!(without_bidi_controls("a\u{202E}b\u{2066}c\u{2069}\u{200F}"), "abc");
        assert!(!is_bidi_control('a'));
    }

    proptest! {
        /// Whatever is typed, an accepted name is NFC, trimmed, within the length, free of bidi
        /// and invisible characters, has a letter, and parses to itself again.
        #[test]
        fn accepted_names_are_clean_and_stable(raw in "\\PC{0,60}|[ \\-'а-яА-ЯёЁa-zA-Z\u{0300}-\u{0303}\u{200B}-\u{200F}\u{202A}-\u{202E}\u{3164}]{0,20}") {
            if let Ok(name) = PersonName::parse(&raw) {
                let s = name.as_str();
                prop_assert_eq!(s.nfc().collect::<String>(), s);
                prop_assert!((1..=MAX_NAME_CHARS).contains(&s.chars().count()));
                prop_assert!(s.chars().any(char::is_alphabetic));
                let invisible = |c: char| is_bidi_control(c) || c == '\u{3164}' || ('\u{200B}'..='\u{200D}').contains(&c);
                prop_assert!(!s.chars().any(invisible), "invisible character in {:?}", s);
                prop_assert!(s.is_single_script());
                prop_assert_eq!(PersonName::parse(s), Ok(name.clone()));
            }
        }

        /// Bidi controls never survive, and nothing else is removed.
        #[test]
        fn removing_bidi_controls_removes_only_them(raw in "\\PC{0,40}|[a-zа-я\u{061C}\u{200E}\u{200F}\u{202A}-\u{202E}\u{2066}-\u{2069}]{0,20}") {
            let out = without_bidi_controls(&raw);
            prop_assert!(!out.chars().any(is_bidi_control));
            prop_assert_eq!(out.chars().count(), raw.chars().filter(|c| !is_bidi_control(*c)).count());
        }
    }
}
