//! Educational profiles: creation, provisioning by a diary (school data, class chats, lessons),
//! detaching on unlink, and the safe-mode facts the chat rules need.

use crate::chats::{ChatKind, announcements_key, ensure_chat, join_chat};
use crate::lessons::upsert_lesson;
use crate::{Directory, key, search_name};
use edulink_domain::provisioning::{ProvisionProfile, ProvisionResult, Role};
use edulink_domain::sferum::Person;
use edulink_store::{Db, StoreError, Tx, sqlx};
use std::collections::HashMap;

/// An educational profile as the Сферум page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Student or teacher.
    pub role: Role,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// School name, once the diary confirmed it.
    pub school_name: Option<String>,
    /// The diary client that confirmed the profile.
    pub confirmed_by: Option<String>,
    /// Safe mode (on for students).
    pub safe_mode: bool,
}

#[derive(sqlx::FromRow)]
struct ProfileRow {
    role: String,
    first_name: String,
    last_name: String,
    school_name: Option<String>,
    confirmed_by: Option<String>,
    safe_mode: i64,
}

impl From<ProfileRow> for Profile {
    fn from(r: ProfileRow) -> Self {
        Profile {
            role: Role::parse(&r.role).unwrap_or(Role::Student),
            first_name: r.first_name,
            last_name: r.last_name,
            school_name: r.school_name,
            confirmed_by: r.confirmed_by,
            safe_mode: r.safe_mode != 0,
        }
    }
}

/// The profile of `account_id`, if it has one.
pub async fn profile(db: &Db, account_id: &str) -> Result<Option<Profile>, StoreError> {
    let row: Option<ProfileRow> = sqlx::query_as(
        "SELECT role, first_name, last_name, school_name, confirmed_by, safe_mode FROM sferum_profiles \
         WHERE account_id = $1",
    )
    .bind(account_id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(Profile::from))
}

/// Creates an unconfirmed student profile for an account that has none (registration in Сферум
/// without a diary, as the demo's pre-existing profile), under the account's name.
pub async fn ensure_profile(db: &Db, account_id: &str, first: &str, last: &str, now: i64) -> Result<(), StoreError> {
    db.execute(
        sqlx::query(
            "INSERT INTO sferum_profiles (account_id, role, first_name, last_name, created_at, updated_at, \
           safe_mode, search_name) \
         VALUES ($1, 'student', $2, $3, $4, $4, 1, $5) ON CONFLICT (account_id) DO NOTHING",
        )
        .bind(account_id)
        .bind(first)
        .bind(last)
        .bind(now)
        .bind(search_name(first, last)),
    )
    .await?;
    Ok(())
}

/// True when the account already has an educational profile.
pub async fn has_profile(db: &Db, account_id: &str) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sferum_profiles WHERE account_id = $1")
        .bind(account_id)
        .fetch_one(db.pool())
        .await?;
    Ok(n > 0)
}

/// The diary client that confirmed the profile of `account_id`, if any, read in the caller's
/// transaction (so a provisioning call can tell a first attach from a repeat).
pub async fn confirmed_by_in(tx: &mut Tx, account_id: &str) -> Result<Option<String>, StoreError> {
    let row: Option<Option<String>> =
        sqlx::query_scalar("SELECT confirmed_by FROM sferum_profiles WHERE account_id = $1")
            .bind(account_id)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(row.flatten())
}

/// Applies a provisioning call: the profile takes the diary's verified data, joins the chats of its
/// classes and the school's announcements channel (and leaves this diary's chats it no longer belongs
/// to), and the classes' distance lessons are stored (each by its revision). Idempotent: the same
/// call twice gives the same state.
pub async fn provision(
    db: &Db,
    client_id: &str,
    account_id: &str,
    p: &ProvisionProfile,
    now: i64,
) -> Result<ProvisionResult, StoreError> {
    let mut tx = db.begin().await?;
    let result = provision_in(&mut tx, client_id, account_id, p, now).await?;
    tx.commit().await?;
    Ok(result)
}

