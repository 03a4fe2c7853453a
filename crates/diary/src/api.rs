//! The JSON API of the diary's mobile apps («Дневник МЭШ», «Моя школа Дневник») under `/api/v1`:
//! sign in, the account, the Сферум link (status, start, complete, unlink) and "open Сферум".
//! Same rules and limits as the web; errors are the JSON envelope.
//!
//! A link from an app: the app makes its own PKCE verifier and sends only the challenge
//! (RFC 8252); the diary builds the authorization request for the app's public client with its
//! app-link redirect and keeps the state and nonce; MAX returns to the app, which hands `code`,
//! `state` and its verifier to the diary; the diary redeems the code, validates the ID token fully,
//! and stores the link exactly as the web callback does.

use crate::DiaryState;
use crate::audit::{Event, Record};
use crate::repo::{self, User};
use crate::rp::{ClientRef, RpError};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get, routing::post};
use edulink_domain::crypto::{random_token, sha256_b64};
use edulink_store::{StoreError, sqlx};
use edulink_web::api::{ApiJson, BearerScheme, ErrorBody, ErrorEnvelope, bearer, unauthorized};
use edulink_web::{AppError, ClientIp, ErrorKind};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

/// The API's routes.
pub fn routes() -> Router<DiaryState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/v1/sessions", post(sign_in))
        .route("/api/v1/sessions/current", axum::routing::delete(sign_out))
        .route("/api/v1/me", get(me))
        .route("/api/v1/sferum/link", get(link_status).post(start_link).delete(unlink))
        .route("/api/v1/sferum/link/complete", post(complete_link))
        .route("/api/v1/sferum/open", post(open_sferum))
}

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(title = "МЭШ diary app API", version = "1", description = "The diary's mobile apps: sign in, link the account to a Сферум profile in MAX, unlink, open Сферум. Every error is `{\"error\": {\"code\", \"message\", \"retry_after\"?}}`; codes: bad_request, json_required, too_large, unauthorized, login, login_throttled, forbidden, reauth_required, not_found, not_linked, unknown_app, link_already, link_taken, link_starts, callback_state, callback_failed, max_unavailable, unavailable, internal."),
    paths(sign_in, sign_out, me, link_status, start_link, complete_link, unlink, open_sferum),
    components(schemas(SignIn, Token, Me, LinkStatus, StartLink, LinkStarted, CompleteLink, OpenSferum, ErrorEnvelope, ErrorBody)),
    modifiers(&BearerScheme)
)]
pub struct ApiDoc;

/// `GET /api/v1/openapi.json`.
pub async fn openapi_json() -> Response {
    edulink_web::api::openapi_response(&ApiDoc::openapi())
}

/// Credentials.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// Diary login.
    #[schema(min_length = 1, max_length = 64)]
    login: String,
    /// Password.
    #[schema(min_length = 1, max_length = 256)]
    password: String,
}

/// A bearer token.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Send as `Authorization: Bearer …`.
    #[schema(min_length = 43, max_length = 43)]
    token: String,
    /// Seconds of validity.
    expires_in: i64,
}

/// The signed-in person.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Me {
    /// Login.
    login: String,
    /// `student` or `teacher`.
    role: String,
    /// First name.
    first_name: String,
    /// Last name.
    last_name: String,
    /// School.
    school: String,
    /// Classes.
    classes: Vec<String>,
}

/// The Сферум link.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkStatus {
    /// Whether a Сферум profile is linked.
    linked: bool,
    /// The linked account's id (the subject MAX gave this diary).
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<String>,
    /// When it was linked, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    linked_at: Option<i64>,
}

/// Start a link from an app.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartLink {
    /// Which app: `dnevnik_mesh` («Дневник МЭШ») or `moyashkola` («Моя школа Дневник»).
    #[schema(pattern = "^(dnevnik_mesh|moyashkola)$")]
    app: String,
    /// The app's PKCE S256 challenge (RFC 7636); the verifier stays in the app.
    #[schema(min_length = 43, max_length = 128, pattern = "^[A-Za-z0-9._~-]{43,128}$")]
    code_challenge: String,
    /// The RFC 7638 thumbprint of the app's DPoP key (RFC 9449 §10): MAX binds the code to it.
    /// Required by MAX for the diary's apps.
    #[schema(min_length = 43, max_length = 43, pattern = "^[A-Za-z0-9_-]{43}$")]
    #[serde(default)]
    dpop_jkt: Option<String>,
}

