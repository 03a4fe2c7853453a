//! The provider's signing keys (`signing_keys`): private keys sealed, public keys as published.
//! Writes run inside the rotation lock (`crate::keys::rotation`).

use edulink_store::{Db, StoreError, Tx, sqlx};

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
    /// From when the key signs (it is published from its creation).
    pub active_from: i64,
    /// From when the key no longer signs; it stays published for the retention period after.
    pub retired_at: Option<i64>,
}

/// Every key, newest first.
pub async fn all_keys(db: &Db) -> Result<Vec<SigningKeyRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT kid, alg, private_enc, public_raw, public_jwk, active_from, retired_at FROM signing_keys \
         ORDER BY created_at DESC, kid",
    )
    .fetch_all(db.pool())
    .await?)
}

/// The ids of every stored key, sorted: the "generation" running instances poll (a rotation and a
/// deletion both change it).
pub async fn kids(db: &Db) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT kid FROM signing_keys ORDER BY kid").fetch_all(db.pool()).await?)
}

/// The algorithms that have a key not retired (signing now or from a future `active_from`).
pub async fn unretired_algs(db: &Db) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT alg FROM signing_keys WHERE retired_at IS NULL").fetch_all(db.pool()).await?)
}

/// [`unretired_algs`] inside a transaction (re-checked under the lock).
pub async fn unretired_algs_in(tx: &mut Tx) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT alg FROM signing_keys WHERE retired_at IS NULL").fetch_all(&mut *tx).await?)
}

/// How many keys are stored (none: the very first start).
pub async fn count_in(tx: &mut Tx) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM signing_keys").fetch_one(&mut *tx).await?)
}

/// Stores a new key.
pub async fn insert_key(tx: &mut Tx, key: &SigningKeyRow, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, alg, private_enc, public_raw, public_jwk, created_at, active_from) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&key.kid)
    .bind(&key.alg)
    .bind(&key.private_enc)
    .bind(&key.public_raw)
    .bind(&key.public_jwk)
    .bind(now)
    .bind(key.active_from)
    .execute(tx)
    .await?;
    Ok(())
}

/// Deletes the keys retired before `cutoff`; returns how many.
pub async fn delete_retired_before(tx: &mut Tx, cutoff: i64) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < $1")
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
    Ok(done.rows_affected())
}

/// Retires every key not retired yet, from `at` on.
pub async fn retire_unretired(tx: &mut Tx, at: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL").bind(at).execute(&mut *tx).await?;
    Ok(())
}
