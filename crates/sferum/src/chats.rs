//! Chats: membership and access, messages with cursor paging, the member list, people search and
//! direct conversations under safe mode.

use crate::{Chat, Facts, facts};
use edulink_domain::crypto::new_id;
use edulink_domain::provisioning::Role;
use edulink_domain::sferum::{MessageText, can_message, can_see};
use edulink_store::{Db, Row, StoreError, sqlx};

/// A chat as its member reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatAccess {
    /// Chat id.
    pub id: String,
    /// `class`, `announcements`, `lesson` or `direct`.
    pub kind: String,
    /// Title (for a direct conversation: the other person's name).
    pub title: String,
    /// The member's role in it; `None` for a MAX account without an educational profile.
    pub role: Option<Role>,
}

/// Why a chat cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No such chat.
    NotFound,
    /// It exists; the account is not (or no longer) a member.
    NotMember,
}

/// Chats of `account_id`: its own memberships (lesson chats are reached through their lessons).
pub async fn chats_of(db: &Db, account_id: &str) -> Result<Vec<Chat>, StoreError> {
    let rows = sqlx::query(
        "SELECT c.id, c.title, c.kind, (SELECT COUNT(*) FROM sferum_members x WHERE x.chat_id = c.id) AS members, \
           (SELECT p.first_name || ' ' || p.last_name FROM sferum_members o \
              JOIN sferum_profiles p ON p.account_id = o.account_id \
              WHERE o.chat_id = c.id AND o.account_id <> $1 LIMIT 1) AS other, \
           (SELECT a.first_name || ' ' || a.last_name FROM sferum_members o \
              JOIN accounts a ON a.id = o.account_id \
              WHERE o.chat_id = c.id AND o.account_id <> $1 LIMIT 1) AS other_account \
         FROM sferum_chats c JOIN sferum_members m ON m.chat_id = c.id WHERE m.account_id = $1 \
         ORDER BY CASE c.kind WHEN 'announcements' THEN 0 WHEN 'class' THEN 1 ELSE 2 END, c.title",
    )
    .bind(account_id)
    .fetch_all(db.pool())
    .await?;
    rows.into_iter()
        .map(|r| -> Result<Chat, StoreError> {
            let kind: String = r.try_get("kind")?;
            let title: String = r.try_get("title")?;
            let title = if kind == "direct" {
                let other: Option<String> = r.try_get("other")?;
                let other_account: Option<String> = r.try_get("other_account")?;
                other.or(other_account).unwrap_or_default()
            } else {
                title
            };
            Ok(Chat { id: r.try_get("id")?, title, kind, members: r.try_get("members")? })
        })
        .collect()
}

/// Whether `account_id` may reach chat `chat_id`, and as what. Lesson chats take their members from
/// their class chat, so leaving the class leaves its lessons too.
pub async fn access(db: &Db, chat_id: &str, account_id: &str) -> Result<Result<ChatAccess, Denied>, StoreError> {
    let row = sqlx::query(
        "SELECT c.id, c.kind, c.title, \
           (SELECT m.role FROM sferum_members m WHERE m.chat_id = COALESCE(c.parent_id, c.id) AND m.account_id = $2) \
             AS role, \
           (SELECT COUNT(*) FROM sferum_members m WHERE m.chat_id = COALESCE(c.parent_id, c.id) AND m.account_id = $2) \
             AS member \
         FROM sferum_chats c WHERE c.id = $1",
    )
    .bind(chat_id)
    .bind(account_id)
    .fetch_optional(db.pool())
    .await?;
    let Some(r) = row else {
        return Ok(Err(Denied::NotFound));
    };
    if r.try_get::<i64, _>("member")? == 0 {
        return Ok(Err(Denied::NotMember));
    }
    let kind: String = r.try_get("kind")?;
    let mut title: String = r.try_get("title")?;
    if kind == "direct" {
        title = chats_of(db, account_id).await?.into_iter().find(|c| c.id == chat_id).map(|c| c.title).unwrap_or(title);
    }
    let role: Option<String> = r.try_get("role")?;
    Ok(Ok(ChatAccess { id: r.try_get("id")?, kind, title, role: role.as_deref().and_then(Role::parse) }))
}

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
    /// `text`, or a system kind (`lesson_created`, `lesson_moved`, `lesson_cancelled`).
    pub kind: String,
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

