//! The back channel's errors: RFC 6749 §5.2 (token and revocation endpoints, RFC 7009 §2.2.1) and
//! RFC 6750 §3.1 (`invalid_token` at the UserInfo endpoint), rendered as JSON, not the app envelope.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edulink_store::StoreError;
use edulink_web::AppError;
use serde_json::json;

/// An OAuth error response, or a failure of our own (rendered as the app's error).
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// `invalid_request` (400).
    #[error("invalid_request: {0}")]
    InvalidRequest(&'static str),
    /// `invalid_client` (401 with a `Basic` challenge).
    #[error("invalid_client: {0}")]
    InvalidClient(&'static str),
    /// `invalid_grant` (400).
    #[error("invalid_grant: {0}")]
    InvalidGrant(&'static str),
    /// `unauthorized_client` (400).
    #[error("unauthorized_client: {0}")]
    UnauthorizedClient(&'static str),
    /// `unsupported_grant_type` (400).
    #[error("unsupported_grant_type: {0}")]
    UnsupportedGrantType(&'static str),
    /// `invalid_scope` (400).
    #[error("invalid_scope: {0}")]
    InvalidScope(&'static str),
    /// A missing, unknown, expired or insufficient access token (401 with a `Bearer` challenge).
    #[error("invalid_token")]
    InvalidToken,
    /// `invalid_dpop_proof` at the authorization server (400, RFC 9449 §5).
    #[error("invalid_dpop_proof: {0}")]
    InvalidDpopProof(&'static str),
    /// `use_dpop_nonce` at the authorization server (400 with `DPoP-Nonce`, RFC 9449 §8).
    #[error("use_dpop_nonce")]
    UseDpopNonce(String),
    /// A refusal at a resource taking DPoP (401 with a `DPoP` challenge, RFC 9449 §7.1, §9).
    #[error("DPoP challenge: {error}")]
    DpopChallenge {
        /// `invalid_token`, `invalid_dpop_proof` or `use_dpop_nonce`.
        error: &'static str,
        /// A fresh nonce for `use_dpop_nonce`.
        nonce: Option<String>,
    },
    /// Our own failure (storage, signing).
    #[error(transparent)]
    Server(#[from] AppError),
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        OAuthError::Server(e.into())
    }
}

impl OAuthError {
    /// The `error` code and description, for the RFC 6749 §5.2 variants.
    fn code(&self) -> Option<(StatusCode, &'static str, &'static str)> {
        let bad = StatusCode::BAD_REQUEST;
        Some(match self {
            OAuthError::InvalidRequest(d) => (bad, "invalid_request", d),
            OAuthError::InvalidClient(d) => (StatusCode::UNAUTHORIZED, "invalid_client", d),
            OAuthError::InvalidGrant(d) => (bad, "invalid_grant", d),
            OAuthError::UnauthorizedClient(d) => (bad, "unauthorized_client", d),
            OAuthError::UnsupportedGrantType(d) => (bad, "unsupported_grant_type", d),
            OAuthError::InvalidScope(d) => (bad, "invalid_scope", d),
            OAuthError::InvalidDpopProof(d) => (bad, "invalid_dpop_proof", d),
            OAuthError::UseDpopNonce(_) => (bad, "use_dpop_nonce", "use the DPoP-Nonce of this answer in the proof"),
            OAuthError::InvalidToken | OAuthError::Server(_) | OAuthError::DpopChallenge { .. } => return None,
        })
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        if let Some((status, error, description)) = self.code() {
            let body = json!({ "error": error, "error_description": description });
            let mut resp = (status, axum::Json(body)).into_response();
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            if status == StatusCode::UNAUTHORIZED {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"MAX\""));
            }
            if let OAuthError::UseDpopNonce(n) = &self
                && let Ok(v) = HeaderValue::from_str(n)
            {
                resp.headers_mut().insert(super::dpop::DPOP_NONCE, v);
            }
            return resp;
        }
        match self {
            OAuthError::Server(e) => e.into_response(),
            OAuthError::DpopChallenge { error, nonce } => {
                let body = axum::Json(json!({ "error": error }));
                let mut resp = (StatusCode::UNAUTHORIZED, body).into_response();
                let algs = edulink_domain::dpop::ALGS.join(" ");
                if let Ok(v) = HeaderValue::from_str(&format!("DPoP error=\"{error}\", algs=\"{algs}\"")) {
                    resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                if let Some(v) = nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
                    resp.headers_mut().insert(super::dpop::DPOP_NONCE, v);
                }
                resp
            }
            _ => {
                let body = axum::Json(json!({ "error": "invalid_token" }));
                let mut resp = (StatusCode::UNAUTHORIZED, body).into_response();
                let challenge = HeaderValue::from_static("Bearer error=\"invalid_token\"");
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
                resp
            }
        }
    }
}

/// A JSON response that must not be cached (RFC 6749 §5.1, OIDC Core §5.3.2).
pub(crate) fn no_store_json(body: serde_json::Value) -> Response {
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // RFC 6749 §5.1 names both; HTTP/1.0 caches only know `Pragma`.
    resp.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}
