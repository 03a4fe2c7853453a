//! DPoP at MAX (RFC 9449): proofs at the token and PAR endpoints and at the resources that take
//! access tokens (UserInfo, the provisioning API), server nonces, the `jti` replay store, and
//! tokens bound to the key's thumbprint.
//!
//! * The pure checks of a proof (§4.3) are [`edulink_domain::dpop::verify`]; `htu` is compared with
//!   the endpoint's public URL under the issuer, so a proxy in front changes nothing.
//! * Nonces (§8) are required at the authorization server (token and PAR endpoints) for every
//!   proof: stateless, `base64url(issued_at ‖ HMAC(issued_at)[..16])`, valid for [`NONCE_TTL`].
//!   A proof without a valid one is answered `use_dpop_nonce` with a fresh nonce in `DPoP-Nonce`
//!   (§8.1); every answer of those endpoints to a DPoP request carries a fresh one. At resources a
//!   nonce is checked when present but not required (§9: the resource server decides), since
//!   `ath`, `iat` and the replay store already pin a proof to one request.
//! * Each proof is accepted once (§11.1): the hash of key thumbprint and `jti` is kept until the
//!   proof would be too old anyway.
//! * Binding (§5, §6): with a proof, the access token is bound to its key (`token_type` `DPoP`);
//!   a public client's refresh token too, and its refresh then needs a proof with the same key
//!   (a confidential client's refresh token stays bound to its client authentication, §5).
//!   A code whose authorization request named a key (`dpop_jkt`, or a proof at PAR; §10) is
//!   redeemed only with a proof by that key. A bound access token presented as `Bearer` is refused
//!   (§7.2). Clients with `dpop_bound_access_tokens` ([`super::ClientPolicy`]) must use DPoP.

use super::error::OAuthError;
use super::userinfo::AccessToken;
use crate::MaxState;
use crate::repo::dpop as store;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use edulink_domain::crypto::{ct_eq, sha256_b64};
use edulink_domain::dpop::{self, Expected, ProofError};
use edulink_domain::oauth::parse_scope;
use edulink_store::StoreError;

/// How long a server nonce is accepted, seconds: as long as an authorization request waits for the
/// person (sign-in, registration, consent), since an app handed a nonce when its request was pushed
/// signs its token proof only after that (the diary's app link). Freshness is `iat` (60 s) and each
/// proof once; the nonce bounds how early a proof can have been made.
pub const NONCE_TTL: i64 = 600;

/// The `DPoP` request header and the `DPoP-Nonce` response header.
pub const DPOP: HeaderName = HeaderName::from_static("dpop");
/// See [`DPOP`].
pub const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

fn nonce_mac(st: &MaxState, issued: i64) -> [u8; 32] {
    st.cfg.secret.derive("max/dpop-nonce").mac(&[&issued.to_be_bytes()])
}

/// A fresh server nonce.
pub fn new_nonce(st: &MaxState) -> String {
    let now = st.now();
    let mut raw = now.to_be_bytes().to_vec();
    raw.extend_from_slice(&nonce_mac(st, now)[..16]);
    B64.encode(raw)
}

/// Whether `nonce` is one of ours and younger than [`NONCE_TTL`].
pub fn nonce_is_valid(st: &MaxState, nonce: &str) -> bool {
    let Ok(raw) = B64.decode(nonce) else { return false };
    if raw.len() != 24 {
        return false;
    }
    let issued = i64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
    let age = st.now() - issued;
    (0..=NONCE_TTL).contains(&age) && ct_eq(&raw[8..], &nonce_mac(st, issued)[..16])
}

/// Adds a fresh `DPoP-Nonce` to a response.
pub fn with_nonce(st: &MaxState, mut resp: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&new_nonce(st)) {
        resp.headers_mut().insert(DPOP_NONCE, v);
    }
    resp
}

/// Whether the request carries a `DPoP` header at all.
pub fn has_proof(headers: &HeaderMap) -> bool {
    headers.contains_key(DPOP)
}

/// The single `DPoP` header (§4.3 check 1: exactly one).
fn proof_header(headers: &HeaderMap) -> Result<Option<&str>, ProofError> {
    let mut all = headers.get_all(DPOP).iter();
    match (all.next(), all.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v.to_str().map(Some).map_err(|_| ProofError::Malformed),
        _ => Err(ProofError::Malformed),
    }
}

