//! Token introspection (RFC 7662) at MAX, and its policy (crates/max/src/oidc/introspection.rs):
//! confidential callers only; a caller learns about access tokens of its own sector's clients and
//! its own refresh tokens; everything else is `{"active": false}`.

use crate::dpop::{DpopApp, read};
use crate::oidc::max_sign_in;
use edulink_testkit::{Browser, TestApp, both_backends};
use reqwest::StatusCode;
use serde_json::Value;

async fn introspect(app: &TestApp, client: (&str, &str), token: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/oauth/introspect", app.max))
        .basic_auth(client.0, Some(client.1))
        .form(&[("token", token), ("token_type_hint", "access_token")])
        .send()
        .await
        .unwrap();
    let (status, headers, body) = read(r).await;
    assert_eq!(headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    (status, body)
}

/// Registers another confidential client in another sector; returns its secret.
async fn other_party(app: &TestApp) -> String {
    let st = app.running.max.as_ref().unwrap();
    let secret = "other-secret-0123456789";
    let other = edulink_max::oidc::Client {
        client_id: "other-rs".into(),
        name: "Другой сервис".into(),
        secret_hash: Some(edulink_domain::crypto::sha256_b64(secret)),
        redirect_uris: vec!["https://other.example/cb".into()],
        id_token_alg: "RS256".into(),
        sector: "other".into(),
        scopes: vec!["openid".into()],
        policy: Default::default(),
    };
    edulink_max::oidc::upsert_client(&st.db, &other, st.now()).await.unwrap();
    secret.into()
}

both_backends! {
    /// RFC 7662 §2.2 with RFC 9449 §6.2: the diary (a confidential client, the resource server of
    /// its apps) introspects its app's DPoP-bound access token: active, `token_type` `DPoP`,
    /// `cnf.jkt` the app key's thumbprint, the pairwise `sub` of the diary's sector. Another
    /// party, a public client, a revoked or unknown token: never more than `active: false`.
    async fn rfc7662_introspection_of_an_app_token_by_its_resource_server(app) {
        let b = Browser::new();
        max_sign_in(&app, &b).await;
        let a = DpopApp::new(&app);
        let tokens = a.tokens(&b).await;
        let access = tokens["access_token"].as_str().unwrap();
        let secret = app.config.diary.client_secret.clone().unwrap();
        let (status, body) = introspect(&app, ("mesh", &secret), access).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["active"], true, "{body}");
        assert_eq!(body["token_type"], "DPoP");
        assert_eq!(body["client_id"], "mesh-app");
        assert_eq!(body["cnf"]["jkt"], a.key.jkt());
        assert_eq!(body["scope"], tokens["scope"], "the granted scope");
        assert_eq!(body["iss"], app.max);
        assert!(body["exp"].as_i64().unwrap() > body["iat"].as_i64().unwrap());
        let claims: Value = {
            use base64::Engine;
            let payload = tokens["id_token"].as_str().unwrap().split('.').nth(1).unwrap();
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
        };
        assert_eq!(body["sub"], claims["sub"], "the subject the sector knows");
        // The app's refresh token is the app's business, not the diary's.
        let (_, refresh) = introspect(&app, ("mesh", &secret), tokens["refresh_token"].as_str().unwrap()).await;
        assert_eq!(refresh, serde_json::json!({ "active": false }));

        // Another party learns nothing, exactly as for a token that does not exist.
        let other = other_party(&app).await;
        let (status, theirs) = introspect(&app, ("other-rs", &other), access).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(theirs, serde_json::json!({ "active": false }));
        let (_, unknown) = introspect(&app, ("other-rs", &other), "no-such-token").await;
        assert_eq!(unknown, theirs);
        // A public client cannot introspect.
        let public = reqwest::Client::new()
            .post(format!("{}/oauth/introspect", app.max))
            .form(&[("token", access), ("client_id", "moyashkola")])
            .send()
            .await
            .unwrap();
        assert_eq!(public.status(), StatusCode::UNAUTHORIZED);
        // Revoked: inactive.
        let revoke = reqwest::Client::new()
            .post(format!("{}/oauth/revoke", app.max))
            .form(&[("token", access), ("client_id", "mesh-app")])
            .send()
            .await
            .unwrap();
        assert_eq!(revoke.status(), StatusCode::OK);
        let (_, after) = introspect(&app, ("mesh", &secret), access).await;
        assert_eq!(after, serde_json::json!({ "active": false }));
        let doc: Value = reqwest::get(format!("{}/.well-known/openid-configuration", app.max)).await.unwrap().json().await.unwrap();
        assert_eq!(doc["introspection_endpoint"], format!("{}/oauth/introspect", app.max));
    }
}
