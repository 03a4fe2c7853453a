//! The diary's audit trail; also the source of the «Безопасность» history. Pseudonymous ids only.

use edulink_store::{Db, StoreError, sqlx};
pub use edulink_web::audit::{Event, Record};

/// The diary's audit table, written through the one writer both parties share (`edulink_web::audit`).
pub const TRAIL: edulink_web::audit::Trail = edulink_web::audit::Trail::DIARY;

/// One event of a user's security history.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HistoryEntry {
    /// Event name (`link`, `unlink`, `login`, …).
    pub event: String,
    /// When.
    pub at: i64,
}

/// The newest security events of a user.
pub async fn history(db: &Db, user_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT event, at FROM audit WHERE user_id = $1 AND event IN ('link', 'unlink', 'link_conflict', 'login') \
         ORDER BY at DESC, id LIMIT 10",
    )
    .bind(user_id)
    .fetch_all(db.pool())
    .await?)
}

/// One audit record, as support reads the trail.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TrailRow {
    /// When, Unix seconds.
    pub at: i64,
    /// Event name.
    pub event: String,
    /// The diary user, if any.
    pub user_id: Option<String>,
    /// The subject at MAX, if any.
    pub subject: Option<String>,
    /// The client address, if any.
    pub ip: Option<String>,
}

/// The newest `limit` records of the whole trail, newest first.
pub async fn newest(db: &Db, limit: i64) -> Result<Vec<TrailRow>, StoreError> {
    Ok(sqlx::query_as("SELECT at, event, user_id, subject, ip FROM audit ORDER BY at DESC LIMIT $1")
        .bind(limit)
        .fetch_all(db.pool())
        .await?)
}

/// One record of a user's journey, as `edulink admin trace` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JourneyRow {
    /// When, Unix seconds.
    pub at: i64,
    /// Event name.
    pub event: String,
    /// The subject at MAX, if any.
    pub subject: Option<String>,
    /// The short detail (a reason, a channel, the operator).
    pub detail: Option<String>,
}

/// The records of `user_id` (and those about its links' subjects, such as a failed revocation
/// after the link was gone) since `since`, oldest first, and every pairwise subject the user has
/// had (current and past links): MAX's side of the journey joins on them.
pub async fn journey(db: &Db, user_id: &str, since: i64) -> Result<(Vec<JourneyRow>, Vec<String>), StoreError> {
    let rows = sqlx::query_as(
        "SELECT at, event, subject, detail FROM audit WHERE at >= $2 AND (user_id = $1 OR subject IN \
         (SELECT subject FROM links WHERE user_id = $1 \
          UNION SELECT subject FROM audit WHERE user_id = $1 AND subject IS NOT NULL)) ORDER BY at, id",
    )
    .bind(user_id)
    .bind(since)
    .fetch_all(db.pool())
    .await?;
    let subjects = sqlx::query_scalar(
        "SELECT subject FROM links WHERE user_id = $1 \
         UNION SELECT subject FROM audit WHERE user_id = $1 AND subject IS NOT NULL",
    )
    .bind(user_id)
    .fetch_all(db.pool())
    .await?;
    Ok((rows, subjects))
}
