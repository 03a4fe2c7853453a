//! `edulink backup` and `edulink restore`: both parties' SQLite databases, as they were at one
//! instant, in a directory with a manifest; and back.
//!
//! The copy is SQLite's online backup of both files at one instant (`edulink_store::backup_together`):
//! it runs beside a serving `edulink serve`, whose writes pause only while the two snapshots are
//! taken. A restore checks every file against the manifest (size, SHA-256, schema version,
//! `PRAGMA integrity_check`) before it replaces anything, and refuses to replace the files of a
//! running instance. PostgreSQL has its own tools (`pg_dump`, point-in-time recovery): both
//! commands refuse it and point to docs/deployment.md.

use crate::config::Config;
use edulink_store::{Db, FileCheck, Migration, inspect_sqlite_file, sqlite_file};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The manifest's file name in a backup directory.
pub const MANIFEST: &str = "manifest.json";
/// The manifest format this binary writes and reads.
const FORMAT: u32 = 1;

/// Why a backup or a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A party's database is PostgreSQL.
    #[error(
        "edulink backup and restore copy SQLite files; the {0} database is PostgreSQL: back it up with \
         pg_dump and point-in-time recovery (docs/deployment.md, «Backups»)"
    )]
    Postgres(Party),
    /// A party's database file does not exist.
    #[error("no {0} database at {1}")]
    NoDatabase(Party, PathBuf),
    /// The backup directory already holds a backup.
    #[error("{0} already holds a backup; choose a new directory")]
    NotEmpty(PathBuf),
    /// Copying failed.
    #[error(transparent)]
    Copy(#[from] edulink_store::BackupError),
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The manifest is missing, unreadable, or not of this format.
    #[error("manifest {0}: {1}")]
    Manifest(PathBuf, String),
    /// A file of the backup is not what the manifest says.
    #[error("{0} does not match the manifest: {1}")]
    Mismatch(PathBuf, String),
    /// The backup holds a schema newer than this binary knows.
    #[error(
        "the {party} database of the backup has schema {version}; this binary knows up to {known}: restore with a newer edulink"
    )]
    TooNew {
        /// Which party.
        party: Party,
        /// The backup's schema version.
        version: i64,
        /// The newest this binary knows.
        known: i64,
    },
    /// A running instance has the file open.
    #[error("a running instance has {0} open: stop it first (or pass --force)")]
    InUse(PathBuf),
}

/// One of the two parties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Party {
    /// The diary (`diary.db`).
    Diary,
    /// MAX with Сферум (`max.db`).
    Max,
}

impl std::fmt::Display for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Party::Diary => "diary",
            Party::Max => "max",
        })
    }
}

impl Party {
    const BOTH: [Party; 2] = [Party::Diary, Party::Max];

    /// The file name in a backup directory.
    fn file(self) -> &'static str {
        match self {
            Party::Diary => "diary.db",
            Party::Max => "max.db",
        }
    }

    /// The party's database file under `cfg`.
    fn path(self, cfg: &Config) -> Result<PathBuf, BackupError> {
        let url = match self {
            Party::Diary => cfg.diary_db(),
            Party::Max => cfg.max_db(),
        };
        sqlite_file(&url).ok_or(BackupError::Postgres(self))
    }

    /// The newest schema version this binary knows.
    fn known_schema(self) -> i64 {
        let migrations: Vec<Migration> = match self {
            Party::Diary => edulink_diary::migrations(),
            Party::Max => edulink_max::migrations(),
        };
        migrations.iter().map(|m| m.version).max().unwrap_or(0)
    }

    fn pool(self, cfg: &Config) -> edulink_store::PoolConfig {
        match self {
            Party::Diary => cfg.diary.pool.to_pool_config(),
            Party::Max => cfg.max.pool.to_pool_config(),
        }
    }
}

/// What a backup directory holds (`manifest.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The manifest format.
    pub format: u32,
    /// When the backup was taken, Unix seconds.
    pub created_at: i64,
    /// The version of the edulink that took it.
    pub edulink_version: String,
    /// How long both parties' writes were paused, milliseconds.
    pub pause_ms: u64,
    /// How long the copies took after the pause, milliseconds (writes went on meanwhile).
    pub copy_ms: u64,
    /// The databases, copied at one instant.
    pub databases: Vec<DatabaseFile>,
}

