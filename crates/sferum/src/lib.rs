//! Сферум: the educational space inside MAX.
//!
//! An educational profile belongs to a MAX account. The diary, after a link, provisions it with
//! verified school data (role, school, classes, distance lessons) through the provisioning API; the
//! profile then joins its class chats. Unlinking detaches it: it leaves the chats and loses the school
//! data the link carried. This crate holds those rules over the MAX database; HTTP lives in `max`.

use edulink_domain::crypto::new_id;
use edulink_domain::provisioning::{ProvisionProfile, ProvisionResult, Role};
use edulink_store::{Db, Migration, Row, StoreError, sqlx};

/// Сферум's tables, applied to the MAX database after MAX's own.
pub const MIGRATIONS: &[Migration] = edulink_store::migrations![1001 => "1001_sferum"];

/// An educational profile as the Сферум page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Student or teacher.
    pub role: Role,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// School name, once the diary confirmed it.
    pub school_name: Option<String>,
    /// The diary client that confirmed the profile.
    pub confirmed_by: Option<String>,
}

/// A chat the profile is a member of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    /// Chat id.
    pub id: String,
    /// Title, e.g. «7 А».
    pub title: String,
    /// `class` or `announcements`.
    pub kind: String,
    /// Number of members.
    pub members: i64,
}

/// A distance lesson visible to the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lesson {
    /// Subject.
    pub subject: String,
    /// Teacher's name.
    pub teacher: String,
    /// The class chat title.
    pub class_title: String,
    /// Start, Unix seconds.
    pub starts_at: i64,
    /// End, Unix seconds.
    pub ends_at: i64,
}

/// Everything the «Сферум в MAX» page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overview {
    /// The profile, if the account has one.
    pub profile: Option<Profile>,
    /// Its chats.
    pub chats: Vec<Chat>,
    /// Its upcoming distance lessons.
    pub lessons: Vec<Lesson>,
}

fn key(client_id: &str, id: &str) -> String {
    format!("{client_id}:{id}")
}

/// Creates an unconfirmed student profile for an account that has none (registration in Сферум
/// without a diary, as the demo's pre-existing profile).
pub async fn ensure_profile(db: &Db, account_id: &str, first: &str, last: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sferum_profiles (account_id, role, first_name, last_name, created_at, updated_at) \
         VALUES ($1, 'student', $2, $3, $4, $4) ON CONFLICT (account_id) DO NOTHING",
    )
    .bind(account_id)
    .bind(first)
    .bind(last)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// True when the account already has an educational profile.
pub async fn has_profile(db: &Db, account_id: &str) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sferum_profiles WHERE account_id = $1")
        .bind(account_id)
        .fetch_one(db.pool())
        .await?;
    Ok(n > 0)
}

