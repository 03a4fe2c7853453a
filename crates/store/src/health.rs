//! Readiness: can the database take a write right now?
//!
//! `/readyz` is polled by load balancers many times a second, so one real check runs at most once
//! per [`CHECK_EVERY`] and the others reuse its answer. On SQLite the check is a write transaction
//! through the writer that inserts a row needing a new page and rolls it back: it fails when the
//! writer is stuck or the file cannot grow ("database or disk is full"), and costs no `fsync`. On
//! PostgreSQL it asks whether the session may write (`transaction_read_only` is on for a hot
//! standby or a read-only server); when the pooled connection is dead (the server restarted, or its
//! backend was terminated) it asks again on a fresh connection, so one broken pooled connection
//! does not take an instance out of the balancer.

use crate::{Backend, Db, StoreError};
use sqlx::Connection;
use sqlx::any::AnyConnectOptions;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long one readiness answer is reused.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The last readiness answer, and how to open a fresh PostgreSQL connection for the retry.
#[derive(Debug, Default)]
pub(crate) struct Health {
    pub(crate) last: Mutex<Option<(Instant, Result<(), String>)>>,
    /// PostgreSQL: the connect options and the session setup of pooled connections.
    pub(crate) fresh: Option<(AnyConnectOptions, String)>,
}

impl Db {
    /// Whether the database can take writes now (for `/readyz`); the answer is reused for
    /// [`CHECK_EVERY`]. `Err` is [`StoreError::Unavailable`] with the reason.
    pub async fn ready(&self) -> Result<(), StoreError> {
        let mut last = self.health.last.lock().await;
        if let Some((_, answer)) = last.as_ref().filter(|(at, _)| at.elapsed() < CHECK_EVERY) {
            return answer.clone().map_err(StoreError::Unavailable);
        }
        let answer = self.check_writable().await.map_err(|e| e.to_string());
        *last = Some((Instant::now(), answer.clone()));
        answer.map_err(StoreError::Unavailable)
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => {
                let mut tx = self.begin().await?;
                // A blob larger than a page needs a page of its own: from the free list, or by
                // growing the file (refused when full or at `max_page_count`).
                sqlx::query("INSERT INTO store_health (id, pad) VALUES (1, zeroblob(8192))").execute(&mut tx).await?;
                tx.rollback().await
            }
            Backend::Postgres => match self.pg_writable(None).await {
                Err(StoreError::Unavailable(e)) => {
                    tracing::info!(error = %e, "readiness: pooled connection failed, asking on a fresh one");
                    let (opts, setup) = self.health.fresh.as_ref().expect("a PostgreSQL Db keeps its options");
                    let mut conn = sqlx::AnyConnection::connect_with(opts).await?;
                    sqlx::raw_sql(sqlx::AssertSqlSafe(setup.clone())).execute(&mut conn).await?;
                    let answer = self.pg_writable(Some(&mut conn)).await;
                    let _ = conn.close().await;
                    answer
                }
                other => other,
            },
        }
    }

    /// PostgreSQL: may this session write? On `conn`, or on a pooled connection.
    async fn pg_writable(&self, conn: Option<&mut sqlx::AnyConnection>) -> Result<(), StoreError> {
        let q = sqlx::query_scalar::<_, String>("SELECT current_setting('transaction_read_only')");
        let read_only = match conn {
            Some(c) => q.fetch_one(c).await?,
            None => q.fetch_one(self.pool()).await?,
        };
        match read_only.as_str() {
            "off" => Ok(()),
            _ => Err(StoreError::Unavailable("the database is read-only".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::migrate::tests::sqlite;

    /// SQLite answers `SQLITE_FULL` ("database or disk is full") once the file cannot grow: here
    /// `PRAGMA max_page_count` caps it at its current size (sqlite.org/pragma.html#pragma_max_page_count,
    /// the same error a full disk gives). Readiness must fail then, not only when SELECT fails.
    #[tokio::test]
    async fn readiness_fails_when_sqlite_cannot_grow() {
        let (_dir, db) = sqlite().await;
        db.ready().await.unwrap();
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(db.pool()).await.unwrap();
        db.execute(sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {pages}")))).await.unwrap();
        // A real write of the application fails the same way.
        let write = db.execute(sqlx::query("INSERT INTO t (k, n) VALUES (hex(zeroblob(20000)), 1)")).await;
        assert!(write.is_err(), "the file cannot grow");
        assert!(db.ready().await.is_ok(), "the answer is reused for a second");
        tokio::time::sleep(super::CHECK_EVERY).await;
        assert!(db.ready().await.is_err(), "not ready while writes fail");
        sqlx::query("SELECT 1").execute(db.pool()).await.expect("reads still work: only writes fail");
    }
}
