//! The basic plan's modules for the code flow, the ID token, UserInfo, scopes, codes, redirect URIs
//! and request objects (`OIDCCBasicTestPlan`, variant `code` + `client_secret_basic`).

use super::*;
use edulink_testkit::both_backends;
use jsonwebtoken::Algorithm;

both_backends! {
    /// `oidcc-server`: the code flow end to end — `state` and `iss` come back with the code, the
    /// token endpoint takes `client_secret_basic`, and the ID token verifies with the JWKS (RS256,
    /// `kid`) and carries `iss`, `aud`, `sub`, `exp`, `iat`, `auth_time` and the `nonce` sent.
    async fn oidcc_server(app) {
    let (rp, b) = signed_in_suite(&app).await;
    let authz = Authz::new(&rp);
    let q = authorize(&app, &b, &rp, &authz).await;
    assert_eq!(q.get("state").map(String::as_str), Some("st-9"));
    assert_eq!(q.get("iss"), Some(&app.max));
    let (status, body) = redeem(&app, &rp, &q["code"], &authz.verifier).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let claims = verify_id_token(&app, body["id_token"].as_str().unwrap(), Algorithm::RS256, &rp.id).await;
    assert_eq!(claims["nonce"], "n-9");
    assert!(claims["auth_time"].is_i64(), "{claims}");
    }
}

both_backends! {
    /// `oidcc-server-client-secret-post`: the same flow with the client's credentials in the body.
    async fn oidcc_server_client_secret_post(app) {
    let (rp, b) = signed_in_suite(&app).await;
    let authz = Authz::new(&rp);
    let q = authorize(&app, &b, &rp, &authz).await;
    let secret = rp.secret.clone().unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", q["code"].as_str()),
        ("redirect_uri", rp.redirect_uri.as_str()),
        ("code_verifier", authz.verifier.as_str()),
        ("client_id", rp.id.as_str()),
        ("client_secret", secret.as_str()),
    ];
    let resp = reqwest::Client::new().post(format!("{}/oauth/token", app.max)).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    verify_id_token(&app, body["id_token"].as_str().unwrap(), Algorithm::RS256, &rp.id).await;
    }
}

both_backends! {
    /// `oidcc-response-type-missing`: without `response_type` the error goes back to the client.
    async fn oidcc_response_type_missing(app) {
    let rp = suite_rp(&app).await;
    let page = Browser::new().get(&Authz::new(&rp).without("response_type").url(&app)).await;
    let error = redirected_error(&app, &rp, &page);
    assert!(["unsupported_response_type", "invalid_request"].contains(&error.as_str()), "{error}");
    }
}

both_backends! {
    /// `oidcc-idtoken-signature`: the ID token is signed with a published key (`kid`) and a changed
    /// signature does not verify.
    async fn oidcc_idtoken_signature(app) {
    let (rp, b) = signed_in_suite(&app).await;
    let body = tokens(&app, &b, &rp, &Authz::new(&rp)).await;
    let id_token = body["id_token"].as_str().unwrap();
    verify_id_token(&app, id_token, Algorithm::RS256, &rp.id).await;
    let jwks: jsonwebtoken::jwk::JwkSet =
        reqwest::get(format!("{}/oauth/jwks", app.max)).await.unwrap().json().await.unwrap();
    let kid = jsonwebtoken::decode_header(id_token).unwrap().kid.unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
    let (head, sig) = id_token.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { sig.replacen('A', "B", 1) } else { format!("A{}", &sig[1..]) };
    let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
    v.set_audience(&[&rp.id]);
    assert!(jsonwebtoken::decode::<Value>(&format!("{head}.{flipped}"), &key, &v).is_err());
    }
}

both_backends! {
    /// `oidcc-idtoken-unsigned` does not apply: the suite skips it unless `none` is among
    /// `id_token_signing_alg_values_supported`, and MAX never issues unsigned ID tokens.
    async fn oidcc_idtoken_unsigned(app) {
    let d = discovery(&app).await;
    let algs = d["id_token_signing_alg_values_supported"].as_array().unwrap();
    assert!(!algs.iter().any(|a| a == "none"), "{algs:?}");
    }
}

