//! One statement on a rusqlite connection, with its arguments and results in sqlx's `Any` types.
//!
//! # Why sqlx's `Any` internals are built here by hand
//!
//! sqlx's SQLite driver runs every connection on a worker thread of its own and hands each
//! statement over through channels: two thread wake-ups per statement (four with the ping before
//! a pooled connection is handed out). Profiles of the sign-in flow showed those hand-offs costing
//! far more than SQLite itself; running SQLite through rusqlite in the calling thread took the
//! sign-in flow from 552 to 1,320 flows/s (BENCHMARKS.md, third session, step 4), and the single
//! writer with group commit (`writer.rs`) needs the connection in hand between statements, which
//! sqlx's driver does not give. The repositories still write one `sqlx::query(…)` text for both
//! backends, so this crate implements sqlx's `Executor` for `Any` (`executor.rs`) and has to take
//! `Any` arguments apart and build `Any` rows itself. sqlx offers no public constructor for them:
//! its own drivers build them from `sqlx-core`, whose API is exempt from semver (its crate docs
//! ask custom drivers to pin an exact version). Hence `sqlx-core = "=0.9.0"` in the workspace
//! `Cargo.toml`. A custom `AnyDriver` would not avoid it (it is `sqlx-core` API too) and would put
//! `AnyPool`'s acquire and its futures back on every statement.
//!
//! What is touched, all `#[doc(hidden)] pub` in `sqlx-core` 0.9.0 and all in this file:
//! - read: `AnyArguments::values` (`AnyArgumentBuffer`, a tuple struct whose `.0` is
//!   `Vec<AnyValueKind>`), and the variants of `AnyValueKind` (`Null`, `Bool`, `SmallInt`,
//!   `Integer`, `BigInt`, `Real`, `Double`, `Text`, `TextSlice`, `Blob`);
//! - built: `AnyRow { column_names: Arc<sqlx_core::HashMap<UStr, usize>>, columns:
//!   Vec<AnyColumn>, values: Vec<AnyValue> }`, `AnyColumn { ordinal, name: UStr, type_info }`,
//!   `AnyTypeInfo { kind: AnyTypeInfoKind::Null }`, `AnyValue { kind: AnyValueKind }` (`BigInt`,
//!   `Double`, `Text(Arc<String>)`, `Blob(Arc<Vec<u8>>)`, `Null`), `AnyQueryResult {
//!   rows_affected, last_insert_id }`, and `sqlx_core::ext::ustr::UStr`;
//! - `sqlx_core::Either` (the item type of `Executor::fetch_many`) is used in `executor.rs`.
//!
//! # Upgrading sqlx
//!
//! `sqlx` requires its own `sqlx-core` exactly, so the pin also holds `sqlx` at 0.9.0. Bump `sqlx`
//! and the `sqlx-core` pin together (they must be the same release), then: read the
//! diff of `sqlx-core/src/any/{row,column,value,arguments,type_info,query_result}.rs` and
//! `src/executor.rs` (the `Executor` trait); fix what no longer compiles here and in
//! `executor.rs`; check that `AnyRow::try_get` still finds columns through `column_names` and
//! decodes `BigInt`/`Double`/`Text`/`Blob`/`Null` as before (sqlx's SQLite driver maps values by
//! storage class, see [`from_sql`]). The tests that fail when this drifts: the ones of this
//! module (every value kind both ways, `$N` arguments, row limits, batches), the writer's tests in
//! `writer/tests.rs`, and the whole workspace suite, whose repositories all run on SQLite through
//! here.

use super::conn::error;
use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};
use sqlx::any::{AnyArguments, AnyQueryResult, AnyRow, AnyTypeInfo, AnyTypeInfoKind, AnyValue};
use sqlx::{Any, Execute, SqlStr};
use sqlx_core::Either;
use sqlx_core::any::{AnyColumn, AnyValueKind};
use sqlx_core::ext::ustr::UStr;
use std::sync::Arc;

/// What one statement gave: its rows, then its result.
pub(crate) type Results = Vec<Either<AnyQueryResult, AnyRow>>;

/// A query taken apart: its text, its arguments, and whether to cache its prepared statement.
pub(crate) struct Statement {
    sql: SqlStr,
    args: Option<AnyArguments>,
    persistent: bool,
}

impl Statement {
    /// Takes `query` apart (as sqlx's own executors do before they send it).
    pub(crate) fn of<'q, E: Execute<'q, Any>>(mut query: E) -> Result<Self, sqlx::Error> {
        let args = query.take_arguments().map_err(sqlx::Error::Encode)?;
        let persistent = query.persistent();
        Ok(Self { sql: query.sql(), args, persistent })
    }
}

