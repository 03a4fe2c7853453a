//! MAX's page templates and static assets.

use crate::MaxState;
use crate::repo::{Account, Notification};
use askama::Template;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use edulink_domain::Phone;
use edulink_sferum::Overview;
use edulink_sms::SentSms;
use edulink_web::{AppError, Tr};

/// The masked form of an encrypted phone (with no-break spaces, so it never wraps), or a neutral
/// placeholder if it cannot be read.
pub fn masked_phone(st: &MaxState, enc: &str) -> String {
    phone_of(st, enc).map(|p| p.masked().replace(' ', "\u{a0}")).unwrap_or_else(|_| "+7\u{a0}***".into())
}

/// Decrypts a stored phone.
pub fn phone_of(st: &MaxState, enc: &str) -> Result<Phone, AppError> {
    let raw = st.secrets.phone_cipher.open("phone", enc).map_err(|_| AppError::internal("phone decrypt"))?;
    let s = String::from_utf8(raw).map_err(|_| AppError::internal("phone utf8"))?;
    Phone::from_e164(&s).map_err(|_| AppError::internal("phone parse"))
}

/// A date-time for people, in Moscow time (the diary's schools are there).
pub fn when(ts: impl std::borrow::Borrow<i64>) -> String {
    let ts = *ts.borrow();
    let t = time::OffsetDateTime::from_unix_timestamp(ts).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        + time::Duration::hours(3);
    format!("{:02}.{:02}.{} {:02}:{:02}", t.day(), u8::from(t.month()), t.year(), t.hour(), t.minute())
}

/// Hours and minutes.
pub fn hm(ts: impl std::borrow::Borrow<i64>) -> String {
    let ts = *ts.borrow();
    let t = time::OffsetDateTime::from_unix_timestamp(ts).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        + time::Duration::hours(3);
    format!("{:02}:{:02}", t.hour(), t.minute())
}

/// True for the teacher role.
pub fn is_teacher(role: &Option<edulink_domain::provisioning::Role>) -> bool {
    *role == Some(edulink_domain::provisioning::Role::Teacher)
}

/// «Подключиться» is open for the lesson now.
pub fn join_open(l: &edulink_sferum::Lesson, now: &i64) -> bool {
    edulink_domain::sferum::JoinWindow::at(l.starts_at, l.ends_at, *now).is_open()
}

/// When «Подключиться» opens for the lesson.
pub fn opens_at(l: &edulink_sferum::Lesson) -> String {
    hm(l.starts_at - edulink_domain::sferum::JOIN_EARLY_SECS)
}

/// A notification as shown.
pub struct NotificationView {
    /// `link` or `unlink`.
    pub kind: String,
    /// Client name.
    pub client: String,
    /// Formatted time.
    pub at: String,
}

