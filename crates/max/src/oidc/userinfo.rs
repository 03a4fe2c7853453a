//! Bearer access tokens (RFC 6750 §2.1: the `Authorization` header only, never a query parameter,
//! §2.3 is not supported on purpose; errors §3.1 `invalid_token`) and the UserInfo endpoint
//! (OIDC Core §5.3: `sub` always, the profile claims of §5.4 with the `profile` scope).

use super::error::{OAuthError, no_store_json};
use crate::MaxState;
use crate::repo::{self, grants};
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use edulink_domain::crypto::sha256_b64;
use edulink_domain::oauth::parse_scope;
use edulink_store::StoreError;
use edulink_web::api::bearer_token;
use serde_json::json;

/// A valid access token: its client, grant, account and scope.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The client it was issued to.
    pub client_id: String,
    /// The grant (none for client credentials).
    pub grant_id: Option<String>,
    /// The account (none for client credentials).
    pub account_id: Option<String>,
    /// Scopes.
    pub scope: Vec<String>,
}

/// Validates a bearer access token from the `Authorization` header. A DPoP-bound token is no
/// bearer token (RFC 9449 §7.2): resources that take DPoP use [`super::dpop::resource_token`].
pub async fn bearer(st: &MaxState, headers: &HeaderMap) -> Result<Option<AccessToken>, StoreError> {
    let Some(tok) = bearer_token(headers) else {
        return Ok(None);
    };
    let row = crate::repo::dpop::live_token(&st.db, &sha256_b64(tok), st.now()).await?;
    Ok(row.filter(|t| t.kind == "access" && t.jkt.is_none()).map(|t| AccessToken {
        client_id: t.client_id,
        grant_id: t.grant_id,
        account_id: t.account_id,
        scope: parse_scope(&t.scope),
    }))
}

/// `GET|POST /oauth/userinfo` (`Authorization: Bearer`, or `DPoP` with a proof, RFC 9449 §7).
pub async fn userinfo(State(st): State<MaxState>, method: Method, headers: HeaderMap) -> Result<Response, OAuthError> {
    let t = super::dpop::resource_token(&st, &headers, method.as_str(), "/oauth/userinfo")
        .await?
        .ok_or(OAuthError::InvalidToken)?;
    let (Some(grant_id), Some(account_id)) = (&t.grant_id, &t.account_id) else {
        return Err(OAuthError::InvalidToken);
    };
    if !t.scope.iter().any(|s| s == "openid") {
        return Err(OAuthError::InvalidToken);
    }
    let sub = grants::grant_subject(st.db.pool(), grant_id).await?.ok_or(OAuthError::InvalidToken)?;
    let mut body = json!({ "sub": sub });
    if t.scope.iter().any(|s| s == "profile")
        && let Some(a) = repo::account(&st.db, account_id).await?
    {
        body["given_name"] = a.first_name.clone().into();
        body["family_name"] = a.last_name.clone().into();
        body["name"] = format!("{} {}", a.first_name, a.last_name).into();
    }
    Ok(no_store_json(body))
}
