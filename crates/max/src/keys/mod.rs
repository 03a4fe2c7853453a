//! Signing keys: generated on first start, stored encrypted in the database, loaded once and kept
//! parsed in memory (re-parsing a private key per signature costs more than the signature itself,
//! docs/architecture.md, «Numbers»). `edulink keys rotate` makes new keys; how they are published,
//! start signing and are finally deleted is in [`rotation`].

pub mod rotation;

pub use rotation::{ACTIVATION_DELAY_SECS, POLL_INTERVAL, Rotation, retention_secs, rotate};

use crate::StartError;
use crate::repo::signing_keys;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    self, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair, UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use edulink_domain::Cipher;
use edulink_store::Db;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// Own tokens remembered as verified (see [`KeyRing::verify_own`]); the memo is emptied when full.
const VERIFIED_MEMO: usize = 4096;

/// The JWS algorithms this provider signs with.
pub const ALGS: &[&str] = &["RS256", "ES256", "EdDSA"];

enum Signer {
    Rs256(RsaKeyPair),
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

struct LoadedKey {
    kid: String,
    alg: String,
    /// The private key, for keys that sign now or will (retired ones only verify).
    signer: Option<Signer>,
    public_raw: Vec<u8>,
    active_from: i64,
    retired_at: Option<i64>,
}

impl LoadedKey {
    /// Whether this key signs `alg` at `now`.
    fn signs(&self, alg: &str, now: i64) -> bool {
        self.alg == alg && self.signer.is_some() && self.active_from <= now && self.retired_at.is_none_or(|r| now < r)
    }
}

/// The provider's keys: the active signer per algorithm and every published public key.
pub struct KeyRing {
    inner: RwLock<Inner>,
    /// Tokens whose signature verified, by the SHA-256 of the whole token: the key that signed
    /// and the claims. A student's every sign-in sends the same stored ID token as its
    /// `id_token_hint`, and its verification was a third of `/oauth/authorize`.
    verified: Mutex<HashMap<[u8; 32], Verified>>,
}

/// A remembered verification: the signing key's id and the claims.
type Verified = (String, Arc<Value>);

struct Inner {
    keys: Vec<LoadedKey>,
    jwks: String,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyRing(…)")
    }
}

/// A signing failure (no key for the algorithm).
#[derive(Debug, thiserror::Error)]
#[error("no signing key for {0}")]
pub struct NoKey(pub String);

