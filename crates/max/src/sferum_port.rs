//! MAX's side of Сферум's [`Directory`]: account names and pairwise subjects, read from MAX's own
//! tables (`accounts`, `grants`, `clients`). Сферум never reads them itself.

use edulink_sferum::{Directory, Name};
use edulink_store::{Db, StoreError, sqlx};
use std::collections::HashMap;

/// Ids bound per statement: well under either backend's limit on parameters.
const CHUNK: usize = 500;

/// `$first, …, $(first + n - 1)`.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// The least subject of each of `n` accounts (`$2…`) among the grants of sector `$1`'s clients,
/// found by the grants' account index.
pub(crate) fn subjects_sql(n: usize) -> String {
    format!(
        "SELECT g.account_id, MIN(g.subject) AS subject FROM grants g \
         JOIN clients c ON c.client_id = g.client_id AND c.sector = $1 \
         WHERE g.account_id IN ({}) GROUP BY g.account_id",
        placeholders(2, n)
    )
}

/// MAX's accounts and links as Сферум sees them.
#[derive(Clone, Copy)]
pub struct MaxDirectory<'a> {
    db: &'a Db,
}

impl<'a> MaxDirectory<'a> {
    /// The directory over MAX's database.
    pub fn new(db: &'a Db) -> Self {
        MaxDirectory { db }
    }
}

impl crate::MaxState {
    /// MAX's accounts and links, as Сферум asks for them.
    pub fn sferum_directory(&self) -> MaxDirectory<'_> {
        MaxDirectory::new(&self.db)
    }
}

#[derive(sqlx::FromRow)]
struct NameRow {
    id: String,
    first_name: String,
    last_name: String,
}

#[derive(sqlx::FromRow)]
struct SubjectRow {
    account_id: String,
    subject: String,
}

impl Directory for MaxDirectory<'_> {
    async fn names(&self, accounts: &[String]) -> Result<HashMap<String, Name>, StoreError> {
        let mut out = HashMap::with_capacity(accounts.len());
        for chunk in accounts.chunks(CHUNK) {
            let sql = format!(
                "SELECT id, first_name, last_name FROM accounts WHERE id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_as::<_, NameRow>(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            for r in q.fetch_all(self.db.pool()).await? {
                out.insert(r.id, Name { first: r.first_name, last: r.last_name });
            }
        }
        Ok(out)
    }

    async fn subjects_in_sector(
        &self,
        sector: &str,
        accounts: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        let mut out = HashMap::with_capacity(accounts.len());
        for chunk in accounts.chunks(CHUNK) {
            let mut q = sqlx::query_as::<_, SubjectRow>(sqlx::AssertSqlSafe(subjects_sql(chunk.len()))).bind(sector);
            for id in chunk {
                q = q.bind(id);
            }
            for r in q.fetch_all(self.db.pool()).await? {
                out.insert(r.account_id, r.subject);
            }
        }
        Ok(out)
    }
}
