//! Small cryptographic helpers: keyed hashes for lookups, random tokens, and an AEAD for data at rest.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{digest, hmac, rand as awsrand};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use subtle::ConstantTimeEq;

/// A 256-bit secret from configuration (base64, standard or URL-safe alphabet).
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

/// A secret key that could not be read from configuration.
#[derive(Debug, thiserror::Error)]
#[error("a secret key must be 32 bytes encoded as base64")]
pub struct BadSecretKey;

impl SecretKey {
    /// Parses a base64-encoded 32-byte key.
    pub fn from_base64(s: &str) -> Result<Self, BadSecretKey> {
        let s = s.trim();
        let bytes = STANDARD
            .decode(s)
            .or_else(|_| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')))
            .map_err(|_| BadSecretKey)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| BadSecretKey)?;
        Ok(Self(arr))
    }

    /// Whether the key is visibly not random: fewer than 16 distinct byte values (all zeros, a
    /// repeated pattern, a typed password). 32 random bytes hold about 30 distinct values; 15 or
    /// fewer happens by chance with a probability below 10⁻¹⁵.
    pub fn is_weak(&self) -> bool {
        let mut seen = [false; 256];
        self.0.iter().for_each(|&b| seen[b as usize] = true);
        seen.iter().filter(|&&s| s).count() < 16
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        awsrand::fill(&mut k).expect("system random source");
        Self(k)
    }

    /// The key as standard base64, for writing into a generated configuration.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Derives an independent sub-key for one purpose, so one configured secret can serve several uses.
    pub fn derive(&self, purpose: &str) -> SecretKey {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &self.0), purpose.as_bytes());
        let mut k = [0u8; 32];
        k.copy_from_slice(tag.as_ref());
        SecretKey(k)
    }

    /// HMAC-SHA-256 of `parts` (length-prefixed, so that `("ab","c")` and `("a","bc")` differ).
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let mut ctx = hmac::Context::with_key(&key);
        for p in parts {
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// A keyed hash as URL-safe base64: used to look up phones and other identifiers without storing them.
    pub fn keyed_hash(&self, domain: &str, value: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(&[domain.as_bytes(), value.as_bytes()]))
    }
}

/// Authenticated encryption (AES-256-GCM) for values that must be readable again, e.g. a phone to send to.
#[derive(Clone)]
pub struct Cipher {
    key: std::sync::Arc<LessSafeKey>,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(…)")
    }
}

/// A ciphertext that failed to decrypt: wrong key, truncated, or tampered with.
#[derive(Debug, thiserror::Error)]
#[error("ciphertext could not be decrypted")]
pub struct DecryptError;

impl Cipher {
    /// A cipher keyed by `key`.
    pub fn new(key: &SecretKey) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, &key.0).expect("32-byte key");
        Self { key: std::sync::Arc::new(LessSafeKey::new(unbound)) }
    }

    /// Encrypts `plain`, binding it to `context` (e.g. the table and column) as associated data.
    pub fn seal(&self, context: &str, plain: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        awsrand::fill(&mut nonce).expect("system random source");
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut buf)
            .expect("AES-GCM seal");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Decrypts what [`Cipher::seal`] produced under the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, DecryptError> {
        let raw = URL_SAFE_NO_PAD.decode(sealed).map_err(|_| DecryptError)?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(DecryptError);
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| DecryptError)?;
        let mut buf = rest.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf).map_err(|_| DecryptError)?;
        Ok(plain.to_vec())
    }
}

/// `n` random bytes from the operating system's CSPRNG, as URL-safe base64 (no padding).
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    awsrand::fill(&mut buf).expect("system random source");
    URL_SAFE_NO_PAD.encode(buf)
}

/// `n` random bytes from the operating system's CSPRNG.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    awsrand::fill(&mut buf).expect("system random source");
    buf
}

/// A 128-bit random identifier for rows that must not be guessable.
pub fn new_id() -> String {
    random_token(16)
}

/// SHA-256 as URL-safe base64: how session ids, codes and tokens are stored (never the value itself).
pub fn sha256_b64(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, value.as_bytes()))
}

/// Constant-time equality of two byte strings.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A master key must come from a random source (`openssl rand -base64 32`, as
    /// docs/deployment.md says): zeros, a pattern or a 32-letter password are refused.
    #[test]
    fn generated_keys_are_not_weak_and_patterns_are() {
        assert!((0..1000).all(|_| !SecretKey::generate().is_weak()));
        for weak in [[0u8; 32], [0xAB; 32], *b"passwordpasswordpasswordpassword", *b"01234567890123456789012345678901"]
        {
            assert!(SecretKey(weak).is_weak());
        }
    }

    #[test]
    fn cipher_round_trip_and_context_binding() {
        let c = Cipher::new(&SecretKey::generate());
        let s = c.seal("accounts.phone", b"+79161234567");
        assert_eq!(c.open("accounts.phone", &s).unwrap(), b"+79161234567");
        assert!(c.open("other.column", &s).is_err());
        let mut t = s.into_bytes();
        let last = t.len() - 1;
        t[last] = if t[last] == b'A' { b'B' } else { b'A' };
        assert!(c.open("accounts.phone", std::str::from_utf8(&t).unwrap()).is_err());
    }

    #[test]
    fn keyed_hash_depends_on_key_and_domain() {
        let k1 = SecretKey::generate();
        let k2 = SecretKey::generate();
        assert_eq!(k1.keyed_hash("phone", "x"), k1.keyed_hash("phone", "x"));
        assert_ne!(k1.keyed_hash("phone", "x"), k2.keyed_hash("phone", "x"));
        assert_ne!(k1.keyed_hash("phone", "x"), k1.keyed_hash("login", "x"));
        assert_ne!(k1.mac(&[b"ab", b"c"]), k1.mac(&[b"a", b"bc"]));
    }

    #[test]
    fn secret_key_parsing() {
        let k = SecretKey::generate();
        assert!(SecretKey::from_base64(&k.to_base64()).is_ok());
        assert!(SecretKey::from_base64("short").is_err());
    }

    #[test]
    fn tokens_are_256_bit_and_distinct() {
        let a = random_token(32);
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token(32));
    }
}
