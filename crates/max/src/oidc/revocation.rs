//! Token revocation (RFC 7009): the client authenticates as at the token endpoint (§2.1), and the
//! answer is 200 whether or not the token was known (§2.2). Revoking a refresh token revokes every
//! token of its family (§2.1: "SHOULD also invalidate all access tokens based on the same
//! authorization grant"). `token_type_hint` is parsed but may be ignored (§2.1): the token is found
//! by its hash whatever its kind.

use super::clients::ClientRequest;
use super::error::OAuthError;
use crate::audit::{Event, Record};
use crate::repo::tokens::{self, TokenKind, TokensOf};
use crate::{MaxState, audit};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use edulink_domain::crypto::sha256_b64;
use edulink_store::{Db, StoreError};
use edulink_web::ClientIp;

/// `token_type_hint` (RFC 7009 §2.1; the registry of §4.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenTypeHint {
    /// `access_token`.
    AccessToken,
    /// `refresh_token`.
    RefreshToken,
    /// A value we do not know: the hint is ignored, as §2.1 allows, rather than refused.
    Unknown,
}

impl TokenTypeHint {
    /// Parses the parameter.
    pub fn parse(s: &str) -> Self {
        match s {
            "access_token" => TokenTypeHint::AccessToken,
            "refresh_token" => TokenTypeHint::RefreshToken,
            _ => TokenTypeHint::Unknown,
        }
    }
}

/// Revokes `token` of `client_id` (and, for a refresh token, its family). Returns the kind of the
/// token revoked, if it was a live token of this client. The `hint` does not narrow the search.
pub async fn revoke_token(
    db: &Db,
    client_id: &str,
    token: &str,
    _hint: Option<TokenTypeHint>,
    now: i64,
) -> Result<Option<TokenKind>, StoreError> {
    let Some(revoked) = tokens::revoke_token(db, &sha256_b64(token), client_id, now).await? else {
        return Ok(None);
    };
    // A refresh token takes with it every token of its family (issued from the same code and its
    // rotations) — not other families of the same grant, which may belong to another link.
    if let (TokenKind::Refresh, Some(family)) = (revoked.kind, &revoked.family) {
        tokens::revoke_tokens(db, TokensOf::Family(family), now).await?;
    }
    Ok(Some(revoked.kind))
}

/// Revokes every token issued under a grant (unlink, refresh-token reuse, RFC 7009 on a refresh token).
pub async fn revoke_grant_tokens(db: &Db, grant_id: &str, now: i64) -> Result<u64, StoreError> {
    tokens::revoke_tokens(db, TokensOf::Grant(grant_id), now).await
}

/// `POST /oauth/revoke`.
pub async fn revoke(
    State(st): State<MaxState>,
    ClientIp(ip): ClientIp,
    ClientRequest { client, params: p }: ClientRequest,
) -> Result<Response, OAuthError> {
    let token = p.token.as_deref().ok_or(OAuthError::InvalidRequest("token is required"))?;
    let hint = p.token_type_hint.as_deref().map(TokenTypeHint::parse);
    let now = st.now();
    if let Some(kind) = revoke_token(&st.db, &client.client_id, token, hint, now).await? {
        let ip = ip.to_string();
        audit::TRAIL
            .record(
                &st.db,
                now,
                &Record::new(Event::TokenRevoked).client(&client.client_id).ip(&ip).detail(kind.as_str()),
            )
            .await;
    }
    Ok((StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::token::authorization_code::exchange;
    use crate::oidc::token::testing::{Fixture, VERIFIER};
    use crate::repo::tokens::live_access_token;

    #[test]
    fn hints_are_parsed_and_unknown_ones_kept_as_unknown() {
        assert_eq!(TokenTypeHint::parse("access_token"), TokenTypeHint::AccessToken);
        assert_eq!(TokenTypeHint::parse("refresh_token"), TokenTypeHint::RefreshToken);
        assert_eq!(TokenTypeHint::parse("id_token"), TokenTypeHint::Unknown);
    }

    #[tokio::test]
    async fn revoking_a_refresh_token_revokes_its_family_whatever_the_hint() {
        let f = Fixture::new().await;
        let code = f.code("openid offline_access").await;
        let t = exchange(&f.st, &f.client, &f.exchange(&code, VERIFIER), "ip").await.unwrap();
        let refresh = t.refresh_token.unwrap();
        let hint = Some(TokenTypeHint::AccessToken);
        let kind = revoke_token(&f.st.db, "diary", &refresh, hint, f.st.now()).await.unwrap();
        assert_eq!(kind, Some(TokenKind::Refresh));
        assert!(live_access_token(&f.st.db, &sha256_b64(&t.access_token), f.st.now()).await.unwrap().is_none());
        // Known no more, or another client's: nothing to say.
        assert_eq!(revoke_token(&f.st.db, "diary", &refresh, None, f.st.now()).await.unwrap(), None);
        assert_eq!(revoke_token(&f.st.db, "other", "x", None, f.st.now()).await.unwrap(), None);
    }
}