/// Why a proof was not accepted, before it is phrased for the endpoint.
#[derive(Debug)]
enum Refusal {
    /// `invalid_dpop_proof`.
    Proof(&'static str),
    /// `use_dpop_nonce`, with the nonce to use.
    Nonce(String),
    /// Storage.
    Store(StoreError),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Store(e)
    }
}

fn describe(e: ProofError) -> &'static str {
    match e {
        ProofError::Malformed => "the DPoP proof is not a single well-formed JWT",
        ProofError::Type => "the DPoP proof's typ must be dpop+jwt",
        ProofError::Algorithm => "the DPoP proof's alg is not supported or does not fit its key",
        ProofError::Key => "the DPoP proof's jwk must be a supported public key",
        ProofError::Signature => "the DPoP proof's signature does not verify",
        ProofError::Claims => "the DPoP proof lacks jti, htm, htu or iat",
        ProofError::Method => "the DPoP proof's htm is not this request's method",
        ProofError::Uri => "the DPoP proof's htu is not this endpoint",
        ProofError::Stale => "the DPoP proof's iat is too old or in the future",
        ProofError::AccessTokenHash => "the DPoP proof's ath is not the access token's hash",
    }
}

/// Checks the proof of a request to `path` under the issuer; `None` when there is none.
async fn check(
    st: &MaxState,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    access_token: Option<&str>,
    nonce_required: bool,
) -> Result<Option<dpop::Proof>, Refusal> {
    let Some(jws) = proof_header(headers).map_err(|e| Refusal::Proof(describe(e)))? else { return Ok(None) };
    let now = st.now();
    let uri = format!("{}{path}", st.cfg.issuer);
    let want = Expected { method, uri: &uri, now, access_token };
    let proof = dpop::verify(jws, &want).map_err(|e| Refusal::Proof(describe(e)))?;
    match proof.nonce.as_deref() {
        Some(n) if nonce_is_valid(st, n) => {}
        None if !nonce_required => {}
        _ => return Err(Refusal::Nonce(new_nonce(st))),
    }
    let id = sha256_b64(&format!("{}:{}", proof.jkt, proof.jti));
    if !store::record_proof(&st.db, &id, now + dpop::MAX_AGE + dpop::MAX_SKEW, now).await? {
        metrics::counter!("edulink_dpop_replay_total").increment(1);
        return Err(Refusal::Proof("the DPoP proof was used before"));
    }
    Ok(Some(proof))
}

/// The proof at an authorization server endpoint (`/oauth/token`, `/oauth/par`): the key's
/// thumbprint, or `None` without a proof (refused when `required`).
pub async fn authorization_server_proof(
    st: &MaxState,
    headers: &HeaderMap,
    path: &str,
    required: bool,
) -> Result<Option<String>, OAuthError> {
    match check(st, headers, "POST", path, None, true).await {
        Ok(Some(p)) => Ok(Some(p.jkt)),
        Ok(None) if required => Err(OAuthError::InvalidDpopProof("this client must send a DPoP proof")),
        Ok(None) => Ok(None),
        Err(Refusal::Proof(why)) => Err(OAuthError::InvalidDpopProof(why)),
        Err(Refusal::Nonce(n)) => Err(OAuthError::UseDpopNonce(n)),
        Err(Refusal::Store(e)) => Err(e.into()),
    }
}

/// The binding key of an authorization request (`req:<id>`) or code (`code:<hash>`).
pub fn request_binding(id: &str) -> String {
    format!("req:{id}")
}

/// See [`request_binding`].
pub fn code_binding(code_hash: &str) -> String {
    format!("code:{code_hash}")
}

/// Whether a code bound to `bound` may be redeemed with a proof by `presented` (§10.1).
pub fn code_key_matches(bound: Option<&str>, presented: Option<&str>) -> bool {
    match (bound, presented) {
        (None, _) => true,
        (Some(b), Some(p)) => ct_eq(b.as_bytes(), p.as_bytes()),
        (Some(_), None) => false,
    }
}

/// The refresh token of a public client is bound to the key too (§5).
pub fn refresh_jkt<'a>(client: &super::Client, jkt: Option<&'a str>) -> Option<&'a str> {
    jkt.filter(|_| !client.is_confidential())
}

/// Checks, before it is rotated, that a refresh token is presented by its client with a proof by
/// its key: a stranger's attempt must not burn the owner's token (RFC 9700 §4.14, RFC 9449 §5).
pub async fn check_refresh(
    st: &MaxState,
    client: &super::Client,
    token: &str,
    jkt: Option<&str>,
) -> Result<(), OAuthError> {
    let Some(b) = store::refresh_binding(&st.db, &sha256_b64(token), st.now()).await? else { return Ok(()) };
    if b.client_id != client.client_id {
        return Ok(()); // The grant refuses it as it refuses any other client's token.
    }
    if !code_key_matches(b.jkt.as_deref(), jkt) {
        return Err(OAuthError::InvalidDpopProof("the refresh token is bound to another DPoP key"));
    }
    Ok(())
}

