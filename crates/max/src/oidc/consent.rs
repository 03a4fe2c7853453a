//! Consent and the authorization response (RFC 6749 §4.1.2; OIDC Core §3.1.2.4 and §3.1.2.5): after
//! sign-in the person confirms the account (first link, `prompt=consent`, a native app every time
//! per RFC 8252 §8.6, or a claim not granted before such as `phone`), declines (`access_denied`,
//! RFC 6749 §4.1.2.1) or switches account; a grant is created or kept, and a single-use code bound
//! to the request and to the time the person authenticated (`auth_time`, OIDC Core §2) is sent back
//! with `state` and `iss` (RFC 9207 §2).

use super::clients::{Client, cached_client};
use super::pairwise_sub;
use super::request::{AuthRequest, error_redirect, load_request};
use crate::audit::{Event, Record};
use crate::login::{self, current};
use crate::repo::{self, Session, grants};
use crate::views::{ConfirmPage, MismatchPage};
use crate::{MaxState, audit};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use edulink_domain::crypto::{new_id, random_token, sha256_b64};
use edulink_web::forms::{CsrfForm, check_csrf};
use edulink_web::layers::with_form_target;
use edulink_web::{AppError, ClientIp, StrictForm, html, see_other};

/// Creates the grant if needed, stores a fresh code for the person who authenticated at
/// `auth_time`, consumes the request (and clears it from the browser session `session_hash` that
/// carried it), and returns the URL of the authorization response. `sid` is the MAX session the
/// code is issued in (its ID token carries it).
pub async fn issue_code(
    st: &MaxState,
    req: &AuthRequest,
    account_id: &str,
    auth_time: i64,
    session_hash: Option<&str>,
    sid: Option<&str>,
) -> Result<String, AppError> {
    issue_code_audited(st, req, account_id, auth_time, session_hash, sid, None).await
}

/// Whether `client` may get a code with no page shown (SSO, `prompt=none`). Only a confidential
/// client: a native app (public, redirected to by a custom scheme or app link) cannot prove its
/// identity, and any app claiming its scheme would get the code (RFC 8252 §8.6), so the person
/// confirms every time.
pub fn silent_allowed(client: &Client) -> bool {
    client.is_confidential()
}

/// The claims a grant must list before a request for them is answered without asking: a sector's
/// grant covers the subject and the name, and `phone` needs the person's consent to this client.
const CONSENTED_SCOPES: &[&str] = &["phone"];

/// Whether the person already agreed to what `req` asks of `client`: a grant in the client's sector
/// and, for the claims of [`CONSENTED_SCOPES`], this client's own grant listing them.
pub async fn consented(st: &MaxState, client: &Client, account_id: &str, req: &AuthRequest) -> Result<bool, AppError> {
    if !grants::has_grant_in_sector(&st.db, &client.sector, account_id).await? {
        return Ok(false);
    }
    let asked: Vec<&str> = req.scopes().filter(|s| CONSENTED_SCOPES.contains(s)).collect();
    if asked.is_empty() {
        return Ok(true);
    }
    let granted = grants::granted_scope(&st.db, &client.client_id, account_id).await?.unwrap_or_default();
    Ok(asked.iter().all(|a| granted.split(' ').any(|g| g == *a)))
}

/// The consent behind an issued code, audited in the transaction that issues it.
#[derive(Debug, Clone, Copy)]
pub struct Consent<'a> {
    /// Client IP.
    pub ip: &'a str,
    /// Where it was given (`None` for the web, `Some("app")` for the MAX app).
    pub detail: Option<&'a str>,
}

