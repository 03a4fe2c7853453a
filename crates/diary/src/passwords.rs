//! Password hashing with Argon2id (OWASP ASVS 5.0 §6.2), run off the async threads.

use crate::PasswordCost;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::OnceLock;

fn hasher(cost: PasswordCost) -> Argon2<'static> {
    let params = Params::new(cost.m_kib, cost.t, 1, None).expect("valid Argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password (PHC string format, parameters included).
pub fn hash(password: &str, cost: PasswordCost) -> String {
    let salt = SaltString::encode_b64(&edulink_domain::crypto::random_bytes(16)).expect("16-byte salt");
    hasher(cost).hash_password(password.as_bytes(), &salt).expect("hashing succeeds").to_string()
}

/// Verifies a password against a stored hash; `None` (unknown login) still spends the same work on
/// a dummy hash, so response time does not tell whether a login exists.
pub async fn verify(password: String, stored: Option<String>, cost: PasswordCost) -> bool {
    tokio::task::spawn_blocking(move || {
        static DUMMY: OnceLock<String> = OnceLock::new();
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| DUMMY.get_or_init(|| hash("not a password", cost)).clone());
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        // The parameters stored in the hash are used, so old hashes keep verifying after a cost change.
        let ok = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
        ok && known
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_right_and_refuses_wrong() {
        let cost = PasswordCost { m_kib: 256, t: 1 };
        let h = hash("demo", cost);
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("demo".into(), Some(h.clone()), cost).await);
        assert!(!verify("demo2".into(), Some(h), cost).await);
        assert!(!verify("not a password".into(), None, cost).await);
    }
}
