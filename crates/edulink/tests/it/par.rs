//! Pushed authorization requests (RFC 9126) at MAX. Test names follow the OpenID Foundation
//! conformance suite's FAPI 2.0 PAR modules (`openid-certification/conformance-suite`,
//! `src/main/java/net/openid/conformance/fapi2spfinal/`) where one exists, otherwise the RFC section.

use crate::dpop::{APP, APP_REDIRECT, follow_to_redirect, read};
use crate::oidc::max_sign_in;
use edulink_domain::crypto::random_token;
use edulink_domain::oauth::pkce_s256;
use edulink_testkit::{Browser, TestApp, both_backends};
use reqwest::StatusCode;
use serde_json::Value;

fn mesh_secret(app: &TestApp) -> String {
    app.config.diary.client_secret.clone().unwrap()
}

/// The diary's web client's request, as form pairs.
fn mesh_request(app: &TestApp, verifier: &str) -> Vec<(String, String)> {
    [
        ("response_type", "code".to_string()),
        ("redirect_uri", format!("{}/sferum/callback", app.diary)),
        ("scope", "openid".into()),
        ("state", "st-par".into()),
        ("code_challenge", pkce_s256(verifier)),
        ("code_challenge_method", "S256".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

async fn push_mesh(app: &TestApp, form: &[(String, String)], secret: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/oauth/par", app.max))
        .basic_auth("mesh", Some(secret))
        .form(form)
        .send()
        .await
        .unwrap();
    let (status, _, body) = read(r).await;
    (status, body)
}

fn authorize_url(app: &TestApp, client_id: &str, request_uri: &str) -> String {
    reqwest::Url::parse_with_params(
        &format!("{}/oauth/authorize", app.max),
        &[("client_id", client_id), ("request_uri", request_uri)],
    )
    .unwrap()
    .to_string()
}

both_backends! {
    /// RFC 9126 §2.1–2.2, §4: a confidential client (authenticated as at the token endpoint)
    /// pushes, gets a `urn:ietf:params:oauth:request_uri:` valid 60 s, and the code flow goes on
    /// with `client_id` and `request_uri` alone; the `request_uri` serves once.
    async fn rfc9126_pushed_request_of_a_confidential_client_is_used_once(app) {
        let b = Browser::new();
        max_sign_in(&app, &b).await;
        let verifier = random_token(32);
        let (status, body) = push_mesh(&app, &mesh_request(&app, &verifier), "wrong").await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
        let (status, body) = push_mesh(&app, &mesh_request(&app, &verifier), &mesh_secret(&app)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["expires_in"], 60);
        let uri = body["request_uri"].as_str().unwrap();
        assert!(uri.starts_with("urn:ietf:params:oauth:request_uri:"), "{uri}");
        let q = follow_to_redirect(&app.max, &b, &authorize_url(&app, "mesh", uri), &format!("{}/sferum/callback", app.diary)).await;
        assert_eq!(q.get("state").map(String::as_str), Some("st-par"), "{q:?}");
        assert!(q.contains_key("code"));
        let again = b.get(&authorize_url(&app, "mesh", uri)).await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST, "used once: {}", again.body);
        assert!(again.location.is_none(), "never redirected");
    }

    /// RFC 9126 §4, §7.3: a `request_uri` pushed by one client is nobody else's, and an expired
    /// one is refused; a `request_uri` that is not ours stays `request_uri_not_supported`.
    async fn rfc9126_request_uri_is_bound_to_its_client_and_expires(app) {
        let (status, body) = push_mesh(&app, &mesh_request(&app, &random_token(32)), &mesh_secret(&app)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let uri = body["request_uri"].as_str().unwrap();
        let b = Browser::new();
        let other = b.get(&authorize_url(&app, "moyashkola", uri)).await;
        assert_eq!(other.status, StatusCode::BAD_REQUEST);
        let (_, body) = push_mesh(&app, &mesh_request(&app, &random_token(32)), &mesh_secret(&app)).await;
        let uri = body["request_uri"].as_str().unwrap().to_string();
        app.clock.advance(61);
        let late = b.get(&authorize_url(&app, "mesh", &uri)).await;
        assert_eq!(late.status, StatusCode::BAD_REQUEST);
        // Not one of ours: still OIDC Core §6.2's answer, redirected.
        let mut front = mesh_request(&app, &random_token(32));
        front.push(("client_id".into(), "mesh".into()));
        front.push(("request_uri".into(), "https://rp.example/request.jwt".into()));
        let url = reqwest::Url::parse_with_params(&format!("{}/oauth/authorize", app.max), &front).unwrap();
        let page = b.get(url.as_str()).await;
        assert!(page.location.as_deref().unwrap_or("").contains("error=request_uri_not_supported"), "{:?}", page.location);
    }

    /// FAPI2SPFinalEnsureUnsignedAuthorizationRequestWithoutUsingParFails: the app clients
    /// (`require_pushed_authorization_requests`) cannot start at `/oauth/authorize` directly.
    async fn fapi2_security_profile_final_ensure_unsigned_authorization_request_without_using_par_fails(app) {
        let challenge = pkce_s256(&random_token(32));
        let jkt = edulink_domain::dpop::ProofKey::generate().jkt();
        let url = reqwest::Url::parse_with_params(&format!("{}/oauth/authorize", app.max), &[
            ("response_type", "code"), ("client_id", APP), ("redirect_uri", APP_REDIRECT), ("scope", "openid"),
            ("state", "s"), ("code_challenge", challenge.as_str()), ("code_challenge_method", "S256"), ("dpop_jkt", jkt.as_str()),
        ]).unwrap();
        let page = Browser::new().get(url.as_str()).await;
        let loc = page.location.unwrap_or_default();
        assert!(loc.starts_with(APP_REDIRECT) && loc.contains("error=invalid_request"), "{loc}");
        let doc: Value = reqwest::get(format!("{}/.well-known/openid-configuration", app.max)).await.unwrap().json().await.unwrap();
        assert_eq!(doc["pushed_authorization_request_endpoint"], format!("{}/oauth/par", app.max));
        assert_eq!(doc["require_pushed_authorization_requests"], false, "required per client, not globally");
    }

    /// FAPI2SPFinalPARAuthorizationRequestContainingRequestUri (RFC 9126 §2.1: `request_uri` must
    /// not be pushed) and FAPI2SPFinalPARAttemptInvalidHttpMethod (only POST).
    async fn fapi2_security_profile_final_par_authorization_request_containing_request_uri(app) {
        let mut form = mesh_request(&app, &random_token(32));
        form.push(("request_uri".into(), "urn:ietf:params:oauth:request_uri:x".into()));
        let (status, body) = push_mesh(&app, &form, &mesh_secret(&app)).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")), "{body}");
        let get = reqwest::get(format!("{}/oauth/par", app.max)).await.unwrap();
        assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
        // A pushed request is validated as at the authorization endpoint (RFC 9126 §2.1).
        let mut bad = mesh_request(&app, &random_token(32));
        bad.retain(|(k, _)| k != "code_challenge");
        let (status, body) = push_mesh(&app, &bad, &mesh_secret(&app)).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")), "{body}");
    }
}
