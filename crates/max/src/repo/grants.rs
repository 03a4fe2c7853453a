//! The provider's consent state: authorization requests waiting for sign-in (`auth_requests`),
//! grants (`grants`, one per client and account) and authorization codes (`auth_codes`).

use crate::oidc::AuthRequest;
use edulink_store::{Db, StoreError, sqlx};

/// A stored authorization request as read back (see `oidc::AuthRequest`).
#[derive(Debug, sqlx::FromRow)]
pub struct AuthRequestRow {
    /// Id.
    pub id: String,
    /// The client.
    pub client_id: String,
    /// The validated redirect URI.
    pub redirect_uri: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The client's state.
    pub state: Option<String>,
    /// The client's nonce.
    pub nonce: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    /// The account the client expects.
    pub hint_account_id: Option<String>,
    /// `prompt=consent` (the column's name is historical), 0 or 1.
    pub prompt_none: i64,
    /// `max_age`, seconds.
    pub max_age: Option<i64>,
}

/// Stores an authorization request until the person confirms it.
pub async fn insert_request(
    tx: &mut edulink_store::Tx,
    r: &AuthRequest,
    now: i64,
    expires_at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO auth_requests (id, client_id, redirect_uri, scope, state, nonce, code_challenge, hint_account_id, \
           prompt_none, created_at, expires_at, max_age) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&r.id)
    .bind(&r.client_id)
    .bind(&r.redirect_uri)
    .bind(&r.scope)
    .bind(&r.state)
    .bind(&r.nonce)
    .bind(&r.code_challenge)
    .bind(&r.hint_account_id)
    .bind(i64::from(r.consent))
    .bind(now)
    .bind(expires_at)
    .bind(r.max_age)
    .execute(tx)
    .await?;
    Ok(())
}

/// A live stored request.
pub async fn live_request(db: &Db, id: &str, now: i64) -> Result<Option<AuthRequestRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, client_id, redirect_uri, scope, state, nonce, code_challenge, hint_account_id, prompt_none, \
         max_age FROM auth_requests WHERE id = $1 AND expires_at > $2",
    )
    .bind(id)
    .bind(now)
    .fetch_optional(db.pool())
    .await?)
}

/// Deletes a stored request (answered or declined).
pub async fn delete_request(tx: &mut edulink_store::Tx, id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM auth_requests WHERE id = $1").bind(id).execute(tx).await?;
    Ok(())
}

/// Grants of account `$2` to clients of sector `$1`, counted (one per sign-in: indexed by account).
pub(crate) const GRANTS_IN_SECTOR_OF_ACCOUNT: &str = "SELECT COUNT(*) FROM grants g JOIN clients c ON c.client_id = g.client_id WHERE c.sector = $1 AND g.account_id = $2";

/// The scope account `account_id` granted client `client_id`, if it granted it anything.
pub async fn granted_scope(db: &Db, client_id: &str, account_id: &str) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT scope FROM grants WHERE client_id = $1 AND account_id = $2")
        .bind(client_id)
        .bind(account_id)
        .fetch_optional(db.pool())
        .await?)
}

/// Whether the account has granted any client of `sector`.
pub async fn has_grant_in_sector(db: &Db, sector: &str, account_id: &str) -> Result<bool, StoreError> {
    let n: i64 =
        sqlx::query_scalar(GRANTS_IN_SECTOR_OF_ACCOUNT).bind(sector).bind(account_id).fetch_one(db.pool()).await?;
    Ok(n > 0)
}

/// The account whose grant to client `client_id` has subject `subject`, if that client is in `sector`.
pub async fn account_of_subject(
    db: &Db,
    client_id: &str,
    subject: &str,
    sector: &str,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT g.account_id FROM grants g JOIN clients c ON c.client_id = g.client_id \
         WHERE g.client_id = $1 AND g.subject = $2 AND c.sector = $3",
    )
    .bind(client_id)
    .bind(subject)
    .bind(sector)
    .fetch_optional(db.pool())
    .await?)
}

/// The subject of grant `grant_id`; `None` once the grant is revoked (deleted).
pub async fn grant_subject(
    ex: impl sqlx::Executor<'_, Database = sqlx::Any>,
    grant_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT subject FROM grants WHERE id = $1").bind(grant_id).fetch_optional(ex).await?)
}

