//! Сферум: the educational space inside MAX.
//!
//! An educational profile belongs to a MAX account. The diary, after a link, provisions it with
//! verified school data (role, school, classes, distance lessons) through the provisioning API; the
//! profile then joins its class chats. Unlinking detaches it: it leaves the chats and loses the school
//! data the link carried. This crate holds those rules over the MAX database; HTTP lives in `max`.

use edulink_domain::crypto::new_id;
use edulink_domain::provisioning::{self, LessonPush, ProvisionProfile, ProvisionResult, Role};
use edulink_domain::sferum::Person;
use edulink_store::{Db, Migration, Row, StoreError, sqlx};

mod chats;
pub use chats::*;

/// Сферум's tables, applied to the MAX database after MAX's own.
pub const MIGRATIONS: &[Migration] =
    edulink_store::migrations![1001 => "1001_sferum", 1002 => "1002_chats_lessons", 1003 => "1003_lesson_chat"];

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

/// A chat the profile is a member of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    /// Chat id.
    pub id: String,
    /// Title, e.g. «7 А»; for a direct conversation, the other person's name.
    pub title: String,
    /// `class`, `announcements`, `lesson` or `direct`.
    pub kind: String,
    /// Number of members.
    pub members: i64,
}

/// A distance lesson visible to the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lesson {
    /// Сферум's key of the lesson (`<client>:<diary lesson id>`).
    pub key: String,
    /// Subject.
    pub subject: String,
    /// Teacher's name.
    pub teacher: String,
    /// The class chat title.
    pub class_title: String,
    /// Start, Unix seconds.
    pub starts_at: i64,
    /// End, Unix seconds.
    pub ends_at: i64,
    /// The call link.
    pub call_url: Option<String>,
    /// Cancelled by the school.
    pub cancelled: bool,
    /// No longer a distance lesson: held in the classroom.
    pub in_class: bool,
    /// The lesson's own chat.
    pub chat_id: Option<String>,
    /// This profile has joined it («Подключиться»).
    pub joined: bool,
}

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

/// Creates an unconfirmed student profile for an account that has none (registration in Сферум
/// without a diary, as the demo's pre-existing profile).
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

/// Creates (or renames) the chat `class_key` of `school_key` and returns its id.
async fn ensure_chat(
    tx: &mut edulink_store::Tx,
    school_key: &str,
    class_key: &str,
    kind: &str,
    title: &str,
    parent_id: Option<&str>,
    now: i64,
) -> Result<String, StoreError> {
    // Every student of a class after the first finds the chat as it is: read it, and write only
    // what is missing or renamed (an upsert rewrote the row, and its pages, on every provisioning).
    let existing: Option<(String, String)> =
        sqlx::query_as("SELECT id, title FROM sferum_chats WHERE school_key = $1 AND class_key = $2")
            .bind(school_key)
            .bind(class_key)
            .fetch_optional(&mut *tx)
            .await?;
    match existing {
        Some((id, current)) if current == title => return Ok(id),
        Some((id, _)) => {
            sqlx::query("UPDATE sferum_chats SET title = $1 WHERE id = $2")
                .bind(title)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            return Ok(id);
        }
        None => {}
    }
    // New: another instance may create it at the same moment (PostgreSQL), so insert if still
    // absent and read back whichever row won.
    sqlx::query(
        "INSERT INTO sferum_chats (id, school_key, class_key, kind, title, parent_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (school_key, class_key) DO NOTHING",
    )
    .bind(new_id())
    .bind(school_key)
    .bind(class_key)
    .bind(kind)
    .bind(title)
    .bind(parent_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(sqlx::query_scalar("SELECT id FROM sferum_chats WHERE school_key = $1 AND class_key = $2")
        .bind(school_key)
        .bind(class_key)
        .fetch_one(&mut *tx)
        .await?)
}

async fn join_chat(
    tx: &mut edulink_store::Tx,
    chat_id: &str,
    account_id: &str,
    role: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sferum_members (chat_id, account_id, role, joined_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (chat_id, account_id) DO UPDATE SET role = excluded.role \
         WHERE sferum_members.role <> excluded.role",
    )
    .bind(chat_id)
    .bind(account_id)
    .bind(role)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The key of a school's announcements channel among its chats.
fn announcements_key(school_key: &str) -> String {
    format!("{school_key}#announcements")
}

/// What a lesson change means to the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LessonChange {
    /// A new distance lesson (or one restored after a cancellation).
    Created,
    /// Another time.
    Moved,
    /// Cancelled.
    Cancelled,
    /// Held in the classroom instead.
    InClass,
    /// Details changed (subject, teacher, call link).
    Updated,
}

impl LessonChange {
    /// The kind of the system message that tells the class, if any.
    pub fn message_kind(self) -> Option<&'static str> {
        match self {
            LessonChange::Created => Some("lesson_created"),
            LessonChange::Moved => Some("lesson_moved"),
            LessonChange::Cancelled => Some("lesson_cancelled"),
            LessonChange::InClass => Some("lesson_in_class"),
            LessonChange::Updated => None,
        }
    }
}

