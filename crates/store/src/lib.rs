//! Storage glue: one SQL text for SQLite and PostgreSQL.
//!
//! Repository code is written once against sqlx's `Any` interface, with `$1` placeholders (both
//! SQLite and PostgreSQL accept them), integer Unix timestamps and text columns. PostgreSQL runs
//! through sqlx's driver; SQLite runs in the calling thread through rusqlite (`lite.rs`), behind
//! the same interface: [`Db::pool`] reads, [`Db::begin`] writes.
//! Where dialects differ (DDL), each party ships one migration file per backend under the same name.

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection};
use std::str::FromStr;
use std::time::Duration;

mod lite;
mod tx;

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
pub use sqlx;
pub use sqlx::Row;
use sqlx::any::{AnyQueryResult, AnyRow};
use sqlx::{Any, Execute};
use sqlx_core::Either;
use std::sync::Arc;
pub use tx::Tx;
use tx::Writer;

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
    /// Back to a sqlx error, for the executor interface (a classified error keeps its message).
    fn into_sqlx(self) -> sqlx::Error {
        match self {
            StoreError::Other(e) => e,
            // Maps back to `Unavailable` (a 503), as the error it came from.
            other => sqlx::Error::Io(std::io::Error::other(other.to_string())),
        }
    }

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
    backend: Backend,
    /// PostgreSQL: the pool.
    pool: Option<AnyPool>,
    /// SQLite: the read connections (`query_only`).
    readers: Option<Arc<lite::Readers>>,
    /// SQLite: the one connection that writes, with group commit (see [`Tx`]).
    writer: Option<Arc<Writer>>,
}

/// The executor for reads (`db.pool()`), and for everything on PostgreSQL. On SQLite it refuses
/// writes: use [`Db::begin`] or [`Db::execute`].
#[derive(Debug, Clone, Copy)]
pub struct DbReader<'a>(&'a Db);

impl<'c> sqlx::Executor<'c> for DbReader<'c> {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match (&self.0.pool, &self.0.readers) {
            (Some(pool), _) => pool.fetch_many(query),
            (None, Some(readers)) => results_stream(read(readers, query, None)),
            _ => unreachable!("a Db has a pool or readers"),
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match (&self.0.pool, &self.0.readers) {
            (Some(pool), _) => pool.fetch_optional(query),
            (None, Some(readers)) => {
                let first = first_row(read(readers, query, Some(1)));
                Box::pin(async move { first })
            }
            _ => unreachable!("a Db has a pool or readers"),
        }
    }

    fn prepare_with<'e>(
        self,
        sql: sqlx::SqlStr,
        parameters: &'e [sqlx::any::AnyTypeInfo],
    ) -> BoxFuture<'e, Result<sqlx::any::AnyStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        match &self.0.pool {
            Some(pool) => pool.prepare_with(sql, parameters),
            None => {
                Box::pin(async { Err(sqlx::Error::Protocol("statements are not prepared apart on SQLite".into())) })
            }
        }
    }
}

fn read<'q, E: Execute<'q, Any>>(
    readers: &lite::Readers,
    mut query: E,
    limit: Option<usize>,
) -> Result<lite::Results, sqlx::Error> {
    let args = query.take_arguments().map_err(sqlx::Error::Encode)?;
    let persistent = query.persistent();
    let sql = query.sql();
    readers.with(|conn| lite::run(conn, sql.as_str(), args, persistent, limit))
}

/// The executor for one statement that writes, committed on its own (`db.writer()`): autocommit on
/// PostgreSQL, a write transaction of its own on SQLite (see [`Tx`]).
#[derive(Debug, Clone, Copy)]
pub struct DbWriter<'a>(&'a Db);

impl DbWriter<'_> {
    /// Runs the statement in a transaction of its own (SQLite).
    async fn alone<'q, E: 'q + Execute<'q, Any>>(
        self,
        query: E,
        limit: Option<usize>,
    ) -> Result<lite::Results, sqlx::Error> {
        let mut tx = self.0.begin().await.map_err(StoreError::into_sqlx)?;
        let results = tx.run(query, limit)?;
        tx.commit().await.map_err(StoreError::into_sqlx)?;
        Ok(results)
    }
}

