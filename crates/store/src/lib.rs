//! Storage glue: one SQL text for SQLite and PostgreSQL.
//!
//! Both backends go through sqlx's `Any` driver, so repository code is written once, with `$1`
//! placeholders (both SQLite and PostgreSQL accept them), integer Unix timestamps and text columns.
//! Where dialects differ (DDL), each party ships one migration file per backend under the same name.

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection, Executor};
use std::str::FromStr;
use std::time::Duration;

pub use sqlx;
pub use sqlx::Row;

/// The backend behind a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite (WAL): the zero-configuration default.
    Sqlite,
    /// PostgreSQL: the production store.
    Postgres,
}

/// Errors of the storage layer, classified for the layers above.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique or primary-key constraint refused the write: somebody else got there first.
    #[error("conflict on {0}")]
    Conflict(String),
    /// The database cannot be reached right now; the request may be retried later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A migration failed.
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        /// The migration's version.
        version: i64,
        /// The migration's name.
        name: &'static str,
        /// What went wrong.
        source: sqlx::Error,
    },
    /// The database URL is not one we support.
    #[error("unsupported database URL (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
    /// Anything else: a bug or a corrupted database. Logged, never shown.
    #[error(transparent)]
    Other(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.constraint().unwrap_or("unique").to_string())
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                StoreError::Unavailable(e.to_string())
            }
            // PostgreSQL: connection exceptions (08), insufficient resources (53), operator
            // intervention such as a restart or a terminated backend (57), and a cancelled statement
            // (57014, statement_timeout) mean "try again later", not a bug.
            sqlx::Error::Database(db)
                if db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("53") || c.starts_with("57")) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Other(e),
        }
    }
}

impl StoreError {
    /// True when the database refused the write because of a transient lock or serialization
    /// conflict (SQLite `BUSY`, PostgreSQL `40001`/`40P01`): the whole transaction may be retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Other(sqlx::Error::Database(db)) => {
                let code = db.code().unwrap_or_default();
                matches!(code.as_ref(), "40001" | "40P01" | "5" | "517" | "261" | "6")
                    || db.message().contains("database is locked")
            }
            _ => false,
        }
    }
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Maximum open connections.
    pub max_connections: u32,
    /// How long a request waits for a free connection before the database counts as unavailable.
    pub acquire_timeout: Duration,
    /// PostgreSQL: longest a statement may run before the server cancels it.
    pub statement_timeout: Duration,
    /// PostgreSQL: the schema that holds this party's tables (created if missing). Each party has its
    /// own, so two parties can share one server, even one database, and never each other's tables.
    pub schema: Option<String>,
    /// SQLite `synchronous`: `FULL` makes every commit durable (security state), `NORMAL` is faster.
    pub sqlite_synchronous: String,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            schema: None,
            sqlite_synchronous: "FULL".into(),
        }
    }
}

/// A schema name we are willing to interpolate into SQL: lowercase letters, digits, underscores.
pub fn valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

/// A connection pool to one party's database.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

/// One forward-only migration, with the DDL for each backend.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Ordering key; applied in ascending order, each exactly once.
    pub version: i64,
    /// File name without extension, the same for both backends.
    pub name: &'static str,
    /// SQL for SQLite.
    pub sqlite: &'static str,
    /// SQL for PostgreSQL.
    pub postgres: &'static str,
}

/// Declares a party's migrations from `migrations/{sqlite,postgres}/NNNN_name.sql` next to its Cargo.toml.
#[macro_export]
macro_rules! migrations {
    ($($version:literal => $name:literal),* $(,)?) => {
        &[$($crate::Migration {
            version: $version,
            name: $name,
            sqlite: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite/", $name, ".sql")),
            postgres: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres/", $name, ".sql")),
        }),*]
    };
}