impl NotificationView {
    /// From a stored notification.
    pub fn new(n: Notification) -> Self {
        Self { kind: n.kind, client: n.client, at: when(n.created_at) }
    }
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage {
    pub tr: Tr,
    pub csrf: String,
    pub account: Option<Account>,
    pub masked: String,
    pub notifications: Vec<NotificationView>,
}

#[derive(Template)]
#[template(path = "phone.html")]
pub struct PhonePage {
    pub tr: Tr,
    pub csrf: String,
    pub phone: String,
    pub error: Option<String>,
    pub retry_after: Option<i64>,
    /// The masked phone of a code this browser can still enter (after Back or a closed tab).
    pub pending: Option<String>,
}

#[derive(Template)]
#[template(path = "code.html")]
pub struct CodePage {
    pub tr: Tr,
    pub csrf: String,
    pub masked: String,
    pub error: Option<String>,
    pub retry_after: i64,
    /// How long a code lasts, in minutes.
    pub minutes: i64,
}

#[derive(Template)]
#[template(path = "register.html")]
pub struct RegisterPage {
    pub tr: Tr,
    pub csrf: String,
    pub masked: String,
    pub first_name: String,
    pub last_name: String,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    pub tr: Tr,
    pub csrf: String,
    pub masked: String,
    pub name: String,
    pub client_name: String,
    pub has_profile: bool,
    /// The client asks for the phone number (`phone` scope): the page says so before consent.
    pub phone: bool,
}

#[derive(Template)]
#[template(path = "mismatch.html")]
pub struct MismatchPage {
    pub tr: Tr,
    pub csrf: String,
    pub masked: String,
    pub client_name: String,
}

/// «Выйти из MAX?»: a logout asked for without proof that it comes from this session's client
/// (OpenID Connect RP-Initiated Logout 1.0 §2, §6).
#[derive(Template)]
#[template(path = "logout_confirm.html")]
pub struct LogoutConfirmPage {
    pub tr: Tr,
    pub csrf: String,
    pub masked: String,
    pub client_id: String,
    pub client_name: String,
    pub post_logout_redirect_uri: String,
    pub state: String,
    pub ui_locales: String,
}

/// «Вы вышли из MAX», with the way back to the client when it registered one.
#[derive(Template)]
#[template(path = "logged_out.html")]
pub struct LoggedOutPage {
    pub tr: Tr,
    pub back: Option<String>,
    pub client_name: String,
}

#[derive(Template)]
#[template(path = "sferum.html")]
pub struct SferumPage {
    pub tr: Tr,
    pub now: i64,
    pub csrf: String,
    pub masked: String,
    pub overview: Overview,
    pub confirmed_by: Option<String>,
}

/// A chat message as a page (or the live stream) shows it.
#[derive(Debug, Clone)]
pub struct MessageView {
    /// Id (anchor and cursor).
    pub id: i64,
    /// The author's name, or a neutral label.
    pub author: String,
    /// Written by the reader.
    pub mine: bool,
    /// Written by a teacher.
    pub teacher: bool,
    /// Written by somebody who left.
    pub former: bool,
    /// A system message.
    pub system: bool,
    /// The text (escaped by the template).
    pub text: String,
    /// When.
    pub at: String,
}

#[derive(Template)]
#[template(path = "chat.html")]
pub struct ChatPage {
    pub tr: Tr,
    pub csrf: String,
    pub access: edulink_sferum::ChatAccess,
    pub messages: Vec<MessageView>,
    pub older: Option<i64>,
    pub newer: Option<i64>,
    pub live: bool,
    pub after: i64,
    pub can_post: bool,
    pub members: Vec<edulink_sferum::Member>,
    pub lesson: Option<edulink_sferum::Lesson>,
    pub lesson_open: bool,
}

#[derive(Template)]
#[template(path = "people.html")]
pub struct PeoplePage {
    pub tr: Tr,
    pub csrf: String,
    pub query: String,
    pub searched: Option<String>,
    pub found: Vec<edulink_sferum::Found>,
}

#[derive(Template)]
#[template(path = "lesson_closed.html")]
pub struct LessonClosedPage {
    pub tr: Tr,
    pub message: String,
    pub lesson: edulink_sferum::Lesson,
}

#[derive(Template)]
#[template(path = "inbox.html")]
pub struct InboxPage {
    pub tr: Tr,
    pub messages: Vec<SentSms>,
}

/// `GET /static/max.css`.
pub async fn css() -> Response {
    static_asset("text/css; charset=utf-8", include_str!("../static/max.css"))
}

/// `GET /static/app.js`: progressive enhancement only (resend countdown).
pub async fn js() -> Response {
    static_asset("text/javascript; charset=utf-8", include_str!("../../web/static/app.js"))
}

fn static_asset(ct: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, ct), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

/// Back to a spent confirmation page: the step is done; a way back to the client.
#[derive(Template)]
#[template(path = "finished.html")]
pub struct FinishedPage {
    pub tr: Tr,
    pub client_name: String,
    /// The client's home (the origin of its redirect URI).
    pub home: String,
}
