//! The OpenID Connect provider, one file per part of the protocol:
//!
//! * [`discovery`]: provider metadata and JWKS (OIDC Discovery 1.0 §3–4, RFC 7517 §5).
//! * [`authorize`]: the authorization endpoint (RFC 6749 §3.1, §4.1.1–4.1.2; RFC 7636 §4.3; RFC 9207).
//! * [`consent`]: sign-in hand-off, consent and code issue (RFC 6749 §4.1.2, §4.1.2.1; OIDC Core §3.1.2.4).
//! * [`request`]: the stored authorization request and the redirects back to the client (RFC 9207).
//! * [`token`]: the token endpoint and its grants (RFC 6749 §3.2, §4.1.3, §4.4, §5, §6; RFC 7636 §4.6).
//! * [`userinfo`]: the UserInfo endpoint and bearer access tokens (OIDC Core §5.3; RFC 6750).
//! * [`revocation`]: token revocation (RFC 7009).
//! * [`clients`]: client registrations and client authentication (RFC 6749 §2).
//! * [`error`]: the back channel's error responses (RFC 6749 §5.2, RFC 6750 §3.1).
//! * [`logout`]: the end-session endpoint (OpenID Connect RP-Initiated Logout 1.0).
//! * [`backchannel`]: logout tokens to clients (OpenID Connect Back-Channel Logout 1.0).
//! * [`dpop`]: DPoP proofs, server nonces and key-bound tokens (RFC 9449).
//! * [`par`]: pushed authorization requests (RFC 9126).
//! * [`introspection`]: token introspection for resource servers (RFC 7662).
//!
//! Rules (RFC 6749, RFC 7636, RFC 7009, RFC 9207, RFC 9700, OIDC Core): `response_type=code` only;
//! PKCE S256 required; redirect URIs match exactly and a bad one is never redirected to; codes are
//! single-use, live 60 s, are bound to client, redirect URI and PKCE verifier, and a replay revokes
//! what the code issued; refresh tokens rotate and a reused one revokes its family; subjects are
//! pairwise per client sector (OIDC Core §8.1); the authorization response carries `iss`.
//! Storage is in [`crate::repo`].

pub mod authorize;
pub mod backchannel;
pub mod clients;
pub mod consent;
pub mod discovery;
pub mod dpop;
pub mod error;
pub mod introspection;
pub mod logout;
pub mod par;
pub mod request;
pub mod revocation;
pub mod token;
pub mod userinfo;

pub use authorize::{AuthorizeParams, RequestError, Validated, authorize, authorize_post, validate};
pub use clients::{
    CLIENT_CACHE_TTL, CLIENT_SECRET_GRACE_DEFAULT, CLIENT_SECRET_GRACE_MAX, Client, ClientCache, ClientPolicy,
    PreviousSecret, SecretMatch, cached_client, client, match_secret, rotate_secret, upsert_client,
};
pub use consent::{Consent, confirm, continue_authorization, deny, issue_code, issue_code_audited, switch_account};
pub use discovery::{discovery, discovery_document, jwks};
pub use error::OAuthError;
pub use request::{AuthRequest, CODE_TTL, load_request, store_request};
pub use revocation::{revoke, revoke_grant_tokens};
pub use token::token;
pub use userinfo::{AccessToken, bearer, userinfo};

use crate::MaxState;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The pairwise subject of `account_id` for a client sector (OIDC Core §8.1).
pub fn pairwise_sub(st: &MaxState, sector: &str, account_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(st.secrets.pairwise.mac(&[sector.as_bytes(), account_id.as_bytes()]))
}

/// The `sid` of a MAX session (OpenID Connect Back-Channel Logout 1.0 §2.1): derived from the
/// session's stored id (itself a hash of the cookie), so it names the session without revealing
/// anything that would open it, and needs no column of its own.
pub fn sid_of(session_id_hash: &str) -> String {
    edulink_domain::crypto::sha256_b64(&format!("sid:{session_id_hash}"))
}
