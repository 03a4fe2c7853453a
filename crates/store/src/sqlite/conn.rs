//! SQLite connections through rusqlite: how one is opened, the read connections, and SQLite
//! errors in sqlx's terms.

use rusqlite::{Connection, OpenFlags};
use sqlx::error::{DatabaseError, ErrorKind};
use std::borrow::Cow;
use std::sync::Mutex;
use std::time::Duration;

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
    /// Connections running a statement now (for the pool gauges).
    busy: std::sync::atomic::AtomicUsize,
}

impl Readers {
    pub(crate) fn new(path: String, synchronous: &'static str, keep: usize) -> Self {
        Self { path, synchronous, idle: Mutex::new(Vec::new()), keep: keep.max(1), busy: Default::default() }
    }

    /// The database file.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// `(idle, busy)` read connections.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).len();
        (idle, self.busy.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Runs `f` on an idle read connection (opening one when none is idle).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(c) => c,
            None => open(&self.path, self.synchronous, true)?,
        };
        self.busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = f(&conn);
        self.busy.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `.cargo/config.toml` builds SQLite without its process-wide locks on hot paths.
    #[test]
    fn sqlite_is_built_without_global_allocation_and_page_cache_locks() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("x.db").display().to_string(), "FULL", true).unwrap();
        let mut stmt = conn.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{options:?}");
        assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
    }

    #[test]
    fn sqlite_errors_are_classified_as_sqlx_classifies_them() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("x.db").display().to_string(), "FULL", false).unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY)").unwrap();
        conn.execute_batch("INSERT INTO t VALUES ('a')").unwrap();
        let err = error(conn.execute_batch("INSERT INTO t VALUES ('a')").unwrap_err());
        let sqlx::Error::Database(db) = &err else { panic!("{err:?}") };
        assert!(db.is_unique_violation(), "{err}");
        assert_eq!(db.code().as_deref(), Some("1555"));
        assert!(matches!(crate::StoreError::from(err), crate::StoreError::Conflict(_)));
    }
}
