//! The one SQLite writer of a database, with group commit.
//!
//! SQLite has one write lock per database file. With a pool of connections, writers used to queue
//! on it through SQLite's busy handler, which polls with sleeps of 1 to 100 ms, and every commit
//! paid its own `fsync` under the lock: the lock, not the CPU, bounded the flows (BENCHMARKS.md).
//!
//! Here every write of a process goes through one writer connection, handed out in FIFO order by
//! an async mutex. Each write transaction is a [`Savepoint`] inside a shared SQLite transaction
//! (the [`Batch`]); when a writer commits and nobody is queued behind it (or the batch is full or
//! old), the whole batch is committed at once — one `fsync` for many requests — and every writer
//! in it is told the outcome. [`Savepoint::commit`] returns only after the batch's `COMMIT`, so a
//! caller that sees `Ok` has a durable write. A writer that fails or is dropped is rolled back to
//! its savepoint and leaves the others' work alone; when SQLite itself ends the transaction
//! (`OR ROLLBACK`, disk full, I/O error) the batch is aborted and all its writers fail. Statements
//! run in the calling thread (`values.rs`), `BEGIN IMMEDIATE` too unless another process holds the
//! lock; `COMMIT`, which waits for the disk, runs on the blocking pool.
//!
//! The state of the open transaction is `Batch::open` and [`Last`], the fate of the savepoint
//! `w` of the last writer; `Savepoint::begin` and `Batch::flush` pick the control statements from
//! them. Tests: `writer/tests.rs`.

use super::conn::{self, error};
use super::values::{self, Results, Statement};
use crate::StoreError;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};

mod pause;
#[cfg(test)]
mod tests;

/// Most writers committed by one `COMMIT`.
const MAX_BATCH: usize = 64;
/// Oldest a batch may get before it is committed even with writers queued behind it.
const MAX_BATCH_AGE: Duration = Duration::from_millis(4);
/// How long a committed writer waits for the batch's `COMMIT` before it commits the batch itself
/// (the writer expected to do it may have been cancelled while it queued).
const SETTLE_AFTER: Duration = Duration::from_millis(15);

type Outcome = Result<(), String>;

/// The one writer connection of a SQLite database and the state of its open batch.
pub(crate) struct Writer {
    lock: Arc<Mutex<Batch>>,
    /// Writers waiting for the lock: a committer that sees none commits the batch at once.
    queued: AtomicUsize,
    acquire_timeout: Duration,
    /// [`MAX_BATCH_AGE`]; a field so that tests can build a batch without racing the clock.
    max_batch_age: Duration,
    /// `COMMIT`s run, and writers committed by them (their ratio is the mean batch size).
    commits: AtomicUsize,
    committed: AtomicUsize,
    /// The database's name in metrics (its file's stem: `diary`, `max`).
    label: String,
}

/// The savepoint `w` of the last writer in the open transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    /// None outstanding.
    Gone,
    /// Its writer committed: released by the next writer's `begin` or by `COMMIT` (one round
    /// trip fewer per writer than releasing at once).
    Kept,
    /// Its writer failed, was dropped, or is still running: to be rolled back.
    Abandoned,
}

/// The writer connection and its open transaction, behind the writer's lock.
struct Batch {
    conn: rusqlite::Connection,
    /// A SQLite transaction is open on `conn`.
    open: bool,
    last: Last,
    began: Instant,
    /// Writers whose work is in the open transaction, waiting for its `COMMIT`.
    pending: Vec<oneshot::Sender<Outcome>>,
}

impl Batch {
    /// Commits the open transaction (after undoing an abandoned savepoint) and tells every
    /// pending writer the outcome. Blocks on the disk: runs on the blocking pool, where no
    /// caller's cancellation can interrupt it between `COMMIT` and the notifications.
    fn flush(&mut self, writer: &Writer) {
        if !self.open {
            // Nothing open: a writer still pending lost its work to an abort.
            for p in self.pending.drain(..) {
                let _ = p.send(Err("the SQLite batch was rolled back".into()));
            }
            return;
        }
        let sql = if self.last == Last::Abandoned { "ROLLBACK TO w; RELEASE w; COMMIT" } else { "COMMIT" };
        let outcome = match control(&self.conn, sql) {
            Ok(()) => Ok(()),
            Err(e) => {
                // SQLite may have rolled back already (I/O error, disk full); make sure.
                let _ = self.conn.execute_batch("ROLLBACK");
                tracing::error!(error = %e, writers = self.pending.len(), "SQLite batch commit failed");
                Err(e.to_string())
            }
        };
        if outcome.is_ok() {
            writer.commits.fetch_add(1, Ordering::Relaxed);
            writer.committed.fetch_add(self.pending.len(), Ordering::Relaxed);
            metrics::counter!("edulink_sqlite_commits_total", "db" => writer.label.clone()).increment(1);
            metrics::counter!("edulink_sqlite_committed_writes_total", "db" => writer.label.clone())
                .increment(self.pending.len() as u64);
        }
        self.open = false;
        self.last = Last::Gone;
        for p in self.pending.drain(..) {
            let _ = p.send(outcome.clone());
        }
    }

