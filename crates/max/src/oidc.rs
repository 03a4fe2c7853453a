//! The OpenID Connect provider: discovery, JWKS, authorize, token, userinfo, revocation.
//!
//! Rules (RFC 6749, RFC 7636, RFC 7009, RFC 9207, RFC 9700, OIDC Core): `response_type=code` only;
//! PKCE S256 required; redirect URIs match exactly and a bad one is never redirected to; codes are
//! single-use, live 60 s, are bound to client, redirect URI and PKCE verifier, and a replay revokes
//! what the code issued; refresh tokens rotate and a reused one revokes its family; subjects are
//! pairwise per client sector; the authorization response carries `iss`.

use crate::login::{self, CsrfForm, check_csrf, current};
use crate::repo::{self, Session};
use crate::views::{ConfirmPage, MismatchPage};
use crate::{MaxState, audit};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use edulink_domain::crypto::{ct_eq, new_id, random_token, sha256_b64};
use edulink_domain::oauth::{
    KNOWN_SCOPES, is_opaque_param, is_pkce_value, parse_scope, pkce_verify, redirect_uri_matches,
};
use edulink_store::{Db, Row, StoreError, sqlx};
use edulink_web::forms::parse_strict;
use edulink_web::{AppError, ClientIp, Lang, StrictForm, StrictQuery, Tr, html, see_other};
use serde::Deserialize;
use serde_json::json;

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

/// Registers or replaces a client. Returns nothing; the secret is chosen by the caller.
pub async fn upsert_client(db: &Db, c: &Client, now: i64) -> Result<(), StoreError> {
    db.execute(sqlx::query(
        "INSERT INTO clients (client_id, name, secret_hash, redirect_uris, id_token_alg, sector, scopes, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (client_id) DO UPDATE SET name = excluded.name, secret_hash = excluded.secret_hash, \
           redirect_uris = excluded.redirect_uris, id_token_alg = excluded.id_token_alg, sector = excluded.sector, \
           scopes = excluded.scopes",
    )
    .bind(&c.client_id)
    .bind(&c.name)
    .bind(&c.secret_hash)
    .bind(serde_json::to_string(&c.redirect_uris).expect("strings serialize"))
    .bind(&c.id_token_alg)
    .bind(&c.sector)
    .bind(c.scopes.join(" "))
    .bind(now))
    .await?;
    Ok(())
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
    if client_id.len() > 100 {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT client_id, name, secret_hash, redirect_uris, id_token_alg, sector, scopes FROM clients WHERE client_id = $1",
    )
    .bind(client_id)
    .fetch_optional(db.pool())
    .await?;
    row.map(|r| -> Result<Client, sqlx::Error> {
        let uris: String = r.try_get("redirect_uris")?;
        let scopes: String = r.try_get("scopes")?;
        Ok(Client {
            client_id: r.try_get("client_id")?,
            name: r.try_get("name")?,
            secret_hash: r.try_get("secret_hash")?,
            redirect_uris: serde_json::from_str(&uris).unwrap_or_default(),
            id_token_alg: r.try_get("id_token_alg")?,
            sector: r.try_get("sector")?,
            scopes: parse_scope(&scopes),
        })
    })
    .transpose()
    .map_err(Into::into)
}

/// The pairwise subject of `account_id` for a client sector (OIDC Core §8.1).
pub fn pairwise_sub(st: &MaxState, sector: &str, account_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(st.secrets.pairwise.mac(&[sector.as_bytes(), account_id.as_bytes()]))
}

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
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "name", "given_name", "family_name"],
        "prompt_values_supported": ["none", "login", "consent"],
        "authorization_response_iss_parameter_supported": true,
        "ui_locales_supported": ["ru", "en"],
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

/// Parameters of the authorization request.
#[derive(Debug, Deserialize)]
pub struct AuthorizeParams {
    response_type: Option<String>,
    /// `client_id`.
    pub client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    prompt: Option<String>,
    id_token_hint: Option<String>,
    response_mode: Option<String>,
    request: Option<String>,
    request_uri: Option<String>,
}

/// A stored authorization request, waiting for the person to sign in and confirm.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    /// Id.
    pub id: String,
    /// The client.
    pub client_id: String,
    redirect_uri: String,
    /// Granted scopes.
    pub scope: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: String,
    /// The account the client expects (from `id_token_hint`).
    pub hint_account_id: Option<String>,
    consent: bool,
    /// Kept in `auth_requests` (the sign-in pages in between); a request answered at once never is.
    stored: bool,
}

/// Authorization requests expire after this long.
const REQUEST_TTL: i64 = 600;
/// Authorization codes live this long (DESIGN.md §4).
pub const CODE_TTL: i64 = 60;

fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let mut url = match url::Url::parse(redirect_uri) {
        Ok(u) => u,
        Err(_) => return AppError::bad_request("error-oauth-redirect").into_response(),
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    see_other(url.as_str())
}

fn error_redirect(st: &MaxState, redirect_uri: &str, state: Option<&str>, error: &str, description: &str) -> Response {
    let mut p = vec![("error", error), ("error_description", description)];
    if let Some(s) = state {
        p.push(("state", s));
    }
    p.push(("iss", &st.cfg.issuer));
    redirect_with(redirect_uri, &p)
}

