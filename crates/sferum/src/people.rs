//! People: search by name or phone, and direct conversations, under safe mode.

use crate::chats::share_class;
use crate::profiles::FactsRow;
use crate::{Directory, Facts, facts};
use edulink_domain::crypto::new_id;
use edulink_domain::provisioning::Role;
use edulink_domain::sferum::{can_message, can_see};
use edulink_store::{Db, StoreError, sqlx};

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

#[derive(sqlx::FromRow)]
struct FoundRow {
    account_id: String,
    #[sqlx(flatten)]
    facts: FactsRow,
    school_name: Option<String>,
    name: String,
}

/// The first `limit` of `rows` that `viewer` may see.
fn visible(rows: Vec<FoundRow>, viewer: &Facts, limit: usize) -> Vec<Found> {
    rows.into_iter()
        .filter_map(|r| {
            let target = Facts::from(r.facts);
            // The rule decides; the query only narrows.
            can_see(&viewer.person(), &target.person()).then(|| Found {
                account_id: r.account_id,
                name: r.name,
                role: target.role.unwrap_or(Role::Student),
                school_name: r.school_name,
            })
        })
        .take(limit)
        .collect()
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
    let rows: Vec<FoundRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(format!("%{escaped}%"))
        .bind(viewer_id)
        .bind(viewer.school_key.clone().unwrap_or_default())
        .fetch_all(db.pool())
        .await?;
    Ok(visible(rows, &viewer, 20))
}

/// The profile of `account_id` (found by phone), if `viewer_id` may see it under safe mode.
pub async fn find_account(db: &Db, viewer_id: &str, account_id: &str) -> Result<Option<Found>, StoreError> {
    let viewer = facts(db, viewer_id).await?;
    let sql = format!("{FOUND_SELECT} WHERE account_id = $1");
    let rows: Vec<FoundRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(account_id).fetch_all(db.pool()).await?;
    Ok(visible(rows, &viewer, 1).into_iter().next())
}

/// Opens (or reopens) the direct conversation of `sender` with `target`, if safe mode allows it.
/// Returns the chat id, or `None` when refused (or when `target` is no MAX account).
pub async fn open_direct(
    db: &Db,
    dir: &impl Directory,
    sender: &str,
    target: &str,
    now: i64,
) -> Result<Option<String>, StoreError> {
    if sender == target {
        return Ok(None);
    }
    let (s, t) = (facts(db, sender).await?, facts(db, target).await?);
    // A profile belongs to an existing account; only a target without one is asked of MAX.
    let exists = t.role.is_some() || dir.names(&[target.to_owned()]).await?.contains_key(target);
    if !exists || !can_message(&s.person(), &t.person(), share_class(db, sender, target).await?) {
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