/// Stores a lesson of the class chat `class_chat` unless Сферум already has its revision or a newer
/// one; creates its own chat on first sight. The revision guard is part of the upsert itself, so two
/// deliveries racing each other apply once. Returns what changed, or `None` when nothing did.
async fn upsert_lesson(
    tx: &mut edulink_store::Tx,
    client_id: &str,
    school_key: &str,
    class_key: &str,
    class_chat: &str,
    l: &provisioning::Lesson,
    now: i64,
) -> Result<Option<LessonChange>, StoreError> {
    let lesson_key = key(client_id, &l.id);
    let prev: Option<(i64, i64, i64, i64, Option<String>)> =
        sqlx::query_as("SELECT starts_at, ends_at, cancelled, revision, chat_id FROM sferum_lessons WHERE id = $1")
            .bind(&lesson_key)
            .fetch_optional(&mut *tx)
            .await?;
    if prev.as_ref().is_some_and(|p| p.3 >= l.revision) {
        // Seen already: no write at all (the guard in the upsert below settles races).
        return Ok(None);
    }
    let chat_id = match prev.as_ref().and_then(|p| p.4.clone()) {
        Some(id) => id,
        None => {
            ensure_chat(tx, school_key, &format!("{lesson_key}#lesson"), "lesson", &l.subject, Some(class_chat), now)
                .await?
        }
    };
    let applied = sqlx::query(
        "INSERT INTO sferum_lessons (id, class_key, subject, teacher, starts_at, ends_at, updated_at, chat_id, \
           call_url, cancelled, revision) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (id) DO UPDATE SET class_key = excluded.class_key, subject = excluded.subject, \
           teacher = excluded.teacher, starts_at = excluded.starts_at, ends_at = excluded.ends_at, \
           updated_at = excluded.updated_at, chat_id = excluded.chat_id, call_url = excluded.call_url, \
           cancelled = excluded.cancelled, revision = excluded.revision \
         WHERE sferum_lessons.revision < excluded.revision",
    )
    .bind(&lesson_key)
    .bind(class_key)
    .bind(&l.subject)
    .bind(&l.teacher)
    .bind(l.starts_at)
    .bind(l.ends_at)
    .bind(now)
    .bind(&chat_id)
    .bind(&l.call_url)
    .bind(l.state())
    .bind(l.revision)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    if !applied {
        return Ok(None);
    }
    let state = l.state();
    Ok(Some(match prev {
        None if state != 0 => LessonChange::Updated,
        None => LessonChange::Created,
        Some((_, _, was, _, _)) if state == 1 && was != 1 => LessonChange::Cancelled,
        Some((_, _, was, _, _)) if state == 2 && was != 2 => LessonChange::InClass,
        Some((_, _, was, _, _)) if state == 0 && was != 0 => LessonChange::Created,
        Some((s, e, _, _, _)) if state == 0 && (s, e) != (l.starts_at, l.ends_at) => LessonChange::Moved,
        Some(_) => LessonChange::Updated,
    }))
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
    tx: &mut edulink_store::Tx,
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

    let channel =
        ensure_chat(tx, &school_key, &announcements_key(&school_key), "announcements", &p.school.name, None, now)
            .await?;
    join_chat(tx, &channel, account_id, p.role.as_str(), now).await?;
    let mut chat_ids = vec![channel];
    for class in &p.classes {
        let class_key = key(client_id, &class.id);
        let chat_id = ensure_chat(tx, &school_key, &class_key, "class", &class.name, None, now).await?;
        join_chat(tx, &chat_id, account_id, p.role.as_str(), now).await?;
        // Lessons this call brings are the class's current state; changes later arrive one by one
        // (`push_lesson`), each announced in the class chat. These are not: the class has seen them.
        // One read per class: in the steady state every lesson is known and nothing is written.
        let known: std::collections::HashMap<String, i64> =
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

/// What a lesson push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    /// False when Сферум had this revision or a newer one already.
    pub applied: bool,
    /// The class chat that got a system message about the change, if any.
    pub announced_in: Option<String>,
}

/// Applies one lesson change from the diary `client_id` (created, moved, changed, cancelled): stored
/// once per revision, announced once in the class chat.
pub async fn push_lesson(db: &Db, client_id: &str, push: &LessonPush, now: i64) -> Result<PushOutcome, StoreError> {
    let school_key = key(client_id, &push.school.id);
    let class_key = key(client_id, &push.class.id);
    let mut tx = db.begin().await?;
    let class_chat = ensure_chat(&mut tx, &school_key, &class_key, "class", &push.class.name, None, now).await?;
    let change = upsert_lesson(&mut tx, client_id, &school_key, &class_key, &class_chat, &push.lesson, now).await?;
    let announced_in = match change.and_then(LessonChange::message_kind) {
        Some(kind) => {
            sqlx::query(
                "INSERT INTO sferum_messages (chat_id, author_id, kind, body, at_ref, created_at) \
                 VALUES ($1, NULL, $2, $3, $4, $5)",
            )
            .bind(&class_chat)
            .bind(kind)
            .bind(&push.lesson.subject)
            .bind(push.lesson.starts_at)
            .bind(now)
            .execute(&mut tx)
            .await?;
            Some(class_chat)
        }
        None => None,
    };
    tx.commit().await?;
    Ok(PushOutcome { applied: change.is_some(), announced_in })
}

/// Memberships of account `$1` in chats of schools keyed `$2` (`<client>:%`) and in direct chats,
/// deleted. The chats are found through the account's own memberships, not by scanning every chat.
pub const LEAVE_DIARY_CHATS: &str = "DELETE FROM sferum_members WHERE account_id = $1 AND chat_id IN \
     (SELECT c.id FROM sferum_members m JOIN sferum_chats c ON c.id = m.chat_id \
      WHERE m.account_id = $1 AND (c.school_key LIKE $2 OR c.kind = 'direct'))";

/// The lesson whose own chat is `$1` (by index on `chat_id`).
pub const LESSON_OF_CHAT: &str = "SELECT id FROM sferum_lessons WHERE chat_id = $1";

/// Detaches the profile from the diary `client_id`: it leaves every chat at once (that diary's class
/// and lesson chats, the announcements channel and its direct conversations) and loses the school
/// data and names the link carried (it falls back to the MAX account's own name). Its past messages
/// stay, shown under a neutral label. Returns whether anything was attached.
pub async fn detach(db: &Db, client_id: &str, account_id: &str, now: i64) -> Result<bool, StoreError> {
    let mut tx = db.begin().await?;
    let left = sqlx::query(LEAVE_DIARY_CHATS)
        .bind(account_id)
        .bind(format!("{client_id}:%"))
        .execute(&mut tx)
        .await?
        .rows_affected();
    let reset = sqlx::query(
        "UPDATE sferum_profiles SET school_key = NULL, school_name = NULL, confirmed_by = NULL, \
           confirmed_at = NULL, role = 'student', safe_mode = 1, updated_at = $3, \
           first_name = (SELECT first_name FROM accounts WHERE id = $1), \
           last_name = (SELECT last_name FROM accounts WHERE id = $1) \
         WHERE account_id = $1 AND confirmed_by = $2",
    )
    .bind(account_id)
    .bind(client_id)
    .bind(now)
    .execute(&mut tx)
    .await?
    .rows_affected();
    if reset > 0 {
        // The name search follows the name.
        let names: (String, String) =
            sqlx::query_as("SELECT first_name, last_name FROM sferum_profiles WHERE account_id = $1")
                .bind(account_id)
                .fetch_one(&mut tx)
                .await?;
        sqlx::query("UPDATE sferum_profiles SET search_name = $2 WHERE account_id = $1")
            .bind(account_id)
            .bind(search_name(&names.0, &names.1))
            .execute(&mut tx)
            .await?;
    }
    tx.commit().await?;
    Ok(left + reset > 0)
}

/// What the «Сферум в MAX» page shows for an account: its profile, chats and upcoming lessons.
pub async fn overview(db: &Db, account_id: &str, now: i64) -> Result<Overview, StoreError> {
    let profile = sqlx::query(
        "SELECT role, first_name, last_name, school_name, confirmed_by, safe_mode FROM sferum_profiles \
         WHERE account_id = $1",
    )
    .bind(account_id)
    .fetch_optional(db.pool())
    .await?
    .map(|r| -> Result<Profile, sqlx::Error> {
        Ok(Profile {
            role: Role::parse(&r.try_get::<String, _>("role")?).unwrap_or(Role::Student),
            first_name: r.try_get("first_name")?,
            last_name: r.try_get("last_name")?,
            school_name: r.try_get("school_name")?,
            confirmed_by: r.try_get("confirmed_by")?,
            safe_mode: r.try_get::<i64, _>("safe_mode")? != 0,
        })
    })
    .transpose()?;
    let chats = chats_of(db, account_id).await?;
    let lessons = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{LESSON_COLS} {LESSON_FROM} JOIN sferum_members m ON m.chat_id = c.id \
             WHERE m.account_id = $1 AND l.ends_at > $2 AND l.cancelled <> 2 ORDER BY l.starts_at LIMIT 10"
    )))
    .bind(account_id)
    .bind(now)
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(lesson_row)
    .collect::<Result<Vec<_>, _>>()?;
    Ok(Overview { profile, chats, lessons })
}

