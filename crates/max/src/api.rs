//! The MAX app's JSON API under `/api/v1`: sign-in by SMS code, registration, the account, and
//! finishing an authorization request in the app instead of the browser. The same rules and limits
//! as the web pages apply (the handlers share their logic); errors are the JSON envelope.

use crate::MaxState;
use crate::login::{Verified, challenge_of, send_code, verify_code};
use crate::oidc::{self, AuthorizeParams, RequestError, Validated};
use crate::repo::{self, Session};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get, routing::post};
use edulink_domain::{PersonName, Phone, PhoneError};
use edulink_web::api::{ApiJson, BearerScheme, ErrorBody, ErrorEnvelope, bearer, unauthorized};
use edulink_web::{AppError, ClientIp, ErrorKind};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

/// The API's routes.
pub fn routes() -> Router<MaxState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/v1/auth/codes", post(send))
        .route("/api/v1/auth/codes/resend", post(resend))
        .route("/api/v1/auth/codes/verify", post(verify))
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/session", axum::routing::delete(sign_out))
        .route("/api/v1/me", get(me))
        .route("/api/v1/authorizations", post(create_authorization))
        .route("/api/v1/authorizations/{request_id}/approve", post(approve))
}

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(title = "MAX app API", version = "1", description = "Sign-in to MAX by SMS code and in-app approval of OpenID Connect authorization requests. Every error is `{\"error\": {\"code\", \"message\", \"retry_after\"?}}`; codes: bad_request, json_required, too_large, unauthorized, forbidden, not_found, phone_invalid, phone_not_mobile, phone_country, phone_locked, sms_too_soon, sms_phone_budget, sms_busy, sms_gateway, code_format, code_dead, code_wrong, name_invalid, registration_expired, oauth_client, oauth_redirect, oauth_invalid_request, oauth_invalid_scope, oauth_request_unknown, oauth_account_mismatch, oauth_login_required, unavailable, internal."),
    paths(send, resend, verify, register, sign_out, me, create_authorization, approve),
    components(schemas(SendCode, CodeSent, Resend, VerifyCode, VerifyResult, Register, SignedIn, Me, CreateAuthorization, AuthorizationCreated, Approved, ErrorEnvelope, ErrorBody)),
    modifiers(&BearerScheme)
)]
pub struct ApiDoc;

/// `GET /api/v1/openapi.json`.
pub async fn openapi_json() -> Response {
    edulink_web::api::openapi_response(&ApiDoc::openapi())
}

/// A phone number to send a code to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendCode {
    /// Mobile number as typed (`8 916 123-45-67`, `+79161234567`).
    #[schema(min_length = 1, max_length = 32, pattern = r"^[0-9+() .\-]+$")]
    phone: String,
}

/// A code was sent (the answer is the same whether or not the phone has an account).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeSent {
    /// Opaque id of this sign-in attempt; send it back with the code.
    #[schema(min_length = 43, max_length = 43, pattern = "^[A-Za-z0-9_-]{43}$")]
    challenge_id: String,
    /// Seconds before a new code may be requested.
    #[schema(minimum = 0)]
    retry_after: i64,
    /// The phone, masked.
    phone_masked: String,
}

/// A request for a new code in the same sign-in attempt.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resend {
    /// From `CodeSent`.
    #[schema(min_length = 43, max_length = 43, pattern = "^[A-Za-z0-9_-]{43}$")]
    challenge_id: String,
}

/// A code to check.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyCode {
    /// From `CodeSent`.
    #[schema(min_length = 43, max_length = 43, pattern = "^[A-Za-z0-9_-]{43}$")]
    challenge_id: String,
    /// The six digits from the SMS.
    #[schema(min_length = 6, max_length = 6, pattern = "^[0-9]{6}$")]
    code: String,
}

