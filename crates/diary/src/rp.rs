//! The OpenID Connect relying party of MAX, on the `openidconnect` crate: discovery, the
//! authorization request (state, nonce, PKCE S256), the code exchange with full ID token validation
//! (signature, `iss`, `aud`, `exp`, `nonce`, algorithm), and the back-channel calls (client
//! credentials, provisioning, revocation).

use crate::DiaryConfig;
use edulink_domain::links::LinkPage;
use edulink_domain::provisioning::{Attendance, LessonPush, LessonPushResult, ProvisionProfile};
use openidconnect::core::{
    CoreAuthPrompt, CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub mod backchannel;
mod par;
pub use par::Pushed;

/// Errors talking to MAX or validating its answers. Details are logged; users see a clear message.
#[derive(Debug, thiserror::Error)]
pub enum RpError {
    /// MAX could not be reached or answered with an error status.
    #[error("MAX unavailable: {0}")]
    Unavailable(String),
    /// MAX refused the code (expired, replayed, revoked).
    #[error("code refused: {0}")]
    CodeRefused(String),
    /// The ID token or the response failed validation.
    #[error("invalid response: {0}")]
    Invalid(String),
    /// A provisioning call was refused for good (e.g. the grant is gone).
    #[error("refused: {0}")]
    Refused(String),
    /// MAX knows the link the call is about is no longer current (`409 stale_link`): a newer link
    /// of the subject, or the link was removed. Nothing changed; nothing is left to do.
    #[error("stale link: {0}")]
    Stale(String),
}

/// The error type of our HTTP adapter for `openidconnect`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// What a successful code exchange yields.
#[derive(Debug)]
pub struct Verified {
    /// The pairwise subject.
    pub subject: String,
    /// The ID token (raw), kept as a hint for later sign-ins.
    pub id_token: String,
    /// The refresh token, if granted.
    pub refresh_token: Option<String>,
}

/// Which client of ours speaks to MAX: the web client (confidential) or one of the apps (public).
#[derive(Debug, Clone, Copy)]
pub struct ClientRef<'a> {
    /// `client_id`.
    pub id: &'a str,
    /// The secret (web client only).
    pub secret: Option<&'a str>,
    /// The registered redirect URI.
    pub redirect_uri: &'a str,
}

type RpClient = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// A started authorization request.
#[derive(Debug)]
pub struct Started {
    /// Where to send the browser.
    pub url: String,
    /// The state.
    pub state: String,
    /// The nonce.
    pub nonce: String,
    /// The PKCE verifier.
    pub verifier: String,
}

struct Cached {
    metadata: CoreProviderMetadata,
    fetched: Instant,
}

/// The relying party: our client at MAX, with MAX's metadata and keys cached.
pub struct RelyingParty {
    http: reqwest::Client,
    issuer: String,
    client_id: String,
    client_secret: String,
    redirect_uri: String,
    metadata: Mutex<Option<Cached>>,
    service_token: Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelyingParty").field("issuer", &self.issuer).field("client_id", &self.client_id).finish()
    }
}

/// Metadata and keys are re-fetched after this long (and at once when a token fails validation).
const METADATA_TTL: Duration = Duration::from_secs(300);

