//! The diary's storage: users, sessions, schedule, OIDC transactions and links.

use edulink_domain::crypto::{Cipher, random_token, sha256_b64};
pub use edulink_domain::provisioning::Role;
use edulink_store::{Db, StoreError, Tx, sqlx};

/// A diary account.
#[derive(Debug, Clone)]
pub struct User {
    /// Id.
    pub id: String,
    /// Login.
    pub login: String,
    /// Student or teacher.
    pub role: Role,
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

/// A `users` row as stored: the role still text.
#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    login: String,
    role: String,
    first_name: String,
    last_name: String,
    school_id: String,
    class_id: Option<String>,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;

    fn try_from(r: UserRow) -> Result<Self, StoreError> {
        let role = Role::parse(&r.role)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown role {:?} of user {}", r.role, r.id).into()))?;
        Ok(User {
            id: r.id,
            login: r.login,
            role,
            first_name: r.first_name,
            last_name: r.last_name,
            school_id: r.school_id,
            class_id: r.class_id,
        })
    }
}

/// A user with the password hash.
#[derive(sqlx::FromRow)]
struct UserHashRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
}

/// The user with this login and its password hash.
pub async fn user_by_login(db: &Db, login: &str) -> Result<Option<(User, String)>, StoreError> {
    let row: Option<UserHashRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {USER_COLS}, password_hash FROM users WHERE login = $1")))
            .bind(login)
            .fetch_optional(db.pool())
            .await?;
    row.map(|r| Ok((r.user.try_into()?, r.password_hash))).transpose()
}

