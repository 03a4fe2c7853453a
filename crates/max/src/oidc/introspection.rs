//! Token introspection (RFC 7662) for resource servers.
//!
//! Policy (RFC 7662 §2.1 leaves the authorization of callers to the server; §4 asks that
//! introspection not be a token-scanning oracle):
//! * Only confidential clients may call it, authenticated as at the token endpoint (§2.1); a
//!   public client gets `invalid_client`. It takes `token` (and ignores `token_type_hint`).
//! * A caller learns about a token only when it was issued to a client of the caller's own sector
//!   (the same party: the diary's web client and its apps), and a refresh token only when it was
//!   issued to the caller itself (refresh tokens are no business of resource servers). Anything
//!   else — another party's token, unknown, expired, revoked, rotated — is `{"active": false}`,
//!   with no difference a caller could probe (§2.2).
//! * An active token: `active`, `scope`, `client_id`, `token_type` (`Bearer` or `DPoP`; absent for
//!   a refresh token), `exp`, `iat`, `iss`, `sub` (the pairwise subject of its grant, the one the
//!   caller's sector knows; absent for client credentials) and, for a DPoP-bound token,
//!   `cnf.jkt` (RFC 9449 §6.2) so the resource server can check the proof's key.

use super::clients::{ClientRequest, cached_client};
use super::error::{OAuthError, no_store_json};
use crate::MaxState;
use crate::repo::{dpop as store, grants};
use axum::extract::State;
use axum::response::Response;
use edulink_domain::crypto::sha256_b64;
use serde_json::{Value, json};

/// What the caller may learn about `token`, or `None` (inactive to it).
async fn describe(st: &MaxState, caller: &super::Client, token: &str) -> Result<Option<Value>, OAuthError> {
    let Some(t) = store::live_token(&st.db, &sha256_b64(token), st.now()).await? else { return Ok(None) };
    let refresh = t.kind == "refresh";
    if refresh && t.client_id != caller.client_id {
        return Ok(None);
    }
    if t.client_id != caller.client_id {
        let Some(owner) = cached_client(st, &t.client_id).await? else { return Ok(None) };
        if owner.sector != caller.sector {
            return Ok(None);
        }
    }
    let mut body = json!({
        "active": true,
        "scope": t.scope,
        "client_id": t.client_id,
        "exp": t.expires_at,
        "iat": t.created_at,
        "iss": st.cfg.issuer,
    });
    if !refresh {
        body["token_type"] = if t.jkt.is_some() { "DPoP" } else { "Bearer" }.into();
    }
    if let Some(grant_id) = &t.grant_id {
        match grants::grant_subject(st.db.pool(), grant_id).await? {
            Some(sub) => body["sub"] = sub.into(),
            None => return Ok(None), // The grant was revoked: so are its tokens.
        }
    }
    if let Some(jkt) = t.jkt {
        body["cnf"] = json!({ "jkt": jkt });
    }
    Ok(Some(body))
}

/// `POST /oauth/introspect` (RFC 7662 §2).
pub async fn introspect(
    State(st): State<MaxState>,
    ClientRequest { client, params: p }: ClientRequest,
) -> Result<Response, OAuthError> {
    if !client.is_confidential() {
        return Err(OAuthError::InvalidClient("introspection is for confidential clients"));
    }
    let token = p.token.as_deref().ok_or(OAuthError::InvalidRequest("token is required"))?;
    let body = describe(&st, &client, token).await?.unwrap_or_else(|| json!({ "active": false }));
    Ok(no_store_json(body))
}
