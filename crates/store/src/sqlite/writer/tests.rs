//! The group-commit state machine on a real SQLite file: batches, rollbacks inside a batch,
//! aborts by SQLite, failing and cancelled writers, and a lock held by another process.

use super::*;
use crate::sqlite::Readers;
use sqlx::Row;
use sqlx_core::Either;

/// A writer on a fresh database with table `t (k TEXT PRIMARY KEY, n)`, and read connections.
struct Fixture {
    dir: tempfile::TempDir,
    writer: Arc<Writer>,
    readers: Readers,
}

/// `max_batch_age`: long, so that a test decides where a batch ends; [`MAX_BATCH_AGE`] otherwise.
fn fixture(max_batch_age: Duration) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db").display().to_string();
    let conn = conn::open(&path, "FULL", false).unwrap();
    conn.execute_batch(
        "CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT NOT NULL);
         CREATE TRIGGER t_no_negative BEFORE INSERT ON t WHEN NEW.n < 0 BEGIN SELECT RAISE(ROLLBACK, 'negative'); END;",
    )
    .unwrap();
    let mut writer = Writer::new(conn, Duration::from_secs(5), "test".into());
    writer.max_batch_age = max_batch_age;
    Fixture { readers: Readers::new(path, "FULL", 4), dir, writer: Arc::new(writer) }
}

/// A fixture whose batches end where the test decides (not by age), and the first writer of a
/// batch: writers queued behind it join its batch.
async fn holding_the_writer() -> (Fixture, Savepoint) {
    let f = fixture(Duration::from_secs(60));
    let first = Savepoint::begin(&f.writer).await.unwrap();
    (f, first)
}

impl Fixture {
    /// The `n` of every committed row, as another connection sees them.
    fn stored(&self) -> Vec<i64> {
        self.readers
            .with(|c| {
                let mut stmt = c.prepare("SELECT n FROM t ORDER BY n").map_err(conn::error)?;
                let rows = stmt.query_map([], |r| r.get(0)).map_err(conn::error)?;
                rows.collect::<Result<Vec<i64>, _>>().map_err(conn::error)
            })
            .unwrap()
    }

