//! Signing keys: generated on first start, stored encrypted in the database, loaded once and kept
//! parsed in memory (re-parsing a private key per signature costs more than the signature itself,
//! docs/architecture.md, «Numbers»). `edulink keys rotate` retires the current keys; the previous
//! ones stay published.

use crate::StartError;
use crate::repo::signing_keys::{self, SigningKeyRow};
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
use edulink_domain::crypto::random_token;
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
    signer: Option<Signer>,
    public_raw: Vec<u8>,
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

fn generate(alg: &str) -> Result<(Vec<u8>, Vec<u8>, Value), String> {
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

/// Creates a new active key for every algorithm and retires the ones it replaces. Keys retired by an
/// earlier rotation are deleted, so exactly one previous generation stays published.
pub async fn rotate(db: &Db, cipher: &Cipher, now: i64) -> Result<Vec<String>, StartError> {
    let mut tx = db.begin().await?;
    signing_keys::retire_active(&mut tx, now).await?;
    let mut kids = Vec::new();
    for alg in ALGS {
        kids.push(insert_new(&mut tx, cipher, alg, now).await?);
    }
    tx.commit().await?;
    Ok(kids)
}

async fn insert_new(tx: &mut edulink_store::Tx, cipher: &Cipher, alg: &str, now: i64) -> Result<String, StartError> {
    let (der, public_raw, mut jwk) = generate(alg).map_err(StartError::Keys)?;
    let kid = random_token(12);
    jwk["kid"] = kid.clone().into();
    jwk["alg"] = (*alg).into();
    jwk["use"] = "sig".into();
    let row = SigningKeyRow {
        kid,
        alg: alg.to_string(),
        private_enc: cipher.seal("signing_keys.private", &der),
        public_raw: B64.encode(&public_raw),
        public_jwk: jwk.to_string(),
        retired_at: None,
    };
    signing_keys::insert_key(tx, &row, now).await?;
    Ok(row.kid)
}

impl KeyRing {
    /// Loads the keys, creating an active key for any algorithm that has none.
    pub async fn load_or_create(db: &Db, cipher: &Cipher, now: i64) -> Result<Self, StartError> {
        let ring = KeyRing {
            inner: RwLock::new(Inner { keys: Vec::new(), jwks: String::new() }),
            verified: Mutex::new(HashMap::new()),
        };
        ring.reload(db, cipher, now).await?;
        Ok(ring)
    }

    /// Re-reads keys from the database (after a rotation by another process).
    pub async fn reload(&self, db: &Db, cipher: &Cipher, now: i64) -> Result<(), StartError> {
        let active = signing_keys::active_algs(db).await?;
        let missing: Vec<&str> = ALGS.iter().copied().filter(|a| !active.iter().any(|x| x == a)).collect();
        if !missing.is_empty() {
            let mut tx = db.begin().await?;
            for alg in missing {
                insert_new(&mut tx, cipher, alg, now).await?;
            }
            tx.commit().await?;
        }
        let mut keys = Vec::new();
        let mut jwks = Vec::new();
        for r in signing_keys::all_keys(db).await? {
            let signer = if r.retired_at.is_none() {
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

    /// Signs `claims` as a compact JWS with the active key of `alg`.
    pub fn sign(&self, alg: &str, claims: &Value) -> Result<String, NoKey> {
        let inner = self.inner.read().expect("key ring lock");
        let key =
            inner.keys.iter().find(|k| k.alg == alg && k.signer.is_some()).ok_or_else(|| NoKey(alg.to_string()))?;
        let header = json!({ "alg": alg, "kid": key.kid, "typ": "JWT" });
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

    #[tokio::test]
    async fn own_tokens_verify_once_remembered_until_their_key_is_gone() {
        let (db, _dir) = crate::test_db().await;
        let cipher = Cipher::new(&SecretKey::generate());
        let ring = KeyRing::load_or_create(&db, &cipher, 1_000).await.unwrap();
        let token = ring.sign("EdDSA", &json!({ "sub": "s1", "aud": "c1" })).unwrap();
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
        // One rotation keeps the old key published; the second deletes it, and the remembered
        // token stops verifying.
        rotate(&db, &cipher, 2_000).await.unwrap();
        ring.reload(&db, &cipher, 2_000).await.unwrap();
        assert!(ring.verify_own(&token).is_some());
        rotate(&db, &cipher, 3_000).await.unwrap();
        ring.reload(&db, &cipher, 3_000).await.unwrap();
        assert!(ring.verify_own(&token).is_none());
    }
}
