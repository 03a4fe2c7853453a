//! The end-session endpoint (OpenID Connect RP-Initiated Logout 1.0) and the one way a MAX session
//! ends ([`sign_out`]), which the endpoint, MAX's own «Выйти» and the app's sign-out share.
//!
//! `GET` and `POST /oauth/logout` (§2) take `id_token_hint`, `client_id`, `post_logout_redirect_uri`,
//! `state` and `ui_locales`:
//!
//! * an `id_token_hint` must be an ID token MAX signed (with a key still published, retired or
//!   not; an expired one is fine, §2) and name the `client_id` among its audiences; anything else is
//!   an error page, never a redirect;
//! * `post_logout_redirect_uri` must match one registered for the client exactly (§3.1), or it is
//!   an error page: MAX never redirects anywhere else;
//! * the session ends at once only when the hint is an ID token of *this* session (its `sid`).
//!   Without a hint, or with one from another session, the person is asked («Выйти из MAX?», a
//!   form with the session's CSRF token, §6 on logout CSRF), because anyone can link here;
//! * after the logout the browser goes to the registered URI with `state` echoed (§3), or sees
//!   «Вы вышли из MAX». Without a hint MAX never redirects by itself: the person clicks.
//!
//! Ending the session queues logout tokens for the clients that got an ID token in it
//! ([`super::backchannel`]) in the same transaction.

use super::backchannel;
use super::clients::{Client, cached_client};
use super::sid_of;
use crate::audit::{Event, Record};
use crate::login::{self, current};
use crate::repo::{self, Session, logout as store};
use crate::views::{LoggedOutPage, LogoutConfirmPage};
use crate::{MaxState, audit};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use edulink_store::StoreError;
use edulink_web::forms::check_csrf;
use edulink_web::{AppError, ClientIp, Lang, StrictForm, StrictQuery, Tr, html, see_other};
use serde::Deserialize;

/// How a session ended (the audit record's detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignOutBy {
    /// The end-session endpoint (a relying party asked).
    EndSession,
    /// MAX's own «Выйти».
    Web,
    /// The MAX app's sign-out.
    App,
    /// «Войти в другую учетную запись» during an authorization.
    Switch,
}

impl SignOutBy {
    fn as_str(self) -> &'static str {
        match self {
            SignOutBy::EndSession => "end_session",
            SignOutBy::Web => "web",
            SignOutBy::App => "app",
            SignOutBy::Switch => "switch",
        }
    }
}

/// Ends `session`: deletes it, and for a signed-in session queues a logout token for every client
/// that got an ID token in it and audits the sign-out — one transaction — then tries the tokens.
pub async fn sign_out(st: &MaxState, session: &Session, by: SignOutBy, ip: Option<&str>) -> Result<(), StoreError> {
    let now = st.now();
    let mut tx = st.db.begin().await?;
    repo::delete_session_in(&mut tx, &session.id_hash).await?;
    let mut jobs = Vec::new();
    if let Some(account) = &session.account_id {
        jobs = store::enqueue_session(&mut tx, &sid_of(&session.id_hash), now).await?;
        let r = Record::new(Event::Logout).principal(account).ip_opt(ip).detail(by.as_str());
        audit::TRAIL.record_in(&mut tx, now, &r).await?;
    }
    tx.commit().await?;
    backchannel::send_now(st, jobs);
    Ok(())
}

/// The parameters of a logout request (§2), as a query or a form.
#[derive(Debug, Default, Deserialize)]
pub struct EndSessionParams {
    id_token_hint: Option<String>,
    /// Accepted and not used (§2: a hint about who to log out; the session says who).
    #[allow(dead_code)]
    logout_hint: Option<String>,
    client_id: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
    ui_locales: Option<String>,
}

/// A validated logout request.
#[derive(Debug)]
struct LogoutRequest {
    client: Option<Client>,
    /// The registered URI to return to.
    redirect: Option<String>,
    state: Option<String>,
    lang: Lang,
    /// The `sid` of a valid `id_token_hint`.
    hint_sid: Option<String>,
    /// A valid hint was given.
    hinted: bool,
}

