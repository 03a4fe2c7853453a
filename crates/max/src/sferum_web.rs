//! Сферум on the web: the page «Сферум в MAX», and the provisioning API that diaries call
//! (bearer token from `client_credentials` with scope `sferum.provision`).

use crate::links::{self, Outcome};
use crate::login::current;
use crate::oidc::{self, dpop::Target};
use crate::views::SferumPage;
use crate::{MaxState, repo};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use edulink_domain::links::{LinkPage, MAX_LINK_PAGE};
use edulink_domain::provisioning::{Attendance, AttendanceEntry, LessonPush, LessonPushResult, ProvisionProfile};
use edulink_web::{AppError, ClientIp, ErrorKind, Lang, StrictQuery, Tr, html, see_other};

/// `GET /sferum`: the educational profile, its class chats and distance lessons.
pub async fn page(State(st): State<MaxState>, headers: HeaderMap) -> Result<Response, AppError> {
    let Some(session) = current(&st, &headers).await? else {
        return Ok(see_other("/login"));
    };
    let Some(account_id) = session.account_id.clone() else {
        return Ok(see_other("/login"));
    };
    let account = repo::account(&st.db, &account_id).await?.ok_or_else(|| AppError::internal("account vanished"))?;
    let overview = edulink_sferum::overview(&st.db, &st.sferum_directory(), &account_id, st.now()).await?;
    let confirmed_by = match overview.profile.as_ref().and_then(|p| p.confirmed_by.clone()) {
        Some(id) => oidc::cached_client(&st, &id).await?.map(|c| c.name),
        None => None,
    };
    edulink_web::metrics::funnel("sferum_opened");
    Ok(html(&SferumPage {
        tr: Tr::new(Lang::from_headers(&headers)),
        now: st.now(),
        csrf: session.csrf,
        masked: crate::views::masked_phone(&st, &account.phone_enc),
        overview,
        confirmed_by,
    }))
}

/// A client calling the provisioning API with a valid `sferum.provision` token (not a user's token).
/// `Bearer`, or `DPoP` with a proof (RFC 9449 §7), as at UserInfo.
async fn service_client(st: &MaxState, headers: &HeaderMap, target: &Target) -> Result<String, AppError> {
    let token = match oidc::dpop::resource_token(st, headers, target.method.as_str(), &target.path).await {
        Ok(t) => t,
        Err(oidc::OAuthError::Server(e)) => return Err(e),
        Err(_) => None,
    };
    let token = token.ok_or_else(|| AppError::new(ErrorKind::Unauthorized, "error-unauthorized"))?;
    if token.grant_id.is_some() || !token.scope.iter().any(|s| s == "sferum.provision") {
        return Err(AppError::forbidden("error-forbidden"));
    }
    Ok(token.client_id)
}

/// `PUT /sferum/api/v1/lessons/{lesson}`: one distance lesson as the diary has it now (created,
/// moved, changed, cancelled). Applied once per revision; the class chat hears of it once.
pub async fn push_lesson(
    State(st): State<MaxState>,
    Path(lesson_id): Path<String>,
    headers: HeaderMap,
    target: Target,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    let client_id = service_client(&st, &headers, &target).await?;
    let push: LessonPush = serde_json::from_slice(&body).map_err(|_| AppError::bad_request("error-bad-request"))?;
    if push.validate().is_err() || push.lesson.id != lesson_id {
        return Err(AppError::bad_request("error-bad-request"));
    }
    let outcome = edulink_sferum::push_lesson(&st.db, &client_id, &push, st.now()).await?;
    if let Some(chat) = outcome.announced_in {
        st.hub.publish(crate::hub::Event::Posted(chat.into()));
    }
    metrics::counter!("edulink_lesson_pushes_total", "applied" => outcome.applied.to_string()).increment(1);
    Ok(Json(LessonPushResult { applied: outcome.applied }).into_response())
}

/// `GET /sferum/api/v1/lessons/{lesson}/attendance`: who pressed «Подключиться», and when, by the
/// calling diary's subjects.
pub async fn attendance(
    State(st): State<MaxState>,
    Path(lesson_id): Path<String>,
    headers: HeaderMap,
    target: Target,
) -> Result<Response, AppError> {
    let client_id = service_client(&st, &headers, &target).await?;
    let sector = oidc::cached_client(&st, &client_id).await?.map(|c| c.sector).ok_or_else(AppError::not_found)?;
    let key = edulink_sferum::key(&client_id, &lesson_id);
    let rows = edulink_sferum::attendance(&st.db, &st.sferum_directory(), &key, &sector).await?;
    Ok(Json(Attendance {
        attendance: rows.into_iter().map(|(sub, joined_at)| AttendanceEntry { sub, joined_at }).collect(),
    })
    .into_response())
}

