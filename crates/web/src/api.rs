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

/// The bearer token of the `Authorization` header, if well-formed (43 URL-safe base64 characters).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| t.len() == 43 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
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
