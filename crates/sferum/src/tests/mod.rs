//! Сферум's tests, alone: a SQLite database with only Сферум's migrations, and MAX played by an
//! in-memory [`Directory`].

mod attendance;
mod chats;
mod provisioning;

use crate::{Directory, MIGRATIONS, Name};
use edulink_domain::provisioning::{Class, Lesson, ProvisionProfile, Role, School};
use edulink_store::{Db, PoolConfig, StoreError, sqlx};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// MAX as Сферум sees it: account names and the pairwise subjects of linked diaries, counting calls
/// (a page asks once, or not at all).
#[derive(Default)]
pub(crate) struct MemoryDirectory {
    names: HashMap<String, Name>,
    /// `(sector, account) -> subjects` of the account's grants there.
    subjects: HashMap<(String, String), Vec<String>>,
    calls: AtomicUsize,
}

impl MemoryDirectory {
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Directory for MemoryDirectory {
    async fn names(&self, accounts: &[String]) -> Result<HashMap<String, Name>, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(accounts.iter().filter_map(|a| self.names.get(a).map(|n| (a.clone(), n.clone()))).collect())
    }

    async fn subjects_in_sector(
        &self,
        sector: &str,
        accounts: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(accounts
            .iter()
            .filter_map(|a| {
                let subs = self.subjects.get(&(sector.to_owned(), a.clone()))?;
                subs.iter().min().map(|s| (a.clone(), s.clone()))
            })
            .collect())
    }
}

/// A migrated database and the directory beside it.
pub(crate) struct Fixture {
    pub(crate) db: Db,
    pub(crate) dir: MemoryDirectory,
    _tmp: tempfile::TempDir,
}

impl Fixture {
    pub(crate) async fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", tmp.path().join("sferum.db").display());
        let db = Db::connect(&url, &PoolConfig::default()).await.unwrap();
        // Сферум's rows hang off MAX's accounts by foreign key (they go with the account), so the
        // schema names that table; this stand-in holds only the ids. Сферум's code never reads it.
        sqlx::raw_sql("CREATE TABLE accounts (id TEXT PRIMARY KEY)").execute(db.writer()).await.unwrap();
        db.migrate(MIGRATIONS).await.unwrap();
        Fixture { db, dir: MemoryDirectory::default(), _tmp: tmp }
    }

    /// A MAX account named `first last`.
    pub(crate) async fn account(&mut self, id: &str, first: &str, last: &str) {
        self.db.execute(sqlx::query("INSERT INTO accounts (id) VALUES ($1)").bind(id)).await.unwrap();
        self.dir.names.insert(id.into(), Name { first: first.into(), last: last.into() });
    }

    /// A grant of `account` to a client of `sector`, under the pairwise `subject`.
    pub(crate) fn grant(&mut self, sector: &str, account: &str, subject: &str) {
        self.dir.subjects.entry((sector.into(), account.into())).or_default().push(subject.into());
    }
}

/// A diary's provisioning call: `role` in school `s1`, one class `c7a` named `class_name`.
pub(crate) fn profile(role: Role, first: &str, last: &str, class_name: &str) -> ProvisionProfile {
    ProvisionProfile {
        role,
        first_name: first.into(),
        last_name: last.into(),
        school: School { id: "s1".into(), name: "Школа № 1".into() },
        classes: vec![Class { id: "c7a".into(), name: class_name.into() }],
        lessons: vec![],
    }
}

/// A distance lesson of class `c7a`, 10:00–10:45 of day 0, at `revision`.
pub(crate) fn lesson(id: &str, revision: i64) -> Lesson {
    Lesson {
        id: id.into(),
        class_id: "c7a".into(),
        subject: "Алгебра".into(),
        teacher: "Петрова А. В.".into(),
        starts_at: 36_000,
        ends_at: 38_700,
        revision,
        call_url: Some("https://call.example/room".into()),
        cancelled: false,
        in_class: false,
    }
}
