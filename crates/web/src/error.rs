//! The one error type at the HTTP edge.
//!
//! Handlers return [`AppError`]; it becomes a response carrying an [`ErrorInfo`] extension, and the
//! edge middleware, through [`render_error`] (which knows the request's language, the site's look, and whether the
//! client wants JSON) turns that into a Russian/English HTML page or the JSON envelope
//! `{"error": {"code", "message", "retry_after"?}}`. Details of 5xx errors are logged, never shown.

use crate::i18n::{Lang, Tr};
use askama::Template;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// What went wrong, as far as the client is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: malformed input.
    BadRequest,
    /// 401: missing or bad credentials.
    Unauthorized,
    /// 403: not allowed (including failed CSRF/origin checks).
    Forbidden,
    /// 404.
    NotFound,
    /// 409: the state does not allow this (e.g. an account already linked elsewhere).
    Conflict,
    /// 413.
    PayloadTooLarge,
    /// 415.
    UnsupportedMediaType,
    /// 429: a limit was hit; comes with `retry_after`.
    TooManyRequests,
    /// 503: a dependency (the database) is unavailable.
    Unavailable,
    /// 500: a bug. Details logged only.
    Internal,
}

impl ErrorKind {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answered to the client: a kind, a message id from the locale files, and maybe a wait.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {key}")]
pub struct AppError {
    /// The class of error.
    pub kind: ErrorKind,
    /// Message id in the locale files (`error-…`); also gives the stable JSON code.
    pub key: &'static str,
    /// Seconds until a retry may succeed (429).
    pub retry_after: Option<i64>,
    /// Internal detail for the log; never sent to the client.
    detail: Option<String>,
}

/// What [`render_error`] needs to render an error; travels as a response extension.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    /// Message id.
    pub key: &'static str,
    /// Seconds to wait.
    pub retry_after: Option<i64>,
}

impl AppError {
    /// An error of `kind` with message `key`.
    pub fn new(kind: ErrorKind, key: &'static str) -> Self {
        Self { kind, key, retry_after: None, detail: None }
    }

    /// 400 with message `key`.
    pub fn bad_request(key: &'static str) -> Self {
        Self::new(ErrorKind::BadRequest, key)
    }

    /// 403 with message `key`.
    pub fn forbidden(key: &'static str) -> Self {
        Self::new(ErrorKind::Forbidden, key)
    }

    /// 404.
    pub fn not_found() -> Self {
        Self::new(ErrorKind::NotFound, "error-not-found")
    }

    /// 409 with message `key`.
    pub fn conflict(key: &'static str) -> Self {
        Self::new(ErrorKind::Conflict, key)
    }

    /// 429 with message `key`, retry after `secs`.
    pub fn too_many(key: &'static str, secs: i64) -> Self {
        Self { retry_after: Some(secs.max(1)), ..Self::new(ErrorKind::TooManyRequests, key) }
    }

    /// 500; `detail` is logged.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self { detail: Some(detail.into()), ..Self::new(ErrorKind::Internal, "error-internal") }
    }

    /// The stable machine-readable code: the message id without `error-`, with underscores.
    pub fn code(key: &str) -> String {
        key.trim_start_matches("error-").replace('-', "_")
    }
}

impl From<edulink_store::StoreError> for AppError {
    fn from(e: edulink_store::StoreError) -> Self {
        match e {
            edulink_store::StoreError::Unavailable(d) => {
                tracing::error!(error = %d, "database unavailable");
                Self { detail: Some(d), ..Self::new(ErrorKind::Unavailable, "error-unavailable") }
            }
            other => Self::internal(other.to_string()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.kind.status();
        if status.is_server_error() {
            tracing::error!(detail = self.detail.as_deref().unwrap_or(""), key = self.key, "server error");
            metrics::counter!("edulink_http_server_errors_total").increment(1);
        }
        let mut resp = (status, self.key).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp.extensions_mut().insert(ErrorInfo { key: self.key, retry_after: self.retry_after });
        resp
    }
}

/// The look of one site, for error pages.
#[derive(Debug, Clone, Copy)]
pub struct Brand {
    /// Stylesheet path, e.g. `/static/diary.css`.
    pub css: &'static str,
    /// Site title message id.
    pub title_key: &'static str,
    /// CSS class on `<body>`.
    pub class: &'static str,
    /// The logo's text in the header («M», «МЭШ»).
    pub logo: &'static str,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    tr: Tr,
    brand: Brand,
    status: u16,
    message: String,
    retry_after: Option<i64>,
    _p: std::marker::PhantomData<&'a ()>,
}

/// True when the client asked for JSON: API paths, OAuth back-channel paths (not the browser-facing
/// authorization and end-session endpoints), or an `Accept` header
/// that prefers JSON over HTML.
pub fn wants_json(path: &str, accept: Option<&str>) -> bool {
    path.starts_with("/api/")
        || (path.starts_with("/oauth/") && path != "/oauth/authorize" && path != "/oauth/logout")
        || path.starts_with("/sferum/api/")
        || path.starts_with("/dev/sms")
        || accept.is_some_and(|a| a.contains("application/json") && !a.contains("text/html"))
}

/// Who reads an error response: their language, and whether they want JSON.
#[derive(Debug, Clone, Copy)]
pub struct ErrorReader {
    lang: Lang,
    json: bool,
}

impl ErrorReader {
    /// The reader of the response to `req`.
    pub fn of(req: &Request) -> Self {
        let json = wants_json(req.uri().path(), req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()));
        Self { lang: Lang::from_headers(req.headers()), json }
    }
}

/// Renders `resp` as an error page or JSON envelope for `to` if a handler answered with an
/// [`AppError`]; any other response passes unchanged.
pub fn render_error(brand: Brand, to: ErrorReader, resp: Response) -> Response {
    let ErrorReader { lang, json } = to;
    let Some(info) = resp.extensions().get::<ErrorInfo>().cloned() else {
        return resp;
    };
    let tr = Tr::new(lang);
    let message = match info.retry_after {
        Some(secs) => tr.t1(info.key, "seconds", secs),
        None => tr.t(info.key),
    };
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = if json {
        parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let mut err = serde_json::json!({ "code": AppError::code(info.key), "message": message });
        if let Some(s) = info.retry_after {
            err["retry_after"] = s.into();
        }
        serde_json::json!({ "error": err }).to_string()
    } else {
        parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        let page = ErrorPage {
            tr,
            brand,
            status: parts.status.as_u16(),
            message,
            retry_after: info.retry_after,
            _p: std::marker::PhantomData,
        };
        page.render().unwrap_or_else(|_| "Ошибка".to_string())
    };
    Response::from_parts(parts, axum::body::Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_snake_case() {
        assert_eq!(AppError::code("error-phone-invalid"), "phone_invalid");
    }

    #[test]
    fn json_is_chosen_for_api_paths_and_json_accept() {
        assert!(wants_json("/api/v1/me", None));
        assert!(wants_json("/oauth/token", None));
        assert!(!wants_json("/oauth/authorize", None));
        assert!(!wants_json("/oauth/logout", None));
        assert!(wants_json("/x", Some("application/json")));
        assert!(!wants_json("/x", Some("text/html,application/json")));
        assert!(!wants_json("/login", None));
    }
}