/// The first supported language of `ui_locales` (§2, space-separated BCP 47 tags), else the
/// browser's.
fn language(ui_locales: Option<&str>, headers: &HeaderMap) -> Lang {
    ui_locales
        .unwrap_or("")
        .split(' ')
        .find_map(|tag| Lang::parse(tag.split('-').next().unwrap_or("")))
        .unwrap_or_else(|| Lang::from_headers(headers))
}

/// The audiences of a verified token.
fn audiences(claims: &serde_json::Value) -> Vec<&str> {
    match &claims["aud"] {
        serde_json::Value::String(a) => vec![a.as_str()],
        serde_json::Value::Array(v) => v.iter().filter_map(|a| a.as_str()).collect(),
        _ => vec![],
    }
}

/// Validates a logout request (§2, §3.1). Errors are shown, never redirected.
async fn validate(st: &MaxState, p: &EndSessionParams, headers: &HeaderMap) -> Result<LogoutRequest, AppError> {
    let lang = language(p.ui_locales.as_deref(), headers);
    let bad_hint = || AppError::bad_request("error-logout-hint");
    let mut hint_sid = None;
    let mut hint_aud: Vec<String> = Vec::new();
    if let Some(hint) = p.id_token_hint.as_deref() {
        // Signed by a key MAX still publishes; expiry is not checked (an expired ID token is a
        // valid hint, §2). `alg: none` or a foreign key fails here.
        let claims = st.keys.verify_own(hint).ok_or_else(bad_hint)?;
        if claims["iss"].as_str() != Some(st.cfg.issuer.as_str()) || claims["sub"].as_str().is_none() {
            return Err(bad_hint());
        }
        hint_aud = audiences(&claims).into_iter().map(str::to_owned).collect();
        hint_sid = claims["sid"].as_str().map(str::to_owned);
    }
    let client_id = match (&p.client_id, hint_aud.as_slice()) {
        (Some(id), auds) if !auds.is_empty() && !auds.contains(id) => return Err(bad_hint()),
        (Some(id), _) => Some(id.clone()),
        (None, [only]) => Some(only.clone()),
        (None, _) => None,
    };
    let client = match &client_id {
        Some(id) => Some(cached_client(st, id).await?.ok_or_else(|| AppError::bad_request("error-oauth-client"))?),
        None => None,
    };
    let redirect = match (&p.post_logout_redirect_uri, &client) {
        (None, _) => None,
        // §2: with a post_logout_redirect_uri, the client must be known (client_id or hint).
        (Some(_), None) => return Err(AppError::bad_request("error-logout-redirect")),
        (Some(uri), Some(c)) => {
            let reg = store::logout_registration(&st.db, &c.client_id).await?;
            if !reg.post_logout_redirect_uris.iter().any(|r| r == uri) {
                metrics::counter!("edulink_oauth_redirect_mismatch_total").increment(1);
                return Err(AppError::bad_request("error-logout-redirect"));
            }
            Some(uri.clone())
        }
    };
    if p.state.as_ref().is_some_and(|s| s.len() > 512) {
        return Err(AppError::bad_request("error-bad-request"));
    }
    Ok(LogoutRequest { client, redirect, state: p.state.clone(), lang, hint_sid, hinted: p.id_token_hint.is_some() })
}

/// After the logout: back to the client's registered URI with `state` (§3), or the «Вы вышли из
/// MAX» page.
fn finished(st: &MaxState, req: &LogoutRequest, auto: bool) -> Response {
    let back = req.redirect.as_ref().and_then(|uri| url::Url::parse(uri).ok()).map(|mut url| {
        if let Some(s) = &req.state {
            url.query_pairs_mut().append_pair("state", s);
        }
        url.to_string()
    });
    let mut resp = match back {
        Some(url) if auto => see_other(&url),
        back => html(&LoggedOutPage {
            tr: Tr::new(req.lang),
            back,
            client_name: req.client.as_ref().map(|c| c.name.clone()).unwrap_or_default(),
        }),
    };
    resp.headers_mut().append(header::SET_COOKIE, st.cookies.clear(login::SESSION_COOKIE));
    resp
}