/// [`issue_code`] with an `authorize` audit record committed together with the code.
pub async fn issue_code_audited(
    st: &MaxState,
    req: &AuthRequest,
    account_id: &str,
    auth_time: i64,
    session_hash: Option<&str>,
    sid: Option<&str>,
    consent: Option<Consent<'_>>,
) -> Result<String, AppError> {
    let now = st.now();
    if req.auth_too_old(auth_time, now) {
        // Callers send the person to sign in again first; this is the last line (OIDC Core §3.1.2.1).
        return Err(AppError::conflict("error-oauth-login-required"));
    }
    let client = cached_client(st, &req.client_id).await?.ok_or_else(|| AppError::bad_request("error-oauth-client"))?;
    let subject = pairwise_sub(st, &client.sector, account_id);
    let code = random_token(32);
    // One transaction, one commit: the grant, the code, and the request it consumes.
    let mut tx = st.db.begin().await?;
    let grant_id =
        grants::upsert_grant(&mut tx, &new_id(), &req.client_id, account_id, &subject, &req.scope, now).await?;
    let code_hash = sha256_b64(&code);
    let new_code = grants::NewCode {
        code_hash: &code_hash,
        grant_id: &grant_id,
        client_id: &req.client_id,
        account_id,
        redirect_uri: &req.redirect_uri,
        code_challenge: &req.code_challenge,
        nonce: req.nonce.as_deref(),
        scope: &req.scope,
        auth_time,
        created_at: now,
        expires_at: now + super::CODE_TTL,
        sid,
    };
    grants::insert_code(&mut tx, &new_code).await?;
    if let Some(jkt) = &req.dpop_jkt {
        let binding = super::dpop::code_binding(&code_hash);
        crate::repo::dpop::bind(&mut tx, &binding, jkt, now + super::CODE_TTL).await?;
    }
    if req.stored {
        grants::delete_request(&mut tx, &req.id).await?;
    }
    if let Some(hash) = session_hash {
        repo::set_pending_request(&mut tx, hash, None).await?;
    }
    if let Some(c) = consent {
        audit::TRAIL
            .record_in(
                &mut tx,
                now,
                &Record::new(Event::Authorize)
                    .principal(account_id)
                    .client(&req.client_id)
                    .ip(c.ip)
                    .detail_opt(c.detail),
            )
            .await?;
    }
    tx.commit().await?;
    let mut url = url::Url::parse(&req.redirect_uri).map_err(|_| AppError::bad_request("error-oauth-redirect"))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("code", &code);
        if let Some(s) = &req.state {
            q.append_pair("state", s);
        }
        q.append_pair("iss", &st.cfg.issuer);
    }
    Ok(url.to_string())
}

async fn pending(st: &MaxState, headers: &HeaderMap) -> Result<Option<(Session, AuthRequest)>, AppError> {
    let Some(session) = current(st, headers).await? else {
        return Ok(None);
    };
    let Some(id) = session.pending_request.clone() else {
        return Ok(None);
    };
    match load_request(&st.db, &id, st.now()).await? {
        Some(r) => Ok(Some((session, r))),
        None => Ok(None),
    }
}

/// Sends a session whose pending request needs a new authentication (`prompt=login`, or a sign-in
/// older than `max_age`) to the sign-in, keeping it signed in until that succeeds; `None` when the
/// session's sign-in will do.
async fn reauthenticate(st: &MaxState, session: &Session, req: &AuthRequest) -> Result<Option<Response>, AppError> {
    let Some((_, auth_time)) = session.signed_in() else { return Ok(Some(see_other("/login"))) };
    if session.needs_reauth() {
        return Ok(Some(see_other("/login")));
    }
    if !req.auth_too_old(auth_time, st.now()) {
        return Ok(None);
    }
    let mut tx = st.db.begin().await?;
    repo::attach_request(&mut tx, &session.id_hash, &req.id, true, session.ui_lang.as_deref()).await?;
    tx.commit().await?;
    Ok(Some(see_other("/login")))
}

/// `GET /authorize/continue`: after sign-in, decide: the wrong account is signed in (offer to
/// switch), a confirmation is needed (first link, the client asked for consent, a native app, or a
/// claim not granted before), or SSO completes at once.
pub async fn continue_authorization(State(st): State<MaxState>, headers: HeaderMap) -> Result<Response, AppError> {
    let Some((session, req)) = pending(&st, &headers).await? else {
        // Back after a finished request: say it is done and lead back to its client.
        return crate::finished::page(&st, &headers)
            .await?
            .ok_or_else(|| AppError::bad_request("error-oauth-request-expired"));
    };
    if let Some(to_login) = reauthenticate(&st, &session, &req).await? {
        return Ok(to_login);
    }
    let Some((account_id, auth_time)) = session.signed_in().map(|(a, t)| (a.to_owned(), t)) else {
        return Ok(see_other("/login"));
    };
    let account = repo::account(&st.db, &account_id).await?.ok_or_else(|| AppError::internal("account vanished"))?;
    let client =
        cached_client(&st, &req.client_id).await?.ok_or_else(|| AppError::bad_request("error-oauth-client"))?;
    let tr = login::page_tr(&headers, Some(&session));
    if req.hint_account_id.as_ref().is_some_and(|h| *h != account_id) {
        let page = html(&MismatchPage {
            tr,
            csrf: session.csrf.clone(),
            masked: crate::views::masked_phone(&st, &account.phone_enc),
            client_name: client.name,
        });
        return Ok(with_form_target(page, &req.redirect_uri));
    }
    if !req.consent && silent_allowed(&client) && consented(&st, &client, &account_id, &req).await? {
        let sid = super::sid_of(&session.id_hash);
        let url = issue_code(&st, &req, &account_id, auth_time, Some(&session.id_hash), Some(&sid)).await?;
        let mut resp = see_other(&url);
        crate::finished::remember(&st, &mut resp, &req.client_id);
        return Ok(resp);
    }
    let has_profile = edulink_sferum::has_profile(&st.db, &account_id).await?;
    let page = html(&ConfirmPage {
        tr,
        csrf: session.csrf.clone(),
        masked: crate::views::masked_phone(&st, &account.phone_enc),
        name: format!("{} {}", account.first_name, account.last_name),
        client_name: client.name,
        has_profile,
        phone: req.scopes().any(|s| s == "phone"),
    });
    // Its forms end at the client (CSP `form-action`).
    Ok(with_form_target(page, &req.redirect_uri))
}

