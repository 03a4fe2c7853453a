//! The config plan (`OIDCCConfigTestPlan`): its one module, `oidcc-discovery-endpoint-verification`.

use super::*;
use edulink_testkit::both_backends;

both_backends! {
    /// `oidcc-discovery-endpoint-verification` (OIDC Discovery §3–4): the issuer is the URL the
    /// document was fetched under; the endpoints are MAX's; the JWKS holds valid public keys for every
    /// advertised algorithm; `scopes_supported` has `openid` and `response_types_supported` `code`;
    /// and `scopes_supported` / `claims_supported` list exactly what MAX can return (issue 16,
    /// item 11) — each claim listed is one a flow below actually returns.
    async fn oidcc_discovery_endpoint_verification(app) {
    let resp = reqwest::get(format!("{}/.well-known/openid-configuration", app.max)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let d: Value = resp.json().await.unwrap();
    assert_eq!(d["issuer"], app.max);
    for (field, path) in [
        ("authorization_endpoint", "/oauth/authorize"),
        ("token_endpoint", "/oauth/token"),
        ("userinfo_endpoint", "/oauth/userinfo"),
        ("jwks_uri", "/oauth/jwks"),
    ] {
        assert_eq!(d[field], format!("{}{path}", app.max), "{field}");
    }
    assert_eq!(d["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(d["subject_types_supported"], serde_json::json!(["pairwise"]));
    let algs: Vec<&str> =
        d["id_token_signing_alg_values_supported"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(algs.contains(&"RS256"), "RS256 is REQUIRED (OIDC Core §15.1)");
    let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(d["jwks_uri"].as_str().unwrap()).await.unwrap().json().await.unwrap();
    for alg in &algs {
        let key = jwks.keys.iter().find(|k| k.common.key_algorithm.map(|a| format!("{a:?}")) == Some(alg.to_string()));
        let key = key.unwrap_or_else(|| panic!("a {alg} key in the JWKS"));
        assert!(key.common.key_id.is_some(), "kid");
        jsonwebtoken::DecodingKey::from_jwk(key).expect("a valid public key");
    }
    let scopes: Vec<&str> = d["scopes_supported"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert_eq!(scopes, ["openid", "profile", "phone", "offline_access", "sferum.provision"]);
    let listed: Vec<&str> = d["claims_supported"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();

    // Every listed claim is returned by some flow: the ID token's and UserInfo's with every scope.
    let (rp, b) = signed_in_suite(&app).await;
    let body = tokens(&app, &b, &rp, &Authz::new(&rp).set("scope", "openid profile phone").set("max_age", "600")).await;
    let (_, info) = userinfo(&app, body["access_token"].as_str().unwrap()).await;
    let mut returned: Vec<String> = claims(body["id_token"].as_str().unwrap()).as_object().unwrap().keys().cloned().collect();
    returned.extend(info.as_object().unwrap().keys().cloned());
    returned.sort();
    returned.dedup();
    let mut listed_sorted: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
    listed_sorted.sort();
    assert_eq!(returned, listed_sorted, "claims_supported lists exactly what can be returned");
    }
}
