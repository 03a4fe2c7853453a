//! «Сферум»: the connect page, the authorization request to MAX, its callback (a link or a
//! sign-in), and the success page.

use super::{SESSION_COOKIE, current, max_unavailable, set_cookie, tr};
use crate::audit::{Event, Record};
use crate::repo::{self, Purpose, Session, User};
use crate::rp::RpError;
use crate::views::{ConnectPage, LinkedPage, Nav, ProblemPage};
use crate::{DiaryState, audit};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edulink_web::forms::{CsrfForm, check_csrf};
use edulink_web::{AppError, ClientIp, StrictForm, StrictQuery, html, see_other};
use serde::Deserialize;

/// The stored hint is replaced on a sign-in when older than this (or signed by another key).
const HINT_REFRESH_SECS: i64 = 86_400;

/// Starts an authorization request at MAX for `purpose`: a link, a sign-in (land on «Сферум в
/// MAX»), or a join (land in that lesson's room through «Подключиться»). A sign-in or a join of
/// `existing` sends its ID token as the hint, and asks for a fresh sign-in after MAX's logout.
pub(super) async fn start(
    st: &DiaryState,
    session: &Session,
    user: &User,
    purpose: Purpose,
    existing: Option<&repo::Link>,
) -> Result<Response, AppError> {
    let link = purpose == Purpose::Link;
    let hint = existing.and_then(|l| l.hint(&st.cipher));
    let hint = hint.as_deref();
    let relogin = existing.is_some_and(|l| l.logged_out_at.is_some());
    let started = st.rp.start(st.rp.web(), link, hint, relogin, None).await.map_err(max_unavailable)?;
    let t = repo::Transaction {
        user_id: user.id.clone(),
        purpose,
        nonce: started.nonce,
        verifier_enc: st.cipher.seal("oidc.verifier", started.verifier.as_bytes()),
    };
    if link {
        // The hourly cap on link starts is counted in the same write as the transaction.
        let admitted = repo::create_link_transaction(
            &st.db,
            st.cfg.link_starts_per_hour,
            &started.state,
            &session.family,
            &t,
            st.now(),
        )
        .await?;
        if let Err(wait) = admitted {
            metrics::counter!("edulink_link_starts_refused_total").increment(1);
            edulink_web::metrics::funnel_failure("start_refused");
            return Err(AppError::too_many("error-link-starts", wait));
        }
        edulink_web::metrics::funnel("authorization_started");
    } else {
        repo::create_transaction(&st.db, &started.state, &session.family, &t, st.now()).await?;
    }
    Ok(see_other(&started.url))
}

/// `GET /sferum`: the «Сферум» button. Linked: straight to the educational profile (SSO through
/// MAX). Not linked: the connection page with «Перейти к подключению».
pub async fn sferum(
    State(st): State<DiaryState>,
    headers: HeaderMap,
    StrictQuery(q): StrictQuery<SferumQuery>,
) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    if let Some(link) = repo::link(&st.db, &user.id).await? {
        return start(&st, &session, &user, Purpose::SignIn, Some(&link)).await;
    }
    edulink_web::metrics::funnel("connect_page");
    let tr = tr(&headers);
    let notice = (q.done.as_deref() == Some("cancelled")).then(|| tr.t("error-callback-denied"));
    Ok(html(&ConnectPage { tr, nav: Nav::new(&session, &user, "sferum"), notice }))
}

/// Query of the «Сферум» page: `done=cancelled` after the child's own «Отменить» at MAX.
#[derive(Debug, Deserialize)]
pub struct SferumQuery {
    done: Option<String>,
}

/// `POST /sferum/connect`: «Перейти к подключению».
pub async fn connect(
    State(st): State<DiaryState>,
    headers: HeaderMap,
    StrictForm(form): StrictForm<CsrfForm>,
) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    check_csrf(&session.csrf, &form.csrf)?;
    if repo::link(&st.db, &user.id).await?.is_some() {
        return Ok(see_other("/sferum"));
    }
    start(&st, &session, &user, Purpose::Link, None).await
}

/// Parameters of the authorization response.
#[derive(Debug, Deserialize)]
pub struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
}

fn callback_problem(headers: &HeaderMap, status: StatusCode, key: &str) -> Response {
    let tr = tr(headers);
    let page = ProblemPage { message: tr.t(key), tr };
    (status, html(&page)).into_response()
}

/// `GET /sferum/callback`: MAX's answer. Everything is checked before anything is stored: the state
/// belongs to this browser's session and was not used, `iss` is MAX (RFC 9207), the code redeems,
/// and the ID token validates (signature, issuer, audience, expiry, nonce).
pub async fn callback(
    State(st): State<DiaryState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    StrictQuery(p): StrictQuery<CallbackParams>,
) -> Result<Response, AppError> {
    let mut resp = callback_inner(&st, &ip.to_string(), &headers, p).await?;
    // The URL held a one-time code: never leak it through Referer.
    resp.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Ok(resp)
}

