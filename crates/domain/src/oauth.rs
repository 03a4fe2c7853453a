//! OAuth 2.0 / OpenID Connect values with their rules (RFC 6749, RFC 7636, RFC 9700).

use crate::crypto::ct_eq;
use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Exact redirect URI matching (RFC 9700 §2.1): byte-for-byte equality with a registered URI,
/// no normalisation of case, ports, paths, or query strings.
pub fn redirect_uri_matches(registered: &[String], presented: &str) -> bool {
    registered.iter().any(|r| r.as_bytes() == presented.as_bytes())
}

/// A PKCE code verifier or challenge is 43–128 characters of `[A-Za-z0-9-._~]` (RFC 7636 §4.1).
pub fn is_pkce_value(s: &str) -> bool {
    (43..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// The S256 challenge of a verifier: `BASE64URL(SHA256(verifier))`.
pub fn pkce_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()))
}

/// Checks a presented verifier against a stored S256 challenge, in constant time.
pub fn pkce_verify(verifier: &str, challenge: &str) -> bool {
    is_pkce_value(verifier) && ct_eq(pkce_s256(verifier).as_bytes(), challenge.as_bytes())
}

/// A space-separated scope string as a sorted, deduplicated set.
pub fn parse_scope(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.split(' ').filter(|x| !x.is_empty()).map(str::to_owned).collect();
    v.sort();
    v.dedup();
    v
}

/// The scope values this provider knows (and advertises in `scopes_supported`).
pub const KNOWN_SCOPES: &[&str] = &["openid", "profile", "phone", "offline_access", "sferum.provision"];

/// A `state` or `nonce` value: RFC 6749 Appendix A.5 `state = 1*VSCHAR` (printable ASCII and the
/// space, 0x20–0x7E), bounded.
pub fn is_vschar_param(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_vector() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(pkce_s256(verifier), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!(pkce_verify(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(!pkce_verify(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_verify("short", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
    }

    #[test]
    fn redirect_uri_is_exact() {
        let reg = vec!["https://school.example/sferum/callback".to_string()];
        assert!(redirect_uri_matches(&reg, "https://school.example/sferum/callback"));
        for bad in [
            "https://school.example/sferum/callback/",
            "https://school.example/sferum/callback?x=1",
            "https://School.example/sferum/callback",
            "https://school.example:443/sferum/callback",
            "http://school.example/sferum/callback",
            "https://school.example/sferum/callback#",
        ] {
            assert!(!redirect_uri_matches(&reg, bad), "{bad}");
        }
    }

    /// RFC 6749 Appendix A.5: VSCHAR includes the space, not controls or non-ASCII.
    #[test]
    fn state_is_vschar() {
        assert!(is_vschar_param("a b~!", 512));
        for bad in ["", "a\tb", "a\nb", "é", "a\u{7f}"] {
            assert!(!is_vschar_param(bad, 512), "{bad:?}");
        }
        assert!(!is_vschar_param(&"a".repeat(513), 512));
    }

    #[test]
    fn scopes_are_a_set() {
        assert_eq!(parse_scope(" openid  profile openid"), vec!["openid", "profile"]);
    }
}