/// Where the app sends the person.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkStarted {
    /// Open in the system browser or the MAX app.
    authorization_url: String,
    /// The app-link redirect MAX will return to.
    redirect_uri: String,
    /// MAX's token endpoint: the `htu` of the app's DPoP proof for the code exchange.
    token_endpoint: String,
    /// A DPoP nonce from MAX (RFC 9449 §8), for that proof; valid for 10 minutes.
    #[serde(skip_serializing_if = "Option::is_none")]
    dpop_nonce: Option<String>,
}

/// What came back to the app link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteLink {
    /// `state` from the redirect.
    #[schema(min_length = 1, max_length = 512)]
    state: String,
    /// `code` from the redirect.
    #[schema(min_length = 1, max_length = 512)]
    code: String,
    /// `iss` from the redirect (RFC 9207).
    #[schema(min_length = 1, max_length = 512)]
    iss: String,
    /// The app's PKCE verifier.
    #[schema(min_length = 43, max_length = 128, pattern = "^[A-Za-z0-9._~-]{43,128}$")]
    code_verifier: String,
    /// The app's DPoP proof for `POST` to `token_endpoint` (RFC 9449 §4), sent on to MAX with the
    /// code: a code bound to the app's key is redeemed only with it.
    #[schema(max_length = 4096)]
    #[serde(default)]
    dpop_proof: Option<String>,
}

/// A URL that signs the person in to Сферум.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenSferum {
    /// Open in the browser within 60 seconds; single use.
    url: String,
}

/// The signed-in app user: the token's user and when the password was entered.
async fn api_user(st: &DiaryState, headers: &HeaderMap) -> Result<(User, String, i64), AppError> {
    let token = bearer(headers).ok_or_else(unauthorized)?;
    let hash = sha256_b64(token);
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT user_id, created_at FROM api_tokens WHERE token_hash = $1 AND expires_at > $2")
            .bind(&hash)
            .bind(st.now())
            .fetch_optional(st.db.pool())
            .await
            .map_err(StoreError::from)?;
    let (user_id, created_at) = row.ok_or_else(unauthorized)?;
    let user = repo::user(&st.db, &user_id).await?.ok_or_else(unauthorized)?;
    Ok((user, hash, created_at))
}

/// Sign in.
#[utoipa::path(post, path = "/api/v1/sessions", request_body = SignIn, tag = "session",
    responses((status = 413, body = ErrorEnvelope), (status = 415, body = ErrorEnvelope), (status = 201, body = Token), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope), (status = 429, body = ErrorEnvelope)))]
