//! The token endpoint (RFC 6749 §3.2): form parameters parsed strictly (each at most once, RFC 6749
//! §3.2), the client authenticated ([`super::clients::authenticate`]), then one grant:
//!
//! * [`authorization_code`]: RFC 6749 §4.1.3–4.1.4, RFC 7636 §4.5–4.6, OIDC Core §3.1.3.
//! * [`refresh_token`]: RFC 6749 §6, rotation and reuse detection (RFC 9700 §4.14.2).
//! * [`client_credentials`]: RFC 6749 §4.4.
//!
//! Successful responses follow RFC 6749 §5.1 (`Cache-Control: no-store`), errors §5.2.

pub mod authorization_code;
pub mod client_credentials;
pub mod refresh_token;

use super::clients::ClientRequest;
pub(crate) use super::clients::TokenParams;
use super::error::{OAuthError, no_store_json};
use crate::audit::{Event, Record};
use crate::repo::tokens::{self, NewToken, TokenKind, TokensOf};
use crate::{MaxState, audit};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use edulink_domain::crypto::{random_token, sha256_b64};
use edulink_store::StoreError;
use edulink_web::ClientIp;
use serde::Serialize;

/// The grant types this provider supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantType {
    /// RFC 6749 §4.1.3.
    AuthorizationCode,
    /// RFC 6749 §6.
    RefreshToken,
    /// RFC 6749 §4.4.
    ClientCredentials,
}

impl GrantType {
    /// The `grant_type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
            GrantType::ClientCredentials => "client_credentials",
        }
    }

    /// Parses `grant_type`; `None` for anything unsupported.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "authorization_code" => Some(GrantType::AuthorizationCode),
            "refresh_token" => Some(GrantType::RefreshToken),
            "client_credentials" => Some(GrantType::ClientCredentials),
            _ => None,
        }
    }
}

/// `POST /oauth/token`. With a DPoP proof (RFC 9449 §5; required for some clients) the tokens are
/// bound to its key, and the answer carries a fresh `DPoP-Nonce` ([`super::dpop`]).
pub async fn token(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ClientRequest { client, params: p }: ClientRequest,
) -> Response {
    let answer = grant(&st, &ip.to_string(), &headers, &client, &p).await;
    let resp = answer.into_response();
    if super::dpop::has_proof(&headers) { super::dpop::with_nonce(&st, resp) } else { resp }
}

async fn grant(
    st: &MaxState,
    ip: &str,
    headers: &HeaderMap,
    client: &super::Client,
    p: &TokenParams,
) -> Result<TokenResponse, OAuthError> {
    let required = client.policy.dpop_bound_access_tokens;
    let jkt = super::dpop::authorization_server_proof(st, headers, "/oauth/token", required).await?;
    let jkt = jkt.as_deref();
    match p.grant_type.as_deref().and_then(GrantType::parse) {
        Some(GrantType::AuthorizationCode) => {
            let exchange = authorization_code::CodeExchange::from_params(p)?;
            authorization_code::exchange_bound(st, client, &exchange, jkt, ip).await
        }
        Some(GrantType::RefreshToken) => {
            let token = p.refresh_token.as_deref().ok_or(OAuthError::InvalidRequest("refresh_token is required"))?;
            super::dpop::check_refresh(st, client, token, jkt).await?;
            refresh_token::refresh_bound(st, client, token, jkt, ip).await
        }
        Some(GrantType::ClientCredentials) => {
            client_credentials::issue_bound(st, client, p.scope.as_deref(), jkt).await
        }
        None => {
            Err(OAuthError::UnsupportedGrantType("supported: authorization_code, refresh_token, client_credentials"))
        }
    }
}

/// A successful token response (RFC 6749 §5.1, OIDC Core §3.1.3.3).
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// `Bearer`, or `DPoP` for a DPoP-bound access token (RFC 9449 §5).
    pub token_type: &'static str,
    /// Access token lifetime, seconds.
    pub expires_in: i64,
    /// The ID token (authorization code grant only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// The refresh token (with `offline_access`, and on every rotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Granted scopes.
    pub scope: String,
}

impl IntoResponse for TokenResponse {
    fn into_response(self) -> Response {
        no_store_json(serde_json::to_value(&self).expect("strings serialize"))
    }
}

