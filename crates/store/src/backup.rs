//! Online backups of SQLite databases, several of them as they were at one instant.
//!
//! "One instant": the writers of every database are paused together — this process's writer
//! (`sqlite/writer/pause.rs`) and, through SQLite's write lock (`BEGIN IMMEDIATE`), the writer of
//! any other process, such as a running `edulink serve` — and while they are, a read transaction
//! begins on each database. In WAL mode a read transaction sees the database as it was when it
//! began, whatever is committed later (<https://sqlite.org/wal.html>, "Concurrency"), so writes go
//! on as soon as every snapshot is taken, and each copy is made from its snapshot with SQLite's
//! online backup API (<https://sqlite.org/backup.html>): every write committed before the pause is
//! in every copy, and no write committed after it is in any. Writes stop only for the pause —
//! committing an open batch, taking the locks, beginning the reads — not for the copy; while a
//! copy runs, checkpoints cannot pass its snapshot, so the WAL grows by what is written meanwhile.
//!
//! The copies are standalone files in rollback-journal mode (no `-wal` beside them); SQLite puts
//! them back in WAL mode when a server opens them.

use crate::sqlite::conn;
use crate::{Backend, Db, StoreError};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a backup could not be taken or a file not read.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The database is not SQLite.
    #[error("online backups are for SQLite; for PostgreSQL use pg_dump (docs/deployment.md, «Backups»)")]
    NotSqlite,
    /// The destination exists: a backup never overwrites a file.
    #[error("{0} already exists; a backup never overwrites a file")]
    Exists(PathBuf),
    /// Pausing the writers failed (another process held the write lock past its timeout).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// SQLite failed on a file.
    #[error("{0}: {1}")]
    File(PathBuf, String),
}

/// What [`backup_together`] measured.
#[derive(Debug, Clone, Copy)]
pub struct BackupTiming {
    /// How long writes were paused, all databases together.
    pub pause: Duration,
    /// How long the copies took after the pause (writes went on meanwhile).
    pub copy: Duration,
}

/// What a SQLite file holds, read without changing it ([`inspect_sqlite_file`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheck {
    /// The highest version in `schema_migrations`.
    pub schema_version: i64,
    /// The rows of `PRAGMA integrity_check`: `["ok"]` for a sound file.
    pub integrity: Vec<String>,
}

impl FileCheck {
    /// `PRAGMA integrity_check` found nothing wrong.
    pub fn sound(&self) -> bool {
        self.integrity == ["ok"]
    }
}

impl Db {
    /// SQLite: copies this database, as it is now, to the new file `dst` (see [`backup_together`]).
    pub async fn backup_to(&self, dst: &Path) -> Result<BackupTiming, BackupError> {
        backup_together(&[(self, dst)]).await
    }

    /// SQLite: the database file.
    fn sqlite_file(&self) -> Result<&str, BackupError> {
        match (&self.readers, self.backend) {
            (Some(r), Backend::Sqlite) => Ok(r.path()),
            _ => Err(BackupError::NotSqlite),
        }
    }
}

/// Copies each SQLite database of `items` to its new file, all as they were at one instant (see
/// the module docs): the writers of all of them, in this process and in others, are paused
/// together while the snapshots are taken. Pauses in the order given; callers that back up the
/// same databases must name them in the same order.
pub async fn backup_together(items: &[(&Db, &Path)]) -> Result<BackupTiming, BackupError> {
    let mut sources = Vec::new();
    for (db, dst) in items {
        if dst.exists() {
            return Err(BackupError::Exists(dst.to_path_buf()));
        }
        let path = db.sqlite_file()?;
        let conn = conn::open(path, "FULL", true).map_err(|e| BackupError::File(path.into(), e.to_string()))?;
        sources.push((conn, dst.to_path_buf()));
    }
    let started = Instant::now();
    {
        let mut paused = Vec::new();
        for (db, _) in items {
            paused.push(db.writer.as_ref().ok_or(BackupError::NotSqlite)?.pause().await?);
        }
        for ((conn, _), (db, _)) in sources.iter().zip(items) {
            // A read transaction begins at its first read: from then on it sees this instant.
            conn.execute_batch("BEGIN; SELECT COUNT(*) FROM sqlite_schema;")
                .map_err(|e| BackupError::File(db.sqlite_file().unwrap_or_default().into(), e.to_string()))?;
        }
        // Dropping `paused` lets the writes go on.
    }
    let pause = started.elapsed();
    let started = Instant::now();
    for (src, dst) in sources {
        let target = dst.clone();
        tokio::task::spawn_blocking(move || copy(&src, &target))
            .await
            .map_err(|_| BackupError::File(dst.clone(), "the copy task failed".into()))?
            .map_err(|e| {
                let _ = std::fs::remove_file(&dst);
                BackupError::File(dst.clone(), e.to_string())
            })?;
    }
    Ok(BackupTiming { pause, copy: started.elapsed() })
}

