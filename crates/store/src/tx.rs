//! Write transactions: on SQLite a savepoint in the writer's group-commit batch
//! (`sqlite/writer.rs`), on PostgreSQL, which has row locks and its own group commit, a plain
//! pooled transaction.

use crate::StoreError;
use crate::sqlite::Savepoint;
use crate::sqlite::Writer;
use sqlx::{Any, AnyPool};
use std::sync::Arc;

/// A write transaction: on SQLite a savepoint in the writer's batch, on PostgreSQL a pooled
/// transaction. Use `&mut tx` as the executor; dropping it without [`Tx::commit`] rolls it back.
///
/// On SQLite, holding one blocks every other writer of the process, and [`Tx::commit`] returns
/// once the batch holding the write is durable, so a caller that sees `Ok` has a durable write.
pub struct Tx {
    inner: Inner,
}

enum Inner {
    Pooled(sqlx::Transaction<'static, Any>),
    Batched(Savepoint),
}

/// What a [`Tx`] runs its statements on (for its `Executor`).
pub(crate) enum TxConn<'a> {
    Pooled(&'a mut sqlx::AnyConnection),
    Batched(&'a mut Savepoint),
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.inner {
            Inner::Pooled(_) => "Tx(pooled)",
            Inner::Batched(_) => "Tx(batched)",
        })
    }
}

impl Tx {
    pub(crate) async fn begin(pool: Option<&AnyPool>, writer: Option<&Arc<Writer>>) -> Result<Self, StoreError> {
        let inner = match writer {
            Some(writer) => Inner::Batched(Savepoint::begin(writer).await?),
            None => Inner::Pooled(pool.expect("a Db without a writer has a pool").begin().await?),
        };
        Ok(Self { inner })
    }

    /// Commits. On SQLite it returns once the batch holding this write is durable.
    pub async fn commit(self) -> Result<(), StoreError> {
        match self.inner {
            Inner::Pooled(tx) => Ok(tx.commit().await?),
            Inner::Batched(savepoint) => savepoint.commit().await,
        }
    }

    /// Rolls back (as dropping does, but explicit at the call site).
    pub async fn rollback(self) -> Result<(), StoreError> {
        if let Inner::Pooled(tx) = self.inner {
            tx.rollback().await?;
        }
        Ok(())
    }

    pub(crate) fn conn(&mut self) -> TxConn<'_> {
        match &mut self.inner {
            Inner::Pooled(tx) => TxConn::Pooled(&mut *tx),
            Inner::Batched(savepoint) => TxConn::Batched(savepoint),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::StoreError;
    use crate::migrate::tests::sqlite;

    #[tokio::test]
    async fn a_sqlite_tx_runs_its_statements_through_the_writer_and_keeps_only_what_it_commits() {
        let (_dir, db) = sqlite().await;
        let insert = |k: &'static str| sqlx::query("INSERT INTO t (k, n) VALUES ($1, 1)").bind(k);
        let mut tx = db.begin().await.unwrap();
        insert("a").execute(&mut tx).await.unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t").fetch_one(&mut tx).await.unwrap();
        assert_eq!(seen, 1, "a Tx sees its own writes");
        let err = StoreError::from(insert("a").execute(&mut tx).await.unwrap_err());
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        tx.commit().await.unwrap();
        let mut tx = db.begin().await.unwrap();
        insert("b").execute(&mut tx).await.unwrap();
        tx.rollback().await.unwrap();
        let kept: Vec<String> = sqlx::query_scalar("SELECT k FROM t").fetch_all(db.pool()).await.unwrap();
        assert_eq!(kept, vec!["a".to_string()]);
    }
}
