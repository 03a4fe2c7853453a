//! Checks named after modules of the OpenID Foundation's OP conformance plans (GitHub
//! `openid-certification/conformance-suite`, `src/main/java/net/openid/conformance/openid/`, the plan
//! classes `OIDCCBasicTestPlan` and `OIDCCConfigTestPlan`), for an OP that requires PKCE. Each test
//! drives MAX as the suite's relying party would — a static confidential client with
//! `client_secret_basic` and RS256 ID tokens, as the basic plan's default variant — and asserts what
//! the module asserts. docs/oidc.md maps every module of both plans to its test here, or says why it
//! does not apply.
//!
//! * [`basic`]: the code flow, ID token, UserInfo, scopes, codes, redirect URIs, request objects.
//! * [`prompts`]: `prompt`, `max_age`, the hints and locales.
//! * [`config`]: the config plan (discovery).
//! * [`defects`]: the defects issue 16 reported that no plan module catches as such.

mod basic;
mod config;
mod defects;
mod prompts;

use edulink_domain::crypto::{random_token, sha256_b64};
use edulink_domain::oauth::pkce_s256;
use edulink_testkit::{Browser, FlowsExt, Page, TestApp};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::HashMap;

/// The person who signs in to MAX in these tests.
pub const PHONE: &str = "+7 916 555-44-33";
/// The same phone, E.164.
pub const E164: &str = "+79165554433";

/// A relying party: its client id, secret (none for a public client) and redirect URI.
#[derive(Debug, Clone)]
pub struct Rp {
    pub id: String,
    pub secret: Option<String>,
    pub redirect_uri: String,
}

/// The suite's static client: confidential, RS256, registered for every scope MAX offers to a
/// person (`openid profile phone offline_access`), in a sector of its own.
pub async fn suite_rp(app: &TestApp) -> Rp {
    let secret = "suite-secret-0123456789".to_string();
    let client = edulink_max::oidc::Client {
        client_id: "op-suite".into(),
        name: "OP suite".into(),
        secret_hash: Some(sha256_b64(&secret)),
        redirect_uris: vec!["https://rp.example/cb".into()],
        id_token_alg: "RS256".into(),
        sector: "rp.example".into(),
        scopes: ["openid", "profile", "phone", "offline_access"].map(String::from).to_vec(),
        policy: edulink_max::oidc::ClientPolicy::default(),
    };
    register(app, &client).await;
    Rp { id: client.client_id, secret: Some(secret), redirect_uri: client.redirect_uris[0].clone() }
}

/// Registers (or replaces) a client at MAX, as `edulink max client add` does.
pub async fn register(app: &TestApp, client: &edulink_max::oidc::Client) {
    let st = app.running.max.as_ref().expect("MAX runs");
    edulink_max::oidc::upsert_client(&st.db, client, st.now()).await.unwrap();
    st.clients.forget(&client.client_id);
}

/// The diary (`mesh`): confidential, first party, EdDSA.
pub fn diary_rp(app: &TestApp) -> Rp {
    Rp {
        id: "mesh".into(),
        secret: app.config.diary.client_secret.clone(),
        redirect_uri: format!("{}/sferum/callback", app.diary),
    }
}

/// The diary's two apps («Дневник МЭШ», «Моя школа Дневник»): public (native) clients with
/// custom-scheme redirects, registered here WITHOUT their PAR and DPoP requirements, so that a
/// plain request reaches the checks a public client must meet on its own (RFC 8252 §8.6, RFC 9700
/// §4.14). With the requirements on, the `dpop::` and `par::` tests drive them.
pub async fn native_rps(app: &TestApp) -> [Rp; 2] {
    for mut c in edulink::app::app_clients() {
        c.policy = edulink_max::oidc::ClientPolicy::default();
        register(app, &c).await;
    }
    [
        Rp { id: "mesh-app".into(), secret: None, redirect_uri: "ru.mos.dnevnik:/sferum/callback".into() },
        Rp { id: "moyashkola".into(), secret: None, redirect_uri: "ru.myschool.diary:/sferum/callback".into() },
    ]
}

