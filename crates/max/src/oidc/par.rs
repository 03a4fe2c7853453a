//! Pushed authorization requests (RFC 9126). A client posts its authorization request to
//! `/oauth/par`, authenticated as at the token endpoint (a public client by `client_id`, §2.1);
//! the request is validated as `/oauth/authorize` would (§2.1) and kept under a `request_uri`
//! `urn:ietf:params:oauth:request_uri:<random>` that lives [`PAR_TTL`] seconds, serves once and
//! only its client (§2.2, §4; RFC 9700 §4.5.3). `/oauth/authorize?client_id=…&request_uri=…`
//! then uses the pushed parameters only (§4). Any other `request_uri` stays
//! `request_uri_not_supported` (request objects by reference are not supported, OIDC Core §6.2).
//!
//! A DPoP proof at this endpoint binds the code to its key, like `dpop_jkt` (RFC 9449 §10.1);
//! both present must name the same key. Clients with `require_pushed_authorization_requests`
//! ([`super::ClientPolicy`]) can start an authorization only this way.

use super::authorize::{AuthorizeParams, RequestError, validate_params};
use super::clients::{Client, TokenParams, authenticate};
use super::error::{OAuthError, no_store_json};
use crate::MaxState;
use crate::repo::dpop as store;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use edulink_domain::crypto::{random_token, sha256_b64};
use edulink_web::{AppError, ClientIp};
use serde_json::json;

/// The prefix of the `request_uri` values this endpoint hands out (RFC 9126 §2.2).
pub const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";
/// How long a pushed request can be used, seconds (RFC 9126 §2.2: short, «5 to 600 seconds»).
pub const PAR_TTL: i64 = 60;

/// Whether `uri` is one of ours (anything else is `request_uri_not_supported`).
pub fn is_pushed_uri(uri: &str) -> bool {
    uri.starts_with(REQUEST_URI_PREFIX)
}

/// The pushed request a front-channel request points to, consumed; `None` when it points to
/// none of ours. A `request_uri` of ours that is unknown, used, expired or another client's is
/// shown as an error page: there is no validated redirect URI to send it to (RFC 9126 §4).
pub async fn resolve(st: &MaxState, p: &AuthorizeParams) -> Result<Option<AuthorizeParams>, RequestError> {
    let Some(uri) = p.request_uri.as_deref().filter(|u| is_pushed_uri(u)) else { return Ok(None) };
    let refused = || RequestError::NoRedirect(AppError::bad_request("error-oauth-request-uri"));
    let client_id = p.client_id.as_deref().ok_or_else(refused)?;
    let taken = store::take_pushed_request(&st.db, &sha256_b64(uri), client_id, st.now())
        .await
        .map_err(|e| RequestError::NoRedirect(e.into()))?
        .ok_or_else(refused)?;
    let pushed: AuthorizeParams = serde_json::from_str(&taken).map_err(|_| refused())?;
    Ok(Some(pushed))
}

/// The body of a pushed request: the authorization parameters and the client's credentials.
pub struct Pushed {
    client: Client,
    params: AuthorizeParams,
}

impl FromRequest<MaxState> for Pushed {
    type Rejection = Response;

    async fn from_request(req: Request, st: &MaxState) -> Result<Self, Response> {
        let headers = req.headers().clone();
        let body = String::from_request(req, st).await.map_err(IntoResponse::into_response)?;
        let creds = TokenParams::parse(&body).map_err(IntoResponse::into_response)?;
        let client = authenticate(st, &headers, &creds).await.map_err(IntoResponse::into_response)?;
        let params: AuthorizeParams = edulink_web::forms::parse_strict(&body)
            .map_err(|_| OAuthError::InvalidRequest("malformed or repeated parameters").into_response())?;
        Ok(Pushed { client, params })
    }
}

fn refused(error: &str, description: &str) -> Response {
    let mut resp = no_store_json(json!({ "error": error, "error_description": description }));
    *resp.status_mut() = StatusCode::BAD_REQUEST;
    resp
}

/// `POST /oauth/par` (RFC 9126 §2).
pub async fn push(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    headers: axum::http::HeaderMap,
    Pushed { client, mut params }: Pushed,
) -> Response {
    let resp = match accept(&st, &ip.to_string(), &headers, &client, &mut params).await {
        Ok(r) => r,
        Err(e) => e,
    };
    // Always a nonce: a client that pushes for an app hands it on for the app's first proof.
    super::dpop::with_nonce(&st, resp)
}

async fn accept(
    st: &MaxState,
    ip: &str,
    headers: &axum::http::HeaderMap,
    client: &Client,
    p: &mut AuthorizeParams,
) -> Result<Response, Response> {
    if p.request_uri.is_some() {
        return Err(refused("invalid_request", "request_uri cannot be pushed"));
    }
    match p.client_id.as_deref() {
        None => p.client_id = Some(client.client_id.clone()),
        Some(id) if id == client.client_id => {}
        Some(_) => return Err(refused("invalid_request", "client_id is not the authenticated client")),
    }
    let jkt = super::dpop::authorization_server_proof(st, headers, "/oauth/par", false)
        .await
        .map_err(IntoResponse::into_response)?;
    match (jkt, &p.dpop_jkt) {
        (Some(j), None) => p.dpop_jkt = Some(j),
        (Some(j), Some(named)) if j != *named => {
            return Err(OAuthError::InvalidDpopProof("dpop_jkt names another key than the proof").into_response());
        }
        _ => {}
    }
    match validate_params(st, p, ip, true).await {
        Ok(_) => {}
        Err(RequestError::NoRedirect(e)) => {
            tracing::debug!(error = ?e, "pushed request refused");
            return Err(refused("invalid_request", "unknown client or redirect_uri"));
        }
        Err(RequestError::Redirect { error, description, .. }) => return Err(refused(error, description)),
    }
    let uri = format!("{REQUEST_URI_PREFIX}{}", random_token(32));
    let stored = serde_json::to_string(&*p).expect("strings serialize");
    store::push_request(&st.db, &sha256_b64(&uri), &client.client_id, &stored, st.now() + PAR_TTL)
        .await
        .map_err(|e| AppError::from(e).into_response())?;
    metrics::counter!("edulink_oauth_par_total").increment(1);
    let mut resp = no_store_json(json!({ "request_uri": uri, "expires_in": PAR_TTL }));
    *resp.status_mut() = StatusCode::CREATED;
    Ok(resp)
}
