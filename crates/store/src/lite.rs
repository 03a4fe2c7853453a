//! SQLite run in the calling thread, behind sqlx's `Any` executor interface.
//!
//! sqlx's SQLite driver gives every connection a thread and hands each statement to it through
//! channels: two thread wake-ups per statement, which profiles of the sign-in flow showed costing
//! far more than SQLite itself (BENCHMARKS.md). Statements on an embedded database take
//! microseconds, so here they run where they are called, through rusqlite, with prepared
//! statements cached per connection. The repositories keep writing `sqlx::query(…)` once for both
//! backends: [`crate::DbReader`] and [`crate::Tx`] implement sqlx's `Executor` and come here on
//! SQLite. Only what may block for long — `BEGIN IMMEDIATE` waiting on another process, and the
//! `fsync` of `COMMIT` — leaves the async threads (see `tx.rs`).

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags};
use sqlx::any::{AnyArguments, AnyQueryResult, AnyRow, AnyTypeInfo, AnyTypeInfoKind, AnyValue};
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx_core::Either;
use sqlx_core::any::{AnyColumn, AnyValueKind};
use sqlx_core::ext::ustr::UStr;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one statement gave: its rows, then its result.
pub(crate) type Results = Vec<Either<AnyQueryResult, AnyRow>>;

/// Prepared statements kept per connection (the hot paths use a few dozen).
const STATEMENT_CACHE: usize = 256;

/// How long a statement waits for another process's lock before it fails with `SQLITE_BUSY`.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a connection with the settings every connection of ours has.
pub(crate) fn open(path: &str, synchronous: &str, read_only: bool) -> Result<Connection, sqlx::Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(error)?;
    // busy_timeout: a writer of another process (a CLI command, the benchmark's seeding) makes
    // ours wait instead of fail; WAL lets readers go on during a write.
    conn.busy_timeout(BUSY_TIMEOUT).map_err(error)?;
    let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(error)?;
    // temp_store=MEMORY keeps the writer's savepoint journal in memory: on disk (SQLite's default
    // past 64 KiB) every batch that spilled created, wrote and deleted a temporary file, 8 % of
    // the link flow's profile.
    conn.execute_batch(&format!(
        "PRAGMA foreign_keys=ON; PRAGMA synchronous={synchronous}; PRAGMA temp_store=MEMORY; PRAGMA query_only={};",
        if read_only { "ON" } else { "OFF" }
    ))
    .map_err(error)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// The read connections of one database: taken for one statement, then put back.
pub(crate) struct Readers {
    path: String,
    synchronous: &'static str,
    idle: Mutex<Vec<Connection>>,
    keep: usize,
}

impl Readers {
    pub(crate) fn new(path: String, synchronous: &'static str, keep: usize) -> Self {
        Self { path, synchronous, idle: Mutex::new(Vec::new()), keep: keep.max(1) }
    }

    /// Runs `f` on an idle read connection (opening one when none is idle).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(c) => c,
            None => open(&self.path, self.synchronous, true)?,
        };
        let out = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.keep {
            idle.push(conn);
        }
        out
    }
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers").field("path", &self.path).finish_non_exhaustive()
    }
}

