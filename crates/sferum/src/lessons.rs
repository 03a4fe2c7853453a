//! Distance lessons: stored by revision from provisioning and pushes, announced in the class chat,
//! listed for their class's members, and attended («Подключиться»).

use crate::chats::{ChatKind, ensure_chat};
use crate::messages::MessageKind;
use crate::{Directory, key};
use edulink_domain::provisioning::{self, LessonPush};
use edulink_store::{Db, StoreError, Tx, sqlx};

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
    pub fn message_kind(self) -> Option<MessageKind> {
        match self {
            LessonChange::Created => Some(MessageKind::LessonCreated),
            LessonChange::Moved => Some(MessageKind::LessonMoved),
            LessonChange::Cancelled => Some(MessageKind::LessonCancelled),
            LessonChange::InClass => Some(MessageKind::LessonInClass),
            LessonChange::Updated => None,
        }
    }
}

/// The stored state of a lesson the upsert compares against.
#[derive(sqlx::FromRow)]
struct Stored {
    starts_at: i64,
    ends_at: i64,
    cancelled: i64,
    revision: i64,
    chat_id: Option<String>,
}

/// Stores a lesson of the class chat `class_chat` unless Сферум already has its revision or a newer
/// one; creates its own chat on first sight. The revision guard is part of the upsert itself, so two
/// deliveries racing each other apply once. Returns what changed, or `None` when nothing did.
pub(crate) async fn upsert_lesson(
    tx: &mut Tx,
    client_id: &str,
    school_key: &str,
    class_key: &str,
    class_chat: &str,
    l: &provisioning::Lesson,
    now: i64,
) -> Result<Option<LessonChange>, StoreError> {
    let lesson_key = key(client_id, &l.id);
    let prev: Option<Stored> =
        sqlx::query_as("SELECT starts_at, ends_at, cancelled, revision, chat_id FROM sferum_lessons WHERE id = $1")
            .bind(&lesson_key)
            .fetch_optional(&mut *tx)
            .await?;
    if prev.as_ref().is_some_and(|p| p.revision >= l.revision) {
        // Seen already: no write at all (the guard in the upsert below settles races).
        return Ok(None);
    }
    let chat_id = match prev.as_ref().and_then(|p| p.chat_id.clone()) {
        Some(id) => id,
        None => {
            let lesson_chat = format!("{lesson_key}#lesson");
            ensure_chat(tx, school_key, &lesson_chat, ChatKind::Lesson, &l.subject, Some(class_chat), now).await?
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
        Some(p) if state == 1 && p.cancelled != 1 => LessonChange::Cancelled,
        Some(p) if state == 2 && p.cancelled != 2 => LessonChange::InClass,
        Some(p) if state == 0 && p.cancelled != 0 => LessonChange::Created,
        Some(p) if state == 0 && (p.starts_at, p.ends_at) != (l.starts_at, l.ends_at) => LessonChange::Moved,
        Some(_) => LessonChange::Updated,
    }))
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
    let class_chat =
        ensure_chat(&mut tx, &school_key, &class_key, ChatKind::Class, &push.class.name, None, now).await?;
    let change = upsert_lesson(&mut tx, client_id, &school_key, &class_key, &class_chat, &push.lesson, now).await?;
    let announced_in = match change.and_then(LessonChange::message_kind) {
        Some(kind) => {
            sqlx::query(
                "INSERT INTO sferum_messages (chat_id, author_id, kind, body, at_ref, created_at) \
                 VALUES ($1, NULL, $2, $3, $4, $5)",
            )
            .bind(&class_chat)
            .bind(kind.as_str())
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

/// The lesson whose own chat is `$1` (by index on `chat_id`).
pub const LESSON_OF_CHAT: &str = "SELECT id FROM sferum_lessons WHERE chat_id = $1";

/// The columns [`LessonRow`] reads, for the viewer `$1` (whether they joined).
const LESSON_COLS: &str = "SELECT l.id, l.subject, l.teacher, c.title, l.starts_at, l.ends_at, l.call_url, \
     l.cancelled, l.chat_id, \
     (SELECT COUNT(*) FROM sferum_attendance a WHERE a.lesson_id = l.id AND a.account_id = $1) AS joined";
/// A lesson with its class chat.
const LESSON_FROM: &str = "FROM sferum_lessons l JOIN sferum_chats c ON c.class_key = l.class_key AND c.kind = 'class'";

#[derive(sqlx::FromRow)]
struct LessonRow {
    id: String,
    subject: String,
    teacher: String,
    title: String,
    starts_at: i64,
    ends_at: i64,
    call_url: Option<String>,
    /// 0 scheduled, 1 cancelled, 2 in class.
    cancelled: i64,
    chat_id: Option<String>,
    joined: i64,
}

impl From<LessonRow> for Lesson {
    fn from(r: LessonRow) -> Self {
        Lesson {
            key: r.id,
            subject: r.subject,
            teacher: r.teacher,
            class_title: r.title,
            starts_at: r.starts_at,
            ends_at: r.ends_at,
            call_url: r.call_url,
            cancelled: r.cancelled == 1,
            in_class: r.cancelled == 2,
            chat_id: r.chat_id,
            joined: r.joined != 0,
        }
    }
}

/// Up to ten lessons of `account_id`'s classes that have not ended and are not held in class.
pub(crate) async fn upcoming_lessons(db: &Db, account_id: &str, now: i64) -> Result<Vec<Lesson>, StoreError> {
    let rows: Vec<LessonRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{LESSON_COLS} {LESSON_FROM} JOIN sferum_members m ON m.chat_id = c.id \
             WHERE m.account_id = $1 AND l.ends_at > $2 AND l.cancelled <> 2 ORDER BY l.starts_at LIMIT 10"
    )))
    .bind(account_id)
    .bind(now)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.into_iter().map(Lesson::from).collect())
}

