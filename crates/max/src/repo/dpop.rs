//! Storage of issue 16's item 10: keys that requests and codes are bound to (`dpop_bindings`),
//! DPoP proofs seen (`dpop_proofs`), pushed authorization requests (`pushed_requests`), and the
//! reads of `tokens` that DPoP and introspection need.

use edulink_store::{Db, StoreError, sqlx};

/// One write in this many also deletes the table's expired rows (indexed by expiry): the tables
/// stay as small as their live rows without a job of their own.
const PURGE_ONE_IN: u8 = 32;

fn purge_now() -> bool {
    edulink_domain::crypto::random_bytes(1)[0] < u8::MAX / PURGE_ONE_IN
}

/// Binds `binding` (`req:<id>` or `code:<hash>`) to the key `jkt` until `expires_at`.
pub async fn bind(tx: &mut edulink_store::Tx, binding: &str, jkt: &str, expires_at: i64) -> Result<(), StoreError> {
    if purge_now() {
        // Expired a day ago or more: a binding is never read after its request or code expired.
        sqlx::query("DELETE FROM dpop_bindings WHERE expires_at < $1")
            .bind(expires_at - 86_400)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "INSERT INTO dpop_bindings (binding, jkt, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (binding) DO UPDATE SET jkt = excluded.jkt, expires_at = excluded.expires_at",
    )
    .bind(binding)
    .bind(jkt)
    .bind(expires_at)
    .execute(tx)
    .await?;
    Ok(())
}

/// The key `binding` is bound to, if any.
pub async fn binding(
    ex: impl sqlx::Executor<'_, Database = sqlx::Any>,
    binding: &str,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT jkt FROM dpop_bindings WHERE binding = $1").bind(binding).fetch_optional(ex).await?)
}

/// Records a proof (by the hash of its key and `jti`); false when it was seen before. Now and
/// then, proofs too old to be accepted anyway are forgotten.
pub async fn record_proof(db: &Db, id: &str, expires_at: i64, now: i64) -> Result<bool, StoreError> {
    if purge_now() {
        db.execute(sqlx::query("DELETE FROM dpop_proofs WHERE expires_at < $1").bind(now)).await?;
    }
    let done = db
        .execute(
            sqlx::query("INSERT INTO dpop_proofs (id, expires_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
                .bind(id)
                .bind(expires_at),
        )
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The client and key of a live, unrotated refresh token.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshBinding {
    /// The client it was issued to.
    pub client_id: String,
    /// The key it is bound to.
    pub jkt: Option<String>,
}

/// What a refresh token is bound to, read before it is rotated.
pub async fn refresh_binding(db: &Db, token_hash: &str, now: i64) -> Result<Option<RefreshBinding>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT client_id, jkt FROM tokens WHERE token_hash = $1 AND kind = 'refresh' AND rotated_at IS NULL \
           AND revoked_at IS NULL AND expires_at > $2",
    )
    .bind(token_hash)
    .bind(now)
    .fetch_optional(db.pool())
    .await?)
}

/// A live token as introspection and resource servers see it (RFC 7662 §2.2).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LiveToken {
    /// `access` or `refresh`.
    pub kind: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The grant (none for client credentials).
    pub grant_id: Option<String>,
    /// The account (none for client credentials).
    pub account_id: Option<String>,
    /// Scopes, space-separated.
    pub scope: String,
    /// Issue time.
    pub created_at: i64,
    /// Expiry.
    pub expires_at: i64,
    /// The key it is bound to.
    pub jkt: Option<String>,
}

/// A live token (unexpired, unrevoked, a refresh token not rotated) by its hash.
pub async fn live_token(db: &Db, token_hash: &str, now: i64) -> Result<Option<LiveToken>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT kind, client_id, grant_id, account_id, scope, created_at, expires_at, jkt FROM tokens \
         WHERE token_hash = $1 AND revoked_at IS NULL AND rotated_at IS NULL AND expires_at > $2",
    )
    .bind(token_hash)
    .bind(now)
    .fetch_optional(db.pool())
    .await?)
}

/// Stores a pushed authorization request (its parameters as a form string) for `client_id`.
pub async fn push_request(
    db: &Db,
    uri_hash: &str,
    client_id: &str,
    params: &str,
    expires_at: i64,
) -> Result<(), StoreError> {
    if purge_now() {
        db.execute(sqlx::query("DELETE FROM pushed_requests WHERE expires_at < $1").bind(expires_at - 86_400)).await?;
    }
    db.execute(
        sqlx::query("INSERT INTO pushed_requests (uri_hash, client_id, params, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(uri_hash)
            .bind(client_id)
            .bind(params)
            .bind(expires_at),
    )
    .await?;
    Ok(())
}

/// Takes a live pushed request of `client_id` (marks it used); `None` when unknown, used, expired
/// or pushed by another client.
pub async fn take_pushed_request(
    db: &Db,
    uri_hash: &str,
    client_id: &str,
    now: i64,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE pushed_requests SET used_at = $3 WHERE uri_hash = $1 AND client_id = $2 AND used_at IS NULL \
           AND expires_at > $3 RETURNING params",
    )
    .bind(uri_hash)
    .bind(client_id)
    .bind(now)
    .fetch_optional(db.writer())
    .await?)
}
