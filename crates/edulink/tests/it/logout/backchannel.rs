//! Back-Channel Logout 1.0 between MAX and the diary: MAX's delivery of logout tokens (conformance
//! module `oidcc-backchannel-rp-initiated-logout`, every way a MAX session ends, retries, account
//! deletion, the client registry) and the diary's receiver, attacked rule by rule (§2.6) with
//! tokens built by `jsonwebtoken`, a JOSE library we did not write.

use super::*;

/// A count MAX's database answers.
async fn max_count(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(max_db(app).pool()).await.unwrap()
}

/// A diary student linked to MAX in a browser of their own (MAX session included).
async fn linked_student(app: &TestApp) -> Browser {
    let b = Browser::new();
    app.diary_login(&b, "student2").await;
    let done = app.link(&b, PHONE.0, PHONE.1).await;
    assert!(done.has("Ваша учетная запись успешно привязана"), "{}", done.body);
    b
}

/// The link's stored ID token (the «Сферум» button's `id_token_hint`) and its MAX `sid`.
/// (The ID token is stored encrypted: issue 19.)
async fn stored_hint(app: &TestApp) -> (Option<String>, Option<String>) {
    let (sealed, sid): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT l.id_token_enc, l.max_sid FROM links l JOIN users u ON u.id = l.user_id WHERE u.login = 'student2'",
    )
    .fetch_one(diary_db(app).pool())
    .await
    .unwrap();
    let cipher = &app.running.diary.as_ref().expect("diary").cipher;
    let hint = sealed.map(|s| String::from_utf8(cipher.open(edulink_diary::repo::HINT_CONTEXT, &s).unwrap()).unwrap());
    (hint, sid)
}

/// Whether the diary marked the link logged out at MAX (its Сферум state ended).
async fn logged_out(app: &TestApp) -> bool {
    let at: Option<i64> = sqlx::query_scalar(
        "SELECT l.logged_out_at FROM links l JOIN users u ON u.id = l.user_id WHERE u.login = 'student2'",
    )
    .fetch_one(diary_db(app).pool())
    .await
    .unwrap();
    at.is_some()
}

/// Waits (a few seconds at most) until the diary's Сферум state for the link ended.
async fn sferum_state_ended(app: &TestApp) -> bool {
    eventually(|| logged_out(app)).await
}

/// «Сферум» in the diary after a back-channel logout: MAX is asked for a fresh sign-in
/// (`prompt=login`, the hint still naming the expected account), never a silent one; once signed
/// in again, the next «Сферум» is silent again.
async fn next_sferum_signs_in_afresh(app: &TestApp, b: &Browser) {
    let start = b.get(&format!("{}/sferum", app.diary)).await;
    let to = start.location.clone().unwrap_or_else(|| panic!("{}", start.body));
    let q: HashMap<String, String> = reqwest::Url::parse(&to).unwrap().query_pairs().into_owned().collect();
    assert_eq!(q.get("prompt").map(String::as_str), Some("login"), "{to}");
    assert!(q.contains_key("id_token_hint"));
    let page = b.follow(b.get(&to).await).await;
    assert!(page.url.starts_with(&format!("{}/login", app.max)), "{}", page.url);
    app.clock.advance(61);
    let code = app.enter_phone(b, &page, PHONE.0).await;
    let landed = b.follow(app.enter_code(b, &code, &app.last_code(PHONE.1)).await).await;
    assert_eq!(landed.url, format!("{}/sferum", app.max), "{}", landed.body);
    assert!(!logged_out(app).await, "a fresh sign-in ends the mark");
    let again = b.get(&format!("{}/sferum", app.diary)).await;
    assert!(!again.location.unwrap().contains("prompt=login"));
}

