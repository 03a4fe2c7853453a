//! The keys' life across instances (docs/deployment.md, «Keys and secrets»):
//!
//! * Creation and rotation run in one write transaction under a database lock (PostgreSQL: an
//!   advisory transaction lock; SQLite: the write lock `BEGIN IMMEDIATE` takes), re-checking the
//!   keys inside it: instances starting together on an empty database create one key per algorithm.
//! * A rotated key is published at once and signs only [`ACTIVATION_DELAY_SECS`] later; running
//!   instances poll the key ids every [`POLL_INTERVAL`], so every instance publishes a key before any
//!   instance signs with it (as Keycloak's and Hydra's "next" keys). Until then the previous key signs.
//! * A retired key stays published for [`retention_secs`] after it stopped signing: the longest a
//!   token or a stored `id_token_hint` it signed is still in use. [`rotate`] deletes only keys retired
//!   longer ago than that.

use super::{ALGS, generate};
use crate::repo::signing_keys::{self, SigningKeyRow};
use crate::{MaxConfig, StartError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use edulink_domain::Cipher;
use edulink_domain::crypto::random_token;
use edulink_store::{Backend, Db, Tx, sqlx};
use std::time::Duration;

/// How often running instances look for keys created or deleted by another process.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// A rotated key signs this long after the rotation: four poll intervals, so every instance has
/// published it (polled, read and parsed it) before any instance signs with it.
pub const ACTIVATION_DELAY_SECS: i64 = 20;

/// How long the diary keeps a stored ID token as its hint before replacing it on a sign-in, at most
/// (`crates/diary/src/pages/link.rs`; a newer signing key replaces it at once).
pub const HINT_REFRESH_SECS: i64 = 86_400;

/// The advisory lock id of key creation and rotation (PostgreSQL); migrations use 7319001.
const KEYS_LOCK: i64 = 7_319_002;

/// How long a retired key stays published after it stopped signing: the longest-lived token or hint
/// it signed — refresh and ID token lifetimes and the diary's hint refresh period, whichever is
/// longest (30 days with the defaults). A student who signs in at least once in that time holds a
/// hint signed by a published key; an older hint is ignored (OIDC Core §3.1.2.1) and the sign-in
/// goes on as without one.
pub fn retention_secs(cfg: &MaxConfig) -> i64 {
    [cfg.refresh_token_ttl, cfg.id_token_ttl, cfg.access_token_ttl, HINT_REFRESH_SECS].into_iter().max().unwrap_or(0)
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The new keys' ids.
    pub kids: Vec<String>,
    /// When they start signing (Unix seconds).
    pub active_from: i64,
    /// Keys deleted because they were retired longer ago than the retention period.
    pub deleted: u64,
}

/// Starts a write transaction holding the keys lock.
async fn locked(db: &Db) -> Result<Tx, StartError> {
    let mut tx = db.begin().await?;
    if db.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(KEYS_LOCK)
            .execute(&mut tx)
            .await
            .map_err(edulink_store::StoreError::from)?;
    }
    Ok(tx)
}

/// Creates new keys for every algorithm, signing from [`ACTIVATION_DELAY_SECS`] on; the current ones
/// sign until then and stay published for `retention` seconds after. Keys retired longer ago than
/// `retention` are deleted. (`edulink keys rotate` calls this.)
pub async fn rotate(db: &Db, cipher: &Cipher, now: i64, retention: i64) -> Result<Rotation, StartError> {
    let mut tx = locked(db).await?;
    let deleted = signing_keys::delete_retired_before(&mut tx, now - retention).await?;
    let active_from = now + ACTIVATION_DELAY_SECS;
    signing_keys::retire_unretired(&mut tx, active_from).await?;
    let mut kids = Vec::new();
    for alg in ALGS {
        kids.push(insert_new(&mut tx, cipher, alg, now, active_from).await?);
    }
    tx.commit().await?;
    Ok(Rotation { kids, active_from, deleted })
}

/// Creates a key for every algorithm that has none, under the lock (the check is repeated inside it,
/// so instances starting together create one key each). On an empty database the keys sign at once:
/// nobody can have published anything yet.
pub async fn ensure_keys(db: &Db, cipher: &Cipher, now: i64) -> Result<(), StartError> {
    let missing = |have: &[String]| -> Vec<&'static str> {
        ALGS.iter().copied().filter(|a| !have.iter().any(|x| x == a)).collect()
    };
    if missing(&signing_keys::unretired_algs(db).await?).is_empty() {
        return Ok(());
    }
    let mut tx = locked(db).await?;
    let missing = missing(&signing_keys::unretired_algs_in(&mut tx).await?);
    if missing.is_empty() {
        tx.rollback().await?;
        return Ok(());
    }
    let active_from = if signing_keys::count_in(&mut tx).await? == 0 { now } else { now + ACTIVATION_DELAY_SECS };
    for alg in missing {
        insert_new(&mut tx, cipher, alg, now, active_from).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn insert_new(tx: &mut Tx, cipher: &Cipher, alg: &str, now: i64, active_from: i64) -> Result<String, StartError> {
    let (der, public_raw, mut jwk) = generate(alg).map_err(StartError::Keys)?;
    let kid = random_token(12);
    jwk["kid"] = kid.clone().into();
    jwk["alg"] = alg.into();
    jwk["use"] = "sig".into();
    let row = SigningKeyRow {
        kid,
        alg: alg.to_string(),
        private_enc: cipher.seal("signing_keys.private", &der),
        public_raw: B64.encode(&public_raw),
        public_jwk: jwk.to_string(),
        active_from,
        retired_at: None,
    };
    signing_keys::insert_key(tx, &row, now).await?;
    Ok(row.kid)
}
