//! Sessions that end everywhere (issue 16, item 9): OpenID Connect RP-Initiated Logout 1.0 at MAX
//! and Back-Channel Logout 1.0 to the diary. Tests named after the OpenID Foundation's conformance
//! modules (GitHub `openid-certification/conformance-suite`,
//! `src/main/java/net/openid/conformance/openid/OIDCCRpInitiatedLogout*.java` and
//! `OIDCCBackChannel*.java`) assert what those modules assert; the diary's receiver is attacked
//! with logout tokens built by `jsonwebtoken` (a JOSE library we did not write), signed with MAX's
//! own key where the signature must pass, so each test fails on exactly one rule of §2.6
//! (`logout/backchannel.rs`).

use edulink_domain::Clock;
use edulink_domain::crypto::random_token;
use edulink_domain::oauth::pkce_s256;
use edulink_store::{Db, sqlx};
use edulink_testkit::{Browser, FlowsExt, Page, TestApp, both_backends};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

mod backchannel;

const PHONE: (&str, &str) = ("8 916 808-70-60", "+79168087060");
const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

fn max_db(app: &TestApp) -> &Db {
    &app.running.max.as_ref().unwrap().db
}

fn diary_db(app: &TestApp) -> &Db {
    &app.running.diary.as_ref().unwrap().db
}

/// Signs in to MAX in `b` (registering the phone the first time).
async fn max_sign_in(app: &TestApp, b: &Browser) {
    let login = b.visit(&format!("{}/login", app.max)).await;
    let code = app.enter_phone(b, &login, PHONE.0).await;
    let after = b.follow(app.enter_code(b, &code, &app.last_code(PHONE.1)).await).await;
    if after.url.ends_with("/login/register") {
        let form = [("csrf", after.csrf()), ("first_name", "Олег".into()), ("last_name", "Выходов".into())];
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        b.submit(&format!("{}/login/register", app.max), &form).await;
    }
}

/// A new browser signed in to MAX.
async fn signed_in(app: &TestApp) -> Browser {
    let b = Browser::new();
    max_sign_in(app, &b).await;
    b
}

/// A new browser signed in to MAX, and an ID token of the diary client from that session.
async fn signed_in_with_id_token(app: &TestApp) -> (Browser, String) {
    let b = signed_in(app).await;
    let t = id_token(app, &b).await;
    (b, t)
}

/// «Вы вышли из MAX» was shown and the session in `b` is gone.
async fn assert_signed_out(app: &TestApp, b: &Browser, page: &Page) {
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.has("Вы вышли из MAX"), "{}", page.body);
    assert!(!max_session_alive(app, b).await, "the MAX session ended");
}

/// An authorization request of the diary client (PKCE for `verifier`), plus `extra`.
fn authorize_url(app: &TestApp, verifier: &str, extra: &[(&str, &str)]) -> reqwest::Url {
    let cb = format!("{}/sferum/callback", app.diary);
    let challenge = pkce_s256(verifier);
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", "mesh"),
        ("redirect_uri", cb.as_str()),
        ("scope", "openid"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    params.extend_from_slice(extra);
    reqwest::Url::parse_with_params(&format!("{}/oauth/authorize", app.max), &params).unwrap()
}

/// The demo diary client's code flow in `b` (signed in at MAX), as the suite's RP runs it; returns
/// the ID token.
async fn id_token(app: &TestApp, b: &Browser) -> String {
    let verifier = random_token(32);
    let cb = format!("{}/sferum/callback", app.diary);
    let url = authorize_url(app, &verifier, &[("state", "st-1"), ("nonce", "n-1"), ("prompt", "consent")]);
    let mut page = b.get(url.as_str()).await;
    let code = loop {
        let loc = page.location.clone().unwrap_or_else(|| panic!("no redirect at {}: {}", page.url, page.body));
        if loc.starts_with(&cb) {
            let q: HashMap<String, String> = reqwest::Url::parse(&loc).unwrap().query_pairs().into_owned().collect();
            break q["code"].clone();
        }
        page = b.get(&loc).await;
        if page.url.contains("/authorize/continue") {
            page = b.post(&format!("{}/authorize/confirm", app.max), &[("csrf", &page.csrf())]).await;
        }
    };
    redeem(app, &code, &verifier).await
}

/// Redeems a code of the diary client (redirect URI: its callback) and returns the ID token.
async fn redeem(app: &TestApp, code: &str, verifier: &str) -> String {
    let cb = format!("{}/sferum/callback", app.diary);
    let secret = app.config.diary.client_secret.clone().unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", cb.as_str()),
        ("code_verifier", verifier),
    ];
    let resp = reqwest::Client::new()
        .post(format!("{}/oauth/token", app.max))
        .basic_auth("mesh", Some(&secret))
        .form(&form)
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    body["id_token"].as_str().unwrap_or_else(|| panic!("no id_token: {body}")).to_string()
}

