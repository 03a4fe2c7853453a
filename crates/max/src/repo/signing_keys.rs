//! The provider's signing keys (`signing_keys`): private keys sealed, public keys as published.

use edulink_store::{Db, StoreError, sqlx};

/// A stored signing key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SigningKeyRow {
    /// Key id.
    pub kid: String,
    /// JWS algorithm.
    pub alg: String,
    /// The PKCS#8 private key, sealed.
    pub private_enc: String,
    /// The raw public key, base64url.
    pub public_raw: String,
    /// The public JWK, JSON.
    pub public_jwk: String,
    /// Retirement time: retired keys only verify.
    pub retired_at: Option<i64>,
}

/// Every key, newest first.
pub async fn all_keys(db: &Db) -> Result<Vec<SigningKeyRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT kid, alg, private_enc, public_raw, public_jwk, retired_at FROM signing_keys ORDER BY created_at DESC",
    )
    .fetch_all(db.pool())
    .await?)
}

/// The algorithms that have an active key.
pub async fn active_algs(db: &Db) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT alg FROM signing_keys WHERE retired_at IS NULL").fetch_all(db.pool()).await?)
}

/// Stores a new active key.
pub async fn insert_key(tx: &mut edulink_store::Tx, key: &SigningKeyRow, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, alg, private_enc, public_raw, public_jwk, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&key.kid)
    .bind(&key.alg)
    .bind(&key.private_enc)
    .bind(&key.public_raw)
    .bind(&key.public_jwk)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// Deletes the keys retired before and retires the active ones.
pub async fn retire_active(tx: &mut edulink_store::Tx, now: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM signing_keys WHERE retired_at IS NOT NULL").execute(&mut *tx).await?;
    sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL").bind(now).execute(&mut *tx).await?;
    Ok(())
}
