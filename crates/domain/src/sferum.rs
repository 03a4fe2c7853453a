//! Rules of Сферум's chats and distance lessons: what a message may hold, when «Подключиться» is
//! open, and what safe mode lets other people see of a student and do to them.

use crate::provisioning::Role;
use unicode_normalization::UnicodeNormalization;

/// The longest message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// «Подключиться» opens this many seconds before a lesson starts.
pub const JOIN_EARLY_SECS: i64 = 10 * 60;

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Nothing but whitespace.
    #[error("empty message")]
    Empty,
    /// Longer than [`MAX_MESSAGE_CHARS`].
    #[error("message too long")]
    TooLong,
}

/// The text of a chat message: trimmed, line breaks normalised to `\n`, other control characters
/// removed, 1 to [`MAX_MESSAGE_CHARS`] characters. It is plain text: pages escape it and scripts
/// insert it as text, so markup in it is shown, never interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText(String);

impl MessageText {
    /// Parses what a member typed.
    pub fn parse(raw: &str) -> Result<Self, MessageError> {
        let cleaned: String = raw
            .replace("\r\n", "\n")
            .chars()
            .map(|c| if c == '\r' { '\n' } else { c })
            // Control characters go, and so do bidi controls: one «U+202E» would reverse the text
            // around it in the chat (issue 20). NFC, so equal texts are stored equal.
            .filter(|c| *c == '\n' || *c == '\t' || !(c.is_control() || crate::text::is_bidi_control(*c)))
            .nfc()
            .collect();
        let text = cleaned.trim();
        if text.is_empty() {
            return Err(MessageError::Empty);
        }
        if text.chars().count() > MAX_MESSAGE_CHARS {
            return Err(MessageError::TooLong);
        }
        Ok(Self(text.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where «Подключиться» stands for a lesson at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinWindow {
    /// Too early: it opens at the given instant (Unix seconds).
    NotYet {
        /// When it opens.
        opens_at: i64,
    },
    /// Open: from [`JOIN_EARLY_SECS`] before the start to the end.
    Open,
    /// The lesson is over.
    Over,
}

impl JoinWindow {
    /// The window of a lesson from `starts_at` to `ends_at` at `now` (all Unix seconds).
    pub fn at(starts_at: i64, ends_at: i64, now: i64) -> Self {
        let opens_at = starts_at - JOIN_EARLY_SECS;
        if now < opens_at {
            JoinWindow::NotYet { opens_at }
        } else if now >= ends_at {
            JoinWindow::Over
        } else {
            JoinWindow::Open
        }
    }

    /// True when a member may join now.
    pub fn is_open(self) -> bool {
        self == JoinWindow::Open
    }
}

/// A person in Сферум as the safe-mode rules see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Person<'a> {
    /// Their role; `None` for a MAX account with no educational profile.
    pub role: Option<Role>,
    /// Their school (as confirmed by a diary); `None` when no diary confirmed one.
    pub school: Option<&'a str>,
    /// Safe mode is on (Сферум turns it on for every student).
    pub safe_mode: bool,
}

impl Person<'_> {
    /// A pupil under safe mode: the person the rules protect.
    pub fn protected(&self) -> bool {
        self.safe_mode && self.role == Some(Role::Student)
    }

    fn same_school(&self, other: &Person<'_>) -> bool {
        matches!((self.school, other.school), (Some(a), Some(b)) if a == b)
    }
}

/// Whether `viewer` may find `target` (by phone or by name) and see their name and school.
///
/// A protected pupil is visible only to people of their own school; so a pupil never sees the
/// personal data of pupils of other schools, and nobody outside the school finds a pupil by phone.
pub fn can_see(viewer: &Person<'_>, target: &Person<'_>) -> bool {
    !target.protected() || viewer.same_school(target)
}

/// Whether `sender` may start a direct conversation with `target`. `share_chat` says whether the two
/// are members of a common class or lesson chat (the announcements channel does not count: every
/// pupil of the school reads it). A protected pupil is written to, and writes, only within their chats.
pub fn can_message(sender: &Person<'_>, target: &Person<'_>, share_chat: bool) -> bool {
    if !can_see(sender, target) || !can_see(target, sender) {
        return false;
    }
    if sender.protected() || target.protected() { share_chat } else { true }
}

/// Whether a member with `role` may post to a chat of `kind`: everybody posts in class, lesson and
/// direct chats; only teachers post in the school's announcements channel.
pub fn can_post(kind: &str, role: Role) -> bool {
    kind != "announcements" || role == Role::Teacher
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn message_text_is_trimmed_and_bounded() {
        assert_eq!(MessageText::parse("  привет \r\n мир ").unwrap().as_str(), "привет \n мир");
        assert_eq!(MessageText::parse(" \n\t ").unwrap_err(), MessageError::Empty);
        assert_eq!(MessageText::parse("\u{0}\u{7}").unwrap_err(), MessageError::Empty);
        assert!(MessageText::parse(&"я".repeat(MAX_MESSAGE_CHARS)).is_ok());
        assert_eq!(MessageText::parse(&"я".repeat(MAX_MESSAGE_CHARS + 1)).unwrap_err(), MessageError::TooLong);
        // Markup is kept as text; escaping is the page's job.
        assert_eq!(MessageText::parse("<b>x</b>").unwrap().as_str(), "<b>x</b>");
    }

    /// Issue 20: a message kept its U+202E and reversed what followed it in the chat.
    #[test]
    fn message_text_loses_bidi_controls_and_is_nfc() {
        let t = MessageText::parse("привет \u{202E}мир\u{202C} \u{2066}x\u{2069}\u{200F}").unwrap();
        assert_eq!(t.as_str(), "привет мир x");
        assert_eq!(MessageText::parse("\u{202E}\u{202E}").unwrap_err(), MessageError::Empty);
        assert_eq!(MessageText::parse("е\u{0308}ж").unwrap().as_str(), "ёж");
    }

    #[test]
    fn join_window_opens_ten_minutes_early_and_closes_at_the_end() {
        let (start, end) = (10_000, 12_700);
        assert_eq!(JoinWindow::at(start, end, start - 601), JoinWindow::NotYet { opens_at: start - 600 });
        assert_eq!(JoinWindow::at(start, end, start - 600), JoinWindow::Open);
        assert_eq!(JoinWindow::at(start, end, end - 1), JoinWindow::Open);
        assert_eq!(JoinWindow::at(start, end, end), JoinWindow::Over);
    }

    const PUPIL_A: Person<'static> = Person { role: Some(Role::Student), school: Some("s1"), safe_mode: true };
    const PUPIL_A2: Person<'static> = Person { role: Some(Role::Student), school: Some("s1"), safe_mode: true };
    const PUPIL_B: Person<'static> = Person { role: Some(Role::Student), school: Some("s2"), safe_mode: true };
    const TEACHER_B: Person<'static> = Person { role: Some(Role::Teacher), school: Some("s2"), safe_mode: false };
    const STRANGER: Person<'static> = Person { role: None, school: None, safe_mode: false };
    const UNCONFIRMED: Person<'static> = Person { role: Some(Role::Student), school: None, safe_mode: true };

    #[test]
    fn safe_mode_hides_pupils_outside_their_school() {
        assert!(can_see(&PUPIL_A2, &PUPIL_A));
        assert!(!can_see(&PUPIL_B, &PUPIL_A));
        assert!(!can_see(&TEACHER_B, &PUPIL_A));
        assert!(!can_see(&STRANGER, &PUPIL_A));
        assert!(!can_see(&UNCONFIRMED, &UNCONFIRMED), "no school is nobody's school");
        // Adults stay findable.
        assert!(can_see(&PUPIL_A, &TEACHER_B));
        assert!(can_see(&STRANGER, &TEACHER_B));
    }

    #[test]
    fn safe_mode_limits_direct_messages_to_shared_chats() {
        assert!(can_message(&PUPIL_A2, &PUPIL_A, true));
        assert!(!can_message(&PUPIL_A2, &PUPIL_A, false));
        assert!(!can_message(&STRANGER, &PUPIL_A, true));
        assert!(!can_message(&PUPIL_A, &TEACHER_B, false), "a pupil writes only within their chats");
        assert!(can_message(&STRANGER, &TEACHER_B, false));
    }

    #[test]
    fn only_teachers_post_announcements() {
        assert!(can_post("announcements", Role::Teacher));
        assert!(!can_post("announcements", Role::Student));
        assert!(can_post("class", Role::Student));
    }

    fn person() -> impl Strategy<Value = (Option<Role>, Option<u8>, bool)> {
        (
            prop_oneof![Just(None), Just(Some(Role::Student)), Just(Some(Role::Teacher))],
            prop_oneof![Just(None), (0u8..3).prop_map(Some)],
            any::<bool>(),
        )
    }

    proptest! {
        /// Whatever the two people are, a protected pupil is never visible to, nor written to by,
        /// anyone from another school (or with no school), and visibility is what messaging needs.
        #[test]
        fn protected_pupils_never_leak_across_schools(a in person(), b in person(), share in any::<bool>()) {
            let names = ["s0", "s1", "s2"];
            let mk = |(role, school, safe): (Option<Role>, Option<u8>, bool)| Person {
                role, school: school.map(|i| names[i as usize]), safe_mode: safe,
            };
            let (x, y) = (mk(a), mk(b));
            let same = x.school.is_some() && x.school == y.school;
            if y.protected() && !same {
                prop_assert!(!can_see(&x, &y));
                prop_assert!(!can_message(&x, &y, share));
            }
            if can_message(&x, &y, share) {
                prop_assert!(can_see(&x, &y) && can_see(&y, &x));
            }
        }
    }
}