const MESSAGE_SELECT: &str = "SELECT msg.id, msg.kind, msg.body, msg.at_ref, msg.created_at, msg.author_id, \
       mm.role, COALESCE(p.first_name || ' ' || p.last_name, a.first_name || ' ' || a.last_name) AS name \
     FROM sferum_messages msg JOIN sferum_chats c ON c.id = msg.chat_id \
     LEFT JOIN sferum_members mm ON mm.chat_id = COALESCE(c.parent_id, c.id) AND mm.account_id = msg.author_id \
     LEFT JOIN sferum_profiles p ON p.account_id = mm.account_id \
     LEFT JOIN accounts a ON a.id = mm.account_id \
     WHERE msg.chat_id = $1";

fn message_row(r: &sqlx::any::AnyRow) -> Result<Message, StoreError> {
    let author_id: Option<String> = r.try_get("author_id")?;
    let role: Option<String> = r.try_get("role")?;
    let name: Option<String> = r.try_get("name")?;
    let author = match (author_id, role) {
        (None, _) => Author::System,
        (Some(account_id), Some(role)) => {
            Author::Member { name: name.unwrap_or_default(), role: Role::parse(&role), account_id }
        }
        (Some(_), None) => Author::Former,
    };
    Ok(Message {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        body: r.try_get("body")?,
        at_ref: r.try_get("at_ref")?,
        created_at: r.try_get("created_at")?,
        author,
    })
}

/// A page of history: up to `limit` messages older than `before` (newest when `None`), oldest first.
pub async fn history(db: &Db, chat_id: &str, before: Option<i64>, limit: i64) -> Result<Vec<Message>, StoreError> {
    let sql = format!("{MESSAGE_SELECT} AND msg.id < $2 ORDER BY msg.id DESC LIMIT $3");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(chat_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
    let mut out = rows.iter().map(message_row).collect::<Result<Vec<_>, _>>()?;
    out.reverse();
    Ok(out)
}

/// Messages newer than `after`, oldest first (live delivery).
pub async fn since(db: &Db, chat_id: &str, after: i64, limit: i64) -> Result<Vec<Message>, StoreError> {
    let sql = format!("{MESSAGE_SELECT} AND msg.id > $2 ORDER BY msg.id LIMIT $3");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(chat_id).bind(after).bind(limit).fetch_all(db.pool()).await?;
    rows.iter().map(message_row).collect()
}

/// The newest message id of a chat (0 when empty).
pub async fn last_id(db: &Db, chat_id: &str) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM sferum_messages WHERE chat_id = $1")
        .bind(chat_id)
        .fetch_one(db.pool())
        .await?)
}

/// A chat member as the member list shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Account id.
    pub account_id: String,
    /// Name.
    pub name: String,
    /// Role, if they have a profile.
    pub role: Option<Role>,
}

/// The members of a chat (of its class chat, for a lesson chat): teachers first, then by name.
pub async fn members(db: &Db, chat_id: &str) -> Result<Vec<Member>, StoreError> {
    let rows = sqlx::query(
        "SELECT m.account_id, m.role, COALESCE(p.first_name || ' ' || p.last_name, a.first_name || ' ' || a.last_name) \
         FROM sferum_chats c JOIN sferum_members m ON m.chat_id = COALESCE(c.parent_id, c.id) \
         JOIN accounts a ON a.id = m.account_id LEFT JOIN sferum_profiles p ON p.account_id = m.account_id \
         WHERE c.id = $1",
    )
    .bind(chat_id)
    .fetch_all(db.pool())
    .await?;
    let mut out = rows
        .iter()
        .map(|r| -> Result<Member, StoreError> {
            let role: String = r.try_get(1)?;
            Ok(Member { account_id: r.try_get(0)?, role: Role::parse(&role), name: r.try_get(2)? })
        })
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by(|a, b| (a.role != Some(Role::Teacher), &a.name).cmp(&(b.role != Some(Role::Teacher), &b.name)));
    Ok(out)
}

/// A person found by search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Account id.
    pub account_id: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// School, if confirmed.
    pub school_name: Option<String>,
}

