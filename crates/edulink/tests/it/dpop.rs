//! DPoP (RFC 9449) at MAX, driven as the diary's apps drive it: PAR with a proof, the code bound
//! to the key, tokens bound to it (`token_type` `DPoP`), server nonces (`use_dpop_nonce`), refresh
//! with the same key, UserInfo with `Authorization: DPoP`, a bound token refused as `Bearer`.
//! Test names follow the OpenID Foundation conformance suite's FAPI 2.0 modules
//! (`openid-certification/conformance-suite`, `src/main/java/net/openid/conformance/fapi2spfinal/`)
//! where one exists, otherwise the RFC section. The helpers here act as the app for the other
//! files (`par.rs`, `introspection.rs`, `oidc.rs`).

use crate::oidc::max_sign_in;
use edulink_domain::Clock;
use edulink_domain::crypto::random_token;
use edulink_domain::dpop::ProofKey;
use edulink_domain::oauth::pkce_s256;
use edulink_testkit::{Browser, TestApp, both_backends};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;

/// «Дневник МЭШ», a public app client with DPoP and PAR required.
pub(crate) const APP: &str = "mesh-app";
/// Its app-link redirect.
pub(crate) const APP_REDIRECT: &str = "ru.mos.dnevnik:/sferum/callback";

/// An app holding a DPoP key, keeping MAX's last nonce.
pub(crate) struct DpopApp {
    pub(crate) key: ProofKey,
    nonce: Mutex<Option<String>>,
    max: String,
    clock: std::sync::Arc<edulink_domain::ManualClock>,
}

/// A response: status, headers, JSON body.
pub(crate) type Answer = (StatusCode, HeaderMap, Value);

impl DpopApp {
    pub(crate) fn new(app: &TestApp) -> Self {
        Self { key: ProofKey::generate(), nonce: Mutex::new(None), max: app.max.clone(), clock: app.clock.clone() }
    }

    pub(crate) fn now(&self) -> i64 {
        self.clock.now()
    }

    /// A proof for `method path` with the last nonce (and `ath` for `access`).
    pub(crate) fn proof(&self, method: &str, path: &str, access: Option<&str>) -> String {
        let nonce = self.nonce.lock().unwrap().clone();
        self.key.proof(method, &format!("{}{path}", self.max), self.now(), nonce.as_deref(), access)
    }

    fn remember(&self, headers: &HeaderMap) {
        if let Some(n) = headers.get("dpop-nonce").and_then(|v| v.to_str().ok()) {
            *self.nonce.lock().unwrap() = Some(n.to_string());
        }
    }

