//! MAX's ID tokens checked by a verifier we did not write: `jsonwebtoken` (aws-lc backend), with the
//! keys taken from MAX's own JWKS document, for every algorithm MAX signs with (RFC 7515 compact
//! serialisation, RFC 7518 §3.3/§3.4 and RFC 8037 for EdDSA). A token changed after signing, or
//! checked against another key of the set, is refused by that verifier too.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use edulink_domain::Cipher;
use edulink_domain::crypto::SecretKey;
use edulink_max::keys::{ALGS, KeyRing};
use edulink_store::{Db, PoolConfig};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::{Value, json};

async fn ring() -> (KeyRing, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("max.db").display());
    let db = Db::connect(&url, &PoolConfig::default()).await.unwrap();
    db.migrate(&edulink_max::migrations()).await.unwrap();
    let ring = KeyRing::load_or_create(&db, &Cipher::new(&SecretKey::generate()), 1_000).await.unwrap();
    (ring, dir)
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.set_audience(&["diary"]);
    v.set_issuer(&["http://max.test"]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v
}

#[tokio::test]
async fn every_signing_algorithm_verifies_with_jsonwebtoken_and_the_published_jwks() {
    let (ring, _dir) = ring().await;
    let jwks: JwkSet = serde_json::from_str(&ring.jwks()).unwrap();
    let exp = jsonwebtoken::get_current_timestamp() + 300;
    let claims = json!({ "iss": "http://max.test", "aud": "diary", "sub": "s-1", "exp": exp, "nonce": "n" });
    for alg in ALGS {
        let token = ring.sign(alg, &claims).unwrap();
        let header = decode_header(&token).unwrap();
        let expected: Algorithm = alg.parse().unwrap();
        assert_eq!(header.alg, expected, "{alg}: header alg");
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let kid = header.kid.expect("kid in the header");
        let jwk = jwks.find(&kid).unwrap_or_else(|| panic!("{alg}: kid {kid} is published"));
        let key = DecodingKey::from_jwk(jwk).unwrap();
        let data = decode::<Value>(&token, &key, &validation(expected)).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(data.claims["sub"], "s-1");

        // Claims changed after signing: refused.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged =
            B64.encode(json!({ "iss": "http://max.test", "aud": "diary", "sub": "s-2", "exp": exp }).to_string());
        parts[1] = &forged;
        assert!(decode::<Value>(&parts.join("."), &key, &validation(expected)).is_err(), "{alg}: forged claims");

        // Another published key of the same family does not verify it.
        for other in jwks.keys.iter().filter(|k| k.common.key_id.as_deref() != Some(kid.as_str())) {
            if let Ok(other_key) = DecodingKey::from_jwk(other)
                && other_key.family() == key.family()
            {
                assert!(decode::<Value>(&token, &other_key, &validation(expected)).is_err());
            }
        }
    }
}