    /// Spawns a writer that waits for its turn, then runs `body` on its savepoint; returns once
    /// it is queued, so writers spawned one after another take their turns in that order.
    async fn queue<T, F>(&self, body: impl FnOnce(Savepoint) -> F + Send + 'static) -> tokio::task::JoinHandle<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = T> + Send + 'static,
    {
        let queued = self.writer.queued.load(Ordering::SeqCst);
        let writer = self.writer.clone();
        let task = tokio::spawn(async move { body(Savepoint::begin(&writer).await.unwrap()).await });
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.writer.queued.load(Ordering::SeqCst) <= queued {
            assert!(Instant::now() < deadline, "the writer never queued");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        task
    }

    /// [`Fixture::queue`]s a writer that inserts row `k{n}` and commits.
    async fn queue_insert(&self, n: i64) -> tokio::task::JoinHandle<Result<(), StoreError>> {
        self.queue(move |mut sp| async move {
            insert(&mut sp, n).unwrap();
            sp.commit().await
        })
        .await
    }

    /// [`Fixture::queue`]s one writer for each `n` of `ns`, in order.
    async fn queue_each<T, F>(
        &self,
        ns: std::ops::Range<i64>,
        body: impl FnOnce(Savepoint, i64) -> F + Clone + Send + 'static,
    ) -> Vec<tokio::task::JoinHandle<T>>
    where
        T: Send + 'static,
        F: std::future::Future<Output = T> + Send + 'static,
    {
        let mut tasks = Vec::new();
        for n in ns {
            let body = body.clone();
            tasks.push(self.queue(move |sp| body(sp, n)).await);
        }
        tasks
    }
}

/// Runs one statement in `sp` with `n` bound to `$1` and `k{n}` to `$2`.
fn run(sp: &mut Savepoint, sql: &'static str, n: i64) -> Result<Results, sqlx::Error> {
    sp.run(Statement::of(sqlx::query(sql).bind(n).bind(format!("k{n}")))?, None)
}

/// Inserts row `k{n}`.
fn insert(sp: &mut Savepoint, n: i64) -> Result<(), sqlx::Error> {
    run(sp, "INSERT INTO t (k, n) VALUES ($2, $1)", n).map(drop)
}

/// Inserts row `k{n}` and returns what its `RETURNING` clause gave.
fn insert_returning(sp: &mut Savepoint, n: i64) -> i64 {
    let results = run(sp, "INSERT INTO t (k, n) VALUES ($2, $1) RETURNING n * 10 + 1", n).unwrap();
    match &results[0] {
        Either::Right(row) => row.try_get(0).unwrap(),
        Either::Left(_) => panic!("no row returned"),
    }
}

/// Writes row `k{n}` in a transaction of its own.
async fn write_alone(writer: &Arc<Writer>, n: i64) {
    let mut sp = Savepoint::begin(writer).await.unwrap();
    insert(&mut sp, n).unwrap();
    sp.commit().await.unwrap();
}

/// Spawns `count` writers at once; writer `n` inserts row `k{n}`, then `then` finishes it.
fn spawn_writers<F>(
    f: &Arc<Fixture>,
    count: i64,
    then: impl FnOnce(Arc<Fixture>, Savepoint, i64) -> F + Clone + Send + 'static,
) -> Vec<tokio::task::JoinHandle<()>>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    (0..count)
        .map(|n| {
            let (f, then) = (f.clone(), then.clone());
            tokio::spawn(async move {
                let mut sp = Savepoint::begin(&f.writer).await.unwrap();
                insert(&mut sp, n).unwrap();
                then(f, sp, n).await
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_queued_behind_each_other_share_one_batch_and_one_commit_and_each_gets_its_own_result() {
    let (f, mut first) = holding_the_writer().await;
    let tasks = f
        .queue_each(1..8, |mut sp, n| async move {
            let got = insert_returning(&mut sp, n);
            sp.commit().await.unwrap();
            got
        })
        .await;
    assert_eq!(insert_returning(&mut first, 0), 1);
    // Returns once the last writer queued has committed the batch.
    first.commit().await.unwrap();
    for (n, task) in (1..).zip(tasks) {
        assert_eq!(task.await.unwrap(), n * 10 + 1);
    }
    assert_eq!(f.writer.stats(), (1, 8), "one COMMIT for the eight writers");
    assert_eq!(f.stored(), (0..8).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_rolled_back_inside_a_batch_takes_only_its_own_rows() {
    let (f, mut first) = holding_the_writer().await;
    // Writer 1 and writer 4 (the last of the batch) insert, then are dropped without commit.
    let tasks = f
        .queue_each(1..5, |mut sp, n| async move {
            insert(&mut sp, n).unwrap();
            insert(&mut sp, n + 100).unwrap();
            if n % 3 == 1 { drop(sp) } else { sp.commit().await.unwrap() }
        })
        .await;
    insert(&mut first, 0).unwrap();
    first.commit().await.unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(f.stored(), vec![0, 2, 3, 102, 103]);
    assert_eq!(f.writer.stats(), (1, 3), "one COMMIT for the three writers that committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_that_makes_sqlite_roll_back_fails_every_writer_of_its_batch_and_runs_nothing_after() {
    // `OR ROLLBACK` on a conflict with the first writer's row, and a trigger's `RAISE(ROLLBACK)`:
    // either way SQLite ends the whole transaction, savepoints and all.
    for abort in ["INSERT OR ROLLBACK INTO t (k, n) VALUES ('k0', $1)", "INSERT INTO t (k, n) VALUES ('neg', -$1)"] {
        let (f, mut first) = holding_the_writer().await;
        let aborting = f
            .queue(move |mut sp| {
                async move {
                    insert(&mut sp, 1).unwrap();
                    let aborted = run(&mut sp, abort, 1).map(drop);
                    // A caller that goes on regardless runs nothing: no autocommit of its own.
                    let after = insert(&mut sp, 2);
                    (aborted, after, sp.commit().await)
                }
            })
            .await;
        let next = f.queue_insert(3).await;
        insert(&mut first, 0).unwrap();
        let first = first.commit().await;
        assert!(matches!(first, Err(StoreError::Unavailable(_))), "{abort}: first writer: {first:?}");
        let (aborted, after, commit) = aborting.await.unwrap();
        assert!(aborted.is_err() && after.is_err() && commit.is_err(), "{abort}: {aborted:?} {after:?} {commit:?}");
        // The writer after the aborted batch begins a fresh one.
        next.await.unwrap().unwrap();
        assert_eq!(f.stored(), vec![3], "{abort}");
        assert_eq!(f.writer.stats(), (1, 1), "{abort}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_writer_does_not_fail_the_others_of_its_batch() {
    let (f, mut first) = holding_the_writer().await;
    let conflict = |n| {
        move |mut sp: Savepoint| {
            async move {
                insert(&mut sp, n).unwrap();
                // Row `k0` is the first writer's, in the same open transaction.
                let failed = run(&mut sp, "INSERT INTO t (k, n) VALUES ('k0', $1)", n).map(drop);
                // Writer 1 returns early with the error; writer 2 commits what it did before.
                if n == 1 {
                    drop(sp);
                    (failed, Ok(()))
                } else {
                    (failed, sp.commit().await)
                }
            }
        }
    };
    let one = f.queue(conflict(1)).await;
    let two = f.queue(conflict(2)).await;
    let three = f.queue_insert(3).await;
    insert(&mut first, 0).unwrap();
    first.commit().await.unwrap();
    for task in [one, two] {
        let (failed, commit) = task.await.unwrap();
        let failed = StoreError::from(failed.unwrap_err());
        assert!(matches!(failed, StoreError::Conflict(_)), "{failed:?}");
        commit.unwrap();
    }
    three.await.unwrap().unwrap();
    assert_eq!(f.stored(), vec![0, 2, 3]);
    assert_eq!(f.writer.stats(), (1, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_commits_and_each_sees_its_write_durable_on_return() {
    let f = Arc::new(fixture(MAX_BATCH_AGE));
    let tasks = spawn_writers(&f, 200, |f, sp, n| async move {
        sp.commit().await.unwrap();
        // Committed means visible to every other connection at once.
        let stored: i64 = f
            .readers
            .with(|c| c.query_row("SELECT n FROM t WHERE k = ?1", [format!("k{n}")], |r| r.get(0)).map_err(conn::error))
            .unwrap();
        assert_eq!(stored, n);
    });
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(f.stored().len(), 200);
    let (commits, writes) = f.writer.stats();
    assert!(writes == 200 && commits < writes, "{commits} commits for {writes} writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_or_dropped_writers_among_many_undo_only_their_own_work() {
    let f = Arc::new(fixture(MAX_BATCH_AGE));
    let tasks = spawn_writers(&f, 60, |_, mut sp, n| async move {
        match n % 3 {
            // Dropped without commit.
            0 => drop(sp),
            // A second statement fails: the caller returns early with the error.
            1 => assert!(insert(&mut sp, n).is_err()),
            _ => sp.commit().await.unwrap(),
        }
    });
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(f.stored(), (0..60).filter(|n| n % 3 == 2).collect::<Vec<_>>());
    // The writer is free again: a later write commits on its own.
    write_alone(&f.writer, 100).await;
    assert_eq!(f.stored().len(), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_cancelled_at_any_point_leave_the_writer_usable_and_lose_no_confirmed_write() {
    let f = Arc::new(fixture(MAX_BATCH_AGE));
    let confirmed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks = spawn_writers(&f, 120, {
        let confirmed = confirmed.clone();
        move |_, sp, n| async move {
            tokio::task::yield_now().await;
            sp.commit().await.unwrap();
            confirmed.lock().unwrap().push(n);
        }
    });
    // Cancel every third task wherever it is: queued, mid-statement, or waiting for COMMIT.
    for (n, t) in tasks.iter().enumerate() {
        if n % 3 == 0 {
            t.abort();
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    write_alone(&f.writer, 1000).await;
    let stored = f.stored();
    for n in confirmed.lock().unwrap().iter() {
        assert!(stored.contains(n), "confirmed write {n} lost");
    }
    assert!(stored.contains(&1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_waits_for_a_lock_held_by_another_process_instead_of_failing() {
    let f = fixture(MAX_BATCH_AGE);
    // Another process (a CLI command) holds the write lock for a while.
    let other = rusqlite::Connection::open(f.dir.path().join("x.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE; INSERT INTO t (k, n) VALUES ('other', 7)").unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        other.execute_batch("COMMIT").unwrap();
    });
    let started = Instant::now();
    let mut sp = Savepoint::begin(&f.writer).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250), "began before the lock was free");
    insert(&mut sp, 1).unwrap();
    sp.commit().await.unwrap();
    release.join().unwrap();
    assert_eq!(f.stored(), vec![1, 7]);
    // Later writers begin at once again.
    let started = Instant::now();
    write_alone(&f.writer, 8).await;
    assert!(started.elapsed() < Duration::from_millis(250));
    assert_eq!(f.stored(), vec![1, 7, 8]);
}