/// Counts one event in `bucket`'s fixed window of `window` seconds (table `rate_counters`, which
/// both parties have); `Err(wait)` once more than `cap` happened in it (the refused event counts
/// too, so hammering does not help). Count and check are one statement, so the cap holds across
/// concurrent requests and instances.
pub async fn count_in_window(
    db: &Db,
    bucket: &str,
    window: i64,
    cap: i64,
    now: i64,
) -> Result<Result<(), i64>, StoreError> {
    let start = now - now.rem_euclid(window);
    let count: i64 = sqlx::query_scalar(
        "INSERT INTO rate_counters (bucket, window_start, count) VALUES ($1, $2, 1) \
         ON CONFLICT (bucket, window_start) DO UPDATE SET count = rate_counters.count + 1 RETURNING count",
    )
    .bind(bucket)
    .bind(start)
    .fetch_one(db.pool())
    .await?;
    Ok(if count > cap { Err(start + window - now) } else { Ok(()) })
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
        let sync = match cfg.sqlite_synchronous.to_ascii_uppercase().as_str() {
            "NORMAL" => "NORMAL",
            _ => "FULL",
        };
        let pool = AnyPoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(cfg.acquire_timeout)
            // No ping before every acquire (one extra round trip per query): a connection that died
            // fails its query, is dropped from the pool, and the request answers 503 (see
            // `lost_database_connections_give_503_and_recover`).
            .test_before_acquire(false)
            .after_connect(move |conn, _meta| {
                let pg_setup = pg_setup.clone();
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers proceed during a write; busy_timeout makes writers queue
                        // instead of failing; foreign keys are off by default in SQLite.
                        let pragmas = if sync == "NORMAL" {
                            "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000; \
                             PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL;"
                        } else {
                            "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000; \
                             PRAGMA foreign_keys=ON; PRAGMA synchronous=FULL;"
                        };
                        conn.execute(pragmas).await?;
                    } else {
                        sqlx::raw_sql(sqlx::AssertSqlSafe(pg_setup.clone())).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        Ok(Self { pool, backend })
    }

    /// The pool, for running queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks that the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Applies the migrations not applied yet, each in its own transaction, in version order.
    /// Returns the versions applied now.
    pub async fn migrate(&self, migrations: &[Migration]) -> Result<Vec<i64>, StoreError> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (\
               version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        let mut applied = Vec::new();
        let mut sorted: Vec<&Migration> = migrations.iter().collect();
        sorted.sort_by_key(|m| m.version);
        for m in sorted {
            let mut tx = self.pool.begin().await?;
            if self.backend == Backend::Postgres {
                // Several instances may start at once: one migrates, the others wait and then skip.
                sqlx::query("SELECT pg_advisory_xact_lock(7319001)").execute(&mut *tx).await?;
            }
            let done: Option<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(m.version)
                .fetch_optional(&mut *tx)
                .await?;
            if done.is_some() {
                continue;
            }
            let sql = match self.backend {
                Backend::Sqlite => m.sqlite,
                Backend::Postgres => m.postgres,
            };
            sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(|source| StoreError::Migration {
                version: m.version,
                name: m.name,
                source,
            })?;
            sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
                .bind(m.version)
                .bind(m.name)
                .bind(unix_now())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version = m.version, name = m.name, "migration applied");
            applied.push(m.version);
        }
        Ok(applied)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Runs `f` again (up to 5 times, with a short backoff) when it fails with a retryable conflict.
pub async fn retry<T, F, Fut>(mut f: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 0u32;
    loop {
        match f().await {
            Err(e) if e.is_retryable() && attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
            }
            other => return other,
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &[Migration] = &[
        Migration {
            version: 1,
            name: "t",
            sqlite: "CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT NOT NULL);",
            postgres: "CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT NOT NULL);",
        },
        Migration {
            version: 2,
            name: "u",
            sqlite: "CREATE INDEX t_n ON t (n);",
            postgres: "CREATE INDEX t_n ON t (n);",
        },
    ];

    #[tokio::test]
    async fn migrations_apply_once_and_unique_violation_is_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("x.db").display());
        let db = Db::connect(&url, &PoolConfig::default()).await.unwrap();
        assert_eq!(db.migrate(M).await.unwrap(), vec![1, 2]);
        assert!(db.migrate(M).await.unwrap().is_empty());
        sqlx::query("INSERT INTO t (k, n) VALUES ($1, $2)").bind("a").bind(1i64).execute(db.pool()).await.unwrap();
        let err: StoreError = sqlx::query("INSERT INTO t (k, n) VALUES ($1, $2)")
            .bind("a")
            .bind(2i64)
            .execute(db.pool())
            .await
            .unwrap_err()
            .into();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(db.pool()).await.unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn unsupported_url_is_refused() {
        assert!(matches!(Db::connect("mysql://x", &PoolConfig::default()).await, Err(StoreError::UnsupportedUrl)));
    }
}
