//! Sign-in to MAX by SMS code: «Окно ввода номера телефона» → «Продолжить» → «Окно ввода кода» →
//! «Перейти в MAX», and registration of a new phone after its code is verified.

use crate::audit::{Event, Record};
use crate::repo::{self, Session};
use crate::views::{self, CodePage, HomePage, InboxPage, PhonePage, RegisterPage};
use crate::{MaxState, audit, limits};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edulink_domain::crypto::new_id;
use edulink_domain::otp::{OtpCode, sms_text};
use edulink_domain::{PersonName, Phone, PhoneError};
use edulink_web::forms::{CsrfForm, check_csrf};
use edulink_web::{AppError, ClientIp, Lang, StrictForm, Tr, html, see_other};
use serde::Deserialize;

/// The session cookie's base name.
pub const SESSION_COOKIE: &str = "max_sid";

/// The current session, if the browser has a live one.
pub async fn current(st: &MaxState, headers: &HeaderMap) -> Result<Option<Session>, AppError> {
    let Some(raw) = st.cookies.get(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    Ok(repo::load_session(
        &st.db,
        &raw,
        repo::SessionKind::Web,
        st.now(),
        st.cfg.session_idle_secs,
        st.cfg.session_absolute_secs,
    )
    .await?)
}

/// The current session, or a new anonymous one with the cookie to set.
pub async fn current_or_new(st: &MaxState, headers: &HeaderMap) -> Result<(Session, Option<HeaderValue>), AppError> {
    if let Some(s) = current(st, headers).await? {
        return Ok((s, None));
    }
    let (raw, s) = repo::create_session(&st.db, st.now(), None).await?;
    Ok((s, Some(st.cookies.set(SESSION_COOKIE, &raw, None))))
}

fn with_cookie(mut resp: Response, cookie: Option<HeaderValue>) -> Response {
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

fn tr(headers: &HeaderMap) -> Tr {
    Tr::new(Lang::from_headers(headers))
}

/// The language of a sign-in page: the pending request's `ui_locales` (OIDC Core §3.1.2.1) when it
/// named a supported one, else the browser's choice.
pub fn page_tr(headers: &HeaderMap, session: Option<&Session>) -> Tr {
    match session.and_then(|s| s.ui_lang.as_deref()).and_then(Lang::parse) {
        Some(lang) => Tr::new(lang),
        None => tr(headers),
    }
}

/// `GET /`: the signed-in account, or an invitation to sign in.
pub async fn home(State(st): State<MaxState>, headers: HeaderMap) -> Result<Response, AppError> {
    let tr = tr(&headers);
    let session = current(&st, &headers).await?;
    let account = match session.as_ref().and_then(|s| s.account_id.clone()) {
        Some(id) => repo::account(&st.db, &id).await?,
        None => None,
    };
    let (masked, notifications) = match &account {
        Some(a) => (views::masked_phone(&st, &a.phone_enc), repo::notifications(&st.db, &a.id).await?),
        None => (String::new(), Vec::new()),
    };
    Ok(html(&HomePage {
        tr,
        csrf: session.map(|s| s.csrf).unwrap_or_default(),
        account,
        masked,
        notifications: notifications.into_iter().map(views::NotificationView::new).collect(),
    }))
}

/// `GET /login`: «Окно ввода номера телефона».
pub async fn phone_page(State(st): State<MaxState>, headers: HeaderMap) -> Result<Response, AppError> {
    let (session, cookie) = current_or_new(&st, &headers).await?;
    // A signed-in session asked to authenticate again signs in anew here; it stays signed in until then.
    if session.account_id.is_some() && !session.needs_reauth() {
        let next = if session.pending_request.is_some() { "/authorize/continue" } else { "/" };
        return Ok(see_other(next));
    }
    let pending = pending_code(&st, &session).await?.map(|c| views::masked_phone(&st, &c.phone_enc));
    let page = PhonePage {
        tr: page_tr(&headers, Some(&session)),
        csrf: session.csrf,
        phone: String::new(),
        error: None,
        retry_after: None,
        pending,
    };
    Ok(with_cookie(html(&page), cookie))
}

/// The session's code that can still be entered: after Back or a closed tab, the phone page leads
/// to it instead of asking for a new one the send gap refuses.
async fn pending_code(st: &MaxState, session: &Session) -> Result<Option<repo::Challenge>, AppError> {
    Ok(challenge_of(st, session).await?.filter(|c| c.expires_at > st.now()))
}

/// The phone form.
#[derive(Debug, Deserialize)]
pub struct PhoneForm {
    csrf: String,
    phone: String,
}

/// `POST /login/phone`: «Продолжить». The answer is the same whether or not the phone has an
/// account: nothing about the account is looked up before the code is verified.
pub async fn phone_submit(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    StrictForm(form): StrictForm<PhoneForm>,
) -> Result<Response, AppError> {
    let Some(session) = current(&st, &headers).await? else {
        return Ok(see_other("/login"));
    };
    let tr = page_tr(&headers, Some(&session));
    if check_csrf(&session.csrf, &form.csrf).is_err() {
        // A form from an older page (another tab restarted sign-in): nothing is done, and the same
        // form comes back current, the number kept, so one more «Продолжить» goes on.
        let page = phone_again(&st, session, tr, &form.phone, |tr| tr.t("error-form-renewed"), None).await?;
        return Ok((StatusCode::FORBIDDEN, page).into_response());
    }
    let phone = match Phone::parse(&form.phone, &st.cfg.default_region, &st.cfg.allowed_countries) {
        Ok(p) => p,
        Err(e) => {
            let key = match e {
                PhoneError::Invalid if form.phone.trim().is_empty() => "error-phone-empty",
                PhoneError::Invalid => "error-phone-invalid",
                PhoneError::NotMobile => "error-phone-not-mobile",
                // Where only Russian numbers are served, say which number is needed.
                PhoneError::CountryNotAllowed if st.cfg.allowed_countries == ["RU"] => "error-phone-country-ru",
                PhoneError::CountryNotAllowed => "error-phone-country",
            };
            let page = phone_again(&st, session, tr, &form.phone, |tr| tr.t(key), None).await?;
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    match send_code(&st, &session, &phone, &ip.to_string()).await? {
        Ok(()) => Ok(see_other("/login/code")),
        Err(refusal) => {
            let pending = pending_code(&st, &session).await?;
            let same_phone = pending
                .as_ref()
                .is_some_and(|c| c.phone_hash == st.secrets.phone_hash.keyed_hash("phone", phone.e164()));
            // Back (or a new tab) after «Продолжить»: the code this browser was sent to this phone
            // still works, so the way on is to enter it, not a refusal. A lock is the exception:
            // while locked no code is evaluated, and the page says how long to wait.
            if same_phone && !matches!(refusal, limits::Refusal::Locked(_)) {
                return Ok(see_other("/login/code"));
            }
            let wait = Some(refusal.retry_after());
            let page = phone_again(&st, session, tr, &form.phone, |tr| refusal_reason(tr, refusal), wait).await?;
            Ok(too_many(page, refusal.retry_after()))
        }
    }
}

/// The phone page again after a «Продолжить» that sent nothing: the reason, what the child typed
/// (never the masked form, which does not parse as a number), the wait if any, and the way to a
/// code this browser can still enter.
async fn phone_again(
    st: &MaxState,
    session: Session,
    tr: Tr,
    typed: &str,
    reason: impl FnOnce(&Tr) -> String,
    retry_after: Option<i64>,
) -> Result<Response, AppError> {
    let pending = pending_code(st, &session).await?.map(|c| views::masked_phone(st, &c.phone_enc));
    let error = Some(reason(&tr));
    let phone = typed.chars().take(32).collect();
    Ok(html(&PhonePage { tr, csrf: session.csrf, phone, error, retry_after, pending }))
}

/// A send refusal's reason without its wait: a page shows the wait once, in the countdown, so
/// no second number stays frozen while the countdown ticks.
fn refusal_reason(tr: &Tr, r: limits::Refusal) -> String {
    tr.t(match r {
        limits::Refusal::Locked(_) => "refused-locked",
        limits::Refusal::TooSoon(_) => "refused-too-soon",
        limits::Refusal::PhoneBudget(_) => "refused-phone-budget",
        limits::Refusal::IpBudget(_) | limits::Refusal::Global(_) => "refused-busy",
    })
}

fn too_many(page: Response, secs: i64) -> Response {
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, page).into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

/// Admits, creates and sends a new code for `phone`, binding it to `session`.
pub async fn send_code(
    st: &MaxState,
    session: &Session,
    phone: &Phone,
    ip: &str,
) -> Result<Result<(), limits::Refusal>, AppError> {
    let now = st.now();
    let phone_hash = st.secrets.phone_hash.keyed_hash("phone", phone.e164());
    let code = OtpCode::generate();
    let challenge = repo::Challenge {
        id: new_id(),
        session_hash: session.id_hash.clone(),
        phone_hash: phone_hash.clone(),
        phone_enc: st.secrets.phone_cipher.seal("phone", phone.e164().as_bytes()),
        expires_at: now + st.cfg.code_policy.ttl_secs,
    };
    let mac = code.mac(&st.secrets.code_mac, &challenge.id);
    // The admission, the challenge, the session's pointer to it and the `sms_sent` audit record:
    // one transaction (a refusal rolls back and counts nothing). The SMS goes out after the commit,
    // never under the lock; a gateway failure adds an `sms_failed` record.
    let admitted = edulink_store::retry(|| async {
        let mut tx = st.db.begin().await?;
        if let Err(refusal) = limits::admit_send(&mut tx, &phone_hash, ip, now, &st.cfg.sms_limits).await? {
            return Ok(Err(refusal));
        }
        repo::create_challenge(&mut tx, &challenge, &mac, now).await?;
        repo::set_challenge(&mut tx, &session.id_hash, Some(&challenge.id)).await?;
        audit::TRAIL.record_in(&mut tx, now, &Record::new(Event::SmsSent).ip(ip)).await?;
        tx.commit().await?;
        Ok(Ok(()))
    })
    .await?;
    if let Err(refusal) = admitted {
        metrics::counter!("edulink_sms_refused_total", "reason" => refusal.reason()).increment(1);
        edulink_web::metrics::funnel_failure("sms_refused");
        audit::TRAIL.record(&st.db, now, &Record::new(Event::SmsRefused).ip(ip).detail(refusal.reason())).await;
        return Ok(Err(refusal));
    }
    if let Err(e) = st.sms.send(phone.e164(), &sms_text(&code, &st.cfg.sms_host)).await {
        tracing::error!(error = %e, phone = phone.masked(), "SMS not delivered to the gateway");
        audit::TRAIL.record(&st.db, now, &Record::new(Event::SmsFailed).ip(ip)).await;
        return Err(AppError::new(edulink_web::ErrorKind::Unavailable, "error-sms-gateway"));
    }
    metrics::counter!("edulink_sms_sent_total").increment(1);
    edulink_web::metrics::funnel("sms_sent");
    Ok(Ok(()))
}

/// The live challenge of a session.
pub async fn challenge_of(st: &MaxState, session: &Session) -> Result<Option<repo::Challenge>, AppError> {
    match &session.challenge_id {
        Some(id) => Ok(repo::challenge(&st.db, id, &session.id_hash).await?),
        None => Ok(None),
    }
}

async fn render_code_page(
    st: &MaxState,
    tr: Tr,
    session: &Session,
    challenge: &repo::Challenge,
    error: Option<String>,
    wait: Option<i64>,
) -> Result<Response, AppError> {
    let retry_after = match wait {
        Some(w) => w,
        None => limits::resend_wait(&st.db, &challenge.phone_hash, st.now(), &st.cfg.sms_limits).await?,
    };
    let page = html(&CodePage {
        tr,
        csrf: session.csrf.clone(),
        masked: views::masked_phone(st, &challenge.phone_enc),
        error,
        retry_after,
        minutes: code_minutes(st),
    });
    for_pending_request(st, session, page).await
}

/// How long a code lasts, in whole minutes (at least one), for the pages that say so.
fn code_minutes(st: &MaxState) -> i64 {
    (st.cfg.code_policy.ttl_secs / 60).max(1)
}

/// Lets a sign-in page's forms end at the client of the session's pending authorization request
/// (CSP `form-action`): a right code goes on to `/authorize/continue` and from there to the client.
async fn for_pending_request(st: &MaxState, session: &Session, page: Response) -> Result<Response, AppError> {
    let Some(id) = &session.pending_request else { return Ok(page) };
    Ok(match crate::oidc::load_request(&st.db, id, st.now()).await? {
        Some(req) => edulink_web::layers::with_form_target(page, &req.redirect_uri),
        None => page,
    })
}

/// `GET /login/code`: «Окно ввода кода».
pub async fn code_page(State(st): State<MaxState>, headers: HeaderMap) -> Result<Response, AppError> {
    let Some(session) = current(&st, &headers).await? else {
        return Ok(see_other("/login"));
    };
    let Some(challenge) = challenge_of(&st, &session).await? else {
        return Ok(see_other("/login"));
    };
    render_code_page(&st, page_tr(&headers, Some(&session)), &session, &challenge, None, None).await
}

/// The code form.
#[derive(Debug, Deserialize)]
pub struct CodeForm {
    csrf: String,
    code: String,
}

/// `POST /login/code`: «Перейти в MAX».
pub async fn code_submit(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: String,
) -> Result<Response, AppError> {
    let Some(session) = current(&st, &headers).await? else {
        return Ok(see_other("/login"));
    };
    let Some(challenge) = challenge_of(&st, &session).await? else {
        return Ok(see_other("/login"));
    };
    let form: CodeForm = match edulink_web::forms::parse_strict(&body) {
        Ok(f) => f,
        Err(e) => {
            // A polluted code form (`code=1&code=2`, `code[]=…`) is refused and audited; it is no
            // guess (nothing is evaluated), so it counts toward no lock (SECURITY.md, «Lockout model»).
            metrics::counter!("edulink_param_pollution_total").increment(1);
            audit::TRAIL
                .record(&st.db, st.now(), &Record::new(Event::ParamPollution).ip(&ip.to_string()).detail("code"))
                .await;
            return Err(e);
        }
    };
    check_csrf(&session.csrf, &form.csrf)?;
    let tr = page_tr(&headers, Some(&session));
    let key = match verify_code(&st, &session, &challenge, &form.code, &ip.to_string()).await? {
        Verified::SignedIn(account_id) => return finish_sign_in(&st, &session, &account_id).await,
        Verified::NeedsRegistration => return Ok(see_other("/login/register")),
        Verified::BadFormat => tr.t("error-code-format"),
        Verified::Expired => tr.t1("error-code-expired", "minutes", code_minutes(&st)),
        Verified::Dead => tr.t("error-code-dead"),
        // The tries left of this code: the same count whether or not the phone is locked (the
        // locked answer stays the wrong code's, SECURITY.md «Lockout model»).
        Verified::Wrong { left: 0 } => tr.t("error-code-wrong-last"),
        Verified::Wrong { left } => tr.t1("error-code-wrong", "left", left),
    };
    let msg = key;
    Ok((StatusCode::BAD_REQUEST, render_code_page(&st, tr, &session, &challenge, Some(msg), None).await?)
        .into_response())
}

/// The outcome of a code check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Not six digits: nothing was evaluated.
    BadFormat,
    /// The code's time is over (nothing was evaluated).
    Expired,
    /// The code is used or out of tries (nothing was evaluated).
    Dead,
    /// Wrong (or the phone is locked: the same answer on purpose), with the code's tries left.
    Wrong {
        /// Guesses this code still takes.
        left: i64,
    },
    /// Right, and the phone has an account.
    SignedIn(String),
    /// Right, and the phone is new: registration follows (the session now holds the verified phone).
    NeedsRegistration,
}

/// Checks a code against the session's challenge with every rule: one atomic try out of five,
/// constant-time MAC comparison, the per-phone failure count and lock, single use.
pub async fn verify_code(
    st: &MaxState,
    session: &Session,
    challenge: &repo::Challenge,
    input: &str,
    ip: &str,
) -> Result<Verified, AppError> {
    let now = st.now();
    let Ok(code) = OtpCode::parse(input) else { return Ok(Verified::BadFormat) };
    let policy = &st.cfg.code_policy;
    // Every step of the check and its outcome (the try, the phone's count or new state, the audit
    // records) is one transaction. A dead code (used, expired, out of tries) is no guess: it
    // counts toward no lock.
    let mut tx = st.db.begin().await?;
    let Some((mac, taken)) = repo::take_attempt(&mut tx, &challenge.id, now, policy.max_attempts).await? else {
        audit::TRAIL.record_in(&mut tx, now, &Record::new(Event::CodeDead).ip(ip)).await?;
        tx.commit().await?;
        return Ok(if challenge.expires_at <= now { Verified::Expired } else { Verified::Dead });
    };
    let left = (policy.max_attempts - taken).max(0);
    // The guess is counted against the phone before the code is evaluated; while the phone is
    // locked (or its allowance is taken by guesses in flight) nothing is evaluated and the answer
    // is exactly that of a wrong code.
    let Some(guess) = limits::reserve_guess(&mut tx, &challenge.phone_hash, now, policy).await? else {
        audit::TRAIL.record_in(&mut tx, now, &Record::new(Event::CodeWrong).ip(ip).detail("locked")).await?;
        tx.commit().await?;
        return Ok(Verified::Wrong { left });
    };
    metrics::counter!("edulink_code_evaluations_total").increment(1);
    if !code.matches(&st.secrets.code_mac, &challenge.id, &mac)
        || !repo::use_challenge(&mut tx, &challenge.id, now).await?
    {
        let locked = limits::settle_failure(&mut tx, &challenge.phone_hash, guess, now, policy).await?;
        let event = if locked.is_some() { Event::PhoneLocked } else { Event::CodeWrong };
        audit::TRAIL.record_in(&mut tx, now, &Record::new(event).ip(ip)).await?;
        tx.commit().await?;
        metrics::counter!("edulink_code_failures_total").increment(1);
        edulink_web::metrics::funnel_failure(if event == Event::PhoneLocked { "phone_locked" } else { "code_wrong" });
        return Ok(Verified::Wrong { left });
    }
    limits::clear_failures(&mut tx, &challenge.phone_hash).await?;
    audit::TRAIL.record_in(&mut tx, now, &Record::new(Event::CodeVerified).ip(ip)).await?;
    let verified = match repo::account_by_phone(&mut tx, &challenge.phone_hash).await? {
        Some(account) => {
            audit::TRAIL.record_in(&mut tx, now, &Record::new(Event::SignIn).principal(&account.id).ip(ip)).await?;
            Verified::SignedIn(account.id)
        }
        None => {
            repo::set_verified_phone(&mut tx, &session.id_hash, &challenge.phone_hash, &challenge.phone_enc).await?;
            Verified::NeedsRegistration
        }
    };
    tx.commit().await?;
    metrics::counter!("edulink_code_verified_total").increment(1);
    edulink_web::metrics::funnel("code_verified");
    Ok(verified)
}

/// Rotates the session to the signed-in account and continues where the browser was going.
async fn finish_sign_in(st: &MaxState, old: &Session, account_id: &str) -> Result<Response, AppError> {
    let (raw, new) = repo::sign_in(&st.db, old, account_id, st.now()).await?;
    Ok(signed_in(st, &raw, &new))
}

/// Sets the rotated session's cookie and continues where the browser was going.
fn signed_in(st: &MaxState, raw: &str, new: &Session) -> Response {
    let next = if new.pending_request.is_some() { "/authorize/continue" } else { "/" };
    with_cookie(see_other(next), Some(st.cookies.set(SESSION_COOKIE, raw, None)))
}

/// `POST /login/resend`: a new code to the same phone, no sooner than the gap allows.
pub async fn resend(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    StrictForm(form): StrictForm<CsrfForm>,
) -> Result<Response, AppError> {
    let Some(session) = current(&st, &headers).await? else {
        return Ok(see_other("/login"));
    };
    check_csrf(&session.csrf, &form.csrf)?;
    let Some(challenge) = challenge_of(&st, &session).await? else {
        return Ok(see_other("/login"));
    };
    let phone = views::phone_of(&st, &challenge.phone_enc)?;
    match send_code(&st, &session, &phone, &ip.to_string()).await? {
        Ok(()) => Ok(see_other("/login/code")),
        Err(refusal) => {
            let tr = page_tr(&headers, Some(&session));
            let msg = refusal_reason(&tr, refusal);
            let page = render_code_page(&st, tr, &session, &challenge, Some(msg), Some(refusal.retry_after())).await?;
            Ok(too_many(page, refusal.retry_after()))
        }
    }
}

/// `GET /login/register`: first and last name for a new phone, whose code is already verified.
pub async fn register_page(State(st): State<MaxState>, headers: HeaderMap) -> Result<Response, AppError> {
    let Some(session) = current(&st, &headers).await? else {
        return Ok(see_other("/login"));
    };
    let Some(enc) = session.verified_phone_enc.as_deref() else {
        return Ok(see_other("/login"));
    };
    let page = html(&RegisterPage {
        tr: page_tr(&headers, Some(&session)),
        csrf: session.csrf.clone(),
        masked: views::masked_phone(&st, enc),
        first_name: String::new(),
        last_name: String::new(),
        error: None,
    });
    for_pending_request(&st, &session, page).await
}

/// The registration form.
#[derive(Debug, Deserialize)]
pub struct RegisterForm {
    csrf: String,
    first_name: String,
    last_name: String,
}

/// `POST /login/register`: creates the account and signs in.
pub async fn register_submit(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    StrictForm(form): StrictForm<RegisterForm>,
) -> Result<Response, AppError> {
    let Some(session) = current(&st, &headers).await? else {
        return Ok(see_other("/login"));
    };
    check_csrf(&session.csrf, &form.csrf)?;
    let (Some(hash), Some(enc)) = (session.verified_phone_hash.clone(), session.verified_phone_enc.clone()) else {
        return Ok(see_other("/login"));
    };
    let (Ok(first), Ok(last)) = (PersonName::parse(&form.first_name), PersonName::parse(&form.last_name)) else {
        let tr = page_tr(&headers, Some(&session));
        let page = RegisterPage {
            error: Some(tr.t("error-name-invalid")),
            tr,
            csrf: session.csrf.clone(),
            masked: views::masked_phone(&st, &enc),
            first_name: form.first_name.chars().take(50).collect(),
            last_name: form.last_name.chars().take(50).collect(),
        };
        let page = for_pending_request(&st, &session, html(&page)).await?;
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    };
    let (_, raw, new) = register_account(&st, &session, &hash, &enc, &first, &last, &ip.to_string()).await?;
    Ok(signed_in(&st, &raw, &new))
}

/// Creates the account of a verified phone and signs the session in to it (the account, its audit
/// record and the session rotation in one transaction). Returns the account, the new session's raw
/// id and the session. When another browser registered the same phone meanwhile (both verified a
/// code), that account is the one: the phone is the same person's.
pub async fn register_account(
    st: &MaxState,
    session: &Session,
    phone_hash: &str,
    phone_enc: &str,
    first: &PersonName,
    last: &PersonName,
    ip: &str,
) -> Result<(repo::Account, String, Session), AppError> {
    let now = st.now();
    let mut tx = st.db.begin().await?;
    match repo::create_account(&mut tx, phone_hash, phone_enc, first.as_str(), last.as_str(), now).await {
        Ok(account) => {
            audit::TRAIL.record_in(&mut tx, now, &Record::new(Event::Register).principal(&account.id).ip(ip)).await?;
            let (raw, new) = repo::sign_in_in(&mut tx, session, &account.id, now).await?;
            tx.commit().await?;
            edulink_web::metrics::funnel("registered");
            Ok((account, raw, new))
        }
        Err(edulink_store::StoreError::Conflict(_)) => {
            // PostgreSQL refuses every later statement of a transaction after an error: start afresh.
            drop(tx);
            let account = repo::account_by_phone(st.db.pool(), phone_hash)
                .await?
                .ok_or_else(|| AppError::internal("account vanished"))?;
            audit::TRAIL.record(&st.db, now, &Record::new(Event::Register).principal(&account.id).ip(ip)).await;
            let (raw, new) = repo::sign_in(&st.db, session, &account.id, now).await?;
            Ok((account, raw, new))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /logout`: «Выйти» ends the session on the server, and the clients that got an ID token
/// in it are told (OpenID Connect Back-Channel Logout 1.0, `oidc::backchannel`).
pub async fn logout(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    StrictForm(form): StrictForm<CsrfForm>,
) -> Result<Response, AppError> {
    if let Some(session) = current(&st, &headers).await? {
        check_csrf(&session.csrf, &form.csrf)?;
        let ip = ip.to_string();
        crate::oidc::logout::sign_out(&st, &session, crate::oidc::logout::SignOutBy::Web, Some(&ip)).await?;
    }
    Ok(with_cookie(see_other("/"), Some(st.cookies.clear(SESSION_COOKIE))))
}

/// `GET /dev/sms` (dev mode only): the dev inbox as JSON, oldest first.
pub async fn dev_sms_json(
    State(st): State<MaxState>,
    edulink_web::StrictQuery(q): edulink_web::StrictQuery<DevSmsQuery>,
) -> Response {
    let inbox = st.sms.dev_inbox();
    let messages = match q.to {
        Some(to) => inbox.map(|i| i.to(&to)),
        None => inbox.map(|i| i.all()),
    };
    axum::Json(messages.unwrap_or_default()).into_response()
}

/// `GET /dev/sms?to=+7…`: only the messages to one phone (the dev inbox keeps the last 1,000; the
/// benchmark and the command-line app read one phone's code without copying all of them).
#[derive(Debug, Deserialize)]
pub struct DevSmsQuery {
    to: Option<String>,
}

/// `GET /dev/inbox` (dev mode only): the dev inbox as a page, newest first.
pub async fn dev_inbox_page(State(st): State<MaxState>, headers: HeaderMap) -> Response {
    let mut messages = st.sms.dev_inbox().map(|i| i.all()).unwrap_or_default();
    messages.reverse();
    html(&InboxPage { tr: tr(&headers), messages })
}