/// Why an authorization request was refused.
#[derive(Debug)]
pub enum RequestError {
    /// Client or redirect URI unknown: shown to the person, never redirected (RFC 9700 §4.1).
    NoRedirect(AppError),
    /// Anything else: sent back to the (validated) redirect URI as an OAuth error.
    Redirect {
        /// The registered redirect URI.
        redirect_uri: String,
        /// The client's state.
        state: Option<String>,
        /// OAuth error code.
        error: &'static str,
        /// Human-readable description.
        description: &'static str,
    },
}

/// A validated authorization request, not stored yet.
#[derive(Debug)]
pub struct Validated {
    /// The client.
    pub client: Client,
    /// The request.
    pub req: AuthRequest,
    /// `prompt=none`.
    pub silent: bool,
    /// `prompt=login`.
    pub force_login: bool,
}

/// Validates authorization request parameters (shared by the browser endpoint and the MAX app API).
pub async fn validate(st: &MaxState, p: &AuthorizeParams) -> Result<Validated, RequestError> {
    let store = |e: StoreError| RequestError::NoRedirect(e.into());
    // Until client and redirect URI are known good, errors are shown here and never redirected.
    let no_client = || RequestError::NoRedirect(AppError::bad_request("error-oauth-client"));
    let client_id = p.client_id.as_deref().ok_or_else(no_client)?;
    let client = cached_client(st, client_id).await.map_err(store)?.ok_or_else(no_client)?;
    let redirect_uri = p.redirect_uri.clone().unwrap_or_default();
    if !redirect_uri_matches(&client.redirect_uris, &redirect_uri) {
        metrics::counter!("edulink_oauth_redirect_mismatch_total").increment(1);
        return Err(RequestError::NoRedirect(AppError::bad_request("error-oauth-redirect")));
    }
    let state = p.state.clone().filter(|s| is_opaque_param(s, 512));
    let fail = |error: &'static str, description: &'static str| {
        Err(RequestError::Redirect { redirect_uri: redirect_uri.clone(), state: state.clone(), error, description })
    };
    if p.state.is_some() && state.is_none() {
        return fail("invalid_request", "state is malformed");
    }
    if p.request.is_some() || p.request_uri.is_some() {
        return fail("request_not_supported", "request objects are not supported");
    }
    if p.response_type.as_deref() != Some("code") {
        return fail("unsupported_response_type", "only response_type=code is supported");
    }
    if p.response_mode.as_deref().is_some_and(|m| m != "query") {
        return fail("invalid_request", "only response_mode=query is supported");
    }
    let scopes = parse_scope(p.scope.as_deref().unwrap_or(""));
    if !scopes.iter().any(|s| s == "openid") {
        return fail("invalid_scope", "the openid scope is required");
    }
    if scopes.iter().any(|s| !client.scopes.contains(s) || s == "sferum.provision") {
        return fail("invalid_scope", "a requested scope is not allowed for this client");
    }
    let challenge = p.code_challenge.as_deref().unwrap_or("");
    if p.code_challenge_method.as_deref() != Some("S256") || !is_pkce_value(challenge) {
        return fail("invalid_request", "PKCE with code_challenge_method=S256 is required");
    }
    if p.nonce.as_deref().is_some_and(|n| !is_opaque_param(n, 512)) {
        return fail("invalid_request", "nonce is malformed");
    }
    let prompts: Vec<&str> = p.prompt.as_deref().unwrap_or("").split(' ').filter(|x| !x.is_empty()).collect();
    if prompts.iter().any(|x| !matches!(*x, "none" | "login" | "consent"))
        || (prompts.contains(&"none") && prompts.len() > 1)
    {
        return fail("invalid_request", "unsupported prompt value");
    }
    let hint_account_id = match p.id_token_hint.as_deref() {
        None => None,
        Some(hint) => match hinted_account(st, &client, hint).await.map_err(RequestError::NoRedirect)? {
            Some(a) => Some(a),
            None => return fail("invalid_request", "id_token_hint is not valid for this client"),
        },
    };
    let req = AuthRequest {
        id: new_id(),
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        scope: scopes.join(" "),
        state: p.state.clone(),
        nonce: p.nonce.clone(),
        code_challenge: challenge.to_string(),
        hint_account_id,
        consent: prompts.contains(&"consent"),
        stored: false,
    };
    Ok(Validated { client, req, silent: prompts.contains(&"none"), force_login: prompts.contains(&"login") })
}