impl RelyingParty {
    /// A relying party for `cfg`.
    pub fn new(cfg: &DiaryConfig) -> Self {
        let http = reqwest::Client::builder()
            // Never follow redirects on the back channel (SSRF, RFC 9700 §4.11).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        Self {
            http,
            issuer: cfg.max_issuer.clone(),
            client_id: cfg.client_id.clone(),
            client_secret: cfg.client_secret.clone(),
            redirect_uri: cfg.redirect_uri(),
            metadata: Mutex::new(None),
            service_token: Mutex::new(None),
        }
    }

    /// MAX's issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    async fn call(
        client: reqwest::Client,
        call: &'static str,
        req: openidconnect::HttpRequest,
    ) -> Result<openidconnect::HttpResponse, HttpError> {
        let (parts, body) = req.into_parts();
        let req = client.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body);
        let resp = send(call, req).await.map_err(|e| HttpError(e.without_url().to_string()))?;
        let mut builder = http::Response::builder().status(resp.status());
        if let Some(h) = builder.headers_mut() {
            *h = resp.headers().clone();
        }
        let bytes = resp.bytes().await.map_err(|e| HttpError(e.to_string()))?;
        builder.body(bytes.to_vec()).map_err(|e| HttpError(e.to_string()))
    }

    async fn metadata(&self, force: bool) -> Result<CoreProviderMetadata, RpError> {
        if !force
            && let Some(c) = self.metadata.lock().expect("metadata lock").as_ref()
            && c.fetched.elapsed() < METADATA_TTL
        {
            return Ok(c.metadata.clone());
        }
        let issuer = IssuerUrl::new(self.issuer.clone()).map_err(|e| RpError::Invalid(e.to_string()))?;
        let http = self.http.clone();
        let fetch = move |req| Self::call(http.clone(), "discovery", req);
        let metadata = CoreProviderMetadata::discover_async(issuer, &fetch)
            .await
            .map_err(|e| RpError::Unavailable(format!("discovery: {e}")))?;
        *self.metadata.lock().expect("metadata lock") =
            Some(Cached { metadata: metadata.clone(), fetched: Instant::now() });
        Ok(metadata)
    }

    /// MAX's JWKS, as cached with the metadata (`force`: fetched again).
    pub async fn jwks(&self, force: bool) -> Result<openidconnect::core::CoreJsonWebKeySet, RpError> {
        Ok(self.metadata(force).await?.jwks().clone())
    }

    /// Our web client.
    pub fn web(&self) -> ClientRef<'_> {
        ClientRef { id: &self.client_id, secret: Some(&self.client_secret), redirect_uri: &self.redirect_uri }
    }

    fn client(&self, metadata: CoreProviderMetadata, c: ClientRef<'_>) -> Result<RpClient, RpError> {
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(c.id.to_string()),
            c.secret.map(|s| ClientSecret::new(s.to_string())),
        )
        .set_redirect_uri(RedirectUrl::new(c.redirect_uri.to_string()).map_err(|e| RpError::Invalid(e.to_string()))?))
    }

    /// Starts an authorization request for client `c`: for a first link (`prompt=consent`, refresh
    /// token asked) or for signing in to Сферум (with the last ID token as `id_token_hint`, and
    /// `prompt=login` when `relogin`: MAX ended that session, `backchannel`). An app brings its own
    /// PKCE challenge (RFC 8252: the verifier never leaves the app); otherwise one is made here and
    /// returned.
    pub async fn start(
        &self,
        c: ClientRef<'_>,
        link: bool,
        hint: Option<&str>,
        relogin: bool,
        app_challenge: Option<&str>,
    ) -> Result<Started, RpError> {
        let client = self.client(self.metadata(false).await?, c)?;
        let mut req =
            client.authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random);
        let verifier = match app_challenge {
            Some(challenge) => {
                req = req
                    .add_extra_param("code_challenge", challenge.to_string())
                    .add_extra_param("code_challenge_method", "S256");
                String::new()
            }
            None => {
                let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
                req = req.set_pkce_challenge(challenge);
                verifier.secret().clone()
            }
        };
        if link {
            req = req.add_scope(Scope::new("offline_access".into())).add_prompt(CoreAuthPrompt::Consent);
        } else {
            if let Some(h) = hint {
                req = req.add_extra_param("id_token_hint", h.to_string());
            }
            if relogin {
                req = req.add_prompt(CoreAuthPrompt::Login);
            }
        }
        let (url, state, nonce) = req.url();
        Ok(Started { url: url.to_string(), state: state.secret().clone(), nonce: nonce.secret().clone(), verifier })
    }

    /// Redeems a code for client `c` and validates the ID token against `nonce`. On a validation
    /// failure the keys are re-fetched once (MAX may have rotated them) before giving up.
    pub async fn finish(&self, c: ClientRef<'_>, code: &str, verifier: &str, nonce: &str) -> Result<Verified, RpError> {
        self.finish_with_proof(c, code, verifier, nonce, None).await
    }

    /// [`Self::finish`] with an app's DPoP proof for the token endpoint (RFC 9449 §5), sent as the
    /// `DPoP` header: the app holds the key, so the tokens are bound to the app, not to us.
    pub async fn finish_with_proof(
        &self,
        c: ClientRef<'_>,
        code: &str,
        verifier: &str,
        nonce: &str,
        dpop: Option<&str>,
    ) -> Result<Verified, RpError> {
        let client = self.client(self.metadata(false).await?, c)?;
        let http = self.http.clone();
        let dpop = dpop.and_then(|p| http::HeaderValue::from_str(p).ok());
        let fetch = move |mut req: openidconnect::HttpRequest| {
            if let Some(p) = &dpop {
                req.headers_mut().insert("dpop", p.clone());
            }
            Self::call(http.clone(), "token", req)
        };
        let resp = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| RpError::Invalid(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
            .request_async(&fetch)
            .await
            .map_err(|e| match e {
                openidconnect::RequestTokenError::ServerResponse(r) => RpError::CodeRefused(r.error().to_string()),
                other => RpError::Unavailable(other.to_string()),
            })?;
        let id_token = resp.id_token().ok_or_else(|| RpError::Invalid("no id_token".into()))?;
        let nonce = Nonce::new(nonce.to_string());
        let algs = [
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
            CoreJwsSigningAlgorithm::EdDsa,
        ];
        let subject = match id_token.claims(&client.id_token_verifier().set_allowed_algs(algs.clone()), &nonce) {
            Ok(c) => c.subject().to_string(),
            Err(first) => {
                // Perhaps a new key: re-fetch the JWKS once and validate again.
                let client = self.client(self.metadata(true).await?, c)?;
                id_token
                    .claims(&client.id_token_verifier().set_allowed_algs(algs), &nonce)
                    .map_err(|e| RpError::Invalid(format!("{first}; after refresh: {e}")))?
                    .subject()
                    .to_string()
            }
        };
        Ok(Verified {
            subject,
            id_token: id_token.to_string(),
            refresh_token: resp.refresh_token().map(|r| r.secret().clone()),
        })
    }

    /// A `client_credentials` access token for the provisioning API, reused until shortly before expiry.
    async fn service_token(&self) -> Result<String, RpError> {
        if let Some((t, exp)) = self.service_token.lock().expect("token lock").as_ref()
            && Instant::now() < *exp
        {
            return Ok(t.clone());
        }
        let metadata = self.metadata(false).await?;
        let token_url =
            metadata.token_endpoint().ok_or_else(|| RpError::Invalid("no token endpoint".into()))?.to_string();
        let req = self
            .http
            .post(token_url)
            .basic_auth(urlenc(&self.client_id), Some(urlenc(&self.client_secret)))
            .form(&[("grant_type", "client_credentials"), ("scope", "sferum.provision")]);
        let resp = send("token", req).await.map_err(|e| RpError::Unavailable(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(RpError::Unavailable(format!("client_credentials: {}", resp.status())));
        }
        let body: serde_json::Value = resp.json().await.map_err(|e| RpError::Invalid(e.to_string()))?;
        let token =
            body["access_token"].as_str().ok_or_else(|| RpError::Invalid("no access_token".into()))?.to_string();
        let ttl = body["expires_in"].as_u64().unwrap_or(60).saturating_sub(30).max(1);
        *self.service_token.lock().expect("token lock") =
            Some((token.clone(), Instant::now() + Duration::from_secs(ttl)));
        Ok(token)
    }

    /// The profile of `subject`, about the diary's link `generation`.
    fn profile_url(&self, subject: &str, generation: i64) -> String {
        let mut url = url::Url::parse(&self.issuer).expect("issuer is a URL");
        url.path_segments_mut().expect("base URL").extend(["sferum", "api", "v1", "profiles", subject]);
        url.query_pairs_mut().append_pair("generation", &generation.to_string());
        url.to_string()
    }

    /// Sends a provisioning call with the service token; when MAX refuses the token (expired or
    /// revoked early), drops it and tries once more with a fresh one.
    async fn with_service_token(
        &self,
        call: &'static str,
        make: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RpError> {
        for attempt in 0..2 {
            let token = self.service_token().await?;
            let resp = send(call, make(&token)).await.map_err(|e| RpError::Unavailable(e.without_url().to_string()))?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                self.service_token.lock().expect("token lock").take();
                continue;
            }
            return Ok(resp);
        }
        Err(RpError::Unavailable("provisioning token refused".into()))
    }

    /// Whether MAX answers at all: its discovery document, fetched with a short timeout. The
    /// outbox's probe while jobs wait out a backoff.
    pub async fn answers(&self) -> bool {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let probe = send("probe", self.http.get(url).timeout(Duration::from_secs(2))).await;
        probe.is_ok_and(|r| r.status().is_success())
    }

    /// `PUT` the verified school data of link `generation` to the profile MAX knows as `subject`.
    pub async fn provision(&self, subject: &str, generation: i64, profile: &ProvisionProfile) -> Result<(), RpError> {
        let url = self.profile_url(subject, generation);
        let resp =
            self.with_service_token("provisioning", |t| self.http.put(&url).bearer_auth(t).json(profile)).await?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            404 => Err(RpError::Refused("no grant for this subject".into())),
            409 => Err(RpError::Stale(format!("provision of generation {generation}"))),
            s if s >= 500 || s == 401 => Err(RpError::Unavailable(format!("provisioning: {s}"))),
            s => Err(RpError::Refused(format!("provisioning: {s}"))),
        }
    }

    /// `PUT` a distance lesson's current state to Сферум. Returns whether Сферум applied it (false
    /// when it had this revision already).
    pub async fn push_lesson(&self, push: &LessonPush) -> Result<bool, RpError> {
        let url = format!("{}/sferum/api/v1/lessons/{}", self.issuer, urlenc(&push.lesson.id));
        let resp = self.with_service_token("lessons", |t| self.http.put(&url).bearer_auth(t).json(push)).await?;
        match resp.status().as_u16() {
            200..=299 => {
                let r: LessonPushResult =
                    resp.json().await.map_err(|e| RpError::Unavailable(e.without_url().to_string()))?;
                Ok(r.applied)
            }
            s if s >= 500 || s == 401 => Err(RpError::Unavailable(format!("lesson push: {s}"))),
            s => Err(RpError::Refused(format!("lesson push: {s}"))),
        }
    }

    /// `GET` who joined a lesson, by our subjects.
    pub async fn attendance(&self, lesson_id: &str) -> Result<Attendance, RpError> {
        let url = format!("{}/sferum/api/v1/lessons/{}/attendance", self.issuer, urlenc(lesson_id));
        let resp = self.with_service_token("lessons", |t| self.http.get(&url).bearer_auth(t)).await?;
        match resp.status().as_u16() {
            200..=299 => resp.json().await.map_err(|e| RpError::Unavailable(e.without_url().to_string())),
            s => Err(RpError::Unavailable(format!("attendance: {s}"))),
        }
    }

    /// `DELETE` the profile link of link `generation` at MAX: leave chats, drop school data, revoke
    /// the grant's tokens.
    pub async fn detach(&self, subject: &str, generation: i64) -> Result<(), RpError> {
        let url = self.profile_url(subject, generation);
        let resp = self.with_service_token("provisioning", |t| self.http.delete(&url).bearer_auth(t)).await?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            409 => Err(RpError::Stale(format!("detach of generation {generation}"))),
            s => Err(RpError::Unavailable(format!("detach: {s}"))),
        }
    }

    /// MAX's part of a person's data export, by our subject (`None`: MAX knows no such link); the
    /// format of docs/retention.md («Export format»).
    pub async fn export(&self, subject: &str) -> Result<Option<serde_json::Value>, RpError> {
        let url = format!("{}/sferum/api/v1/profiles/{}/export", self.issuer, urlenc(subject));
        let resp = self.with_service_token("provisioning", |t| self.http.get(&url).bearer_auth(t)).await?;
        match resp.status().as_u16() {
            200..=299 => resp.json().await.map(Some).map_err(|e| RpError::Invalid(e.without_url().to_string())),
            404 => Ok(None),
            s => Err(RpError::Unavailable(format!("export: {s}"))),
        }
    }

    /// One page of MAX's grants of our sector by subject, after `after` — or only subject `only` —
    /// (the reconciliation's view).
    pub async fn links_page(&self, after: &str, only: Option<&str>) -> Result<LinkPage, RpError> {
        let mut url = url::Url::parse(&self.issuer).expect("issuer is a URL");
        url.path_segments_mut().expect("base URL").extend(["sferum", "api", "v1", "links"]);
        url.query_pairs_mut().append_pair("after", after);
        if let Some(sub) = only {
            url.query_pairs_mut().append_pair("sub", sub);
        }
        let url = url.to_string();
        let resp = self.with_service_token("provisioning", |t| self.http.get(&url).bearer_auth(t)).await?;
        match resp.status().as_u16() {
            200..=299 => resp.json().await.map_err(|e| RpError::Invalid(e.without_url().to_string())),
            s => Err(RpError::Unavailable(format!("links: {s}"))),
        }
    }

    /// Revokes a refresh token (RFC 7009); MAX then revokes every token of the grant.
    pub async fn revoke(&self, refresh_token: &str) -> Result<(), RpError> {
        // MAX's revocation endpoint (RFC 7009) sits at a fixed path under the issuer.
        let url = format!("{}/oauth/revoke", self.issuer);
        let req = self
            .http
            .post(url)
            .basic_auth(urlenc(&self.client_id), Some(urlenc(&self.client_secret)))
            .form(&[("token", refresh_token), ("token_type_hint", "refresh_token")]);
        let resp = send("revocation", req).await.map_err(|e| RpError::Unavailable(e.without_url().to_string()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(RpError::Unavailable(format!("revoke: {}", resp.status())))
        }
    }
}