/// An authorization request being built: its parameters and PKCE verifier.
#[derive(Debug, Clone)]
pub struct Authz {
    pub params: Vec<(String, String)>,
    pub verifier: String,
}

impl Authz {
    /// A valid code + PKCE request of `rp` for `scope=openid`, with `state=st-9` and `nonce=n-9`.
    pub fn new(rp: &Rp) -> Self {
        let verifier = random_token(32);
        let params = [
            ("response_type", "code"),
            ("client_id", rp.id.as_str()),
            ("redirect_uri", rp.redirect_uri.as_str()),
            ("scope", "openid"),
            ("state", "st-9"),
            ("nonce", "n-9"),
            ("code_challenge", &pkce_s256(&verifier)),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Authz { params, verifier }
    }

    /// Sets a parameter (replacing it if present).
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.params.retain(|(k, _)| k != key);
        self.params.push((key.into(), value.into()));
        self
    }

    /// Leaves a parameter out.
    pub fn without(mut self, key: &str) -> Self {
        self.params.retain(|(k, _)| k != key);
        self
    }

    /// The request as a URL of MAX's authorization endpoint.
    pub fn url(&self, app: &TestApp) -> String {
        reqwest::Url::parse_with_params(&format!("{}/oauth/authorize", app.max), &self.params).unwrap().to_string()
    }
}

/// The query of a redirect back to `rp`, if `page` is one.
pub fn callback(rp: &Rp, page: &Page) -> Option<HashMap<String, String>> {
    let loc = page.location.as_deref()?;
    if !loc.starts_with(&rp.redirect_uri) {
        return None;
    }
    Some(reqwest::Url::parse(loc).unwrap().query_pairs().into_owned().collect())
}

/// Follows `page` through MAX (clicking «Привязать» on a confirmation page when `confirm`) until it
/// redirects back to `rp`: `Ok(query)`, or the MAX page where it stopped.
pub async fn to_client(b: &Browser, rp: &Rp, mut page: Page, confirm: bool) -> Result<HashMap<String, String>, Page> {
    for _ in 0..10 {
        if let Some(q) = callback(rp, &page) {
            return Ok(q);
        }
        match &page.location {
            Some(loc) if page.status.is_redirection() => page = b.get(&loc.clone()).await,
            _ if confirm && page.url.contains("/authorize/continue") && page.has("/authorize/confirm") => {
                let origin = page.url.split("/authorize/").next().unwrap().to_string();
                page = b.post(&format!("{origin}/authorize/confirm"), &[("csrf", &page.csrf())]).await;
            }
            _ => return Err(page),
        }
    }
    panic!("no way back to {} from {}", rp.redirect_uri, page.url);
}

/// `GET url` and follows the redirects that stay at MAX: the page MAX shows, or its redirect away.
pub async fn visit_max(app: &TestApp, b: &Browser, url: &str) -> Page {
    let mut page = b.get(url).await;
    for _ in 0..10 {
        match &page.location {
            Some(loc) if page.status.is_redirection() && loc.starts_with(&app.max) => page = b.get(&loc.clone()).await,
            _ => return page,
        }
    }
    panic!("redirect loop at {}", page.url);
}

/// Sends `authz` from browser `b` and follows it back to `rp`, confirming when asked.
pub async fn authorize(app: &TestApp, b: &Browser, rp: &Rp, authz: &Authz) -> HashMap<String, String> {
    let first = b.get(&authz.url(app)).await;
    match to_client(b, rp, first, true).await {
        Ok(q) => q,
        Err(p) => panic!("stopped at {} ({}): {}", p.url, p.status, p.body),
    }
}

/// Signs `b` in to MAX by SMS from the phone page `phone_page` (registering the phone the first
/// time) and returns the page the sign-in redirected to.
pub async fn sms_sign_in(app: &TestApp, b: &Browser, phone_page: &Page) -> Page {
    assert!(phone_page.has("Продолжить") || phone_page.has("Continue"), "phone page: {}", phone_page.body);
    let code_page = app.enter_phone(b, phone_page, PHONE).await;
    let after = app.enter_code(b, &code_page, &app.last_code(E164)).await;
    let next = b.get(after.location.as_deref().expect("a redirect after the code")).await;
    if next.url.ends_with("/login/register") {
        let form = [("csrf", next.csrf()), ("first_name", "Пётр".into()), ("last_name", "Тестов".into())];
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        return b.post(&format!("{}/login/register", app.max), &form).await;
    }
    next
}