/// The pending request of a form posted on the confirmation page, after its CSRF check.
async fn pending_form(st: &MaxState, headers: &HeaderMap, form: &CsrfForm) -> Result<(Session, AuthRequest), AppError> {
    let (session, req) =
        pending(st, headers).await?.ok_or_else(|| AppError::bad_request("error-oauth-request-expired"))?;
    check_csrf(&session.csrf, &form.csrf)?;
    Ok((session, req))
}

/// `POST /authorize/confirm`: the person confirms the account; the code goes back to the client.
pub async fn confirm(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    StrictForm(form): StrictForm<CsrfForm>,
) -> Result<Response, AppError> {
    let (session, req) = pending_form(&st, &headers, &form).await?;
    if let Some(to_login) = reauthenticate(&st, &session, &req).await? {
        return Ok(to_login);
    }
    let Some((account_id, auth_time)) = session.signed_in().map(|(a, t)| (a.to_owned(), t)) else {
        return Ok(see_other("/login"));
    };
    if req.hint_account_id.as_ref().is_some_and(|h| *h != account_id) {
        return Ok(see_other("/authorize/continue"));
    }
    let ip = ip.to_string();
    let consent = Some(Consent { ip: &ip, detail: None });
    let sid = super::sid_of(&session.id_hash);
    let url =
        issue_code_audited(&st, &req, &account_id, auth_time, Some(&session.id_hash), Some(&sid), consent).await?;
    edulink_web::metrics::funnel("consent_given");
    let mut resp = see_other(&url);
    crate::finished::remember(&st, &mut resp, &req.client_id);
    Ok(resp)
}

/// `POST /authorize/deny`: back to the client with `access_denied`.
pub async fn deny(
    State(st): State<MaxState>,
    headers: HeaderMap,
    StrictForm(form): StrictForm<CsrfForm>,
) -> Result<Response, AppError> {
    let (session, req) = pending_form(&st, &headers, &form).await?;
    let mut tx = st.db.begin().await?;
    repo::set_pending_request(&mut tx, &session.id_hash, None).await?;
    grants::delete_request(&mut tx, &req.id).await?;
    tx.commit().await?;
    edulink_web::metrics::funnel_failure("consent_denied");
    Ok(error_redirect(&st, &req.redirect_uri, req.state.as_deref(), "access_denied", "the user declined"))
}

/// `POST /authorize/switch`: signs out the current account, keeping the authorization request, so
/// the person can sign in as the account the diary expects.
pub async fn switch_account(
    State(st): State<MaxState>,
    headers: HeaderMap,
    StrictForm(form): StrictForm<CsrfForm>,
) -> Result<Response, AppError> {
    let (session, req) = pending_form(&st, &headers, &form).await?;
    // The account signs out (its clients are told on the back channel); the request stays, with its
    // language, in a new anonymous session.
    super::logout::sign_out(&st, &session, super::logout::SignOutBy::Switch, None).await?;
    let mut tx = st.db.begin().await?;
    let (raw, new) = repo::create_session_in(&mut tx, st.now(), Some(&req.id)).await?;
    repo::attach_request(&mut tx, &new.id_hash, &req.id, false, session.ui_lang.as_deref()).await?;
    tx.commit().await?;
    let mut resp = see_other("/login");
    resp.headers_mut().append(header::SET_COOKIE, st.cookies.set(login::SESSION_COOKIE, &raw, None));
    Ok(resp)
}
