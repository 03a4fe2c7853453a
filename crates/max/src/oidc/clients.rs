//! Registered clients and client authentication at the back channel (RFC 6749 §2.1 client types,
//! §2.3.1 `client_secret_basic` / `client_secret_post`, §3.2.1; public clients authenticate by PKCE
//! alone, RFC 8252 §8.4). A rotated secret keeps the previous one valid for a grace period, so the
//! client can be redeployed with the new one without an outage.

use super::error::OAuthError;
use crate::MaxState;
use crate::repo::clients as store;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use edulink_domain::crypto::{ct_eq, random_token, sha256_b64};
use edulink_store::{Db, StoreError};
use edulink_web::forms::parse_strict;
use serde::Deserialize;

pub use crate::repo::clients::upsert_client;

/// How long a rotated-out secret stays valid by default (`max.client_secret_grace_secs`): a day to
/// redeploy the client with the new one.
pub const CLIENT_SECRET_GRACE_DEFAULT: i64 = 86_400;
/// The longest grace period accepted (30 days): a leaked secret must stop working some day.
pub const CLIENT_SECRET_GRACE_MAX: i64 = 30 * 86_400;

/// A client's previous secret after a rotation, valid until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousSecret {
    /// SHA-256 of the previous secret.
    pub hash: String,
    /// Unix seconds; from then on only the current secret authenticates.
    pub expires_at: i64,
}

/// A registered client.
#[derive(Debug, Clone)]
pub struct Client {
    /// `client_id`.
    pub client_id: String,
    /// Display name («МЭШ»).
    pub name: String,
    /// SHA-256 of the secret; `None` for public clients (mobile apps, PKCE only).
    pub secret_hash: Option<String>,
    /// Registered redirect URIs, matched exactly.
    pub redirect_uris: Vec<String>,
    /// ID token algorithm.
    pub id_token_alg: String,
    /// Sector for pairwise subjects.
    pub sector: String,
    /// Scopes the client may ask for.
    pub scopes: Vec<String>,
    /// What it must do beyond PKCE: DPoP, PAR (issue 16, item 10).
    pub policy: ClientPolicy,
}

/// A client's sender-constraining and request-pushing duties (client metadata of RFC 9449 §5.2
/// and RFC 9126 §6). The diary's public apps have both ([`ClientPolicy::APP`]): a public client's
/// identity cannot be assured (RFC 8252 §8.6), so its tokens and code must be useless elsewhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientPolicy {
    /// `dpop_bound_access_tokens`: every token request carries a DPoP proof, and the
    /// authorization request names the key (`dpop_jkt`, or a proof at the PAR endpoint).
    pub dpop_bound_access_tokens: bool,
    /// `require_pushed_authorization_requests`: `/oauth/authorize` takes only a `request_uri`.
    pub require_pushed_authorization_requests: bool,
}

impl ClientPolicy {
    /// The diary's apps: DPoP and PAR required.
    pub const APP: ClientPolicy =
        ClientPolicy { dpop_bound_access_tokens: true, require_pushed_authorization_requests: true };
}

impl Client {
    /// A confidential client (it has a secret, RFC 6749 §2.1).
    pub fn is_confidential(&self) -> bool {
        self.secret_hash.is_some()
    }
}

/// How long a cached client registration is trusted. Registrations change rarely (`max client add`,
/// configuration at start, `max client rotate-secret`); a change made by another process reaches this
/// one within this time. A secret that does not match the cached registration is checked against the
/// database before it is refused, so a new secret authenticates at once on every instance.
pub const CLIENT_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// A client and its previous secret, if one is kept.
pub type Registration = (Client, Option<PreviousSecret>);

/// Client registrations read by this instance: a flow reads its client four or five times.
#[derive(Debug, Default)]
pub struct ClientCache {
    map: std::sync::Mutex<std::collections::HashMap<String, (Registration, std::time::Instant)>>,
}

impl ClientCache {
    fn get(&self, id: &str) -> Option<Registration> {
        let map = self.map.lock().expect("client cache");
        map.get(id).filter(|(_, at)| at.elapsed() < CLIENT_CACHE_TTL).map(|(r, _)| r.clone())
    }

    fn put(&self, r: &Registration) {
        let mut map = self.map.lock().expect("client cache");
        // Bounded by the number of registered clients: unknown ids are never cached.
        map.insert(r.0.client_id.clone(), (r.clone(), std::time::Instant::now()));
    }

    /// Forgets a client (after this instance changed it).
    pub fn forget(&self, id: &str) {
        self.map.lock().expect("client cache").remove(id);
    }
}

/// Looks a client up through this instance's cache (see [`CLIENT_CACHE_TTL`]).
pub async fn cached_client(st: &MaxState, client_id: &str) -> Result<Option<Client>, StoreError> {
    Ok(cached_registration(st, client_id, false).await?.map(|(c, _)| c))
}

/// A client with its previous secret, from the cache unless `fresh`.
async fn cached_registration(st: &MaxState, client_id: &str, fresh: bool) -> Result<Option<Registration>, StoreError> {
    if !fresh && let Some(r) = st.clients.get(client_id) {
        return Ok(Some(r));
    }
    let found = store::registration(&st.db, client_id).await?;
    if let Some(r) = &found {
        st.clients.put(r);
    }
    Ok(found)
}

/// Makes a new secret for a confidential client and keeps the current one valid for `grace`
/// seconds (`edulink max client rotate-secret`). Returns the new secret (shown once; only its hash
/// is stored), or `None` when there is no such confidential client.
pub async fn rotate_secret(db: &Db, client_id: &str, now: i64, grace: i64) -> Result<Option<String>, StoreError> {
    let secret = random_token(32);
    let rotated = store::rotate_secret(db, client_id, &sha256_b64(&secret), now + grace).await?;
    Ok(rotated.then_some(secret))
}

