//! Сферум: the educational space inside MAX.
//!
//! An educational profile belongs to a MAX account. The diary, after a link, provisions it with
//! verified school data (role, school, classes, distance lessons) through the provisioning API; the
//! profile then joins its class chats. Unlinking detaches it: it leaves the chats and loses the school
//! data the link carried. This crate holds those rules; HTTP lives in `max`.
//!
//! Сферум's tables live in MAX's database, but its queries read and write only them: whatever MAX
//! knows (names, pairwise subjects) is asked through [`Directory`], which MAX implements.

/// `parse`, `Display` and `TryFrom<String>` (for `#[sqlx(try_from = "String")]`) of an enum stored
/// by the name its `as_str` gives.
macro_rules! stored_kind {
    ($t:ident: $($v:ident),+) => {
        impl $t {
            /// Parses the stored form.
            pub fn parse(s: &str) -> Option<Self> {
                [$($t::$v),+].into_iter().find(|k| k.as_str() == s)
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl TryFrom<String> for $t {
            type Error = $crate::UnknownKind;
            fn try_from(s: String) -> Result<Self, $crate::UnknownKind> {
                $t::parse(&s).ok_or($crate::UnknownKind(s))
            }
        }
    };
}

mod chats;
mod directory;
mod lessons;
mod messages;
mod people;
mod profiles;
#[cfg(test)]
mod tests;

pub use chats::*;
pub use directory::*;
pub use lessons::*;
pub use messages::*;
pub use people::*;
pub use profiles::*;

use edulink_store::{Db, Migration, StoreError};

/// Сферум's tables, applied to the MAX database after MAX's own (their rows hang off MAX's accounts
/// by foreign key, so an account's Сферум data goes with the account).
pub const MIGRATIONS: &[Migration] =
    edulink_store::migrations![1001 => "1001_sferum", 1002 => "1002_chats_lessons", 1003 => "1003_lesson_chat"];

/// A stored kind Сферум does not know (a newer version wrote it, or the row is damaged).
#[derive(Debug, thiserror::Error)]
#[error("unknown stored kind {0:?}")]
pub struct UnknownKind(pub String);

/// Everything the «Сферум в MAX» page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overview {
    /// The profile, if the account has one.
    pub profile: Option<Profile>,
    /// Its chats.
    pub chats: Vec<Chat>,
    /// Its upcoming distance lessons.
    pub lessons: Vec<Lesson>,
}

/// The key under which Сферум keeps a diary's object: ids of different diaries never collide.
pub fn key(client_id: &str, id: &str) -> String {
    format!("{client_id}:{id}")
}

/// The name as people search for it: lower case, single spaces.
pub fn search_name(first: &str, last: &str) -> String {
    format!("{first} {last}").to_lowercase().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What the «Сферум в MAX» page shows for an account: its profile, chats and upcoming lessons.
pub async fn overview(db: &Db, dir: &impl Directory, account_id: &str, now: i64) -> Result<Overview, StoreError> {
    let profile = profile(db, account_id).await?;
    let chats = chats_of(db, dir, account_id).await?;
    let lessons = upcoming_lessons(db, account_id, now).await?;
    Ok(Overview { profile, chats, lessons })
}
