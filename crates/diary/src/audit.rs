//! The diary's audit trail; also the source of the «Безопасность» history. Pseudonymous ids only.

use edulink_domain::crypto::new_id;
use edulink_store::{Db, StoreError, sqlx};

/// Writes one record (failure is logged, not raised: the action it records already happened).
/// The audit insert, for either executor.
fn insert<'q>(
    now: i64,
    event: &'q str,
    user_id: Option<&'q str>,
    subject: Option<&'q str>,
    ip: Option<&'q str>,
    detail: Option<&'q str>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query("INSERT INTO audit (id, at, event, user_id, subject, ip, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(new_id())
        .bind(now)
        .bind(event)
        .bind(user_id)
        .bind(subject)
        .bind(ip)
        .bind(detail)
}

/// Writes one audit record inside the caller's transaction: it commits with the change it records
/// (one commit instead of two), and a failure fails the change.
pub async fn record_in(
    tx: &mut edulink_store::Tx,
    now: i64,
    event: &str,
    user_id: Option<&str>,
    subject: Option<&str>,
    ip: Option<&str>,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    insert(now, event, user_id, subject, ip, detail).execute(&mut *tx).await?;
    tracing::info!(event, user = user_id, "audit");
    Ok(())
}

/// Writes one audit record on its own.
pub async fn record(
    db: &Db,
    now: i64,
    event: &str,
    user_id: Option<&str>,
    subject: Option<&str>,
    ip: Option<&str>,
    detail: Option<&str>,
) {
    match db.execute(insert(now, event, user_id, subject, ip, detail)).await {
        Ok(_) => tracing::info!(event, user = user_id, "audit"),
        Err(e) => tracing::error!(event, error = %e, "audit record not written"),
    }
}

/// One event of a user's security history.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Event {
    /// Event name (`link`, `unlink`, `login`, …).
    pub event: String,
    /// When.
    pub at: i64,
}

/// The newest security events of a user.
pub async fn history(db: &Db, user_id: &str) -> Result<Vec<Event>, StoreError> {
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
pub struct Record {
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
pub async fn newest(db: &Db, limit: i64) -> Result<Vec<Record>, StoreError> {
    Ok(sqlx::query_as("SELECT at, event, user_id, subject, ip FROM audit ORDER BY at DESC LIMIT $1")
        .bind(limit)
        .fetch_all(db.pool())
        .await?)
}