/// The generation of the diary's link a provisioning call is about (`?generation=`): required.
#[derive(Debug, serde::Deserialize)]
pub struct LinkQuery {
    generation: Option<i64>,
}

/// A provisioning client (see [`service_client`]) with its display name and sector.
pub(crate) async fn provisioning_client(
    st: &MaxState,
    headers: &HeaderMap,
    target: &Target,
) -> Result<(String, String, String), AppError> {
    let client_id = service_client(st, headers, target).await?;
    let client = oidc::cached_client(st, &client_id).await?.ok_or_else(AppError::not_found)?;
    Ok((client_id, client.name, client.sector))
}

/// The answer to a message about a link that is no longer the subject's current one.
fn stale_link() -> Response {
    (StatusCode::CONFLICT, Json(serde_json::json!({"error": "stale_link"}))).into_response()
}

/// `PUT /sferum/api/v1/profiles/{sub}?generation=N`: attach verified school data for the diary's
/// link `N` (idempotent). 409 `stale_link` when link `N` was removed or a newer one is known; 404
/// when no grant is behind `sub` in the caller's sector (the diary clients and apps share it, so an
/// app-made link is provisioned by the diary's server all the same).
pub async fn provision(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    Path(sub): Path<String>,
    StrictQuery(q): StrictQuery<LinkQuery>,
    headers: HeaderMap,
    target: Target,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    let (client_id, name, sector) = provisioning_client(&st, &headers, &target).await?;
    let generation = q.generation.ok_or_else(|| AppError::bad_request("error-bad-request"))?;
    let p: ProvisionProfile = serde_json::from_slice(&body).map_err(|_| AppError::bad_request("error-bad-request"))?;
    p.validate().map_err(|_| AppError::bad_request("error-bad-request"))?;
    let ip = ip.to_string();
    let caller = links::Caller { client_id: &client_id, name: &name, sector: &sector, ip: &ip };
    match links::provision(&st, caller, &sub, generation, &p).await? {
        Outcome::Applied(result) => Ok(Json(result).into_response()),
        Outcome::Stale => Ok(stale_link()),
        Outcome::NoGrant => Err(AppError::not_found()),
    }
}

/// `DELETE /sferum/api/v1/profiles/{sub}?generation=N`: the diary removed its link `N`: detach
/// (leave the chats, drop the school data), revoke every token of the grant and end it, in one
/// transaction. 204 also for an unknown subject; 409 `stale_link` when a newer link is known.
pub async fn detach(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    Path(sub): Path<String>,
    StrictQuery(q): StrictQuery<LinkQuery>,
    headers: HeaderMap,
    target: Target,
) -> Result<Response, AppError> {
    let (client_id, name, sector) = provisioning_client(&st, &headers, &target).await?;
    let generation = q.generation.ok_or_else(|| AppError::bad_request("error-bad-request"))?;
    let ip = ip.to_string();
    let caller = links::Caller { client_id: &client_id, name: &name, sector: &sector, ip: &ip };
    match links::detach(&st, caller, &sub, generation).await? {
        Outcome::Stale => Ok(stale_link()),
        Outcome::Applied(_) | Outcome::NoGrant => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// The page of `GET /sferum/api/v1/links`.
#[derive(Debug, serde::Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    after: String,
    limit: Option<i64>,
    sub: Option<String>,
}

/// `GET /sferum/api/v1/links?after=SUB&limit=N`: the grants of the caller's sector by subject, with
/// the live link generation MAX holds for each and whether its profile is confirmed — what the
/// diary's reconciliation compares with its links. Paged by subject (`next` is the next `after`);
/// `sub=SUB` reads one subject.
pub async fn list_links(
    State(st): State<MaxState>,
    StrictQuery(q): StrictQuery<PageQuery>,
    headers: HeaderMap,
    target: Target,
) -> Result<Response, AppError> {
    let (_, _, sector) = provisioning_client(&st, &headers, &target).await?;
    let limit = q.limit.unwrap_or(MAX_LINK_PAGE).clamp(1, MAX_LINK_PAGE);
    let links = repo::links::page(&st.db, &sector, &q.after, q.sub.as_deref(), limit).await?;
    let next = (links.len() as i64 == limit).then(|| links.last().map(|l| l.sub.clone())).flatten();
    Ok(Json(LinkPage { links, next }).into_response())
}