/// What tokens to issue, and under what.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Issue<'a> {
    pub(crate) client_id: &'a str,
    pub(crate) grant_id: Option<&'a str>,
    pub(crate) account_id: Option<&'a str>,
    /// The family: the hash of the code the tokens descend from.
    pub(crate) family: Option<&'a str>,
    pub(crate) scope: &'a str,
    pub(crate) with_refresh: bool,
    /// The DPoP key the access token is bound to (RFC 9449 §6).
    pub(crate) jkt: Option<&'a str>,
    /// The DPoP key the refresh token is bound to (public clients, RFC 9449 §5).
    pub(crate) refresh_jkt: Option<&'a str>,
}

/// Freshly issued tokens (the secrets; only their hashes are stored).
pub(crate) struct Issued {
    pub(crate) access: String,
    pub(crate) refresh: Option<String>,
    pub(crate) bound: bool,
}

impl Issued {
    /// The token response for these tokens.
    pub(crate) fn response(self, st: &MaxState, scope: String, id_token: Option<String>) -> TokenResponse {
        TokenResponse {
            access_token: self.access,
            token_type: if self.bound { "DPoP" } else { "Bearer" },
            expires_in: st.cfg.access_token_ttl,
            id_token,
            refresh_token: self.refresh,
            scope,
        }
    }
}

/// Stores a new access token (and refresh token) inside the caller's transaction.
pub(crate) async fn store_tokens(
    st: &MaxState,
    tx: &mut edulink_store::Tx,
    issue: &Issue<'_>,
) -> Result<Issued, StoreError> {
    let now = st.now();
    let access = random_token(32);
    let refresh = issue.with_refresh.then(|| random_token(32));
    for (kind, tok, ttl, jkt) in [
        (TokenKind::Access, Some(&access), st.cfg.access_token_ttl, issue.jkt),
        (TokenKind::Refresh, refresh.as_ref(), st.cfg.refresh_token_ttl, issue.refresh_jkt),
    ] {
        let Some(tok) = tok else { continue };
        let hash = sha256_b64(tok);
        let row = NewToken {
            token_hash: &hash,
            kind,
            client_id: issue.client_id,
            grant_id: issue.grant_id,
            account_id: issue.account_id,
            family: issue.family,
            scope: issue.scope,
            created_at: now,
            expires_at: now + ttl,
            jkt,
        };
        tokens::insert_token(tx, &row).await?;
    }
    Ok(Issued { access, refresh, bound: issue.jkt.is_some() })
}

/// Issues tokens in a transaction of their own and counts them under `grant`.
pub(crate) async fn issue_tokens(st: &MaxState, issue: &Issue<'_>, grant: GrantType) -> Result<Issued, StoreError> {
    let mut tx = st.db.begin().await?;
    let issued = store_tokens(st, &mut tx, issue).await?;
    tx.commit().await?;
    metrics::counter!("edulink_oauth_tokens_issued_total", "grant" => grant.as_str()).increment(1);
    Ok(issued)
}

/// A sign that a token family has leaked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compromise {
    /// A redeemed code was presented again (RFC 6749 §4.1.2: revoke what it issued).
    CodeReplay,
    /// A rotated refresh token was presented again (RFC 9700 §4.14.2).
    RefreshReuse,
}

impl Compromise {
    fn audit_event(self) -> Event {
        match self {
            Compromise::CodeReplay => Event::CodeReplay,
            Compromise::RefreshReuse => Event::RefreshReuse,
        }
    }

    fn metric(self) -> &'static str {
        match self {
            Compromise::CodeReplay => "edulink_oauth_code_replay_total",
            Compromise::RefreshReuse => "edulink_oauth_refresh_reuse_total",
        }
    }
}

/// Revokes every token of the family `family` (the hash of the code they descend from), counts the
/// compromise and audits it with the number revoked.
pub(crate) async fn revoke_compromised_family(
    st: &MaxState,
    family: &str,
    why: Compromise,
    client_id: &str,
    ip: &str,
) -> Result<u64, StoreError> {
    let now = st.now();
    let n = tokens::revoke_tokens(&st.db, TokensOf::Family(family), now).await?;
    metrics::counter!(why.metric()).increment(1);
    audit::TRAIL
        .record(&st.db, now, &Record::new(why.audit_event()).client(client_id).ip(ip).detail(&format!("revoked={n}")))
        .await;
    Ok(n)
}

#[cfg(test)]
pub(crate) mod testing;