async fn callback_inner(
    st: &DiaryState,
    ip: &str,
    headers: &HeaderMap,
    p: CallbackParams,
) -> Result<Response, AppError> {
    let Some((session, user)) = current(st, headers).await? else {
        return Ok(callback_problem(headers, StatusCode::BAD_REQUEST, "error-callback-session"));
    };
    let now = st.now();
    let Some(state) = p.state.as_deref() else {
        return Ok(callback_problem(headers, StatusCode::BAD_REQUEST, "error-callback-state"));
    };
    let Some(t) = repo::take_transaction(&st.db, state, &session.family, now).await? else {
        audit::TRAIL.record(&st.db, now, &Record::new(Event::CallbackBadState).principal(&user.id).ip(ip)).await;
        edulink_web::metrics::funnel_failure("callback_bad_state");
        return Ok(callback_problem(headers, StatusCode::BAD_REQUEST, "error-callback-state"));
    };
    if t.user_id != user.id {
        return Ok(callback_problem(headers, StatusCode::BAD_REQUEST, "error-callback-state"));
    }
    if p.iss.as_deref() != Some(st.rp.issuer()) {
        audit::TRAIL.record(&st.db, now, &Record::new(Event::CallbackBadIss).principal(&user.id).ip(ip)).await;
        edulink_web::metrics::funnel_failure("callback_bad_iss");
        return Ok(callback_problem(headers, StatusCode::BAD_REQUEST, "error-callback-iss"));
    }
    if let Some(err) = p.error.as_deref() {
        // The child's own «Отменить» on MAX's confirmation: back to «Сферум» with a calm note.
        if err == "access_denied" && t.purpose == Purpose::Link {
            return Ok(see_other("/sferum?done=cancelled"));
        }
        let key = match err {
            "access_denied" => "error-callback-denied",
            _ => "error-callback-failed",
        };
        return Ok(callback_problem(headers, StatusCode::BAD_REQUEST, key));
    }
    let Some(code) = p.code.as_deref() else {
        return Ok(callback_problem(headers, StatusCode::BAD_REQUEST, "error-callback-failed"));
    };
    let verifier = st
        .cipher
        .open("oidc.verifier", &t.verifier_enc)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| AppError::internal("verifier decrypt"))?;
    let verified = match st.rp.finish(st.rp.web(), code, &verifier, &t.nonce).await {
        Ok(v) => v,
        Err(RpError::Unavailable(e)) => return Err(max_unavailable(RpError::Unavailable(e))),
        Err(e) => {
            tracing::warn!(error = %e, "authorization response refused");
            audit::TRAIL.record(&st.db, now, &Record::new(Event::CallbackInvalid).principal(&user.id).ip(ip)).await;
            edulink_web::metrics::funnel_failure("callback_invalid");
            return Ok(callback_problem(headers, StatusCode::BAD_REQUEST, "error-callback-failed"));
        }
    };
    let landing = match t.purpose {
        Purpose::Link => return finish_link(st, ip, headers, &session, &user, verified).await,
        Purpose::SignIn => format!("{}/sferum", st.rp.issuer()),
        Purpose::Join(lesson) => format!("{}/sferum/lessons/{}/{}/join", st.rp.issuer(), st.cfg.client_id, lesson),
        // An app's link completes through the API, never here (its state is bound to the app's token).
        Purpose::App(_) => return Ok(callback_problem(headers, StatusCode::BAD_REQUEST, "error-callback-state")),
    };
    finish_sso(st, headers, &user, verified, &landing).await
}

async fn finish_sso(
    st: &DiaryState,
    headers: &HeaderMap,
    user: &User,
    v: crate::rp::Verified,
    landing: &str,
) -> Result<Response, AppError> {
    match repo::link(&st.db, &user.id).await? {
        Some(link) if link.subject == v.subject => {
            // The stored ID token is only a hint for the next sign-in: replace it once a day rather
            // than on every sign-in (a write and a commit per flow for nothing), and at once when MAX
            // signs with a newer key, so the hint outlives the old key (MAX deletes retired keys
            // after a retention period: docs/deployment.md, «Keys and secrets»).
            let stored = link.hint(&st.cipher);
            let stored = stored.as_deref();
            // A new MAX session replaces it too: a back-channel logout names the session (`sid`).
            let sid = crate::rp::backchannel::session_of;
            let fresh = link.logged_out_at.is_none()
                && stored.and_then(crate::rp::issued_at).is_some_and(|iat| st.now() - iat < HINT_REFRESH_SECS)
                && stored.and_then(crate::rp::key_id) == crate::rp::key_id(&v.id_token)
                && stored.and_then(sid) == sid(&v.id_token);
            if !fresh {
                repo::set_link_id_token(&st.db, &st.cipher, &user.id, &v.id_token).await?;
            }
            Ok(see_other(landing))
        }
        _ => Ok(callback_problem(headers, StatusCode::CONFLICT, "error-sso-other-account")),
    }
}

async fn finish_link(
    st: &DiaryState,
    ip: &str,
    headers: &HeaderMap,
    session: &Session,
    user: &User,
    v: crate::rp::Verified,
) -> Result<Response, AppError> {
    match crate::links::store(st, user, &v, ip, Some(session)).await? {
        (crate::links::Stored::Linked, Some((raw, _))) => {
            Ok(set_cookie(see_other("/sferum/linked"), st.cookies.set(SESSION_COOKIE, &raw, None)))
        }
        (crate::links::Stored::Linked, None) => Err(AppError::internal("linked without a rotated session")),
        (conflict, _) => Ok(callback_problem(headers, StatusCode::CONFLICT, conflict.key())),
    }
}

/// `GET /sferum/linked`: «Ваша учетная запись успешно привязана» with «Перейти в Сферум».
pub async fn linked(State(st): State<DiaryState>, headers: HeaderMap) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    if repo::link(&st.db, &user.id).await?.is_none() {
        return Ok(see_other("/sferum"));
    }
    Ok(html(&LinkedPage { tr: tr(&headers), nav: Nav::new(&session, &user, "sferum") }))
}
