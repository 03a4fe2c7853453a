//! The OpenID Connect provider, driven as a client would (RFC 6749, 7636, 7009, 9207, 9700).

use edulink_domain::crypto::random_token;
use edulink_domain::oauth::pkce_s256;
use edulink_testkit::{Browser, FlowsExt, TestApp, both_backends};
use reqwest::StatusCode;
use serde_json::Value;

const PHONE: &str = "+7 916 555-44-33";
const E164: &str = "+79165554433";

pub(crate) async fn max_sign_in(app: &TestApp, b: &Browser) {
    let login = b.visit(&format!("{}/login", app.max)).await;
    let code = app.enter_phone(b, &login, PHONE).await;
    let after = b.follow(app.enter_code(b, &code, &app.last_code(E164)).await).await;
    if after.url.ends_with("/login/register") {
        b.submit(
            &format!("{}/login/register", app.max),
            &[("csrf", &after.csrf()), ("first_name", "Пётр"), ("last_name", "Тестов")],
        )
        .await;
    }
}

struct Authz {
    code: String,
    verifier: String,
    redirect_uri: String,
}

/// Runs authorize (+ confirmation) for `client_id` and returns the code from the redirect.
async fn authorize(app: &TestApp, b: &Browser, client_id: &str, redirect_uri: &str) -> Authz {
    let verifier = random_token(32);
    let url = reqwest::Url::parse_with_params(
        &format!("{}/oauth/authorize", app.max),
        &[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("scope", "openid offline_access"),
            ("state", "st-123"),
            ("nonce", "n-456"),
            ("code_challenge", &pkce_s256(&verifier)),
            ("code_challenge_method", "S256"),
            ("prompt", "consent"),
        ],
    )
    .unwrap();
    let mut page = b.get(url.as_str()).await;
    loop {
        let loc = page.location.clone().unwrap_or_else(|| panic!("no redirect at {}: {}", page.url, page.body));
        if loc.starts_with(redirect_uri) {
            let u = reqwest::Url::parse(&loc).unwrap();
            let q: std::collections::HashMap<String, String> = u.query_pairs().into_owned().collect();
            assert_eq!(q.get("state").map(String::as_str), Some("st-123"));
            assert_eq!(q.get("iss"), Some(&app.max), "RFC 9207 iss in the response");
            return Authz { code: q["code"].clone(), verifier, redirect_uri: redirect_uri.into() };
        }
        page = b.get(&loc).await;
        if page.url.contains("/authorize/continue") {
            page = b.post(&format!("{}/authorize/confirm", app.max), &[("csrf", &page.csrf())]).await;
        }
    }
}

