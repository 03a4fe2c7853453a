//! The diary's part of a person's data export (152-FZ art. 14; issue 19 item 5): everything the
//! diary holds about one user, in the format of docs/retention.md («Export format»). Secrets are
//! never exported: hashes, ciphertexts and tokens are left out or only counted.

use crate::DiaryState;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use edulink_store::{StoreError, sqlx};
use edulink_web::AppError;
use serde::Serialize;

/// The export's format name and version.
pub const FORMAT: &str = "edulink-export/1";

/// One export: the diary's part and MAX's (`None` when not linked, or MAX knows no such link).
#[derive(Debug, Serialize)]
pub struct Export<M: Serialize> {
    /// [`FORMAT`].
    pub format: &'static str,
    /// Made, Unix seconds.
    pub generated_at: i64,
    /// The diary's part.
    pub diary: DiaryPart,
    /// MAX's part.
    pub max: Option<M>,
}

/// `GET /passport/export` («Мой паспорт» → «Скачать мои данные»): the signed-in user's export as
/// a JSON download. MAX's part comes from MAX's provisioning API (`GET
/// /sferum/api/v1/profiles/{sub}/export`, the diary's service token), so the diary never reads
/// MAX's tables.
pub async fn download(State(st): State<DiaryState>, headers: HeaderMap) -> Result<Response, AppError> {
    let Some((_, user)) = crate::pages::current(&st, &headers).await? else {
        return Ok(edulink_web::see_other("/login"));
    };
    let Some(diary) = diary_part(&st, &user.id).await? else { return Err(AppError::not_found()) };
    let max = match &diary.link {
        Some(l) => st.rp.export(&l.subject).await.map_err(crate::pages::max_unavailable)?,
        None => None,
    };
    let export = Export { format: FORMAT, generated_at: st.now(), diary, max };
    let body = serde_json::to_vec_pretty(&export).map_err(|e| AppError::internal(e.to_string()))?;
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"edulink-export.json\""));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// The user's account.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct UserPart {
    /// Login.
    pub login: String,
    /// `student`, `teacher`, …
    pub role: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// School name.
    pub school: String,
    /// Class name.
    pub class: Option<String>,
    /// Created, Unix seconds.
    pub created_at: i64,
}

/// The link to MAX, without its tokens.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct LinkPart {
    /// MAX's issuer.
    pub issuer: String,
    /// The pairwise subject MAX gave the diary.
    pub subject: String,
    /// Linked, Unix seconds.
    pub linked_at: i64,
    /// The link's generation.
    pub generation: i64,
}

/// One audit record about the user.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct AuditPart {
    /// Unix seconds.
    pub at: i64,
    /// Event name.
    pub event: String,
    /// Client address.
    pub ip: Option<String>,
    /// OIDC client.
    pub client_id: Option<String>,
    /// Detail.
    pub detail: Option<String>,
}

/// A distance lesson the user joined.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct AttendancePart {
    /// Subject of the lesson.
    pub subject: String,
    /// Lesson start, Unix seconds.
    pub starts_at: i64,
    /// Joined, Unix seconds.
    pub joined_at: i64,
}

/// Everything the diary holds about one user.
#[derive(Debug, Serialize)]
pub struct DiaryPart {
    /// The account.
    pub user: UserPart,
    /// The live link, if any.
    pub link: Option<LinkPart>,
    /// Distance lessons joined.
    pub attendance: Vec<AttendancePart>,
    /// Audit records naming the user.
    pub audit: Vec<AuditPart>,
    /// Browser sessions held now (their ids are secrets: counted only).
    pub sessions: i64,
    /// App sign-ins held now (counted only).
    pub app_tokens: i64,
}

/// The diary's part for `user_id` (`None`: no such user).
pub async fn diary_part(st: &DiaryState, user_id: &str) -> Result<Option<DiaryPart>, StoreError> {
    let db = st.db.pool();
    let user: Option<UserPart> = sqlx::query_as(
        "SELECT u.login, u.role, u.first_name, u.last_name, s.name AS school, c.name AS class, u.created_at \
         FROM users u JOIN schools s ON s.id = u.school_id LEFT JOIN classes c ON c.id = u.class_id WHERE u.id = $1",
    )
    .bind(user_id)
    .fetch_optional(db)
    .await?;
    let Some(user) = user else { return Ok(None) };
    let link = sqlx::query_as("SELECT issuer, subject, linked_at, generation FROM links WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(db)
        .await?;
    let attendance = sqlx::query_as(
        "SELECT l.subject, l.starts_at, a.joined_at FROM attendance a JOIN lessons l ON l.id = a.lesson_id \
         WHERE a.user_id = $1 ORDER BY a.joined_at",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?;
    let audit = sqlx::query_as("SELECT at, event, ip, client_id, detail FROM audit WHERE user_id = $1 ORDER BY at, id")
        .bind(user_id)
        .fetch_all(db)
        .await?;
    let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql).bind(user_id).fetch_one(db);
    let sessions = count("SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND replaced_at IS NULL").await?;
    let app_tokens = count("SELECT COUNT(*) FROM api_tokens WHERE user_id = $1").await?;
    Ok(Some(DiaryPart { user, link, attendance, audit, sessions, app_tokens }))
}
