//! The main page, signing in and out, and an app's handoff of its signed-in person to the browser.

use super::{PRE_COOKIE, SESSION_COOKIE, current, set_cookie, tr};
use crate::audit::{Event, Record};
use crate::repo::{self, User};
use crate::views::{self, HandoffPage, HomePage, LoginPage, Nav};
use crate::{DiaryState, audit};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edulink_domain::crypto::{ct_eq, random_token};
use edulink_web::forms::{CsrfForm, check_csrf};
use edulink_web::{AppError, ClientIp, StrictForm, StrictQuery, html, see_other};
use serde::Deserialize;

/// `GET /`: the main page with the navigation panel and the week's schedule.
pub async fn home(State(st): State<DiaryState>, headers: HeaderMap) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    let classes = repo::classes_of(&st.db, &user).await?;
    let ids: Vec<String> = classes.iter().map(|(id, _)| id.clone()).collect();
    let now = st.now();
    let lessons = repo::lessons(&st.db, &ids, now - 86_400, now + 7 * 86_400).await?;
    let linked = repo::link(&st.db, &user.id).await?.is_some();
    Ok(html(&HomePage {
        tr: tr(&headers),
        nav: Nav::new(&session, &user, "home"),
        days: views::group_by_day(&lessons),
        linked,
        now,
    }))
}

/// `GET /login`.
pub async fn login_page(State(st): State<DiaryState>, headers: HeaderMap) -> Result<Response, AppError> {
    if current(&st, &headers).await?.is_some() {
        return Ok(see_other("/"));
    }
    let pre = random_token(32);
    let page = LoginPage { tr: tr(&headers), csrf: pre.clone(), login: String::new(), error: None };
    Ok(set_cookie(html(&page), st.cookies.set(PRE_COOKIE, &pre, Some(3600))))
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    csrf: String,
    login: String,
    password: String,
}

/// `POST /login`: password check (Argon2id, off the async threads), new session.
pub async fn login_submit(
    State(st): State<DiaryState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    StrictForm(form): StrictForm<LoginForm>,
) -> Result<Response, AppError> {
    let pre = st.cookies.get(&headers, PRE_COOKIE).unwrap_or_default();
    if pre.is_empty() || !ct_eq(pre.as_bytes(), form.csrf.as_bytes()) {
        return Err(AppError::forbidden("error-csrf"));
    }
    let login = form.login.trim().to_lowercase();
    let now = st.now();
    let (key, status, wait) = match crate::signin::check(&st, &login, form.password, &ip.to_string()).await? {
        crate::signin::Outcome::Ok(user) => return finish_login(&st, &headers, &user, &ip.to_string(), now).await,
        crate::signin::Outcome::Wrong => ("error-login", StatusCode::UNAUTHORIZED, None),
        crate::signin::Outcome::Throttled(wait) => ("error-login-throttled", StatusCode::TOO_MANY_REQUESTS, Some(wait)),
    };
    let tr = tr(&headers);
    let error = match wait {
        Some(w) => tr.t1(key, "seconds", w),
        None => tr.t(key),
    };
    let page = LoginPage { error: Some(error), tr, csrf: form.csrf, login: login.chars().take(64).collect() };
    let mut resp = (status, html(&page)).into_response();
    if let Some(w) = wait {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(w));
    }
    Ok(resp)
}

async fn finish_login(
    st: &DiaryState,
    headers: &HeaderMap,
    user: &User,
    ip: &str,
    now: i64,
) -> Result<Response, AppError> {
    // Any session this browser had is replaced: a new id on every sign-in.
    if let Some(old) = st.cookies.get(headers, SESSION_COOKIE) {
        repo::delete_session(&st.db, &edulink_domain::crypto::sha256_b64(&old)).await?;
    }
    let (raw, _) = repo::create_session(&st.db, &user.id, now).await?;
    audit::TRAIL.record(&st.db, now, &Record::new(Event::Login).principal(&user.id).ip(ip)).await;
    let resp = set_cookie(see_other("/"), st.cookies.set(SESSION_COOKIE, &raw, None));
    Ok(set_cookie(resp, st.cookies.clear(PRE_COOKIE)))
}

/// `POST /logout`: the session ends on the server.
pub async fn logout(
    State(st): State<DiaryState>,
    headers: HeaderMap,
    StrictForm(form): StrictForm<CsrfForm>,
) -> Result<Response, AppError> {
    if let Some((session, _)) = current(&st, &headers).await? {
        check_csrf(&session.csrf, &form.csrf)?;
        repo::delete_session(&st.db, &session.id_hash).await?;
    }
    Ok(set_cookie(see_other("/login"), st.cookies.clear(SESSION_COOKIE)))
}

/// The handoff ticket from an app (query of the page, field of its form).
#[derive(Debug, Deserialize)]
pub struct HandoffTicket {
    ticket: String,
}

/// `GET /sferum/handoff?ticket=…`: an app's single-use ticket (60 s). The page says whose account
/// will be opened and asks for a click, so a ticket sent to someone else cannot silently sign their
/// browser in to the sender's account (login CSRF).
pub async fn handoff(
    State(st): State<DiaryState>,
    headers: HeaderMap,
    StrictQuery(q): StrictQuery<HandoffTicket>,
) -> Result<Response, AppError> {
    let user: Option<String> = edulink_store::sqlx::query_scalar(
        "SELECT user_id FROM handoff_tickets h WHERE ticket_hash = $1 AND expires_at > $2 AND EXISTS \
         (SELECT 1 FROM api_tokens t WHERE t.token_hash = h.token_hash AND t.expires_at > $2)",
    )
    .bind(edulink_domain::crypto::sha256_b64(&q.ticket))
    .bind(st.now())
    .fetch_optional(st.db.pool())
    .await
    .map_err(edulink_store::StoreError::from)?;
    let user = match user {
        Some(id) => repo::user(&st.db, &id).await?,
        None => None,
    };
    let Some(user) = user else { return Err(AppError::bad_request("error-handoff")) };
    let mut resp = html(&HandoffPage {
        tr: tr(&headers),
        name: format!("{} {}", user.first_name, user.last_name),
        login: user.login,
        ticket: q.ticket,
    });
    resp.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Ok(resp)
}

/// `POST /sferum/handoff`: the click; the ticket (a 256-bit secret, single use) becomes a browser
/// session and the browser goes on to Сферум as the «Сферум» button does.
pub async fn handoff_submit(
    State(st): State<DiaryState>,
    ClientIp(ip): ClientIp,
    StrictForm(form): StrictForm<HandoffTicket>,
) -> Result<Response, AppError> {
    let now = st.now();
    let user: Option<String> = edulink_store::sqlx::query_scalar(
        "DELETE FROM handoff_tickets WHERE ticket_hash = $1 AND expires_at > $2 AND EXISTS \
         (SELECT 1 FROM api_tokens t WHERE t.token_hash = handoff_tickets.token_hash AND t.expires_at > $2) \
         RETURNING user_id",
    )
    .bind(edulink_domain::crypto::sha256_b64(&form.ticket))
    .bind(now)
    .fetch_optional(st.db.writer())
    .await
    .map_err(edulink_store::StoreError::from)?;
    let Some(user_id) = user else { return Err(AppError::bad_request("error-handoff")) };
    let (raw, _) = repo::create_session(&st.db, &user_id, now).await?;
    audit::TRAIL
        .record(&st.db, now, &Record::new(Event::Login).principal(&user_id).ip(&ip.to_string()).detail("handoff"))
        .await;
    Ok(set_cookie(see_other("/sferum"), st.cookies.set(SESSION_COOKIE, &raw, None)))
}
