//! Shared web glue for both parties: the one error type at the HTTP edge, locales, cookies and
//! sessions helpers, CSRF and origin checks, security headers, strict form parsing, and operations
//! endpoints.

pub mod api;
pub mod audit;
pub mod client_ip;
pub mod cookies;
pub mod error;
pub mod forms;
pub mod i18n;
pub mod layers;
pub mod metrics;
pub mod ops;
pub mod process;
pub mod serve;
pub mod trace;

pub use error::{AppError, ErrorKind};
pub use forms::{StrictForm, StrictQuery};
pub use i18n::{Lang, Tr};
pub use layers::ClientIp;

/// Renders an askama template into an HTML response, logging (not showing) a rendering failure.
pub fn html<T: askama::Template>(t: &T) -> axum::response::Response {
    use axum::response::IntoResponse;
    match t.render() {
        Ok(body) => axum::response::Html(body).into_response(),
        Err(e) => AppError::internal(format!("template: {e}")).into_response(),
    }
}

/// A `303 See Other` to `location`: the answer to every successful form POST.
pub fn see_other(location: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    (axum::http::StatusCode::SEE_OTHER, [(axum::http::header::LOCATION, location.to_string())]).into_response()
}