/// Signs `b` in to MAX directly (its home page), as before any relying party is involved.
pub async fn sign_in(app: &TestApp, b: &Browser) {
    let phone = b.visit(&format!("{}/login", app.max)).await;
    sms_sign_in(app, b, &phone).await;
}

/// The suite's client and a browser signed in to MAX: where most modules start.
pub async fn signed_in_suite(app: &TestApp) -> (Rp, Browser) {
    let rp = suite_rp(app).await;
    let b = Browser::new();
    sign_in(app, &b).await;
    (rp, b)
}

/// Redeems `code` at the token endpoint as `rp` (`client_secret_basic`, or `client_id` alone for a
/// public client).
pub async fn redeem(app: &TestApp, rp: &Rp, code: &str, verifier: &str) -> (StatusCode, Value) {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", rp.redirect_uri.as_str()),
        ("code_verifier", verifier),
    ];
    token(app, rp, &form).await
}

/// A token endpoint request of `rp` (`client_secret_basic`, or `client_id` for a public client).
pub async fn token(app: &TestApp, rp: &Rp, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut form: Vec<(&str, &str)> = form.to_vec();
    let mut req = reqwest::Client::new().post(format!("{}/oauth/token", app.max));
    match &rp.secret {
        Some(s) => req = req.basic_auth(&rp.id, Some(s)),
        None => form.push(("client_id", &rp.id)),
    }
    let resp = req.form(&form).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Runs a whole code flow of `rp` with `authz` in `b` and redeems the code: the token response.
pub async fn tokens(app: &TestApp, b: &Browser, rp: &Rp, authz: &Authz) -> Value {
    let q = authorize(app, b, rp, authz).await;
    let code = q.get("code").unwrap_or_else(|| panic!("no code: {q:?}"));
    let (status, body) = redeem(app, rp, code, &authz.verifier).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The claims of a JWT (signature not checked: the tests that need it verify with the JWKS).
pub fn claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Verifies an ID token with MAX's JWKS (jsonwebtoken, an implementation we did not write) for
/// `alg` and audience `aud`; returns its claims.
pub async fn verify_id_token(app: &TestApp, id_token: &str, alg: jsonwebtoken::Algorithm, aud: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet =
        reqwest::get(format!("{}/oauth/jwks", app.max)).await.unwrap().json().await.unwrap();
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert_eq!(header.alg, alg);
    let jwk = jwks.find(header.kid.as_deref().expect("kid (OP-IDToken-kid)")).expect("kid published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(alg);
    v.set_audience(&[aud]);
    v.set_issuer(&[&app.max]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(id_token, &key, &v).unwrap().claims
}

/// MAX's discovery document.
pub async fn discovery(app: &TestApp) -> Value {
    reqwest::get(format!("{}/.well-known/openid-configuration", app.max)).await.unwrap().json().await.unwrap()
}

/// `GET /oauth/userinfo` with the access token in the `Authorization` header.
pub async fn userinfo(app: &TestApp, access: &str) -> (StatusCode, Value) {
    let resp =
        reqwest::Client::new().get(format!("{}/oauth/userinfo", app.max)).bearer_auth(access).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The OAuth error of a redirect to `rp`, asserting `state` and `iss` came back with it.
pub fn redirected_error(app: &TestApp, rp: &Rp, page: &Page) -> String {
    let q =
        callback(rp, page).unwrap_or_else(|| panic!("no redirect to the client: {:?} {}", page.location, page.body));
    assert_eq!(q.get("state").map(String::as_str), Some("st-9"), "state echoed (RFC 6749 §4.1.2.1)");
    assert_eq!(q.get("iss"), Some(&app.max), "iss (RFC 9207)");
    q.get("error").cloned().unwrap_or_else(|| panic!("no error: {q:?}"))
}
