//! The diary as a relying party, attacked by a malicious provider (OpenID Connect Core §3.1.3.7,
//! RFC 9207, RFC 8725, the OpenID RP conformance tests): every forged answer is refused, no link.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use edulink_testkit::{Backend, Browser, FlowsExt, spawn_app_on};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Forgery {
    None,
    NonceMismatch,
    AlgNone,
    Hs256KeyedWithPublicKey,
    WrongIssuer,
    WrongAudience,
    Expired,
    ForeignKey,
}

struct Evil {
    issuer: String,
    key: Vec<u8>,
    foreign_key: Vec<u8>,
    jwk: Value,
    forgery: Mutex<Forgery>,
    nonce: Mutex<String>,
    token_calls: Mutex<usize>,
}

fn es256(der: &[u8], header: &Value, claims: &Value) -> String {
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).unwrap();
    let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
    let sig = kp.sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(sig.as_ref()))
}

fn forge(e: &Evil) -> String {
    let forgery = *e.forgery.lock().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut claims = json!({
        "iss": e.issuer, "sub": "evil-subject", "aud": "mesh", "iat": now, "exp": now + 300,
        "nonce": *e.nonce.lock().unwrap(),
    });
    let header = json!({ "alg": "ES256", "kid": "k1", "typ": "JWT" });
    match forgery {
        Forgery::NonceMismatch => claims["nonce"] = "another-nonce".into(),
        Forgery::WrongIssuer => claims["iss"] = "https://max.example".into(),
        Forgery::WrongAudience => claims["aud"] = "another-client".into(),
        Forgery::Expired => {
            claims["iat"] = (now - 7200).into();
            claims["exp"] = (now - 3600).into();
        }
        Forgery::AlgNone => {
            return format!(
                "{}.{}.",
                B64.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
                B64.encode(claims.to_string())
            );
        }
        Forgery::Hs256KeyedWithPublicKey => {
            let h = json!({ "alg": "HS256", "kid": "k1", "typ": "JWT" });
            let input = format!("{}.{}", B64.encode(h.to_string()), B64.encode(claims.to_string()));
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, e.jwk.to_string().as_bytes());
            let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
            return format!("{input}.{}", B64.encode(tag.as_ref()));
        }
        Forgery::ForeignKey => return es256(&e.foreign_key, &header, &claims),
        Forgery::None => {}
    }
    es256(&e.key, &header, &claims)
}

async fn start_evil() -> Arc<Evil> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let new_key = || EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let kp = new_key();
    let point = kp.public_key().as_ref().to_vec();
    let jwk = json!({ "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]) });
    let evil = Arc::new(Evil {
        issuer: issuer.clone(),
        key: kp.to_pkcs8v1().unwrap().as_ref().to_vec(),
        foreign_key: new_key().to_pkcs8v1().unwrap().as_ref().to_vec(),
        jwk,
        forgery: Mutex::new(Forgery::None),
        nonce: Mutex::new(String::new()),
        token_calls: Mutex::new(0),
    });
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(|State(e): State<Arc<Evil>>| async move {
                Json(json!({
                    "issuer": e.issuer,
                    "authorization_endpoint": format!("{}/oauth/authorize", e.issuer),
                    "token_endpoint": format!("{}/oauth/token", e.issuer),
                    "jwks_uri": format!("{}/oauth/jwks", e.issuer),
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["pairwise"],
                    "id_token_signing_alg_values_supported": ["ES256", "HS256", "none"],
                }))
            }),
        )
        .route("/oauth/jwks", get(|State(e): State<Arc<Evil>>| async move { Json(json!({ "keys": [e.jwk] })) }))
        .route(
            "/oauth/token",
            post(|State(e): State<Arc<Evil>>| async move {
                *e.token_calls.lock().unwrap() += 1;
                Json(json!({ "access_token": "at", "token_type": "Bearer", "expires_in": 60, "id_token": forge(&e) }))
            }),
        )
        .with_state(evil.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    evil
}

#[tokio::test]
async fn forged_authorization_responses_never_link() {
    let evil = start_evil().await;
    let issuer = evil.issuer.clone();
    let app = spawn_app_on(Backend::Sqlite, |c| c.diary.max_issuer = Some(issuer)).await.unwrap();
    let b = Browser::new();
    app.diary_login(&b, "student1").await;
    let diary = app.running.diary.as_ref().unwrap();
    let links = || async {
        edulink_store::sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM links")
            .fetch_one(diary.db.pool())
            .await
            .unwrap()
    };

    // Starts a transaction and returns (state, nonce) from the authorization request.
    let start = || async {
        let connect = b.visit(&format!("{}/sferum", app.diary)).await;
        let to_op = b.post(&format!("{}/sferum/connect", app.diary), &[("csrf", &connect.csrf())]).await;
        let url = reqwest::Url::parse(to_op.location.as_deref().unwrap()).unwrap();
        assert!(url.as_str().starts_with(&evil.issuer));
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["code_challenge_method"], "S256");
        (q["state"].clone(), q["nonce"].clone())
    };
    let callback = |state: String, iss: String| {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/sferum/callback", app.diary),
            &[("code", "c0de"), ("state", &state), ("iss", &iss)],
        )
        .unwrap();
        url.to_string()
    };

    for forgery in [
        Forgery::NonceMismatch,
        Forgery::AlgNone,
        Forgery::Hs256KeyedWithPublicKey,
        Forgery::WrongIssuer,
        Forgery::WrongAudience,
        Forgery::Expired,
        Forgery::ForeignKey,
    ] {
        let (state, nonce) = start().await;
        *evil.nonce.lock().unwrap() = nonce;
        *evil.forgery.lock().unwrap() = forgery;
        let p = b.get(&callback(state, evil.issuer.clone())).await;
        assert_eq!(p.status, StatusCode::BAD_REQUEST, "{forgery:?}: {}", p.body);
        assert!(p.has("MAX не подтвердил вход"), "{forgery:?}");
        assert_eq!(links().await, 0, "{forgery:?} linked nothing");
    }

    // Mix-up (RFC 9207): the response claims another issuer — refused before any back-channel call.
    let (state, nonce) = start().await;
    *evil.nonce.lock().unwrap() = nonce;
    *evil.forgery.lock().unwrap() = Forgery::None;
    let calls = *evil.token_calls.lock().unwrap();
    let p = b.get(&callback(state.clone(), "https://max.example".into())).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(p.has("Ответ пришёл не от MAX"));
    assert_eq!(*evil.token_calls.lock().unwrap(), calls, "no token request for a mixed-up response");
    // The state died with that attempt: replaying it with the right issuer fails too.
    let p = b.get(&callback(state, evil.issuer.clone())).await;
    assert!(p.has("открыта в другом браузере"));

    // A callback with no transaction at all.
    let p = b.get(&callback("never-started".into(), evil.issuer.clone())).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);

    // Control: a correct answer from this provider does link (the harness can succeed).
    let (state, nonce) = start().await;
    *evil.nonce.lock().unwrap() = nonce;
    let p = b.get(&callback(state, evil.issuer.clone())).await;
    assert_eq!(p.location.as_deref(), Some(format!("{}/sferum/linked", app.diary).as_str()), "{}", p.body);
    assert_eq!(links().await, 1);
}