async fn token(app: &TestApp, client: Option<(&str, &str)>, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().post(format!("{}/oauth/token", app.max)).form(form);
    if let Some((id, secret)) = client {
        req = req.basic_auth(id, Some(secret));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn mesh(app: &TestApp) -> (&str, &str) {
    ("mesh", app.config.diary.client_secret.as_deref().unwrap())
}

fn redeem_form(a: &Authz) -> Vec<(&str, &str)> {
    vec![
        ("grant_type", "authorization_code"),
        ("code", &a.code),
        ("redirect_uri", &a.redirect_uri),
        ("code_verifier", &a.verifier),
    ]
}

async fn userinfo(app: &TestApp, access: &str) -> StatusCode {
    reqwest::Client::new().get(format!("{}/oauth/userinfo", app.max)).bearer_auth(access).send().await.unwrap().status()
}

both_backends! {
    async fn id_token_validates_against_the_jwks_and_subjects_are_pairwise(app) {
    let b = Browser::new();
    max_sign_in(&app, &b).await;
    let a = authorize(&app, &b, "mesh", &format!("{}/sferum/callback", app.diary)).await;
    let (status, body) = token(&app, Some(mesh(&app)), &redeem_form(&a)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["refresh_token"].is_string(), "offline_access gives a refresh token");
    let id_token = body["id_token"].as_str().unwrap();

    // Validate with an independent implementation (jsonwebtoken), keys from the JWKS.
    let jwks: jsonwebtoken::jwk::JwkSet =
        reqwest::get(format!("{}/oauth/jwks", app.max)).await.unwrap().json().await.unwrap();
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA, "the demo diary client gets EdDSA");
    let jwk = jwks.find(header.kid.as_deref().unwrap()).expect("kid published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&["mesh"]);
    v.set_issuer(&[&app.max]);
    let claims: Value = jsonwebtoken::decode(id_token, &key, &v).unwrap().claims;
    assert_eq!(claims["nonce"], "n-456");
    let mesh_sub = claims["sub"].as_str().unwrap().to_string();

    // The diary's app «Дневник МЭШ» (a public client: PKCE, PAR, DPoP) is in the diary's sector:
    // the same subject. Another diary (another sector) sees another subject.
    let st = app.running.max.as_ref().unwrap();
    let other_diary = edulink_max::oidc::Client {
        client_id: "other-diary".into(),
        name: "Другой дневник".into(),
        secret_hash: None,
        redirect_uris: vec!["https://other.example/cb".into()],
        id_token_alg: "RS256".into(),
        sector: "other".into(),
        scopes: vec!["openid".into(), "offline_access".into()],
        policy: Default::default(),
    };
    edulink_max::oidc::upsert_client(&st.db, &other_diary, st.now()).await.unwrap();
    let sub_of = |body: &Value| -> String {
        let payload = body["id_token"].as_str().unwrap().split('.').nth(1).unwrap();
        use base64::Engine;
        let claims: Value =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        claims["sub"].as_str().unwrap().to_string()
    };
    // The app goes by PAR and DPoP (crate::dpop): «Дневник МЭШ», ES256.
    let body = crate::dpop::DpopApp::new(&app).tokens(&b).await;
    let header = jsonwebtoken::decode_header(body["id_token"].as_str().unwrap()).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(sub_of(&body), mesh_sub, "the diary's app shares the diary's sector");
    let a3 = authorize(&app, &b, "other-diary", "https://other.example/cb").await;
    let mut form = redeem_form(&a3);
    form.push(("client_id", "other-diary"));
    let (status, other) = token(&app, None, &form).await;
    assert_eq!(status, StatusCode::OK, "{other}");
    let header = jsonwebtoken::decode_header(other["id_token"].as_str().unwrap()).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256, "RS256 is the default");
    let other = serde_json::json!({ "sub": sub_of(&other) });
    assert_ne!(other["sub"].as_str().unwrap(), mesh_sub, "pairwise subjects differ between sectors");
    }
}

both_backends! {
    async fn a_replayed_code_is_refused_and_revokes_what_it_issued(app) {
    let b = Browser::new();
    max_sign_in(&app, &b).await;
    let a = authorize(&app, &b, "mesh", &format!("{}/sferum/callback", app.diary)).await;
    let (status, first) = token(&app, Some(mesh(&app)), &redeem_form(&a)).await;
    assert_eq!(status, StatusCode::OK);
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(userinfo(&app, access).await, StatusCode::OK);
    let (status, second) = token(&app, Some(mesh(&app)), &redeem_form(&a)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(second["error"], "invalid_grant");
    assert_eq!(userinfo(&app, access).await, StatusCode::UNAUTHORIZED, "tokens of a replayed code are revoked");
    let (status, refreshed) = token(
        &app,
        Some(mesh(&app)),
        &[("grant_type", "refresh_token"), ("refresh_token", first["refresh_token"].as_str().unwrap())],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refreshed}");
    }
}

both_backends! {
    async fn codes_are_bound_to_the_verifier_and_expire_after_60_seconds(app) {
    let b = Browser::new();
    max_sign_in(&app, &b).await;
    let cb = format!("{}/sferum/callback", app.diary);
    let mut a = authorize(&app, &b, "mesh", &cb).await;
    a.verifier = random_token(32);
    let (status, body) = token(&app, Some(mesh(&app)), &redeem_form(&a)).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));

    let a = authorize(&app, &b, "mesh", &cb).await;
    app.clock.advance(61);
    let (status, body) = token(&app, Some(mesh(&app)), &redeem_form(&a)).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    }
}