fn claims_of(jwt: &str) -> Value {
    let c = jwt.split('.').nth(1).unwrap();
    use base64::Engine;
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).unwrap()).unwrap()
}

/// `GET /oauth/logout` with `params`.
async fn end_session(app: &TestApp, b: &Browser, params: &[(&str, &str)]) -> Page {
    let url = reqwest::Url::parse_with_params(&format!("{}/oauth/logout", app.max), params).unwrap();
    b.get(url.as_str()).await
}

/// Whether `b` still has a MAX session: a `prompt=none` request of the diary client answers with a
/// code, or with `login_required` (the suite's check after every logout module).
async fn max_session_alive(app: &TestApp, b: &Browser) -> bool {
    let url = authorize_url(app, &random_token(32), &[("prompt", "none")]);
    let page = b.get(url.as_str()).await;
    let loc = page.location.unwrap_or_else(|| panic!("prompt=none must redirect: {}", page.body));
    let q: HashMap<String, String> = reqwest::Url::parse(&loc).unwrap().query_pairs().into_owned().collect();
    match q.get("error").map(String::as_str) {
        None => true,
        Some("login_required") => false,
        // Signed in, but this account never granted the client: the session is there.
        Some("consent_required") => true,
        Some(other) => panic!("unexpected {other}"),
    }
}

fn post_logout_uri(app: &TestApp) -> String {
    format!("{}/", app.diary)
}

both_backends! {
    /// `oidcc-rp-initiated-logout`: with the ID token of this session as `id_token_hint`, a
    /// registered `post_logout_redirect_uri` and `state`, MAX ends the session at once and sends the
    /// browser back with `state` echoed and nothing else added (RP-Initiated Logout 1.0 §2, §3);
    /// `prompt=none` then answers `login_required`. The ID token carries `sid`.
    async fn oidcc_rp_initiated_logout(app) {
    let (b, hint) = signed_in_with_id_token(&app).await;
    assert!(claims_of(&hint)["sid"].as_str().is_some_and(|s| s.len() >= 32), "sid in the ID token");
    let back = post_logout_uri(&app);
    let page = end_session(&app, &b, &[("id_token_hint", &hint), ("post_logout_redirect_uri", &back), ("state", "st 9")]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location.as_deref(), Some(format!("{back}?state=st+9").as_str()));
    assert!(!max_session_alive(&app, &b).await, "the MAX session ended");
    let events: Vec<(String,)> =
        sqlx::query_as("SELECT detail FROM audit WHERE event = 'logout'").fetch_all(max_db(&app).pool()).await.unwrap();
    assert_eq!(events, vec![("end_session".to_string(),)]);
    }
}

both_backends! {
    /// `oidcc-rp-initiated-logout-no-state`: without `state` the redirect carries no `state`.
    async fn oidcc_rp_initiated_logout_no_state(app) {
    let (b, hint) = signed_in_with_id_token(&app).await;
    let back = post_logout_uri(&app);
    let page = end_session(&app, &b, &[("id_token_hint", &hint), ("post_logout_redirect_uri", &back)]).await;
    assert_eq!(page.location.as_deref(), Some(back.as_str()));
    assert!(!max_session_alive(&app, &b).await);
    }
}

