//! DPoP proofs (RFC 9449): the checks of §4.3 that need no storage, the JWK thumbprint of RFC 7638
//! that binds tokens to a key (`jkt`, RFC 9449 §6), and a proof signer for the clients we run
//! ourselves (the command-line app, tests).
//!
//! What stays with the caller: the `jti` replay store (§11.1) and the server nonce (§8), which
//! need state; [`verify`] returns both values for that.

use crate::crypto::{ct_eq, sha256_b64};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair, KeyPair,
    RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

/// The proof algorithms accepted (`dpop_signing_alg_values_supported`): asymmetric only (§4.2).
pub const ALGS: [&str; 3] = ["ES256", "EdDSA", "RS256"];

/// How far a proof's `iat` may lie in the past, seconds (§4.3 check 11: "a reasonable window").
pub const MAX_AGE: i64 = 60;
/// How far a proof's `iat` may lie in the future, seconds (clock skew of phones).
pub const MAX_SKEW: i64 = 10;

/// JWK members that carry private key material (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a DPoP proof was refused (each maps to `invalid_dpop_proof`, RFC 9449 §5, §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Not a compact JWS with JSON header and claims.
    #[error("the proof is not a well-formed JWT")]
    Malformed,
    /// `typ` is not `dpop+jwt`.
    #[error("typ must be dpop+jwt")]
    Type,
    /// `alg` is not one of [`ALGS`] or does not fit the key.
    #[error("unsupported or mismatched alg")]
    Algorithm,
    /// `jwk` is missing, unsupported, or holds private key material.
    #[error("jwk must be a supported public key")]
    Key,
    /// The signature does not verify with the header's key.
    #[error("bad signature")]
    Signature,
    /// A required claim (`jti`, `htm`, `htu`, `iat`) is missing or of the wrong type.
    #[error("a required claim is missing")]
    Claims,
    /// `htm` is not the request's method.
    #[error("htm does not match the request")]
    Method,
    /// `htu` is not the request's URI (query and fragment ignored).
    #[error("htu does not match the request")]
    Uri,
    /// `iat` is outside the accepted window.
    #[error("iat is outside the accepted window")]
    Stale,
    /// `ath` is missing or is not the hash of the presented access token.
    #[error("ath does not match the access token")]
    AccessTokenHash,
}

/// What the request a proof must match looks like.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The request's method (`htm`).
    pub method: &'a str,
    /// The request's URI (`htu`); its query and fragment are ignored.
    pub uri: &'a str,
    /// Now, Unix seconds.
    pub now: i64,
    /// At a resource: the access token presented, whose hash `ath` must be (§4.3 check 12).
    pub access_token: Option<&'a str>,
}

/// A verified proof: the key's thumbprint and what the caller still has to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// RFC 7638 thumbprint of the proof's key (`jkt`).
    pub jkt: String,
    /// `jti`, for the replay store.
    pub jti: String,
    /// `iat`.
    pub iat: i64,
    /// `nonce`, if the proof carries one.
    pub nonce: Option<String>,
}

/// `ath`: the base64url SHA-256 of an access token (§4.2).
pub fn access_token_hash(token: &str) -> String {
    sha256_b64(token)
}

/// The RFC 7638 thumbprint of a public JWK (EC P-256, OKP Ed25519 or RSA): the SHA-256 of its
/// required members in lexicographic order, base64url. `None` for anything else.
pub fn thumbprint(jwk: &Value) -> Option<String> {
    let s = |k: &str| jwk.get(k).and_then(Value::as_str);
    // serde_json's map keeps keys sorted, and the canonical form has no whitespace (RFC 7638 §3.2).
    let canonical = match s("kty")? {
        "EC" => json!({ "crv": s("crv")?, "kty": "EC", "x": s("x")?, "y": s("y")? }),
        "OKP" => json!({ "crv": s("crv")?, "kty": "OKP", "x": s("x")? }),
        "RSA" => json!({ "e": s("e")?, "kty": "RSA", "n": s("n")? }),
        _ => return None,
    };
    Some(sha256_b64(&canonical.to_string()))
}

