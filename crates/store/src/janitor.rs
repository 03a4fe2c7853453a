//! The janitor's mechanism, shared by both parties (docs/retention.md): a lease row that lets one
//! instance of a fleet run at a time, and deletion in bounded batches so that no statement holds
//! the write lock for long (on SQLite every other writer of the process waits behind it).
//!
//! Each party lists its own tables and conditions (`edulink_diary::janitor`,
//! `edulink_max::janitor`); this module never names a table of its own.

use crate::{Db, StoreError};
use std::time::Duration;

/// One kind of row the janitor deletes: the rows of `table` matching `condition`.
#[derive(Debug, Clone)]
pub struct Purge {
    /// The table.
    pub table: &'static str,
    /// Its primary key's columns, comma-separated (`"id"`, `"bucket, window_start"`).
    pub key: &'static str,
    /// A SQL condition on the table's columns, with `$1`, `$2`, … bound to `binds` in order.
    pub condition: &'static str,
    /// The values of the condition's parameters (cut-off times, Unix seconds).
    pub binds: Vec<i64>,
}

/// How the janitor deletes.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Rows per statement (each statement commits on its own).
    pub rows: i64,
    /// The pause between two statements, so that other writers run between them.
    pub pause: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Batching { rows: DEFAULT_BATCH_ROWS, pause: Duration::from_millis(10) }
    }
}

/// The default rows per statement.
pub const DEFAULT_BATCH_ROWS: i64 = 500;

impl Purge {
    fn where_clause(&self) -> String {
        format!("FROM {} WHERE {}", self.table, self.condition)
    }

    /// How many rows it would delete now.
    pub async fn count(&self, db: &Db) -> Result<i64, StoreError> {
        let sql = format!("SELECT COUNT(*) {}", self.where_clause());
        // Only `&'static` text of the party's own rules and a number: nothing a request supplies.
        let mut q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
        for b in &self.binds {
            q = q.bind(*b);
        }
        Ok(q.fetch_one(db.pool()).await?)
    }

    /// Deletes its rows, `batching.rows` per statement, pausing between statements; counts them in
    /// `edulink_janitor_deleted_rows_total{table}`. Returns the rows deleted.
    pub async fn run(&self, db: &Db, batching: Batching) -> Result<u64, StoreError> {
        let sql = format!(
            "DELETE FROM {t} WHERE ({k}) IN (SELECT {k} {w} LIMIT {n})",
            t = self.table,
            k = self.key,
            w = self.where_clause(),
            n = batching.rows.max(1)
        );
        let mut total = 0u64;
        loop {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
            for b in &self.binds {
                q = q.bind(*b);
            }
            let deleted = db.execute(q).await?.rows_affected();
            total += deleted;
            metrics::counter!("edulink_janitor_deleted_rows_total", "table" => self.table).increment(deleted);
            if deleted < batching.rows.max(1) as u64 {
                return Ok(total);
            }
            tokio::time::sleep(batching.pause).await;
        }
    }
}

/// Takes or renews the lease `name` for `holder` until `now + ttl`: granted when nobody holds it,
/// when its holder's time ran out, or when `holder` holds it already. One statement, so two
/// instances asking together never both get it. The table `janitor_lease` is each party's own.
pub async fn take_lease(db: &Db, name: &str, holder: &str, now: i64, ttl: i64) -> Result<bool, StoreError> {
    let got = sqlx::query(
        "INSERT INTO janitor_lease (name, holder, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE janitor_lease.expires_at <= $4 OR janitor_lease.holder = excluded.holder",
    )
    .bind(name)
    .bind(holder)
    .bind(now + ttl)
    .bind(now)
    .execute(db.writer())
    .await?;
    Ok(got.rows_affected() == 1)
}

/// Gives the lease back (when `holder` still holds it), so another instance may run at once.
pub async fn release_lease(db: &Db, name: &str, holder: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM janitor_lease WHERE name = $1 AND holder = $2")
        .bind(name)
        .bind(holder)
        .execute(db.writer())
        .await?;
    Ok(())
}