/// [`provision`] inside the caller's transaction (which may also record the audit and notification).
pub async fn provision_in(
    tx: &mut Tx,
    client_id: &str,
    account_id: &str,
    p: &ProvisionProfile,
    now: i64,
) -> Result<ProvisionResult, StoreError> {
    let school_key = key(client_id, &p.school.id);
    sqlx::query(
        "INSERT INTO sferum_profiles (account_id, role, first_name, last_name, school_key, school_name, \
           confirmed_by, confirmed_at, created_at, updated_at, safe_mode, search_name) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8, $9, $10) \
         ON CONFLICT (account_id) DO UPDATE SET role = excluded.role, first_name = excluded.first_name, \
           last_name = excluded.last_name, school_key = excluded.school_key, school_name = excluded.school_name, \
           confirmed_by = excluded.confirmed_by, confirmed_at = excluded.confirmed_at, updated_at = excluded.updated_at, \
           safe_mode = excluded.safe_mode, search_name = excluded.search_name",
    )
    .bind(account_id)
    .bind(p.role.as_str())
    .bind(&p.first_name)
    .bind(&p.last_name)
    .bind(&school_key)
    .bind(&p.school.name)
    .bind(client_id)
    .bind(now)
    .bind(i64::from(p.role == Role::Student))
    .bind(search_name(&p.first_name, &p.last_name))
    .execute(&mut *tx)
    .await?;

    let channel = ensure_chat(
        tx,
        &school_key,
        &announcements_key(&school_key),
        ChatKind::Announcements,
        &p.school.name,
        None,
        now,
    )
    .await?;
    join_chat(tx, &channel, account_id, p.role, now).await?;
    let mut chat_ids = vec![channel];
    for class in &p.classes {
        let class_key = key(client_id, &class.id);
        let chat_id = ensure_chat(tx, &school_key, &class_key, ChatKind::Class, &class.name, None, now).await?;
        join_chat(tx, &chat_id, account_id, p.role, now).await?;
        // Lessons this call brings are the class's current state; changes later arrive one by one
        // (`push_lesson`), each announced in the class chat. These are not: the class has seen them.
        // One read per class: in the steady state every lesson is known and nothing is written.
        let known: HashMap<String, i64> =
            sqlx::query_as::<_, (String, i64)>("SELECT id, revision FROM sferum_lessons WHERE class_key = $1")
                .bind(&class_key)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        for l in p.lessons.iter().filter(|l| l.class_id == class.id) {
            if known.get(&key(client_id, &l.id)).is_some_and(|r| *r >= l.revision) {
                continue;
            }
            upsert_lesson(tx, client_id, &school_key, &class_key, &chat_id, l, now).await?;
        }
        chat_ids.push(chat_id);
    }

    // Leave this diary's chats that are no longer the profile's.
    let current: Vec<String> = sqlx::query_scalar(
        "SELECT m.chat_id FROM sferum_members m JOIN sferum_chats c ON c.id = m.chat_id \
         WHERE m.account_id = $1 AND c.school_key LIKE $2",
    )
    .bind(account_id)
    .bind(format!("{client_id}:%"))
    .fetch_all(&mut *tx)
    .await?;
    for chat in current.iter().filter(|c| !chat_ids.contains(c)) {
        sqlx::query("DELETE FROM sferum_members WHERE chat_id = $1 AND account_id = $2")
            .bind(chat)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
    }
    Ok(ProvisionResult { chats: chat_ids })
}

/// Memberships of account `$1` in chats of schools keyed `$2` (`<client>:%`) and in direct chats,
/// deleted. The chats are found through the account's own memberships, not by scanning every chat.
pub const LEAVE_DIARY_CHATS: &str = "DELETE FROM sferum_members WHERE account_id = $1 AND chat_id IN \
     (SELECT c.id FROM sferum_members m JOIN sferum_chats c ON c.id = m.chat_id \
      WHERE m.account_id = $1 AND (c.school_key LIKE $2 OR c.kind = 'direct'))";

/// Detaches the profile from the diary `client_id`: it leaves every chat at once (that diary's class
/// and lesson chats, the announcements channel and its direct conversations) and loses the school
/// data and names the link carried (it falls back to the MAX account's own name, asked of `dir`).
/// Its past messages stay, shown under a neutral label. Returns whether anything was attached.
pub async fn detach(
    db: &Db,
    dir: &impl Directory,
    client_id: &str,
    account_id: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let own = dir.names(&[account_id.to_owned()]).await?.remove(account_id);
    let mut tx = db.begin().await?;
    let detached = detach_in(&mut tx, own.as_ref(), client_id, account_id, now).await?;
    tx.commit().await?;
    Ok(detached)
}

/// [`detach`] inside the caller's transaction (which also ends the grant and records the audit and
/// notification), with the account's own name `own` read beforehand.
pub async fn detach_in(
    tx: &mut Tx,
    own: Option<&crate::Name>,
    client_id: &str,
    account_id: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let left = sqlx::query(LEAVE_DIARY_CHATS)
        .bind(account_id)
        .bind(format!("{client_id}:%"))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    // A profile belongs to an existing account, so without a name there is no profile to reset.
    let reset = match own {
        Some(name) => sqlx::query(
            "UPDATE sferum_profiles SET school_key = NULL, school_name = NULL, confirmed_by = NULL, \
                   confirmed_at = NULL, role = 'student', safe_mode = 1, updated_at = $3, \
                   first_name = $4, last_name = $5, search_name = $6 \
                 WHERE account_id = $1 AND confirmed_by = $2",
        )
        .bind(account_id)
        .bind(client_id)
        .bind(now)
        .bind(&name.first)
        .bind(&name.last)
        .bind(search_name(&name.first, &name.last))
        .execute(&mut *tx)
        .await?
        .rows_affected(),
        None => 0,
    };
    Ok(left + reset > 0)
}

/// The safe-mode facts of an account (a MAX account with no profile is a person with no role).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Facts {
    /// Role, if the account has a profile.
    pub role: Option<Role>,
    /// School key, if a diary confirmed one.
    pub school_key: Option<String>,
    /// Safe mode.
    pub safe_mode: bool,
}

impl Facts {
    /// As the safe-mode rules see it.
    pub fn person(&self) -> Person<'_> {
        Person { role: self.role, school: self.school_key.as_deref(), safe_mode: self.safe_mode }
    }
}

/// A profile's safe-mode columns.
#[derive(sqlx::FromRow)]
pub(crate) struct FactsRow {
    pub(crate) role: String,
    pub(crate) school_key: Option<String>,
    pub(crate) safe_mode: i64,
}

impl From<FactsRow> for Facts {
    fn from(r: FactsRow) -> Self {
        Facts { role: Role::parse(&r.role), school_key: r.school_key, safe_mode: r.safe_mode != 0 }
    }
}

/// The safe-mode facts of `account_id`.
pub async fn facts(db: &Db, account_id: &str) -> Result<Facts, StoreError> {
    let row: Option<FactsRow> =
        sqlx::query_as("SELECT role, school_key, safe_mode FROM sferum_profiles WHERE account_id = $1")
            .bind(account_id)
            .fetch_optional(db.pool())
            .await?;
    Ok(row.map(Facts::from).unwrap_or_default())
}
