//! SQLite, run in the calling thread through rusqlite behind sqlx's `Any` interface.
//!
//! - `conn.rs`: opening connections, the read connections, SQLite errors as sqlx errors;
//! - `values.rs`: one statement with `Any` arguments and `Any` rows (the sqlx-core internals
//!   this crate builds, why, and how to upgrade sqlx);
//! - `writer.rs`: the one writer connection with group commit (`writer/pause.rs`: holding it
//!   for a backup);
//! - `executor.rs`: sqlx's `Executor` for [`crate::DbReader`], [`crate::DbWriter`] and
//!   `&mut` [`crate::Tx`], which send PostgreSQL to sqlx and SQLite here.
//!
//! Only what may block for long — `BEGIN IMMEDIATE` waiting on another process, and the `fsync`
//! of `COMMIT` — leaves the async threads.

pub(crate) mod conn;
pub(crate) mod executor;
pub(crate) mod values;
pub(crate) mod writer;

pub(crate) use conn::Readers;
pub(crate) use writer::{Savepoint, Writer};