/// The result of a right code.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyResult {
    /// True for a new phone: register a name with `registration_token` next.
    registration_required: bool,
    /// The session token (when signed in).
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    /// For `POST /api/v1/auth/register` (when the phone is new).
    #[serde(skip_serializing_if = "Option::is_none")]
    registration_token: Option<String>,
}

/// A name for a new phone.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// From `VerifyResult`.
    #[schema(min_length = 43, max_length = 43, pattern = "^[A-Za-z0-9_-]{43}$")]
    registration_token: String,
    /// First name (letters, spaces, hyphens).
    #[schema(min_length = 1, max_length = 50)]
    first_name: String,
    /// Last name.
    #[schema(min_length = 1, max_length = 50)]
    last_name: String,
}

/// A signed-in session.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedIn {
    /// Bearer token for the other calls.
    token: String,
}

/// The signed-in account.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Me {
    /// First name.
    first_name: String,
    /// Last name.
    last_name: String,
    /// The phone, masked.
    phone_masked: String,
}

/// An authorization request the app received (the URL a diary app opened in MAX).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAuthorization {
    /// The whole `/oauth/authorize?...` URL.
    #[schema(min_length = 1, max_length = 4096)]
    authorization_url: String,
}

/// A validated authorization request, waiting for approval.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationCreated {
    /// Id to approve.
    request_id: String,
    /// The client's display name, to show.
    client_name: String,
    /// Granted scopes.
    scope: String,
}

/// The approved request's answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Approved {
    /// Open this URL (the client's redirect URI with `code`, `state` and `iss`).
    redirect_url: String,
}

async fn session_of(st: &MaxState, token: &str) -> Result<Option<Session>, AppError> {
    Ok(repo::load_session(
        &st.db,
        token,
        repo::SessionKind::App,
        st.now(),
        st.cfg.session_idle_secs,
        st.cfg.session_absolute_secs,
    )
    .await?)
}

async fn signed_in(st: &MaxState, headers: &HeaderMap) -> Result<(Session, String), AppError> {
    let token = bearer(headers).ok_or_else(unauthorized)?;
    let s = session_of(st, token).await?.ok_or_else(unauthorized)?;
    let account = s.account_id.clone().ok_or_else(unauthorized)?;
    Ok((s, account))
}

fn phone_error(e: PhoneError) -> AppError {
    AppError::bad_request(match e {
        PhoneError::Invalid => "error-phone-invalid",
        PhoneError::NotMobile => "error-phone-not-mobile",
        PhoneError::CountryNotAllowed => "error-phone-country",
    })
}

fn refusal_error(r: crate::limits::Refusal) -> AppError {
    let key = match r {
        crate::limits::Refusal::Locked(_) => "error-phone-locked",
        crate::limits::Refusal::TooSoon(_) => "error-sms-too-soon",
        crate::limits::Refusal::PhoneBudget(_) => "error-sms-phone-budget",
        crate::limits::Refusal::IpBudget(_) | crate::limits::Refusal::Global(_) => "error-sms-busy",
    };
    AppError::too_many(key, r.retry_after())
}

/// Send a sign-in code.
#[utoipa::path(post, path = "/api/v1/auth/codes", request_body = SendCode, tag = "auth",
    responses((status = 202, body = CodeSent), (status = 400, body = ErrorEnvelope), (status = 415, body = ErrorEnvelope), (status = 429, body = ErrorEnvelope)))]