/// Applies a provisioning call: the profile takes the diary's verified data, joins the chats of its
/// classes (and leaves this school's chats it no longer belongs to), and the classes' distance lessons
/// are replaced by the given ones. Idempotent: the same call twice gives the same state.
pub async fn provision(
    db: &Db,
    client_id: &str,
    account_id: &str,
    p: &ProvisionProfile,
    now: i64,
) -> Result<ProvisionResult, StoreError> {
    let school_key = key(client_id, &p.school.id);
    let mut tx = db.pool().begin().await?;
    sqlx::query(
        "INSERT INTO sferum_profiles (account_id, role, first_name, last_name, school_key, school_name, \
           confirmed_by, confirmed_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8) \
         ON CONFLICT (account_id) DO UPDATE SET role = excluded.role, first_name = excluded.first_name, \
           last_name = excluded.last_name, school_key = excluded.school_key, school_name = excluded.school_name, \
           confirmed_by = excluded.confirmed_by, confirmed_at = excluded.confirmed_at, updated_at = excluded.updated_at",
    )
    .bind(account_id)
    .bind(p.role.as_str())
    .bind(&p.first_name)
    .bind(&p.last_name)
    .bind(&school_key)
    .bind(&p.school.name)
    .bind(client_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;

    let mut chat_ids = Vec::new();
    for class in &p.classes {
        let class_key = key(client_id, &class.id);
        sqlx::query(
            "INSERT INTO sferum_chats (id, school_key, class_key, kind, title, created_at) \
             VALUES ($1, $2, $3, 'class', $4, $5) \
             ON CONFLICT (school_key, class_key) DO UPDATE SET title = excluded.title",
        )
        .bind(new_id())
        .bind(&school_key)
        .bind(&class_key)
        .bind(&class.name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let chat_id: String =
            sqlx::query_scalar("SELECT id FROM sferum_chats WHERE school_key = $1 AND class_key = $2")
                .bind(&school_key)
                .bind(&class_key)
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO sferum_members (chat_id, account_id, role, joined_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (chat_id, account_id) DO UPDATE SET role = excluded.role",
        )
        .bind(&chat_id)
        .bind(account_id)
        .bind(p.role.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        chat_ids.push(chat_id);

        // The diary is the source of truth for a class's lessons: replace them.
        sqlx::query("DELETE FROM sferum_lessons WHERE class_key = $1").bind(&class_key).execute(&mut *tx).await?;
        for l in p.lessons.iter().filter(|l| l.class_id == class.id) {
            sqlx::query(
                "INSERT INTO sferum_lessons (id, class_key, subject, teacher, starts_at, ends_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (id) DO UPDATE SET class_key = excluded.class_key, subject = excluded.subject, \
                   teacher = excluded.teacher, starts_at = excluded.starts_at, ends_at = excluded.ends_at, \
                   updated_at = excluded.updated_at",
            )
            .bind(key(client_id, &l.id))
            .bind(&class_key)
            .bind(&l.subject)
            .bind(&l.teacher)
            .bind(l.starts_at)
            .bind(l.ends_at)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
    }

    // Leave this diary's chats that are no longer the profile's.
    let current: Vec<String> = sqlx::query_scalar(
        "SELECT m.chat_id FROM sferum_members m JOIN sferum_chats c ON c.id = m.chat_id \
         WHERE m.account_id = $1 AND c.class_key LIKE $2",
    )
    .bind(account_id)
    .bind(format!("{client_id}:%"))
    .fetch_all(&mut *tx)
    .await?;
    for chat in current.iter().filter(|c| !chat_ids.contains(c)) {
        sqlx::query("DELETE FROM sferum_members WHERE chat_id = $1 AND account_id = $2")
            .bind(chat)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(ProvisionResult { chats: chat_ids })
}

/// Detaches the profile from the diary `client_id`: it leaves that diary's chats and loses the school
/// data and names the link carried (it falls back to the MAX account's own name).
/// Returns whether anything was attached.
pub async fn detach(db: &Db, client_id: &str, account_id: &str, now: i64) -> Result<bool, StoreError> {
    let mut tx = db.pool().begin().await?;
    let left = sqlx::query(
        "DELETE FROM sferum_members WHERE account_id = $1 AND chat_id IN \
           (SELECT id FROM sferum_chats WHERE class_key LIKE $2)",
    )
    .bind(account_id)
    .bind(format!("{client_id}:%"))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let reset = sqlx::query(
        "UPDATE sferum_profiles SET school_key = NULL, school_name = NULL, confirmed_by = NULL, \
           confirmed_at = NULL, role = 'student', updated_at = $3, \
           first_name = (SELECT first_name FROM accounts WHERE id = $1), \
           last_name = (SELECT last_name FROM accounts WHERE id = $1) \
         WHERE account_id = $1 AND confirmed_by = $2",
    )
    .bind(account_id)
    .bind(client_id)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(left + reset > 0)
}

/// What the «Сферум в MAX» page shows for an account: its profile, chats and upcoming lessons.
pub async fn overview(db: &Db, account_id: &str, now: i64) -> Result<Overview, StoreError> {
    let profile = sqlx::query(
        "SELECT role, first_name, last_name, school_name, confirmed_by FROM sferum_profiles WHERE account_id = $1",
    )
    .bind(account_id)
    .fetch_optional(db.pool())
    .await?
    .map(|r| -> Result<Profile, sqlx::Error> {
        Ok(Profile {
            role: Role::parse(&r.try_get::<String, _>("role")?).unwrap_or(Role::Student),
            first_name: r.try_get("first_name")?,
            last_name: r.try_get("last_name")?,
            school_name: r.try_get("school_name")?,
            confirmed_by: r.try_get("confirmed_by")?,
        })
    })
    .transpose()?;
    let chats = sqlx::query(
        "SELECT c.id, c.title, c.kind, (SELECT COUNT(*) FROM sferum_members x WHERE x.chat_id = c.id) AS members \
         FROM sferum_chats c JOIN sferum_members m ON m.chat_id = c.id WHERE m.account_id = $1 ORDER BY c.title",
    )
    .bind(account_id)
    .fetch_all(db.pool())
    .await?
    .into_iter()
    .map(|r| -> Result<Chat, sqlx::Error> {
        Ok(Chat {
            id: r.try_get("id")?,
            title: r.try_get("title")?,
            kind: r.try_get("kind")?,
            members: r.try_get("members")?,
        })
    })
    .collect::<Result<Vec<_>, _>>()?;
    let lessons = sqlx::query(
        "SELECT l.subject, l.teacher, c.title, l.starts_at, l.ends_at FROM sferum_lessons l \
         JOIN sferum_chats c ON c.class_key = l.class_key \
         JOIN sferum_members m ON m.chat_id = c.id \
         WHERE m.account_id = $1 AND l.ends_at > $2 ORDER BY l.starts_at LIMIT 20",
    )
    .bind(account_id)
    .bind(now)
    .fetch_all(db.pool())
    .await?
    .into_iter()
    .map(|r| -> Result<Lesson, sqlx::Error> {
        Ok(Lesson {
            subject: r.try_get(0)?,
            teacher: r.try_get(1)?,
            class_title: r.try_get(2)?,
            starts_at: r.try_get(3)?,
            ends_at: r.try_get(4)?,
        })
    })
    .collect::<Result<Vec<_>, _>>()?;
    Ok(Overview { profile, chats, lessons })
}