both_backends! {
    async fn refresh_tokens_rotate_and_a_reused_one_revokes_its_family(app) {
    let b = Browser::new();
    max_sign_in(&app, &b).await;
    let a = authorize(&app, &b, "mesh", &format!("{}/sferum/callback", app.diary)).await;
    let (_, first) = token(&app, Some(mesh(&app)), &redeem_form(&a)).await;
    let r1 = first["refresh_token"].as_str().unwrap().to_string();
    let (status, second) =
        token(&app, Some(mesh(&app)), &[("grant_type", "refresh_token"), ("refresh_token", &r1)]).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let r2 = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r2);
    let a2 = second["access_token"].as_str().unwrap().to_string();
    assert_eq!(userinfo(&app, &a2).await, StatusCode::OK);
    // r1 again: reuse → refused, and the whole family (r2, its access token) dies.
    let (status, _) = token(&app, Some(mesh(&app)), &[("grant_type", "refresh_token"), ("refresh_token", &r1)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(userinfo(&app, &a2).await, StatusCode::UNAUTHORIZED);
    let (status, _) = token(&app, Some(mesh(&app)), &[("grant_type", "refresh_token"), ("refresh_token", &r2)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}

both_backends! {
    async fn revocation_rfc7009_kills_the_refresh_token_and_its_access_tokens(app) {
    let b = Browser::new();
    max_sign_in(&app, &b).await;
    let a = authorize(&app, &b, "mesh", &format!("{}/sferum/callback", app.diary)).await;
    let (_, body) = token(&app, Some(mesh(&app)), &redeem_form(&a)).await;
    let (id, secret) = mesh(&app);
    let resp = reqwest::Client::new()
        .post(format!("{}/oauth/revoke", app.max))
        .basic_auth(id, Some(secret))
        .form(&[("token", body["refresh_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(userinfo(&app, body["access_token"].as_str().unwrap()).await, StatusCode::UNAUTHORIZED);
    // Unknown tokens are fine too (RFC 7009 §2.2); bad client authentication is not.
    let resp = reqwest::Client::new()
        .post(format!("{}/oauth/revoke", app.max))
        .basic_auth(id, Some("wrong"))
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
}

both_backends! {
    async fn a_mismatched_redirect_uri_or_unknown_client_is_refused_without_redirect(app) {
    let b = Browser::new();
    let cb = format!("{}/sferum/callback", app.diary);
    let challenge = pkce_s256(&random_token(32));
    for (client, redirect) in [
        ("mesh", format!("{cb}/")),
        ("mesh", format!("{cb}?x=1")),
        ("mesh", cb.replace("127.0.0.1", "localhost")),
        ("mesh", "https://evil.example/cb".to_string()),
        ("nobody", cb.clone()),
    ] {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/oauth/authorize", app.max),
            &[
                ("response_type", "code"),
                ("client_id", client),
                ("redirect_uri", &redirect),
                ("scope", "openid"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        )
        .unwrap();
        let p = b.get(url.as_str()).await;
        assert_eq!(p.status, StatusCode::BAD_REQUEST, "{client} {redirect}");
        assert!(p.location.is_none(), "never redirect to an unregistered URI");
        assert!(p.has("Что-то пошло не так"));
    }
    }
}

both_backends! {
    async fn only_code_flow_with_s256_pkce_is_accepted(app) {
    let b = Browser::new();
    let cb = format!("{}/sferum/callback", app.diary);
    let challenge = pkce_s256(&random_token(32));
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("response_type", "token"), ("code_challenge", &challenge), ("code_challenge_method", "S256")],
            "unsupported_response_type",
        ),
        (vec![("response_type", "code")], "invalid_request"),
        (
            vec![("response_type", "code"), ("code_challenge", &challenge), ("code_challenge_method", "plain")],
            "invalid_request",
        ),
    ];
    for (extra, expected) in cases {
        let mut params =
            vec![("client_id", "mesh"), ("redirect_uri", cb.as_str()), ("scope", "openid"), ("state", "s")];
        params.extend(extra);
        let url = reqwest::Url::parse_with_params(&format!("{}/oauth/authorize", app.max), &params).unwrap();
        let p = b.get(url.as_str()).await;
        let loc = p.location.expect("errors after a good redirect_uri go back to the client");
        assert!(loc.starts_with(&cb), "{loc}");
        assert!(loc.contains(&format!("error={expected}")), "{loc}");
        assert!(loc.contains("iss="), "{loc}");
    }
    // The password grant does not exist; client credentials need a confidential client.
    let (status, body) =
        token(&app, Some(mesh(&app)), &[("grant_type", "password"), ("username", "a"), ("password", "b")]).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("unsupported_grant_type")));
    let (status, body) = token(&app, Some(("mesh", "wrong")), &[("grant_type", "client_credentials")]).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
    let (status, body) =
        token(&app, Some(mesh(&app)), &[("grant_type", "client_credentials"), ("scope", "sferum.provision")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    }
}

both_backends! {
    async fn discovery_and_jwks_describe_the_provider(app) {
    let d: Value =
        reqwest::get(format!("{}/.well-known/openid-configuration", app.max)).await.unwrap().json().await.unwrap();
    assert_eq!(d["issuer"], app.max);
    assert_eq!(d["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(d["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(d["subject_types_supported"], serde_json::json!(["pairwise"]));
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    let jwks: Value = reqwest::get(format!("{}/oauth/jwks", app.max)).await.unwrap().json().await.unwrap();
    let algs: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["alg"].as_str().unwrap()).collect();
    for alg in ["RS256", "ES256", "EdDSA"] {
        assert!(algs.contains(&alg), "{alg} published");
    }
    assert!(jwks["keys"].as_array().unwrap().iter().all(|k| k.get("d").is_none()), "no private parts");
    }
}
