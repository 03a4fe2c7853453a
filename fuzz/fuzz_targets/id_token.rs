//! The relying party's ID token validation (openidconnect, as the diary configures it) never panics
//! and never accepts a token that this fuzzer could not have signed: with a random public key and no
//! private key, every input must be rejected.
#![no_main]
use libfuzzer_sys::fuzz_target;
use openidconnect::core::{CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::{ClientId, IssuerUrl, Nonce};
use std::str::FromStr;
use std::sync::OnceLock;

fn verifier() -> &'static CoreIdTokenVerifier<'static> {
    static V: OnceLock<CoreIdTokenVerifier<'static>> = OnceLock::new();
    V.get_or_init(|| {
        let jwks: CoreJsonWebKeySet = serde_json::from_str(
            r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256","use":"sig",
                "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#,
        )
        .unwrap();
        CoreIdTokenVerifier::new_confidential_client(
            ClientId::new("mesh".into()),
            openidconnect::ClientSecret::new("s".into()),
            IssuerUrl::new("https://max.example".into()).unwrap(),
            jwks,
        )
        .set_allowed_algs([
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
            CoreJwsSigningAlgorithm::EdDsa,
        ])
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(token) = CoreIdToken::from_str(s) {
        assert!(token.claims(verifier(), &Nonce::new("n".into())).is_err(), "a forged token was accepted");
    }
});