#[derive(sqlx::FromRow)]
struct LessonForRow {
    #[sqlx(flatten)]
    lesson: LessonRow,
    member: i64,
}

/// A lesson by its key as `account_id` sees it, with whether they are a member of its class.
pub async fn lesson_for(db: &Db, lesson_key: &str, account_id: &str) -> Result<Option<(Lesson, bool)>, StoreError> {
    let row: Option<LessonForRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{LESSON_COLS}, (SELECT COUNT(*) FROM sferum_members m WHERE m.chat_id = c.id AND m.account_id = $1) \
             AS member {LESSON_FROM} WHERE l.id = $2"
    )))
    .bind(account_id)
    .bind(lesson_key)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(|r| (r.lesson.into(), r.member != 0)))
}

/// The lesson whose own chat is `chat_id`, as `account_id` sees it.
pub async fn lesson_of_chat(db: &Db, chat_id: &str, account_id: &str) -> Result<Option<Lesson>, StoreError> {
    let key: Option<String> = sqlx::query_scalar(LESSON_OF_CHAT).bind(chat_id).fetch_optional(db.pool()).await?;
    match key {
        Some(key) => Ok(lesson_for(db, &key, account_id).await?.map(|(l, _)| l)),
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

#[derive(sqlx::FromRow)]
struct Joined {
    account_id: String,
    joined_at: i64,
}

/// Who joined the lesson, as `(subject, joined_at)` in order of joining, for the clients of `sector`:
/// the diary's pairwise subjects, asked of `dir` in one call (members it does not know are left out).
pub async fn attendance(
    db: &Db,
    dir: &impl Directory,
    lesson_key: &str,
    sector: &str,
) -> Result<Vec<(String, i64)>, StoreError> {
    let joined: Vec<Joined> = sqlx::query_as(
        "SELECT account_id, joined_at FROM sferum_attendance WHERE lesson_id = $1 ORDER BY joined_at, account_id",
    )
    .bind(lesson_key)
    .fetch_all(db.pool())
    .await?;
    if joined.is_empty() {
        return Ok(Vec::new());
    }
    let accounts: Vec<String> = joined.iter().map(|j| j.account_id.clone()).collect();
    let mut subjects = dir.subjects_in_sector(sector, &accounts).await?;
    Ok(joined.into_iter().filter_map(|j| subjects.remove(&j.account_id).map(|sub| (sub, j.joined_at))).collect())
}
