//! The authorization endpoint (RFC 6749 §3.1, §4.1.1): the request is validated (client and exact
//! redirect URI first, RFC 6749 §3.1.2.4 and RFC 9700 §4.1: a bad one is never redirected to; then
//! `response_type=code` only, PKCE S256 required, RFC 7636 §4.3; `prompt` and `id_token_hint`,
//! OIDC Core §3.1.2.1), errors go back as RFC 6749 §4.1.2.1 redirects carrying `iss` (RFC 9207 §2),
//! and a valid request is answered at once (SSO, `prompt=none`) or stored for sign-in and consent.

use super::clients::{Client, cached_client};
use super::consent::issue_code;
use super::request::{AuthRequest, error_redirect, store_request};
use crate::MaxState;
use crate::audit::{Event, Record, TRAIL};
use crate::login::{self, current};
use crate::repo::{self, grants};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use edulink_domain::crypto::new_id;
use edulink_domain::oauth::{is_opaque_param, is_pkce_value, parse_scope, redirect_uri_matches};
use edulink_store::StoreError;
use edulink_web::{AppError, ClientIp, StrictForm, StrictQuery, see_other};
use serde::Deserialize;

/// Parameters of the authorization request.
#[derive(Debug, Deserialize)]
pub struct AuthorizeParams {
    response_type: Option<String>,
    /// `client_id`.
    pub client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    prompt: Option<String>,
    id_token_hint: Option<String>,
    response_mode: Option<String>,
    request: Option<String>,
    request_uri: Option<String>,
}

/// Why an authorization request was refused.
#[derive(Debug)]
pub enum RequestError {
    /// Client or redirect URI unknown: shown to the person, never redirected (RFC 9700 §4.1).
    NoRedirect(AppError),
    /// Anything else: sent back to the (validated) redirect URI as an OAuth error.
    Redirect {
        /// The registered redirect URI.
        redirect_uri: String,
        /// The client's state.
        state: Option<String>,
        /// OAuth error code.
        error: &'static str,
        /// Human-readable description.
        description: &'static str,
    },
}

/// A validated authorization request, not stored yet.
#[derive(Debug)]
pub struct Validated {
    /// The client.
    pub client: Client,
    /// The request.
    pub req: AuthRequest,
    /// `prompt=none`.
    pub silent: bool,
    /// `prompt=login`.
    pub force_login: bool,
}