both_backends! {
    /// `oidcc-rp-initiated-logout-no-params` and `-only-state`: a logout request that proves
    /// nothing is confirmed with the person («Выйти из MAX?», a form with the session's CSRF token);
    /// once confirmed, the session ends and «Вы вышли из MAX» is shown, with no redirect.
    async fn oidcc_rp_initiated_logout_no_params(app) {
    for params in [vec![], vec![("state", "only-state")]] {
        app.clock.advance(61); // SMS codes to one phone are at least 60 s apart
        let b = signed_in(&app).await;
        let page = end_session(&app, &b, &params).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.has("Выйти из MAX?"), "{}", page.body);
        assert!(max_session_alive(&app, &b).await, "nothing ends before the person confirms");
        let done = b.post(&format!("{}/logout/confirm", app.max), &[("csrf", &page.csrf()), ("state", "only-state")]).await;
        assert_signed_out(&app, &b, &done).await;
    }
    }
}

both_backends! {
    /// `oidcc-rp-initiated-logout-no-post-logout-redirect-uri`: a valid hint and nothing else logs
    /// out and shows «Вы вышли из MAX».
    async fn oidcc_rp_initiated_logout_no_post_logout_redirect_uri(app) {
    let (b, hint) = signed_in_with_id_token(&app).await;
    let page = end_session(&app, &b, &[("id_token_hint", &hint)]).await;
    assert_signed_out(&app, &b, &page).await;
    }
}

both_backends! {
    /// `oidcc-rp-initiated-logout-no-id-token-hint`: a registered `post_logout_redirect_uri` with
    /// `client_id` but no hint is not redirected to: MAX asks first (logout CSRF, §6). The form is
    /// bound to the session's CSRF token; once confirmed, the browser goes back with `state`.
    async fn oidcc_rp_initiated_logout_no_id_token_hint(app) {
    let b = signed_in(&app).await;
    let back = post_logout_uri(&app);
    let page =
        end_session(&app, &b, &[("client_id", "mesh"), ("post_logout_redirect_uri", &back), ("state", "s-2")]).await;
    assert_eq!(page.status, StatusCode::OK, "no redirect without a hint");
    assert!(page.has("Выйти из MAX?") && page.has("МЭШ"), "{}", page.body);
    let form = |csrf: String| {
        vec![
            ("csrf", csrf),
            ("client_id", "mesh".to_string()),
            ("post_logout_redirect_uri", back.clone()),
            ("state", "s-2".to_string()),
        ]
    };
    let forged: Vec<(&str, String)> = form("x".repeat(43));
    let forged: Vec<(&str, &str)> = forged.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = b.post(&format!("{}/logout/confirm", app.max), &forged).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(max_session_alive(&app, &b).await, "a forged confirmation ends nothing");
    let real = form(page.csrf());
    let real: Vec<(&str, &str)> = real.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let done = b.post(&format!("{}/logout/confirm", app.max), &real).await;
    assert_eq!(done.location.as_deref(), Some(format!("{back}?state=s-2").as_str()));
    assert!(!max_session_alive(&app, &b).await);
    }
}

/// An ID token of the diary client signed by a key MAX never had (jsonwebtoken, ES256).
fn foreign_id_token(app: &TestApp, sub: &str) -> String {
    let kp =
        aws_lc_rs::signature::EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let der = kp.to_pkcs8v1().unwrap();
    let claims = json!({ "iss": app.max, "aud": "mesh", "sub": sub, "iat": 1, "exp": 4_000_000_000i64 });
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("foreign".into());
    jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ec_der(der.as_ref())).unwrap()
}

both_backends! {
    /// `oidcc-rp-initiated-logout-bad-id-token-hint` and `-modified-id-token-hint`: a hint signed
    /// by another key, or the real one turned into `alg: none`, is an error page — no redirect, no
    /// logout.
    async fn oidcc_rp_initiated_logout_bad_id_token_hint(app) {
    let (b, hint) = signed_in_with_id_token(&app).await;
    let sub = claims_of(&hint)["sub"].as_str().unwrap().to_string();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#), hint.split('.').nth(1).unwrap());
    let back = post_logout_uri(&app);
    for bad in [foreign_id_token(&app, &sub), none] {
        let page = end_session(&app, &b, &[("id_token_hint", &bad), ("post_logout_redirect_uri", &back)]).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
        assert!(page.location.is_none());
        assert!(page.has("Запрос на выход составлен неверно"), "{}", page.body);
    }
    assert!(max_session_alive(&app, &b).await);
    }
}

