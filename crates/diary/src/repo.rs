//! The diary's storage: users, sessions, schedule, OIDC transactions and links.

use edulink_domain::crypto::{random_token, sha256_b64};
use edulink_store::{Db, Row, StoreError, Tx, sqlx};

/// A diary account.
#[derive(Debug, Clone)]
pub struct User {
    /// Id.
    pub id: String,
    /// Login.
    pub login: String,
    /// `student` or `teacher`.
    pub role: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// School id.
    pub school_id: String,
    /// Class id (students).
    pub class_id: Option<String>,
}

const USER_COLS: &str = "id, login, role, first_name, last_name, school_id, class_id";

fn user_from(r: &sqlx::any::AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: r.try_get("id")?,
        login: r.try_get("login")?,
        role: r.try_get("role")?,
        first_name: r.try_get("first_name")?,
        last_name: r.try_get("last_name")?,
        school_id: r.try_get("school_id")?,
        class_id: r.try_get("class_id")?,
    })
}

/// The user with this login and its password hash.
pub async fn user_by_login(db: &Db, login: &str) -> Result<Option<(User, String)>, StoreError> {
    let row =
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {USER_COLS}, password_hash FROM users WHERE login = $1")))
            .bind(login)
            .fetch_optional(db.pool())
            .await?;
    row.map(|r| -> Result<(User, String), sqlx::Error> { Ok((user_from(&r)?, r.try_get("password_hash")?)) })
        .transpose()
        .map_err(Into::into)
}

/// The user with this id.
pub async fn user(db: &Db, id: &str) -> Result<Option<User>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {USER_COLS} FROM users WHERE id = $1")))
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(user_from).transpose().map_err(Into::into)
}

/// A signed-in browser session.
#[derive(Debug, Clone)]
pub struct Session {
    /// SHA-256 of the cookie value.
    pub id_hash: String,
    /// Stable across rotations: what OIDC transactions are bound to.
    pub family: String,
    /// The user.
    pub user_id: String,
    /// CSRF token of this session's forms.
    pub csrf: String,
    /// Last request.
    pub last_seen_at: i64,
    /// When the password was last entered.
    pub auth_at: i64,
}

/// A replaced session id keeps working this long, for requests already in flight with it.
pub const ROTATION_GRACE_SECS: i64 = 10;

/// Creates a session for `user_id` (after a password check); returns the cookie value.
pub async fn create_session(db: &Db, user_id: &str, now: i64) -> Result<(String, Session), StoreError> {
    let raw = random_token(32);
    let s = Session {
        id_hash: sha256_b64(&raw),
        family: random_token(16),
        user_id: user_id.into(),
        csrf: random_token(32),
        last_seen_at: now,
        auth_at: now,
    };
    db.execute(
        sqlx::query(
            "INSERT INTO sessions (id_hash, family, user_id, csrf, created_at, last_seen_at, auth_at) \
         VALUES ($1, $2, $3, $4, $5, $5, $5)",
        )
        .bind(&s.id_hash)
        .bind(&s.family)
        .bind(user_id)
        .bind(&s.csrf)
        .bind(now),
    )
    .await?;
    Ok((raw, s))
}

/// Gives a session a new id (on link, and after re-authentication), keeping its family and its
/// sign-in time unless `reauth`. The old id stays valid for [`ROTATION_GRACE_SECS`].
pub async fn rotate_session(db: &Db, old: &Session, now: i64, reauth: bool) -> Result<(String, Session), StoreError> {
    let mut tx = db.begin().await?;
    let rotated = rotate_session_in(&mut tx, old, now, reauth).await?;
    tx.commit().await?;
    Ok(rotated)
}