/// Validates authorization request parameters (shared by the browser endpoint and the MAX app API).
/// `ip` is the client's, for the audit.
pub async fn validate(st: &MaxState, p: &AuthorizeParams, ip: &str) -> Result<Validated, RequestError> {
    let store = |e: StoreError| RequestError::NoRedirect(e.into());
    // Until client and redirect URI are known good, errors are shown here and never redirected.
    let no_client = || RequestError::NoRedirect(AppError::bad_request("error-oauth-client"));
    let client_id = p.client_id.as_deref().ok_or_else(no_client)?;
    let client = cached_client(st, client_id).await.map_err(store)?.ok_or_else(no_client)?;
    let redirect_uri = p.redirect_uri.clone().unwrap_or_default();
    if !redirect_uri_matches(&client.redirect_uris, &redirect_uri) {
        metrics::counter!("edulink_oauth_redirect_mismatch_total").increment(1);
        return Err(RequestError::NoRedirect(AppError::bad_request("error-oauth-redirect")));
    }
    let state = p.state.clone().filter(|s| is_opaque_param(s, 512));
    let fail = |error: &'static str, description: &'static str| {
        Err(RequestError::Redirect { redirect_uri: redirect_uri.clone(), state: state.clone(), error, description })
    };
    if p.state.is_some() && state.is_none() {
        return fail("invalid_request", "state is malformed");
    }
    // OIDC Core §6.1, §6.2: each unsupported form has its own error code.
    if p.request_uri.is_some() {
        return fail("request_uri_not_supported", "request_uri is not supported");
    }
    if p.request.is_some() {
        return fail("request_not_supported", "request objects are not supported");
    }
    if p.response_type.as_deref() != Some("code") {
        return fail("unsupported_response_type", "only response_type=code is supported");
    }
    if p.response_mode.as_deref().is_some_and(|m| m != "query") {
        return fail("invalid_request", "only response_mode=query is supported");
    }
    let scopes = parse_scope(p.scope.as_deref().unwrap_or(""));
    if !scopes.iter().any(|s| s == "openid") {
        return fail("invalid_scope", "the openid scope is required");
    }
    if scopes.iter().any(|s| !client.scopes.contains(s) || s == "sferum.provision") {
        return fail("invalid_scope", "a requested scope is not allowed for this client");
    }
    let challenge = p.code_challenge.as_deref().unwrap_or("");
    if p.code_challenge_method.as_deref() != Some("S256") || !is_pkce_value(challenge) {
        return fail("invalid_request", "PKCE with code_challenge_method=S256 is required");
    }
    if p.nonce.as_deref().is_some_and(|n| !is_opaque_param(n, 512)) {
        return fail("invalid_request", "nonce is malformed");
    }
    let prompts: Vec<&str> = p.prompt.as_deref().unwrap_or("").split(' ').filter(|x| !x.is_empty()).collect();
    if prompts.iter().any(|x| !matches!(*x, "none" | "login" | "consent"))
        || (prompts.contains(&"none") && prompts.len() > 1)
    {
        return fail("invalid_request", "unsupported prompt value");
    }
    let hint_account_id = match p.id_token_hint.as_deref() {
        None => None,
        Some(hint) => match hinted_account(st, &client, hint).await.map_err(RequestError::NoRedirect)? {
            Ok(a) => Some(a),
            Err(why) => {
                // Only a hint (OIDC Core §3.1.2.1): e.g. signed by a key deleted since. The sign-in goes
                // on as without one — the session's account or the MAX login — never a dead end.
                tracing::warn!(client = %client.client_id, reason = why.as_str(), "id_token_hint ignored");
                let r = Record::new(Event::HintIgnored).client(&client.client_id).ip(ip).detail(why.as_str());
                TRAIL.record(&st.db, st.now(), &r).await;
                None
            }
        },
    };
    let req = AuthRequest {
        id: new_id(),
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        scope: scopes.join(" "),
        state: p.state.clone(),
        nonce: p.nonce.clone(),
        code_challenge: challenge.to_string(),
        hint_account_id,
        consent: prompts.contains(&"consent"),
        stored: false,
    };
    Ok(Validated { client, req, silent: prompts.contains(&"none"), force_login: prompts.contains(&"login") })
}

/// `GET /oauth/authorize`.
pub async fn authorize(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    StrictQuery(p): StrictQuery<AuthorizeParams>,
) -> Result<Response, AppError> {
    answer(st, ip, headers, p).await
}

/// `POST /oauth/authorize`: the same request as a form body (OIDC Core §3.1.2.1: an OP MUST support
/// both GET and POST; a relying party posts when its request is too long for a URL).
pub async fn authorize_post(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    StrictForm(p): StrictForm<AuthorizeParams>,
) -> Result<Response, AppError> {
    answer(st, ip, headers, p).await
}