/// `GET /oauth/authorize`.
pub async fn authorize(
    State(st): State<MaxState>,
    headers: HeaderMap,
    StrictQuery(p): StrictQuery<AuthorizeParams>,
) -> Result<Response, AppError> {
    let Validated { client, req, silent, force_login } = match validate(&st, &p).await {
        Ok(v) => v,
        Err(RequestError::NoRedirect(e)) => return Err(e),
        Err(RequestError::Redirect { redirect_uri, state, error, description }) => {
            return Ok(error_redirect(&st, &redirect_uri, state.as_deref(), error, description));
        }
    };
    let now = st.now();
    let redirect_uri = req.redirect_uri.clone();
    let state = req.state.clone();
    let fail = |e: &str, d: &str| Ok(error_redirect(&st, &redirect_uri, state.as_deref(), e, d));
    let session = current(&st, &headers).await?;

    if silent {
        // Silent: never shows a page, and so never creates a first grant (a first link).
        let Some(account_id) = session.as_ref().and_then(|s| s.account_id.clone()) else {
            return fail("login_required", "no MAX session");
        };
        if req.hint_account_id.as_ref().is_some_and(|h| *h != account_id) {
            return fail("login_required", "signed in as another account");
        }
        if !has_grant_in_sector(&st.db, &client.sector, &account_id).await? {
            return fail("consent_required", "no grant for this client");
        }
        let url = issue_code(&st, &req, &account_id, None).await?;
        return Ok(see_other(&url));
    }

    // Signing in again where consent was given before (the «Сферум» button of a linked student):
    // the code goes straight back, with no page and nothing stored in between.
    if let Some(account_id) = session.as_ref().and_then(|s| s.account_id.clone())
        && !force_login
        && !req.consent
        && req.hint_account_id.as_ref().is_none_or(|h| *h == account_id)
        && has_grant_in_sector(&st.db, &client.sector, &account_id).await?
    {
        let url = issue_code(&st, &req, &account_id, None).await?;
        return Ok(see_other(&url));
    }

    // The request and the session that carries it through sign-in: one transaction.
    let mut tx = st.db.begin().await?;
    store_request(&mut tx, &req, now).await?;
    let (cookie, target) = match session {
        Some(s) if s.account_id.is_some() && !force_login => {
            repo::set_pending_request(&mut tx, &s.id_hash, Some(&req.id)).await?;
            (None, "/authorize/continue")
        }
        other => {
            if let Some(s) = other {
                sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
                    .bind(&s.id_hash)
                    .execute(&mut tx)
                    .await
                    .map_err(StoreError::from)?;
            }
            let (raw, _) = repo::create_session_in(&mut tx, now, Some(&req.id)).await?;
            (Some(st.cookies.set(login::SESSION_COOKIE, &raw, None)), "/login")
        }
    };
    tx.commit().await?;
    let mut resp = see_other(target);
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(resp)
}

async fn hinted_account(st: &MaxState, client: &Client, hint: &str) -> Result<Option<String>, AppError> {
    let Some(claims) = st.keys.verify_own(hint) else { return Ok(None) };
    if claims["iss"].as_str() != Some(&st.cfg.issuer) {
        return Ok(None);
    }
    let auds: Vec<&str> = match &claims["aud"] {
        serde_json::Value::String(a) => vec![a.as_str()],
        serde_json::Value::Array(v) => v.iter().filter_map(|a| a.as_str()).collect(),
        _ => vec![],
    };
    let Some(sub) = claims["sub"].as_str() else { return Ok(None) };
    // The hint may come from another client of the same sector (the diary's app made the link, the
    // diary's web signs in): the subject is the same there, and only there.
    for aud in auds {
        let account: Option<String> = sqlx::query_scalar(
            "SELECT g.account_id FROM grants g JOIN clients c ON c.client_id = g.client_id \
             WHERE g.client_id = $1 AND g.subject = $2 AND c.sector = $3",
        )
        .bind(aud)
        .bind(sub)
        .bind(&client.sector)
        .fetch_optional(st.db.pool())
        .await
        .map_err(StoreError::from)?;
        if account.is_some() {
            return Ok(account);
        }
    }
    Ok(None)
}

/// Stores a validated request until the person confirms it.
pub async fn store_request(tx: &mut edulink_store::Tx, r: &AuthRequest, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO auth_requests (id, client_id, redirect_uri, scope, state, nonce, code_challenge, hint_account_id, \
           prompt_none, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&r.id)
    .bind(&r.client_id)
    .bind(&r.redirect_uri)
    .bind(&r.scope)
    .bind(&r.state)
    .bind(&r.nonce)
    .bind(&r.code_challenge)
    .bind(&r.hint_account_id)
    .bind(i64::from(r.consent))
    .bind(now)
    .bind(now + REQUEST_TTL)
    .execute(tx)
    .await?;
    Ok(())
}

/// Loads a live stored request.
pub async fn load_request(db: &Db, id: &str, now: i64) -> Result<Option<AuthRequest>, StoreError> {
    let row = sqlx::query(
        "SELECT id, client_id, redirect_uri, scope, state, nonce, code_challenge, hint_account_id, prompt_none \
         FROM auth_requests WHERE id = $1 AND expires_at > $2",
    )
    .bind(id)
    .bind(now)
    .fetch_optional(db.pool())
    .await?;
    row.map(|r| -> Result<AuthRequest, sqlx::Error> {
        Ok(AuthRequest {
            id: r.try_get("id")?,
            client_id: r.try_get("client_id")?,
            redirect_uri: r.try_get("redirect_uri")?,
            scope: r.try_get("scope")?,
            state: r.try_get("state")?,
            nonce: r.try_get("nonce")?,
            code_challenge: r.try_get("code_challenge")?,
            hint_account_id: r.try_get("hint_account_id")?,
            consent: r.try_get::<i64, _>("prompt_none")? != 0,
            stored: true,
        })
    })
    .transpose()
    .map_err(Into::into)
}

/// Grants of account `$2` to clients of sector `$1`, counted (one per sign-in: indexed by account).
pub(crate) const GRANTS_IN_SECTOR_OF_ACCOUNT: &str = "SELECT COUNT(*) FROM grants g JOIN clients c ON c.client_id = g.client_id WHERE c.sector = $1 AND g.account_id = $2";

