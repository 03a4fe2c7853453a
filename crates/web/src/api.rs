//! Shared pieces of the JSON APIs: a strict JSON body extractor, bearer tokens, and the error
//! envelope's schema for the OpenAPI documents.

use crate::error::{AppError, ErrorKind};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// A JSON body: `application/json`, unknown fields and duplicate fields refused (one value per field).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"));
        if !json {
            return Err(AppError::new(ErrorKind::UnsupportedMediaType, "error-json-required"));
        }
        let body = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                AppError::new(ErrorKind::PayloadTooLarge, "error-too-large")
            } else {
                AppError::bad_request("error-bad-request")
            }
        })?;
        serde_json::from_slice(&body).map(ApiJson).map_err(|_| AppError::bad_request("error-bad-request"))
    }
}

/// The token of an `Authorization` header value `Bearer <token>` (RFC 6750 §2.1). The scheme is
/// matched case-insensitively (RFC 9110 §11.1) and spaces around the token are ignored; the token must
/// be a `b64token` (RFC 6750 §2.1). Any other scheme, or no token, gives `None`.
pub fn parse_bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim_start_matches(' ');
    let body = token.trim_end_matches('=');
    let b64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
    (scheme.eq_ignore_ascii_case("bearer") && !body.is_empty() && body.bytes().all(b64)).then_some(token)
}

/// The bearer token of the `Authorization` header (see [`parse_bearer`]); never a query parameter
/// (RFC 6750 §2.3 is not supported on purpose).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(parse_bearer)
}

/// True for the shape of the apps' session tokens: 43 URL-safe base64 characters (32 random bytes).
pub fn is_session_token(token: &str) -> bool {
    token.len() == 43 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The app session token of the `Authorization` header: a bearer token shaped as [`is_session_token`].
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    bearer_token(headers).filter(|t| is_session_token(t))
}

/// 401 for a missing or dead bearer token.
pub fn unauthorized() -> AppError {
    AppError::new(ErrorKind::Unauthorized, "error-unauthorized")
}

/// The error envelope of every API error.
#[derive(Debug, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// What went wrong.
#[derive(Debug, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Stable machine-readable code (see the API documentation's list).
    #[schema(pattern = "^[a-z_]+$", max_length = 64)]
    pub code: String,
    /// A message for people, in the request's language.
    #[schema(max_length = 1000)]
    pub message: String,
    /// Seconds until a retry may succeed (with 429).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub retry_after: Option<i64>,
}

/// Renders an OpenAPI document as served and committed. utoipa 5 writes response links'
/// `operationId` as `operation_id`; OpenAPI 3.1 §4.8.20 spells it `operationId`, so it is renamed here.
pub fn render_openapi(doc: &utoipa::openapi::OpenApi) -> String {
    let mut v = serde_json::to_value(doc).unwrap_or_default();
    fn fix(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Object(links)) = map.get_mut("links") {
                    for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
                        if let Some(id) = link.remove("operation_id") {
                            link.insert("operationId".into(), id);
                        }
                    }
                }
                map.values_mut().for_each(fix);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(fix),
            _ => {}
        }
    }
    fix(&mut v);
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// Adds the `bearer` HTTP security scheme that the operations' `security(("bearer" = []))` refer to.
pub struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The response of `GET /api/v1/openapi.json`.
pub fn openapi_response(doc: &utoipa::openapi::OpenApi) -> axum::response::Response {
    use axum::response::IntoResponse;
    ([(header::CONTENT_TYPE, "application/json")], render_openapi(doc)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde";

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            assert_eq!(parse_bearer(&format!("{scheme} {TOKEN}")), Some(TOKEN), "{scheme}");
        }
    }

    #[test]
    fn extra_spaces_around_the_token_are_ignored() {
        assert_eq!(parse_bearer(&format!("Bearer   {TOKEN}  ")), Some(TOKEN));
        assert_eq!(parse_bearer(&format!("  Bearer {TOKEN}")), Some(TOKEN));
    }

    #[test]
    fn a_missing_or_malformed_token_is_refused() {
        for v in ["Bearer", "Bearer ", "Bearer    ", "Bearer a b", "Bearer ===", "Bearer tök"] {
            assert_eq!(parse_bearer(v), None, "{v:?}");
        }
        assert_eq!(parse_bearer("Bearer abc=="), Some("abc=="));
    }

    #[test]
    fn other_schemes_are_refused() {
        for v in [format!("Basic {TOKEN}"), format!("Bearerx {TOKEN}"), format!("Token {TOKEN}"), TOKEN.to_string()] {
            assert_eq!(parse_bearer(&v), None, "{v:?}");
        }
    }

    #[test]
    fn app_session_tokens_also_need_their_shape() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, format!("bearer {TOKEN}").parse().unwrap());
        assert_eq!(bearer(&headers), Some(TOKEN));
        headers.insert(header::AUTHORIZATION, "Bearer short".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("short"));
        assert_eq!(bearer(&headers), None);
        headers.remove(header::AUTHORIZATION);
        assert_eq!(bearer_token(&headers), None);
    }
}