/// `GET /oauth/logout`.
pub async fn end_session(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    StrictQuery(p): StrictQuery<EndSessionParams>,
) -> Result<Response, AppError> {
    answer(&st, &ip.to_string(), &headers, p).await
}

/// `POST /oauth/logout` (§2: the OP MUST support both GET and POST).
pub async fn end_session_post(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    StrictForm(p): StrictForm<EndSessionParams>,
) -> Result<Response, AppError> {
    answer(&st, &ip.to_string(), &headers, p).await
}

async fn answer(st: &MaxState, ip: &str, headers: &HeaderMap, p: EndSessionParams) -> Result<Response, AppError> {
    let req = validate(st, &p, headers).await?;
    let session = current(st, headers).await?.filter(|s| s.account_id.is_some());
    let Some(session) = session else {
        // Nobody is signed in here: nothing to end. Redirect only on a valid hint.
        return Ok(finished(st, &req, req.hinted));
    };
    if req.hint_sid.as_deref() == Some(sid_of(&session.id_hash).as_str()) {
        // The client proved it holds an ID token of this very session.
        sign_out(st, &session, SignOutBy::EndSession, Some(ip)).await?;
        return Ok(finished(st, &req, true));
    }
    let account = match &session.account_id {
        Some(a) => repo::account(&st.db, a).await?,
        None => None,
    };
    Ok(html(&LogoutConfirmPage {
        tr: Tr::new(req.lang),
        csrf: session.csrf.clone(),
        masked: account.map(|a| crate::views::masked_phone(st, &a.phone_enc)).unwrap_or_default(),
        client_id: req.client.as_ref().map(|c| c.client_id.clone()).unwrap_or_default(),
        client_name: req.client.as_ref().map(|c| c.name.clone()).unwrap_or_default(),
        post_logout_redirect_uri: req.redirect.clone().unwrap_or_default(),
        state: req.state.clone().unwrap_or_default(),
        ui_locales: req.lang.tag().to_string(),
    }))
}

/// The confirmation form («Выйти»): the request again, and the session's CSRF token.
#[derive(Debug, Deserialize)]
pub struct ConfirmForm {
    csrf: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    post_logout_redirect_uri: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    ui_locales: String,
}

/// `POST /logout/confirm`: the person confirmed; the request is validated again (the form is
/// theirs to edit), the session ends, and the browser goes back to the client if it asked.
pub async fn confirm(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    StrictForm(f): StrictForm<ConfirmForm>,
) -> Result<Response, AppError> {
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let p = EndSessionParams {
        client_id: nonempty(&f.client_id),
        post_logout_redirect_uri: nonempty(&f.post_logout_redirect_uri),
        state: nonempty(&f.state),
        ui_locales: nonempty(&f.ui_locales),
        ..EndSessionParams::default()
    };
    let req = validate(&st, &p, &headers).await?;
    if let Some(session) = current(&st, &headers).await? {
        check_csrf(&session.csrf, &f.csrf)?;
        sign_out(&st, &session, SignOutBy::EndSession, Some(&ip.to_string())).await?;
    }
    // The person clicked «Выйти» on MAX's page: going back to the registered URI is theirs.
    Ok(finished(&st, &req, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// §2: `ui_locales` is a space-separated list in order of preference; the first one MAX speaks
    /// wins, and without one the browser's language applies.
    #[test]
    fn ui_locales_picks_the_first_supported_language() {
        let h = HeaderMap::new();
        assert_eq!(language(Some("de en-GB ru"), &h), Lang::En);
        assert_eq!(language(Some("ru"), &h), Lang::Ru);
        assert_eq!(language(Some("fr"), &h), Lang::Ru);
        assert_eq!(language(None, &h), Lang::Ru);
    }
}
