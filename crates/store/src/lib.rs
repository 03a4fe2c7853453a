//! Storage glue: one SQL text for SQLite and PostgreSQL.
//!
//! Repository code is written once against sqlx's `Any` interface, with `$1` placeholders (both
//! SQLite and PostgreSQL accept them), integer Unix timestamps and text columns. PostgreSQL runs
//! through sqlx's driver; SQLite runs in the calling thread through rusqlite (`sqlite/`), behind
//! the same interface: [`Db::pool`] reads, [`Db::begin`] writes (one writer with group commit,
//! `sqlite/writer.rs`). Where dialects differ (DDL), each party ships one migration file per
//! backend under the same name (`migrate.rs`).

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection};
use std::str::FromStr;
use std::sync::Arc;

mod backup;
mod config;
mod error;
mod health;
pub mod janitor;
mod migrate;
mod rate;
mod sqlite;
mod tx;

pub use backup::{BackupError, BackupTiming, FileCheck, backup_together, inspect_sqlite_file};
pub use config::{PoolConfig, valid_schema};
pub use error::{StoreError, retry};
pub use health::CHECK_EVERY as READY_CHECK_EVERY;
pub use migrate::Migration;
pub use rate::{Limit, Reservation, clear_bucket, count_in_window, count_in_window_in, reserve};
pub use sqlite::executor::{DbReader, DbWriter};
pub use sqlx;
pub use sqlx::Row;
pub use tx::Tx;

use sqlite::{Readers, Writer, conn};

/// The backend behind a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite (WAL): the zero-configuration default.
    Sqlite,
    /// PostgreSQL: the production store.
    Postgres,
}

/// A snapshot of a pool's connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections.
    pub size: usize,
    /// Open connections doing nothing.
    pub idle: usize,
    /// Tasks waiting for a connection: the SQLite writer's queue (sqlx does not tell PostgreSQL's).
    pub waiting: usize,
}

/// A connection pool to one party's database.
#[derive(Debug, Clone)]
pub struct Db {
    backend: Backend,
    /// PostgreSQL: the pool.
    pool: Option<AnyPool>,
    /// SQLite: the read connections (`query_only`).
    readers: Option<Arc<Readers>>,
    /// SQLite: the one connection that writes, with group commit (see [`Tx`]).
    writer: Option<Arc<Writer>>,
    /// The last readiness answer (`health.rs`).
    health: Arc<health::Health>,
}