pub async fn send(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<SendCode>,
) -> Result<Response, AppError> {
    let phone = Phone::parse(&body.phone, &st.cfg.default_region, &st.cfg.allowed_countries).map_err(phone_error)?;
    let (raw, session) = repo::create_app_session(&st.db, st.now()).await?;
    send_code(&st, &session, &phone, &ip.to_string()).await?.map_err(refusal_error)?;
    let body = CodeSent {
        challenge_id: raw,
        retry_after: st.cfg.sms_limits.resend_gap_secs,
        phone_masked: phone.masked().into(),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn attempt(st: &MaxState, challenge_id: &str) -> Result<(Session, repo::Challenge), AppError> {
    let gone = || AppError::bad_request("error-code-dead");
    let session = session_of(st, challenge_id).await?.ok_or_else(gone)?;
    let challenge = challenge_of(st, &session).await?.ok_or_else(gone)?;
    Ok((session, challenge))
}

/// Send a new code in the same attempt (no sooner than `retry_after`).
#[utoipa::path(post, path = "/api/v1/auth/codes/resend", request_body = Resend, tag = "auth",
    responses((status = 413, body = ErrorEnvelope), (status = 415, body = ErrorEnvelope), (status = 202, body = CodeSent), (status = 400, body = ErrorEnvelope), (status = 429, body = ErrorEnvelope)))]
pub async fn resend(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<Resend>,
) -> Result<Response, AppError> {
    let (session, challenge) = attempt(&st, &body.challenge_id).await?;
    let phone = crate::views::phone_of(&st, &challenge.phone_enc)?;
    send_code(&st, &session, &phone, &ip.to_string()).await?.map_err(refusal_error)?;
    let body = CodeSent {
        challenge_id: body.challenge_id,
        retry_after: st.cfg.sms_limits.resend_gap_secs,
        phone_masked: phone.masked().into(),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Check a code: signs in, or asks for a name for a new phone.
#[utoipa::path(post, path = "/api/v1/auth/codes/verify", request_body = VerifyCode, tag = "auth",
    responses((status = 413, body = ErrorEnvelope), (status = 415, body = ErrorEnvelope), (status = 200, body = VerifyResult), (status = 400, body = ErrorEnvelope)))]
pub async fn verify(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<VerifyCode>,
) -> Result<Response, AppError> {
    let (session, challenge) = attempt(&st, &body.challenge_id).await?;
    let result = match verify_code(&st, &session, &challenge, &body.code, &ip.to_string()).await? {
        Verified::SignedIn(account_id) => {
            let (token, _) = repo::sign_in(&st.db, &session, &account_id, st.now()).await?;
            VerifyResult { registration_required: false, token: Some(token), registration_token: None }
        }
        Verified::NeedsRegistration => {
            VerifyResult { registration_required: true, token: None, registration_token: Some(body.challenge_id) }
        }
        Verified::BadFormat => return Err(AppError::bad_request("error-code-format")),
        Verified::Dead | Verified::Expired => return Err(AppError::bad_request("error-code-dead")),
        Verified::Wrong { .. } => return Err(AppError::bad_request("error-code-wrong")),
    };
    Ok(Json(result).into_response())
}

/// Register a name for a new phone whose code was verified, and sign in.
#[utoipa::path(post, path = "/api/v1/auth/register", request_body = Register, tag = "auth",
    responses((status = 413, body = ErrorEnvelope), (status = 415, body = ErrorEnvelope), (status = 201, body = SignedIn), (status = 400, body = ErrorEnvelope)))]
pub async fn register(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<Register>,
) -> Result<Response, AppError> {
    let expired = || AppError::bad_request("error-registration-expired");
    let session = session_of(&st, &body.registration_token).await?.ok_or_else(expired)?;
    let (Some(hash), Some(enc)) = (session.verified_phone_hash.clone(), session.verified_phone_enc.clone()) else {
        return Err(expired());
    };
    let (Ok(first), Ok(last)) = (PersonName::parse(&body.first_name), PersonName::parse(&body.last_name)) else {
        return Err(AppError::bad_request("error-name-invalid"));
    };
    let (_, token, _) =
        crate::login::register_account(&st, &session, &hash, &enc, &first, &last, &ip.to_string()).await?;
    Ok((StatusCode::CREATED, Json(SignedIn { token })).into_response())
}