/// What one table's rule did (or would do, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swept {
    /// The table.
    pub table: &'static str,
    /// Rows deleted (or that would be).
    pub rows: u64,
}

/// Runs `purges` in order (or only counts, when `dry_run`).
pub async fn sweep(db: &Db, purges: &[Purge], batching: Batching, dry_run: bool) -> Result<Vec<Swept>, StoreError> {
    let mut out = Vec::with_capacity(purges.len());
    for p in purges {
        let rows = if dry_run { p.count(db).await?.max(0) as u64 } else { p.run(db, batching).await? };
        out.push(Swept { table: p.table, rows });
    }
    Ok(out)
}

/// How long each kind of row is kept (docs/retention.md; configured under `[retention]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Audit records, seconds.
    pub audit_secs: i64,
    /// Outbox jobs once done, seconds.
    pub outbox_done_secs: i64,
    /// Sign-in notifications shown to a MAX account, seconds.
    pub notifications_secs: i64,
    /// What an ended link leaves behind (MAX's mark of it), seconds; the law allows at most 30 days
    /// (152-FZ art. 21 part 4).
    pub unlinked_secs: i64,
    /// How long an expired credential (session, code, token, ticket) is kept after its expiry,
    /// seconds: the time an incident investigation may still need it.
    pub expired_grace_secs: i64,
}

/// A day, seconds.
pub const DAY: i64 = 86_400;

/// The longest [`Retention::unlinked_secs`] the law allows: 30 days (152-FZ art. 21 part 4).
pub const UNLINKED_MAX_SECS: i64 = 30 * DAY;

/// Fixed-window counters and the sliding SMS windows look back at most a day; rows older than two
/// days count nothing.
pub const COUNTER_HORIZON_SECS: i64 = 2 * DAY;

impl Default for Retention {
    fn default() -> Self {
        Retention {
            audit_secs: 365 * DAY,
            outbox_done_secs: 7 * DAY,
            notifications_secs: 30 * DAY,
            unlinked_secs: UNLINKED_MAX_SECS,
            expired_grace_secs: DAY,
        }
    }
}

impl Retention {
    /// The longest period of all: past it every row the janitor deletes is gone.
    pub fn longest(&self) -> i64 {
        [
            self.audit_secs,
            self.outbox_done_secs,
            self.notifications_secs,
            self.unlinked_secs,
            self.expired_grace_secs,
            COUNTER_HORIZON_SECS,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }
}

/// The lease's name in each party's `janitor_lease`.
pub const LEASE: &str = "janitor";

/// How long a lease lasts without renewal, seconds; renewed before every table, so a holder that
/// died mid-run is replaced this long after.
pub const LEASE_SECS: i64 = 600;

/// One janitor run under the lease: `None` when another instance holds it. The lease is renewed
/// before each table (a run that lost it stops) and given back at the end. A dry run only counts,
/// and takes no lease.
pub async fn run_leased(
    db: &Db,
    holder: &str,
    now: &(dyn Fn() -> i64 + Send + Sync),
    purges: &[Purge],
    batching: Batching,
    dry_run: bool,
) -> Result<Option<Vec<Swept>>, StoreError> {
    if dry_run {
        return sweep(db, purges, batching, true).await.map(Some);
    }
    let mut out = Vec::with_capacity(purges.len());
    for p in purges {
        if !take_lease(db, LEASE, holder, now(), LEASE_SECS).await? {
            if out.is_empty() {
                return Ok(None);
            }
            tracing::warn!(table = p.table, "janitor lease lost mid-run: stopping");
            return Ok(Some(out));
        }
        out.push(Swept { table: p.table, rows: p.run(db, batching).await? });
    }
    release_lease(db, LEASE, holder).await?;
    Ok(Some(out))
}
