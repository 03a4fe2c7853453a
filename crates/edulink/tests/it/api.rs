//! The mobile apps' path, through the JSON APIs only: link from «Дневник МЭШ», sign in to Сферум,
//! unlink; the error envelope; the OpenAPI documents served equal the committed ones.

use edulink_domain::crypto::random_token;
use edulink_domain::oauth::pkce_s256;
use edulink_testkit::{Browser, FlowsExt, TestApp, both_backends};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PHONE: &str = "+7 916 800-10-20";
const E164: &str = "+79168001020";

async fn call(method: reqwest::Method, url: String, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub(crate) async fn post(url: String, token: Option<&str>, body: Value) -> (StatusCode, Value) {
    call(reqwest::Method::POST, url, token, Some(body)).await
}

/// Signs a phone in to MAX through the MAX app API (registering it if new); returns the token.
pub(crate) async fn max_app_sign_in(app: &TestApp, phone: &str, e164: &str) -> String {
    let (status, sent) = post(format!("{}/api/v1/auth/codes", app.max), None, json!({ "phone": phone })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{sent}");
    assert_eq!(sent["retry_after"], 60);
    let challenge = sent["challenge_id"].as_str().unwrap();
    let (status, verified) = post(
        format!("{}/api/v1/auth/codes/verify", app.max),
        None,
        json!({ "challenge_id": challenge, "code": app.last_code(e164) }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{verified}");
    if verified["registration_required"] == true {
        let (status, signed) = post(
            format!("{}/api/v1/auth/register", app.max),
            None,
            json!({ "registration_token": verified["registration_token"], "first_name": "Оля", "last_name": "Приложение" }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{signed}");
        signed["token"].as_str().unwrap().to_string()
    } else {
        verified["token"].as_str().unwrap().to_string()
    }
}

/// The whole app link: start at the diary, approve in the MAX app, complete at the diary.
async fn app_link(app: &TestApp, diary_token: &str, max_token: &str) -> (StatusCode, Value) {
    let verifier = random_token(32);
    let key = edulink_domain::dpop::ProofKey::generate();
    let (status, started) = post(
        format!("{}/api/v1/sferum/link", app.diary),
        Some(diary_token),
        json!({ "app": "dnevnik_mesh", "code_challenge": pkce_s256(&verifier), "dpop_jkt": key.jkt() }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    assert_eq!(started["redirect_uri"], "ru.mos.dnevnik:/sferum/callback");
    let (status, created) = post(
        format!("{}/api/v1/authorizations", app.max),
        Some(max_token),
        json!({ "authorization_url": started["authorization_url"] }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["client_name"], "Дневник МЭШ");
    let id = created["request_id"].as_str().unwrap();
    let (status, approved) =
        post(format!("{}/api/v1/authorizations/{id}/approve", app.max), Some(max_token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    let redirect = url::Url::parse(approved["redirect_url"].as_str().unwrap()).unwrap();
    assert!(redirect.as_str().starts_with("ru.mos.dnevnik:/sferum/callback?"));
    let q: std::collections::HashMap<String, String> = redirect.query_pairs().into_owned().collect();
    let proof = key.proof(
        "POST",
        started["token_endpoint"].as_str().unwrap(),
        edulink_domain::Clock::now(&*app.clock),
        started["dpop_nonce"].as_str(),
        None,
    );
    post(
        format!("{}/api/v1/sferum/link/complete", app.diary),
        Some(diary_token),
        json!({ "state": q["state"], "code": q["code"], "iss": q["iss"], "code_verifier": verifier, "dpop_proof": proof }),
    )
    .await
}

async fn diary_sign_in(app: &TestApp, login: &str) -> String {
    let (status, t) =
        post(format!("{}/api/v1/sessions", app.diary), None, json!({ "login": login, "password": "demo" })).await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    t["token"].as_str().unwrap().to_string()
}

both_backends! {
    async fn the_mobile_link_sign_in_and_unlink_work_through_the_api_alone(app) {
        let diary_token = diary_sign_in(&app, "student3").await;
        let (status, me) = call(reqwest::Method::GET, format!("{}/api/v1/me", app.diary), Some(&diary_token), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(me["login"], "student3");
        assert_eq!(me["classes"], json!(["7 А"]));
        let max_token = max_app_sign_in(&app, PHONE, E164).await;
        let (status, linked) = app_link(&app, &diary_token, &max_token).await;
        assert_eq!(status, StatusCode::OK, "{linked}");
        assert_eq!(linked["linked"], true);
        let (_, status_body) = call(reqwest::Method::GET, format!("{}/api/v1/sferum/link", app.diary), Some(&diary_token), None).await;
        assert_eq!(status_body["linked"], true);
        assert_eq!(status_body["account_id"], linked["account_id"]);

        // Provisioned through the diary's server even though the app made the link.
        let st = app.running.max.as_ref().unwrap();
        let confirmed: Option<String> = edulink_store::sqlx::query_scalar("SELECT confirmed_by FROM sferum_profiles WHERE confirmed_by IS NOT NULL")
            .fetch_optional(st.db.pool())
            .await
            .unwrap();
        assert_eq!(confirmed.as_deref(), Some("mesh"));

        // «Open Сферум»: a single-use URL signs the browser in to the diary and on to MAX; the
        // browser has no MAX session yet, so MAX asks for the phone once, then shows Сферум.
        let (status, open) = post(format!("{}/api/v1/sferum/open", app.diary), Some(&diary_token), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{open}");
        let b = Browser::new();
        let confirm = b.visit(open["url"].as_str().unwrap()).await;
        assert!(confirm.has("Вера Кузнецова"), "the page says whose account opens: {}", confirm.body);
        let ticket = edulink_testkit::hidden(&confirm.body, "ticket").unwrap();
        let phone = b.submit(&format!("{}/sferum/handoff", app.diary), &[("ticket", &ticket)]).await;
        assert!(phone.url.starts_with(&format!("{}/login", app.max)), "{}", phone.url);
        app.clock.advance(61);
        let code = app.enter_phone(&b, &phone, PHONE).await;
        let sferum = b.follow(app.enter_code(&b, &code, &app.last_code(E164)).await).await;
        assert_eq!(sferum.url, format!("{}/sferum", app.max), "{}", sferum.body);
        assert!(sferum.has("Чат класса 7 А"));
        let again = b.post(&format!("{}/sferum/handoff", app.diary), &[("ticket", &ticket)]).await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST, "the ticket is single use");

        // Unlink needs a recent sign-in.
        app.clock.advance(16 * 60);
        let (status, err) = call(reqwest::Method::DELETE, format!("{}/api/v1/sferum/link", app.diary), Some(&diary_token), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(err["error"]["code"], "reauth_required");
        let fresh = diary_sign_in(&app, "student3").await;
        let (status, _) = call(reqwest::Method::DELETE, format!("{}/api/v1/sferum/link", app.diary), Some(&fresh), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, after) = call(reqwest::Method::GET, format!("{}/api/v1/sferum/link", app.diary), Some(&fresh), None).await;
        assert_eq!((status, after["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_linked")));
        let grants: i64 = edulink_store::sqlx::query_scalar("SELECT COUNT(*) FROM grants").fetch_one(st.db.pool()).await.unwrap();
        assert_eq!(grants, 0, "every grant of the diary's sector is gone at MAX");
        let (status, _) = call(reqwest::Method::DELETE, format!("{}/api/v1/sferum/link", app.diary), Some(&fresh), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // Signing out kills the token on the server.
        let (status, _) = call(reqwest::Method::DELETE, format!("{}/api/v1/sessions/current", app.diary), Some(&fresh), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, err) = call(reqwest::Method::GET, format!("{}/api/v1/me", app.diary), Some(&fresh), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(err["error"]["code"], "unauthorized");
    }

    async fn api_errors_are_one_envelope_with_the_same_rules_as_the_web(app) {
        let (status, err) = post(format!("{}/api/v1/sessions", app.diary), None, json!({ "login": "student1", "password": "nope" })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(err["error"]["code"], "login");
        assert!(err["error"]["message"].as_str().unwrap().contains("Неверный логин"));
        // Unknown fields and wrong types are refused.
        let (status, err) = post(format!("{}/api/v1/sessions", app.diary), None, json!({ "login": "a", "password": "b", "x": 1 })).await;
        assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")));
        let (status, err) = post(format!("{}/api/v1/auth/codes", app.max), None, json!({ "phone": "12345" })).await;
        assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("phone_invalid")));
        // The resend gap holds for the app too, with retry_after in the envelope.
        let (_, sent) = post(format!("{}/api/v1/auth/codes", app.max), None, json!({ "phone": PHONE })).await;
        let (status, err) = post(format!("{}/api/v1/auth/codes/resend", app.max), None, json!({ "challenge_id": sent["challenge_id"] })).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err["error"]["code"], "sms_too_soon");
        assert!(err["error"]["retry_after"].as_i64().unwrap() > 0);
        // Five wrong codes kill the code, through the API as on the web.
        let right = app.last_code(E164);
        let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 1) % 1_000_000);
        for _ in 0..5 {
            let (_, err) = post(format!("{}/api/v1/auth/codes/verify", app.max), None, json!({ "challenge_id": sent["challenge_id"], "code": wrong })).await;
            assert_eq!(err["error"]["code"], "code_wrong");
        }
        let (_, err) = post(format!("{}/api/v1/auth/codes/verify", app.max), None, json!({ "challenge_id": sent["challenge_id"], "code": right })).await;
        assert_eq!(err["error"]["code"], "code_dead");
        // A MAX account already linked to another student: the app gets the conflict.
        let max_token = max_app_sign_in(&app, "+7 900 000-00-01", "+79000000001").await;
        let t1 = diary_sign_in(&app, "student1").await;
        assert_eq!(app_link(&app, &t1, &max_token).await.0, StatusCode::OK);
        let t2 = diary_sign_in(&app, "student2").await;
        let (status, err) = app_link(&app, &t2, &max_token).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(err["error"]["code"], "link_taken");
    }
}

/// The OpenAPI documents served at `/api/v1/openapi.json` are the ones committed in `docs/openapi/`
/// (regenerate with `EDULINK_UPDATE_OPENAPI=1`), OpenAPI 3.1, with strict request schemas.
#[tokio::test]
async fn served_openapi_documents_equal_the_committed_ones() {
    let app = edulink_testkit::spawn_app().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi");
    for (party, base) in [("diary", &app.diary), ("max", &app.max)] {
        let served = reqwest::get(format!("{base}/api/v1/openapi.json")).await.unwrap().text().await.unwrap();
        let doc: Value = serde_json::from_str(&served).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{party}: OpenAPI 3.1");
        for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
            if schema["type"] == "object" {
                assert_eq!(schema["additionalProperties"], false, "{party}: {name} is strict");
            }
        }
        let path = root.join(format!("{party}.json"));
        if std::env::var("EDULINK_UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
            std::fs::write(&path, &served).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(served, committed, "{party}: docs/openapi/{party}.json is stale; run with EDULINK_UPDATE_OPENAPI=1");
    }
}

both_backends! {
    /// An app's link start that MAX refuses (here: no DPoP key, which the diary's apps must bind, RFC
    /// 9449 §10) is the app's mistake: 400, not 503 «MAX недоступен». Found by schemathesis
    /// (`scripts/api-fuzz`) with a schema-valid body.
    async fn a_link_start_max_refuses_is_a_bad_request_not_an_outage(app) {
        let diary_token = diary_sign_in(&app, "student5").await;
        let (status, err) = post(
            format!("{}/api/v1/sferum/link", app.diary),
            Some(&diary_token),
            json!({ "app": "dnevnik_mesh", "code_challenge": "0".repeat(43) }),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        assert_eq!(err["error"]["code"], "bad_request", "{err}");
    }
}

/// The command-line app (`edulink demo mobile-link`) links a student end to end.
#[tokio::test]
async fn the_command_line_app_links_a_student() {
    let app = edulink_testkit::spawn_app().await;
    let opts = edulink::mobile::MobileLink {
        diary: app.diary.clone(),
        max: app.max.clone(),
        login: "student4".into(),
        password: "demo".into(),
        app: "moyashkola".into(),
        phone: Some(PHONE.into()),
        auto_code: true,
    };
    let mut input = std::io::Cursor::new(
        b"\xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd\n\xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd\xd0\xbe\xd0\xb2\n".to_vec(),
    );
    let mut out = Vec::new();
    let linked = edulink::mobile::run(&opts, &mut input, &mut out).await.unwrap();
    assert_eq!(linked["linked"], true);
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("Approving the link for «Моя школа Дневник»"), "{out}");
    assert!(out.contains("успешно привязана"), "{out}");
}