/// Runs one query (or, without arguments, a batch of statements) and collects what it gives, at
/// most `limit` rows.
pub(crate) fn run(
    conn: &Connection,
    sql: &str,
    args: Option<AnyArguments>,
    persistent: bool,
    limit: Option<usize>,
) -> Result<Results, sqlx::Error> {
    // Each statement at debug level, as sqlx logs its own (`RUST_LOG=edulink_store::sql=debug`).
    let started = tracing::enabled!(target: "edulink_store::sql", tracing::Level::DEBUG).then(std::time::Instant::now);
    let values = args.map(|a| a.values.0).unwrap_or_default();
    let prepared =
        if persistent { conn.prepare_cached(sql).map(Prepared::Cached) } else { conn.prepare(sql).map(Prepared::Once) };
    let mut stmt = match prepared {
        Ok(s) => s,
        // Several statements (`raw_sql`: migrations, batches). rusqlite's `prepare` also prepares the
        // rest to tell, which fails when a later statement needs an earlier one's table: any failure
        // without arguments runs the text as a batch, which reports a real error the same way.
        Err(_) if values.is_empty() => {
            conn.execute_batch(sql).map_err(error)?;
            return Ok(vec![Either::Left(AnyQueryResult { rows_affected: conn.changes(), last_insert_id: None })]);
        }
        Err(e) => return Err(error(e)),
    };
    let stmt = stmt.get();
    for i in 1..=stmt.parameter_count() {
        // `$N` (and `?N`) name the N-th argument; a bare `?` takes the next one.
        let n = stmt.parameter_name(i).and_then(|name| name[1..].parse::<usize>().ok()).unwrap_or(i);
        let value = values.get(n - 1).ok_or_else(|| {
            sqlx::Error::InvalidArgument(format!("statement wants argument {n}, {} given", values.len()))
        })?;
        stmt.raw_bind_parameter(i, ToSqlOutput::Borrowed(to_sql(value)?)).map_err(error)?;
    }
    let columns: Vec<AnyColumn> = (0..stmt.column_count())
        .map(|i| AnyColumn {
            ordinal: i,
            name: UStr::new(stmt.column_name(i).unwrap_or("")),
            type_info: AnyTypeInfo { kind: AnyTypeInfoKind::Null },
        })
        .collect();
    let names: Arc<sqlx_core::HashMap<UStr, usize>> =
        Arc::new(columns.iter().map(|c| (c.name.clone(), c.ordinal)).collect());
    let read_only = stmt.readonly();
    let mut out = Vec::new();
    {
        let mut rows = stmt.raw_query();
        while limit.is_none_or(|l| out.len() < l) {
            let Some(row) = rows.next().map_err(error)? else { break };
            let mut values = Vec::with_capacity(columns.len());
            for i in 0..columns.len() {
                values.push(AnyValue { kind: from_sql(row.get_ref(i).map_err(error)?)? });
            }
            out.push(Either::Right(AnyRow { column_names: names.clone(), columns: columns.clone(), values }));
        }
    }
    let rows_affected = if read_only { 0 } else { conn.changes() };
    if let Some(t) = started {
        let summary: String = sql.split_whitespace().take(6).collect::<Vec<_>>().join(" ");
        // Rows a full table scan stepped through: non-zero on a big table means a missing index.
        let full_scan_steps = stmt.reset_status(rusqlite::StatementStatus::FullscanStep);
        tracing::debug!(target: "edulink_store::sql", %summary, rows = out.len(), rows_affected, full_scan_steps, elapsed_us = t.elapsed().as_micros() as u64, "statement");
    }
    out.push(Either::Left(AnyQueryResult { rows_affected, last_insert_id: None }));
    Ok(out)
}

enum Prepared<'c> {
    Cached(rusqlite::CachedStatement<'c>),
    Once(rusqlite::Statement<'c>),
}

impl<'c> Prepared<'c> {
    fn get(&mut self) -> &mut rusqlite::Statement<'c> {
        match self {
            Prepared::Cached(s) => s,
            Prepared::Once(s) => s,
        }
    }
}

fn to_sql(v: &AnyValueKind) -> Result<ValueRef<'_>, sqlx::Error> {
    Ok(match v {
        AnyValueKind::Null(_) => ValueRef::Null,
        AnyValueKind::Bool(b) => ValueRef::Integer(i64::from(*b)),
        AnyValueKind::SmallInt(i) => ValueRef::Integer(i64::from(*i)),
        AnyValueKind::Integer(i) => ValueRef::Integer(i64::from(*i)),
        AnyValueKind::BigInt(i) => ValueRef::Integer(*i),
        AnyValueKind::Real(f) => ValueRef::Real(f64::from(*f)),
        AnyValueKind::Double(f) => ValueRef::Real(*f),
        AnyValueKind::Text(s) => ValueRef::Text(s.as_bytes()),
        AnyValueKind::TextSlice(s) => ValueRef::Text(s.as_bytes()),
        AnyValueKind::Blob(b) => ValueRef::Blob(b),
        other => return Err(sqlx::Error::InvalidArgument(format!("cannot bind {other:?} in SQLite"))),
    })
}

/// A value as sqlx's SQLite driver maps it (by the value's storage class, as `AnyRow::map_from`).
fn from_sql(v: ValueRef<'_>) -> Result<AnyValueKind, sqlx::Error> {
    Ok(match v {
        ValueRef::Null => AnyValueKind::Null(AnyTypeInfoKind::Null),
        ValueRef::Integer(i) => AnyValueKind::BigInt(i),
        ValueRef::Real(f) => AnyValueKind::Double(f),
        ValueRef::Text(t) => {
            AnyValueKind::Text(Arc::new(String::from_utf8(t.to_vec()).map_err(|e| sqlx::Error::Decode(Box::new(e)))?))
        }
        ValueRef::Blob(b) => AnyValueKind::Blob(Arc::new(b.to_vec())),
    })
}

/// A SQLite error, classified as sqlx's own SQLite driver does, so [`crate::StoreError`] maps both
/// drivers' errors alike.
#[derive(Debug)]
pub(crate) struct LiteError {
    code: i32,
    message: String,
}

impl std::fmt::Display for LiteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl std::error::Error for LiteError {}

impl DatabaseError for LiteError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.code.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        match self.code {
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            rusqlite::ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

/// A rusqlite error as a sqlx error.
pub(crate) fn error(e: rusqlite::Error) -> sqlx::Error {
    match e {
        rusqlite::Error::SqliteFailure(f, message) => sqlx::Error::Database(Box::new(LiteError {
            code: f.extended_code,
            message: message.unwrap_or_else(|| f.to_string()),
        })),
        other => sqlx::Error::Protocol(other.to_string()),
    }
}