/// Which of a client's secrets a presented secret is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretMatch {
    /// The current secret.
    Current,
    /// The previous secret, within its grace period.
    Previous,
    /// Neither.
    No,
}

/// Checks `secret` against the current secret and, until it expires, the previous one (constant
/// time comparisons of the hashes).
pub fn match_secret(reg: &Registration, secret: &str, now: i64) -> SecretMatch {
    let presented = sha256_b64(secret);
    let (client, previous) = reg;
    if client.secret_hash.as_ref().is_some_and(|h| ct_eq(presented.as_bytes(), h.as_bytes())) {
        return SecretMatch::Current;
    }
    match previous {
        Some(p) if now < p.expires_at && ct_eq(presented.as_bytes(), p.hash.as_bytes()) => SecretMatch::Previous,
        _ => SecretMatch::No,
    }
}

/// Looks a client up.
pub async fn client(db: &Db, client_id: &str) -> Result<Option<Client>, StoreError> {
    store::client(db, client_id).await
}

/// `client_id:client_secret` of an `Authorization: Basic` header, each form-urlencoded
/// (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?;
    let raw = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = raw.split_once(':')?;
    let dec = |x: &str| url::form_urlencoded::parse(format!("a={x}").as_bytes()).next().map(|(_, v)| v.into_owned());
    Some((dec(id)?, dec(secret)?))
}

/// Authenticates the calling client (HTTP Basic or form parameters). Public clients (no secret) are
/// identified by `client_id` only and may use just the code and refresh grants.
pub(crate) async fn authenticate(st: &MaxState, headers: &HeaderMap, p: &TokenParams) -> Result<Client, OAuthError> {
    let basic = basic_credentials(headers);
    if basic.is_some() && (p.client_id.is_some() && p.client_secret.is_some()) {
        return Err(OAuthError::InvalidRequest("use one client authentication method"));
    }
    let (id, secret) = match basic {
        Some((id, secret)) => (id, Some(secret)),
        None => match &p.client_id {
            Some(id) => (id.clone(), p.client_secret.clone()),
            None => return Err(OAuthError::InvalidClient("client authentication required")),
        },
    };
    let failed = || OAuthError::InvalidClient("client authentication failed");
    let reg = cached_registration(st, &id, false).await?.ok_or_else(failed)?;
    let Some(secret) = secret else {
        return if reg.0.is_confidential() { Err(failed()) } else { Ok(reg.0) };
    };
    if !reg.0.is_confidential() {
        return Err(failed());
    }
    let now = st.now();
    let mut found = match_secret(&reg, &secret, now);
    let mut client = reg.0;
    if found == SecretMatch::No {
        // Perhaps rotated by another process since this instance cached the client.
        let reg = cached_registration(st, &id, true).await?.ok_or_else(failed)?;
        found = match_secret(&reg, &secret, now);
        client = reg.0;
    }
    match found {
        SecretMatch::Current => Ok(client),
        SecretMatch::Previous => {
            metrics::counter!("edulink_client_previous_secret_total").increment(1);
            Ok(client)
        }
        SecretMatch::No => Err(failed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6749 §2.3.1 with a rotation overlap: the previous secret authenticates until its expiry,
    /// the current one always, anything else never.
    #[test]
    fn a_previous_secret_authenticates_until_it_expires() {
        let client = |hash: &str| Client {
            client_id: "c".into(),
            name: "C".into(),
            secret_hash: Some(sha256_b64(hash)),
            redirect_uris: vec![],
            id_token_alg: "EdDSA".into(),
            sector: "c".into(),
            scopes: vec![],
            policy: ClientPolicy::default(),
        };
        let reg = (client("new"), Some(PreviousSecret { hash: sha256_b64("old"), expires_at: 100 }));
        assert_eq!(match_secret(&reg, "new", 50), SecretMatch::Current);
        assert_eq!(match_secret(&reg, "old", 99), SecretMatch::Previous);
        assert_eq!(match_secret(&reg, "old", 100), SecretMatch::No);
        assert_eq!(match_secret(&reg, "other", 50), SecretMatch::No);
        assert_eq!(match_secret(&(client("new"), None), "old", 0), SecretMatch::No);
    }
}

/// The form parameters of the token and revocation endpoints.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenParams {
    pub(crate) grant_type: Option<String>,
    pub(crate) code: Option<String>,
    pub(crate) redirect_uri: Option<String>,
    pub(crate) code_verifier: Option<String>,
    pub(crate) refresh_token: Option<String>,
    pub(crate) scope: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) token_type_hint: Option<String>,
}

impl TokenParams {
    /// Parses a form body, refusing malformed or repeated parameters.
    pub(crate) fn parse(body: &str) -> Result<Self, OAuthError> {
        parse_strict(body).map_err(|_| OAuthError::InvalidRequest("malformed or repeated parameters"))
    }
}

/// A back-channel request of an authenticated client (token and revocation endpoints): its form
/// parameters, each at most once (RFC 6749 §3.2), and the client (RFC 6749 §2.3.1, §3.2.1).
pub struct ClientRequest {
    pub(crate) client: Client,
    pub(crate) params: TokenParams,
}

impl FromRequest<MaxState> for ClientRequest {
    type Rejection = Response;

    async fn from_request(req: Request, st: &MaxState) -> Result<Self, Response> {
        let headers = req.headers().clone();
        let body = String::from_request(req, st).await.map_err(IntoResponse::into_response)?;
        let params = TokenParams::parse(&body).map_err(IntoResponse::into_response)?;
        let client = authenticate(st, &headers, &params).await.map_err(IntoResponse::into_response)?;
        Ok(ClientRequest { client, params })
    }
}