/// The columns [`lesson_row`] reads, for the viewer `$1` (whether they joined).
const LESSON_COLS: &str = "SELECT l.id, l.subject, l.teacher, c.title, l.starts_at, l.ends_at, l.call_url, \
     l.cancelled, l.chat_id, \
     (SELECT COUNT(*) FROM sferum_attendance a WHERE a.lesson_id = l.id AND a.account_id = $1) AS joined";
/// A lesson with its class chat.
const LESSON_FROM: &str = "FROM sferum_lessons l JOIN sferum_chats c ON c.class_key = l.class_key AND c.kind = 'class'";

fn lesson_row(r: &sqlx::any::AnyRow) -> Result<Lesson, sqlx::Error> {
    Ok(Lesson {
        key: r.try_get(0)?,
        subject: r.try_get(1)?,
        teacher: r.try_get(2)?,
        class_title: r.try_get(3)?,
        starts_at: r.try_get(4)?,
        ends_at: r.try_get(5)?,
        call_url: r.try_get(6)?,
        cancelled: r.try_get::<i64, _>(7)? == 1,
        in_class: r.try_get::<i64, _>(7)? == 2,
        chat_id: r.try_get(8)?,
        joined: r.try_get::<i64, _>(9)? != 0,
    })
}

/// A lesson by its key as `account_id` sees it, with whether they are a member of its class.
pub async fn lesson_for(db: &Db, lesson_key: &str, account_id: &str) -> Result<Option<(Lesson, bool)>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{LESSON_COLS}, (SELECT COUNT(*) FROM sferum_members m WHERE m.chat_id = c.id AND m.account_id = $1) \
             AS member {LESSON_FROM} WHERE l.id = $2"
    )))
    .bind(account_id)
    .bind(lesson_key)
    .fetch_optional(db.pool())
    .await?;
    match row {
        Some(r) => Ok(Some((lesson_row(&r)?, r.try_get::<i64, _>(10)? != 0))),
        None => Ok(None),
    }
}

