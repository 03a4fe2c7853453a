//! Provider metadata (OpenID Connect Discovery 1.0 §3, §4; RFC 8414 §2 for `revocation_endpoint`;
//! RFC 9207 §3 for `authorization_response_iss_parameter_supported`) and the JWK Set (RFC 7517 §5).

use crate::MaxState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use edulink_domain::oauth::KNOWN_SCOPES;
use serde_json::json;

/// Every claim MAX can return, in the ID token or at the UserInfo endpoint (OIDC Discovery §3): the
/// ID token's own, the `profile` names MAX holds (no picture, birthdate…) and the `phone` pair.
pub const CLAIMS_SUPPORTED: &[&str] = &[
    "sub",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "sid",
    "nonce",
    "name",
    "given_name",
    "family_name",
    "phone_number",
    "phone_number_verified",
];

/// The discovery document of `issuer` (built once at start; it changes only with the configuration).
pub fn discovery_document(issuer: &str) -> String {
    let i = issuer;
    json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/oauth/authorize"),
        "token_endpoint": format!("{i}/oauth/token"),
        "userinfo_endpoint": format!("{i}/oauth/userinfo"),
        "jwks_uri": format!("{i}/oauth/jwks"),
        "revocation_endpoint": format!("{i}/oauth/revoke"),
        "scopes_supported": KNOWN_SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": crate::keys::ALGS,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": CLAIMS_SUPPORTED,
        "prompt_values_supported": ["none", "login", "consent"],
        "authorization_response_iss_parameter_supported": true,
        // Absent, both default to a value we do not honour (`request_uri_parameter_supported` to true).
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "ui_locales_supported": ["ru", "en"],
        // OpenID Connect RP-Initiated Logout 1.0 §3.1 and Back-Channel Logout 1.0 §2.1 (oidc::logout, oidc::backchannel).
        "end_session_endpoint": format!("{i}/oauth/logout"),
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
        // Issue 16, item 10: PAR (RFC 9126 §5; required per client, for the diary's apps), DPoP
        // (RFC 9449 §5.1), introspection for confidential clients (RFC 8414 §2, RFC 7662).
        "pushed_authorization_request_endpoint": format!("{i}/oauth/par"),
        "require_pushed_authorization_requests": false,
        "dpop_signing_alg_values_supported": edulink_domain::dpop::ALGS,
        "introspection_endpoint": format!("{i}/oauth/introspect"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    })
    .to_string()
}

/// `GET /.well-known/openid-configuration`.
pub async fn discovery(State(st): State<MaxState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "public, max-age=300")],
        st.discovery.to_string(),
    )
        .into_response()
}

/// `GET /oauth/jwks`.
pub async fn jwks(State(st): State<MaxState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/jwk-set+json"), (header::CACHE_CONTROL, "public, max-age=300")],
        st.keys.jwks(),
    )
        .into_response()
}
