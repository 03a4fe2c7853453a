//! Bearer access tokens (RFC 6750 §2.1 the `Authorization` header, §2.2 a form-encoded POST body,
//! exactly one of them; never a query parameter, §2.3 is not supported on purpose; errors §3.1) and
//! the UserInfo endpoint (OIDC Core §5.3: `sub` always, the profile claims of §5.4 with the
//! `profile` scope, `phone_number` and `phone_number_verified` with `phone`).

use super::error::{OAuthError, no_store_json};
use crate::MaxState;
use crate::repo::{self, grants};
use axum::extract::State;
use axum::http::{HeaderMap, Method, header};
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
    match bearer_token(headers) {
        Some(tok) => access_token(st, tok).await,
        None => Ok(None),
    }
}

/// The live bearer access token `tok`, if it is one (a DPoP-bound token is none, RFC 9449 §7.2).
async fn access_token(st: &MaxState, tok: &str) -> Result<Option<AccessToken>, StoreError> {
    let row = crate::repo::dpop::live_token(&st.db, &sha256_b64(tok), st.now()).await?;
    Ok(row.filter(|t| t.kind == "access" && t.jkt.is_none()).map(|t| AccessToken {
        client_id: t.client_id,
        grant_id: t.grant_id,
        account_id: t.account_id,
        scope: parse_scope(&t.scope),
    }))
}

/// The `access_token` of a form-encoded POST body (RFC 6750 §2.2), a bearer token. A request uses
/// exactly one method (§2: a client MUST NOT use more than one): a body token beside an
/// `Authorization` header, or two of them, is `invalid_request` (§3.1).
fn body_token(method: &Method, headers: &HeaderMap, body: &str) -> Result<Option<String>, OAuthError> {
    let form = method == Method::POST
        && headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let in_body: Vec<String> = if form {
        url::form_urlencoded::parse(body.as_bytes())
            .filter(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
            .collect()
    } else {
        Vec::new()
    };
    match (headers.contains_key(header::AUTHORIZATION), in_body.as_slice()) {
        (_, []) => Ok(None),
        (false, [one]) => Ok(Some(one.clone())),
        _ => Err(OAuthError::InvalidRequest("present the access token by exactly one method")),
    }
}

/// `GET|POST /oauth/userinfo`: the access token in the `Authorization` header (`Bearer`, or `DPoP`
/// with a proof, RFC 9449 §7) or, as a bearer token, in a form body (RFC 6750 §2.2).
pub async fn userinfo(
    State(st): State<MaxState>,
    method: Method,
    headers: HeaderMap,
    body: String,
) -> Result<Response, OAuthError> {
    let t = match body_token(&method, &headers, &body)? {
        Some(tok) => access_token(&st, &tok).await?,
        None => super::dpop::resource_token(&st, &headers, method.as_str(), "/oauth/userinfo").await?,
    }
    .ok_or(OAuthError::InvalidToken)?;
    let (Some(grant_id), Some(account_id)) = (&t.grant_id, &t.account_id) else {
        return Err(OAuthError::InvalidToken);
    };
    if !t.scope.iter().any(|s| s == "openid") {
        return Err(OAuthError::InvalidToken);
    }
    let sub = grants::grant_subject(st.db.pool(), grant_id).await?.ok_or(OAuthError::InvalidToken)?;
    let mut body = json!({ "sub": sub });
    let has = |scope: &str| t.scope.iter().any(|s| s == scope);
    if (has("profile") || has("phone"))
        && let Some(a) = repo::account(&st.db, account_id).await?
    {
        if has("profile") {
            body["given_name"] = a.first_name.clone().into();
            body["family_name"] = a.last_name.clone().into();
            body["name"] = format!("{} {}", a.first_name, a.last_name).into();
        }
        if has("phone") {
            // OIDC Core §5.4: granted only to clients registered for `phone`, with the person's consent.
            // The number is E.164 (§5.1) and verified: the person signed in with a code sent to it.
            body["phone_number"] = crate::views::phone_of(&st, &a.phone_enc)?.e164().into();
            body["phone_number_verified"] = true.into();
        }
    }
    Ok(no_store_json(body))
}