pub async fn sign_in(
    State(st): State<DiaryState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<Response, AppError> {
    let user = match crate::signin::check(&st, &body.login, body.password, &ip.to_string()).await? {
        crate::signin::Outcome::Ok(user) => user,
        crate::signin::Outcome::Wrong => return Err(AppError::new(ErrorKind::Unauthorized, "error-login")),
        crate::signin::Outcome::Throttled(wait) => return Err(AppError::too_many("error-login-throttled", wait)),
    };
    let token = random_token(32);
    let now = st.now();
    st.db
        .execute(
            sqlx::query("INSERT INTO api_tokens (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                .bind(sha256_b64(&token))
                .bind(&user.id)
                .bind(now)
                .bind(now + st.cfg.api_token_ttl),
        )
        .await?;
    crate::audit::TRAIL
        .record(&st.db, now, &Record::new(Event::Login).principal(&user.id).ip(&ip.to_string()).detail("app"))
        .await;
    Ok((StatusCode::CREATED, Json(Token { token, expires_in: st.cfg.api_token_ttl })).into_response())
}

/// Sign out (the token dies on the server).
#[utoipa::path(delete, path = "/api/v1/sessions/current", tag = "session", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorEnvelope)))]
pub async fn sign_out(State(st): State<DiaryState>, headers: HeaderMap) -> Result<Response, AppError> {
    let (_, hash, _) = api_user(&st, &headers).await?;
    // The session's handoff tickets die with it (one transaction).
    let mut tx = st.db.begin().await?;
    for sql in ["DELETE FROM handoff_tickets WHERE token_hash = $1", "DELETE FROM api_tokens WHERE token_hash = $1"] {
        sqlx::query(sql).bind(&hash).execute(&mut tx).await.map_err(StoreError::from)?;
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The signed-in person.
#[utoipa::path(get, path = "/api/v1/me", tag = "session", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorEnvelope)))]
pub async fn me(State(st): State<DiaryState>, headers: HeaderMap) -> Result<Response, AppError> {
    let (user, _, _) = api_user(&st, &headers).await?;
    let school = repo::school_name(&st.db, &user.school_id).await?;
    let classes = repo::classes_of(&st.db, &user).await?.into_iter().map(|(_, n)| n).collect();
    Ok(Json(Me {
        login: user.login,
        role: user.role.as_str().into(),
        first_name: user.first_name,
        last_name: user.last_name,
        school,
        classes,
    })
    .into_response())
}

/// The Сферум link (404 `not_linked` when there is none).
#[utoipa::path(get, path = "/api/v1/sferum/link", tag = "sferum", security(("bearer" = [])),
    responses((status = 200, body = LinkStatus, links(("Unlink" = (operation_id = "unlink", description = "Remove this link")))),
        (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn link_status(State(st): State<DiaryState>, headers: HeaderMap) -> Result<Response, AppError> {
    let (user, _, _) = api_user(&st, &headers).await?;
    let link =
        repo::link(&st.db, &user.id).await?.ok_or_else(|| AppError::new(ErrorKind::NotFound, "error-not-linked"))?;
    Ok(Json(LinkStatus { linked: true, account_id: Some(link.subject), linked_at: Some(link.linked_at) })
        .into_response())
}

fn max_unavailable(e: RpError) -> AppError {
    tracing::error!(error = %e, "MAX unavailable");
    AppError::new(ErrorKind::Unavailable, "error-max-unavailable")
}

/// Start linking: the authorization URL for the app's client, with the app's PKCE challenge.
#[utoipa::path(post, path = "/api/v1/sferum/link", request_body = StartLink, tag = "sferum", security(("bearer" = [])),
    responses((status = 413, body = ErrorEnvelope), (status = 415, body = ErrorEnvelope), (status = 201, body = LinkStarted), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope), (status = 429, body = ErrorEnvelope)))]
pub async fn start_link(
    State(st): State<DiaryState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<StartLink>,
) -> Result<Response, AppError> {
    let (user, hash, _) = api_user(&st, &headers).await?;
    let app =
        st.cfg.apps.iter().find(|a| a.key == body.app).ok_or_else(|| AppError::bad_request("error-unknown-app"))?;
    if !edulink_domain::oauth::is_pkce_value(&body.code_challenge) {
        return Err(AppError::bad_request("error-bad-request"));
    }
    if repo::link(&st.db, &user.id).await?.is_some() {
        return Err(AppError::conflict("error-link-already"));
    }
    let c = ClientRef { id: &app.client_id, secret: None, redirect_uri: &app.redirect_uri };
    let started = st.rp.start(c, true, None, false, Some(&body.code_challenge)).await.map_err(max_unavailable)?;
    if body.dpop_jkt.as_deref().is_some_and(|j| !edulink_domain::dpop::is_thumbprint(j)) {
        return Err(AppError::bad_request("error-bad-request"));
    }
    // The apps' requests go by PAR (RFC 9126; MAX requires it of them).
    let pushed = st.rp.push(&started.url, &app.client_id, body.dpop_jkt.as_deref()).await.map_err(|e| match e {
        // MAX refused the request itself (an app without its DPoP key): the app's mistake, not an
        // outage — 400, never «MAX is unavailable» (found by schemathesis, scripts/api-fuzz).
        RpError::Refused(why) => {
            tracing::info!(%why, "MAX refused the app's pushed request");
            AppError::bad_request("error-bad-request")
        }
        e => max_unavailable(e),
    })?;
    let t = repo::Transaction {
        user_id: user.id,
        purpose: repo::Purpose::App(app.key.clone()),
        nonce: started.nonce,
        verifier_enc: String::new(),
    };
    let family = format!("api:{hash}");
    let admitted =
        repo::create_link_transaction(&st.db, st.cfg.link_starts_per_hour, &started.state, &family, &t, st.now())
            .await?;
    if let Err(wait) = admitted {
        metrics::counter!("edulink_link_starts_refused_total").increment(1);
        edulink_web::metrics::funnel_failure("start_refused");
        return Err(AppError::too_many("error-link-starts", wait));
    }
    edulink_web::metrics::funnel("authorization_started");
    let body = LinkStarted {
        authorization_url: pushed.url,
        redirect_uri: app.redirect_uri.clone(),
        token_endpoint: pushed.token_endpoint,
        dpop_nonce: pushed.dpop_nonce,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Complete linking with what came back to the app link.
#[utoipa::path(post, path = "/api/v1/sferum/link/complete", request_body = CompleteLink, tag = "sferum", security(("bearer" = [])),
    responses((status = 413, body = ErrorEnvelope), (status = 415, body = ErrorEnvelope), (status = 200, body = LinkStatus), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
pub async fn complete_link(
    State(st): State<DiaryState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CompleteLink>,
) -> Result<Response, AppError> {
    let (user, hash, _) = api_user(&st, &headers).await?;
    let t = repo::take_transaction(&st.db, &body.state, &format!("api:{hash}"), st.now())
        .await?
        .filter(|t| t.user_id == user.id)
        .ok_or_else(|| AppError::bad_request("error-callback-state"))?;
    if body.iss != st.rp.issuer() {
        return Err(AppError::bad_request("error-callback-iss"));
    }
    let app = match &t.purpose {
        repo::Purpose::App(key) => st.cfg.apps.iter().find(|a| a.key == *key),
        _ => None,
    }
    .ok_or_else(|| AppError::bad_request("error-callback-state"))?;
    let c = ClientRef { id: &app.client_id, secret: None, redirect_uri: &app.redirect_uri };
    let proof = body.dpop_proof.as_deref();
    let verified = match st.rp.finish_with_proof(c, &body.code, &body.code_verifier, &t.nonce, proof).await {
        Ok(v) => v,
        Err(RpError::Unavailable(e)) => return Err(max_unavailable(RpError::Unavailable(e))),
        Err(e) => {
            tracing::warn!(error = %e, "app authorization response refused");
            return Err(AppError::bad_request("error-callback-failed"));
        }
    };
    match crate::links::store(&st, &user, &verified, &ip.to_string(), None).await? {
        (crate::links::Stored::Linked, _) => {}
        (conflict, _) => return Err(AppError::conflict(conflict.key())),
    }
    let link = repo::link(&st.db, &user.id).await?;
    Ok(Json(LinkStatus { linked: true, account_id: Some(verified.subject), linked_at: link.map(|l| l.linked_at) })
        .into_response())
}

/// Unlink (needs a sign-in no older than 15 minutes, like the web dialog).
#[utoipa::path(delete, path = "/api/v1/sferum/link", tag = "sferum", security(("bearer" = [])),
    responses((status = 204, links(("LinkAfterUnlink" = (operation_id = "link_status", description = "The link is gone: 404")))),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn unlink(
    State(st): State<DiaryState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let (user, _, signed_in_at) = api_user(&st, &headers).await?;
    if st.now() - signed_in_at > st.cfg.reauth_secs {
        return Err(AppError::forbidden("error-reauth-required"));
    }
    let ip = ip.to_string();
    if crate::links::remove(&st, &user, crate::links::Actor::Owner { ip: &ip }).await?
        == crate::links::Removed::NotLinked
    {
        return Err(AppError::new(ErrorKind::NotFound, "error-not-linked"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A single-use URL (60 s) that opens the browser signed in to the diary and goes on to Сферум.
#[utoipa::path(post, path = "/api/v1/sferum/open", tag = "sferum", security(("bearer" = [])),
    responses((status = 200, body = OpenSferum), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn open_sferum(State(st): State<DiaryState>, headers: HeaderMap) -> Result<Response, AppError> {
    let (user, token_hash, _) = api_user(&st, &headers).await?;
    if repo::link(&st.db, &user.id).await?.is_none() {
        return Err(AppError::new(ErrorKind::NotFound, "error-not-linked"));
    }
    let ticket = random_token(32);
    st.db
        .execute(
            sqlx::query(
                "INSERT INTO handoff_tickets (ticket_hash, user_id, expires_at, token_hash) VALUES ($1, $2, $3, $4)",
            )
            .bind(sha256_b64(&ticket))
            .bind(&user.id)
            .bind(st.now() + 60)
            .bind(&token_hash),
        )
        .await?;
    Ok(Json(OpenSferum { url: format!("{}/sferum/handoff?ticket={ticket}", st.cfg.base_url) }).into_response())
}