/// Records that `account_id` joined the lesson; the first join counts. Returns whether this was it.
pub async fn record_attendance(db: &Db, lesson_key: &str, account_id: &str, now: i64) -> Result<bool, StoreError> {
    Ok(db
        .execute(
            sqlx::query(
                "INSERT INTO sferum_attendance (lesson_id, account_id, joined_at) VALUES ($1, $2, $3) \
         ON CONFLICT (lesson_id, account_id) DO NOTHING",
            )
            .bind(lesson_key)
            .bind(account_id)
            .bind(now),
        )
        .await?
        .rows_affected()
        > 0)
}

/// Who joined the lesson, as `(subject, joined_at)` for the clients of `sector` (the diary's
/// pairwise subjects; members it does not know are left out).
pub async fn attendance(db: &Db, lesson_key: &str, sector: &str) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT MIN(g.subject), a.joined_at FROM sferum_attendance a \
         JOIN grants g ON g.account_id = a.account_id \
         JOIN clients c ON c.client_id = g.client_id AND c.sector = $2 \
         WHERE a.lesson_id = $1 GROUP BY a.account_id, a.joined_at ORDER BY a.joined_at",
    )
    .bind(lesson_key)
    .bind(sector)
    .fetch_all(db.pool())
    .await?)
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

/// The safe-mode facts of `account_id`.
pub async fn facts(db: &Db, account_id: &str) -> Result<Facts, StoreError> {
    let row: Option<(String, Option<String>, i64)> =
        sqlx::query_as("SELECT role, school_key, safe_mode FROM sferum_profiles WHERE account_id = $1")
            .bind(account_id)
            .fetch_optional(db.pool())
            .await?;
    Ok(row
        .map(|(role, school_key, safe)| Facts { role: Role::parse(&role), school_key, safe_mode: safe != 0 })
        .unwrap_or_default())
}

/// The lesson whose own chat is `chat_id`, as `account_id` sees it.
pub async fn lesson_of_chat(db: &Db, chat_id: &str, account_id: &str) -> Result<Option<Lesson>, StoreError> {
    let key: Option<String> = sqlx::query_scalar(LESSON_OF_CHAT).bind(chat_id).fetch_optional(db.pool()).await?;
    match key {
        Some(key) => Ok(lesson_for(db, &key, account_id).await?.map(|(l, _)| l)),
        None => Ok(None),
    }
}
