//! MAX accounts (`accounts`) and the notifications shown to them (`notifications`).

use edulink_domain::crypto::new_id;
use edulink_store::{Db, StoreError, sqlx};

/// A MAX account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Account {
    /// Random id (pseudonymous).
    pub id: String,
    /// Phone, encrypted.
    pub phone_enc: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
}

/// The account with this phone hash.
pub async fn account_by_phone(
    ex: impl sqlx::Executor<'_, Database = sqlx::Any>,
    phone_hash: &str,
) -> Result<Option<Account>, StoreError> {
    Ok(sqlx::query_as("SELECT id, phone_enc, first_name, last_name FROM accounts WHERE phone_hash = $1")
        .bind(phone_hash)
        .fetch_optional(ex)
        .await?)
}

/// The account with this id.
pub async fn account(db: &Db, id: &str) -> Result<Option<Account>, StoreError> {
    Ok(sqlx::query_as("SELECT id, phone_enc, first_name, last_name FROM accounts WHERE id = $1")
        .bind(id)
        .fetch_optional(db.pool())
        .await?)
}

/// Creates an account; a concurrent registration of the same phone gives `StoreError::Conflict`.
pub async fn create_account(
    tx: &mut edulink_store::Tx,
    phone_hash: &str,
    phone_enc: &str,
    first: &str,
    last: &str,
    now: i64,
) -> Result<Account, StoreError> {
    let id = new_id();
    sqlx::query(
        "INSERT INTO accounts (id, phone_hash, phone_enc, first_name, last_name, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(phone_hash)
    .bind(phone_enc)
    .bind(first)
    .bind(last)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(Account { id, phone_enc: phone_enc.into(), first_name: first.into(), last_name: last.into() })
}

/// Adds a message to the account's MAX notifications (e.g. a link or unlink by a diary).
pub async fn notify_in(
    tx: &mut edulink_store::Tx,
    account_id: &str,
    kind: &str,
    client: &str,
    now: i64,
) -> Result<(), StoreError> {
    notification(account_id, kind, client, now).execute(&mut *tx).await?;
    Ok(())
}

fn notification<'q>(
    account_id: &'q str,
    kind: &'q str,
    client: &'q str,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query("INSERT INTO notifications (id, account_id, kind, client, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(new_id())
        .bind(account_id)
        .bind(kind)
        .bind(client)
        .bind(now)
}

/// Adds a notification for the account (on its own).
pub async fn notify(db: &Db, account_id: &str, kind: &str, client: &str, now: i64) -> Result<(), StoreError> {
    db.execute(notification(account_id, kind, client, now)).await?;
    Ok(())
}

/// A notification shown in MAX.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Notification {
    /// `link` or `unlink`.
    pub kind: String,
    /// The client's display name.
    pub client: String,
    /// When.
    pub created_at: i64,
}

/// The newest notifications of an account.
pub async fn notifications(db: &Db, account_id: &str) -> Result<Vec<Notification>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT kind, client, created_at FROM notifications WHERE account_id = $1 ORDER BY created_at DESC LIMIT 10",
    )
    .bind(account_id)
    .fetch_all(db.pool())
    .await?)
}
