//! Sessions at MAX (`sessions`): a browser's (cookie) or the app's (bearer token), anonymous until
//! sign-in, replaced on sign-in. One purpose per credential: a session is found only by the kind
//! of credential that created it, so a browser cookie is no bearer token and the reverse.

use edulink_domain::crypto::{random_token, sha256_b64};
use edulink_store::{Db, StoreError, sqlx};

/// Which credential carries a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A browser's `max_sid` cookie.
    Web,
    /// The app's bearer token (`/api/v1`).
    App,
}

impl SessionKind {
    /// The stored form (`sessions.kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Web => "web",
            SessionKind::App => "app",
        }
    }
}

/// A stored kind that this build does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown session kind {0:?}")]
pub struct UnknownSessionKind(String);

impl TryFrom<String> for SessionKind {
    type Error = UnknownSessionKind;
    fn try_from(s: String) -> Result<Self, UnknownSessionKind> {
        match s.as_str() {
            "web" => Ok(SessionKind::Web),
            "app" => Ok(SessionKind::App),
            _ => Err(UnknownSessionKind(s)),
        }
    }
}

/// A session at MAX, anonymous until sign-in.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Session {
    /// SHA-256 of the cookie value or bearer token.
    pub id_hash: String,
    /// The credential that carries it.
    #[sqlx(try_from = "String")]
    pub kind: SessionKind,
    /// The signed-in account.
    pub account_id: Option<String>,
    /// The CSRF token of this session's forms.
    pub csrf: String,
    /// The SMS challenge this browser is answering.
    pub challenge_id: Option<String>,
    /// A phone whose code was verified but which has no account yet (registration pending).
    pub verified_phone_hash: Option<String>,
    /// The same phone, encrypted.
    pub verified_phone_enc: Option<String>,
    /// The authorization request this browser is completing.
    pub pending_request: Option<String>,
    /// Last request, Unix seconds.
    pub last_seen_at: i64,
    /// Sign-in time.
    pub auth_at: Option<i64>,
}

/// Anonymous sessions (mid sign-in) end after this long without requests.
pub const ANON_IDLE_SECS: i64 = 3600;