pub(crate) fn generate(alg: &str) -> Result<(Vec<u8>, Vec<u8>, Value), String> {
    let e = |x: aws_lc_rs::error::Unspecified| x.to_string();
    match alg {
        "RS256" => {
            let kp = RsaKeyPair::generate(KeySize::Rsa2048).map_err(e)?;
            let der = kp.as_der().map_err(e)?.as_ref().to_vec();
            let pk = kp.public_key();
            let jwk = json!({
                "kty": "RSA",
                "n": B64.encode(pk.modulus().big_endian_without_leading_zero()),
                "e": B64.encode(pk.exponent().big_endian_without_leading_zero()),
            });
            Ok((der, pk.as_ref().to_vec(), jwk))
        }
        "ES256" => {
            let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(e)?;
            let der = kp.to_pkcs8v1().map_err(e)?.as_ref().to_vec();
            let point = kp.public_key().as_ref().to_vec();
            // Uncompressed point: 0x04 || x || y.
            let jwk =
                json!({ "kty": "EC", "crv": "P-256", "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]) });
            Ok((der, point, jwk))
        }
        "EdDSA" => {
            let kp = Ed25519KeyPair::generate().map_err(e)?;
            let der = kp.to_pkcs8().map_err(e)?.as_ref().to_vec();
            let pk = kp.public_key().as_ref().to_vec();
            let jwk = json!({ "kty": "OKP", "crv": "Ed25519", "x": B64.encode(&pk) });
            Ok((der, pk, jwk))
        }
        other => Err(format!("unsupported algorithm {other}")),
    }
}

fn parse_signer(alg: &str, der: &[u8]) -> Result<Signer, String> {
    let e = |x: aws_lc_rs::error::KeyRejected| x.to_string();
    Ok(match alg {
        "RS256" => Signer::Rs256(RsaKeyPair::from_pkcs8(der).map_err(e)?),
        "ES256" => Signer::Es256(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).map_err(e)?),
        "EdDSA" => Signer::EdDsa(Ed25519KeyPair::from_pkcs8(der).map_err(e)?),
        other => return Err(format!("unsupported algorithm {other}")),
    })
}

impl KeyRing {
    /// Loads the keys, creating a key for any algorithm that has none (under the keys lock, see
    /// [`rotation::ensure_keys`]).
    pub async fn load_or_create(db: &Db, cipher: &Cipher, now: i64) -> Result<Self, StartError> {
        rotation::ensure_keys(db, cipher, now).await?;
        let ring = KeyRing {
            inner: RwLock::new(Inner { keys: Vec::new(), jwks: String::new() }),
            verified: Mutex::new(HashMap::new()),
        };
        ring.reload(db, cipher, now).await?;
        Ok(ring)
    }

    /// Re-reads the keys if another process created or deleted some since the last read (one small
    /// query: the key ids). Running instances call this every [`POLL_INTERVAL`]. Returns whether
    /// the keys changed.
    pub async fn refresh(&self, db: &Db, cipher: &Cipher, now: i64) -> Result<bool, StartError> {
        let stored = signing_keys::kids(db).await?;
        let mut loaded: Vec<String> =
            self.inner.read().expect("key ring lock").keys.iter().map(|k| k.kid.clone()).collect();
        loaded.sort();
        if loaded == stored {
            return Ok(false);
        }
        self.reload(db, cipher, now).await?;
        Ok(true)
    }

    /// Re-reads every key from the database.
    pub async fn reload(&self, db: &Db, cipher: &Cipher, now: i64) -> Result<(), StartError> {
        let mut keys = Vec::new();
        let mut jwks = Vec::new();
        for r in signing_keys::all_keys(db).await? {
            let signer = if r.retired_at.is_none_or(|at| now < at) {
                let der = cipher
                    .open("signing_keys.private", &r.private_enc)
                    .map_err(|_| StartError::Keys("cannot decrypt a signing key: wrong secret?".into()))?;
                Some(parse_signer(&r.alg, &der).map_err(StartError::Keys)?)
            } else {
                None
            };
            jwks.push(serde_json::from_str::<Value>(&r.public_jwk).map_err(|e| StartError::Keys(e.to_string()))?);
            keys.push(LoadedKey {
                kid: r.kid,
                alg: r.alg,
                signer,
                public_raw: B64.decode(r.public_raw).map_err(|e| StartError::Keys(e.to_string()))?,
                active_from: r.active_from,
                retired_at: r.retired_at,
            });
        }
        let jwks = json!({ "keys": jwks }).to_string();
        *self.inner.write().expect("key ring lock") = Inner { keys, jwks };
        self.verified.lock().expect("memo lock").clear();
        Ok(())
    }

    /// The JWKS document.
    pub fn jwks(&self) -> String {
        self.inner.read().expect("key ring lock").jwks.clone()
    }

    /// Signs `claims` as a compact JWS with the key of `alg` that signs at `now` (a rotated key only
    /// from its `active_from`, when every instance publishes it).
    pub fn sign(&self, alg: &str, claims: &Value, now: i64) -> Result<String, NoKey> {
        self.sign_typed(alg, "JWT", claims, now)
    }

    /// [`Self::sign`] with the JWS header's `typ` (RFC 7515 §4.1.9), e.g. `logout+jwt` for logout
    /// tokens (OpenID Connect Back-Channel Logout 1.0 §2.4): explicit typing keeps one kind of
    /// token from being accepted as another.
    pub fn sign_typed(&self, alg: &str, typ: &str, claims: &Value, now: i64) -> Result<String, NoKey> {
        let inner = self.inner.read().expect("key ring lock");
        let key = inner
            .keys
            .iter()
            .filter(|k| k.signs(alg, now))
            .max_by_key(|k| k.active_from)
            .ok_or_else(|| NoKey(alg.to_string()))?;
        let header = json!({ "alg": alg, "kid": key.kid, "typ": typ });
        let mut out = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let rng = SystemRandom::new();
        let sig = match key.signer.as_ref().expect("checked above") {
            Signer::Rs256(kp) => {
                let mut sig = vec![0; kp.public_modulus_len()];
                kp.sign(&RSA_PKCS1_SHA256, &rng, out.as_bytes(), &mut sig).map_err(|_| NoKey(alg.into()))?;
                sig
            }
            Signer::Es256(kp) => kp.sign(&rng, out.as_bytes()).map_err(|_| NoKey(alg.into()))?.as_ref().to_vec(),
            Signer::EdDsa(kp) => kp.sign(out.as_bytes()).as_ref().to_vec(),
        };
        out.push('.');
        out.push_str(&B64.encode(sig));
        Ok(out)
    }

    /// Verifies a compact JWS made by one of our published keys and returns its claims. Expiry is not
    /// checked: this is for `id_token_hint`, which may be an expired ID token (OIDC Core §3.1.2.1).
    /// A token verified before is recognised by its digest, as long as its key is still published.
    pub fn verify_own(&self, jws: &str) -> Option<Arc<Value>> {
        if jws.len() > 8192 {
            return None;
        }
        let digest: [u8; 32] =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, jws.as_bytes()).as_ref().try_into().ok()?;
        let remembered = self.verified.lock().expect("memo lock").get(&digest).cloned();
        if let Some((kid, claims)) = remembered {
            // A retired key's tokens stop verifying when the key is deleted from the ring.
            return self.inner.read().expect("key ring lock").keys.iter().any(|k| k.kid == kid).then_some(claims);
        }
        let (kid, claims) = self.verify_signature(jws)?;
        let claims = Arc::new(claims);
        let mut memo = self.verified.lock().expect("memo lock");
        if memo.len() >= VERIFIED_MEMO {
            memo.clear();
        }
        memo.insert(digest, (kid, claims.clone()));
        Some(claims)
    }

    /// The signature check of [`Self::verify_own`]: the signing key's id and the claims.
    fn verify_signature(&self, jws: &str) -> Option<(String, Value)> {
        let mut parts = jws.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
        let kid = header.get("kid")?.as_str()?;
        let alg = header.get("alg")?.as_str()?;
        let inner = self.inner.read().expect("key ring lock");
        let key = inner.keys.iter().find(|k| k.kid == kid && k.alg == alg)?;
        let algorithm: &dyn signature::VerificationAlgorithm = match alg {
            "RS256" => &RSA_PKCS1_2048_8192_SHA256,
            "ES256" => &ECDSA_P256_SHA256_FIXED,
            "EdDSA" => &ED25519,
            _ => return None,
        };
        let sig = B64.decode(s).ok()?;
        UnparsedPublicKey::new(algorithm, &key.public_raw).verify(format!("{h}.{c}").as_bytes(), &sig).ok()?;
        Some((kid.to_string(), serde_json::from_slice(&B64.decode(c).ok()?).ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edulink_domain::crypto::SecretKey;

    const DAY: i64 = 86_400;

    fn kid_of(token: &str) -> String {
        let header: Value = serde_json::from_slice(&B64.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
        header["kid"].as_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn own_tokens_verify_once_remembered_until_their_key_is_gone() {
        let (db, _dir) = crate::test_db().await;
        let cipher = Cipher::new(&SecretKey::generate());
        let ring = KeyRing::load_or_create(&db, &cipher, 1_000).await.unwrap();
        let token = ring.sign("EdDSA", &json!({ "sub": "s1", "aud": "c1" }), 1_000).unwrap();
        assert_eq!(ring.verify_own(&token).unwrap()["sub"], "s1");
        // Remembered: the same answer without a signature check.
        assert_eq!(ring.verify_own(&token).unwrap()["sub"], "s1");
        // Another token (claims or signature changed) is checked, and fails.
        let (head, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let forged = format!("{head}.{}.{sig}", B64.encode(r#"{"sub":"s2","aud":"c1"}"#));
        assert!(ring.verify_own(&forged).is_none());
        let mut bad_sig = token.clone();
        bad_sig.pop();
        bad_sig.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(ring.verify_own(&bad_sig).is_none());
        // Rotations within the retention period keep the key published, however many.
        for t in [2_000, 3_000, 4_000] {
            rotate(&db, &cipher, t, 30 * DAY).await.unwrap();
            assert!(ring.refresh(&db, &cipher, t).await.unwrap());
            assert!(ring.verify_own(&token).is_some(), "rotation at {t}");
        }
        // A rotation longer than the retention period after its retirement deletes it, and the
        // remembered token stops verifying.
        let later = 2_000 + ACTIVATION_DELAY_SECS + 30 * DAY + 1;
        assert_eq!(rotate(&db, &cipher, later, 30 * DAY).await.unwrap().deleted, 3);
        ring.refresh(&db, &cipher, later).await.unwrap();
        assert!(ring.verify_own(&token).is_none());
    }

    /// A rotated key is in the JWKS at once but signs only from its `active_from`: every instance
    /// publishes it first (Keycloak's and Hydra's "next" keys; RFC 7517 §5 key sets).
    #[tokio::test]
    async fn a_rotated_key_is_published_before_it_signs() {
        let (db, _dir) = crate::test_db().await;
        let cipher = Cipher::new(&SecretKey::generate());
        let ring = KeyRing::load_or_create(&db, &cipher, 1_000).await.unwrap();
        let old = kid_of(&ring.sign("ES256", &json!({}), 1_000).unwrap());
        let r = rotate(&db, &cipher, 2_000, 30 * DAY).await.unwrap();
        assert!(ring.refresh(&db, &cipher, 2_000).await.unwrap());
        assert!(ring.jwks().contains(&r.kids[1]) && ring.jwks().contains(&old));
        assert_eq!(kid_of(&ring.sign("ES256", &json!({}), r.active_from - 1).unwrap()), old);
        assert_eq!(kid_of(&ring.sign("ES256", &json!({}), r.active_from).unwrap()), r.kids[1]);
        // Nothing changed: the poll is one query and no reload.
        assert!(!ring.refresh(&db, &cipher, 2_001).await.unwrap());
    }
}