    /// Ends a transaction that cannot go on: rolls it back and fails every pending writer.
    fn abort(&mut self, why: &str) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.open = false;
        self.last = Last::Gone;
        for p in self.pending.drain(..) {
            let _ = p.send(Err(why.to_string()));
        }
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("queued", &self.queued.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

impl Writer {
    pub(crate) fn new(conn: rusqlite::Connection, acquire_timeout: Duration, label: String) -> Self {
        let batch = Batch { conn, open: false, last: Last::Gone, began: Instant::now(), pending: Vec::new() };
        Self {
            lock: Arc::new(Mutex::new(batch)),
            queued: AtomicUsize::new(0),
            acquire_timeout,
            max_batch_age: MAX_BATCH_AGE,
            commits: AtomicUsize::new(0),
            committed: AtomicUsize::new(0),
            label,
        }
    }

    async fn acquire(&self) -> Result<OwnedMutexGuard<Batch>, StoreError> {
        struct Queued<'a>(&'a AtomicUsize);
        impl Drop for Queued<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.queued.fetch_add(1, Ordering::SeqCst);
        let _queued = Queued(&self.queued);
        // A timeout turns a writer that waits on itself (a second `begin` while holding a `Tx`)
        // into an error instead of a hang.
        tokio::time::timeout(self.acquire_timeout, self.lock.clone().lock_owned())
            .await
            .map_err(|_| StoreError::Unavailable("timed out waiting for the SQLite writer".into()))
    }

    /// Commits whatever the open batch holds (used at shutdown and after an abandoned writer).
    pub(crate) async fn settle(self: &Arc<Self>) {
        let batch = self.lock.clone().lock_owned().await;
        let _ = flush_blocking(self.clone(), batch).await;
    }

    /// Writers waiting for the writer connection now.
    pub(crate) fn waiting(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// `(commits, writes committed)` since start.
    pub(crate) fn stats(&self) -> (usize, usize) {
        (self.commits.load(Ordering::Relaxed), self.committed.load(Ordering::Relaxed))
    }

    fn settle_later(self: &Arc<Self>) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let writer = self.clone();
            rt.spawn(async move { writer.settle().await });
        }
    }
}

/// One write transaction on SQLite: the savepoint `w` in the writer's batch, holding the writer
/// until it commits or is dropped. Dropping it without [`Savepoint::commit`] rolls it back.
pub(crate) struct Savepoint {
    /// `None` only once committed.
    batch: Option<OwnedMutexGuard<Batch>>,
    writer: Arc<Writer>,
}