/// One database file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseFile {
    /// Whose database.
    pub party: Party,
    /// The file name in the backup directory.
    pub file: String,
    /// The highest migration applied.
    pub schema_version: i64,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
}

/// Copies both parties' SQLite databases, as they were at one instant, into the directory `to`
/// (created if missing, refused if it holds a backup), with a manifest. Runs beside a serving
/// instance.
pub async fn backup(cfg: &Config, to: &Path) -> Result<Manifest, BackupError> {
    let mut dbs = Vec::new();
    for party in Party::BOTH {
        let path = party.path(cfg)?;
        if !path.exists() {
            return Err(BackupError::NoDatabase(party, path));
        }
        let url = format!("sqlite://{}", path.display());
        dbs.push((party, Db::connect(&url, &party.pool(cfg)).await.map_err(edulink_store::BackupError::from)?));
    }
    std::fs::create_dir_all(to).map_err(|e| BackupError::Io(to.into(), e))?;
    if [MANIFEST, Party::Diary.file(), Party::Max.file()].iter().any(|f| to.join(f).exists()) {
        return Err(BackupError::NotEmpty(to.into()));
    }
    let targets: Vec<PathBuf> = dbs.iter().map(|(p, _)| to.join(p.file())).collect();
    let items: Vec<(&Db, &Path)> = dbs.iter().zip(&targets).map(|((_, db), t)| (db, t.as_path())).collect();
    let timing = edulink_store::backup_together(&items).await;
    for (_, db) in &dbs {
        db.close().await;
    }
    let timing = timing?;
    let mut databases = Vec::new();
    for (party, _) in &dbs {
        let path = to.join(party.file());
        let check = sound(&path)?;
        let (bytes, sha256) = digest(&path)?;
        databases.push(DatabaseFile {
            party: *party,
            file: party.file().into(),
            schema_version: check.schema_version,
            bytes,
            sha256,
        });
    }
    let manifest = Manifest {
        format: FORMAT,
        created_at: unix_now(),
        edulink_version: env!("CARGO_PKG_VERSION").into(),
        pause_ms: timing.pause.as_millis() as u64,
        copy_ms: timing.copy.as_millis() as u64,
        databases,
    };
    let path = to.join(MANIFEST);
    let body = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    // Written last: a directory with a manifest holds a whole backup.
    std::fs::write(&path, body).map_err(|e| BackupError::Io(path.clone(), e))?;
    Ok(manifest)
}

/// Checks the backup in `from` against its manifest, then puts both databases in place of the
/// configured files. The replaced files are kept beside, renamed `<name>.replaced-<unix time>`.
/// Refuses while a running instance has a target open, unless `force`.
///
/// Run it in a process of its own (the command line): the check for a running instance asks the
/// kernel for other processes' locks on the file, and closing a descriptor of the file would drop
/// this process's own SQLite locks on it.
pub fn restore(cfg: &Config, from: &Path, force: bool) -> Result<Manifest, BackupError> {
    let targets = Party::BOTH.map(|p| p.path(cfg)).into_iter().collect::<Result<Vec<_>, _>>()?;
    let manifest_path = from.join(MANIFEST);
    let body = std::fs::read(&manifest_path).map_err(|e| BackupError::Io(manifest_path.clone(), e))?;
    let manifest: Manifest =
        serde_json::from_slice(&body).map_err(|e| BackupError::Manifest(manifest_path.clone(), e.to_string()))?;
    if manifest.format != FORMAT {
        return Err(BackupError::Manifest(
            manifest_path,
            format!("format {} (this binary reads {FORMAT})", manifest.format),
        ));
    }
    let mut plan = Vec::new();
    for (party, target) in Party::BOTH.into_iter().zip(targets) {
        let entry = manifest
            .databases
            .iter()
            .find(|d| d.party == party)
            .ok_or_else(|| BackupError::Manifest(manifest_path.clone(), format!("no {party} database listed")))?;
        let file = from.join(Path::new(&entry.file).file_name().unwrap_or_default());
        verify(&file, entry)?;
        if !force && in_use(&target).map_err(|e| BackupError::Io(target.clone(), e))? {
            return Err(BackupError::InUse(target));
        }
        plan.push((file, target));
    }
    let stamp = unix_now();
    for (file, target) in plan {
        put_in_place(&file, &target, stamp)?;
    }
    Ok(manifest)
}

