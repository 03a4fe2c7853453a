//! The authorization endpoint (RFC 6749 §3.1, §4.1.1): the request is validated (client and exact
//! redirect URI first, RFC 6749 §3.1.2.4 and RFC 9700 §4.1: a bad one is never redirected to; then
//! `response_type=code` only, PKCE S256 required, RFC 7636 §4.3; `prompt`, `max_age`, `ui_locales`
//! and `id_token_hint`, OIDC Core §3.1.2.1; unknown scopes ignored), errors go back as RFC 6749
//! §4.1.2.1 redirects carrying `state` exactly and `iss` (RFC 9207 §2), and a valid request is
//! answered at once (SSO to a confidential client, `prompt=none`) or stored for sign-in and consent.

use super::clients::{Client, cached_client};
use super::consent::{consented, issue_code, silent_allowed};
use super::request::{AuthRequest, error_redirect, store_request};
use crate::MaxState;
use crate::audit::{Event, Record, TRAIL};
use crate::login::{self, current};
use crate::repo::{self, grants};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use edulink_domain::crypto::new_id;
use edulink_domain::oauth::{is_pkce_value, is_vschar_param, parse_scope, redirect_uri_matches};
use edulink_store::StoreError;
use edulink_web::{AppError, ClientIp, Lang, StrictForm, StrictQuery, see_other};
use serde::{Deserialize, Serialize};

/// Parameters of the authorization request.
#[derive(Debug, Deserialize, Serialize)]
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
    /// `request_uri`: ours from the PAR endpoint ([`super::par`]), or refused.
    pub request_uri: Option<String>,
    max_age: Option<String>,
    ui_locales: Option<String>,
    /// `dpop_jkt`: the DPoP key the code is bound to (RFC 9449 §10).
    pub dpop_jkt: Option<String>,
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
    /// The first supported language of `ui_locales`.
    pub ui_lang: Option<Lang>,
}

/// Validates authorization request parameters (shared by the browser endpoint and the MAX app API).
/// `ip` is the client's, for the audit. A `request_uri` from the PAR endpoint is replaced by the
/// parameters pushed there ([`super::par::resolve`]).
pub async fn validate(st: &MaxState, p: &AuthorizeParams, ip: &str) -> Result<Validated, RequestError> {
    match super::par::resolve(st, p).await? {
        Some(pushed) => validate_params(st, &pushed, ip, true).await,
        None => validate_params(st, p, ip, false).await,
    }
}

