//! MAX's audit trail: what happened, when, from which IP and client, about which pseudonymous
//! account id. Never a phone number, a code or a token.

use edulink_domain::crypto::new_id;
use edulink_store::{Db, StoreError, sqlx};

/// The audit insert, for either executor.
fn insert<'q>(
    now: i64,
    event: &'q str,
    account: Option<&'q str>,
    client: Option<&'q str>,
    ip: Option<&'q str>,
    detail: Option<&'q str>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query("INSERT INTO audit (id, at, event, account, client_id, ip, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(new_id())
        .bind(now)
        .bind(event)
        .bind(account)
        .bind(client)
        .bind(ip)
        .bind(detail)
}

/// Writes one audit record inside the caller's transaction: it commits with the change it records
/// (one commit instead of two), and a failure fails the change.
pub async fn record_in(
    tx: &mut edulink_store::Tx,
    now: i64,
    event: &str,
    account: Option<&str>,
    client: Option<&str>,
    ip: Option<&str>,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    insert(now, event, account, client, ip, detail).execute(&mut *tx).await?;
    tracing::info!(event, account, client, "audit");
    Ok(())
}

/// Writes one audit record. A failure is logged and swallowed: auditing must not turn a completed
/// security action into an error for the user, but it is alerted on through the log.
pub async fn record(
    db: &Db,
    now: i64,
    event: &str,
    account: Option<&str>,
    client: Option<&str>,
    ip: Option<&str>,
    detail: Option<&str>,
) {
    match db.execute(insert(now, event, account, client, ip, detail)).await {
        Ok(_) => tracing::info!(event, account, client, "audit"),
        Err(e) => tracing::error!(event, error = %e, "audit record not written"),
    }
}