impl<'c> sqlx::Executor<'c> for DbWriter<'c> {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match &self.0.pool {
            Some(pool) => pool.fetch_many(query),
            None => Box::pin(Pending::Waiting(Box::pin(self.alone(query, None)))),
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match &self.0.pool {
            Some(pool) => pool.fetch_optional(query),
            None => Box::pin(async move { first_row(self.alone(query, Some(1)).await) }),
        }
    }

    fn prepare_with<'e>(
        self,
        sql: sqlx::SqlStr,
        parameters: &'e [sqlx::any::AnyTypeInfo],
    ) -> BoxFuture<'e, Result<sqlx::any::AnyStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        DbReader(self.0).prepare_with(sql, parameters)
    }
}

/// The results of a statement (still running, or in hand), as the stream sqlx expects.
enum Pending<'e> {
    Waiting(BoxFuture<'e, Result<lite::Results, sqlx::Error>>),
    Ready(std::vec::IntoIter<Either<AnyQueryResult, AnyRow>>),
    Done,
}

impl futures_core::Stream for Pending<'_> {
    type Item = Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            match this {
                Pending::Waiting(fut) => match fut.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(results)) => *this = Pending::Ready(results.into_iter()),
                    Poll::Ready(Err(e)) => {
                        *this = Pending::Done;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                Pending::Ready(items) => return Poll::Ready(items.next().map(Ok)),
                Pending::Done => return Poll::Ready(None),
            }
        }
    }
}

/// Results already in hand, as the stream sqlx expects.
fn results_stream<'e>(
    results: Result<lite::Results, sqlx::Error>,
) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>> {
    Box::pin(Pending::Waiting(Box::pin(std::future::ready(results))))
}

fn first_row(results: Result<lite::Results, sqlx::Error>) -> Result<Option<AnyRow>, sqlx::Error> {
    Ok(results?.into_iter().find_map(|r| match r {
        Either::Right(row) => Some(row),
        Either::Left(_) => None,
    }))
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
    count_on(db.writer(), bucket, window, cap, now).await
}

/// [`count_in_window`] inside the caller's write transaction, so the count commits with the
/// change it admits (one commit instead of two). A refusal is counted too: commit the
/// transaction either way.
pub async fn count_in_window_in(
    tx: &mut Tx,
    bucket: &str,
    window: i64,
    cap: i64,
    now: i64,
) -> Result<Result<(), i64>, StoreError> {
    count_on(&mut *tx, bucket, window, cap, now).await
}