/// Checks a backup file against its manifest entry, and that this binary can run it.
fn verify(file: &Path, entry: &DatabaseFile) -> Result<(), BackupError> {
    let (bytes, sha256) = digest(file)?;
    if bytes != entry.bytes || sha256 != entry.sha256 {
        return Err(BackupError::Mismatch(file.into(), format!("{bytes} bytes, sha256 {sha256}")));
    }
    let check = sound(file)?;
    if check.schema_version != entry.schema_version {
        return Err(BackupError::Mismatch(file.into(), format!("schema {}", check.schema_version)));
    }
    let known = entry.party.known_schema();
    if check.schema_version > known {
        return Err(BackupError::TooNew { party: entry.party, version: check.schema_version, known });
    }
    Ok(())
}

/// Reads a backup file's schema version, refusing a file that fails `PRAGMA integrity_check`.
fn sound(path: &Path) -> Result<FileCheck, BackupError> {
    let check = inspect_sqlite_file(path)?;
    if !check.sound() {
        return Err(BackupError::Mismatch(path.into(), format!("integrity_check: {}", check.integrity.join("; "))));
    }
    Ok(check)
}

/// Copies `file` over `target`: through a temporary file, synced, then renamed; the replaced
/// database and its WAL are kept beside it, and its shared-memory index is removed (SQLite
/// rebuilds it; a stale WAL next to the restored file would be replayed into it).
fn put_in_place(file: &Path, target: &Path, stamp: i64) -> Result<(), BackupError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| BackupError::Io(p, e)
    };
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = suffixed(target, ".restoring");
    std::fs::copy(file, &tmp).map_err(io(&tmp))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io(&tmp))?;
    let aside = suffixed(target, &format!(".replaced-{stamp}"));
    for (from, to) in [(target.to_path_buf(), aside.clone()), (suffixed(target, "-wal"), suffixed(&aside, "-wal"))] {
        if from.exists() {
            std::fs::rename(&from, &to).map_err(io(&from))?;
        }
    }
    let shm = suffixed(target, "-shm");
    if shm.exists() {
        std::fs::remove_file(&shm).map_err(io(&shm))?;
    }
    std::fs::rename(&tmp, target).map_err(io(target))
}

/// Whether another process has the SQLite database `db` open. SQLite's Unix VFS keeps a shared
/// lock on the "DMS" byte of the `-shm` file (offset 128: `UNIX_SHM_DMS` in SQLite's `os_unix.c`)
/// for as long as a connection has a WAL database open; `F_GETLK` reports another process's lock.
#[cfg(unix)]
fn in_use(db: &Path) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let shm = match std::fs::OpenOptions::new().read(true).write(true).open(suffixed(db, "-shm")) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    // SAFETY: `flock` is a plain C struct; all-zero is a valid value that the fields below complete.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as _;
    lock.l_whence = libc::SEEK_SET as _;
    lock.l_start = 128;
    lock.l_len = 1;
    // SAFETY: F_GETLK only reads and fills `lock`, which lives for the call; the descriptor is open.
    if unsafe { libc::fcntl(shm.as_raw_fd(), libc::F_GETLK, &mut lock) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(i32::from(lock.l_type) != libc::F_UNLCK)
}

/// Elsewhere, a `-shm` file beside the database means a connection may have it open.
#[cfg(not(unix))]
fn in_use(db: &Path) -> std::io::Result<bool> {
    Ok(suffixed(db, "-shm").exists())
}

/// `path` with `suffix` appended to its file name (`diary.db` → `diary.db-wal`).
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

/// The size and SHA-256 (hex) of a file.
fn digest(path: &Path) -> Result<(u64, String), BackupError> {
    let io = |e| BackupError::Io(path.into(), e);
    let mut file = std::fs::File::open(path).map_err(io)?;
    let (mut hash, mut buf, mut bytes) = (Sha256::new(), vec![0u8; 1 << 16], 0u64);
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((bytes, hash.finalize().iter().map(|b| format!("{b:02x}")).collect()))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
