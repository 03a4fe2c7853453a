//! Pausing a database's writes: what a backup of several databases at one instant needs.

use super::{Batch, Writer, control};
use crate::StoreError;
use crate::sqlite::conn::error;
use std::sync::Arc;
use tokio::sync::OwnedMutexGuard;

/// The writer of a database, held with SQLite's write lock taken: no write of this process nor
/// of any other commits until it is dropped. Holds nothing of its own: dropping it rolls back an
/// empty transaction.
pub(crate) struct Paused {
    batch: Option<OwnedMutexGuard<Batch>>,
}

impl Writer {
    /// Waits for the writer (FIFO, at most the acquire timeout), commits the batch it holds, and
    /// takes SQLite's write lock with `BEGIN IMMEDIATE`, which waits (up to `busy_timeout`) for a
    /// write transaction of another process to end. Every write committed before this returns is
    /// in the file; none begins until the [`Paused`] is dropped.
    pub(crate) async fn pause(self: &Arc<Self>) -> Result<Paused, StoreError> {
        let batch = self.acquire().await?;
        // The open batch holds writes whose callers wait for its COMMIT: commit it first.
        let (batch, begun) = {
            let writer = self.clone();
            tokio::task::spawn_blocking(move || {
                let mut batch = batch;
                if batch.open || !batch.pending.is_empty() {
                    batch.flush(&writer);
                }
                let begun = control(&batch.conn, "BEGIN IMMEDIATE");
                (batch, begun)
            })
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer task failed".into()))?
        };
        begun.map_err(|e| StoreError::from(error(e)))?;
        Ok(Paused { batch: Some(batch) })
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Some(batch) = self.batch.take() {
            // Nothing was written: the rollback only releases the lock, and takes microseconds.
            let _ = batch.conn.execute_batch("ROLLBACK");
        }
    }
}