/// Validates and answers an authorization request, however it arrived.
async fn answer(
    st: MaxState,
    ip: std::net::IpAddr,
    headers: HeaderMap,
    p: AuthorizeParams,
) -> Result<Response, AppError> {
    let Validated { client, req, silent, force_login } = match validate(&st, &p, &ip.to_string()).await {
        Ok(v) => v,
        Err(RequestError::NoRedirect(e)) => return Err(e),
        Err(RequestError::Redirect { redirect_uri, state, error, description }) => {
            return Ok(error_redirect(&st, &redirect_uri, state.as_deref(), error, description));
        }
    };
    let now = st.now();
    let redirect_uri = req.redirect_uri.clone();
    let state = req.state.clone();
    let fail = |e: &str, d: &str| Ok(error_redirect(&st, &redirect_uri, state.as_deref(), e, d));
    let session = current(&st, &headers).await?;

    if silent {
        // Silent: never shows a page, and so never creates a first grant (a first link).
        let Some(account_id) = session.as_ref().and_then(|s| s.account_id.clone()) else {
            return fail("login_required", "no MAX session");
        };
        if req.hint_account_id.as_ref().is_some_and(|h| *h != account_id) {
            return fail("login_required", "signed in as another account");
        }
        if !grants::has_grant_in_sector(&st.db, &client.sector, &account_id).await? {
            return fail("consent_required", "no grant for this client");
        }
        let url = issue_code(&st, &req, &account_id, None).await?;
        return Ok(see_other(&url));
    }

    // Signing in again where consent was given before (the «Сферум» button of a linked student):
    // the code goes straight back, with no page and nothing stored in between.
    if let Some(account_id) = session.as_ref().and_then(|s| s.account_id.clone())
        && !force_login
        && !req.consent
        && req.hint_account_id.as_ref().is_none_or(|h| *h == account_id)
        && grants::has_grant_in_sector(&st.db, &client.sector, &account_id).await?
    {
        let url = issue_code(&st, &req, &account_id, None).await?;
        return Ok(see_other(&url));
    }

    // The request and the session that carries it through sign-in: one transaction.
    let mut tx = st.db.begin().await?;
    store_request(&mut tx, &req, now).await?;
    let (cookie, target) = match session {
        Some(s) if s.account_id.is_some() && !force_login => {
            repo::set_pending_request(&mut tx, &s.id_hash, Some(&req.id)).await?;
            (None, "/authorize/continue")
        }
        // Not signed in yet: the same anonymous session carries the newest request, so a sign-in
        // form already open in another tab keeps working (sign-in rotates the session anyway).
        Some(s) if s.account_id.is_none() => {
            repo::set_pending_request(&mut tx, &s.id_hash, Some(&req.id)).await?;
            (None, "/login")
        }
        other => {
            if let Some(s) = other {
                repo::delete_session_in(&mut tx, &s.id_hash).await?;
            }
            let (raw, _) = repo::create_session_in(&mut tx, now, Some(&req.id)).await?;
            (Some(st.cookies.set(login::SESSION_COOKIE, &raw, None)), "/login")
        }
    };
    tx.commit().await?;
    let mut resp = see_other(target);
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(resp)
}

/// Why an `id_token_hint` was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HintRejected {
    /// No published key verifies it (forged, or its key was deleted after the retention period).
    Signature,
    /// Not issued by this provider.
    Issuer,
    /// Its subject has no grant in the client's sector (unlinked since).
    Subject,
}

impl HintRejected {
    fn as_str(self) -> &'static str {
        match self {
            HintRejected::Signature => "signature",
            HintRejected::Issuer => "issuer",
            HintRejected::Subject => "subject",
        }
    }
}

/// The account an `id_token_hint` names, or why it names none.
async fn hinted_account(st: &MaxState, client: &Client, hint: &str) -> Result<Result<String, HintRejected>, AppError> {
    let Some(claims) = st.keys.verify_own(hint) else { return Ok(Err(HintRejected::Signature)) };
    if claims["iss"].as_str() != Some(&st.cfg.issuer) {
        return Ok(Err(HintRejected::Issuer));
    }
    let auds: Vec<&str> = match &claims["aud"] {
        serde_json::Value::String(a) => vec![a.as_str()],
        serde_json::Value::Array(v) => v.iter().filter_map(|a| a.as_str()).collect(),
        _ => vec![],
    };
    let Some(sub) = claims["sub"].as_str() else { return Ok(Err(HintRejected::Subject)) };
    // The hint may come from another client of the same sector (the diary's app made the link, the
    // diary's web signs in): the subject is the same there, and only there.
    for aud in auds {
        if let Some(account) = grants::account_of_subject(&st.db, aud, sub, &client.sector).await? {
            return Ok(Ok(account));
        }
    }
    Ok(Err(HintRejected::Subject))
}
