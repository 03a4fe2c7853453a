//! Pool settings.

use std::time::Duration;

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
