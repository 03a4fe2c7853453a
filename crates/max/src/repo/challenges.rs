//! SMS challenges (`sms_challenges`): one code sent to one phone for one browser session.

use edulink_store::{Db, StoreError, sqlx};

/// An SMS challenge: one code sent to one phone for one browser session.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Challenge {
    /// Id (random).
    pub id: String,
    /// The session it is bound to.
    pub session_hash: String,
    /// The phone's lookup hash.
    pub phone_hash: String,
    /// The phone, encrypted.
    pub phone_enc: String,
    /// Expiry.
    pub expires_at: i64,
}

/// Stores a new challenge with the MAC of its code.
pub async fn create_challenge(
    tx: &mut edulink_store::Tx,
    c: &Challenge,
    code_mac: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sms_challenges (id, session_hash, phone_hash, phone_enc, code_mac, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&c.id)
    .bind(&c.session_hash)
    .bind(&c.phone_hash)
    .bind(&c.phone_enc)
    .bind(code_mac)
    .bind(now)
    .bind(c.expires_at)
    .execute(tx)
    .await?;
    Ok(())
}

/// Loads the challenge `id` if it belongs to session `session_hash`.
pub async fn challenge(db: &Db, id: &str, session_hash: &str) -> Result<Option<Challenge>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, session_hash, phone_hash, phone_enc, expires_at FROM sms_challenges WHERE id = $1 AND session_hash = $2",
    )
    .bind(id)
    .bind(session_hash)
    .fetch_optional(db.pool())
    .await?)
}

/// Atomically takes one guess from a live challenge (unused, unexpired, under the attempt cap) and
/// returns the stored code MAC and the guesses taken so far, this one included; `None` when the code
/// is dead. Concurrent guesses cannot exceed the cap: the check and the increment are one statement.
pub async fn take_attempt(
    tx: &mut edulink_store::Tx,
    id: &str,
    now: i64,
    max_attempts: i64,
) -> Result<Option<(String, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "UPDATE sms_challenges SET attempts = attempts + 1 \
         WHERE id = $1 AND used_at IS NULL AND expires_at > $2 AND attempts < $3 RETURNING code_mac, attempts",
    )
    .bind(id)
    .bind(now)
    .bind(max_attempts)
    .fetch_optional(tx)
    .await?)
}

/// Marks a challenge used; false when another request used it first.
pub async fn use_challenge(tx: &mut edulink_store::Tx, id: &str, now: i64) -> Result<bool, StoreError> {
    let n = sqlx::query("UPDATE sms_challenges SET used_at = $1 WHERE id = $2 AND used_at IS NULL")
        .bind(now)
        .bind(id)
        .execute(tx)
        .await?
        .rows_affected();
    Ok(n == 1)
}