impl Db {
    /// Connects to `url` (`sqlite://path` or `postgres://…`), creating a SQLite file if missing.
    pub async fn connect(url: &str, cfg: &PoolConfig) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_string(),
        };
        if backend == Backend::Sqlite {
            let sync = match cfg.sqlite_synchronous.to_ascii_uppercase().as_str() {
                "NORMAL" => "NORMAL",
                _ => "FULL",
            };
            let path = sqlite_path(&url);
            let conn = conn::open(&path, sync, false)?;
            let label = std::path::Path::new(&path).file_stem().map(|s| s.to_string_lossy().into_owned());
            let writer = Some(Arc::new(Writer::new(conn, cfg.acquire_timeout, label.unwrap_or_default())));
            let readers = Some(Arc::new(Readers::new(path, sync, cfg.max_connections as usize)));
            return Ok(Self { backend, pool: None, readers, writer, health: Default::default() });
        }
        let opts = AnyConnectOptions::from_str(&url).map_err(|_| StoreError::UnsupportedUrl)?;
        let schema = match (&cfg.schema, backend) {
            (Some(s), Backend::Postgres) if valid_schema(s) => Some(s.clone()),
            (Some(_), Backend::Postgres) => return Err(StoreError::UnsupportedUrl),
            _ => None,
        };
        if let Some(s) = &schema {
            // Create the schema once, before any pooled connection sets its search_path to it.
            let mut conn = sqlx::AnyConnection::connect_with(&opts).await?;
            let create = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {s}")));
            if let Err(e) = create.execute(&mut conn).await {
                // Two instances starting at once may race on the catalog; the schema exists either way.
                if !matches!(StoreError::from(e), StoreError::Conflict(_)) {
                    return Err(StoreError::Unavailable("cannot create schema".into()));
                }
            }
            let _ = conn.close().await;
        }
        let pg_setup = format!(
            "SET search_path TO {}; SET statement_timeout = {}",
            schema.as_deref().unwrap_or("public"),
            cfg.statement_timeout.as_millis().max(1)
        );
        let setup = pg_setup.clone();
        let pool = AnyPoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(cfg.acquire_timeout)
            // No ping before every acquire (one extra round trip per query): a connection that died
            // fails its query, is dropped from the pool, and the request answers 503 (see
            // `lost_database_connections_give_503_and_recover`).
            .test_before_acquire(false)
            .after_connect(move |conn, _meta| {
                let pg_setup = setup.clone();
                Box::pin(async move {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(pg_setup.clone())).execute(&mut *conn).await?;
                    Ok(())
                })
            })
            .connect_with(opts.clone())
            .await?;
        let health = Arc::new(health::Health { fresh: Some((opts, pg_setup)), ..Default::default() });
        Ok(Self { backend, pool: Some(pool), readers: None, writer: None, health })
    }

    /// Starts a write transaction (see [`Tx`]). On SQLite, holding one blocks every other writer
    /// of this process until it is committed or dropped: do no network calls while holding it,
    /// and never begin a second one in the same task.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Tx::begin(self.pool.as_ref(), self.writer.as_ref()).await
    }

    /// Runs one statement that writes, committed on its own.
    pub async fn execute<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<sqlx::any::AnyQueryResult, StoreError> {
        Ok(query.execute(self.writer()).await?)
    }

    /// SQLite: `(COMMIT statements, write transactions they committed)` since the pool opened;
    /// their ratio is the mean group-commit batch. `None` on PostgreSQL.
    pub fn write_stats(&self) -> Option<(usize, usize)> {
        self.writer.as_ref().map(|w| w.stats())
    }

    /// The pool's connections now, for the `edulink_db_pool_*` gauges.
    pub fn pool_stats(&self) -> PoolStats {
        if let Some(pool) = &self.pool {
            let idle = pool.num_idle();
            return PoolStats { size: pool.size() as usize, idle, waiting: 0 };
        }
        let (idle, busy) = self.readers.as_ref().map(|r| r.counts()).unwrap_or_default();
        let waiting = self.writer.as_ref().map(|w| w.waiting()).unwrap_or_default();
        // The readers kept and running, plus the one writer connection (always open).
        PoolStats { size: idle + busy + 1, idle, waiting }
    }

    /// The executor for one statement that writes, committed on its own (e.g. an
    /// `UPDATE … RETURNING` with `fetch_optional`).
    pub fn writer(&self) -> DbWriter<'_> {
        DbWriter(self)
    }

    /// The pool, for running queries that read (on SQLite it refuses writes: use [`Db::begin`],
    /// [`Db::writer`] or [`Db::execute`]).
    pub fn pool(&self) -> DbReader<'_> {
        DbReader(self)
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Commits what the SQLite writer still holds, then closes the pool.
    pub async fn close(&self) {
        if let Some(w) = &self.writer {
            w.settle().await;
        }
        if let Some(pool) = &self.pool {
            pool.close().await;
        }
    }
}

/// The SQLite file a database URL names; `None` for PostgreSQL.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    url.starts_with("sqlite:").then(|| sqlite_path(url).into())
}

/// The file of a `sqlite://path?options` URL.
fn sqlite_path(url: &str) -> String {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    rest.split('?').next().unwrap_or(rest).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unsupported_url_is_refused() {
        assert!(matches!(Db::connect("mysql://x", &PoolConfig::default()).await, Err(StoreError::UnsupportedUrl)));
    }
}