impl Savepoint {
    /// Waits for the writer (FIFO), then opens this writer's savepoint in the batch, beginning
    /// the batch's SQLite transaction when none is open.
    pub(crate) async fn begin(writer: &Arc<Writer>) -> Result<Self, StoreError> {
        let mut batch = writer.acquire().await?;
        let was_open = batch.open;
        let sql = match (batch.open, batch.last) {
            (false, _) => "BEGIN IMMEDIATE; SAVEPOINT w",
            (true, Last::Gone) => "SAVEPOINT w",
            (true, Last::Kept) => "RELEASE w; SAVEPOINT w",
            (true, Last::Abandoned) => "ROLLBACK TO w; RELEASE w; SAVEPOINT w",
        };
        // Marked before running and kept while the writer runs: should the writer be dropped,
        // the next writer (or the settle task) rolls back to the savepoint.
        batch.open = true;
        batch.last = Last::Abandoned;
        let (mut batch, started) = if was_open {
            let started = control(&batch.conn, sql);
            (batch, started)
        } else {
            // This process is the only writer, so BEGIN IMMEDIATE finds the lock free and takes
            // microseconds: run it here, without waiting. Only when another process holds the
            // lock (a CLI command) wait for it, up to busy_timeout, on the blocking pool.
            match begin_now(&batch.conn, sql) {
                Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                    tokio::task::spawn_blocking(move || {
                        let started = control(&batch.conn, sql);
                        (batch, started)
                    })
                    .await
                    .map_err(|_| StoreError::Unavailable("the SQLite writer task failed".into()))?
                }
                started => (batch, started),
            }
        };
        match started {
            Ok(()) => {
                if !was_open {
                    batch.began = Instant::now();
                }
                Ok(Self { batch: Some(batch), writer: writer.clone() })
            }
            Err(e) if was_open => {
                batch.abort("the SQLite batch could not go on");
                Err(error(e).into())
            }
            Err(e) => {
                // BEGIN failed (another process held the lock past busy_timeout): nothing is open.
                batch.open = false;
                batch.last = Last::Gone;
                Err(error(e).into())
            }
        }
    }

    /// Runs one statement on the writer connection, inside this savepoint.
    pub(crate) fn run(&mut self, statement: Statement, limit: Option<usize>) -> Result<Results, sqlx::Error> {
        let batch = self.batch.as_mut().expect("a live savepoint holds the writer");
        if !batch.open {
            return Err(sqlx::Error::Io(std::io::Error::other("this write transaction was rolled back")));
        }
        let results = values::run(&batch.conn, statement, limit);
        if batch.conn.is_autocommit() {
            // SQLite rolled the whole transaction back itself (disk full, I/O error): what this
            // batch held is gone, and later statements must not autocommit on their own.
            batch.abort("SQLite rolled the batch back");
            return Err(sqlx::Error::Io(std::io::Error::other("SQLite rolled the write transaction back")));
        }
        results
    }

    /// Commits: returns once the batch holding this write is durable.
    pub(crate) async fn commit(mut self) -> Result<(), StoreError> {
        let mut batch = self.batch.take().expect("a live savepoint holds the writer");
        if !batch.open {
            // SQLite rolled this writer's batch back under it (see `run`): nothing of its work is
            // left. Waiting would join the next batch and hear that batch's outcome instead.
            return Err(StoreError::Unavailable("commit failed: SQLite rolled the batch back".into()));
        }
        batch.last = Last::Kept;
        let (done, outcome) = oneshot::channel();
        batch.pending.push(done);
        let writer = self.writer.clone();
        if writer.queued.load(Ordering::SeqCst) == 0
            || batch.pending.len() >= MAX_BATCH
            || batch.began.elapsed() >= writer.max_batch_age
        {
            // A blocking task runs to its end even when nobody awaits it: a caller cancelled
            // mid-commit cannot leave the batch half-done.
            flush_blocking(writer.clone(), batch);
        } else {
            // The writer queued behind carries the batch on and commits it.
            drop(batch);
        }
        wait_for_commit(writer, outcome).await
    }
}

impl Drop for Savepoint {
    fn drop(&mut self) {
        if let Some(batch) = self.batch.take() {
            // Not committed: `last` is still `Abandoned`, so the next writer, or the settle task,
            // rolls back to the savepoint.
            drop(batch);
            // With a writer queued, it cleans up and carries the batch on; otherwise do it now.
            if self.writer.queued.load(Ordering::SeqCst) == 0 {
                self.writer.settle_later();
            }
        }
    }
}

/// Waits for the `COMMIT` of the batch holding a writer's work. Should that take long (the writer
/// expected to commit was cancelled while it queued), commits the batch itself; if the caller is
/// cancelled meanwhile, leaves that to a settle task, so no batch stays open unattended.
async fn wait_for_commit(writer: Arc<Writer>, mut outcome: oneshot::Receiver<Outcome>) -> Result<(), StoreError> {
    struct Unattended(Option<Arc<Writer>>);
    impl Drop for Unattended {
        fn drop(&mut self) {
            if let Some(w) = self.0.take() {
                w.settle_later();
            }
        }
    }
    let mut guard = Unattended(Some(writer));
    loop {
        tokio::select! {
            result = &mut outcome => {
                guard.0 = None;
                return match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(StoreError::Unavailable(format!("commit failed: {e}"))),
                    Err(_) => Err(StoreError::Unavailable("the SQLite writer went away".into())),
                };
            }
            _ = tokio::time::sleep(SETTLE_AFTER) => {
                if let Some(w) = &guard.0 {
                    w.settle().await;
                }
            }
        }
    }
}

/// Runs transaction-control statements (`"RELEASE w; SAVEPOINT w"`) as cached prepared
/// statements: every write transaction runs two or three, and parsing them each time showed in
/// the profile.
fn control(conn: &rusqlite::Connection, sql: &str) -> rusqlite::Result<()> {
    for statement in sql.split("; ") {
        conn.prepare_cached(statement)?.execute([])?;
    }
    Ok(())
}

/// Runs `BEGIN IMMEDIATE …` without waiting for a lock held elsewhere (`SQLITE_BUSY` at once).
fn begin_now(conn: &rusqlite::Connection, sql: &str) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::ZERO)?;
    let started = control(conn, sql);
    conn.busy_timeout(conn::BUSY_TIMEOUT)?;
    started
}

/// Commits the batch on the blocking pool (`COMMIT` waits for the disk).
fn flush_blocking(writer: Arc<Writer>, mut batch: OwnedMutexGuard<Batch>) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || batch.flush(&writer))
}
