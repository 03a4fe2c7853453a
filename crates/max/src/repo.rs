//! MAX's storage of accounts, browser sessions and SMS challenges.

use edulink_domain::crypto::{new_id, random_token, sha256_b64};
use edulink_store::{Db, Row, StoreError, sqlx};

/// A MAX account.
#[derive(Debug, Clone)]
pub struct Account {
    /// Random id (pseudonymous).
    pub id: String,
    /// Phone, encrypted.
    pub phone_enc: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
}

/// A browser session at MAX, anonymous until sign-in.
#[derive(Debug, Clone)]
pub struct Session {
    /// SHA-256 of the cookie value.
    pub id_hash: String,
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

const SESSION_COLS: &str = "id_hash, account_id, csrf, challenge_id, verified_phone_hash, verified_phone_enc, pending_request, last_seen_at, auth_at";

fn session_from(r: &sqlx::any::AnyRow) -> Result<Session, sqlx::Error> {
    Ok(Session {
        id_hash: r.try_get("id_hash")?,
        account_id: r.try_get("account_id")?,
        csrf: r.try_get("csrf")?,
        challenge_id: r.try_get("challenge_id")?,
        verified_phone_hash: r.try_get("verified_phone_hash")?,
        verified_phone_enc: r.try_get("verified_phone_enc")?,
        pending_request: r.try_get("pending_request")?,
        last_seen_at: r.try_get("last_seen_at")?,
        auth_at: r.try_get("auth_at")?,
    })
}

/// Anonymous sessions (mid sign-in) end after this long without requests.
pub const ANON_IDLE_SECS: i64 = 3600;

/// Loads a live session by its cookie value; expired ones are deleted.
pub async fn load_session(
    db: &Db,
    raw: &str,
    now: i64,
    idle: i64,
    absolute: i64,
) -> Result<Option<Session>, StoreError> {
    if raw.len() != 43 {
        return Ok(None);
    }
    let hash = sha256_b64(raw);
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {SESSION_COLS} FROM sessions WHERE id_hash = $1")))
        .bind(&hash)
        .fetch_optional(db.pool())
        .await?;
    let Some(row) = row else { return Ok(None) };
    let s = session_from(&row)?;
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

/// Creates an anonymous session; returns the cookie value and the session.
pub async fn create_session(db: &Db, now: i64, pending_request: Option<&str>) -> Result<(String, Session), StoreError> {
    let mut tx = db.begin().await?;
    let created = create_session_in(&mut tx, now, pending_request).await?;
    tx.commit().await?;
    Ok(created)
}

/// [`create_session`] inside the caller's transaction.
pub async fn create_session_in(
    tx: &mut edulink_store::Tx,
    now: i64,
    pending_request: Option<&str>,
) -> Result<(String, Session), StoreError> {
    let raw = random_token(32);
    let s = Session {
        id_hash: sha256_b64(&raw),
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
        "INSERT INTO sessions (id_hash, csrf, pending_request, created_at, last_seen_at) VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(&s.id_hash)
    .bind(&s.csrf)
    .bind(&s.pending_request)
    .bind(now)
    .execute(tx)
    .await?;
    Ok((raw, s))
}

/// Replaces `old` by a new session signed in as `account_id` (new id, new CSRF token), keeping the
/// pending authorization request: session fixation cannot survive sign-in.
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
        account_id: Some(account_id.to_owned()),
        csrf: random_token(32),
        challenge_id: None,
        verified_phone_hash: None,
        verified_phone_enc: None,
        pending_request: old.pending_request.clone(),
        last_seen_at: now,
        auth_at: Some(now),
    };
    sqlx::query("DELETE FROM sessions WHERE id_hash = $1").bind(&old.id_hash).execute(&mut *tx).await?;
    sqlx::query(
        "INSERT INTO sessions (id_hash, account_id, csrf, pending_request, created_at, last_seen_at, auth_at) \
         VALUES ($1, $2, $3, $4, $5, $5, $5)",
    )
    .bind(&s.id_hash)
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

fn account_from(r: &sqlx::any::AnyRow) -> Result<Account, sqlx::Error> {
    Ok(Account {
        id: r.try_get("id")?,
        phone_enc: r.try_get("phone_enc")?,
        first_name: r.try_get("first_name")?,
        last_name: r.try_get("last_name")?,
    })
}

/// The account with this phone hash.
pub async fn account_by_phone(
    ex: impl sqlx::Executor<'_, Database = sqlx::Any>,
    phone_hash: &str,
) -> Result<Option<Account>, StoreError> {
    let row = sqlx::query("SELECT id, phone_enc, first_name, last_name FROM accounts WHERE phone_hash = $1")
        .bind(phone_hash)
        .fetch_optional(ex)
        .await?;
    Ok(row.as_ref().map(account_from).transpose()?)
}

/// The account with this id.
pub async fn account(db: &Db, id: &str) -> Result<Option<Account>, StoreError> {
    let row = sqlx::query("SELECT id, phone_enc, first_name, last_name FROM accounts WHERE id = $1")
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.as_ref().map(account_from).transpose()?)
}

/// Creates an account; a concurrent registration of the same phone gives `StoreError::Conflict`.
pub async fn create_account(
    tx: &mut edulink_store::Tx,
    phone_hash: &str,
    phone_enc: &str,
    first: &str,
    last: &str,
    now: i64,
) -> Result<Account, StoreError> {
    let id = new_id();
    sqlx::query(
        "INSERT INTO accounts (id, phone_hash, phone_enc, first_name, last_name, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(phone_hash)
    .bind(phone_enc)
    .bind(first)
    .bind(last)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(Account { id, phone_enc: phone_enc.into(), first_name: first.into(), last_name: last.into() })
}

/// An SMS challenge: one code sent to one phone for one browser session.
#[derive(Debug, Clone)]
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
    let row = sqlx::query(
        "SELECT id, session_hash, phone_hash, phone_enc, expires_at FROM sms_challenges WHERE id = $1 AND session_hash = $2",
    )
    .bind(id)
    .bind(session_hash)
    .fetch_optional(db.pool())
    .await?;
    row.map(|r| -> Result<Challenge, sqlx::Error> {
        Ok(Challenge {
            id: r.try_get("id")?,
            session_hash: r.try_get("session_hash")?,
            phone_hash: r.try_get("phone_hash")?,
            phone_enc: r.try_get("phone_enc")?,
            expires_at: r.try_get("expires_at")?,
        })
    })
    .transpose()
    .map_err(Into::into)
}

/// Atomically takes one guess from a live challenge (unused, unexpired, under the attempt cap) and
/// returns the stored code MAC; `None` when the code is dead. Concurrent guesses cannot exceed the cap:
/// the check and the increment are one statement.
pub async fn take_attempt(
    tx: &mut edulink_store::Tx,
    id: &str,
    now: i64,
    max_attempts: i64,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE sms_challenges SET attempts = attempts + 1 \
         WHERE id = $1 AND used_at IS NULL AND expires_at > $2 AND attempts < $3 RETURNING code_mac",
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

/// Adds a message to the account's MAX notifications (e.g. a link or unlink by a diary).
pub async fn notify_in(
    tx: &mut edulink_store::Tx,
    account_id: &str,
    kind: &str,
    client: &str,
    now: i64,
) -> Result<(), StoreError> {
    notification(account_id, kind, client, now).execute(&mut *tx).await?;
    Ok(())
}

fn notification<'q>(
    account_id: &'q str,
    kind: &'q str,
    client: &'q str,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query("INSERT INTO notifications (id, account_id, kind, client, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(new_id())
        .bind(account_id)
        .bind(kind)
        .bind(client)
        .bind(now)
}

/// Adds a notification for the account (on its own).
pub async fn notify(db: &Db, account_id: &str, kind: &str, client: &str, now: i64) -> Result<(), StoreError> {
    db.execute(notification(account_id, kind, client, now)).await?;
    Ok(())
}

/// A notification shown in MAX.
#[derive(Debug, Clone)]
pub struct Notification {
    /// `link` or `unlink`.
    pub kind: String,
    /// The client's display name.
    pub client: String,
    /// When.
    pub created_at: i64,
}

/// The newest notifications of an account.
pub async fn notifications(db: &Db, account_id: &str) -> Result<Vec<Notification>, StoreError> {
    let rows = sqlx::query(
        "SELECT kind, client, created_at FROM notifications WHERE account_id = $1 ORDER BY created_at DESC LIMIT 10",
    )
    .bind(account_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| -> Result<Notification, sqlx::Error> {
            Ok(Notification { kind: r.try_get(0)?, client: r.try_get(1)?, created_at: r.try_get(2)? })
        })
        .collect::<Result<_, _>>()
        .map_err(Into::into)
}

/// True while the session `id_hash` exists and is signed in (sign-out and expiry delete it).
pub async fn session_alive(db: &Db, id_hash: &str) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE id_hash = $1 AND account_id IS NOT NULL")
        .bind(id_hash)
        .fetch_one(db.pool())
        .await?;
    Ok(n > 0)
}
