//! The diary's pages: login, the main page with its navigation panel, «Сферум» (connect, callback,
//! success, sign-in), and «Мой паспорт» → «Безопасность» with unlinking.

use crate::repo::{self, Session, User};
use crate::rp::RpError;
use crate::views::{self, *};
use crate::{DiaryState, audit, passwords};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edulink_domain::crypto::{ct_eq, random_token};
use edulink_web::{AppError, ClientIp, Lang, StrictForm, StrictQuery, Tr, html, see_other};
use serde::Deserialize;

/// The session cookie's base name.
pub const SESSION_COOKIE: &str = "diary_sid";
/// The pre-login CSRF cookie (double submit) of the login form.
const PRE_COOKIE: &str = "diary_pre";

fn tr(headers: &HeaderMap) -> Tr {
    Tr::new(Lang::from_headers(headers))
}

async fn current(st: &DiaryState, headers: &HeaderMap) -> Result<Option<(Session, User)>, AppError> {
    let Some(raw) = st.cookies.get(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    Ok(repo::load_session_user(&st.db, &raw, st.now(), st.cfg.session_idle_secs, st.cfg.session_absolute_secs).await?)
}

fn check_csrf(session: &Session, presented: &str) -> Result<(), AppError> {
    if ct_eq(session.csrf.as_bytes(), presented.as_bytes()) {
        Ok(())
    } else {
        metrics::counter!("edulink_csrf_refused_total").increment(1);
        Err(AppError::forbidden("error-csrf"))
    }
}

fn set_cookie(mut resp: Response, value: HeaderValue) -> Response {
    resp.headers_mut().append(header::SET_COOKIE, value);
    resp
}

macro_rules! signed_in {
    ($st:expr, $headers:expr) => {
        match current(&$st, &$headers).await? {
            Some(x) => x,
            None => return Ok(see_other("/login")),
        }
    };
}

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
    audit::record(&st.db, now, "login", Some(&user.id), None, Some(ip), None).await;
    let resp = set_cookie(see_other("/"), st.cookies.set(SESSION_COOKIE, &raw, None));
    Ok(set_cookie(resp, st.cookies.clear(PRE_COOKIE)))
}

/// A form with only the CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// `POST /logout`: the session ends on the server.
pub async fn logout(
    State(st): State<DiaryState>,
    headers: HeaderMap,
    StrictForm(form): StrictForm<CsrfForm>,
) -> Result<Response, AppError> {
    if let Some((session, _)) = current(&st, &headers).await? {
        check_csrf(&session, &form.csrf)?;
        repo::delete_session(&st.db, &session.id_hash).await?;
    }
    Ok(set_cookie(see_other("/login"), st.cookies.clear(SESSION_COOKIE)))
}

fn max_unavailable(e: RpError) -> AppError {
    tracing::error!(error = %e, "MAX unavailable");
    AppError::new(edulink_web::ErrorKind::Unavailable, "error-max-unavailable")
}

/// Starts an authorization request at MAX for `purpose`: `link`, `sso` (land on «Сферум в MAX»),
/// or `join:<lesson id>` (land in that lesson's room through «Подключиться»).
async fn start(
    st: &DiaryState,
    session: &Session,
    user: &User,
    purpose: &str,
    hint: Option<&str>,
) -> Result<Response, AppError> {
    let link = purpose == "link";
    let started = st.rp.start(st.rp.web(), link, hint, None).await.map_err(max_unavailable)?;
    let t = repo::Transaction {
        user_id: user.id.clone(),
        purpose: purpose.into(),
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
            return Err(AppError::too_many("error-link-starts", wait));
        }
    } else {
        repo::create_transaction(&st.db, &started.state, &session.family, &t, st.now()).await?;
    }
    Ok(see_other(&started.url))
}

/// `GET /sferum`: the «Сферум» button. Linked: straight to the educational profile (SSO through
/// MAX). Not linked: the connection page with «Перейти к подключению».
pub async fn sferum(State(st): State<DiaryState>, headers: HeaderMap) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    if let Some(link) = repo::link(&st.db, &user.id).await? {
        return start(&st, &session, &user, "sso", link.id_token.as_deref()).await;
    }
    Ok(html(&ConnectPage { tr: tr(&headers), nav: Nav::new(&session, &user, "sferum") }))
}