both_backends! {
    /// `oidcc-backchannel-rp-initiated-logout`: the diary registered a back-channel logout URI;
    /// an RP-initiated logout at MAX posts it a logout token (§2.4 claims checked by the diary:
    /// `sub` and `sid` of the ID token it holds, no `nonce`), the diary answers 200 and ends its
    /// Сферум state — the link stays, the next «Сферум» signs in afresh. Both sides audit it.
    async fn oidcc_backchannel_rp_initiated_logout(app) {
    let b = linked_student(&app).await;
    let (hint, sid) = stored_hint(&app).await;
    let hint = hint.expect("the link keeps the ID token");
    assert_eq!(sid.as_deref(), claims_of(&hint)["sid"].as_str(), "the diary knows the MAX session");
    let back = post_logout_uri(&app);
    let page = end_session(&app, &b, &[("id_token_hint", &hint), ("post_logout_redirect_uri", &back), ("state", "bye")]).await;
    assert_eq!(page.location.as_deref(), Some(format!("{back}?state=bye").as_str()), "{}", page.body);
    assert!(sferum_state_ended(&app).await, "the diary's Сферум state ended");
    let linked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM links").fetch_one(diary_db(&app).pool()).await.unwrap();
    assert_eq!(linked, 1, "a logout is not an unlink");
    let d: Vec<(String, Option<String>)> = sqlx::query_as("SELECT event, detail FROM audit WHERE event LIKE 'backchannel%'")
        .fetch_all(diary_db(&app).pool())
        .await
        .unwrap();
    assert_eq!(d, vec![("backchannel_logout".into(), Some("sid".into()))]);
    // MAX records the delivery once the diary's 200 is back: a moment after the diary's commit.
    let jobs = "SELECT COUNT(*) FROM backchannel_jobs";
    assert!(eventually(|| async { max_count(&app, jobs).await == 0 }).await, "delivered");
    assert_eq!(max_count(&app, "SELECT COUNT(*) FROM audit WHERE event = 'backchannel_sent'").await, 1);
    next_sferum_signs_in_afresh(&app, &b).await;
    }
}