/// Validates the parameters of a request that came through the PAR endpoint (`pushed`) or not.
pub(crate) async fn validate_params(
    st: &MaxState,
    p: &AuthorizeParams,
    ip: &str,
    pushed: bool,
) -> Result<Validated, RequestError> {
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
    // RFC 6749 §4.1.2.1: the exact `state` received goes back with every error, even a malformed one.
    let state = p.state.clone();
    let fail = |error: &'static str, description: &'static str| {
        Err(RequestError::Redirect { redirect_uri: redirect_uri.clone(), state: state.clone(), error, description })
    };
    if p.state.as_deref().is_some_and(|s| !is_vschar_param(s, 512)) {
        return fail("invalid_request", "state is malformed");
    }
    // OIDC Core §6.1, §6.2: each unsupported form has its own error code.
    if p.request_uri.is_some() {
        return fail("request_uri_not_supported", "request_uri is not supported");
    }
    if p.request.is_some() {
        return fail("request_not_supported", "request objects are not supported");
    }
    if client.policy.require_pushed_authorization_requests && !pushed {
        return fail("invalid_request", "this client must push its authorization requests (PAR)");
    }
    if p.dpop_jkt.as_deref().is_some_and(|j| !edulink_domain::dpop::is_thumbprint(j)) {
        return fail("invalid_request", "dpop_jkt is malformed");
    }
    if client.policy.dpop_bound_access_tokens && p.dpop_jkt.is_none() {
        return fail("invalid_request", "this client must bind the code to its DPoP key (dpop_jkt)");
    }
    if p.response_type.as_deref() != Some("code") {
        return fail("unsupported_response_type", "only response_type=code is supported");
    }
    if p.response_mode.as_deref().is_some_and(|m| m != "query") {
        return fail("invalid_request", "only response_mode=query is supported");
    }
    let requested = parse_scope(p.scope.as_deref().unwrap_or(""));
    if !requested.iter().any(|s| s == "openid") {
        return fail("invalid_scope", "the openid scope is required");
    }
    if requested.iter().any(|s| s == "sferum.provision") {
        return fail("invalid_scope", "sferum.provision is for client credentials only");
    }
    // OIDC Core §3.1.2.1: scope values the OP does not understand SHOULD be ignored; so are those the
    // client is not registered for (RFC 6749 §3.3: the granted scope, always in the token response).
    let scopes: Vec<String> = requested.into_iter().filter(|s| client.scopes.contains(s)).collect();
    let challenge = p.code_challenge.as_deref().unwrap_or("");
    if p.code_challenge_method.as_deref() != Some("S256") || !is_pkce_value(challenge) {
        return fail("invalid_request", "PKCE with code_challenge_method=S256 is required");
    }
    if p.nonce.as_deref().is_some_and(|n| !is_vschar_param(n, 512)) {
        return fail("invalid_request", "nonce is malformed");
    }
    let max_age = match p.max_age.as_deref().map(str::parse::<u32>) {
        None => None,
        Some(Ok(secs)) => Some(i64::from(secs)),
        Some(Err(_)) => return fail("invalid_request", "max_age must be a number of seconds"),
    };
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
        max_age,
        stored: false,
        dpop_jkt: p.dpop_jkt.clone(),
    };
    let ui_lang = p.ui_locales.as_deref().and_then(Lang::first_supported);
    Ok(Validated { client, req, silent: prompts.contains(&"none"), force_login: prompts.contains(&"login"), ui_lang })
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
    let Validated { client, req, silent, force_login, ui_lang } = match validate(&st, &p, &ip.to_string()).await {
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
    let signed_in = session.as_ref().and_then(|s| s.signed_in()).map(|(a, t)| (a.to_owned(), t));
    // OIDC Core §3.1.2.1: `prompt=login`, or a sign-in older than `max_age`, needs a new SMS sign-in.
    let reauth = signed_in.as_ref().is_some_and(|(_, auth_time)| force_login || req.auth_too_old(*auth_time, now));
    let hint_ok = |account_id: &str| req.hint_account_id.as_deref().is_none_or(|h| h == account_id);

    if silent {
        // Silent: never shows a page, and so never creates a first grant (a first link).
        let Some((account_id, auth_time)) = &signed_in else {
            return fail("login_required", "no MAX session");
        };
        if reauth {
            return fail("login_required", "the MAX sign-in is older than max_age");
        }
        if !hint_ok(account_id) {
            return fail("login_required", "signed in as another account");
        }
        if !silent_allowed(&client) {
            return fail("consent_required", "a native app needs the person's confirmation (RFC 8252 §8.6)");
        }
        if !consented(&st, &client, account_id, &req).await? {
            return fail("consent_required", "no grant for this client");
        }
        let sid = session.as_ref().map(|s| super::sid_of(&s.id_hash));
        let url = issue_code(&st, &req, account_id, *auth_time, None, sid.as_deref()).await?;
        return Ok(see_other(&url));
    }

    // Signing in again where consent was given before (the «Сферум» button of a linked student):
    // the code goes straight back, with no page and nothing stored in between — to a confidential
    // client only (RFC 8252 §8.6: a native app's identity cannot be assured).
    if let Some((account_id, auth_time)) = &signed_in
        && !reauth
        && !req.consent
        && silent_allowed(&client)
        && hint_ok(account_id)
        && consented(&st, &client, account_id, &req).await?
    {
        let sid = session.as_ref().map(|s| super::sid_of(&s.id_hash));
        let url = issue_code(&st, &req, account_id, *auth_time, None, sid.as_deref()).await?;
        return Ok(see_other(&url));
    }

    // The request and the session that carries it through sign-in: one transaction.
    let lang = ui_lang.map(Lang::tag);
    let mut tx = st.db.begin().await?;
    store_request(&mut tx, &req, now).await?;
    let (cookie, target) = match session {
        Some(s) if s.account_id.is_some() => {
            // A new authentication never ends the signed-in session before it succeeds (a cross-site
            // `prompt=login` must not sign the person out): the sign-in that completes replaces it.
            repo::attach_request(&mut tx, &s.id_hash, &req.id, reauth, lang).await?;
            (None, if reauth { "/login" } else { "/authorize/continue" })
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
            let (raw, s) = repo::create_session_in(&mut tx, now, Some(&req.id)).await?;
            if lang.is_some() {
                repo::attach_request(&mut tx, &s.id_hash, &req.id, false, lang).await?;
            }
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
