//! The authorization code grant at the token endpoint (RFC 6749 §4.1.3–4.1.4; RFC 7636 §4.5–4.6;
//! OIDC Core §3.1.3.1–3.1.3.3 and §3.1.3.6 for the ID token). A code is single-use: claiming it and
//! storing what it issues commit together, and a code presented again revokes what it issued
//! (RFC 6749 §4.1.2). It is bound to its client, its exact redirect URI and the PKCE verifier, and
//! expires after [`crate::oidc::CODE_TTL`]; any mismatch burns it all the same.

use super::{Compromise, Issue, TokenParams, TokenResponse, revoke_compromised_family, store_tokens};
use crate::MaxState;
use crate::oidc::clients::Client;
use crate::oidc::error::OAuthError;
use crate::repo::{self, grants};
use edulink_domain::crypto::{ct_eq, sha256_b64};
use edulink_domain::oauth::{parse_scope, pkce_verify};
use edulink_web::AppError;
use serde_json::json;

const INVALID_CODE: OAuthError = OAuthError::InvalidGrant("the code is invalid, expired or already used");

/// The parameters of a code exchange (RFC 6749 §4.1.3, RFC 7636 §4.5).
#[derive(Debug, Clone)]
pub struct CodeExchange {
    /// `code`.
    pub code: String,
    /// `redirect_uri`, as in the authorization request.
    pub redirect_uri: String,
    /// `code_verifier`.
    pub verifier: String,
}

impl CodeExchange {
    /// Takes the three required parameters.
    pub(crate) fn from_params(p: &TokenParams) -> Result<Self, OAuthError> {
        match (&p.code, &p.redirect_uri, &p.code_verifier) {
            (Some(code), Some(redirect_uri), Some(verifier)) => {
                Ok(CodeExchange { code: code.clone(), redirect_uri: redirect_uri.clone(), verifier: verifier.clone() })
            }
            _ => Err(OAuthError::InvalidRequest("code, redirect_uri and code_verifier are required")),
        }
    }
}

/// Whether a claimed code may be redeemed by `client` with these parameters at `now`.
fn code_matches(code: &grants::ClaimedCode, client: &Client, x: &CodeExchange, now: i64) -> bool {
    code.client_id == client.client_id
        && ct_eq(code.redirect_uri.as_bytes(), x.redirect_uri.as_bytes())
        && code.expires_at > now
        && pkce_verify(&x.verifier, &code.code_challenge)
}

/// Redeems an authorization code for an access token, an ID token and (with `offline_access`) a
/// refresh token.
pub async fn exchange(st: &MaxState, client: &Client, x: &CodeExchange, ip: &str) -> Result<TokenResponse, OAuthError> {
    exchange_bound(st, client, x, None, ip).await
}

/// [`exchange`] with a DPoP proof by the key `jkt`: the tokens are bound to it, and a code bound
/// to a key (`dpop_jkt`, RFC 9449 §10) is redeemed only with a proof by that key.
pub async fn exchange_bound(
    st: &MaxState,
    client: &Client,
    x: &CodeExchange,
    jkt: Option<&str>,
    ip: &str,
) -> Result<TokenResponse, OAuthError> {
    let now = st.now();
    let code_hash = sha256_b64(&x.code);
    // Claiming the code and storing what it issues commit together: a replay racing this request
    // either finds the code unclaimed (and loses the claim) or finds the tokens to revoke.
    let mut tx = st.db.begin().await?;
    let Some(code) = grants::claim_code(&mut tx, &code_hash, now).await? else {
        tx.rollback().await?;
        if grants::code_exists(&st.db, &code_hash).await? {
            // Somebody holds a code that was already redeemed: revoke what it issued.
            revoke_compromised_family(st, &code_hash, Compromise::CodeReplay, &client.client_id, ip).await?;
        }
        return Err(INVALID_CODE);
    };
    let bound = crate::repo::dpop::binding(&mut tx, &crate::oidc::dpop::code_binding(&code_hash)).await?;
    if !code_matches(&code, client, x, now) || !crate::oidc::dpop::code_key_matches(bound.as_deref(), jkt) {
        // The code is burnt all the same: it was presented.
        tx.commit().await?;
        return Err(INVALID_CODE);
    }
    let Some(subject) = grants::grant_subject(&mut tx, &code.grant_id).await? else {
        tx.commit().await?;
        return Err(OAuthError::InvalidGrant("the grant was revoked"));
    };
    let scopes = parse_scope(&code.scope);
    let issue = Issue {
        client_id: &client.client_id,
        grant_id: Some(&code.grant_id),
        account_id: Some(&code.account_id),
        family: Some(&code_hash),
        scope: &code.scope,
        with_refresh: scopes.iter().any(|s| s == "offline_access"),
        jkt,
        refresh_jkt: crate::oidc::dpop::refresh_jkt(client, jkt),
    };
    let issued = store_tokens(st, &mut tx, &issue).await?;
    if let Some(sid) = &code.sid {
        // The client now holds an ID token of this session: its sign-out will tell the client.
        crate::repo::logout::remember_client(&mut tx, sid, &client.client_id, &code.account_id, &subject, now).await?;
    }
    tx.commit().await?;
    let id_token = id_token(st, client, &code, &subject, &scopes).await?;
    let grant = super::GrantType::AuthorizationCode.as_str();
    metrics::counter!("edulink_oauth_tokens_issued_total", "grant" => grant).increment(1);
    Ok(issued.response(st, code.scope, Some(id_token)))
}