/// `POST /sferum/connect`: «Перейти к подключению».
pub async fn connect(
    State(st): State<DiaryState>,
    headers: HeaderMap,
    StrictForm(form): StrictForm<CsrfForm>,
) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    check_csrf(&session, &form.csrf)?;
    if repo::link(&st.db, &user.id).await?.is_some() {
        return Ok(see_other("/sferum"));
    }
    start(&st, &session, &user, "link", None).await
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
        audit::record(&st.db, now, "callback_bad_state", Some(&user.id), None, Some(ip), None).await;
        return Ok(callback_problem(headers, StatusCode::BAD_REQUEST, "error-callback-state"));
    };
    if t.user_id != user.id {
        return Ok(callback_problem(headers, StatusCode::BAD_REQUEST, "error-callback-state"));
    }
    if p.iss.as_deref() != Some(st.rp.issuer()) {
        audit::record(&st.db, now, "callback_bad_iss", Some(&user.id), None, Some(ip), None).await;
        return Ok(callback_problem(headers, StatusCode::BAD_REQUEST, "error-callback-iss"));
    }
    if let Some(err) = p.error.as_deref() {
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
            audit::record(&st.db, now, "callback_invalid", Some(&user.id), None, Some(ip), None).await;
            return Ok(callback_problem(headers, StatusCode::BAD_REQUEST, "error-callback-failed"));
        }
    };
    if t.purpose == "sso" || t.purpose.starts_with("join:") {
        let landing = match t.purpose.strip_prefix("join:") {
            Some(lesson) => format!("{}/sferum/lessons/{}/{}/join", st.rp.issuer(), st.cfg.client_id, lesson),
            None => format!("{}/sferum", st.rp.issuer()),
        };
        return finish_sso(st, headers, &user, verified, &landing).await;
    }
    finish_link(st, ip, headers, &session, &user, verified).await
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
            // The stored ID token is only a hint for the next sign-in: refresh it once a day rather
            // than on every sign-in (a write and a commit per flow for nothing).
            let fresh =
                link.id_token.as_deref().and_then(crate::rp::issued_at).is_some_and(|iat| st.now() - iat < 86_400);
            if !fresh {
                repo::set_link_id_token(&st.db, &user.id, &v.id_token).await?;
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

/// `GET /passport`: «Мой паспорт», personal data tab.
pub async fn passport(State(st): State<DiaryState>, headers: HeaderMap) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    let school = repo::school_name(&st.db, &user.school_id).await?;
    let classes = repo::classes_of(&st.db, &user).await?.into_iter().map(|(_, n)| n).collect::<Vec<_>>().join(", ");
    Ok(html(&PassportPage { tr: tr(&headers), nav: Nav::new(&session, &user, "passport"), school, classes, user }))
}

/// Query of the security tab.
#[derive(Debug, Deserialize)]
pub struct SecurityQuery {
    done: Option<String>,
}

async fn security_page(
    st: &DiaryState,
    headers: &HeaderMap,
    session: &Session,
    user: &User,
    notice: Option<String>,
    error: Option<String>,
) -> Result<Response, AppError> {
    let link = repo::link(&st.db, &user.id).await?;
    let history = audit::history(&st.db, &user.id).await?;
    Ok(html(&SecurityPage {
        tr: tr(headers),
        nav: Nav::new(session, user, "passport"),
        link: link.map(|l| LinkView { id: l.subject, linked_at: views::when(l.linked_at) }),
        history: history.into_iter().map(|e| (e.event, views::when(e.at))).collect(),
        notice,
        error,
        needs_password: st.now() - session.auth_at > st.cfg.reauth_secs,
    }))
}

/// `GET /passport/security`: «Безопасность» — the link status, the linked id, ✕ and the dialog.
pub async fn security(
    State(st): State<DiaryState>,
    headers: HeaderMap,
    StrictQuery(q): StrictQuery<SecurityQuery>,
) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    let notice = (q.done.as_deref() == Some("unlinked")).then(|| tr(&headers).t("security-unlinked"));
    security_page(&st, &headers, &session, &user, notice, None).await
}