async fn count_on<'c, E: sqlx::Executor<'c, Database = sqlx::Any>>(
    executor: E,
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
    .fetch_one(executor)
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
        if backend == Backend::Sqlite {
            let sync = match cfg.sqlite_synchronous.to_ascii_uppercase().as_str() {
                "NORMAL" => "NORMAL",
                _ => "FULL",
            };
            let path = sqlite_path(&url);
            let conn = lite::open(&path, sync, false)?;
            let label = std::path::Path::new(&path).file_stem().map(|s| s.to_string_lossy().into_owned());
            let writer = Some(Arc::new(Writer::new(conn, cfg.acquire_timeout, label.unwrap_or_default())));
            let readers = Some(Arc::new(lite::Readers::new(path, sync, cfg.max_connections as usize)));
            return Ok(Self { backend, pool: None, readers, writer });
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
                    sqlx::raw_sql(sqlx::AssertSqlSafe(pg_setup.clone())).execute(&mut *conn).await?;
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        Ok(Self { backend, pool: Some(pool), readers: None, writer: None })
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

    /// Checks that the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(self.pool()).await?;
        Ok(())
    }

    /// Applies the migrations not applied yet, each in its own transaction, in version order.
    /// Returns the versions applied now.
    pub async fn migrate(&self, migrations: &[Migration]) -> Result<Vec<i64>, StoreError> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (\
               version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(self.writer())
        .await?;
        let mut applied = Vec::new();
        let mut sorted: Vec<&Migration> = migrations.iter().collect();
        sorted.sort_by_key(|m| m.version);
        for m in sorted {
            let mut tx = self.begin().await?;
            if self.backend == Backend::Postgres {
                // Several instances may start at once: one migrates, the others wait and then skip.
                sqlx::query("SELECT pg_advisory_xact_lock(7319001)").execute(&mut tx).await?;
            }
            let done: Option<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(m.version)
                .fetch_optional(&mut tx)
                .await?;
            if done.is_some() {
                continue;
            }
            let sql = match self.backend {
                Backend::Sqlite => m.sqlite,
                Backend::Postgres => m.postgres,
            };
            sqlx::raw_sql(sql).execute(&mut tx).await.map_err(|source| StoreError::Migration {
                version: m.version,
                name: m.name,
                source,
            })?;
            sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
                .bind(m.version)
                .bind(m.name)
                .bind(unix_now())
                .execute(&mut tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version = m.version, name = m.name, "migration applied");
            applied.push(m.version);
        }
        Ok(applied)
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

/// The file of a `sqlite://path?options` URL.
fn sqlite_path(url: &str) -> String {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    rest.split('?').next().unwrap_or(rest).to_string()
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
        db.execute(sqlx::query("INSERT INTO t (k, n) VALUES ($1, $2)").bind("a").bind(1i64)).await.unwrap();
        let err =
            db.execute(sqlx::query("INSERT INTO t (k, n) VALUES ($1, $2)").bind("a").bind(2i64)).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(db.pool()).await.unwrap();
        assert_eq!(mode, "wal");
    }

    async fn sqlite() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("x.db").display());
        let db = Db::connect(&url, &PoolConfig::default()).await.unwrap();
        db.migrate(M).await.unwrap();
        (dir, db)
    }

    /// Row `k{i}` with `n = i`.
    async fn insert(tx: &mut Tx, i: i64) {
        sqlx::query("INSERT INTO t (k, n) VALUES ($1, $2)").bind(format!("k{i}")).bind(i).execute(tx).await.unwrap();
    }

    async fn count(db: &Db) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM t").fetch_one(db.pool()).await.unwrap()
    }

    #[tokio::test]
    async fn the_sqlite_pool_refuses_writes_that_bypass_the_writer() {
        let (_dir, db) = sqlite().await;
        let err = sqlx::query("INSERT INTO t (k, n) VALUES ('x', 1)").execute(db.pool()).await.unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_commits_and_each_sees_its_write_durable_on_return() {
        let (_dir, db) = sqlite().await;
        let mut tasks = Vec::new();
        for i in 0..200i64 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = db.begin().await.unwrap();
                insert(&mut tx, i).await;
                tx.commit().await.unwrap();
                // Committed means visible to every other connection at once.
                let n: i64 = sqlx::query_scalar("SELECT n FROM t WHERE k = $1")
                    .bind(format!("k{i}"))
                    .fetch_one(db.pool())
                    .await
                    .unwrap();
                assert_eq!(n, i);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(count(&db).await, 200);
        let (commits, writes) = db.write_stats().unwrap();
        // Two migrations and their bookkeeping, then the 200 writers: fewer commits than writes.
        assert!(writes >= 200 && commits < writes, "{commits} commits for {writes} writes");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_or_dropped_writer_undoes_only_its_own_work() {
        let (_dir, db) = sqlite().await;
        let mut tasks = Vec::new();
        for i in 0..60i64 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = db.begin().await.unwrap();
                insert(&mut tx, i).await;
                match i % 3 {
                    // Dropped without commit.
                    0 => drop(tx),
                    // A second statement fails: the caller returns early with the error.
                    1 => {
                        let dup = sqlx::query("INSERT INTO t (k, n) VALUES ($1, 0)")
                            .bind(format!("k{i}"))
                            .execute(&mut tx)
                            .await;
                        assert!(dup.is_err());
                    }
                    _ => tx.commit().await.unwrap(),
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let kept: Vec<i64> = sqlx::query_scalar("SELECT n FROM t ORDER BY n").fetch_all(db.pool()).await.unwrap();
        assert_eq!(kept, (0..60).filter(|i| i % 3 == 2).collect::<Vec<_>>());
        // The writer is free again: a later write commits on its own.
        db.execute(sqlx::query("INSERT INTO t (k, n) VALUES ('last', 100)")).await.unwrap();
        assert_eq!(count(&db).await, 21);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_cancelled_at_any_point_leave_the_writer_usable_and_lose_no_confirmed_write() {
        let (_dir, db) = sqlite().await;
        let confirmed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..120i64 {
            let (db, confirmed) = (db.clone(), confirmed.clone());
            tasks.push(tokio::spawn(async move {
                let mut tx = db.begin().await.unwrap();
                insert(&mut tx, i).await;
                tokio::task::yield_now().await;
                tx.commit().await.unwrap();
                confirmed.lock().unwrap().push(i);
            }));
        }
        // Cancel every third task wherever it is: queued, mid-statement, or waiting for COMMIT.
        for (i, t) in tasks.iter().enumerate() {
            if i % 3 == 0 {
                t.abort();
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        db.execute(sqlx::query("INSERT INTO t (k, n) VALUES ('after', -1)")).await.unwrap();
        let stored: Vec<i64> = sqlx::query_scalar("SELECT n FROM t").fetch_all(db.pool()).await.unwrap();
        for n in confirmed.lock().unwrap().iter() {
            assert!(stored.contains(n), "confirmed write {n} lost");
        }
        assert!(stored.contains(&-1));
    }

    #[tokio::test]
    async fn a_statement_that_makes_sqlite_roll_back_the_batch_fails_its_writer_and_nothing_half_stays() {
        let (_dir, db) = sqlite().await;
        let mut tx = db.begin().await.unwrap();
        sqlx::query("INSERT INTO t (k, n) VALUES ('x', 1)").execute(&mut tx).await.unwrap();
        // OR ROLLBACK: SQLite ends the whole transaction, savepoints and all.
        let err = sqlx::query("INSERT OR ROLLBACK INTO t (k, n) VALUES ('x', 2)").execute(&mut tx).await;
        assert!(err.is_err());
        // A caller that goes on regardless writes nothing on its own.
        assert!(sqlx::query("INSERT INTO t (k, n) VALUES ('z', 4)").execute(&mut tx).await.is_err());
        assert!(tx.commit().await.is_err(), "the write is gone: its commit must fail");
        assert_eq!(count(&db).await, 0);
        db.execute(sqlx::query("INSERT INTO t (k, n) VALUES ('y', 3)")).await.unwrap();
        assert_eq!(count(&db).await, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_waits_for_a_lock_held_by_another_process_instead_of_failing() {
        let (dir, db) = sqlite().await;
        // Another process (a CLI command) holds the write lock for a while.
        let other = rusqlite::Connection::open(dir.path().join("x.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE; INSERT INTO t (k, n) VALUES ('other', 7)").unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            other.execute_batch("COMMIT").unwrap();
        });
        let started = std::time::Instant::now();
        let mut tx = db.begin().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250), "began before the lock was free");
        insert(&mut tx, 1).await;
        tx.commit().await.unwrap();
        release.join().unwrap();
        assert_eq!(count(&db).await, 2);
        // Later writers begin at once again.
        db.execute(sqlx::query("INSERT INTO t (k, n) VALUES ('after', 8)")).await.unwrap();
        assert_eq!(count(&db).await, 3);
    }

    /// `.cargo/config.toml` builds SQLite without its process-wide locks on hot paths.
    #[tokio::test]
    async fn sqlite_is_built_without_global_allocation_and_page_cache_locks() {
        let (_dir, db) = sqlite().await;
        let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options").fetch_all(db.pool()).await.unwrap();
        assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{options:?}");
        assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
    }

    #[tokio::test]
    async fn unsupported_url_is_refused() {
        assert!(matches!(Db::connect("mysql://x", &PoolConfig::default()).await, Err(StoreError::UnsupportedUrl)));
    }
}
