//! The stored authorization request and the redirects back to the client (RFC 6749 §4.1.2, §4.1.2.1,
//! with `iss`, RFC 9207 §2): shared by the authorization endpoint, which validates and stores a
//! request, and the consent step, which answers it once the person has signed in and agreed.

use crate::MaxState;
use crate::repo::grants;
use axum::response::{IntoResponse, Response};
use edulink_store::StoreError;
use edulink_web::{AppError, see_other};

/// A stored authorization request, waiting for the person to sign in and confirm.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    /// Id.
    pub id: String,
    /// The client.
    pub client_id: String,
    /// The validated redirect URI.
    pub(crate) redirect_uri: String,
    /// Granted scopes.
    pub scope: String,
    /// The client's state, echoed back.
    pub(crate) state: Option<String>,
    /// The client's nonce, put in the ID token.
    pub(crate) nonce: Option<String>,
    /// PKCE S256 challenge.
    pub(crate) code_challenge: String,
    /// The account the client expects (from `id_token_hint`).
    pub hint_account_id: Option<String>,
    /// `prompt=consent`: ask even when a grant exists.
    pub(crate) consent: bool,
    /// `max_age` (OIDC Core §3.1.2.1): the longest time since the person authenticated, seconds.
    pub max_age: Option<i64>,
    /// Kept in `auth_requests` (the sign-in pages in between); a request answered at once never is.
    pub(crate) stored: bool,
    /// The DPoP key the code will be bound to (RFC 9449 §10; kept in `dpop_bindings`).
    pub(crate) dpop_jkt: Option<String>,
}

impl From<grants::AuthRequestRow> for AuthRequest {
    fn from(r: grants::AuthRequestRow) -> Self {
        AuthRequest {
            id: r.id,
            client_id: r.client_id,
            redirect_uri: r.redirect_uri,
            scope: r.scope,
            state: r.state,
            nonce: r.nonce,
            code_challenge: r.code_challenge,
            hint_account_id: r.hint_account_id,
            consent: r.prompt_none != 0,
            max_age: r.max_age,
            stored: true,
            dpop_jkt: None,
        }
    }
}

impl AuthRequest {
    /// Whether an authentication at `auth_time` is too old for this request at `now` (`max_age`).
    pub fn auth_too_old(&self, auth_time: i64, now: i64) -> bool {
        self.max_age.is_some_and(|m| now - auth_time > m)
    }

    /// The requested scopes.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|s| !s.is_empty())
    }
}

/// Authorization requests expire after this long.
const REQUEST_TTL: i64 = 600;
/// Authorization codes live this long (docs/architecture.md, «Rules»).
pub const CODE_TTL: i64 = 60;

pub(crate) fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let mut url = match url::Url::parse(redirect_uri) {
        Ok(u) => u,
        Err(_) => return AppError::bad_request("error-oauth-redirect").into_response(),
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    see_other(url.as_str())
}

pub(crate) fn error_redirect(
    st: &MaxState,
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> Response {
    let mut p = vec![("error", error), ("error_description", description)];
    if let Some(s) = state {
        p.push(("state", s));
    }
    p.push(("iss", &st.cfg.issuer));
    redirect_with(redirect_uri, &p)
}

/// Stores a validated request until the person confirms it.
pub async fn store_request(tx: &mut edulink_store::Tx, r: &AuthRequest, now: i64) -> Result<(), StoreError> {
    grants::insert_request(tx, r, now, now + REQUEST_TTL).await?;
    if let Some(jkt) = &r.dpop_jkt {
        crate::repo::dpop::bind(tx, &super::dpop::request_binding(&r.id), jkt, now + REQUEST_TTL).await?;
    }
    Ok(())
}

/// Loads a live stored request.
pub async fn load_request(db: &edulink_store::Db, id: &str, now: i64) -> Result<Option<AuthRequest>, StoreError> {
    let Some(mut r) = grants::live_request(db, id, now).await?.map(AuthRequest::from) else { return Ok(None) };
    r.dpop_jkt = crate::repo::dpop::binding(db.pool(), &super::dpop::request_binding(id)).await?;
    Ok(Some(r))
}