/// `GET /passport/security/unlink`: the confirmation, as a page (without JavaScript).
pub async fn unlink_page(State(st): State<DiaryState>, headers: HeaderMap) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    if repo::link(&st.db, &user.id).await?.is_none() {
        return Ok(see_other("/passport/security"));
    }
    let needs_password = st.now() - session.auth_at > st.cfg.reauth_secs;
    Ok(html(&UnlinkPage { tr: tr(&headers), nav: Nav::new(&session, &user, "passport"), needs_password, error: None }))
}

/// The unlink form.
#[derive(Debug, Deserialize)]
pub struct UnlinkForm {
    csrf: String,
    #[serde(default)]
    password: Option<String>,
}

/// `POST /passport/security/unlink`: «Отвязать». The link goes at once; detaching at Сферум and
/// revoking the tokens at MAX go through the outbox in the same transaction, so they cannot be lost.
pub async fn unlink_submit(
    State(st): State<DiaryState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    StrictForm(form): StrictForm<UnlinkForm>,
) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    check_csrf(&session, &form.csrf)?;
    let now = st.now();
    let mut cookie = None;
    if now - session.auth_at > st.cfg.reauth_secs {
        // A recent sign-in is required: the password again.
        let hash = repo::user_by_login(&st.db, &user.login).await?.map(|(_, h)| h);
        let ok = passwords::verify(form.password.unwrap_or_default(), hash, st.cfg.password_cost).await;
        if !ok {
            let tr = tr(&headers);
            let page = UnlinkPage {
                error: Some(tr.t("error-reauth")),
                tr,
                nav: Nav::new(&session, &user, "passport"),
                needs_password: true,
            };
            return Ok((StatusCode::UNAUTHORIZED, html(&page)).into_response());
        }
        let (raw, _) = repo::rotate_session(&st.db, &session, now, true).await?;
        cookie = Some(st.cookies.set(SESSION_COOKIE, &raw, None));
    }
    if !crate::links::remove(&st, &user, &ip.to_string()).await? {
        return Ok(see_other("/passport/security"));
    }
    let resp = see_other("/passport/security?done=unlinked");
    Ok(match cookie {
        Some(c) => set_cookie(resp, c),
        None => resp,
    })
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
        "SELECT user_id FROM handoff_tickets WHERE ticket_hash = $1 AND expires_at > $2",
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
        "DELETE FROM handoff_tickets WHERE ticket_hash = $1 AND expires_at > $2 RETURNING user_id",
    )
    .bind(edulink_domain::crypto::sha256_b64(&form.ticket))
    .bind(now)
    .fetch_optional(st.db.writer())
    .await
    .map_err(edulink_store::StoreError::from)?;
    let Some(user_id) = user else { return Err(AppError::bad_request("error-handoff")) };
    let (raw, _) = repo::create_session(&st.db, &user_id, now).await?;
    audit::record(&st.db, now, "login", Some(&user_id), None, Some(&ip.to_string()), Some("handoff")).await;
    Ok(set_cookie(see_other("/sferum"), st.cookies.set(SESSION_COOKIE, &raw, None)))
}

/// `GET /sferum/lessons/{id}`: «Подключиться» next to a distance lesson. Signs in to Сферум (SSO,
/// as «Сферум» does) and lands in the lesson's room, where Сферум checks the time window and records
/// attendance. Not linked yet: the connection page.
pub async fn join_lesson(
    State(st): State<DiaryState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    let Some(lesson) = crate::lessons::visible(&st, &user, &id).await? else {
        return Err(AppError::not_found());
    };
    if !lesson.distance || lesson.cancelled {
        return Ok(see_other(&format!("/lessons/{}", lesson.id)));
    }
    match repo::link(&st.db, &user.id).await? {
        Some(link) => start(&st, &session, &user, &format!("join:{}", lesson.id), link.id_token.as_deref()).await,
        None => Ok(see_other("/sferum")),
    }
}

