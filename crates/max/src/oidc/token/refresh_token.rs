//! The refresh token grant (RFC 6749 §6). Refresh tokens rotate: each use marks the token rotated and
//! issues a new pair in the same family, and a rotated token presented again revokes the whole
//! family (RFC 9700 §4.14.2, RFC 6749 §10.4). The token must belong to the calling client — checked
//! before anything is marked: another client's attempt (even a public client's, which has no secret)
//! changes nothing for the owner (RFC 9700 §4.14, RFC 6749 §6) — and its grant must still exist; the
//! scope stays the grant's (a narrower `scope` is not supported).

use super::{Compromise, GrantType, Issue, TokenResponse, issue_tokens, revoke_compromised_family};
use crate::MaxState;
use crate::oidc::clients::Client;
use crate::oidc::error::OAuthError;
use crate::repo::{grants, tokens};
use edulink_domain::crypto::sha256_b64;

const INVALID_REFRESH: OAuthError = OAuthError::InvalidGrant("the refresh token is invalid");

/// Rotates `token`: a new access token and refresh token for the same grant and family.
pub async fn refresh(st: &MaxState, client: &Client, token: &str, ip: &str) -> Result<TokenResponse, OAuthError> {
    refresh_bound(st, client, token, None, ip).await
}

/// [`refresh`] with a DPoP proof by the key `jkt` (checked against the token's binding before, by
/// [`crate::oidc::dpop::check_refresh`]): the new tokens are bound to it.
pub async fn refresh_bound(
    st: &MaxState,
    client: &Client,
    token: &str,
    jkt: Option<&str>,
    ip: &str,
) -> Result<TokenResponse, OAuthError> {
    let now = st.now();
    let hash = sha256_b64(token);
    // Bound to the authenticated client in the statement that rotates it.
    let rotated = tokens::rotate_refresh(&st.db, &hash, &client.client_id, now).await?;
    let Some(tokens::TokenRow { grant_id: Some(grant_id), account_id, scope, family, .. }) = rotated else {
        if let Some(family) = tokens::rotated_refresh_family(&st.db, &hash, &client.client_id).await? {
            // A rotated refresh token came back: it was stolen or replayed. Kill its whole family.
            revoke_compromised_family(st, &family, Compromise::RefreshReuse, &client.client_id, ip).await?;
        }
        return Err(INVALID_REFRESH);
    };
    if grants::grant_subject(st.db.pool(), &grant_id).await?.is_none() {
        return Err(OAuthError::InvalidGrant("the grant was revoked"));
    }
    let issue = Issue {
        client_id: &client.client_id,
        grant_id: Some(&grant_id),
        account_id: account_id.as_deref(),
        family: family.as_deref(),
        scope: &scope,
        with_refresh: true,
        jkt,
        refresh_jkt: crate::oidc::dpop::refresh_jkt(client, jkt),
    };
    let issued = issue_tokens(st, &issue, GrantType::RefreshToken).await?;
    Ok(issued.response(st, scope, None))
}

#[cfg(test)]
mod tests {
    use super::super::authorization_code::exchange;
    use super::super::testing::{Fixture, VERIFIER};
    use super::*;
    use crate::repo::tokens::live_access_token;

    async fn first_pair(f: &Fixture) -> TokenResponse {
        let code = f.code("openid offline_access").await;
        exchange(&f.st, &f.client, &f.exchange(&code, VERIFIER), "ip").await.unwrap()
    }

    #[tokio::test]
    async fn a_refresh_token_rotates_into_a_new_pair() {
        let f = Fixture::new().await;
        let first = first_pair(&f).await;
        let second = refresh(&f.st, &f.client, first.refresh_token.as_deref().unwrap(), "ip").await.unwrap();
        assert_eq!(second.scope, first.scope);
        assert!(second.id_token.is_none());
        let new_refresh = second.refresh_token.clone().unwrap();
        assert_ne!(Some(&new_refresh), first.refresh_token.as_ref());
        // The new refresh token works in turn.
        let third = refresh(&f.st, &f.client, &new_refresh, "ip").await.unwrap();
        assert!(live_access_token(&f.st.db, &sha256_b64(&third.access_token), f.st.now()).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_reused_refresh_token_revokes_its_family() {
        let f = Fixture::new().await;
        let first = first_pair(&f).await;
        let old = first.refresh_token.clone().unwrap();
        let second = refresh(&f.st, &f.client, &old, "ip").await.unwrap();
        let err = refresh(&f.st, &f.client, &old, "ip").await.unwrap_err();
        assert!(matches!(err, OAuthError::InvalidGrant(_)), "{err:?}");
        // The pair issued by the rotation dies with the family.
        let hash = sha256_b64(&second.access_token);
        assert!(live_access_token(&f.st.db, &hash, f.st.now()).await.unwrap().is_none());
        let later = refresh(&f.st, &f.client, second.refresh_token.as_deref().unwrap(), "ip").await;
        assert!(matches!(later, Err(OAuthError::InvalidGrant(_))));
        assert_eq!(f.audited("refresh_reuse").await.len(), 1);
    }

    /// RFC 9700 §4.14: another client's attempt (a public one here, no secret) is refused and leaves
    /// the token as it was: the owner's next refresh is no reuse, its access token lives on.
    #[tokio::test]
    async fn another_client_cannot_use_the_refresh_token_nor_spoil_it() {
        let f = Fixture::new().await;
        let first = first_pair(&f).await;
        let other = Client { client_id: "other".into(), secret_hash: None, ..f.client.clone() };
        let token = first.refresh_token.as_deref().unwrap();
        let err = refresh(&f.st, &other, token, "ip").await.unwrap_err();
        assert!(matches!(err, OAuthError::InvalidGrant(_)), "{err:?}");
        assert!(live_access_token(&f.st.db, &sha256_b64(&first.access_token), f.st.now()).await.unwrap().is_some());
        refresh(&f.st, &f.client, token, "ip").await.expect("the owner's refresh still works");
        assert!(f.audited("refresh_reuse").await.is_empty());
    }

    #[tokio::test]
    async fn an_unknown_refresh_token_is_refused_without_revoking_anything() {
        let f = Fixture::new().await;
        let err = refresh(&f.st, &f.client, "nope", "ip").await.unwrap_err();
        assert!(matches!(err, OAuthError::InvalidGrant(_)), "{err:?}");
        assert!(f.audited("refresh_reuse").await.is_empty());
    }
}
