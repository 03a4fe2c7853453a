//! Chats: creation and membership (from provisioning), the chat list, access and the member list.
//! Members without an educational profile (a MAX account in a direct conversation) are named by
//! MAX, through [`Directory`].

use crate::Directory;
use edulink_domain::crypto::new_id;
use edulink_domain::provisioning::Role;
use edulink_store::{Db, StoreError, Tx, sqlx};

/// What a chat is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatKind {
    /// A class's chat.
    Class,
    /// A school's announcements channel.
    Announcements,
    /// A distance lesson's own chat (its members are its class chat's).
    Lesson,
    /// A conversation of two people.
    Direct,
}

impl ChatKind {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatKind::Class => "class",
            ChatKind::Announcements => "announcements",
            ChatKind::Lesson => "lesson",
            ChatKind::Direct => "direct",
        }
    }
}

stored_kind!(ChatKind: Class, Announcements, Lesson, Direct);

/// A chat the profile is a member of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    /// Chat id.
    pub id: String,
    /// Title, e.g. «7 А»; for a direct conversation, the other person's name.
    pub title: String,
    /// What the chat is for.
    pub kind: ChatKind,
    /// Number of members.
    pub members: i64,
}

/// A chat as its member reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatAccess {
    /// Chat id.
    pub id: String,
    /// What the chat is for.
    pub kind: ChatKind,
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

/// The key of a school's announcements channel among its chats.
pub(crate) fn announcements_key(school_key: &str) -> String {
    format!("{school_key}#announcements")
}

#[derive(sqlx::FromRow)]
struct Existing {
    id: String,
    title: String,
}