/// A signed-in browser's access token of the suite's client for `scope`.
async fn access_token(app: &TestApp, scope: &str) -> (Rp, Value) {
    let (rp, b) = signed_in_suite(app).await;
    let body = tokens(app, &b, &rp, &Authz::new(&rp).set("scope", scope)).await;
    (rp, body)
}

both_backends! {
    /// `oidcc-userinfo-get`: UserInfo by GET with the bearer header; `sub` is the ID token's.
    async fn oidcc_userinfo_get(app) {
    let (_, body) = access_token(&app, "openid").await;
    let (status, info) = userinfo(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["sub"], claims(body["id_token"].as_str().unwrap())["sub"]);
    }
}

both_backends! {
    /// `oidcc-userinfo-post-header`: UserInfo by POST with the bearer header.
    async fn oidcc_userinfo_post_header(app) {
    let (_, body) = access_token(&app, "openid").await;
    let resp = reqwest::Client::new()
        .post(format!("{}/oauth/userinfo", app.max))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let info: Value = resp.json().await.unwrap();
    assert_eq!(info["sub"], claims(body["id_token"].as_str().unwrap())["sub"]);
    }
}

both_backends! {
    /// `oidcc-userinfo-post-body` (issue 16, defect 5): the access token as `access_token` in a
    /// form-encoded POST body (RFC 6750 §2.2, pyoidc's default) is accepted; one method only — the
    /// header and the body together are `invalid_request` (RFC 6750 §2, §3.1); never the query (§2.3).
    async fn oidcc_userinfo_post_body(app) {
    let (_, body) = access_token(&app, "openid").await;
    let access = body["access_token"].as_str().unwrap();
    let url = format!("{}/oauth/userinfo", app.max);
    let client = reqwest::Client::new();
    let resp = client.post(&url).form(&[("access_token", access)]).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let info: Value = resp.json().await.unwrap();
    assert_eq!(info["sub"], claims(body["id_token"].as_str().unwrap())["sub"]);
    let both = client.post(&url).bearer_auth(access).form(&[("access_token", access)]).send().await.unwrap();
    assert_eq!(both.status(), StatusCode::BAD_REQUEST);
    assert_eq!(both.json::<Value>().await.unwrap()["error"], "invalid_request");
    let twice = client.post(&url).body(format!("access_token={access}&access_token={access}"))
        .header("content-type", "application/x-www-form-urlencoded").send().await.unwrap();
    assert_eq!(twice.status(), StatusCode::BAD_REQUEST);
    let query = client.get(format!("{url}?access_token={access}")).send().await.unwrap();
    assert_eq!(query.status(), StatusCode::UNAUTHORIZED, "RFC 6750 §2.3 is not supported");
    }
}

both_backends! {
    /// `oidcc-ensure-request-without-nonce-succeeds-for-code-flow`: `nonce` is optional in the code
    /// flow; the ID token then carries none.
    async fn oidcc_ensure_request_without_nonce_succeeds_for_code_flow(app) {
    let (rp, b) = signed_in_suite(&app).await;
    let body = tokens(&app, &b, &rp, &Authz::new(&rp).without("nonce")).await;
    assert!(claims(body["id_token"].as_str().unwrap()).get("nonce").is_none());
    }
}