    /// Posts `form` to `path` with a fresh proof (`proof` replaces it when given); on
    /// `use_dpop_nonce` takes the nonce and tries once more, as RFC 9449 §8 has a client do.
    pub(crate) async fn post(&self, path: &str, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> Answer {
        for attempt in 0..2 {
            let mut req = reqwest::Client::new()
                .post(format!("{}{path}", self.max))
                .header("DPoP", self.proof("POST", path, None))
                .form(form);
            if let Some((id, secret)) = basic {
                req = req.basic_auth(id, Some(secret));
            }
            let answer = read(req.send().await.unwrap()).await;
            self.remember(&answer.1);
            if attempt == 0 && answer.2["error"] == "use_dpop_nonce" {
                continue;
            }
            return answer;
        }
        unreachable!()
    }

    /// `GET path` with `Authorization: DPoP <access>` and a proof with `ath`.
    pub(crate) async fn get(&self, path: &str, access: &str) -> Answer {
        let answer = read(
            reqwest::Client::new()
                .get(format!("{}{path}", self.max))
                .header("Authorization", format!("DPoP {access}"))
                .header("DPoP", self.proof("GET", path, Some(access)))
                .send()
                .await
                .unwrap(),
        )
        .await;
        self.remember(&answer.1);
        answer
    }

    /// Pushes an authorization request of the app (RFC 9126) with a proof (which binds the code,
    /// RFC 9449 §10.1); returns the `request_uri`.
    pub(crate) async fn push(&self, verifier: &str, extra: &[(&str, &str)]) -> Answer {
        let challenge = pkce_s256(verifier);
        let mut form = vec![
            ("response_type", "code"),
            ("client_id", APP),
            ("redirect_uri", APP_REDIRECT),
            ("scope", "openid offline_access"),
            ("state", "st-app"),
            ("nonce", "n-app"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("prompt", "consent"),
        ];
        form.extend_from_slice(extra);
        self.post("/oauth/par", &form, None).await
    }

    /// The whole app sign-in of a person signed in to MAX in `b`: PAR, consent, the code.
    pub(crate) async fn code(&self, b: &Browser, verifier: &str) -> String {
        let (status, _, pushed) = self.push(verifier, &[]).await;
        assert_eq!(status, StatusCode::CREATED, "{pushed}");
        let uri = pushed["request_uri"].as_str().unwrap();
        let url = reqwest::Url::parse_with_params(
            &format!("{}/oauth/authorize", self.max),
            &[("client_id", APP), ("request_uri", uri)],
        )
        .unwrap();
        let q = follow_to_redirect(&self.max, b, url.as_str(), APP_REDIRECT).await;
        assert_eq!(q.get("state").map(String::as_str), Some("st-app"), "{q:?}");
        q.get("code").unwrap_or_else(|| panic!("no code: {q:?}")).clone()
    }

    /// Redeems `code` at the token endpoint with a proof.
    pub(crate) async fn redeem(&self, code: &str, verifier: &str) -> Answer {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", APP_REDIRECT),
            ("code_verifier", verifier),
            ("client_id", APP),
        ];
        self.post("/oauth/token", &form, None).await
    }

    /// Sign-in to tokens, for a person signed in to MAX in `b`.
    pub(crate) async fn tokens(&self, b: &Browser) -> Value {
        let verifier = random_token(32);
        let code = self.code(b, &verifier).await;
        let (status, _, body) = self.redeem(&code, &verifier).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

pub(crate) async fn read(resp: reqwest::Response) -> Answer {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Follows MAX's pages from `url` (confirming consent) to the redirect to `redirect_uri`; its query.
pub(crate) async fn follow_to_redirect(
    max: &str,
    b: &Browser,
    url: &str,
    redirect_uri: &str,
) -> HashMap<String, String> {
    let mut page = b.get(url).await;
    for _ in 0..10 {
        if page.url.contains("/authorize/continue") && page.location.is_none() {
            page = b.post(&format!("{max}/authorize/confirm"), &[("csrf", &page.csrf())]).await;
            continue;
        }
        let loc = page.location.clone().unwrap_or_else(|| panic!("no redirect at {}: {}", page.url, page.body));
        if loc.starts_with(redirect_uri) {
            return reqwest::Url::parse(&loc).unwrap().query_pairs().into_owned().collect();
        }
        page = b.get(&loc).await;
    }
    panic!("no redirect to {redirect_uri}")
}

/// A signed-in browser and the app.
async fn signed_in(app: &TestApp) -> (Browser, DpopApp) {
    let b = Browser::new();
    max_sign_in(app, &b).await;
    (b, DpopApp::new(app))
}

both_backends! {
    /// RFC 9449 §5, §6, §7, §8 (the conformance suite's FAPI 2.0 happy flow with DPoP, the app's
    /// way): a proof without a nonce is answered `use_dpop_nonce` with `DPoP-Nonce`; the tokens are
    /// `DPoP` tokens bound to the key; UserInfo takes them with `Authorization: DPoP` and a proof,
    /// and refuses them as `Bearer` (§7.2); the refresh needs a proof by the same key.
    async fn fapi2_security_profile_final_dpop_happy_flow_with_server_nonces(app) {
        let (b, a) = signed_in(&app).await;
        // The first proof has no nonce: refused with one (§8.1).
        let verifier = random_token(32);
        let first = reqwest::Client::new()
            .post(format!("{}/oauth/par", app.max))
            .header("DPoP", a.key.proof("POST", &format!("{}/oauth/par", app.max), a.now(), None, None))
            .form(&[("client_id", APP)])
            .send()
            .await
            .unwrap();
        let (status, headers, body) = read(first).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("use_dpop_nonce")), "{body}");
        assert!(headers.contains_key("dpop-nonce"));

        let code = a.code(&b, &verifier).await;
        let (status, headers, tokens) = a.redeem(&code, &verifier).await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        assert_eq!(tokens["token_type"], "DPoP");
        assert!(headers.contains_key("dpop-nonce"), "a fresh nonce with every answer");
        let access = tokens["access_token"].as_str().unwrap();

        let (status, _, info) = a.get("/oauth/userinfo", access).await;
        assert_eq!(status, StatusCode::OK, "{info}");
        assert!(info["sub"].is_string());
        // §7.2: the bound token as a bearer token (stolen, no key) is refused.
        let stolen = reqwest::Client::new().get(format!("{}/oauth/userinfo", app.max)).bearer_auth(access).send().await.unwrap();
        assert_eq!(stolen.status(), StatusCode::UNAUTHORIZED);
        // And with a proof by another key.
        let thief = DpopApp::new(&app);
        let (status, headers, _) = thief.get("/oauth/userinfo", access).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(headers["www-authenticate"].to_str().unwrap().starts_with("DPoP "), "{headers:?}");

        // Refresh: another key cannot use the refresh token, and its attempt burns nothing (RFC 9449 §5).
        let refresh = tokens["refresh_token"].as_str().unwrap();
        let form = [("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", APP)];
        let (status, _, refused) = thief.post("/oauth/token", &form, None).await;
        assert_eq!((status, refused["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_dpop_proof")), "{refused}");
        let no_proof = reqwest::Client::new().post(format!("{}/oauth/token", app.max)).form(&form).send().await.unwrap();
        assert_eq!(no_proof.status(), StatusCode::BAD_REQUEST);
        let (status, _, rotated) = a.post("/oauth/token", &form, None).await;
        assert_eq!(status, StatusCode::OK, "{rotated}");
        assert_eq!(rotated["token_type"], "DPoP");
        let (status, _, _) = a.get("/oauth/userinfo", rotated["access_token"].as_str().unwrap()).await;
        assert_eq!(status, StatusCode::OK);
    }

    /// FAPI2SPFinalEnsureTokenEndpointFailsWithMismatchedDpopProofJkt: a code bound to one key
    /// (the proof at PAR) is not redeemed with a proof by another (RFC 9449 §10.1).
    async fn fapi2_security_profile_final_ensure_token_endpoint_fails_with_mismatched_dpop_proof_jkt(app) {
        let (b, a) = signed_in(&app).await;
        let verifier = random_token(32);
        let code = a.code(&b, &verifier).await;
        let thief = DpopApp::new(&app);
        let (status, _, body) = thief.redeem(&code, &verifier).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "invalid_grant");
        // The code was presented: it is burnt for everybody.
        let (status, _, _) = a.redeem(&code, &verifier).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    /// FAPI2SPFinalEnsureMismatchedDpopJktFails: `dpop_jkt` naming another key than the PAR proof
    /// is refused (RFC 9449 §10.1).
    async fn fapi2_security_profile_final_ensure_mismatched_dpop_jkt_fails(app) {
        let a = DpopApp::new(&app);
        let other = ProofKey::generate().jkt();
        let (status, _, body) = a.push(&random_token(32), &[("dpop_jkt", other.as_str())]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "invalid_dpop_proof");
    }

    /// FAPI2SPFinalEnsureDpopProofWithIat10SecondsAfterSucceeds, and RFC 9449 §4.3 checks 8–11 and
    /// §11.1 at the token endpoint: a proof 10 s ahead passes; a stale one, one for another URI,
    /// and a replayed one do not.
    async fn fapi2_security_profile_final_ensure_dpopproof_with_iat_10seconds_after_succeeds(app) {
        let a = DpopApp::new(&app);
        // Get a nonce.
        let (status, _, _) = a.post("/oauth/par", &[("client_id", APP)], None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let nonce = a.nonce.lock().unwrap().clone();
        let par = format!("{}/oauth/par", app.max);
        let send = |proof: String| {
            let par = par.clone();
            async move {
                read(reqwest::Client::new().post(par).header("DPoP", proof).form(&[("client_id", APP)]).send().await.unwrap()).await
            }
        };
        // Valid proofs reach the request's own checks (invalid_request: no redirect_uri…).
        let ahead = a.key.proof("POST", &par, a.now() + 10, nonce.as_deref(), None);
        let (_, _, body) = send(ahead.clone()).await;
        assert_ne!(body["error"], "invalid_dpop_proof", "{body}");
        let (_, _, replay) = send(ahead).await;
        assert_eq!(replay["error"], "invalid_dpop_proof", "a proof is used once (§11.1)");
        let stale = a.key.proof("POST", &par, a.now() - 61, nonce.as_deref(), None);
        assert_eq!(send(stale).await.2["error"], "invalid_dpop_proof");
        let elsewhere = a.key.proof("POST", &format!("{}/oauth/token", app.max), a.now(), nonce.as_deref(), None);
        assert_eq!(send(elsewhere).await.2["error"], "invalid_dpop_proof");
        let forged_nonce = a.key.proof("POST", &par, a.now(), Some("bm90LW91cnM"), None);
        assert_eq!(send(forged_nonce).await.2["error"], "use_dpop_nonce");
    }

    /// RFC 9449 §5.2 (`dpop_bound_access_tokens`): the app client without a proof gets nothing at
    /// the token endpoint, and its authorization request must name a key (§10).
    async fn rfc9449_app_clients_require_dpop(app) {
        let no_proof = reqwest::Client::new()
            .post(format!("{}/oauth/token", app.max))
            .form(&[("grant_type", "authorization_code"), ("code", "x"), ("redirect_uri", APP_REDIRECT), ("code_verifier", &random_token(32)), ("client_id", APP)])
            .send()
            .await
            .unwrap();
        let (status, _, body) = read(no_proof).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_dpop_proof")), "{body}");
        // A PAR without proof and without dpop_jkt: refused.
        let challenge = pkce_s256(&random_token(32));
        let form = [("response_type", "code"), ("client_id", APP), ("redirect_uri", APP_REDIRECT), ("scope", "openid"),
            ("code_challenge", challenge.as_str()), ("code_challenge_method", "S256")];
        let r = reqwest::Client::new().post(format!("{}/oauth/par", app.max)).form(&form).send().await.unwrap();
        let (status, _, body) = read(r).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error_description"].as_str().unwrap().contains("dpop_jkt"), "{body}");
        // Discovery says what proofs are taken.
        let doc: Value = reqwest::get(format!("{}/.well-known/openid-configuration", app.max)).await.unwrap().json().await.unwrap();
        assert_eq!(doc["dpop_signing_alg_values_supported"], serde_json::json!(["ES256", "EdDSA", "RS256"]));
    }

    /// RFC 9449 §5 for a confidential client (DPoP offered, not required): the diary's
    /// `client_credentials` token asked with a proof is DPoP-bound, and the Сферум provisioning API
    /// (MAX's API taking access tokens) takes it with `Authorization: DPoP` and refuses it as
    /// `Bearer` (§7.2). Without a proof the diary still gets a bearer token.
    async fn rfc9449_the_provisioning_api_takes_dpop_bound_service_tokens(app) {
        let a = DpopApp::new(&app);
        let secret = app.config.diary.client_secret.clone().unwrap();
        let form = [("grant_type", "client_credentials"), ("scope", "sferum.provision")];
        let (status, _, body) = a.post("/oauth/token", &form, Some(("mesh", &secret))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["token_type"], "DPoP");
        let access = body["access_token"].as_str().unwrap();
        let path = "/sferum/api/v1/lessons/no-such-lesson/attendance";
        let (status, _, answer) = a.get(path, access).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{answer}");
        let url = format!("{}{path}", app.max);
        let as_bearer = reqwest::Client::new().get(&url).bearer_auth(access).send().await.unwrap();
        assert_eq!(as_bearer.status(), StatusCode::UNAUTHORIZED);
        let plain = reqwest::Client::new().post(format!("{}/oauth/token", app.max)).basic_auth("mesh", Some(&secret)).form(&form).send().await.unwrap();
        let (status, _, plain) = read(plain).await;
        assert_eq!((status, plain["token_type"].as_str()), (StatusCode::OK, Some("Bearer")), "{plain}");
        let bearer = reqwest::Client::new().get(&url).bearer_auth(plain["access_token"].as_str().unwrap()).send().await.unwrap();
        assert_ne!(bearer.status(), StatusCode::UNAUTHORIZED);
    }
}
