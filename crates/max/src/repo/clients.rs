//! Registered OpenID clients (`clients`).

use crate::oidc::Client;
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
        }
    }
}

/// Registers or replaces a client. Returns nothing; the secret is chosen by the caller.
pub async fn upsert_client(db: &Db, c: &Client, now: i64) -> Result<(), StoreError> {
    db.execute(sqlx::query(
        "INSERT INTO clients (client_id, name, secret_hash, redirect_uris, id_token_alg, sector, scopes, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (client_id) DO UPDATE SET name = excluded.name, secret_hash = excluded.secret_hash, \
           redirect_uris = excluded.redirect_uris, id_token_alg = excluded.id_token_alg, sector = excluded.sector, \
           scopes = excluded.scopes",
    )
    .bind(&c.client_id)
    .bind(&c.name)
    .bind(&c.secret_hash)
    .bind(serde_json::to_string(&c.redirect_uris).expect("strings serialize"))
    .bind(&c.id_token_alg)
    .bind(&c.sector)
    .bind(c.scopes.join(" "))
    .bind(now))
    .await?;
    Ok(())
}

/// Looks a client up (an over-long id is nobody).
pub async fn client(db: &Db, client_id: &str) -> Result<Option<Client>, StoreError> {
    if client_id.len() > 100 {
        return Ok(None);
    }
    let row: Option<ClientRow> = sqlx::query_as(
        "SELECT client_id, name, secret_hash, redirect_uris, id_token_alg, sector, scopes FROM clients WHERE client_id = $1",
    )
    .bind(client_id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(Client::from))
}