/// Creates the grant of `account_id` to `client_id` (or updates its scope); returns its id. A grant
/// asking `offline_access` is a consent to a link: it is timed (`consented_at`, for the sweep of
/// unfinished link grants) and counted on the subject's link mark (see [`super::links`]).
pub async fn upsert_grant(
    tx: &mut edulink_store::Tx,
    new_id: &str,
    client_id: &str,
    account_id: &str,
    subject: &str,
    scope: &str,
    now: i64,
) -> Result<String, StoreError> {
    let link_consent = scope.split(' ').any(|s| s == "offline_access");
    if link_consent {
        // The mark first, as every change of a subject's link takes it (no lock-order inversion
        // with a detach, which locks the mark and then deletes the grant).
        super::links::count_consent(tx, client_id, subject, now).await?;
    }
    let id = sqlx::query_scalar(
        "INSERT INTO grants (id, client_id, account_id, subject, scope, created_at, consented_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6) \
         ON CONFLICT (client_id, account_id) DO UPDATE SET scope = excluded.scope, \
           consented_at = CASE WHEN $7 = 1 THEN excluded.consented_at ELSE grants.consented_at END RETURNING id",
    )
    .bind(new_id)
    .bind(client_id)
    .bind(account_id)
    .bind(subject)
    .bind(scope)
    .bind(now)
    .bind(i64::from(link_consent))
    .fetch_one(&mut *tx)
    .await?;
    Ok(id)
}

/// An authorization code to store (by its hash).
#[derive(Debug, Clone, Copy)]
pub struct NewCode<'a> {
    /// SHA-256 of the code.
    pub code_hash: &'a str,
    /// The grant it redeems into.
    pub grant_id: &'a str,
    /// The client it was issued to.
    pub client_id: &'a str,
    /// The account.
    pub account_id: &'a str,
    /// The redirect URI it was sent to.
    pub redirect_uri: &'a str,
    /// PKCE S256 challenge.
    pub code_challenge: &'a str,
    /// The client's nonce.
    pub nonce: Option<&'a str>,
    /// Granted scopes.
    pub scope: &'a str,
    /// When the person authenticated (OIDC Core §2 `auth_time`): the sign-in of the MAX session.
    pub auth_time: i64,
    /// Issue time.
    pub created_at: i64,
    /// Expiry.
    pub expires_at: i64,
    /// The `sid` of the MAX session it was issued in (OpenID Connect Back-Channel Logout 1.0).
    pub sid: Option<&'a str>,
}

/// Stores a fresh authorization code.
pub async fn insert_code(tx: &mut edulink_store::Tx, c: &NewCode<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO auth_codes (code_hash, grant_id, client_id, account_id, redirect_uri, code_challenge, nonce, scope, \
           auth_time, created_at, expires_at, sid) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(c.code_hash)
    .bind(c.grant_id)
    .bind(c.client_id)
    .bind(c.account_id)
    .bind(c.redirect_uri)
    .bind(c.code_challenge)
    .bind(c.nonce)
    .bind(c.scope)
    .bind(c.auth_time)
    .bind(c.created_at)
    .bind(c.expires_at)
    .bind(c.sid)
    .execute(tx)
    .await?;
    Ok(())
}

/// A claimed authorization code: what it was bound to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedCode {
    /// The grant.
    pub grant_id: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The account.
    pub account_id: String,
    /// The redirect URI it was sent to.
    pub redirect_uri: String,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    /// The client's nonce.
    pub nonce: Option<String>,
    /// Granted scopes.
    pub scope: String,
    /// Sign-in time.
    pub auth_time: i64,
    /// Expiry.
    pub expires_at: i64,
    /// The `sid` of the MAX session it was issued in.
    pub sid: Option<String>,
}

/// Marks the code used and returns it, unless it was used before (or never existed).
pub async fn claim_code(
    tx: &mut edulink_store::Tx,
    code_hash: &str,
    now: i64,
) -> Result<Option<ClaimedCode>, StoreError> {
    Ok(sqlx::query_as(
        "UPDATE auth_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL \
         RETURNING grant_id, client_id, account_id, redirect_uri, code_challenge, nonce, scope, auth_time, expires_at, sid",
    )
    .bind(code_hash)
    .bind(now)
    .fetch_optional(tx)
    .await?)
}

/// Whether a code with this hash was ever issued.
pub async fn code_exists(db: &Db, code_hash: &str) -> Result<bool, StoreError> {
    let client: Option<String> = sqlx::query_scalar("SELECT client_id FROM auth_codes WHERE code_hash = $1")
        .bind(code_hash)
        .fetch_optional(db.pool())
        .await?;
    Ok(client.is_some())
}