/// Whether `s` has the shape of a thumbprint (a base64url SHA-256, e.g. `dpop_jkt`, §10).
pub fn is_thumbprint(s: &str) -> bool {
    s.len() == 43 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A URI without query and fragment, normalised (scheme and host lower case, default port
/// dropped), as `htu` is compared (§4.3 check 9; RFC 3986 §6.2.2, §6.2.3).
pub fn normalize_htu(uri: &str) -> Option<String> {
    let mut u = url::Url::parse(uri).ok()?;
    u.set_query(None);
    u.set_fragment(None);
    Some(u.to_string())
}

fn part(s: &str) -> Result<Value, ProofError> {
    let bytes = B64.decode(s).map_err(|_| ProofError::Malformed)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| ProofError::Malformed)?;
    if v.is_object() { Ok(v) } else { Err(ProofError::Malformed) }
}

fn b64_member(jwk: &Value, k: &str) -> Result<Vec<u8>, ProofError> {
    let s = jwk.get(k).and_then(Value::as_str).ok_or(ProofError::Key)?;
    B64.decode(s).map_err(|_| ProofError::Key)
}

/// Verifies the signature of `input` with the header's `jwk` under `alg`.
fn verify_signature(alg: &str, jwk: &Value, input: &[u8], sig: &[u8]) -> Result<(), ProofError> {
    let kty = jwk.get("kty").and_then(Value::as_str).ok_or(ProofError::Key)?;
    let crv = jwk.get("crv").and_then(Value::as_str);
    let ok = match (alg, kty, crv) {
        ("ES256", "EC", Some("P-256")) => {
            let (x, y) = (b64_member(jwk, "x")?, b64_member(jwk, "y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err(ProofError::Key);
            }
            let point = [&[4u8][..], &x, &y].concat();
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).verify(input, sig).is_ok()
        }
        ("EdDSA", "OKP", Some("Ed25519")) => {
            UnparsedPublicKey::new(&ED25519, b64_member(jwk, "x")?).verify(input, sig).is_ok()
        }
        ("RS256", "RSA", _) => {
            let (n, e) = (b64_member(jwk, "n")?, b64_member(jwk, "e")?);
            RsaPublicKeyComponents { n: &n, e: &e }.verify(&RSA_PKCS1_2048_8192_SHA256, input, sig).is_ok()
        }
        // A known key type under another algorithm (e.g. an RSA key with ES256): alg confusion.
        (_, "EC" | "OKP" | "RSA", _) => return Err(ProofError::Algorithm),
        _ => return Err(ProofError::Key),
    };
    if ok { Ok(()) } else { Err(ProofError::Signature) }
}

/// Checks a DPoP proof against the request it came with (RFC 9449 §4.3, checks 1–10 and 12):
/// one compact JWS; `typ` `dpop+jwt`; `alg` asymmetric and supported; `jwk` a public key that
/// verifies the signature; `jti`, `htm`, `htu`, `iat` present; `htm` and `htu` those of the
/// request; `iat` within [`MAX_AGE`] back and [`MAX_SKEW`] ahead; `ath` at a resource.
pub fn verify(jws: &str, want: &Expected<'_>) -> Result<Proof, ProofError> {
    let mut parts = jws.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(ProofError::Malformed);
    };
    let (header, claims) = (part(h)?, part(c)?);
    let sig = B64.decode(s).map_err(|_| ProofError::Malformed)?;
    if !header.get("typ").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt")) {
        return Err(ProofError::Type);
    }
    let alg = header.get("alg").and_then(Value::as_str).ok_or(ProofError::Algorithm)?;
    if !ALGS.contains(&alg) {
        return Err(ProofError::Algorithm);
    }
    let jwk = header.get("jwk").filter(|j| j.is_object()).ok_or(ProofError::Key)?;
    if PRIVATE_MEMBERS.iter().any(|m| jwk.get(m).is_some()) {
        return Err(ProofError::Key);
    }
    verify_signature(alg, jwk, format!("{h}.{c}").as_bytes(), &sig)?;
    let jkt = thumbprint(jwk).ok_or(ProofError::Key)?;
    let text = |k: &str| claims.get(k).and_then(Value::as_str);
    let (Some(jti), Some(htm), Some(htu), Some(iat)) =
        (text("jti"), text("htm"), text("htu"), claims.get("iat").and_then(Value::as_i64))
    else {
        return Err(ProofError::Claims);
    };
    if jti.is_empty() || jti.len() > 256 {
        return Err(ProofError::Claims);
    }
    if htm != want.method {
        return Err(ProofError::Method);
    }
    match (normalize_htu(htu), normalize_htu(want.uri)) {
        (Some(a), Some(b)) if a == b => {}
        _ => return Err(ProofError::Uri),
    }
    if iat < want.now - MAX_AGE || iat > want.now + MAX_SKEW {
        return Err(ProofError::Stale);
    }
    if let Some(token) = want.access_token {
        let expected = access_token_hash(token);
        if !text("ath").is_some_and(|a| ct_eq(a.as_bytes(), expected.as_bytes())) {
            return Err(ProofError::AccessTokenHash);
        }
    }
    let nonce = match claims.get("nonce") {
        None => None,
        Some(Value::String(n)) => Some(n.clone()),
        Some(_) => return Err(ProofError::Claims),
    };
    Ok(Proof { jkt, jti: jti.to_string(), iat, nonce })
}

/// An ES256 key that signs DPoP proofs: what a client (our command-line app, tests) holds.
pub struct ProofKey {
    pair: EcdsaKeyPair,
}

impl std::fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProofKey").field("jkt", &self.jkt()).finish()
    }
}

impl ProofKey {
    /// A fresh P-256 key.
    pub fn generate() -> Self {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .expect("system random source");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("fresh key");
        Self { pair }
    }

    /// The public JWK.
    pub fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({ "kty": "EC", "crv": "P-256", "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]) })
    }

    /// The key's thumbprint (`jkt`, `dpop_jkt`).
    pub fn jkt(&self) -> String {
        thumbprint(&self.jwk()).expect("an EC key has a thumbprint")
    }

    /// A proof for `method uri` at `iat`, with the server's `nonce` and, at a resource, the hash
    /// of `access_token`.
    pub fn proof(&self, method: &str, uri: &str, iat: i64, nonce: Option<&str>, access_token: Option<&str>) -> String {
        let header = json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk() });
        let mut claims = json!({
            "jti": crate::crypto::random_token(16),
            "htm": method,
            "htu": normalize_htu(uri).unwrap_or_else(|| uri.to_string()),
            "iat": iat,
        });
        if let Some(n) = nonce {
            claims["nonce"] = n.into();
        }
        if let Some(t) = access_token {
            claims["ath"] = access_token_hash(t).into();
        }
        let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let sig = self.pair.sign(&SystemRandom::new(), input.as_bytes()).expect("signing");
        format!("{input}.{}", B64.encode(sig.as_ref()))
    }
}

#[cfg(test)]
mod tests;