/// Sends one back-channel request to MAX, timed by call and outcome
/// (`edulink_backchannel_duration_seconds`): `ok` for 2xx, `refused` for 4xx, `error` otherwise.
async fn send(call: &'static str, req: reqwest::RequestBuilder) -> Result<reqwest::Response, reqwest::Error> {
    let started = Instant::now();
    // The journey's trace goes with the call (W3C traceparent): MAX logs the same trace id.
    let (name, value) = edulink_web::trace::outgoing();
    let resp = req.header(name, value).send().await;
    let outcome = match &resp {
        Ok(r) if r.status().is_success() => "ok",
        Ok(r) if r.status().is_client_error() => "refused",
        _ => "error",
    };
    metrics::histogram!("edulink_backchannel_duration_seconds", "call" => call, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// Part `n` (0: header, 1: claims) of a JWT we stored ourselves after validating it, as JSON (read
/// without checking the signature again: it only decides when the stored hint is replaced).
fn jwt_part(jwt: &str, n: usize) -> Option<serde_json::Value> {
    use base64::Engine;
    let part = jwt.split('.').nth(n)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `iat` of a stored JWT.
pub fn issued_at(jwt: &str) -> Option<i64> {
    jwt_part(jwt, 1)?.get("iat")?.as_i64()
}

/// The `kid` of a stored JWT's signing key (JWS header, RFC 7515 §4.1.4).
pub fn key_id(jwt: &str) -> Option<String> {
    Some(jwt_part(jwt, 0)?.get("kid")?.as_str()?.to_string())
}

fn urlenc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