/// Creates (or renames) the chat `class_key` of `school_key` and returns its id.
pub(crate) async fn ensure_chat(
    tx: &mut Tx,
    school_key: &str,
    class_key: &str,
    kind: ChatKind,
    title: &str,
    parent_id: Option<&str>,
    now: i64,
) -> Result<String, StoreError> {
    // Every student of a class after the first finds the chat as it is: read it, and write only
    // what is missing or renamed (an upsert rewrote the row, and its pages, on every provisioning).
    let existing: Option<Existing> =
        sqlx::query_as("SELECT id, title FROM sferum_chats WHERE school_key = $1 AND class_key = $2")
            .bind(school_key)
            .bind(class_key)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(chat) = existing {
        if chat.title != title {
            sqlx::query("UPDATE sferum_chats SET title = $1 WHERE id = $2")
                .bind(title)
                .bind(&chat.id)
                .execute(&mut *tx)
                .await?;
        }
        return Ok(chat.id);
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
    .bind(kind.as_str())
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

/// Makes `account_id` a member of `chat_id` as `role` (the role is rewritten only when it changed).
pub(crate) async fn join_chat(
    tx: &mut Tx,
    chat_id: &str,
    account_id: &str,
    role: Role,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sferum_members (chat_id, account_id, role, joined_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (chat_id, account_id) DO UPDATE SET role = excluded.role \
         WHERE sferum_members.role <> excluded.role",
    )
    .bind(chat_id)
    .bind(account_id)
    .bind(role.as_str())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct ChatRow {
    id: String,
    title: String,
    #[sqlx(try_from = "String")]
    kind: ChatKind,
    members: i64,
    /// For a direct conversation: the other member, and their profile's name if they have one.
    other_id: Option<String>,
    other: Option<String>,
}

/// Chats of `account_id`: its own memberships (lesson chats are reached through their lessons).
/// A direct conversation is titled with the other person's name; MAX names those without a profile.
pub async fn chats_of(db: &Db, dir: &impl Directory, account_id: &str) -> Result<Vec<Chat>, StoreError> {
    let rows: Vec<ChatRow> = sqlx::query_as(
        "SELECT c.id, c.title, c.kind, (SELECT COUNT(*) FROM sferum_members x WHERE x.chat_id = c.id) AS members, \
           CASE WHEN c.kind = 'direct' THEN (SELECT o.account_id FROM sferum_members o \
              WHERE o.chat_id = c.id AND o.account_id <> $1 LIMIT 1) END AS other_id, \
           CASE WHEN c.kind = 'direct' THEN (SELECT p.first_name || ' ' || p.last_name FROM sferum_members o \
              JOIN sferum_profiles p ON p.account_id = o.account_id \
              WHERE o.chat_id = c.id AND o.account_id <> $1 LIMIT 1) END AS other \
         FROM sferum_chats c JOIN sferum_members m ON m.chat_id = c.id WHERE m.account_id = $1 \
         ORDER BY CASE c.kind WHEN 'announcements' THEN 0 WHEN 'class' THEN 1 ELSE 2 END, c.title",
    )
    .bind(account_id)
    .fetch_all(db.pool())
    .await?;
    let unnamed: Vec<String> = rows
        .iter()
        .filter(|r| r.kind == ChatKind::Direct && r.other.is_none())
        .filter_map(|r| r.other_id.clone())
        .collect();
    let names = if unnamed.is_empty() { Default::default() } else { dir.names(&unnamed).await? };
    Ok(rows
        .into_iter()
        .map(|r| {
            let title = match r.kind {
                ChatKind::Direct => {
                    r.other.or_else(|| r.other_id.and_then(|id| names.get(&id)).map(|n| n.full())).unwrap_or_default()
                }
                _ => r.title,
            };
            Chat { id: r.id, title, kind: r.kind, members: r.members }
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct AccessRow {
    id: String,
    #[sqlx(try_from = "String")]
    kind: ChatKind,
    title: String,
    role: Option<String>,
    member: i64,
}

/// Whether `account_id` may reach chat `chat_id`, and as what. Lesson chats take their members from
/// their class chat, so leaving the class leaves its lessons too.
pub async fn access(
    db: &Db,
    dir: &impl Directory,
    chat_id: &str,
    account_id: &str,
) -> Result<Result<ChatAccess, Denied>, StoreError> {
    let row: Option<AccessRow> = sqlx::query_as(
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
    if r.member == 0 {
        return Ok(Err(Denied::NotMember));
    }
    let mut title = r.title;
    if r.kind == ChatKind::Direct {
        let mine = chats_of(db, dir, account_id).await?;
        title = mine.into_iter().find(|c| c.id == chat_id).map(|c| c.title).unwrap_or(title);
    }
    Ok(Ok(ChatAccess { id: r.id, kind: r.kind, title, role: r.role.as_deref().and_then(Role::parse) }))
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

#[derive(sqlx::FromRow)]
struct MemberRow {
    account_id: String,
    role: String,
    /// The profile's name; `None` for a member without a profile.
    name: Option<String>,
}

/// The members of a chat (of its class chat, for a lesson chat): teachers first, then by name.
pub async fn members(db: &Db, dir: &impl Directory, chat_id: &str) -> Result<Vec<Member>, StoreError> {
    let rows: Vec<MemberRow> = sqlx::query_as(
        "SELECT m.account_id, m.role, p.first_name || ' ' || p.last_name AS name \
         FROM sferum_chats c JOIN sferum_members m ON m.chat_id = COALESCE(c.parent_id, c.id) \
         LEFT JOIN sferum_profiles p ON p.account_id = m.account_id \
         WHERE c.id = $1",
    )
    .bind(chat_id)
    .fetch_all(db.pool())
    .await?;
    let unnamed: Vec<String> = rows.iter().filter(|r| r.name.is_none()).map(|r| r.account_id.clone()).collect();
    let names = if unnamed.is_empty() { Default::default() } else { dir.names(&unnamed).await? };
    let mut out: Vec<Member> = rows
        .into_iter()
        .filter_map(|r| {
            // A member MAX cannot name has no account any more: not listed.
            let name = r.name.or_else(|| names.get(&r.account_id).map(|n| n.full()))?;
            Some(Member { role: Role::parse(&r.role), account_id: r.account_id, name })
        })
        .collect();
    out.sort_by(|a, b| (a.role != Some(Role::Teacher), &a.name).cmp(&(b.role != Some(Role::Teacher), &b.name)));
    Ok(out)
}

/// Whether the two accounts are members of a common class chat.
pub(crate) async fn share_class(db: &Db, a: &str, b: &str) -> Result<bool, StoreError> {
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
