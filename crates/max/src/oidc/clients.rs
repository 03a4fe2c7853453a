//! Registered clients and client authentication at the back channel (RFC 6749 §2.1 client types,
//! §2.3.1 `client_secret_basic` / `client_secret_post`, §3.2.1; public clients authenticate by PKCE
//! alone, RFC 8252 §8.4).

use super::error::OAuthError;
use super::token::TokenParams;
use crate::MaxState;
use crate::repo::clients as store;
use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use edulink_domain::crypto::{ct_eq, sha256_b64};
use edulink_store::{Db, StoreError};

pub use crate::repo::clients::upsert_client;

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
}

impl Client {
    /// A confidential client (it has a secret, RFC 6749 §2.1).
    pub fn is_confidential(&self) -> bool {
        self.secret_hash.is_some()
    }
}

/// How long a cached client registration is trusted. Registrations change rarely (`max client add`,
/// configuration at start); a change made by another process reaches this one within this time.
pub const CLIENT_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Client registrations read by this instance: a flow reads its client four or five times.
#[derive(Debug, Default)]
pub struct ClientCache {
    map: std::sync::Mutex<std::collections::HashMap<String, (Client, std::time::Instant)>>,
}

impl ClientCache {
    fn get(&self, id: &str) -> Option<Client> {
        let map = self.map.lock().expect("client cache");
        map.get(id).filter(|(_, at)| at.elapsed() < CLIENT_CACHE_TTL).map(|(c, _)| c.clone())
    }

    fn put(&self, c: &Client) {
        let mut map = self.map.lock().expect("client cache");
        // Bounded by the number of registered clients: unknown ids are never cached.
        map.insert(c.client_id.clone(), (c.clone(), std::time::Instant::now()));
    }

    /// Forgets a client (after this instance changed it).
    pub fn forget(&self, id: &str) {
        self.map.lock().expect("client cache").remove(id);
    }
}

/// Looks a client up through this instance's cache (see [`CLIENT_CACHE_TTL`]).
pub async fn cached_client(st: &MaxState, client_id: &str) -> Result<Option<Client>, StoreError> {
    if let Some(c) = st.clients.get(client_id) {
        return Ok(Some(c));
    }
    let found = client(&st.db, client_id).await?;
    if let Some(c) = &found {
        st.clients.put(c);
    }
    Ok(found)
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
    let failed = OAuthError::InvalidClient("client authentication failed");
    let client = cached_client(st, &id).await?.ok_or(failed)?;
    match (&client.secret_hash, secret) {
        (Some(hash), Some(secret)) if ct_eq(sha256_b64(&secret).as_bytes(), hash.as_bytes()) => Ok(client),
        (None, None) => Ok(client),
        _ => Err(OAuthError::InvalidClient("client authentication failed")),
    }
}