/// The method and path of a request to a resource: what its proof's `htm` and `htu` must be.
#[derive(Debug, Clone)]
pub struct Target {
    /// The method.
    pub method: axum::http::Method,
    /// The path (under the issuer).
    pub path: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Target {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Target { method: parts.method.clone(), path: parts.uri.path().to_string() })
    }
}

/// The access token of a request to a resource at `path` (`Authorization: Bearer` or, with a
/// proof, `Authorization: DPoP`; §7.1, §7.2). `None` when there is none, or when it is unknown,
/// expired or revoked; a bound token presented as `Bearer`, or with a bad proof, is refused.
pub async fn resource_token(
    st: &MaxState,
    headers: &HeaderMap,
    method: &str,
    path: &str,
) -> Result<Option<AccessToken>, OAuthError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let (scheme, token) = value.trim().split_once(' ').map(|(s, t)| (s, t.trim())).unwrap_or(("", ""));
    let challenge = |error: &'static str, nonce: Option<String>| OAuthError::DpopChallenge { error, nonce };
    let (token, proof) = if scheme.eq_ignore_ascii_case("dpop") && !token.is_empty() {
        match check(st, headers, method, path, Some(token), false).await {
            Ok(Some(p)) => (token, Some(p)),
            Ok(None) => return Err(challenge("invalid_dpop_proof", None)),
            Err(Refusal::Proof(_)) => return Err(challenge("invalid_dpop_proof", None)),
            Err(Refusal::Nonce(n)) => return Err(challenge("use_dpop_nonce", Some(n))),
            Err(Refusal::Store(e)) => return Err(e.into()),
        }
    } else {
        match edulink_web::api::parse_bearer(value) {
            Some(t) => (t, None),
            None => return Ok(None),
        }
    };
    let row = store::live_token(&st.db, &sha256_b64(token), st.now()).await?.filter(|r| r.kind == "access");
    let Some(row) = row else {
        // Presented as DPoP, refused as DPoP (§7.1): the client learns which scheme it used.
        return if proof.is_some() { Err(challenge("invalid_token", None)) } else { Ok(None) };
    };
    match (&row.jkt, &proof) {
        (None, None) => {}
        (Some(bound), Some(p)) if ct_eq(bound.as_bytes(), p.jkt.as_bytes()) => {}
        // A bound token as Bearer (a stolen token, §7.2), or a proof by another key.
        (Some(_), _) => return Err(challenge("invalid_token", None)),
        // An unbound token with a proof: DPoP adds nothing it could check, the token is a bearer token.
        (None, Some(_)) => {}
    }
    Ok(Some(AccessToken {
        client_id: row.client_id,
        grant_id: row.grant_id,
        account_id: row.account_id,
        scope: parse_scope(&row.scope),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::token::testing::Fixture;

    /// RFC 9449 §8: our nonces verify for [`NONCE_TTL`] seconds, and a forged or altered one never.
    #[tokio::test]
    async fn server_nonces_are_ours_and_expire() {
        let f = Fixture::new().await;
        let n = new_nonce(&f.st);
        assert!(nonce_is_valid(&f.st, &n));
        let mut raw = B64.decode(&n).unwrap();
        raw[23] ^= 1;
        assert!(!nonce_is_valid(&f.st, &B64.encode(&raw)), "altered MAC");
        raw[23] ^= 1;
        raw[7] ^= 1;
        assert!(!nonce_is_valid(&f.st, &B64.encode(&raw)), "altered time");
        assert!(!nonce_is_valid(&f.st, "bm90LW91cnM"));
        f.clock.advance(NONCE_TTL);
        assert!(nonce_is_valid(&f.st, &n));
        f.clock.advance(1);
        assert!(!nonce_is_valid(&f.st, &n), "expired");
    }

    #[test]
    fn a_code_bound_to_a_key_needs_a_proof_by_that_key() {
        assert!(code_key_matches(None, None));
        assert!(code_key_matches(None, Some("k")));
        assert!(code_key_matches(Some("k"), Some("k")));
        assert!(!code_key_matches(Some("k"), Some("j")));
        assert!(!code_key_matches(Some("k"), None));
    }
}