/// Whether the account has granted any client of `sector` (a diary's web client and its apps share a
/// sector: consent given in one is consent for the diary).
pub async fn has_grant_in_sector(db: &Db, sector: &str, account_id: &str) -> Result<bool, StoreError> {
    let n: i64 =
        sqlx::query_scalar(GRANTS_IN_SECTOR_OF_ACCOUNT).bind(sector).bind(account_id).fetch_one(db.pool()).await?;
    Ok(n > 0)
}

/// The grant `(id, subject)` of an account for a client.
pub async fn grant_of(db: &Db, client_id: &str, account_id: &str) -> Result<Option<(String, String)>, StoreError> {
    Ok(sqlx::query_as("SELECT id, subject FROM grants WHERE client_id = $1 AND account_id = $2")
        .bind(client_id)
        .bind(account_id)
        .fetch_optional(db.pool())
        .await?)
}

/// Creates the grant if needed, stores a fresh code, consumes the request (and clears it from the
/// browser session `session_hash` that carried it), and returns the URL of the authorization response.
pub async fn issue_code(
    st: &MaxState,
    req: &AuthRequest,
    account_id: &str,
    session_hash: Option<&str>,
) -> Result<String, AppError> {
    issue_code_audited(st, req, account_id, session_hash, None).await
}

/// The consent behind an issued code, audited in the transaction that issues it.
#[derive(Debug, Clone, Copy)]
pub struct Consent<'a> {
    /// Client IP.
    pub ip: &'a str,
    /// Where it was given (`None` for the web, `Some("app")` for the MAX app).
    pub detail: Option<&'a str>,
}

/// [`issue_code`] with an `authorize` audit record committed together with the code.
pub async fn issue_code_audited(
    st: &MaxState,
    req: &AuthRequest,
    account_id: &str,
    session_hash: Option<&str>,
    consent: Option<Consent<'_>>,
) -> Result<String, AppError> {
    let now = st.now();
    let client = cached_client(st, &req.client_id).await?.ok_or_else(|| AppError::bad_request("error-oauth-client"))?;
    let subject = pairwise_sub(st, &client.sector, account_id);
    let code = random_token(32);
    // One transaction, one commit: the grant, the code, and the request it consumes.
    let mut tx = st.db.begin().await?;
    let grant_id: String = sqlx::query_scalar(
        "INSERT INTO grants (id, client_id, account_id, subject, scope, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (client_id, account_id) DO UPDATE SET scope = excluded.scope RETURNING id",
    )
    .bind(new_id())
    .bind(&req.client_id)
    .bind(account_id)
    .bind(&subject)
    .bind(&req.scope)
    .bind(now)
    .fetch_one(&mut tx)
    .await
    .map_err(StoreError::from)?;
    sqlx::query(
        "INSERT INTO auth_codes (code_hash, grant_id, client_id, account_id, redirect_uri, code_challenge, nonce, scope, \
           auth_time, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(sha256_b64(&code))
    .bind(&grant_id)
    .bind(&req.client_id)
    .bind(account_id)
    .bind(&req.redirect_uri)
    .bind(&req.code_challenge)
    .bind(&req.nonce)
    .bind(&req.scope)
    .bind(now)
    .bind(now)
    .bind(now + CODE_TTL)
    .execute(&mut tx)
    .await
    .map_err(StoreError::from)?;
    if req.stored {
        sqlx::query("DELETE FROM auth_requests WHERE id = $1")
            .bind(&req.id)
            .execute(&mut tx)
            .await
            .map_err(StoreError::from)?;
    }
    if let Some(hash) = session_hash {
        repo::set_pending_request(&mut tx, hash, None).await?;
    }
    if let Some(c) = consent {
        audit::record_in(&mut tx, now, "authorize", Some(account_id), Some(&req.client_id), Some(c.ip), c.detail)
            .await?;
    }
    tx.commit().await?;
    let mut url = url::Url::parse(&req.redirect_uri).map_err(|_| AppError::bad_request("error-oauth-redirect"))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("code", &code);
        if let Some(s) = &req.state {
            q.append_pair("state", s);
        }
        q.append_pair("iss", &st.cfg.issuer);
    }
    Ok(url.to_string())
}

async fn pending(st: &MaxState, headers: &HeaderMap) -> Result<Option<(Session, AuthRequest)>, AppError> {
    let Some(session) = current(st, headers).await? else {
        return Ok(None);
    };
    let Some(id) = session.pending_request.clone() else {
        return Ok(None);
    };
    match load_request(&st.db, &id, st.now()).await? {
        Some(r) => Ok(Some((session, r))),
        None => Ok(None),
    }
}