/// Runs one query (or, without arguments, a batch of statements) and collects what it gives, at
/// most `limit` rows.
pub(crate) fn run(conn: &Connection, statement: Statement, limit: Option<usize>) -> Result<Results, sqlx::Error> {
    let Statement { sql, args, persistent } = statement;
    let sql = sql.as_str();
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

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    fn conn() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::conn::open(&dir.path().join("x.db").display().to_string(), "FULL", false).unwrap();
        (dir, conn)
    }

    fn rows(results: Results) -> Vec<AnyRow> {
        results
            .into_iter()
            .filter_map(|r| match r {
                Either::Right(row) => Some(row),
                Either::Left(_) => None,
            })
            .collect()
    }

    #[test]
    fn every_bound_kind_comes_back_as_sqlx_decodes_it() {
        let (_dir, conn) = conn();
        let query = sqlx::query(
            "SELECT $1 AS b, $2 AS s, $3 AS i, $4 AS l, $5 AS r, $6 AS d, $7 AS t, $8 AS ts, $9 AS x, $10 AS z",
        )
        .bind(true)
        .bind(7i16)
        .bind(-8i32)
        .bind(1i64 << 40)
        .bind(1.5f32)
        .bind(-2.25f64)
        .bind(String::from("текст"))
        .bind("slice")
        .bind(vec![0u8, 255])
        .bind(None::<i64>);
        let row = rows(run(&conn, Statement::of(query).unwrap(), None).unwrap()).remove(0);
        // A boolean is stored as an integer and comes back as one, as from sqlx's SQLite driver.
        assert_eq!(row.try_get::<i64, _>("b").unwrap(), 1);
        assert_eq!(row.try_get::<i64, _>("s").unwrap(), 7);
        assert_eq!(row.try_get::<i64, _>("i").unwrap(), -8);
        assert_eq!(row.try_get::<i64, _>("l").unwrap(), 1 << 40);
        assert_eq!(row.try_get::<f64, _>("r").unwrap(), 1.5);
        assert_eq!(row.try_get::<f64, _>("d").unwrap(), -2.25);
        assert_eq!(row.try_get::<String, _>("t").unwrap(), "текст");
        assert_eq!(row.try_get::<String, _>(7).unwrap(), "slice");
        assert_eq!(row.try_get::<Vec<u8>, _>("x").unwrap(), vec![0, 255]);
        assert_eq!(row.try_get::<Option<i64>, _>("z").unwrap(), None);
        assert_eq!(row.columns().len(), 10);
    }

    #[test]
    fn numbered_arguments_bind_by_number_and_missing_ones_are_refused() {
        let (_dir, conn) = conn();
        let query = sqlx::query("SELECT $2 || $1 AS v, $2 AS w").bind("a").bind("b");
        let row = rows(run(&conn, Statement::of(query).unwrap(), None).unwrap()).remove(0);
        assert_eq!(row.try_get::<String, _>("v").unwrap(), "ba");
        assert_eq!(row.try_get::<String, _>("w").unwrap(), "b");
        let missing = run(&conn, Statement::of(sqlx::query("SELECT $2").bind(1i64)).unwrap(), None);
        assert!(matches!(missing, Err(sqlx::Error::InvalidArgument(_))));
    }

    #[test]
    fn rows_stop_at_the_limit_and_writes_report_rows_affected() {
        let (_dir, conn) = conn();
        // Several statements without arguments run as a batch, later ones using earlier ones' tables.
        let batch = run(
            &conn,
            Statement::of(sqlx::raw_sql("CREATE TABLE t (n BIGINT); INSERT INTO t VALUES (1), (2), (3);")).unwrap(),
            None,
        )
        .unwrap();
        assert!(matches!(batch.as_slice(), [Either::Left(_)]));
        let all = run(&conn, Statement::of(sqlx::query("SELECT n FROM t ORDER BY n")).unwrap(), None).unwrap();
        assert_eq!(rows(all).len(), 3);
        let one = run(&conn, Statement::of(sqlx::query("SELECT n FROM t ORDER BY n")).unwrap(), Some(1)).unwrap();
        let one = rows(one);
        assert_eq!((one.len(), one[0].try_get::<i64, _>("n").unwrap()), (1, 1));
        let update =
            run(&conn, Statement::of(sqlx::query("UPDATE t SET n = n + 1 WHERE n > $1").bind(1i64)).unwrap(), None)
                .unwrap();
        let Some(Either::Left(result)) = update.last() else { panic!("no result") };
        assert_eq!(result.rows_affected(), 2);
    }
}
