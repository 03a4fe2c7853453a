//! Chat messages: posting, history by cursor, live delivery. Authors are named while they are
//! members; those without an educational profile are named by MAX, through [`Directory`].

use crate::Directory;
use edulink_domain::provisioning::Role;
use edulink_domain::sferum::MessageText;
use edulink_store::{Db, StoreError, sqlx};

/// What a message is: a member's text, or Сферум's note about a lesson.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Written by a member.
    Text,
    /// A distance lesson was created (or restored).
    LessonCreated,
    /// A lesson moved to another time.
    LessonMoved,
    /// A lesson was cancelled.
    LessonCancelled,
    /// A lesson is held in the classroom instead.
    LessonInClass,
}

impl MessageKind {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::LessonCreated => "lesson_created",
            MessageKind::LessonMoved => "lesson_moved",
            MessageKind::LessonCancelled => "lesson_cancelled",
            MessageKind::LessonInClass => "lesson_in_class",
        }
    }
}

stored_kind!(MessageKind: Text, LessonCreated, LessonMoved, LessonCancelled, LessonInClass);

/// Who wrote a message, as readers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Author {
    /// A current member, by name.
    Member {
        /// Display name.
        name: String,
        /// Their role, if they have a profile.
        role: Option<Role>,
        /// Their account (to mark one's own messages).
        account_id: String,
    },
    /// Somebody who left the chat (unlinked, moved class): never named.
    Former,
    /// Сферум itself (lesson created, moved, cancelled).
    System,
}

/// A chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Id; also the paging cursor (ids grow).
    pub id: i64,
    /// A member's text or a lesson note.
    pub kind: MessageKind,
    /// The text (for a system message: the subject).
    pub body: String,
    /// For a system message: the lesson's start.
    pub at_ref: Option<i64>,
    /// When it was posted, Unix seconds.
    pub created_at: i64,
    /// The author.
    pub author: Author,
}

/// Posts `text` by `account_id` (the caller checked access and the posting rule). Returns its id.
pub async fn post(db: &Db, chat_id: &str, account_id: &str, text: &MessageText, now: i64) -> Result<i64, StoreError> {
    let id = sqlx::query_scalar(
        "INSERT INTO sferum_messages (chat_id, author_id, kind, body, at_ref, created_at) \
         VALUES ($1, $2, 'text', $3, NULL, $4) RETURNING id",
    )
    .bind(chat_id)
    .bind(account_id)
    .bind(text.as_str())
    .bind(now)
    .fetch_one(db.writer())
    .await?;
    Ok(id)
}

/// Messages with their author's membership (`role`) and profile name, if any.
const MESSAGE_SELECT: &str = "SELECT msg.id, msg.kind, msg.body, msg.at_ref, msg.created_at, msg.author_id, \
       mm.role, p.first_name || ' ' || p.last_name AS name \
     FROM sferum_messages msg JOIN sferum_chats c ON c.id = msg.chat_id \
     LEFT JOIN sferum_members mm ON mm.chat_id = COALESCE(c.parent_id, c.id) AND mm.account_id = msg.author_id \
     LEFT JOIN sferum_profiles p ON p.account_id = mm.account_id \
     WHERE msg.chat_id = $1";

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: i64,
    #[sqlx(try_from = "String")]
    kind: MessageKind,
    body: String,
    at_ref: Option<i64>,
    created_at: i64,
    author_id: Option<String>,
    /// The author's role in the chat while they are a member.
    role: Option<String>,
    name: Option<String>,
}

/// Messages from their rows; members without a profile are named by `dir`, in one call.
async fn messages(dir: &impl Directory, rows: Vec<MessageRow>) -> Result<Vec<Message>, StoreError> {
    let mut unnamed: Vec<String> =
        rows.iter().filter(|r| r.role.is_some() && r.name.is_none()).filter_map(|r| r.author_id.clone()).collect();
    unnamed.sort();
    unnamed.dedup();
    let names = if unnamed.is_empty() { Default::default() } else { dir.names(&unnamed).await? };
    Ok(rows
        .into_iter()
        .map(|r| {
            let author = match (r.author_id, r.role) {
                (None, _) => Author::System,
                (Some(account_id), Some(role)) => {
                    let name = r.name.or_else(|| names.get(&account_id).map(|n| n.full())).unwrap_or_default();
                    Author::Member { name, role: Role::parse(&role), account_id }
                }
                (Some(_), None) => Author::Former,
            };
            Message { id: r.id, kind: r.kind, body: r.body, at_ref: r.at_ref, created_at: r.created_at, author }
        })
        .collect())
}

/// A page of history: up to `limit` messages older than `before` (newest when `None`), oldest first.
pub async fn history(
    db: &Db,
    dir: &impl Directory,
    chat_id: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Message>, StoreError> {
    let sql = format!("{MESSAGE_SELECT} AND msg.id < $2 ORDER BY msg.id DESC LIMIT $3");
    let mut rows: Vec<MessageRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(chat_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
    rows.reverse();
    messages(dir, rows).await
}

/// Messages newer than `after`, oldest first (live delivery).
pub async fn since(
    db: &Db,
    dir: &impl Directory,
    chat_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<Message>, StoreError> {
    let sql = format!("{MESSAGE_SELECT} AND msg.id > $2 ORDER BY msg.id LIMIT $3");
    let rows: Vec<MessageRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(chat_id).bind(after).bind(limit).fetch_all(db.pool()).await?;
    messages(dir, rows).await
}

/// The newest message id of a chat (0 when empty).
pub async fn last_id(db: &Db, chat_id: &str) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM sferum_messages WHERE chat_id = $1")
        .bind(chat_id)
        .fetch_one(db.pool())
        .await?)
}