/// `GET /authorize/continue`: after sign-in, decide: the wrong account is signed in (offer to
/// switch), a confirmation is needed (first link, or the client asked for consent), or SSO
/// completes at once.
pub async fn continue_authorization(State(st): State<MaxState>, headers: HeaderMap) -> Result<Response, AppError> {
    let Some((session, req)) = pending(&st, &headers).await? else {
        return Err(AppError::bad_request("error-oauth-request-expired"));
    };
    let Some(account_id) = session.account_id.clone() else {
        return Ok(see_other("/login"));
    };
    let account = repo::account(&st.db, &account_id).await?.ok_or_else(|| AppError::internal("account vanished"))?;
    let client =
        cached_client(&st, &req.client_id).await?.ok_or_else(|| AppError::bad_request("error-oauth-client"))?;
    let tr = Tr::new(Lang::from_headers(&headers));
    if req.hint_account_id.as_ref().is_some_and(|h| *h != account_id) {
        return Ok(html(&MismatchPage {
            tr,
            csrf: session.csrf.clone(),
            masked: crate::views::masked_phone(&st, &account.phone_enc),
            client_name: client.name,
        }));
    }
    let has_grant = has_grant_in_sector(&st.db, &client.sector, &account_id).await?;
    if has_grant && !req.consent {
        let url = issue_code(&st, &req, &account_id, Some(&session.id_hash)).await?;
        return Ok(see_other(&url));
    }
    let has_profile = edulink_sferum::has_profile(&st.db, &account_id).await?;
    Ok(html(&ConfirmPage {
        tr,
        csrf: session.csrf.clone(),
        masked: crate::views::masked_phone(&st, &account.phone_enc),
        name: format!("{} {}", account.first_name, account.last_name),
        client_name: client.name,
        has_profile,
    }))
}

/// `POST /authorize/confirm`: the person confirms the account; the code goes back to the client.
pub async fn confirm(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    StrictForm(form): StrictForm<CsrfForm>,
) -> Result<Response, AppError> {
    let Some((session, req)) = pending(&st, &headers).await? else {
        return Err(AppError::bad_request("error-oauth-request-expired"));
    };
    check_csrf(&session, &form.csrf)?;
    let Some(account_id) = session.account_id.clone() else {
        return Ok(see_other("/login"));
    };
    if req.hint_account_id.as_ref().is_some_and(|h| *h != account_id) {
        return Ok(see_other("/authorize/continue"));
    }
    let ip = ip.to_string();
    let consent = Some(Consent { ip: &ip, detail: None });
    let url = issue_code_audited(&st, &req, &account_id, Some(&session.id_hash), consent).await?;
    Ok(see_other(&url))
}

/// `POST /authorize/deny`: back to the client with `access_denied`.
pub async fn deny(
    State(st): State<MaxState>,
    headers: HeaderMap,
    StrictForm(form): StrictForm<CsrfForm>,
) -> Result<Response, AppError> {
    let Some((session, req)) = pending(&st, &headers).await? else {
        return Err(AppError::bad_request("error-oauth-request-expired"));
    };
    check_csrf(&session, &form.csrf)?;
    let mut tx = st.db.begin().await?;
    repo::set_pending_request(&mut tx, &session.id_hash, None).await?;
    sqlx::query("DELETE FROM auth_requests WHERE id = $1")
        .bind(&req.id)
        .execute(&mut tx)
        .await
        .map_err(StoreError::from)?;
    tx.commit().await?;
    Ok(error_redirect(&st, &req.redirect_uri, req.state.as_deref(), "access_denied", "the user declined"))
}

/// `POST /authorize/switch`: signs out the current account, keeping the authorization request, so
/// the person can sign in as the account the diary expects.
pub async fn switch_account(
    State(st): State<MaxState>,
    headers: HeaderMap,
    StrictForm(form): StrictForm<CsrfForm>,
) -> Result<Response, AppError> {
    let Some((session, req)) = pending(&st, &headers).await? else {
        return Err(AppError::bad_request("error-oauth-request-expired"));
    };
    check_csrf(&session, &form.csrf)?;
    repo::delete_session(&st.db, &session.id_hash).await?;
    let (raw, _) = repo::create_session(&st.db, st.now(), Some(&req.id)).await?;
    let mut resp = see_other("/login");
    resp.headers_mut().append(header::SET_COOKIE, st.cookies.set(login::SESSION_COOKIE, &raw, None));
    Ok(resp)
}

// ---------------------------------------------------------------------------------------------
// Back channel: token, userinfo, revocation. Errors follow RFC 6749 §5.2, not the app envelope.

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut resp = (status, axum::Json(json!({ "error": error, "error_description": description }))).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"MAX\""));
    }
    resp
}

fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

#[derive(Debug, Deserialize)]
struct TokenParams {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    token: Option<String>,
    #[allow(dead_code)]
    token_type_hint: Option<String>,
}

