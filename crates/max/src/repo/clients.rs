//! Registered OpenID clients (`clients`).

use crate::oidc::{Client, ClientPolicy, PreviousSecret};
use edulink_domain::oauth::parse_scope;
use edulink_store::{Db, StoreError, sqlx};

/// A `clients` row: redirect URIs as a JSON array, scopes space-separated.
#[derive(Debug, sqlx::FromRow)]
struct ClientRow {
    client_id: String,
    name: String,
    secret_hash: Option<String>,
    redirect_uris: String,
    id_token_alg: String,
    sector: String,
    scopes: String,
    previous_secret_hash: Option<String>,
    previous_secret_expires_at: Option<i64>,
    dpop_bound_access_tokens: i64,
    require_pushed_authorization_requests: i64,
}

impl ClientRow {
    /// The registration and its previous secret, if one was kept.
    fn split(self) -> (Client, Option<PreviousSecret>) {
        let previous = match (&self.previous_secret_hash, self.previous_secret_expires_at) {
            (Some(hash), Some(expires_at)) => Some(PreviousSecret { hash: hash.clone(), expires_at }),
            _ => None,
        };
        (Client::from(self), previous)
    }
}

impl From<ClientRow> for Client {
    fn from(r: ClientRow) -> Self {
        Client {
            client_id: r.client_id,
            name: r.name,
            secret_hash: r.secret_hash,
            redirect_uris: serde_json::from_str(&r.redirect_uris).unwrap_or_default(),
            id_token_alg: r.id_token_alg,
            sector: r.sector,
            scopes: parse_scope(&r.scopes),
            policy: ClientPolicy {
                dpop_bound_access_tokens: r.dpop_bound_access_tokens != 0,
                require_pushed_authorization_requests: r.require_pushed_authorization_requests != 0,
            },
        }
    }
}

/// Registers or replaces a client. Returns nothing; the secret is chosen by the caller. A previous
/// secret kept by [`rotate_secret`] is left as it is.
pub async fn upsert_client(db: &Db, c: &Client, now: i64) -> Result<(), StoreError> {
    db.execute(sqlx::query(
        "INSERT INTO clients (client_id, name, secret_hash, redirect_uris, id_token_alg, sector, scopes, created_at, \
           dpop_bound_access_tokens, require_pushed_authorization_requests) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (client_id) DO UPDATE SET name = excluded.name, secret_hash = excluded.secret_hash, \
           redirect_uris = excluded.redirect_uris, id_token_alg = excluded.id_token_alg, sector = excluded.sector, \
           scopes = excluded.scopes, dpop_bound_access_tokens = excluded.dpop_bound_access_tokens, \
           require_pushed_authorization_requests = excluded.require_pushed_authorization_requests",
    )
    .bind(&c.client_id)
    .bind(&c.name)
    .bind(&c.secret_hash)
    .bind(serde_json::to_string(&c.redirect_uris).expect("strings serialize"))
    .bind(&c.id_token_alg)
    .bind(&c.sector)
    .bind(c.scopes.join(" "))
    .bind(now)
    .bind(i64::from(c.policy.dpop_bound_access_tokens))
    .bind(i64::from(c.policy.require_pushed_authorization_requests)))
    .await?;
    Ok(())
}

/// Looks a client up (an over-long id is nobody).
pub async fn client(db: &Db, client_id: &str) -> Result<Option<Client>, StoreError> {
    Ok(registration(db, client_id).await?.map(|(c, _)| c))
}

/// Looks a client up with its previous secret (an over-long id is nobody).
pub async fn registration(db: &Db, client_id: &str) -> Result<Option<(Client, Option<PreviousSecret>)>, StoreError> {
    if client_id.len() > 100 {
        return Ok(None);
    }
    let row: Option<ClientRow> = sqlx::query_as(
        "SELECT client_id, name, secret_hash, redirect_uris, id_token_alg, sector, scopes, previous_secret_hash, \
         previous_secret_expires_at, dpop_bound_access_tokens, require_pushed_authorization_requests FROM clients WHERE client_id = $1",
    )
    .bind(client_id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(ClientRow::split))
}

/// Replaces a confidential client's secret hash, keeping the current one as the previous secret
/// until `previous_expires_at`. Returns false when there is no such confidential client.
pub async fn rotate_secret(
    db: &Db,
    client_id: &str,
    new_hash: &str,
    previous_expires_at: i64,
) -> Result<bool, StoreError> {
    let done = db
        .execute(
            sqlx::query(
                "UPDATE clients SET previous_secret_hash = secret_hash, previous_secret_expires_at = $1, \
                 secret_hash = $2 WHERE client_id = $3 AND secret_hash IS NOT NULL",
            )
            .bind(previous_expires_at)
            .bind(new_hash)
            .bind(client_id),
        )
        .await?;
    Ok(done.rows_affected() == 1)
}