/// Copies the snapshot `src` holds to the new file `dst`, then leaves `dst` standalone.
fn copy(src: &Connection, dst: &Path) -> rusqlite::Result<()> {
    {
        let mut out = Connection::open(dst)?;
        let backup = rusqlite::backup::Backup::new(src, &mut out)?;
        // The snapshot cannot change under the copy: no pause between steps is needed.
        backup.run_to_completion(4096, Duration::ZERO, None)?;
    }
    src.execute_batch("COMMIT")?;
    // The copy carries the source's WAL mark; in rollback-journal mode it is one file.
    let out = Connection::open(dst)?;
    let _mode: String = out.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))?;
    Ok(())
}

/// Reads a SQLite file without writing to it: its schema version and `PRAGMA integrity_check`.
pub fn inspect_sqlite_file(path: &Path) -> Result<FileCheck, BackupError> {
    let fail = |e: rusqlite::Error| BackupError::File(path.to_path_buf(), e.to_string());
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(fail)?;
    let schema_version =
        conn.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0)).map_err(fail)?;
    let mut check = conn.prepare("PRAGMA integrity_check").map_err(fail)?;
    let integrity = check.query_map([], |r| r.get(0)).map_err(fail)?.collect::<Result<_, _>>().map_err(fail)?;
    Ok(FileCheck { schema_version, integrity })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PoolConfig;

    async fn open(dir: &Path, name: &str) -> Db {
        let url = format!("sqlite://{}", dir.join(name).display());
        let db = Db::connect(&url, &PoolConfig::default()).await.unwrap();
        db.migrate(crate::migrate::tests::M).await.unwrap();
        db
    }

    async fn keys(path: &Path) -> Vec<String> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let mut s = conn.prepare("SELECT k FROM t ORDER BY k").unwrap();
        s.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    /// The defect of issue 17: a copy of the database file alone, taken while the server runs,
    /// misses what is committed but still in the WAL (SQLite keeps committed pages in `-wal` until
    /// a checkpoint, <https://sqlite.org/wal.html>). The online backup copies the committed state.
    #[tokio::test]
    async fn a_backup_holds_what_a_plain_copy_of_the_file_misses() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path(), "a.db").await;
        db.execute(sqlx::query("INSERT INTO t (k, n) VALUES ('linked', 1)")).await.unwrap();
        std::fs::copy(dir.path().join("a.db"), dir.path().join("plain.db")).unwrap();
        let plain = Connection::open(dir.path().join("plain.db")).unwrap();
        let rows: i64 = plain.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap_or(0);
        assert_eq!(rows, 0, "the committed row is still in the WAL, not in the file");
        let copy = dir.path().join("backup.db");
        db.backup_to(&copy).await.unwrap();
        assert_eq!(keys(&copy).await, ["linked"]);
        assert!(!dir.path().join("backup.db-wal").exists(), "the copy is one file");
        let check = inspect_sqlite_file(&copy).unwrap();
        assert!(check.sound(), "{check:?}");
        assert_eq!(check.schema_version, 2);
        assert!(matches!(db.backup_to(&copy).await, Err(BackupError::Exists(_))), "never overwrites");
    }

    /// Two databases copied at one instant while writers run: each writer inserts key `k` into
    /// `a`, commits, then into `b`, so at every instant the keys of `b` are a subset of those of
    /// `a`. Copies of `a` and `b` taken at different instants break that (a `b` copied later
    /// holds keys the earlier `a` lacks); copies at one instant (SQLite backup API docs, "Online
    /// Backup of a Running Database") never do, and both pass `PRAGMA integrity_check`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_databases_are_copied_at_one_instant_while_writers_run() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(dir.path(), "a.db").await, open(dir.path(), "b.db").await);
        let mut writers = Vec::new();
        for i in 0..50 {
            let (a, b) = (a.clone(), b.clone());
            writers.push(tokio::spawn(async move {
                for j in 0..20 {
                    let k = format!("{i:02}-{j:02}");
                    a.execute(sqlx::query("INSERT INTO t (k, n) VALUES ($1, 1)").bind(k.clone())).await.unwrap();
                    b.execute(sqlx::query("INSERT INTO t (k, n) VALUES ($1, 1)").bind(k)).await.unwrap();
                }
            }));
        }
        let mut taken = Vec::new();
        for round in 0..5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let (ca, cb) = (dir.path().join(format!("a{round}.db")), dir.path().join(format!("b{round}.db")));
            backup_together(&[(&a, &ca), (&b, &cb)]).await.unwrap();
            taken.push((ca, cb));
        }
        for w in writers {
            w.await.unwrap();
        }
        for (ca, cb) in taken {
            let (ka, kb) = (keys(&ca).await, keys(&cb).await);
            assert!(kb.iter().all(|k| ka.contains(k)), "b holds keys a lacks: not one instant");
            assert!(inspect_sqlite_file(&ca).unwrap().sound() && inspect_sqlite_file(&cb).unwrap().sound());
        }
    }
}