async fn found_rows(rows: Vec<sqlx::any::AnyRow>, viewer: &Facts, limit: usize) -> Result<Vec<Found>, StoreError> {
    let mut out = Vec::new();
    for r in rows {
        let role: String = r.try_get("role")?;
        let school_key: Option<String> = r.try_get("school_key")?;
        let target = Facts { role: Role::parse(&role), school_key, safe_mode: r.try_get::<i64, _>("safe_mode")? != 0 };
        // The rule decides; the query only narrows.
        if !can_see(&viewer.person(), &target.person()) {
            continue;
        }
        out.push(Found {
            account_id: r.try_get("account_id")?,
            name: r.try_get("name")?,
            role: target.role.unwrap_or(Role::Student),
            school_name: r.try_get("school_name")?,
        });
        if out.len() == limit {
            break;
        }
    }
    Ok(out)
}

const FOUND_SELECT: &str = "SELECT account_id, role, school_key, safe_mode, school_name, \
     first_name || ' ' || last_name AS name FROM sferum_profiles";

/// Educational profiles whose name contains `query`, that `viewer_id` may see under safe mode.
pub async fn search_by_name(db: &Db, viewer_id: &str, query: &str) -> Result<Vec<Found>, StoreError> {
    let viewer = facts(db, viewer_id).await?;
    let needle = query.to_lowercase().split_whitespace().collect::<Vec<_>>().join(" ");
    if needle.chars().count() < 2 {
        return Ok(Vec::new());
    }
    let escaped = needle.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    // Protected pupils of other schools are filtered here already so they never take a result slot.
    let sql = format!(
        "{FOUND_SELECT} WHERE search_name LIKE $1 ESCAPE '\\' AND account_id <> $2 \
         AND (safe_mode = 0 OR role <> 'student' OR school_key = $3) ORDER BY search_name LIMIT 50"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(format!("%{escaped}%"))
        .bind(viewer_id)
        .bind(viewer.school_key.clone().unwrap_or_default())
        .fetch_all(db.pool())
        .await?;
    found_rows(rows, &viewer, 20).await
}

/// The profile of `account_id` (found by phone), if `viewer_id` may see it under safe mode.
pub async fn find_account(db: &Db, viewer_id: &str, account_id: &str) -> Result<Option<Found>, StoreError> {
    let viewer = facts(db, viewer_id).await?;
    let sql = format!("{FOUND_SELECT} WHERE account_id = $1");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(account_id).fetch_all(db.pool()).await?;
    Ok(found_rows(rows, &viewer, 1).await?.into_iter().next())
}

/// Whether the two accounts are members of a common class chat.
async fn share_class(db: &Db, a: &str, b: &str) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sferum_members x JOIN sferum_members y ON y.chat_id = x.chat_id \
         JOIN sferum_chats c ON c.id = x.chat_id \
         WHERE x.account_id = $1 AND y.account_id = $2 AND c.kind = 'class'",
    )
    .bind(a)
    .bind(b)
    .fetch_one(db.pool())
    .await?;
    Ok(n > 0)
}

/// Opens (or reopens) the direct conversation of `sender` with `target`, if safe mode allows it.
/// Returns the chat id, or `None` when refused.
pub async fn open_direct(db: &Db, sender: &str, target: &str, now: i64) -> Result<Option<String>, StoreError> {
    if sender == target {
        return Ok(None);
    }
    let (s, t) = (facts(db, sender).await?, facts(db, target).await?);
    let exists: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE id = $1").bind(target).fetch_one(db.pool()).await?;
    if exists == 0 || !can_message(&s.person(), &t.person(), share_class(db, sender, target).await?) {
        return Ok(None);
    }
    let (lo, hi) = if sender < target { (sender, target) } else { (target, sender) };
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO sferum_chats (id, school_key, class_key, kind, title, parent_id, created_at) \
         VALUES ($1, '', $2, 'direct', '', NULL, $3) ON CONFLICT (school_key, class_key) DO NOTHING",
    )
    .bind(new_id())
    .bind(format!("direct:{lo}:{hi}"))
    .bind(now)
    .execute(&mut tx)
    .await?;
    let chat_id: String = sqlx::query_scalar("SELECT id FROM sferum_chats WHERE school_key = '' AND class_key = $1")
        .bind(format!("direct:{lo}:{hi}"))
        .fetch_one(&mut tx)
        .await?;
    for (account, f) in [(sender, &s), (target, &t)] {
        sqlx::query(
            "INSERT INTO sferum_members (chat_id, account_id, role, joined_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (chat_id, account_id) DO NOTHING",
        )
        .bind(&chat_id)
        .bind(account)
        .bind(f.role.map(Role::as_str).unwrap_or("guest"))
        .bind(now)
        .execute(&mut tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Some(chat_id))
}