/// Authenticates the calling client (HTTP Basic or form parameters). Public clients (no secret) are
/// identified by `client_id` only and may use just the code and refresh grants.
async fn authenticate(
    st: &MaxState,
    headers: &HeaderMap,
    p: &TokenParams,
) -> Result<Result<Client, Response>, AppError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| {
            let (id, secret) = s.split_once(':')?;
            let dec =
                |x: &str| url::form_urlencoded::parse(format!("a={x}").as_bytes()).next().map(|(_, v)| v.into_owned());
            Some((dec(id)?, dec(secret)?))
        });
    if basic.is_some() && (p.client_id.is_some() && p.client_secret.is_some()) {
        return Ok(Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "use one client authentication method",
        )));
    }
    let (id, secret) = match basic {
        Some((id, secret)) => (id, Some(secret)),
        None => match &p.client_id {
            Some(id) => (id.clone(), p.client_secret.clone()),
            None => {
                return Ok(Err(oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "client authentication required",
                )));
            }
        },
    };
    let bad = || Ok(Err(oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed")));
    let Some(client) = cached_client(st, &id).await? else {
        return bad();
    };
    match (&client.secret_hash, secret) {
        (Some(hash), Some(secret)) if ct_eq(sha256_b64(&secret).as_bytes(), hash.as_bytes()) => Ok(Ok(client)),
        (None, None) => Ok(Ok(client)),
        _ => bad(),
    }
}

/// `POST /oauth/token`.
pub async fn token(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: String,
) -> Result<Response, AppError> {
    let Ok(p) = parse_strict::<TokenParams>(&body) else {
        return Ok(oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "malformed or repeated parameters"));
    };
    let client = match authenticate(&st, &headers, &p).await? {
        Ok(c) => c,
        Err(resp) => return Ok(resp),
    };
    let ip = ip.to_string();
    match p.grant_type.as_deref() {
        Some("authorization_code") => code_grant(&st, &client, &p, &ip).await,
        Some("refresh_token") => refresh_grant(&st, &client, &p, &ip).await,
        Some("client_credentials") if client.secret_hash.is_some() => client_credentials(&st, &client, &p).await,
        Some("client_credentials") => Ok(oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "public clients cannot use client_credentials",
        )),
        _ => Ok(oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "supported: authorization_code, refresh_token, client_credentials",
        )),
    }
}

struct Issued {
    access: String,
    refresh: Option<String>,
}