/// Sign out (the session ends on the server).
#[utoipa::path(delete, path = "/api/v1/auth/session", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorEnvelope)))]
pub async fn sign_out(State(st): State<MaxState>, headers: HeaderMap) -> Result<Response, AppError> {
    let (session, _) = signed_in(&st, &headers).await?;
    oidc::logout::sign_out(&st, &session, oidc::logout::SignOutBy::App, None).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The signed-in account.
#[utoipa::path(get, path = "/api/v1/me", tag = "account", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorEnvelope)))]
pub async fn me(State(st): State<MaxState>, headers: HeaderMap) -> Result<Response, AppError> {
    let (_, account_id) = signed_in(&st, &headers).await?;
    let a = repo::account(&st.db, &account_id).await?.ok_or_else(unauthorized)?;
    Ok(Json(Me {
        phone_masked: crate::views::phone_of(&st, &a.phone_enc)?.masked().into(),
        first_name: a.first_name,
        last_name: a.last_name,
    })
    .into_response())
}

/// Validate an authorization request received by the app (same rules as `/oauth/authorize`).
#[utoipa::path(post, path = "/api/v1/authorizations", request_body = CreateAuthorization, tag = "authorizations", security(("bearer" = [])),
    responses((status = 413, body = ErrorEnvelope), (status = 415, body = ErrorEnvelope), (status = 201, body = AuthorizationCreated), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope)))]
pub async fn create_authorization(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateAuthorization>,
) -> Result<Response, AppError> {
    signed_in(&st, &headers).await?;
    let url =
        url::Url::parse(&body.authorization_url).map_err(|_| AppError::bad_request("error-oauth-invalid-request"))?;
    if !body.authorization_url.starts_with(&format!("{}/oauth/authorize", st.cfg.issuer)) {
        return Err(AppError::bad_request("error-oauth-invalid-request"));
    }
    let params: AuthorizeParams = edulink_web::forms::parse_strict(url.query().unwrap_or(""))?;
    let Validated { client, req, .. } = match oidc::validate(&st, &params, &ip.to_string()).await {
        Ok(v) => v,
        Err(RequestError::NoRedirect(e)) => return Err(e),
        Err(RequestError::Redirect { error, .. }) => {
            return Err(AppError::bad_request(if error == "invalid_scope" {
                "error-oauth-invalid-scope"
            } else {
                "error-oauth-invalid-request"
            }));
        }
    };
    let mut tx = st.db.begin().await?;
    oidc::store_request(&mut tx, &req, st.now()).await?;
    tx.commit().await?;
    let body = AuthorizationCreated { request_id: req.id.clone(), client_name: client.name, scope: req.scope.clone() };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Approve a validated request as the signed-in account; returns the URL to open.
#[utoipa::path(post, path = "/api/v1/authorizations/{request_id}/approve", tag = "authorizations", security(("bearer" = [])),
    params(("request_id" = String, Path, description = "From `AuthorizationCreated`", max_length = 64)),
    responses((status = 200, body = Approved), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
pub async fn approve(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    Path(request_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let (session, account_id) = signed_in(&st, &headers).await?;
    let auth_time = session.auth_at.ok_or_else(unauthorized)?;
    if request_id.len() > 64 {
        return Err(AppError::new(ErrorKind::NotFound, "error-oauth-request-unknown"));
    }
    let req = oidc::load_request(&st.db, &request_id, st.now())
        .await?
        .ok_or_else(|| AppError::new(ErrorKind::NotFound, "error-oauth-request-unknown"))?;
    if req.hint_account_id.as_ref().is_some_and(|h| *h != account_id) {
        return Err(AppError::conflict("error-oauth-account-mismatch"));
    }
    let ip = ip.to_string();
    let sid = oidc::sid_of(&session.id_hash);
    let consent = Some(oidc::Consent { ip: &ip, detail: Some("app") });
    let url = oidc::issue_code_audited(&st, &req, &account_id, auth_time, None, Some(&sid), consent).await?;
    Ok(Json(Approved { redirect_url: url }).into_response())
}
