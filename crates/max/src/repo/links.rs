//! Link marks (`link_marks`): per pairwise subject of a sector, the newest link generation the
//! diary told MAX of and whether it was removed (rules in `edulink_domain::links`), and the listing
//! of a sector's grants that the diary's reconciliation compares with its links.

use edulink_domain::links::{LinkEntry, Mark};
use edulink_store::{Db, StoreError, Tx, sqlx};

#[derive(sqlx::FromRow)]
struct MarkRow {
    generation: i64,
    removed: i64,
    consents: i64,
    linked_consents: Option<i64>,
}

impl From<MarkRow> for Mark {
    fn from(r: MarkRow) -> Self {
        Mark {
            generation: r.generation,
            removed: r.removed != 0,
            consents: r.consents,
            linked_consents: r.linked_consents,
        }
    }
}

/// The mark of `subject` in `sector`, locked for the rest of `tx` (created empty when there was
/// none): every change to a subject's link at MAX starts here, so a provision and a detach of one
/// subject never interleave.
pub async fn lock_mark(tx: &mut Tx, sector: &str, subject: &str, now: i64) -> Result<Mark, StoreError> {
    let row: MarkRow = sqlx::query_as(
        "INSERT INTO link_marks (sector, subject, generation, removed, consents, updated_at) \
         VALUES ($1, $2, -1, 1, 0, $3) \
         ON CONFLICT (sector, subject) DO UPDATE SET generation = link_marks.generation \
         RETURNING generation, removed, consents, linked_consents",
    )
    .bind(sector)
    .bind(subject)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    Ok(row.into())
}

/// What a message made of a subject's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Now {
    /// Link `generation` is provisioned (live).
    Provisioned,
    /// Link `generation` was removed.
    Removed,
}

/// Records what link `generation` is now, under the mark locked by [`lock_mark`]. A provisioned link
/// also records the consents it was provisioned after.
pub async fn set_mark(
    tx: &mut Tx,
    sector: &str,
    subject: &str,
    generation: i64,
    state: Now,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE link_marks SET generation = $3, removed = $4, \
           linked_consents = CASE WHEN $4 = 0 THEN consents ELSE linked_consents END, updated_at = $5 \
         WHERE sector = $1 AND subject = $2",
    )
    .bind(sector)
    .bind(subject)
    .bind(generation)
    .bind(i64::from(state == Now::Removed))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Counts a link consent (an authorization asking `offline_access`) of `subject` in the sector of
/// `client_id`, inside the transaction that issues its code.
pub async fn count_consent(tx: &mut Tx, client_id: &str, subject: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO link_marks (sector, subject, generation, removed, consents, updated_at) \
         SELECT sector, $2, -1, 1, 1, $3 FROM clients WHERE client_id = $1 \
         ON CONFLICT (sector, subject) DO UPDATE SET consents = link_marks.consents + 1",
    )
    .bind(client_id)
    .bind(subject)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A grant of a subject: its id and account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubjectGrant {
    /// The grant.
    pub id: String,
    /// Its account.
    pub account_id: String,
}

/// Grants (id, account) behind pairwise subject `$1` in sector `$2` (indexed by subject).
pub(crate) const GRANTS_OF_SUBJECT_IN_SECTOR: &str = "SELECT g.id, g.account_id FROM grants g \
     JOIN clients c ON c.client_id = g.client_id WHERE g.subject = $1 AND c.sector = $2 ORDER BY g.id";

/// The grants behind `subject` in `sector`, read in `tx` (after [`lock_mark`]).
pub async fn grants_of_subject(tx: &mut Tx, sector: &str, subject: &str) -> Result<Vec<SubjectGrant>, StoreError> {
    Ok(sqlx::query_as(GRANTS_OF_SUBJECT_IN_SECTOR).bind(subject).bind(sector).fetch_all(&mut *tx).await?)
}

/// Revokes every live token of `grant_id` and deletes the grant, in `tx`; returns the tokens revoked.
pub async fn end_grant(tx: &mut Tx, grant_id: &str, now: i64) -> Result<u64, StoreError> {
    let revoked = sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE grant_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(grant_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM grants WHERE id = $1").bind(grant_id).execute(&mut *tx).await?;
    Ok(revoked)
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    subject: String,
    generation: Option<i64>,
    removed: Option<i64>,
    confirmed: i64,
    consented_at: i64,
}

/// One page of the grants of `sector` by subject after `after` (only subject `only`, when given):
/// for the diary's reconciliation.
pub async fn page(
    db: &Db,
    sector: &str,
    after: &str,
    only: Option<&str>,
    limit: i64,
) -> Result<Vec<LinkEntry>, StoreError> {
    let rows: Vec<EntryRow> = sqlx::query_as(
        "SELECT g.subject, MAX(m.generation) AS generation, MAX(m.removed) AS removed, \
           MAX(CASE WHEN p.confirmed_by IN (SELECT client_id FROM clients WHERE sector = $1) THEN 1 ELSE 0 END) \
             AS confirmed, MAX(g.consented_at) AS consented_at \
         FROM grants g JOIN clients c ON c.client_id = g.client_id AND c.sector = $1 \
         LEFT JOIN link_marks m ON m.sector = $1 AND m.subject = g.subject \
         LEFT JOIN sferum_profiles p ON p.account_id = g.account_id \
         WHERE g.subject > $2 AND ($4 IS NULL OR g.subject = $4) GROUP BY g.subject ORDER BY g.subject LIMIT $3",
    )
    .bind(sector)
    .bind(after)
    .bind(limit)
    .bind(only)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| LinkEntry {
            generation: r.generation.filter(|_| r.removed == Some(0)),
            sub: r.subject,
            confirmed: r.confirmed != 0,
            consented_at: r.consented_at,
        })
        .collect())
}

/// A grant no live link claims, consented before a cutoff.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Unfinished {
    /// The grant.
    pub id: String,
    /// Its account.
    pub account_id: String,
    /// Its client.
    pub client_id: String,
    /// Its subject.
    pub subject: String,
    /// Its client's sector.
    pub sector: String,
}

/// Up to `limit` grants asking `offline_access` (link grants) in a sector with a provisioning client,
/// consented before `before`, that no live link claims: unfinished link callbacks.
pub async fn unfinished(db: &Db, before: i64, limit: i64) -> Result<Vec<Unfinished>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT g.id, g.account_id, g.client_id, g.subject, c.sector FROM grants g \
         JOIN clients c ON c.client_id = g.client_id \
         WHERE g.consented_at < $1 AND g.scope LIKE '%offline_access%' \
           AND EXISTS (SELECT 1 FROM clients p WHERE p.sector = c.sector AND p.scopes LIKE '%sferum.provision%') \
           AND NOT EXISTS (SELECT 1 FROM link_marks m WHERE m.sector = c.sector AND m.subject = g.subject \
                           AND m.removed = 0) \
         ORDER BY g.consented_at LIMIT $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(db.pool())
    .await?)
}