/// [`rotate_session`] inside a caller's write transaction.
pub async fn rotate_session_in(
    tx: &mut Tx,
    old: &Session,
    now: i64,
    reauth: bool,
) -> Result<(String, Session), StoreError> {
    let raw = random_token(32);
    let s = Session {
        id_hash: sha256_b64(&raw),
        family: old.family.clone(),
        user_id: old.user_id.clone(),
        csrf: random_token(32),
        last_seen_at: now,
        auth_at: if reauth { now } else { old.auth_at },
    };
    sqlx::query(
        "INSERT INTO sessions (id_hash, family, user_id, csrf, created_at, last_seen_at, auth_at) \
         VALUES ($1, $2, $3, $4, $5, $5, $6)",
    )
    .bind(&s.id_hash)
    .bind(&s.family)
    .bind(&s.user_id)
    .bind(&s.csrf)
    .bind(now)
    .bind(s.auth_at)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE sessions SET replaced_at = $1 WHERE id_hash = $2 AND replaced_at IS NULL")
        .bind(now)
        .bind(&old.id_hash)
        .execute(&mut *tx)
        .await?;
    Ok((raw, s))
}

/// Loads a live session; expired ones are deleted.
pub async fn load_session(
    db: &Db,
    raw: &str,
    now: i64,
    idle: i64,
    absolute: i64,
) -> Result<Option<Session>, StoreError> {
    Ok(load_session_user(db, raw, now, idle, absolute).await?.map(|(s, _)| s))
}