both_backends! {
    /// `oidcc-rp-initiated-logout-bad-post-logout-redirect-uri` and
    /// `-query-added-to-post-logout-redirect-uri`: a URI not registered exactly is an error page,
    /// even with a valid hint (§3.1: MAX never redirects to it), and the session lives on.
    async fn oidcc_rp_initiated_logout_bad_post_logout_redirect_uri(app) {
    let (b, hint) = signed_in_with_id_token(&app).await;
    for bad in [
        "https://evil.example/".to_string(),
        format!("{}?foo=bar", post_logout_uri(&app)),
        format!("{}/sferum/callback", app.diary),
    ] {
        let page = end_session(&app, &b, &[("id_token_hint", &hint), ("post_logout_redirect_uri", &bad)]).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(page.location.is_none(), "{bad}");
        assert!(page.has("не зарегистрирован"), "{}", page.body);
    }
    // Without a client (no hint, no client_id) no URI can be checked: refused too.
    let page = end_session(&app, &b, &[("post_logout_redirect_uri", &post_logout_uri(&app))]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(max_session_alive(&app, &b).await);
    }
}

both_backends! {
    /// RP-Initiated Logout 1.0 §2: the endpoint answers POST as GET; an expired ID token is a valid
    /// hint; `ui_locales` picks the page's language (English here).
    async fn rp_initiated_logout_by_post_with_an_expired_hint_and_ui_locales(app) {
    let (b, hint) = signed_in_with_id_token(&app).await;
    let page = b.post(&format!("{}/oauth/logout", app.max), &[("ui_locales", "en")]).await;
    assert!(page.has("Sign out of MAX?"), "{}", page.body);
    app.clock.advance(3600);
    let back = post_logout_uri(&app);
    let page = b
        .post(&format!("{}/oauth/logout", app.max), &[("id_token_hint", &hint), ("post_logout_redirect_uri", &back)])
        .await;
    assert_eq!(page.location.as_deref(), Some(back.as_str()), "{}", page.body);
    assert!(!max_session_alive(&app, &b).await);
    }
}

both_backends! {
    /// A hint from another MAX session (the same account signed in elsewhere) proves nothing about
    /// this one: MAX asks; the hint of a key that was rotated out but is still published verifies.
    async fn rp_initiated_logout_with_a_hint_of_another_session_asks_first(app) {
    let (other, hint) = signed_in_with_id_token(&app).await;
    let st = app.running.max.as_ref().unwrap();
    let now = app.clock.now();
    edulink_max::keys::rotate(&st.db, &st.secrets.key_cipher, now, 30 * 86_400).await.unwrap();
    app.clock.advance(edulink_max::keys::ACTIVATION_DELAY_SECS + 1);
    st.keys.refresh(&st.db, &st.secrets.key_cipher, app.clock.now()).await.unwrap();
    app.clock.advance(61);
    let b = signed_in(&app).await;
    let page = end_session(&app, &b, &[("id_token_hint", &hint), ("post_logout_redirect_uri", &post_logout_uri(&app))]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.has("Выйти из MAX?"));
    assert!(max_session_alive(&app, &b).await && max_session_alive(&app, &other).await);
    // In its own session the same (retired-key) hint logs out at once.
    let page = end_session(&app, &other, &[("id_token_hint", &hint)]).await;
    assert!(page.has("Вы вышли из MAX"), "{}", page.body);
    assert!(!max_session_alive(&app, &other).await && max_session_alive(&app, &b).await);
    }
}

both_backends! {
    /// `oidcc-backchannel-logout-discovery-endpoint-verification`: discovery names the
    /// end-session endpoint and says back-channel logout (with `sid`) is supported.
    async fn oidcc_backchannel_logout_discovery_endpoint_verification(app) {
    let d: Value =
        reqwest::get(format!("{}/.well-known/openid-configuration", app.max)).await.unwrap().json().await.unwrap();
    assert_eq!(d["end_session_endpoint"], format!("{}/oauth/logout", app.max));
    assert_eq!(d["backchannel_logout_supported"], true);
    assert_eq!(d["backchannel_logout_session_supported"], true);
    }
}
