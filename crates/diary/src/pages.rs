//! The diary's pages, one file per family: [`home`] (the main page, login, logout, an app's
//! handoff), [`link`] («Сферум»: connect, callback, success, sign-in), [`passport`] («Мой паспорт» →
//! «Безопасность» with unlinking) and [`lessons`] (a lesson, the teacher's changes, «Подключиться»).
//! Here: what they share (the session, CSRF, cookies).

use crate::DiaryState;
use crate::repo::{self, Session, User};
use crate::rp::RpError;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use edulink_web::{AppError, Lang, Tr};

/// The session cookie's base name.
pub const SESSION_COOKIE: &str = "diary_sid";
/// The pre-login CSRF cookie (double submit) of the login form.
const PRE_COOKIE: &str = "diary_pre";

fn tr(headers: &HeaderMap) -> Tr {
    Tr::new(Lang::from_headers(headers))
}

pub(crate) async fn current(st: &DiaryState, headers: &HeaderMap) -> Result<Option<(Session, User)>, AppError> {
    let Some(raw) = st.cookies.get(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    Ok(repo::load_session_user(&st.db, &raw, st.now(), st.cfg.session_idle_secs, st.cfg.session_absolute_secs).await?)
}

fn set_cookie(mut resp: Response, value: HeaderValue) -> Response {
    resp.headers_mut().append(header::SET_COOKIE, value);
    resp
}

/// The signed-in `(session, user)`, or a redirect to the login page.
macro_rules! signed_in {
    ($st:expr, $headers:expr) => {
        match $crate::pages::current(&$st, &$headers).await? {
            Some(x) => x,
            None => return Ok(edulink_web::see_other("/login")),
        }
    };
}

pub mod home;
pub mod lessons;
pub mod link;
pub mod passport;

pub(crate) fn max_unavailable(e: RpError) -> AppError {
    tracing::error!(error = %e, "MAX unavailable");
    AppError::new(edulink_web::ErrorKind::Unavailable, "error-max-unavailable")
}
