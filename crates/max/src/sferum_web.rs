//! Сферум on the web: the page «Сферум в MAX», and the provisioning API that diaries call
//! (bearer token from `client_credentials` with scope `sferum.provision`).

use crate::audit::{Event, Record};
use crate::login::current;
use crate::oidc::{self, bearer};
use crate::views::SferumPage;
use crate::{MaxState, audit, repo};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use edulink_domain::provisioning::{Attendance, AttendanceEntry, LessonPush, LessonPushResult, ProvisionProfile};
use edulink_store::{StoreError, sqlx};
use edulink_web::{AppError, ClientIp, ErrorKind, Lang, Tr, html, see_other};

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
async fn service_client(st: &MaxState, headers: &HeaderMap) -> Result<String, AppError> {
    let token =
        bearer(st, headers).await?.ok_or_else(|| AppError::new(ErrorKind::Unauthorized, "error-unauthorized"))?;
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
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    let client_id = service_client(&st, &headers).await?;
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
) -> Result<Response, AppError> {
    let client_id = service_client(&st, &headers).await?;
    let sector = oidc::cached_client(&st, &client_id).await?.map(|c| c.sector).ok_or_else(AppError::not_found)?;
    let key = edulink_sferum::key(&client_id, &lesson_id);
    let rows = edulink_sferum::attendance(&st.db, &st.sferum_directory(), &key, &sector).await?;
    Ok(Json(Attendance {
        attendance: rows.into_iter().map(|(sub, joined_at)| AttendanceEntry { sub, joined_at }).collect(),
    })
    .into_response())
}

/// Grants (id, account) behind pairwise subject `$1` in the sector of client `$2` (indexed by subject).
pub(crate) const GRANTS_OF_SUBJECT_IN_CALLERS_SECTOR: &str = "SELECT g.id, g.account_id FROM grants g \
     JOIN clients c ON c.client_id = g.client_id \
     WHERE g.subject = $1 AND c.sector = (SELECT sector FROM clients WHERE client_id = $2)";

/// The provisioning caller: a client holding a valid `sferum.provision` token, and the account
/// that client's sector knows as `sub` with the grants behind it (the diary's web client and its
/// apps share one sector, so an app-made link is provisioned by the diary's server all the same).
async fn caller(
    st: &MaxState,
    headers: &HeaderMap,
    sub: &str,
) -> Result<(String, Option<(Vec<String>, String)>), AppError> {
    let client_id = service_client(st, headers).await?;
    let grants: Vec<(String, String)> = sqlx::query_as(GRANTS_OF_SUBJECT_IN_CALLERS_SECTOR)
        .bind(sub)
        .bind(&client_id)
        .fetch_all(st.db.pool())
        .await
        .map_err(StoreError::from)?;
    let found = grants
        .first()
        .map(|(_, account)| account.clone())
        .map(|account| (grants.into_iter().map(|(g, _)| g).collect(), account));
    Ok((client_id, found))
}

/// `PUT /sferum/api/v1/profiles/{sub}`: attach verified school data (idempotent).
pub async fn provision(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    Path(sub): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    let (client_id, grant) = caller(&st, &headers, &sub).await?;
    let Some((_, account_id)) = grant else {
        return Err(AppError::not_found());
    };
    let p: ProvisionProfile = serde_json::from_slice(&body).map_err(|_| AppError::bad_request("error-bad-request"))?;
    p.validate().map_err(|_| AppError::bad_request("error-bad-request"))?;
    let now = st.now();
    let name = oidc::cached_client(&st, &client_id).await?.map(|c| c.name).unwrap_or_default();
    // One transaction: the profile, its chats and lessons, and (on the first attach) the notification
    // and the audit record commit together.
    let mut tx = st.db.begin().await?;
    let was_confirmed = edulink_sferum::confirmed_by_in(&mut tx, &account_id).await?;
    let result = edulink_sferum::provision_in(&mut tx, &client_id, &account_id, &p, now).await?;
    if was_confirmed.as_deref() != Some(client_id.as_str()) {
        repo::notify_in(&mut tx, &account_id, "link", &name, now).await?;
        audit::TRAIL
            .record_in(
                &mut tx,
                now,
                &Record::new(Event::SferumAttached)
                    .principal(&account_id)
                    .subject(&sub)
                    .client(&client_id)
                    .ip(&ip.to_string()),
            )
            .await?;
    }
    tx.commit().await?;
    Ok(Json(result).into_response())
}

/// `DELETE /sferum/api/v1/profiles/{sub}`: detach (leave the chats, drop the school data), revoke
/// every token of the grant and end the grant. Idempotent: an unknown subject answers 204 too.
pub async fn detach(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    Path(sub): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let (client_id, grant) = caller(&st, &headers, &sub).await?;
    let Some((grant_ids, account_id)) = grant else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let now = st.now();
    edulink_sferum::detach(&st.db, &st.sferum_directory(), &client_id, &account_id, now).await?;
    let mut revoked = 0;
    for grant_id in &grant_ids {
        revoked += oidc::revoke_grant_tokens(&st.db, grant_id, now).await?;
        st.db.execute(sqlx::query("DELETE FROM grants WHERE id = $1").bind(grant_id)).await?;
    }
    // Open live streams of this account end now (other instances notice within a poll).
    st.hub.publish(crate::hub::Event::Left(account_id.as_str().into()));
    let name = oidc::cached_client(&st, &client_id).await?.map(|c| c.name).unwrap_or_default();
    repo::notify(&st.db, &account_id, "unlink", &name, now).await?;
    audit::TRAIL
        .record(
            &st.db,
            now,
            &Record::new(Event::SferumDetached)
                .principal(&account_id)
                .subject(&sub)
                .client(&client_id)
                .ip(&ip.to_string())
                .detail(&format!("revoked={revoked}")),
        )
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
