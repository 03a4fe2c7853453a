//! MAX's part of a person's data export (152-FZ art. 14; issue 19 item 5), Сферум's included:
//! everything MAX holds about the account behind one pairwise subject, in the format of
//! docs/retention.md («Export format»). Secrets (hashes, ciphertexts, tokens) are never exported;
//! the phone is exported decrypted, as the person's own data.

use crate::MaxState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use edulink_store::{StoreError, sqlx};
use edulink_web::AppError;
use serde::Serialize;

/// `GET /sferum/api/v1/profiles/{sub}/export`: MAX's part of the export of the person a provisioning
/// client's sector knows as `sub` (the diary's «Мой паспорт» download); 404 when no grant is behind it.
pub async fn export_api(
    State(st): State<MaxState>,
    Path(sub): Path<String>,
    headers: HeaderMap,
    target: crate::oidc::dpop::Target,
) -> Result<Response, AppError> {
    let (client_id, _, _) = crate::sferum_web::provisioning_client(&st, &headers, &target).await?;
    match by_subject(&st, &client_id, &sub).await? {
        Some(part) => Ok(Json(part).into_response()),
        None => Err(AppError::not_found()),
    }
}

/// The account.
#[derive(Debug, Serialize)]
pub struct AccountPart {
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// The phone number (E.164).
    pub phone: Option<String>,
    /// Created, Unix seconds.
    pub created_at: i64,
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    first_name: String,
    last_name: String,
    phone_enc: String,
    created_at: i64,
}

/// The Сферум profile.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ProfilePart {
    /// Role.
    pub role: String,
    /// First name shown in Сферум.
    pub first_name: String,
    /// Last name shown in Сферум.
    pub last_name: String,
    /// School, as the diary provisioned it.
    pub school_name: Option<String>,
    /// The client that confirmed it.
    pub confirmed_by: Option<String>,
    /// Confirmed, Unix seconds.
    pub confirmed_at: Option<i64>,
    /// Safe mode on.
    pub safe_mode: i64,
}

/// A chat membership.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct MembershipPart {
    /// Chat title.
    pub chat: String,
    /// Role in it.
    pub role: String,
    /// Joined, Unix seconds.
    pub joined_at: i64,
}

/// A message the person wrote.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct MessagePart {
    /// Chat title.
    pub chat: String,
    /// Text.
    pub body: String,
    /// Sent, Unix seconds.
    pub created_at: i64,
}

/// A consent to a client.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct GrantPart {
    /// The client.
    pub client_id: String,
    /// Scopes consented to.
    pub scope: String,
    /// Consented, Unix seconds.
    pub created_at: i64,
}

/// A notification shown to the person.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct NotificationPart {
    /// Kind.
    pub kind: String,
    /// The client it is about.
    pub client: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// An audit record about the account.
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

/// Everything MAX holds about one account.
#[derive(Debug, Serialize)]
pub struct MaxPart {
    /// The account.
    pub account: AccountPart,
    /// Its Сферум profile.
    pub sferum_profile: Option<ProfilePart>,
    /// Chats it is in.
    pub memberships: Vec<MembershipPart>,
    /// Messages it wrote.
    pub messages: Vec<MessagePart>,
    /// Consents to clients.
    pub grants: Vec<GrantPart>,
    /// Notifications.
    pub notifications: Vec<NotificationPart>,
    /// Audit records.
    pub audit: Vec<AuditPart>,
    /// Sessions held now (counted only).
    pub sessions: i64,
}

/// MAX's part for the account that `client_id`'s sector knows as `subject` (a link made by the
/// diary's app has its grant under the app's client, same sector, same subject). `None`: no grant.
pub async fn by_subject(st: &MaxState, client_id: &str, subject: &str) -> Result<Option<MaxPart>, StoreError> {
    let account: Option<String> = sqlx::query_scalar(
        "SELECT g.account_id FROM grants g JOIN clients c ON c.client_id = g.client_id \
         WHERE c.sector = (SELECT sector FROM clients WHERE client_id = $1) AND g.subject = $2 LIMIT 1",
    )
    .bind(client_id)
    .bind(subject)
    .fetch_optional(st.db.pool())
    .await?;
    match account {
        Some(a) => max_part(st, &a).await,
        None => Ok(None),
    }
}

/// MAX's part for `account_id` (`None`: no such account).
pub async fn max_part(st: &MaxState, account_id: &str) -> Result<Option<MaxPart>, StoreError> {
    let db = st.db.pool();
    let row: Option<AccountRow> =
        sqlx::query_as("SELECT first_name, last_name, phone_enc, created_at FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_optional(db)
            .await?;
    let Some(row) = row else { return Ok(None) };
    let phone = st.secrets.phone_cipher.open("phone", &row.phone_enc).ok().and_then(|p| String::from_utf8(p).ok());
    let account =
        AccountPart { first_name: row.first_name, last_name: row.last_name, phone, created_at: row.created_at };
    let sferum_profile = sqlx::query_as(
        "SELECT role, first_name, last_name, school_name, confirmed_by, confirmed_at, safe_mode \
         FROM sferum_profiles WHERE account_id = $1",
    )
    .bind(account_id)
    .fetch_optional(db)
    .await?;
    let memberships = sqlx::query_as(
        "SELECT c.title AS chat, m.role, m.joined_at FROM sferum_members m JOIN sferum_chats c ON c.id = m.chat_id \
         WHERE m.account_id = $1 ORDER BY m.joined_at",
    )
    .bind(account_id)
    .fetch_all(db)
    .await?;
    let messages = sqlx::query_as(
        "SELECT c.title AS chat, m.body, m.created_at FROM sferum_messages m JOIN sferum_chats c ON c.id = m.chat_id \
         WHERE m.author_id = $1 ORDER BY m.id",
    )
    .bind(account_id)
    .fetch_all(db)
    .await?;
    let grants =
        sqlx::query_as("SELECT client_id, scope, created_at FROM grants WHERE account_id = $1 ORDER BY created_at")
            .bind(account_id)
            .fetch_all(db)
            .await?;
    let notifications = sqlx::query_as(
        "SELECT kind, client, created_at FROM notifications WHERE account_id = $1 ORDER BY created_at, id",
    )
    .bind(account_id)
    .fetch_all(db)
    .await?;
    let audit = sqlx::query_as("SELECT at, event, ip, client_id, detail FROM audit WHERE account = $1 ORDER BY at, id")
        .bind(account_id)
        .fetch_all(db)
        .await?;
    let sessions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE account_id = $1")
        .bind(account_id)
        .fetch_one(db)
        .await?;
    Ok(Some(MaxPart { account, sferum_profile, memberships, messages, grants, notifications, audit, sessions }))
}
