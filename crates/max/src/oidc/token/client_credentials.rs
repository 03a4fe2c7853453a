//! The client credentials grant (RFC 6749 §4.4): confidential clients only (§2.1, §4.4.2), for the
//! `sferum.provision` scope only (the diary's provisioning calls). No refresh token (§4.4.3).

use super::{GrantType, Issue, TokenResponse, issue_tokens};
use crate::MaxState;
use crate::oidc::clients::Client;
use crate::oidc::error::OAuthError;
use edulink_domain::oauth::parse_scope;

/// The one scope a client may get for itself.
const PROVISION: &str = "sferum.provision";

/// The scope granted for `requested` (default `sferum.provision`), if the client may have it.
pub fn granted_scope(client: &Client, requested: Option<&str>) -> Result<String, OAuthError> {
    if !client.is_confidential() {
        return Err(OAuthError::UnauthorizedClient("public clients cannot use client_credentials"));
    }
    let requested = parse_scope(requested.unwrap_or(PROVISION));
    if requested.is_empty() || requested.iter().any(|s| s != PROVISION || !client.scopes.contains(s)) {
        return Err(OAuthError::InvalidScope("only sferum.provision, if allowed for the client"));
    }
    Ok(requested.join(" "))
}

/// Issues an access token to the client itself.
pub async fn issue(st: &MaxState, client: &Client, requested: Option<&str>) -> Result<TokenResponse, OAuthError> {
    issue_bound(st, client, requested, None).await
}

/// [`issue`], the token bound to the DPoP key `jkt` if the client sent a proof (RFC 9449 §5).
pub async fn issue_bound(
    st: &MaxState,
    client: &Client,
    requested: Option<&str>,
    jkt: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    let scope = granted_scope(client, requested)?;
    let issue = Issue {
        client_id: &client.client_id,
        grant_id: None,
        account_id: None,
        family: None,
        scope: &scope,
        with_refresh: false,
        jkt,
        refresh_jkt: None,
    };
    let issued = issue_tokens(st, &issue, GrantType::ClientCredentials).await?;
    Ok(issued.response(st, scope, None))
}

#[cfg(test)]
mod tests {
    use super::super::testing::Fixture;
    use super::*;
    use crate::repo::tokens::live_access_token;
    use edulink_domain::crypto::sha256_b64;

    #[tokio::test]
    async fn a_confidential_client_gets_a_provisioning_token() {
        let f = Fixture::new().await;
        let out = issue(&f.st, &f.client, None).await.unwrap();
        assert_eq!(out.scope, "sferum.provision");
        assert!(out.refresh_token.is_none() && out.id_token.is_none());
        let t = live_access_token(&f.st.db, &sha256_b64(&out.access_token), f.st.now()).await.unwrap().unwrap();
        assert_eq!((t.client_id.as_str(), t.grant_id, t.account_id), (f.client.client_id.as_str(), None, None));
    }

    #[test]
    fn only_sferum_provision_and_only_if_registered() {
        let f = Fixture::client();
        assert_eq!(granted_scope(&f, Some("sferum.provision")).unwrap(), "sferum.provision");
        for bad in ["openid", "sferum.provision openid", "", " "] {
            assert!(matches!(granted_scope(&f, Some(bad)), Err(OAuthError::InvalidScope(_))), "{bad:?}");
        }
        let unregistered = Client { scopes: vec!["openid".into()], ..f.clone() };
        assert!(matches!(granted_scope(&unregistered, None), Err(OAuthError::InvalidScope(_))));
    }

    #[test]
    fn public_clients_are_refused_before_their_scope_is_read() {
        let public = Client { secret_hash: None, ..Fixture::client() };
        assert!(matches!(granted_scope(&public, Some("openid")), Err(OAuthError::UnauthorizedClient(_))));
        assert!(matches!(granted_scope(&public, None), Err(OAuthError::UnauthorizedClient(_))));
    }
}
