//! Errors of the storage layer, and the retry of transient conflicts.

use std::time::Duration;

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
    /// The database was migrated by a newer binary: its schema has versions this binary does not
    /// know, and running on it could corrupt data or fail mid-request.
    #[error(
        "the database schema is at version {applied}, newer than this binary knows (up to {known}): \
         run the newer edulink, or restore the database it was taken from"
    )]
    SchemaTooNew {
        /// The highest version applied to the database.
        applied: i64,
        /// The highest version this binary ships.
        known: i64,
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
    pub(crate) fn into_sqlx(self) -> sqlx::Error {
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