#[allow(clippy::too_many_arguments)]
async fn store_tokens(
    st: &MaxState,
    tx: &mut edulink_store::Tx,
    client_id: &str,
    grant_id: Option<&str>,
    account_id: Option<&str>,
    code_hash: Option<&str>,
    scope: &str,
    with_refresh: bool,
) -> Result<Issued, StoreError> {
    let now = st.now();
    let access = random_token(32);
    let refresh = with_refresh.then(|| random_token(32));
    for (kind, tok, ttl) in
        [("access", Some(&access), st.cfg.access_token_ttl), ("refresh", refresh.as_ref(), st.cfg.refresh_token_ttl)]
    {
        let Some(tok) = tok else { continue };
        sqlx::query(
            "INSERT INTO tokens (token_hash, kind, client_id, grant_id, account_id, code_hash, scope, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(sha256_b64(tok))
        .bind(kind)
        .bind(client_id)
        .bind(grant_id)
        .bind(account_id)
        .bind(code_hash)
        .bind(scope)
        .bind(now)
        .bind(now + ttl)
        .execute(&mut *tx)
        .await?;
    }
    Ok(Issued { access, refresh })
}

async fn revoke_where(db: &Db, column: &'static str, value: &str, now: i64) -> Result<u64, StoreError> {
    let sql = match column {
        "code_hash" => "UPDATE tokens SET revoked_at = $1 WHERE code_hash = $2 AND revoked_at IS NULL",
        _ => "UPDATE tokens SET revoked_at = $1 WHERE grant_id = $2 AND revoked_at IS NULL",
    };
    Ok(db.execute(sqlx::query(sql).bind(now).bind(value)).await?.rows_affected())
}

/// Revokes every token issued under a grant (unlink, refresh-token reuse, RFC 7009 on a refresh token).
pub async fn revoke_grant_tokens(db: &Db, grant_id: &str, now: i64) -> Result<u64, StoreError> {
    revoke_where(db, "grant_id", grant_id, now).await
}

fn token_response(body: serde_json::Value) -> Response {
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn code_grant(st: &MaxState, client: &Client, p: &TokenParams, ip: &str) -> Result<Response, AppError> {
    let now = st.now();
    let (Some(code), Some(redirect_uri), Some(verifier)) = (&p.code, &p.redirect_uri, &p.code_verifier) else {
        return Ok(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "code, redirect_uri and code_verifier are required",
        ));
    };
    let code_hash = sha256_b64(code);
    // Claiming the code and storing what it issues commit together: a replay racing this request
    // either finds the code unclaimed (and loses the claim) or finds the tokens to revoke.
    let mut tx = st.db.begin().await?;
    let row = sqlx::query(
        "UPDATE auth_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL \
         RETURNING grant_id, client_id, account_id, redirect_uri, code_challenge, nonce, scope, auth_time, expires_at",
    )
    .bind(&code_hash)
    .bind(now)
    .fetch_optional(&mut tx)
    .await
    .map_err(StoreError::from)?;
    let Some(row) = row else {
        tx.rollback().await?;
        let exists: Option<String> = sqlx::query_scalar("SELECT client_id FROM auth_codes WHERE code_hash = $1")
            .bind(&code_hash)
            .fetch_optional(st.db.pool())
            .await
            .map_err(StoreError::from)?;
        if exists.is_some() {
            // A replay: somebody holds a code that was already redeemed. Revoke what it issued.
            let n = revoke_where(&st.db, "code_hash", &code_hash, now).await?;
            metrics::counter!("edulink_oauth_code_replay_total").increment(1);
            audit::record(
                &st.db,
                now,
                "code_replay",
                None,
                Some(&client.client_id),
                Some(ip),
                Some(&format!("revoked={n}")),
            )
            .await;
        }
        return Ok(invalid_grant("the code is invalid, expired or already used"));
    };
    let get = |c: &str| row.try_get::<String, _>(c).map_err(|e| AppError::internal(e.to_string()));
    let grant_id = get("grant_id")?;
    let account_id = get("account_id")?;
    let nonce: Option<String> = row.try_get("nonce").map_err(|e| AppError::internal(e.to_string()))?;
    let auth_time: i64 = row.try_get("auth_time").map_err(|e| AppError::internal(e.to_string()))?;
    let expires_at: i64 = row.try_get("expires_at").map_err(|e| AppError::internal(e.to_string()))?;
    let scope = get("scope")?;
    if get("client_id")? != client.client_id
        || !ct_eq(get("redirect_uri")?.as_bytes(), redirect_uri.as_bytes())
        || expires_at <= now
        || !pkce_verify(verifier, &get("code_challenge")?)
    {
        // The code is burnt all the same: it was presented.
        tx.commit().await?;
        return Ok(invalid_grant("the code is invalid, expired or already used"));
    }
    let subject: Option<String> = sqlx::query_scalar("SELECT subject FROM grants WHERE id = $1")
        .bind(&grant_id)
        .fetch_optional(&mut tx)
        .await
        .map_err(StoreError::from)?;
    let Some(subject) = subject else {
        tx.commit().await?;
        return Ok(invalid_grant("the grant was revoked"));
    };
    let scopes = parse_scope(&scope);
    let issued = store_tokens(
        st,
        &mut tx,
        &client.client_id,
        Some(&grant_id),
        Some(&account_id),
        Some(&code_hash),
        &scope,
        scopes.iter().any(|s| s == "offline_access"),
    )
    .await?;
    tx.commit().await?;
    let mut claims = json!({
        "iss": st.cfg.issuer,
        "sub": subject,
        "aud": client.client_id,
        "iat": now,
        "exp": now + st.cfg.id_token_ttl,
        "auth_time": auth_time,
    });
    if let Some(n) = nonce {
        claims["nonce"] = n.into();
    }
    if scopes.iter().any(|s| s == "profile")
        && let Some(a) = repo::account(&st.db, &account_id).await?
    {
        claims["given_name"] = a.first_name.clone().into();
        claims["family_name"] = a.last_name.clone().into();
        claims["name"] = format!("{} {}", a.first_name, a.last_name).into();
    }
    let id_token = st.keys.sign(&client.id_token_alg, &claims).map_err(|e| AppError::internal(e.to_string()))?;
    metrics::counter!("edulink_oauth_tokens_issued_total", "grant" => "authorization_code").increment(1);
    let mut body = json!({
        "access_token": issued.access,
        "token_type": "Bearer",
        "expires_in": st.cfg.access_token_ttl,
        "id_token": id_token,
        "scope": scope,
    });
    if let Some(r) = issued.refresh {
        body["refresh_token"] = r.into();
    }
    Ok(token_response(body))
}

/// `(client_id, grant_id, account_id, scope, family)` of a refresh token being rotated.
type RefreshRow = (String, Option<String>, Option<String>, String, Option<String>);

async fn refresh_grant(st: &MaxState, client: &Client, p: &TokenParams, ip: &str) -> Result<Response, AppError> {
    let now = st.now();
    let Some(token) = &p.refresh_token else {
        return Ok(oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "refresh_token is required"));
    };
    let hash = sha256_b64(token);
    let row: Option<RefreshRow> = sqlx::query_as(
        "UPDATE tokens SET rotated_at = $2 WHERE token_hash = $1 AND kind = 'refresh' AND rotated_at IS NULL \
           AND revoked_at IS NULL AND expires_at > $2 RETURNING client_id, grant_id, account_id, scope, code_hash",
    )
    .bind(&hash)
    .bind(now)
    .fetch_optional(st.db.writer())
    .await
    .map_err(StoreError::from)?;
    let Some((client_id, Some(grant_id), account_id, scope, family)) = row else {
        let reused: Option<(Option<String>, Option<i64>)> =
            sqlx::query_as("SELECT code_hash, rotated_at FROM tokens WHERE token_hash = $1 AND kind = 'refresh'")
                .bind(&hash)
                .fetch_optional(st.db.pool())
                .await
                .map_err(StoreError::from)?;
        if let Some((Some(family), Some(_))) = reused {
            // A rotated refresh token came back: it was stolen or replayed. Kill its whole family.
            let n = revoke_where(&st.db, "code_hash", &family, now).await?;
            metrics::counter!("edulink_oauth_refresh_reuse_total").increment(1);
            audit::record(
                &st.db,
                now,
                "refresh_reuse",
                None,
                Some(&client.client_id),
                Some(ip),
                Some(&format!("revoked={n}")),
            )
            .await;
        }
        return Ok(invalid_grant("the refresh token is invalid"));
    };
    if client_id != client.client_id {
        return Ok(invalid_grant("the refresh token is invalid"));
    }
    let exists: Option<String> = sqlx::query_scalar("SELECT id FROM grants WHERE id = $1")
        .bind(&grant_id)
        .fetch_optional(st.db.pool())
        .await
        .map_err(StoreError::from)?;
    if exists.is_none() {
        return Ok(invalid_grant("the grant was revoked"));
    }
    let mut tx = st.db.begin().await?;
    let issued = store_tokens(
        st,
        &mut tx,
        &client.client_id,
        Some(&grant_id),
        account_id.as_deref(),
        family.as_deref(),
        &scope,
        true,
    )
    .await?;
    tx.commit().await?;
    metrics::counter!("edulink_oauth_tokens_issued_total", "grant" => "refresh_token").increment(1);
    Ok(token_response(json!({
        "access_token": issued.access,
        "token_type": "Bearer",
        "expires_in": st.cfg.access_token_ttl,
        "refresh_token": issued.refresh,
        "scope": scope,
    })))
}