/// The session of cookie value `raw` with its user, in one query (every page needs both); ends it
/// when it expired.
pub async fn load_session_user(
    db: &Db,
    raw: &str,
    now: i64,
    idle: i64,
    absolute: i64,
) -> Result<Option<(Session, User)>, StoreError> {
    if raw.len() != 43 {
        return Ok(None);
    }
    let hash = sha256_b64(raw);
    let row = sqlx::query(
        "SELECT s.family, s.user_id, s.csrf, s.last_seen_at, s.auth_at, s.created_at, s.replaced_at, \
           u.id, u.login, u.role, u.first_name, u.last_name, u.school_id, u.class_id \
         FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    let user = user_from(&row)?;
    let (family, user_id, csrf): (String, String, String) =
        (row.try_get("family")?, row.try_get("user_id")?, row.try_get("csrf")?);
    let (last_seen_at, auth_at, created_at): (i64, i64, i64) =
        (row.try_get("last_seen_at")?, row.try_get("auth_at")?, row.try_get("created_at")?);
    let replaced_at: Option<i64> = row.try_get("replaced_at")?;
    let replaced_long_ago = replaced_at.is_some_and(|r| now - r > ROTATION_GRACE_SECS);
    if last_seen_at + idle < now || created_at + absolute < now || replaced_long_ago {
        db.execute(sqlx::query("DELETE FROM sessions WHERE id_hash = $1").bind(&hash)).await?;
        return Ok(None);
    }
    if now - last_seen_at >= 60 && replaced_at.is_none() {
        // Touch at most once a minute: a write per request would bound throughput for nothing.
        db.execute(sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2").bind(now).bind(&hash))
            .await?;
    }
    Ok(Some((Session { id_hash: hash, family, user_id, csrf, last_seen_at, auth_at }, user)))
}

/// Ends a session and every id of its family (sign-out is server-side).
pub async fn delete_session(db: &Db, id_hash: &str) -> Result<(), StoreError> {
    db.execute(
        sqlx::query("DELETE FROM sessions WHERE family IN (SELECT family FROM sessions WHERE id_hash = $1)")
            .bind(id_hash),
    )
    .await?;
    Ok(())
}

/// A lesson in the schedule.
#[derive(Debug, Clone)]
pub struct Lesson {
    /// Id.
    pub id: String,
    /// Class id.
    pub class_id: String,
    /// Class name.
    pub class_name: String,
    /// Subject.
    pub subject: String,
    /// The teacher's id.
    pub teacher_id: String,
    /// Teacher's name.
    pub teacher: String,
    /// Start.
    pub starts_at: i64,
    /// End.
    pub ends_at: i64,
    /// A distance lesson (in Сферум).
    pub distance: bool,
    /// The call link the teacher set.
    pub call_url: Option<String>,
    /// Cancelled.
    pub cancelled: bool,
    /// Grows with every change.
    pub revision: i64,
}

const LESSON_SELECT: &str = "SELECT l.id, l.class_id, c.name, l.subject, l.teacher_id, u.first_name, u.last_name, \
       l.starts_at, l.ends_at, l.distance, l.call_url, l.cancelled, l.revision \
     FROM lessons l JOIN classes c ON c.id = l.class_id JOIN users u ON u.id = l.teacher_id";

fn lesson_from(r: &sqlx::any::AnyRow) -> Result<Lesson, sqlx::Error> {
    let first: String = r.try_get(5)?;
    let last: String = r.try_get(6)?;
    Ok(Lesson {
        id: r.try_get(0)?,
        class_id: r.try_get(1)?,
        class_name: r.try_get(2)?,
        subject: r.try_get(3)?,
        teacher_id: r.try_get(4)?,
        teacher: format!("{first} {last}"),
        starts_at: r.try_get(7)?,
        ends_at: r.try_get(8)?,
        distance: r.try_get::<i64, _>(9)? != 0,
        call_url: r.try_get(10)?,
        cancelled: r.try_get::<i64, _>(11)? != 0,
        revision: r.try_get(12)?,
    })
}

/// Lessons of the given classes that end after `from` and start before `to`, in time order.
pub async fn lessons(db: &Db, class_ids: &[String], from: i64, to: i64) -> Result<Vec<Lesson>, StoreError> {
    lessons_where(db, class_ids, from, to, "").await
}

/// [`lessons`], only the distance lessons that are not cancelled (what Сферум is told of).
pub async fn distance_lessons(db: &Db, class_ids: &[String], from: i64, to: i64) -> Result<Vec<Lesson>, StoreError> {
    lessons_where(db, class_ids, from, to, " AND l.distance <> 0 AND l.cancelled = 0").await
}

async fn lessons_where(
    db: &Db,
    class_ids: &[String],
    from: i64,
    to: i64,
    only: &'static str,
) -> Result<Vec<Lesson>, StoreError> {
    let mut out = Vec::new();
    let sql = format!(
        "{LESSON_SELECT} WHERE l.class_id = $1 AND l.ends_at > $2 AND l.starts_at < $3{only} ORDER BY l.starts_at"
    );
    for class_id in class_ids {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(class_id)
            .bind(from)
            .bind(to)
            .fetch_all(db.pool())
            .await?;
        for r in rows {
            out.push(lesson_from(&r)?);
        }
    }
    out.sort_by_key(|l| l.starts_at);
    Ok(out)
}

/// One lesson.
pub async fn lesson(db: &Db, id: &str) -> Result<Option<Lesson>, StoreError> {
    let sql = format!("{LESSON_SELECT} WHERE l.id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(db.pool()).await?;
    Ok(row.as_ref().map(lesson_from).transpose()?)
}

/// The classes of a user: a student's own, or every class a teacher teaches, as `(id, name)`.
pub async fn classes_of(db: &Db, user: &User) -> Result<Vec<(String, String)>, StoreError> {
    let rows: Vec<(String, String)> = if user.role == "teacher" {
        sqlx::query_as(
            "SELECT c.id, c.name FROM classes c JOIN teacher_classes t ON t.class_id = c.id WHERE t.teacher_id = $1 ORDER BY c.name",
        )
        .bind(&user.id)
        .fetch_all(db.pool())
        .await?
    } else {
        sqlx::query_as("SELECT id, name FROM classes WHERE id = $1").bind(&user.class_id).fetch_all(db.pool()).await?
    };
    Ok(rows)
}

/// The school's name.
pub async fn school_name(db: &Db, school_id: &str) -> Result<String, StoreError> {
    Ok(sqlx::query_scalar("SELECT name FROM schools WHERE id = $1").bind(school_id).fetch_one(db.pool()).await?)
}

/// A link to a MAX account.
#[derive(Debug, Clone)]
pub struct Link {
    /// The issuer (MAX).
    pub issuer: String,
    /// The subject MAX gave us.
    pub subject: String,
    /// When it was made.
    pub linked_at: i64,
    /// The refresh token, encrypted.
    pub refresh_enc: Option<String>,
    /// The newest ID token, for `id_token_hint` on sign-in.
    pub id_token: Option<String>,
}

/// `(issuer, subject, linked_at, refresh_enc, id_token)`.
type LinkRow = (String, String, i64, Option<String>, Option<String>);

/// The live link of a user.
pub async fn link(db: &Db, user_id: &str) -> Result<Option<Link>, StoreError> {
    let row: Option<LinkRow> =
        sqlx::query_as("SELECT issuer, subject, linked_at, refresh_enc, id_token FROM links WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(db.pool())
            .await?;
    Ok(row.map(|(issuer, subject, linked_at, refresh_enc, id_token)| Link {
        issuer,
        subject,
        linked_at,
        refresh_enc,
        id_token,
    }))
}

/// Stores the newest ID token of a link (after a sign-in to Сферум).
pub async fn set_link_id_token(db: &Db, user_id: &str, id_token: &str) -> Result<(), StoreError> {
    db.execute(sqlx::query("UPDATE links SET id_token = $1 WHERE user_id = $2").bind(id_token).bind(user_id)).await?;
    Ok(())
}

/// A started authorization request, as stored until its callback.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// The user who started it.
    pub user_id: String,
    /// `link` or `sso`.
    pub purpose: String,
    /// The nonce.
    pub nonce: String,
    /// The PKCE verifier, encrypted.
    pub verifier_enc: String,
}

/// Stores a transaction under the hash of its `state`, bound to the browser session's family.
pub async fn create_transaction(
    db: &Db,
    state: &str,
    family: &str,
    t: &Transaction,
    now: i64,
) -> Result<(), StoreError> {
    db.execute(insert_transaction(state, family, t, now)).await?;
    Ok(())
}

/// Counts a link start in the user's hourly bucket (`link:<user id>`, at most `cap`) and, when
/// admitted, stores its OIDC transaction: one write transaction. `Err(wait)` when refused (the
/// refused start is counted, as with [`count_hourly`]).
pub async fn create_link_transaction(
    db: &Db,
    cap: i64,
    state: &str,
    family: &str,
    t: &Transaction,
    now: i64,
) -> Result<Result<(), i64>, StoreError> {
    let bucket = format!("link:{}", t.user_id);
    let mut tx = db.begin().await?;
    let admitted = edulink_store::count_in_window_in(&mut tx, &bucket, 3600, cap, now).await?;
    if admitted.is_ok() {
        insert_transaction(state, family, t, now).execute(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(admitted)
}

fn insert_transaction<'q>(
    state: &str,
    family: &'q str,
    t: &'q Transaction,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(
        "INSERT INTO oidc_transactions (state_hash, session_family, user_id, purpose, nonce, verifier_enc, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(sha256_b64(state))
    .bind(family)
    .bind(&t.user_id)
    .bind(&t.purpose)
    .bind(&t.nonce)
    .bind(&t.verifier_enc)
    .bind(now)
    .bind(now + 600)
}

/// Takes (deletes and returns) the live transaction for `state` if it belongs to this session:
/// a state from another browser, a reused state, or an expired one gives nothing.
pub async fn take_transaction(db: &Db, state: &str, family: &str, now: i64) -> Result<Option<Transaction>, StoreError> {
    if state.len() > 512 {
        return Ok(None);
    }
    let row: Option<(String, String, String, String)> = sqlx::query_as(
        "DELETE FROM oidc_transactions WHERE state_hash = $1 AND session_family = $2 AND expires_at > $3 \
         RETURNING user_id, purpose, nonce, verifier_enc",
    )
    .bind(sha256_b64(state))
    .bind(family)
    .bind(now)
    .fetch_optional(db.writer())
    .await?;
    Ok(row.map(|(user_id, purpose, nonce, verifier_enc)| Transaction { user_id, purpose, nonce, verifier_enc }))
}

/// Counts one event in `bucket`'s current hour and says whether it stays within `cap`; the count and
/// the check are one statement, so concurrent requests (on any instance) cannot both slip under.
/// Returns the seconds until the window ends when over the cap.
pub async fn count_hourly(db: &Db, bucket: &str, cap: i64, now: i64) -> Result<Result<(), i64>, StoreError> {
    edulink_store::count_in_window(db, bucket, 3600, cap, now).await
}

/// The count of `bucket` in the current hour.
pub async fn hourly_count(db: &Db, bucket: &str, now: i64) -> Result<i64, StoreError> {
    let count: Option<i64> =
        sqlx::query_scalar("SELECT count FROM rate_counters WHERE bucket = $1 AND window_start = $2")
            .bind(bucket)
            .bind(now - now.rem_euclid(3600))
            .fetch_optional(db.pool())
            .await?;
    Ok(count.unwrap_or(0))
}
