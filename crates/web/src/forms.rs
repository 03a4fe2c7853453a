//! Strict form and query extractors: exactly one value per field (docs/architecture.md, «Rules»).
//!
//! Parameter pollution (`phone=a&phone=b`, `code[]=1`) is refused with 400 before any handler runs,
//! so no rule can be bypassed by a second value that some other layer would read.

use crate::error::AppError;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use std::collections::HashSet;

/// An `application/x-www-form-urlencoded` body with at most one value per key.
#[derive(Debug)]
pub struct StrictForm<T>(pub T);

/// A query string with at most one value per key.
#[derive(Debug)]
pub struct StrictQuery<T>(pub T);

/// A form that carries only the session's CSRF token (logout, resend, confirm, deny, cancel…).
#[derive(Debug, serde::Deserialize)]
pub struct CsrfForm {
    /// The token the page was rendered with.
    pub csrf: String,
}

/// Refuses a form whose CSRF token is not `expected` (the session's), comparing in constant time.
/// Both parties' sessions keep a per-session token (synchronizer token pattern, OWASP CSRF cheat
/// sheet); the origin check in `layers` is the second line.
pub fn check_csrf(expected: &str, presented: &str) -> Result<(), AppError> {
    if edulink_domain::crypto::ct_eq(expected.as_bytes(), presented.as_bytes()) {
        Ok(())
    } else {
        metrics::counter!("edulink_csrf_refused_total").increment(1);
        Err(AppError::forbidden("error-csrf"))
    }
}

/// Parses `input` into `T`, refusing duplicate keys and array-style keys.
pub fn parse_strict<T: DeserializeOwned>(input: &str) -> Result<T, AppError> {
    // Keys are compared decoded (`%70hone` is `phone`), as the deserializer will see them; the
    // check borrows them from the input where nothing is escaped, and the input is then
    // deserialized once (an `id_token_hint` or a code verifier can be long).
    let mut seen = HashSet::new();
    for (k, _) in form_urlencoded::parse(input.as_bytes()) {
        if k.contains('[') || !seen.insert(k) {
            return Err(AppError::bad_request("error-duplicate-param"));
        }
    }
    serde_urlencoded::from_str(input).map_err(|_| AppError::bad_request("error-bad-request"))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for StrictForm<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ct = req.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !ct.starts_with("application/x-www-form-urlencoded") {
            return Err(AppError::new(crate::ErrorKind::UnsupportedMediaType, "error-bad-request"));
        }
        let body = String::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                AppError::new(crate::ErrorKind::PayloadTooLarge, "error-too-large")
            } else {
                AppError::bad_request("error-bad-request")
            }
        })?;
        parse_strict(&body).map(StrictForm)
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for StrictQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_strict(parts.uri.query().unwrap_or("")).map(StrictQuery)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct F {
        phone: String,
        #[serde(default)]
        csrf: Option<String>,
    }

    #[test]
    fn single_values_pass() {
        let f: F = parse_strict("phone=%2B7+916&csrf=x").unwrap();
        assert_eq!(f.phone, "+7 916");
        assert_eq!(f.csrf.as_deref(), Some("x"));
    }

    #[test]
    fn duplicates_and_arrays_are_refused() {
        assert!(parse_strict::<F>("phone=1&phone=2").is_err());
        assert!(parse_strict::<F>("phone[]=1").is_err());
        assert!(parse_strict::<F>("phone[0]=1&csrf=2").is_err());
        assert!(parse_strict::<F>("csrf=1").is_err());
        // The same key spelled differently is still the same key.
        assert!(parse_strict::<F>("phone=1&%70hone=2").is_err());
        assert!(parse_strict::<F>("phone=1&phone%5B%5D=2").is_err());
    }

    #[test]
    fn csrf_token_must_match_exactly() {
        assert!(check_csrf("tok-123", "tok-123").is_ok());
        for wrong in ["", "tok-12", "tok-1234", "TOK-123"] {
            assert!(check_csrf("tok-123", wrong).is_err(), "{wrong:?}");
        }
    }
}
