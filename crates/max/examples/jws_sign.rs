//! Signing cost per ID token: MAX's key ring (aws-lc key pairs parsed once, kept in memory) against
//! `jsonwebtoken` 11 (aws-lc backend) with an `EncodingKey` built once, for each algorithm MAX signs
//! with. Issue 15 asked which of the two should sign; the figures and the decision are in
//! BENCHMARKS.md («Signing: key ring or jsonwebtoken»).
//!
//! `cargo run --release -p edulink-max --example jws_sign [-- ROUNDS]`

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use base64::Engine;
use edulink_domain::Cipher;
use edulink_domain::crypto::SecretKey;
use edulink_max::keys::{ALGS, KeyRing};
use edulink_store::{Db, PoolConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::time::Instant;

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// A jsonwebtoken key for `alg`, built once (as a caller of the library would keep it).
fn jwt_key(alg: &str) -> EncodingKey {
    match alg {
        "RS256" => {
            let kp = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
            let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp).unwrap();
            EncodingKey::from_rsa_pem(pem("PRIVATE KEY", der.as_ref()).as_bytes()).unwrap()
        }
        "ES256" => {
            let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
            EncodingKey::from_ec_der(kp.to_pkcs8v1().unwrap().as_ref())
        }
        _ => EncodingKey::from_ed_der(Ed25519KeyPair::generate().unwrap().to_pkcs8().unwrap().as_ref()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rounds: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}", dir.path().join("max.db").display()), &PoolConfig::default())
        .await
        .unwrap();
    db.migrate(&edulink_max::migrations()).await.unwrap();
    let ring = KeyRing::load_or_create(&db, &Cipher::new(&SecretKey::generate()), 1).await.unwrap();
    let claims = json!({
        "iss": "http://127.0.0.1:8081", "aud": "diary", "sub": "Zt3x9V0aQ2bX8mK1pL7wQ4rT6yU0iO3sA5dF8gH2jK4",
        "exp": 2_000_000_000u64, "iat": 1_999_999_700u64, "auth_time": 1_999_999_690u64, "nonce": "n0nce-abcdefghijklmnop",
    });
    println!("{:<6} {:>14} {:>18} {:>7}", "alg", "key ring µs", "jsonwebtoken µs", "ratio");
    for alg in ALGS {
        let key = jwt_key(alg);
        let header = Header { kid: Some("k".into()), ..Header::new(alg.parse::<Algorithm>().unwrap()) };
        // Warm up both, then alternate blocks of each so drift hits both alike.
        for _ in 0..50 {
            ring.sign(alg, &claims, 1).unwrap();
            jsonwebtoken::encode(&header, &claims, &key).unwrap();
        }
        let (mut ours, mut theirs) = (0f64, 0f64);
        for _ in 0..10 {
            let t = Instant::now();
            for _ in 0..rounds / 10 {
                std::hint::black_box(ring.sign(alg, &claims, 1).unwrap());
            }
            ours += t.elapsed().as_secs_f64();
            let t = Instant::now();
            for _ in 0..rounds / 10 {
                std::hint::black_box(jsonwebtoken::encode(&header, &claims, &key).unwrap());
            }
            theirs += t.elapsed().as_secs_f64();
        }
        let per = |s: f64| s * 1e6 / f64::from(rounds / 10 * 10);
        println!("{:<6} {:>14.1} {:>18.1} {:>7.2}", alg, per(ours), per(theirs), theirs / ours);
    }
}