async fn client_credentials(st: &MaxState, client: &Client, p: &TokenParams) -> Result<Response, AppError> {
    let requested = parse_scope(p.scope.as_deref().unwrap_or("sferum.provision"));
    if requested.is_empty() || requested.iter().any(|s| s != "sferum.provision" || !client.scopes.contains(s)) {
        return Ok(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "only sferum.provision, if allowed for the client",
        ));
    }
    let scope = requested.join(" ");
    let mut tx = st.db.begin().await?;
    let issued = store_tokens(st, &mut tx, &client.client_id, None, None, None, &scope, false).await?;
    tx.commit().await?;
    metrics::counter!("edulink_oauth_tokens_issued_total", "grant" => "client_credentials").increment(1);
    Ok(token_response(json!({
        "access_token": issued.access,
        "token_type": "Bearer",
        "expires_in": st.cfg.access_token_ttl,
        "scope": scope,
    })))
}

/// A valid access token: its client, grant, account and scope.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The client it was issued to.
    pub client_id: String,
    /// The grant (none for client credentials).
    pub grant_id: Option<String>,
    /// The account (none for client credentials).
    pub account_id: Option<String>,
    /// Scopes.
    pub scope: Vec<String>,
}

/// Validates a bearer access token from the `Authorization` header (only there: never a query
/// parameter, RFC 6750 §2.3 is not supported on purpose).
pub async fn bearer(st: &MaxState, headers: &HeaderMap) -> Result<Option<AccessToken>, StoreError> {
    let Some(tok) =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Ok(None);
    };
    let row: Option<(String, Option<String>, Option<String>, String)> = sqlx::query_as(
        "SELECT client_id, grant_id, account_id, scope FROM tokens WHERE token_hash = $1 AND kind = 'access' \
           AND revoked_at IS NULL AND expires_at > $2",
    )
    .bind(sha256_b64(tok.trim()))
    .bind(st.now())
    .fetch_optional(st.db.pool())
    .await?;
    Ok(row.map(|(client_id, grant_id, account_id, scope)| AccessToken {
        client_id,
        grant_id,
        account_id,
        scope: parse_scope(&scope),
    }))
}

fn bearer_error() -> Response {
    let mut resp = (StatusCode::UNAUTHORIZED, axum::Json(json!({ "error": "invalid_token" }))).into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
    resp
}

/// `GET|POST /oauth/userinfo`.
pub async fn userinfo(State(st): State<MaxState>, headers: HeaderMap) -> Result<Response, AppError> {
    let Some(t) = bearer(&st, &headers).await? else {
        return Ok(bearer_error());
    };
    let (Some(grant_id), Some(account_id)) = (&t.grant_id, &t.account_id) else {
        return Ok(bearer_error());
    };
    if !t.scope.iter().any(|s| s == "openid") {
        return Ok(bearer_error());
    }
    let subject: Option<String> = sqlx::query_scalar("SELECT subject FROM grants WHERE id = $1")
        .bind(grant_id)
        .fetch_optional(st.db.pool())
        .await
        .map_err(StoreError::from)?;
    let Some(sub) = subject else {
        return Ok(bearer_error());
    };
    let mut body = json!({ "sub": sub });
    if t.scope.iter().any(|s| s == "profile")
        && let Some(a) = repo::account(&st.db, account_id).await?
    {
        body["given_name"] = a.first_name.clone().into();
        body["family_name"] = a.last_name.clone().into();
        body["name"] = format!("{} {}", a.first_name, a.last_name).into();
    }
    Ok(token_response(body))
}

/// `POST /oauth/revoke` (RFC 7009): always 200 for an authenticated client, whether or not the token
/// was known; revoking a refresh token revokes every token of its family.
pub async fn revoke(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: String,
) -> Result<Response, AppError> {
    let Ok(p) = parse_strict::<TokenParams>(&body) else {
        return Ok(oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "malformed or repeated parameters"));
    };
    let client = match authenticate(&st, &headers, &p).await? {
        Ok(c) => c,
        Err(resp) => return Ok(resp),
    };
    let Some(token) = &p.token else {
        return Ok(oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "token is required"));
    };
    let now = st.now();
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "UPDATE tokens SET revoked_at = $3 WHERE token_hash = $1 AND client_id = $2 AND revoked_at IS NULL \
         RETURNING kind, code_hash",
    )
    .bind(sha256_b64(token))
    .bind(&client.client_id)
    .bind(now)
    .fetch_optional(st.db.writer())
    .await
    .map_err(StoreError::from)?;
    if let Some((kind, family)) = row {
        // A refresh token takes with it every token of its family (issued from the same code and
        // its rotations) — not other families of the same grant, which may belong to another link.
        if let (true, Some(f)) = (kind == "refresh", family) {
            revoke_where(&st.db, "code_hash", &f, now).await?;
        }
        audit::record(&st.db, now, "token_revoked", None, Some(&client.client_id), Some(&ip.to_string()), Some(&kind))
            .await;
    }
    Ok((StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response())
}