both_backends! {
    /// `oidcc-scope-profile`: `profile` releases the names MAX holds at UserInfo.
    async fn oidcc_scope_profile(app) {
    let (_, body) = access_token(&app, "openid profile").await;
    assert_eq!(body["scope"], "openid profile");
    let (_, info) = userinfo(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!((info["given_name"].as_str(), info["family_name"].as_str()), (Some("Пётр"), Some("Тестов")));
    assert_eq!(info["name"], "Пётр Тестов");
    }
}

both_backends! {
    /// `oidcc-scope-email` (issue 16, defect 6): MAX holds no e-mail, so `email` is not in
    /// `scopes_supported` (the suite then skips the module) and a request for it is not refused: the
    /// unknown scope is ignored (OIDC Core §3.1.2.1) and the granted scope says so (RFC 6749 §3.3).
    async fn oidcc_scope_email(app) {
    let d = discovery(&app).await;
    assert!(!d["scopes_supported"].as_array().unwrap().iter().any(|s| s == "email"));
    let (_, body) = access_token(&app, "openid email").await;
    assert_eq!(body["scope"], "openid");
    let (_, info) = userinfo(&app, body["access_token"].as_str().unwrap()).await;
    assert!(info.get("email").is_none(), "{info}");
    }
}

both_backends! {
    /// `oidcc-scope-address`: as `email` — not offered, ignored when asked for.
    async fn oidcc_scope_address(app) {
    let d = discovery(&app).await;
    assert!(!d["scopes_supported"].as_array().unwrap().iter().any(|s| s == "address"));
    let (_, body) = access_token(&app, "openid address").await;
    assert_eq!(body["scope"], "openid");
    }
}

both_backends! {
    /// `oidcc-scope-phone` (issue 16, item 11): a client registered for `phone` gets
    /// `phone_number` in E.164 and `phone_number_verified` (the person signed in with an SMS to it)
    /// after the person consented on a page that says so.
    async fn oidcc_scope_phone(app) {
    let (rp, b) = signed_in_suite(&app).await;
    let authz = Authz::new(&rp).set("scope", "openid phone");
    let page = visit_max(&app, &b, &authz.url(&app)).await;
    assert!(page.has("получит номер телефона"), "the consent page names the phone: {}", page.body);
    let q = to_client(&b, &rp, page, true).await.unwrap();
    let (_, body) = redeem(&app, &rp, &q["code"], &authz.verifier).await;
    assert_eq!(body["scope"], "openid phone");
    let (_, info) = userinfo(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(info["phone_number"], E164);
    assert_eq!(info["phone_number_verified"], true);
    }
}

both_backends! {
    /// `oidcc-scope-all`: every scope at once; the ones MAX offers are granted, the others ignored.
    async fn oidcc_scope_all(app) {
    let (_, body) = access_token(&app, "openid profile email address phone").await;
    assert_eq!(body["scope"], "openid phone profile");
    let (_, info) = userinfo(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(info["name"], "Пётр Тестов");
    assert_eq!(info["phone_number"], E164);
    }
}

both_backends! {
    /// `oidcc-ensure-other-scope-order-succeeds`: scope order does not matter (RFC 6749 §3.3).
    async fn oidcc_ensure_other_scope_order_succeeds(app) {
    let (_, body) = access_token(&app, "profile email openid").await;
    assert_eq!(body["scope"], "openid profile");
    }
}

both_backends! {
    /// `oidcc-codereuse`: a code redeemed twice is refused the second time.
    async fn oidcc_codereuse(app) {
    let (rp, b) = signed_in_suite(&app).await;
    let authz = Authz::new(&rp);
    let q = authorize(&app, &b, &rp, &authz).await;
    assert_eq!(redeem(&app, &rp, &q["code"], &authz.verifier).await.0, StatusCode::OK);
    let (status, body) = redeem(&app, &rp, &q["code"], &authz.verifier).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    }
}

both_backends! {
    /// `oidcc-codereuse-30seconds`: a code presented again 30 s later is refused, and the access
    /// token it gave is revoked (RFC 6749 §4.1.2).
    async fn oidcc_codereuse_30seconds(app) {
    let (rp, b) = signed_in_suite(&app).await;
    let authz = Authz::new(&rp);
    let q = authorize(&app, &b, &rp, &authz).await;
    let (_, first) = redeem(&app, &rp, &q["code"], &authz.verifier).await;
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(userinfo(&app, access).await.0, StatusCode::OK);
    app.clock.advance(30);
    let (status, body) = redeem(&app, &rp, &q["code"], &authz.verifier).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    assert_eq!(userinfo(&app, access).await.0, StatusCode::UNAUTHORIZED);
    }
}

both_backends! {
    /// `oidcc-ensure-registered-redirect-uri`: an unregistered redirect URI is refused on a page of
    /// MAX's own, never redirected to.
    async fn oidcc_ensure_registered_redirect_uri(app) {
    let rp = suite_rp(&app).await;
    let page = Browser::new().get(&Authz::new(&rp).set("redirect_uri", "https://attacker.example/cb").url(&app)).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.location.is_none());
    }
}

both_backends! {
    /// `oidcc-ensure-redirect-uri-in-authorization-request`: without `redirect_uri` the request is
    /// refused on MAX's page (OIDC Core §3.1.2.1: REQUIRED), never redirected.
    async fn oidcc_ensure_redirect_uri_in_authorization_request(app) {
    let rp = suite_rp(&app).await;
    let page = Browser::new().get(&Authz::new(&rp).without("redirect_uri").url(&app)).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.location.is_none());
    }
}

both_backends! {
    /// `oidcc-ensure-post-request-succeeds` (OIDC Core §3.1.2.1: GET and POST): the same request as
    /// a form body is answered as by GET, and an invalid one goes back with its error.
    async fn oidcc_ensure_post_request_succeeds(app) {
    let (rp, b) = signed_in_suite(&app).await;
    let authz = Authz::new(&rp);
    let form: Vec<(&str, &str)> = authz.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let posted = b.post(&format!("{}/oauth/authorize", app.max), &form).await;
    let q = to_client(&b, &rp, posted, true).await.unwrap();
    assert_eq!(redeem(&app, &rp, &q["code"], &authz.verifier).await.0, StatusCode::OK);
    let bad = Authz::new(&rp).set("response_type", "token");
    let form: Vec<(&str, &str)> = bad.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let refused = b.post(&format!("{}/oauth/authorize", app.max), &form).await;
    assert_eq!(redirected_error(&app, &rp, &refused), "unsupported_response_type");
    }
}

/// Asserts an authorization request with `param=value` goes back with `error`, and that discovery
/// says request objects are unsupported (OIDC Discovery §3: absent, `request_uri_parameter_supported`
/// would default to true).
async fn rejected_as_unsupported(app: &TestApp, param: &str, value: &str, error: &str) {
    let rp = suite_rp(app).await;
    let page = Browser::new().get(&Authz::new(&rp).set(param, value).url(app)).await;
    assert_eq!(redirected_error(app, &rp, &page), error);
    let d = discovery(app).await;
    assert_eq!(d["request_uri_parameter_supported"], false);
    assert_eq!(d["request_parameter_supported"], false);
}

both_backends! {
    /// `oidcc-request-uri-unsigned-supported-correctly-or-rejected-as-unsupported`: OIDC Core §6.2's
    /// `request_uri_not_supported`.
    async fn oidcc_request_uri_unsigned_supported_correctly_or_rejected_as_unsupported(app) {
    rejected_as_unsupported(&app, "request_uri", "https://rp.example/request.jwt", "request_uri_not_supported").await;
    }
}

both_backends! {
    /// `oidcc-unsigned-request-object-supported-correctly-or-rejected-as-unsupported`: OIDC Core
    /// §6.1's `request_not_supported`.
    async fn oidcc_unsigned_request_object_supported_correctly_or_rejected_as_unsupported(app) {
    rejected_as_unsupported(&app, "request", "eyJhbGciOiJub25lIn0.eyJzY29wZSI6Im9wZW5pZCJ9.", "request_not_supported").await;
    }
}

both_backends! {
    /// `oidcc-ensure-request-object-with-redirect-uri`: only meaningful for an OP that processes
    /// request objects; MAX rejects one carrying `redirect_uri` like any other.
    async fn oidcc_ensure_request_object_with_redirect_uri(app) {
    let object = "eyJhbGciOiJub25lIn0.eyJyZWRpcmVjdF91cmkiOiJodHRwczovL3JwLmV4YW1wbGUvY2IifQ.";
    rejected_as_unsupported(&app, "request", object, "request_not_supported").await;
    }
}

both_backends! {
    /// `oidcc-claims-essential`: the `claims` parameter (not supported, so not advertised:
    /// `claims_parameter_supported` absent, i.e. false) is ignored and the request succeeds; `name`
    /// comes with the `profile` scope only (the suite warns, it does not fail).
    async fn oidcc_claims_essential(app) {
    let (rp, b) = signed_in_suite(&app).await;
    let authz = Authz::new(&rp).set("claims", r#"{"userinfo":{"name":{"essential":true}}}"#);
    let body = tokens(&app, &b, &rp, &authz).await;
    assert_eq!(userinfo(&app, body["access_token"].as_str().unwrap()).await.0, StatusCode::OK);
    let d = discovery(&app).await;
    assert!(d.get("claims_parameter_supported").is_none_or(|v| v == false));
    }
}

both_backends! {
    /// `oidcc-refresh-token`: `offline_access` gives a refresh token; it gives a new access token
    /// (and a rotated refresh token), and another client cannot use it.
    async fn oidcc_refresh_token(app) {
    let (rp, body) = access_token(&app, "openid offline_access").await;
    let refresh = body["refresh_token"].as_str().expect("offline_access gives a refresh token");
    let (status, next) = token(&app, &rp, &[("grant_type", "refresh_token"), ("refresh_token", refresh)]).await;
    assert_eq!(status, StatusCode::OK, "{next}");
    assert_eq!(userinfo(&app, next["access_token"].as_str().unwrap()).await.0, StatusCode::OK);
    assert_ne!(next["refresh_token"].as_str(), Some(refresh), "rotated");
    let other = diary_rp(&app);
    let rotated = next["refresh_token"].as_str().unwrap();
    let (status, err) = token(&app, &other, &[("grant_type", "refresh_token"), ("refresh_token", rotated)]).await;
    assert_eq!((status, err["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    }
}

both_backends! {
    /// `oidcc-ensure-request-with-valid-pkce-succeeds`: S256 PKCE succeeds; a wrong verifier does not.
    async fn oidcc_ensure_request_with_valid_pkce_succeeds(app) {
    let (rp, b) = signed_in_suite(&app).await;
    let authz = Authz::new(&rp);
    let q = authorize(&app, &b, &rp, &authz).await;
    assert_eq!(redeem(&app, &rp, &q["code"], &authz.verifier).await.0, StatusCode::OK);
    let authz = Authz::new(&rp);
    let q = authorize(&app, &b, &rp, &authz).await;
    assert_eq!(redeem(&app, &rp, &q["code"], &random_token(32)).await.0, StatusCode::BAD_REQUEST);
    }
}

both_backends! {
    /// Token endpoint responses, success and error, are never cached (RFC 6749 §5.1: `Cache-Control:
    /// no-store` and `Pragma: no-cache`; the suite's `CheckForCacheControlHeaderInTokenEndpointResponse`
    /// family checks the same on every grant it runs).
    async fn token_endpoint_responses_are_never_cached(app) {
    let secret = app.config.diary.client_secret.clone().unwrap();
    let client = reqwest::Client::new();
    for form in [
        vec![("grant_type", "client_credentials"), ("scope", "sferum.provision")],
        vec![("grant_type", "authorization_code"), ("code", "nonsense"), ("code_verifier", "x")],
    ] {
        let r = client
            .post(format!("{}/oauth/token", app.max))
            .basic_auth("mesh", Some(&secret))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["cache-control"], "no-store", "{form:?}");
        assert_eq!(r.headers()["pragma"], "no-cache", "{form:?}");
    }
    }
}