/// The signed ID token of a redeemed code (OIDC Core §2, §3.1.3.6; profile claims §5.4).
async fn id_token(
    st: &MaxState,
    client: &Client,
    code: &grants::ClaimedCode,
    subject: &str,
    scopes: &[String],
) -> Result<String, OAuthError> {
    let now = st.now();
    let mut claims = json!({
        "iss": st.cfg.issuer,
        "sub": subject,
        "aud": client.client_id,
        "iat": now,
        "exp": now + st.cfg.id_token_ttl,
        "auth_time": code.auth_time,
    });
    if let Some(n) = &code.nonce {
        claims["nonce"] = n.clone().into();
    }
    if let Some(sid) = &code.sid {
        claims["sid"] = sid.clone().into();
    }
    if scopes.iter().any(|s| s == "profile")
        && let Some(a) = repo::account(&st.db, &code.account_id).await?
    {
        claims["given_name"] = a.first_name.clone().into();
        claims["family_name"] = a.last_name.clone().into();
        claims["name"] = format!("{} {}", a.first_name, a.last_name).into();
    }
    Ok(st.keys.sign(&client.id_token_alg, &claims, now).map_err(|e| AppError::internal(e.to_string()))?)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Fixture, VERIFIER};
    use super::*;
    use crate::repo::tokens::live_access_token;

    #[tokio::test]
    async fn a_code_with_its_pkce_verifier_gives_tokens_and_an_id_token() {
        let f = Fixture::new().await;
        let code = f.code("openid profile offline_access").await;
        let out = exchange(&f.st, &f.client, &f.exchange(&code, VERIFIER), "ip").await.unwrap();
        assert_eq!(out.token_type, "Bearer");
        assert_eq!(out.scope, "openid profile offline_access");
        assert!(out.refresh_token.is_some());
        let claims = f.st.keys.verify_own(out.id_token.as_deref().unwrap()).unwrap();
        assert_eq!(claims["aud"], f.client.client_id.as_str());
        assert_eq!(claims["nonce"], "n-1");
        assert_eq!(claims["name"], "Вера Кузнецова");
        assert!(live_access_token(&f.st.db, &sha256_b64(&out.access_token), f.st.now()).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn without_offline_access_there_is_no_refresh_token() {
        let f = Fixture::new().await;
        let code = f.code("openid").await;
        let out = exchange(&f.st, &f.client, &f.exchange(&code, VERIFIER), "ip").await.unwrap();
        assert!(out.refresh_token.is_none());
    }

    #[tokio::test]
    async fn a_wrong_verifier_burns_the_code() {
        let f = Fixture::new().await;
        let code = f.code("openid").await;
        let wrong = "x".repeat(43);
        let err = exchange(&f.st, &f.client, &f.exchange(&code, &wrong), "ip").await.unwrap_err();
        assert!(matches!(err, OAuthError::InvalidGrant(_)), "{err:?}");
        // The right verifier comes too late: the code was used.
        let again = exchange(&f.st, &f.client, &f.exchange(&code, VERIFIER), "ip").await.unwrap_err();
        assert!(matches!(again, OAuthError::InvalidGrant(_)), "{again:?}");
    }

    #[tokio::test]
    async fn a_replayed_code_revokes_what_it_issued_and_is_audited() {
        let f = Fixture::new().await;
        let code = f.code("openid offline_access").await;
        let first = exchange(&f.st, &f.client, &f.exchange(&code, VERIFIER), "ip").await.unwrap();
        let err = exchange(&f.st, &f.client, &f.exchange(&code, VERIFIER), "ip").await.unwrap_err();
        assert!(matches!(err, OAuthError::InvalidGrant(_)), "{err:?}");
        let hash = sha256_b64(&first.access_token);
        assert!(live_access_token(&f.st.db, &hash, f.st.now()).await.unwrap().is_none());
        assert_eq!(f.audited("code_replay").await, vec!["revoked=2".to_string()]);
    }

    #[tokio::test]
    async fn an_expired_code_is_refused() {
        let f = Fixture::new().await;
        let code = f.code("openid").await;
        f.clock.advance(crate::oidc::CODE_TTL);
        let err = exchange(&f.st, &f.client, &f.exchange(&code, VERIFIER), "ip").await.unwrap_err();
        assert!(matches!(err, OAuthError::InvalidGrant(_)), "{err:?}");
    }

    #[tokio::test]
    async fn another_client_or_redirect_uri_cannot_redeem_the_code() {
        let f = Fixture::new().await;
        let code = f.code("openid").await;
        let mut x = f.exchange(&code, VERIFIER);
        x.redirect_uri.push_str("/other");
        assert!(matches!(exchange(&f.st, &f.client, &x, "ip").await, Err(OAuthError::InvalidGrant(_))));
        let code = f.code("openid").await;
        let other = Client { client_id: "other".into(), ..f.client.clone() };
        let x = f.exchange(&code, VERIFIER);
        assert!(matches!(exchange(&f.st, &other, &x, "ip").await, Err(OAuthError::InvalidGrant(_))));
    }
}