async fn render_lesson(
    st: &DiaryState,
    headers: &HeaderMap,
    session: &Session,
    user: &User,
    lesson: crate::repo::Lesson,
    error: Option<&'static str>,
) -> Result<Response, AppError> {
    let teacher = crate::lessons::teaches(st, user, &lesson).await?;
    let (attendance, fresh) =
        if teacher && lesson.distance { crate::lessons::attendance(st, &lesson).await? } else { (Vec::new(), true) };
    let linked = repo::link(&st.db, &user.id).await?.is_some();
    let (date, time) = crate::lessons::msk_fields(lesson.starts_at);
    let now = st.now();
    let page = LessonPage {
        tr: tr(headers),
        nav: Nav::new(session, user, "home"),
        call_url: crate::lessons::call_url(st, &lesson),
        join_open: edulink_domain::sferum::JoinWindow::at(lesson.starts_at, lesson.ends_at, now).is_open(),
        lesson,
        teacher,
        linked,
        date,
        time,
        attendance,
        attendance_fresh: fresh,
        error,
    };
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    Ok((status, html(&page)).into_response())
}

/// `GET /lessons/{id}`: a lesson; for its teacher, the distance-lesson settings and who joined.
pub async fn lesson_page(
    State(st): State<DiaryState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    let Some(lesson) = crate::lessons::visible(&st, &user, &id).await? else {
        return Err(AppError::not_found());
    };
    render_lesson(&st, &headers, &session, &user, lesson, None).await
}

/// The lesson `id` for a change by `user`: 404 when they cannot see it, 403 when they do not teach it.
async fn taught_lesson(st: &DiaryState, user: &User, id: &str) -> Result<crate::repo::Lesson, AppError> {
    let lesson = crate::lessons::visible(st, user, id).await?.ok_or_else(AppError::not_found)?;
    if !crate::lessons::teaches(st, user, &lesson).await? {
        return Err(AppError::forbidden("error-forbidden"));
    }
    Ok(lesson)
}

/// The teacher's lesson form.
#[derive(Debug, Deserialize)]
pub struct LessonForm {
    csrf: String,
    distance: Option<String>,
    call_url: String,
    date: String,
    time: String,
}

/// `POST /lessons/{id}`: the teacher marks the lesson as distance (or not), sets the call link,
/// moves it. Сферум hears of it through the outbox.
pub async fn lesson_submit(
    State(st): State<DiaryState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    StrictForm(form): StrictForm<LessonForm>,
) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    check_csrf(&session, &form.csrf)?;
    let lesson = taught_lesson(&st, &user, &id).await?;
    if lesson.cancelled {
        return render_lesson(&st, &headers, &session, &user, lesson, Some("lesson-error-cancelled")).await;
    }
    let edit = match crate::lessons::parse_edit(form.distance.is_some(), &form.call_url, &form.date, &form.time) {
        Ok(e) => e,
        Err(e) => return render_lesson(&st, &headers, &session, &user, lesson, Some(e.key())).await,
    };
    crate::lessons::apply(&st, &lesson, &edit).await?;
    audit::record(&st.db, st.now(), "lesson_changed", Some(&user.id), None, None, Some(&lesson.id)).await;
    Ok(see_other(&format!("/lessons/{}", lesson.id)))
}

/// The cancellation form: the teacher ticks that they mean it.
#[derive(Debug, Deserialize)]
pub struct CancelForm {
    csrf: String,
    confirm: Option<String>,
}

/// `POST /lessons/{id}/cancel`: the teacher cancels the lesson.
pub async fn lesson_cancel(
    State(st): State<DiaryState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    StrictForm(form): StrictForm<CancelForm>,
) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    check_csrf(&session, &form.csrf)?;
    if form.confirm.as_deref() != Some("yes") {
        return Err(AppError::bad_request("lesson-error-confirm"));
    }
    let lesson = taught_lesson(&st, &user, &id).await?;
    crate::lessons::cancel(&st, &lesson).await?;
    audit::record(&st.db, st.now(), "lesson_cancelled", Some(&user.id), None, None, Some(&lesson.id)).await;
    Ok(see_other(&format!("/lessons/{}", lesson.id)))
}