/// The user with this id.
pub async fn user(db: &Db, id: &str) -> Result<Option<User>, StoreError> {
    let row: Option<UserRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {USER_COLS} FROM users WHERE id = $1")))
            .bind(id)
            .fetch_optional(db.pool())
            .await?;
    row.map(User::try_from).transpose()
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
    let row: Option<SessionUserRow> = sqlx::query_as(
        "SELECT s.family, s.user_id, s.csrf, s.last_seen_at, s.auth_at, s.created_at, s.replaced_at, \
           u.id, u.login, u.role, u.first_name, u.last_name, u.school_id, u.class_id \
         FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(db.pool())
    .await?;
    let Some(SessionUserRow { family, user_id, csrf, last_seen_at, auth_at, created_at, replaced_at, user }) = row
    else {
        return Ok(None);
    };
    let user = User::try_from(user)?;
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

/// A session joined with its user.
#[derive(sqlx::FromRow)]
struct SessionUserRow {
    family: String,
    user_id: String,
    csrf: String,
    last_seen_at: i64,
    auth_at: i64,
    created_at: i64,
    replaced_at: Option<i64>,
    #[sqlx(flatten)]
    user: UserRow,
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

const LESSON_SELECT: &str = "SELECT l.id, l.class_id, c.name AS class_name, l.subject, l.teacher_id, \
       u.first_name, u.last_name, l.starts_at, l.ends_at, l.distance, l.call_url, l.cancelled, l.revision \
     FROM lessons l JOIN classes c ON c.id = l.class_id JOIN users u ON u.id = l.teacher_id";

/// A lesson as [`LESSON_SELECT`] reads it: flags as integers, the teacher's name in two parts.
#[derive(sqlx::FromRow)]
struct LessonRow {
    id: String,
    class_id: String,
    class_name: String,
    subject: String,
    teacher_id: String,
    first_name: String,
    last_name: String,
    starts_at: i64,
    ends_at: i64,
    distance: i64,
    call_url: Option<String>,
    cancelled: i64,
    revision: i64,
}

impl From<LessonRow> for Lesson {
    fn from(r: LessonRow) -> Self {
        Lesson {
            id: r.id,
            class_id: r.class_id,
            class_name: r.class_name,
            subject: r.subject,
            teacher_id: r.teacher_id,
            teacher: format!("{} {}", r.first_name, r.last_name),
            starts_at: r.starts_at,
            ends_at: r.ends_at,
            distance: r.distance != 0,
            call_url: r.call_url,
            cancelled: r.cancelled != 0,
            revision: r.revision,
        }
    }
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
        let rows: Vec<LessonRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(class_id)
            .bind(from)
            .bind(to)
            .fetch_all(db.pool())
            .await?;
        out.extend(rows.into_iter().map(Lesson::from));
    }
    out.sort_by_key(|l| l.starts_at);
    Ok(out)
}

/// One lesson.
pub async fn lesson(db: &Db, id: &str) -> Result<Option<Lesson>, StoreError> {
    let sql = format!("{LESSON_SELECT} WHERE l.id = $1");
    let row: Option<LessonRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(db.pool()).await?;
    Ok(row.map(Lesson::from))
}

/// The classes of a user: a student's own, or every class a teacher teaches, as `(id, name)`.
pub async fn classes_of(db: &Db, user: &User) -> Result<Vec<(String, String)>, StoreError> {
    let rows: Vec<(String, String)> = if user.role == Role::Teacher {
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
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Link {
    /// The issuer (MAX).
    pub issuer: String,
    /// The subject MAX gave us.
    pub subject: String,
    /// When it was made.
    pub linked_at: i64,
    /// The refresh token, encrypted.
    pub refresh_enc: Option<String>,
    /// The newest ID token, for `id_token_hint` on sign-in, encrypted (it carries the name): read
    /// it with [`Link::hint`].
    pub id_token_enc: Option<String>,
    /// Its generation: carried by every message to MAX about it (see [`crate::links`]).
    pub generation: i64,
    /// When MAX said the session of that ID token ended (back-channel logout): the next sign-in
    /// asks MAX for a fresh one.
    pub logged_out_at: Option<i64>,
}

/// The live link of a user.
pub async fn link(db: &Db, user_id: &str) -> Result<Option<Link>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT issuer, subject, linked_at, refresh_enc, id_token_enc, generation, logged_out_at FROM links \
         WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(db.pool())
    .await?)
}

/// The encryption context of a stored ID token hint.
pub const HINT_CONTEXT: &str = "links.id_token_hint";

impl Link {
    /// The stored ID token, decrypted (`None` when there is none or it cannot be read: a hint is
    /// only a hint, OIDC Core §3.1.2.1).
    pub fn hint(&self, cipher: &Cipher) -> Option<String> {
        let sealed = self.id_token_enc.as_deref()?;
        String::from_utf8(cipher.open(HINT_CONTEXT, sealed).ok()?).ok()
    }
}

/// Stores the newest ID token of a link (after a sign-in to Сферум), encrypted, with its MAX
/// session (`sid`); a logout reported before is over.
pub async fn set_link_id_token(db: &Db, cipher: &Cipher, user_id: &str, id_token: &str) -> Result<(), StoreError> {
    let sid = crate::rp::backchannel::session_of(id_token);
    db.execute(
        sqlx::query("UPDATE links SET id_token_enc = $1, max_sid = $2, logged_out_at = NULL WHERE user_id = $3")
            .bind(cipher.seal(HINT_CONTEXT, id_token.as_bytes()))
            .bind(sid)
            .bind(user_id),
    )
    .await?;
    Ok(())
}

/// Why an authorization request was started. Stored as text: `link`, `sso`, `join:<lesson id>`,
/// `app:<app key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// Link the account («Перейти к подключению» on the web).
    Link,
    /// Sign in to Сферум through MAX (the «Сферум» button of a linked account).
    SignIn,
    /// Sign in and land in this lesson's room («Подключиться»).
    Join(String),
    /// Link from the diary's app with this key (`dnevnik_mesh`, `moyashkola`).
    App(String),
}

impl Purpose {
    /// The stored form.
    pub fn to_column(&self) -> String {
        match self {
            Purpose::Link => "link".into(),
            Purpose::SignIn => "sso".into(),
            Purpose::Join(lesson) => format!("join:{lesson}"),
            Purpose::App(key) => format!("app:{key}"),
        }
    }

    /// Parses the stored form.
    pub fn from_column(s: &str) -> Option<Self> {
        match s {
            "link" => Some(Purpose::Link),
            "sso" => Some(Purpose::SignIn),
            _ => match s.split_once(':')? {
                ("join", lesson) => Some(Purpose::Join(lesson.into())),
                ("app", key) => Some(Purpose::App(key.into())),
                _ => None,
            },
        }
    }
}

/// A started authorization request, as stored until its callback.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// The user who started it.
    pub user_id: String,
    /// What it is for.
    pub purpose: Purpose,
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
/// refused start is counted, as with [`edulink_store::count_in_window`]).
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
    .bind(t.purpose.to_column())
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
    let row: Option<TransactionRow> = sqlx::query_as(
        "DELETE FROM oidc_transactions WHERE state_hash = $1 AND session_family = $2 AND expires_at > $3 \
         RETURNING user_id, purpose, nonce, verifier_enc",
    )
    .bind(sha256_b64(state))
    .bind(family)
    .bind(now)
    .fetch_optional(db.writer())
    .await?;
    row.map(Transaction::try_from).transpose()
}

/// An `oidc_transactions` row as stored: the purpose still text.
#[derive(sqlx::FromRow)]
struct TransactionRow {
    user_id: String,
    purpose: String,
    nonce: String,
    verifier_enc: String,
}

impl TryFrom<TransactionRow> for Transaction {
    type Error = StoreError;

    fn try_from(r: TransactionRow) -> Result<Self, StoreError> {
        let purpose = Purpose::from_column(&r.purpose)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown transaction purpose {:?}", r.purpose).into()))?;
        Ok(Transaction { user_id: r.user_id, purpose, nonce: r.nonce, verifier_enc: r.verifier_enc })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_keep_their_stored_form() {
        let all = [
            (Purpose::Link, "link"),
            (Purpose::SignIn, "sso"),
            (Purpose::Join("lesson-7a-1".into()), "join:lesson-7a-1"),
            (Purpose::App("dnevnik_mesh".into()), "app:dnevnik_mesh"),
        ];
        for (purpose, stored) in all {
            assert_eq!(purpose.to_column(), stored);
            assert_eq!(Purpose::from_column(stored), Some(purpose));
        }
        assert_eq!(Purpose::from_column("login"), None);
        assert_eq!(Purpose::from_column("sso:x"), None);
    }
}
