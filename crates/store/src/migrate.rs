//! Forward-only migrations, one file per backend under the same name.

use crate::{Backend, Db, StoreError};

/// One forward-only migration, with the DDL for each backend.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Ordering key; applied in ascending order, each exactly once.
    pub version: i64,
    /// File name without extension, the same for both backends.
    pub name: &'static str,
    /// SQL for SQLite.
    pub sqlite: &'static str,
    /// SQL for PostgreSQL.
    pub postgres: &'static str,
}

/// Declares a party's migrations from `migrations/{sqlite,postgres}/NNNN_name.sql` next to its Cargo.toml.
#[macro_export]
macro_rules! migrations {
    ($($version:literal => $name:literal),* $(,)?) => {
        &[$($crate::Migration {
            version: $version,
            name: $name,
            sqlite: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite/", $name, ".sql")),
            postgres: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres/", $name, ".sql")),
        }),*]
    };
}

impl Db {
    /// Applies the migrations not applied yet, each in its own transaction, in version order.
    /// Returns the versions applied now. Refuses ([`StoreError::SchemaTooNew`]) a database that a
    /// newer binary migrated past the last version in `migrations`.
    pub async fn migrate(&self, migrations: &[Migration]) -> Result<Vec<i64>, StoreError> {
        let created = sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (\
               version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(self.writer())
        .await;
        // Instances starting together on an empty PostgreSQL database race on the catalog here
        // ("IF NOT EXISTS" is not atomic there); the table exists either way.
        match created.map_err(StoreError::from) {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let newest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations").fetch_one(self.pool()).await?;
        let known = migrations.iter().map(|m| m.version).max().unwrap_or(0);
        if let Some(applied) = newest.filter(|&v| v > known) {
            return Err(StoreError::SchemaTooNew { applied, known });
        }
        if self.backend() == Backend::Sqlite {
            // The row that readiness writes and rolls back (`health.rs`).
            sqlx::raw_sql("CREATE TABLE IF NOT EXISTS store_health (id BIGINT PRIMARY KEY, pad BLOB)")
                .execute(self.writer())
                .await?;
        }
        let mut applied = Vec::new();
        let mut sorted: Vec<&Migration> = migrations.iter().collect();
        sorted.sort_by_key(|m| m.version);
        for m in sorted {
            let mut tx = self.begin().await?;
            if self.backend() == Backend::Postgres {
                // Several instances may start at once: one migrates, the others wait and then skip.
                sqlx::query("SELECT pg_advisory_xact_lock(7319001)").execute(&mut tx).await?;
            }
            let done: Option<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(m.version)
                .fetch_optional(&mut tx)
                .await?;
            if done.is_some() {
                continue;
            }
            let sql = match self.backend() {
                Backend::Sqlite => m.sqlite,
                Backend::Postgres => m.postgres,
            };
            sqlx::raw_sql(sql).execute(&mut tx).await.map_err(|source| StoreError::Migration {
                version: m.version,
                name: m.name,
                source,
            })?;
            sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
                .bind(m.version)
                .bind(m.name)
                .bind(unix_now())
                .execute(&mut tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version = m.version, name = m.name, "migration applied");
            applied.push(m.version);
        }
        Ok(applied)
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::PoolConfig;

    pub(crate) const M: &[Migration] = &[
        Migration {
            version: 1,
            name: "t",
            sqlite: "CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT NOT NULL);",
            postgres: "CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT NOT NULL);",
        },
        Migration {
            version: 2,
            name: "u",
            sqlite: "CREATE INDEX t_n ON t (n);",
            postgres: "CREATE INDEX t_n ON t (n);",
        },
    ];

    /// A migrated SQLite database in a temporary directory (kept while the directory lives).
    pub(crate) async fn sqlite() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("x.db").display());
        let db = Db::connect(&url, &PoolConfig::default()).await.unwrap();
        db.migrate(M).await.unwrap();
        (dir, db)
    }

    #[tokio::test]
    async fn migrations_apply_once_and_unique_violation_is_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("x.db").display());
        let db = Db::connect(&url, &PoolConfig::default()).await.unwrap();
        assert_eq!(db.migrate(M).await.unwrap(), vec![1, 2]);
        assert!(db.migrate(M).await.unwrap().is_empty());
        db.execute(sqlx::query("INSERT INTO t (k, n) VALUES ($1, $2)").bind("a").bind(1i64)).await.unwrap();
        let err =
            db.execute(sqlx::query("INSERT INTO t (k, n) VALUES ($1, $2)").bind("a").bind(2i64)).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(db.pool()).await.unwrap();
        assert_eq!(mode, "wal");
    }

    /// An old binary must not run on a schema a newer one migrated (the "expand/contract" upgrade
    /// rule: code runs only on schemas it knows; cf. Django's and Flyway's `validate` refusing
    /// applied migrations missing from the code). Both `serve` and `migrate` go through here.
    #[tokio::test]
    async fn a_schema_newer_than_the_binary_is_refused_naming_both_versions() {
        let (_dir, db) = sqlite().await;
        let newer = Migration { version: 3, name: "v", sqlite: "CREATE TABLE v (x BIGINT);", postgres: "" };
        let mut all = M.to_vec();
        all.push(newer);
        assert_eq!(db.migrate(&all).await.unwrap(), vec![3]);
        let err = db.migrate(M).await.unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { applied: 3, known: 2 }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("version 3") && text.contains("up to 2"), "{text}");
        assert!(db.migrate(&all).await.unwrap().is_empty(), "the newer binary runs on");
    }
}