both_backends! {
    /// MAX's own «Выйти» is a sign-out at MAX too: the diary hears of it on the back channel.
    async fn max_sign_out_notifies_the_diary_on_the_back_channel(app) {
    let b = linked_student(&app).await;
    let home = b.get(&format!("{}/", app.max)).await;
    let out = b.post(&format!("{}/logout", app.max), &[("csrf", &home.csrf())]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(sferum_state_ended(&app).await);
    next_sferum_signs_in_afresh(&app, &b).await;
    }
}

/// Polls `done` every 50 ms for at most five seconds (deliveries happen in the background).
async fn eventually<F: std::future::Future<Output = bool>>(mut done: impl FnMut() -> F) -> bool {
    for _ in 0..100 {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The logout tokens a test receiver got.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Registers a local back-channel endpoint as the diary client's `backchannel_logout_uri`: it fails
/// its first `fail` calls with 503, then answers 200. Returns the logout tokens it receives.
async fn flaky_receiver(app: &TestApp, fail: usize) -> Seen {
    use axum::{Form, Router, routing::post};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let s = seen.clone();
    let router = Router::new().route(
        "/bcl",
        post(move |Form(f): Form<HashMap<String, String>>| {
            let s = s.clone();
            async move {
                let mut v = s.lock().unwrap();
                v.push(f.get("logout_token").cloned().unwrap_or_default());
                if v.len() <= fail { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK }
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/bcl", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
    let reg = edulink_max::repo::logout::LogoutRegistration {
        post_logout_redirect_uris: vec![],
        backchannel_logout_uri: Some(url),
        backchannel_logout_session_required: true,
    };
    edulink_max::repo::logout::upsert_logout(max_db(app), "mesh", &reg).await.unwrap();
    seen
}

both_backends! {
    /// Back-Channel Logout 1.0 §2.5 with delivery that must not be lost: a logout token the client
    /// could not take stays in `backchannel_jobs` (a restart finds it there) and is tried again
    /// after a backoff until the client answers 200; every attempt is a fresh token (`jti`).
    async fn backchannel_logout_tokens_are_retried_until_delivered(app) {
    let st = app.running.max.as_ref().unwrap();
    let seen = flaky_receiver(&app, 1).await;
    let (b, hint) = signed_in_with_id_token(&app).await;
    end_session(&app, &b, &[("id_token_hint", &hint)]).await;
    let jobs = || async {
        sqlx::query_as::<_, (i64, i64)>("SELECT attempts, next_attempt_at FROM backchannel_jobs")
            .fetch_all(st.db.pool())
            .await
            .unwrap()
    };
    assert!(eventually(|| async { jobs().await.first().is_some_and(|j| j.0 == 1) }).await, "the immediate attempt failed");
    let (attempts, next) = jobs().await[0];
    assert_eq!(attempts, 1);
    assert!(next > app.clock.now(), "backoff before the next attempt");
    app.clock.advance((next - app.clock.now()).max(0));
    // Due now: this call delivers it (unless the worker's poll got there first).
    edulink_max::oidc::backchannel::deliver_due(st, 10).await.unwrap();
    assert!(eventually(|| async { jobs().await.is_empty() }).await, "delivered");
    let tokens = seen.lock().unwrap().clone();
    assert_eq!(tokens.len(), 2);
    let (a, b2) = (claims_of(&tokens[0]), claims_of(&tokens[1]));
    assert_ne!(a["jti"], b2["jti"]);
    assert_eq!(a["sid"], claims_of(&hint)["sid"]);
    assert_eq!(a["sub"], claims_of(&hint)["sub"]);
    let header = jsonwebtoken::decode_header(&tokens[1]).unwrap();
    assert_eq!(header.typ.as_deref(), Some("logout+jwt"));
    assert!(a.get("nonce").is_none() && a["events"][EVENT].is_object());
    }
}

both_backends! {
    /// A deleted MAX account (the future feature calls `backchannel::account_deleted` first):
    /// every client of the account gets a logout token naming only the subject, and the diary ends
    /// its Сферум state for it.
    async fn account_deletion_notifies_every_client_by_subject(app) {
    let _b = linked_student(&app).await;
    let st = app.running.max.as_ref().unwrap();
    let (account,): (String,) = sqlx::query_as("SELECT account_id FROM grants WHERE client_id = 'mesh'")
        .fetch_one(st.db.pool())
        .await
        .unwrap();
    assert_eq!(edulink_max::oidc::backchannel::account_deleted(st, &account).await.unwrap(), 1);
    assert!(sferum_state_ended(&app).await);
    let d: Vec<(String,)> = sqlx::query_as("SELECT detail FROM audit WHERE event = 'backchannel_logout'")
        .fetch_all(diary_db(&app).pool())
        .await
        .unwrap();
    assert_eq!(d, vec![("sub".to_string(),)], "no sid: every session of the account");
    }
}

/// MAX's active EdDSA signing key (the diary client's algorithm), decrypted, as jsonwebtoken wants
/// it: the kid and the PKCS#8 document.
async fn max_eddsa_key(app: &TestApp) -> (String, Vec<u8>) {
    let st = app.running.max.as_ref().unwrap();
    let (kid, enc): (String, String) = sqlx::query_as(
        "SELECT kid, private_enc FROM signing_keys WHERE alg = 'EdDSA' AND retired_at IS NULL ORDER BY active_from DESC",
    )
    .fetch_one(st.db.pool())
    .await
    .unwrap();
    (kid, st.secrets.key_cipher.open("signing_keys.private", &enc).unwrap())
}

/// Posts `token` to the diary's back-channel logout endpoint.
async fn post_logout_token(app: &TestApp, token: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/oidc/backchannel-logout", app.diary))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

both_backends! {
    /// The diary's receiver, OpenID Connect Back-Channel Logout 1.0 §2.6 rule by rule: tokens built
    /// with jsonwebtoken, signed with MAX's own key unless the case is the key or the algorithm.
    /// Each bad one is a 400 with a JSON error naming the check, `Cache-Control: no-store`, and
    /// ends nothing; the good one is a 200 and ends the Сферум state; its replay is refused.
    async fn backchannel_receiver_validates_logout_tokens_as_the_spec_requires(app) {
    let _b = linked_student(&app).await;
    let (hint, _) = stored_hint(&app).await;
    let hint = claims_of(&hint.unwrap());
    let (kid, der) = max_eddsa_key(&app).await;
    let key = EncodingKey::from_ed_der(&der);
    let now = app.clock.now();
    let good = json!({
        "iss": app.max, "aud": "mesh", "iat": now, "exp": now + 120, "jti": random_token(16),
        "sub": hint["sub"], "sid": hint["sid"], "events": { EVENT: {} },
    });
    let header = |alg: Algorithm| {
        let mut h = Header::new(alg);
        h.kid = Some(kid.clone());
        h.typ = Some("logout+jwt".into());
        h
    };
    let sign = |claims: &Value| jsonwebtoken::encode(&header(Algorithm::EdDSA), claims, &key).unwrap();
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c["jti"] = random_token(16).into();
        if v.is_null() { c.as_object_mut().unwrap().remove(k); } else { c[k] = v; }
        sign(&c)
    };
    let mut id_token_typed = header(Algorithm::EdDSA);
    id_token_typed.typ = Some("JWT".into());
    let hs256 = jsonwebtoken::encode(&header(Algorithm::HS256), &good, &EncodingKey::from_secret(b"public-jwk")).unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("events", with("events", Value::Null)),
        ("events", with("events", json!({ "http://schemas.openid.net/event/other": {} }))),
        ("nonce", with("nonce", json!("n-1"))),
        ("aud", with("aud", json!("mesh-app"))),
        ("iss", with("iss", json!("https://evil.example"))),
        ("iat", with("iat", json!(now + 600))),
        ("iat", with("iat", json!(now - 3600))),
        ("exp", with("exp", json!(now - 600))),
        ("jti", with("jti", Value::Null)),
        ("alg", hs256),
        ("signature", foreign_logout_token(&good)),
        ("typ", jsonwebtoken::encode(&id_token_typed, &good, &key).unwrap()),
        ("malformed", "not.a.jwt".into()),
    ];
    for (why, token) in cases {
        let (status, headers, body) = post_logout_token(&app, &token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {body}");
        assert_eq!(body["error_description"], why, "{body}");
        assert_eq!(headers["cache-control"], "no-store");
    }
    let mut neither = good.clone();
    neither.as_object_mut().unwrap().remove("sub");
    neither.as_object_mut().unwrap().remove("sid");
    assert_eq!(post_logout_token(&app, &sign(&neither)).await.2["error_description"], "sub_or_sid");
    assert!(!logged_out(&app).await, "no bad token ended anything");
    let token = sign(&good);
    let (status, headers, _) = post_logout_token(&app, &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["cache-control"], "no-store");
    assert!(logged_out(&app).await);
    let (status, _, body) = post_logout_token(&app, &token).await;
    assert_eq!((status, body["error_description"].as_str()), (StatusCode::BAD_REQUEST, Some("jti_replay")));
    let refused: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit WHERE event = 'backchannel_refused'")
        .fetch_one(diary_db(&app).pool())
        .await
        .unwrap();
    assert_eq!(refused, 15);
    }
}

/// A logout token signed by an Ed25519 key MAX never had, under MAX's key id.
fn foreign_logout_token(claims: &Value) -> String {
    let kp = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
    let der = kp.to_pkcs8().unwrap();
    let mut h = Header::new(Algorithm::EdDSA);
    h.typ = Some("logout+jwt".into());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_ed_der(der.as_ref())).unwrap()
}

both_backends! {
    /// The MAX app's sign-out (`DELETE /api/v1/auth/session`) ends a MAX session like any other:
    /// a client that got an ID token in the app's session (here the diary's web client, approved
    /// in the app) is sent a logout token with that session's `sid`.
    async fn max_app_sign_out_sends_logout_tokens(app) {
    let st = app.running.max.as_ref().unwrap();
    let seen = flaky_receiver(&app, 0).await;
    let token = crate::api::max_app_sign_in(&app, PHONE.0, PHONE.1).await;
    let verifier = random_token(32);
    let authz = authorize_url(&app, &verifier, &[]);
    let url = format!("{}/api/v1/authorizations", app.max);
    let (_, created) = crate::api::post(url, Some(&token), json!({ "authorization_url": authz.as_str() })).await;
    let id = created["request_id"].as_str().unwrap_or_else(|| panic!("{created}"));
    let url = format!("{}/api/v1/authorizations/{id}/approve", app.max);
    let (_, approved) = crate::api::post(url, Some(&token), json!({})).await;
    let redirect = reqwest::Url::parse(approved["redirect_url"].as_str().unwrap()).unwrap();
    let code = redirect.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let id_token = redeem(&app, &code, &verifier).await;
    let out = reqwest::Client::new()
        .delete(format!("{}/api/v1/auth/session", app.max))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert!(eventually(|| async { !seen.lock().unwrap().is_empty() }).await);
    let tokens = seen.lock().unwrap().clone();
    assert_eq!(tokens.len(), 1, "one logout token");
    let sent = claims_of(&tokens[0]);
    assert_eq!(sent["sid"], claims_of(&id_token)["sid"]);
    assert_eq!(sent["aud"], "mesh");
    let how: Vec<(String,)> =
        sqlx::query_as("SELECT detail FROM audit WHERE event = 'logout'").fetch_all(st.db.pool()).await.unwrap();
    assert_eq!(how, vec![("app".to_string(),)]);
    }
}

both_backends! {
    /// `edulink max client add` registers a client's logout URIs (RP-Initiated Logout 1.0 §3.1,
    /// Back-Channel Logout 1.0 §2.2) and refuses a relative one.
    async fn max_client_add_registers_logout_uris(app) {
    let dir = app.config.data_dir.clone();
    let add = |extra: &'static [&'static str]| {
        let mut args = vec!["max", "client", "add", "--id", "other-rp", "--name", "Другой", "--redirect-uri"];
        args.extend(["https://rp.example/cb"].iter().chain(extra));
        args
    };
    let bad = crate::admin::edulink(&app.config, &dir, &add(&["--backchannel-logout-uri", "/bcl"])).await;
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("/bcl"));
    let extra = &["--post-logout-redirect-uri", "https://rp.example/bye", "--backchannel-logout-uri", "https://rp.example/bcl"];
    let out = crate::admin::edulink(&app.config, &dir, &add(extra)).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reg = edulink_max::repo::logout::logout_registration(max_db(&app), "other-rp").await.unwrap();
    assert_eq!(reg.post_logout_redirect_uris, vec!["https://rp.example/bye".to_string()]);
    assert_eq!(reg.backchannel_logout_uri.as_deref(), Some("https://rp.example/bcl"));
    assert!(!reg.backchannel_logout_session_required);
    }
}
