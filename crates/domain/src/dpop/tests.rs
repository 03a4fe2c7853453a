//! Test vectors from the RFCs themselves: RFC 9449 §4.1 (Figure 3, the token request proof), §7.1
//! (Figure 12, the resource request proof with `ath`, and its access token), §6.1 (the `jkt` of
//! that key) and RFC 7638 §3.1 (the RSA thumbprint example).

use super::*;

/// RFC 9449 §4.1, Figure 3.
const TOKEN_PROOF: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg";
/// RFC 9449 §7.1, Figure 12.
const RESOURCE_PROOF: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA";
/// RFC 9449 §7.1: the DPoP-bound access token of the example.
const ACCESS_TOKEN: &str = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
/// RFC 9449 §6.1: the thumbprint of the examples' key.
const JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";

fn token_request(now: i64) -> Expected<'static> {
    Expected { method: "POST", uri: "https://server.example.com/token", now, access_token: None }
}

fn b64json(v: &Value) -> String {
    B64.encode(v.to_string())
}

/// RFC 9449 §4.1 Figure 3 verifies, and its key's thumbprint is §6.1's `jkt`.
#[test]
fn the_rfc_9449_token_request_proof_verifies_with_the_rfc_jkt() {
    let p = verify(TOKEN_PROOF, &token_request(1_562_262_616)).unwrap();
    assert_eq!(p.jkt, JKT);
    assert_eq!(p.jti, "-BwC3ESc6acc2lTc");
    assert_eq!(p.nonce, None);
    // The query of the request is not part of htu (§4.3 check 9), nor is a default port.
    let w = Expected { uri: "https://SERVER.example.com:443/token?x=1#f", ..token_request(1_562_262_616) };
    assert_eq!(verify(TOKEN_PROOF, &w).unwrap().jkt, JKT);
}

/// RFC 9449 §7.1 Figure 12 verifies with its access token, and `ath` binds it (§4.3 check 12).
#[test]
fn the_rfc_9449_resource_proof_verifies_only_with_its_access_token() {
    let want = Expected {
        method: "GET",
        uri: "https://resource.example.org/protectedresource",
        now: 1_562_262_618,
        access_token: Some(ACCESS_TOKEN),
    };
    assert_eq!(verify(RESOURCE_PROOF, &want).unwrap().jkt, JKT);
    assert_eq!(access_token_hash(ACCESS_TOKEN), "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo");
    let other = Expected { access_token: Some("another token"), ..want };
    assert_eq!(verify(RESOURCE_PROOF, &other), Err(ProofError::AccessTokenHash));
}

/// RFC 7638 §3.1: the RSA example key's thumbprint; optional members do not change it.
#[test]
fn the_rfc_7638_example_thumbprint() {
    let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    let jwk = json!({ "kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29" });
    assert_eq!(thumbprint(&jwk).as_deref(), Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"));
    assert!(is_thumbprint(JKT));
    assert!(!is_thumbprint("short"));
}

/// §4.3 checks 8–11: method, target URI and time window of the request.
#[test]
fn a_proof_for_another_method_uri_or_time_is_refused() {
    let at = 1_562_262_616;
    assert_eq!(verify(TOKEN_PROOF, &Expected { method: "GET", ..token_request(at) }), Err(ProofError::Method));
    let other = Expected { uri: "https://server.example.com/userinfo", ..token_request(at) };
    assert_eq!(verify(TOKEN_PROOF, &other), Err(ProofError::Uri));
    assert!(verify(TOKEN_PROOF, &token_request(at + MAX_AGE)).is_ok());
    assert_eq!(verify(TOKEN_PROOF, &token_request(at + MAX_AGE + 1)), Err(ProofError::Stale));
    assert!(verify(TOKEN_PROOF, &token_request(at - MAX_SKEW)).is_ok());
    assert_eq!(verify(TOKEN_PROOF, &token_request(at - MAX_SKEW - 1)), Err(ProofError::Stale));
}

/// §4.3 checks 2–7: a changed claim breaks the signature; `none`, HMAC, a wrong `typ`, a private
/// key in the header and a key of another type than `alg` are refused.
#[test]
fn tampered_or_unsafe_proofs_are_refused() {
    let parts: Vec<&str> = TOKEN_PROOF.split('.').collect();
    let header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    let with = |h: &Value, c: &Value| format!("{}.{}.{}", b64json(h), b64json(c), parts[2]);
    let now = token_request(1_562_262_616);

    let mut c = claims.clone();
    c["htu"] = "https://server.example.com/token".into();
    c["jti"] = "another".into();
    assert_eq!(verify(&with(&header, &c), &now), Err(ProofError::Signature));
    for (key, value, why) in [
        ("typ", json!("JWT"), ProofError::Type),
        ("alg", json!("none"), ProofError::Algorithm),
        ("alg", json!("HS256"), ProofError::Algorithm),
        ("alg", json!("RS256"), ProofError::Algorithm),
        ("alg", json!("EdDSA"), ProofError::Algorithm),
    ] {
        let mut h = header.clone();
        h[key] = value;
        assert_eq!(verify(&with(&h, &claims), &now), Err(why), "{key}");
    }
    let mut h = header.clone();
    h["jwk"]["d"] = "private".into();
    assert_eq!(verify(&with(&h, &claims), &now), Err(ProofError::Key));
    let mut h = header.clone();
    h.as_object_mut().unwrap().remove("jwk");
    assert_eq!(verify(&with(&h, &claims), &now), Err(ProofError::Key));
    assert_eq!(verify("a.b", &now), Err(ProofError::Malformed));
    assert_eq!(verify(&format!("{TOKEN_PROOF}.x"), &now), Err(ProofError::Malformed));
}

/// Our own signer's proofs verify, carry the nonce and `ath`, and never repeat a `jti`.
#[test]
fn our_signer_makes_proofs_that_verify() {
    let key = ProofKey::generate();
    let uri = "https://max.example/oauth/userinfo";
    let p = key.proof("GET", uri, 1000, Some("n-1"), Some("tok"));
    let want = Expected { method: "GET", uri, now: 1000, access_token: Some("tok") };
    let got = verify(&p, &want).unwrap();
    assert_eq!(got.jkt, key.jkt());
    assert_eq!(got.nonce.as_deref(), Some("n-1"));
    let again = verify(&key.proof("GET", uri, 1000, None, Some("tok")), &want).unwrap();
    assert_ne!(again.jti, got.jti);
}
