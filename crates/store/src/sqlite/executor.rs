//! sqlx's `Executor` for the crate's three handles: [`DbReader`] (`db.pool()`), [`DbWriter`]
//! (`db.writer()`) and `&mut` [`Tx`]. On PostgreSQL each hands the query to sqlx; on SQLite each
//! runs it here, in the calling thread (`values.rs`), and hands sqlx the results as the stream or
//! future it expects. The trait is sqlx's public API; the `Either` items of `fetch_many` come from
//! `sqlx-core`, pinned with the `Any` internals `values.rs` explains.

use super::values::{self, Results, Statement};
use super::{Readers, Savepoint};
use crate::tx::TxConn;
use crate::{Db, StoreError, Tx};
use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use sqlx::any::{AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo};
use sqlx::{Any, Execute, Executor, SqlStr};
use sqlx_core::Either;

/// What `fetch_many` yields.
type Item = Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>;

/// The executor for reads (`db.pool()`), and for everything on PostgreSQL. On SQLite it refuses
/// writes: use [`Db::begin`] or [`Db::execute`].
#[derive(Debug, Clone, Copy)]
pub struct DbReader<'a>(pub(crate) &'a Db);

impl<'c> Executor<'c> for DbReader<'c> {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Item>
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
        sql: SqlStr,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        match &self.0.pool {
            Some(pool) => pool.prepare_with(sql, parameters),
            None => not_prepared(),
        }
    }
}

fn read<'q, E: Execute<'q, Any>>(readers: &Readers, query: E, limit: Option<usize>) -> Result<Results, sqlx::Error> {
    let statement = Statement::of(query)?;
    readers.with(|conn| values::run(conn, statement, limit))
}

/// The executor for one statement that writes, committed on its own (`db.writer()`): autocommit on
/// PostgreSQL, a write transaction of its own on SQLite (see [`Tx`]).
#[derive(Debug, Clone, Copy)]
pub struct DbWriter<'a>(pub(crate) &'a Db);

impl DbWriter<'_> {
    /// Runs the statement in a transaction of its own (SQLite).
    async fn alone<'q, E: 'q + Execute<'q, Any>>(self, query: E, limit: Option<usize>) -> Result<Results, sqlx::Error> {
        let writer = self.0.writer.as_ref().expect("a SQLite Db has a writer");
        let mut savepoint = Savepoint::begin(writer).await.map_err(StoreError::into_sqlx)?;
        let results = savepoint.run(Statement::of(query)?, limit)?;
        savepoint.commit().await.map_err(StoreError::into_sqlx)?;
        Ok(results)
    }
}

impl<'c> Executor<'c> for DbWriter<'c> {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Item>
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
        sql: SqlStr,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        DbReader(self.0).prepare_with(sql, parameters)
    }
}

impl<'c> Executor<'c> for &'c mut Tx {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Item>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match self.conn() {
            TxConn::Pooled(conn) => conn.fetch_many(query),
            TxConn::Batched(savepoint) => results_stream(Statement::of(query).and_then(|s| savepoint.run(s, None))),
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match self.conn() {
            TxConn::Pooled(conn) => conn.fetch_optional(query),
            TxConn::Batched(savepoint) => {
                let first = first_row(Statement::of(query).and_then(|s| savepoint.run(s, Some(1))));
                Box::pin(async move { first })
            }
        }
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        match self.conn() {
            TxConn::Pooled(conn) => conn.prepare_with(sql, parameters),
            TxConn::Batched(_) => not_prepared(),
        }
    }
}

fn not_prepared<'e>() -> BoxFuture<'e, Result<AnyStatement, sqlx::Error>> {
    Box::pin(async { Err(sqlx::Error::Protocol("statements are not prepared apart on SQLite".into())) })
}

/// The results of a statement (still running, or in hand), as the stream sqlx expects.
enum Pending<'e> {
    Waiting(BoxFuture<'e, Result<Results, sqlx::Error>>),
    Ready(std::vec::IntoIter<Either<AnyQueryResult, AnyRow>>),
    Done,
}

impl futures_core::Stream for Pending<'_> {
    type Item = Item;

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
fn results_stream<'e>(results: Result<Results, sqlx::Error>) -> BoxStream<'e, Item> {
    Box::pin(Pending::Waiting(Box::pin(std::future::ready(results))))
}

fn first_row(results: Result<Results, sqlx::Error>) -> Result<Option<AnyRow>, sqlx::Error> {
    Ok(results?.into_iter().find_map(|r| match r {
        Either::Right(row) => Some(row),
        Either::Left(_) => None,
    }))
}

#[cfg(test)]
mod tests {
    use crate::migrate::tests::sqlite;

    #[tokio::test]
    async fn the_sqlite_pool_refuses_writes_that_bypass_the_writer() {
        let (_dir, db) = sqlite().await;
        let err = sqlx::query("INSERT INTO t (k, n) VALUES ('x', 1)").execute(db.pool()).await.unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
    }
}
