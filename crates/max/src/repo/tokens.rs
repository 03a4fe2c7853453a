//! Access and refresh tokens (`tokens`), stored by hash. A token's `code_hash` names its family: the
//! code it was first issued from, shared by every rotation of its refresh token.

use edulink_store::{Db, StoreError, sqlx};

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Presented to resource servers (RFC 6750).
    Access,
    /// Exchanged for new tokens at the token endpoint (RFC 6749 §6).
    Refresh,
}

impl TokenKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }
}

/// A `kind` column holding neither `access` nor `refresh`.
#[derive(Debug, thiserror::Error)]
#[error("unknown token kind {0:?}")]
pub struct UnknownKind(String);

impl TryFrom<String> for TokenKind {
    type Error = UnknownKind;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.as_str() {
            "access" => Ok(TokenKind::Access),
            "refresh" => Ok(TokenKind::Refresh),
            _ => Err(UnknownKind(s)),
        }
    }
}

/// A token to store (by its hash).
#[derive(Debug, Clone, Copy)]
pub struct NewToken<'a> {
    /// SHA-256 of the token.
    pub token_hash: &'a str,
    /// Access or refresh.
    pub kind: TokenKind,
    /// The client it is issued to.
    pub client_id: &'a str,
    /// The grant (none for client credentials).
    pub grant_id: Option<&'a str>,
    /// The account (none for client credentials).
    pub account_id: Option<&'a str>,
    /// The family: the hash of the code it descends from.
    pub family: Option<&'a str>,
    /// Scopes, space-separated.
    pub scope: &'a str,
    /// Issue time.
    pub created_at: i64,
    /// Expiry.
    pub expires_at: i64,
    /// The DPoP key it is bound to (`cnf.jkt`, RFC 9449 §6).
    pub jkt: Option<&'a str>,
}

/// Stores a token.
pub async fn insert_token(tx: &mut edulink_store::Tx, t: &NewToken<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tokens (token_hash, kind, client_id, grant_id, account_id, code_hash, scope, created_at, expires_at, jkt) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(t.token_hash)
    .bind(t.kind.as_str())
    .bind(t.client_id)
    .bind(t.grant_id)
    .bind(t.account_id)
    .bind(t.family)
    .bind(t.scope)
    .bind(t.created_at)
    .bind(t.expires_at)
    .bind(t.jkt)
    .execute(tx)
    .await?;
    Ok(())
}

/// What a token was issued for: its client, grant, account, scope and family.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    /// The client it was issued to.
    pub client_id: String,
    /// The grant (none for client credentials).
    pub grant_id: Option<String>,
    /// The account (none for client credentials).
    pub account_id: Option<String>,
    /// Scopes, space-separated.
    pub scope: String,
    /// The family (the hash of the code it descends from).
    #[sqlx(rename = "code_hash")]
    pub family: Option<String>,
}

/// Marks a live refresh token of client `client_id` rotated and returns it; `None` when it is
/// unknown, another client's (left untouched: RFC 9700 §4.14), rotated before, revoked or expired.
pub async fn rotate_refresh(
    db: &Db,
    token_hash: &str,
    client_id: &str,
    now: i64,
) -> Result<Option<TokenRow>, StoreError> {
    Ok(sqlx::query_as(
        "UPDATE tokens SET rotated_at = $2 WHERE token_hash = $1 AND kind = 'refresh' AND client_id = $3 \
           AND rotated_at IS NULL AND revoked_at IS NULL AND expires_at > $2 \
         RETURNING client_id, grant_id, account_id, scope, code_hash",
    )
    .bind(token_hash)
    .bind(now)
    .bind(client_id)
    .fetch_optional(db.writer())
    .await?)
}

/// The family of a refresh token of client `client_id` that was rotated before (a reuse), if it is one.
pub async fn rotated_refresh_family(db: &Db, token_hash: &str, client_id: &str) -> Result<Option<String>, StoreError> {
    let row: Option<(Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT code_hash, rotated_at FROM tokens WHERE token_hash = $1 AND kind = 'refresh' AND client_id = $2",
    )
    .bind(token_hash)
    .bind(client_id)
    .fetch_optional(db.pool())
    .await?;
    Ok(match row {
        Some((Some(family), Some(_rotated))) => Some(family),
        _ => None,
    })
}

/// A live access token.
pub async fn live_access_token(db: &Db, token_hash: &str, now: i64) -> Result<Option<TokenRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT client_id, grant_id, account_id, scope, code_hash FROM tokens WHERE token_hash = $1 \
           AND kind = 'access' AND revoked_at IS NULL AND expires_at > $2",
    )
    .bind(token_hash)
    .bind(now)
    .fetch_optional(db.pool())
    .await?)
}

/// A token revoked by its client.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RevokedToken {
    /// Access or refresh.
    #[sqlx(try_from = "String")]
    pub kind: TokenKind,
    /// Its family.
    #[sqlx(rename = "code_hash")]
    pub family: Option<String>,
}

/// Revokes the live token `token_hash` of client `client_id`; `None` when there is none.
pub async fn revoke_token(
    db: &Db,
    token_hash: &str,
    client_id: &str,
    now: i64,
) -> Result<Option<RevokedToken>, StoreError> {
    Ok(sqlx::query_as(
        "UPDATE tokens SET revoked_at = $3 WHERE token_hash = $1 AND client_id = $2 AND revoked_at IS NULL \
         RETURNING kind, code_hash",
    )
    .bind(token_hash)
    .bind(client_id)
    .bind(now)
    .fetch_optional(db.writer())
    .await?)
}

/// A set of tokens revoked together.
#[derive(Debug, Clone, Copy)]
pub enum TokensOf<'a> {
    /// Every token of a family (issued from one code, and its rotations), by the code's hash.
    Family(&'a str),
    /// Every token of a grant (all its families).
    Grant(&'a str),
}

/// Revokes the live tokens of a family or grant; returns how many.
pub async fn revoke_tokens(db: &Db, which: TokensOf<'_>, now: i64) -> Result<u64, StoreError> {
    let (sql, key) = match which {
        TokensOf::Family(code_hash) => {
            ("UPDATE tokens SET revoked_at = $1 WHERE code_hash = $2 AND revoked_at IS NULL", code_hash)
        }
        TokensOf::Grant(grant_id) => {
            ("UPDATE tokens SET revoked_at = $1 WHERE grant_id = $2 AND revoked_at IS NULL", grant_id)
        }
    };
    Ok(db.execute(sqlx::query(sql).bind(now).bind(key)).await?.rows_affected())
}
