//! MAX's audit trail: what happened, when, from which IP and client, about which pseudonymous
//! account id and pairwise subject. Never a phone number, a code or a token. Written through the one
//! writer both parties share (`edulink_web::audit`).

pub use edulink_web::audit::{Event, Record};

/// MAX's audit table.
pub const TRAIL: edulink_web::audit::Trail = edulink_web::audit::Trail::MAX;

use edulink_store::{Db, StoreError, sqlx};

/// One of MAX's records of a journey, as `edulink admin trace` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JourneyRow {
    /// When, Unix seconds.
    pub at: i64,
    /// Event name.
    pub event: String,
    /// The OIDC client, if any.
    pub client_id: Option<String>,
    /// The short detail (a limit's name, a token kind).
    pub detail: Option<String>,
}

/// MAX's records since `since` about the pairwise `subject` (the diary's link) or about the MAX
/// account that subject belongs to (found through the grant, or through an earlier record that
/// named both), oldest first. The diary knows only the subject: this is the join.
pub async fn journey(db: &Db, subject: &str, since: i64) -> Result<Vec<JourneyRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT at, event, client_id, detail FROM audit WHERE at >= $2 AND (subject = $1 OR account IN \
         (SELECT account_id FROM grants WHERE subject = $1 \
          UNION SELECT account FROM audit WHERE subject = $1 AND account IS NOT NULL)) \
         ORDER BY at, id",
    )
    .bind(subject)
    .bind(since)
    .fetch_all(db.pool())
    .await?)
}