/// Loads a live session of `kind` by its cookie value or bearer token; expired ones are deleted.
pub async fn load_session(
    db: &Db,
    raw: &str,
    kind: SessionKind,
    now: i64,
    idle: i64,
    absolute: i64,
) -> Result<Option<Session>, StoreError> {
    if raw.len() != 43 {
        return Ok(None);
    }
    let hash = sha256_b64(raw);
    let found: Option<Session> = sqlx::query_as(
        "SELECT id_hash, kind, account_id, csrf, challenge_id, verified_phone_hash, verified_phone_enc, \
           pending_request, last_seen_at, auth_at FROM sessions WHERE id_hash = $1 AND kind = $2",
    )
    .bind(&hash)
    .bind(kind.as_str())
    .fetch_optional(db.pool())
    .await?;
    let Some(s) = found else { return Ok(None) };
    let idle_limit = if s.account_id.is_some() { idle } else { ANON_IDLE_SECS };
    let expired = s.last_seen_at + idle_limit < now || s.auth_at.is_some_and(|a| a + absolute < now);
    if expired {
        delete_session(db, &hash).await?;
        return Ok(None);
    }
    if now - s.last_seen_at >= 60 {
        // Touch at most once a minute: a write per request would bound throughput for nothing.
        db.execute(sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2").bind(now).bind(&hash))
            .await?;
    }
    Ok(Some(s))
}

/// Creates an anonymous browser session; returns the cookie value and the session.
pub async fn create_session(db: &Db, now: i64, pending_request: Option<&str>) -> Result<(String, Session), StoreError> {
    let mut tx = db.begin().await?;
    let created = create_session_in(&mut tx, now, pending_request).await?;
    tx.commit().await?;
    Ok(created)
}

/// Creates an anonymous app session (a sign-in by the app); returns the bearer token and the session.
pub async fn create_app_session(db: &Db, now: i64) -> Result<(String, Session), StoreError> {
    let mut tx = db.begin().await?;
    let created = insert_anonymous(&mut tx, SessionKind::App, now, None).await?;
    tx.commit().await?;
    Ok(created)
}

/// [`create_session`] inside the caller's transaction.
pub async fn create_session_in(
    tx: &mut edulink_store::Tx,
    now: i64,
    pending_request: Option<&str>,
) -> Result<(String, Session), StoreError> {
    insert_anonymous(tx, SessionKind::Web, now, pending_request).await
}

async fn insert_anonymous(
    tx: &mut edulink_store::Tx,
    kind: SessionKind,
    now: i64,
    pending_request: Option<&str>,
) -> Result<(String, Session), StoreError> {
    let raw = random_token(32);
    let s = Session {
        id_hash: sha256_b64(&raw),
        kind,
        account_id: None,
        csrf: random_token(32),
        challenge_id: None,
        verified_phone_hash: None,
        verified_phone_enc: None,
        pending_request: pending_request.map(str::to_owned),
        last_seen_at: now,
        auth_at: None,
    };
    sqlx::query(
        "INSERT INTO sessions (id_hash, kind, csrf, pending_request, created_at, last_seen_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(&s.id_hash)
    .bind(kind.as_str())
    .bind(&s.csrf)
    .bind(&s.pending_request)
    .bind(now)
    .execute(tx)
    .await?;
    Ok((raw, s))
}

/// Replaces `old` by a new session of the same kind signed in as `account_id` (new id, new CSRF
/// token), keeping the pending authorization request: session fixation cannot survive sign-in.
pub async fn sign_in(db: &Db, old: &Session, account_id: &str, now: i64) -> Result<(String, Session), StoreError> {
    let mut tx = db.begin().await?;
    let signed_in = sign_in_in(&mut tx, old, account_id, now).await?;
    tx.commit().await?;
    Ok(signed_in)
}

/// [`sign_in`] inside the caller's transaction.
pub async fn sign_in_in(
    tx: &mut edulink_store::Tx,
    old: &Session,
    account_id: &str,
    now: i64,
) -> Result<(String, Session), StoreError> {
    let raw = random_token(32);
    let s = Session {
        id_hash: sha256_b64(&raw),
        kind: old.kind,
        account_id: Some(account_id.to_owned()),
        csrf: random_token(32),
        challenge_id: None,
        verified_phone_hash: None,
        verified_phone_enc: None,
        pending_request: old.pending_request.clone(),
        last_seen_at: now,
        auth_at: Some(now),
    };
    delete_session_in(tx, &old.id_hash).await?;
    sqlx::query(
        "INSERT INTO sessions (id_hash, kind, account_id, csrf, pending_request, created_at, last_seen_at, auth_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6, $6)",
    )
    .bind(&s.id_hash)
    .bind(s.kind.as_str())
    .bind(account_id)
    .bind(&s.csrf)
    .bind(&s.pending_request)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok((raw, s))
}

/// Deletes a session (sign-out is server-side).
pub async fn delete_session(db: &Db, id_hash: &str) -> Result<(), StoreError> {
    db.execute(sqlx::query("DELETE FROM sessions WHERE id_hash = $1").bind(id_hash)).await?;
    Ok(())
}

/// [`delete_session`] inside the caller's transaction.
pub async fn delete_session_in(tx: &mut edulink_store::Tx, id_hash: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM sessions WHERE id_hash = $1").bind(id_hash).execute(tx).await?;
    Ok(())
}

/// Sets the SMS challenge of a session (and forgets a verified phone from an earlier attempt).
pub async fn set_challenge(
    tx: &mut edulink_store::Tx,
    id_hash: &str,
    challenge_id: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE sessions SET challenge_id = $1, verified_phone_hash = NULL, verified_phone_enc = NULL WHERE id_hash = $2",
    )
    .bind(challenge_id)
    .bind(id_hash)
    .execute(tx)
    .await?;
    Ok(())
}

/// Records that this session proved control of a phone that has no account yet.
pub async fn set_verified_phone(
    tx: &mut edulink_store::Tx,
    id_hash: &str,
    phone_hash: &str,
    phone_enc: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE sessions SET challenge_id = NULL, verified_phone_hash = $1, verified_phone_enc = $2 WHERE id_hash = $3",
    )
    .bind(phone_hash)
    .bind(phone_enc)
    .bind(id_hash)
    .execute(tx)
    .await?;
    Ok(())
}

/// Sets or clears the pending authorization request of a session.
pub async fn set_pending_request(
    tx: &mut edulink_store::Tx,
    id_hash: &str,
    request: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE sessions SET pending_request = $1 WHERE id_hash = $2")
        .bind(request)
        .bind(id_hash)
        .execute(tx)
        .await?;
    Ok(())
}

/// True while the session `id_hash` exists and is signed in (sign-out and expiry delete it).
pub async fn session_alive(db: &Db, id_hash: &str) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE id_hash = $1 AND account_id IS NOT NULL")
        .bind(id_hash)
        .fetch_one(db.pool())
        .await?;
    Ok(n > 0)
}
