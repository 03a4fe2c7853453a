//! Logout state (`client_logout`, `session_clients`, `backchannel_jobs`): each client's logout
//! registration, which clients got an ID token in which session, and the logout tokens still to
//! deliver.

use edulink_store::{Db, StoreError, Tx, sqlx};

/// A client's logout registration (OpenID Connect RP-Initiated Logout 1.0 §3.1, Back-Channel
/// Logout 1.0 §2.2). Kept beside `clients` so a registration without one is simply «no logout
/// URIs».
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogoutRegistration {
    /// Where the browser may be sent after a logout, matched exactly.
    pub post_logout_redirect_uris: Vec<String>,
    /// Where logout tokens are posted.
    pub backchannel_logout_uri: Option<String>,
    /// The client needs `sid` in every logout token.
    pub backchannel_logout_session_required: bool,
}

#[derive(Debug, sqlx::FromRow)]
struct LogoutRow {
    post_logout_redirect_uris: String,
    backchannel_logout_uri: Option<String>,
    backchannel_logout_session_required: i64,
}

impl From<LogoutRow> for LogoutRegistration {
    fn from(r: LogoutRow) -> Self {
        LogoutRegistration {
            post_logout_redirect_uris: serde_json::from_str(&r.post_logout_redirect_uris).unwrap_or_default(),
            backchannel_logout_uri: r.backchannel_logout_uri,
            backchannel_logout_session_required: r.backchannel_logout_session_required != 0,
        }
    }
}

/// Registers or replaces the logout registration of `client_id` (which must be registered).
pub async fn upsert_logout(db: &Db, client_id: &str, r: &LogoutRegistration) -> Result<(), StoreError> {
    db.execute(
        sqlx::query(
            "INSERT INTO client_logout (client_id, post_logout_redirect_uris, backchannel_logout_uri, \
               backchannel_logout_session_required) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (client_id) DO UPDATE SET post_logout_redirect_uris = excluded.post_logout_redirect_uris, \
               backchannel_logout_uri = excluded.backchannel_logout_uri, \
               backchannel_logout_session_required = excluded.backchannel_logout_session_required",
        )
        .bind(client_id)
        .bind(serde_json::to_string(&r.post_logout_redirect_uris).expect("strings serialize"))
        .bind(&r.backchannel_logout_uri)
        .bind(i64::from(r.backchannel_logout_session_required)),
    )
    .await?;
    Ok(())
}

/// The logout registration of `client_id` (empty when it has none).
pub async fn logout_registration(db: &Db, client_id: &str) -> Result<LogoutRegistration, StoreError> {
    let row: Option<LogoutRow> = sqlx::query_as(
        "SELECT post_logout_redirect_uris, backchannel_logout_uri, backchannel_logout_session_required \
         FROM client_logout WHERE client_id = $1",
    )
    .bind(client_id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(LogoutRegistration::from).unwrap_or_default())
}

/// Records that `client_id` received an ID token for `subject` in the session `sid`.
pub async fn remember_client(
    tx: &mut Tx,
    sid: &str,
    client_id: &str,
    account_id: &str,
    subject: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO session_clients (sid, client_id, account_id, subject, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (sid, client_id) DO NOTHING",
    )
    .bind(sid)
    .bind(client_id)
    .bind(account_id)
    .bind(subject)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// Re-authentication gave the session a new id, and so a new `sid`: its clients stay its clients.
pub async fn move_session(tx: &mut Tx, from: &str, to: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE session_clients SET sid = $1 WHERE sid = $2").bind(to).bind(from).execute(tx).await?;
    Ok(())
}

/// A logout token to deliver: to whom, about whom.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Job {
    /// Id.
    pub id: String,
    /// The client to notify.
    pub client_id: String,
    /// The pairwise subject of the account at that client.
    pub subject: String,
    /// The session that ended; `None` for every session of the account.
    pub sid: Option<String>,
    /// Attempts made so far.
    pub attempts: i64,
}

/// Queues a logout token for every client with a back-channel logout URI that got an ID token in
/// the session `sid`, and forgets the session's clients. Returns the jobs' ids.
pub async fn enqueue_session(tx: &mut Tx, sid: &str, now: i64) -> Result<Vec<String>, StoreError> {
    let targets: Vec<(String, String)> =
        sqlx::query_as("DELETE FROM session_clients WHERE sid = $1 RETURNING client_id, subject")
            .bind(sid)
            .fetch_all(&mut *tx)
            .await?;
    let mut ids = Vec::new();
    for (client_id, subject) in targets {
        if let Some(id) = enqueue(tx, &client_id, &subject, Some(sid), now).await? {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Queues one logout token unless the client has no back-channel logout URI. Returns its id.
pub async fn enqueue(
    tx: &mut Tx,
    client_id: &str,
    subject: &str,
    sid: Option<&str>,
    now: i64,
) -> Result<Option<String>, StoreError> {
    let id = edulink_domain::crypto::new_id();
    let done = sqlx::query(
        "INSERT INTO backchannel_jobs (id, client_id, subject, sid, next_attempt_at, created_at) \
         SELECT $1, client_id, $2, $3, $4, $4 FROM client_logout WHERE client_id = $5 AND backchannel_logout_uri IS NOT NULL",
    )
    .bind(&id)
    .bind(subject)
    .bind(sid)
    .bind(now)
    .bind(client_id)
    .execute(tx)
    .await?;
    Ok((done.rows_affected() == 1).then_some(id))
}

/// A client an account granted, and one session in which it got an ID token.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountClient {
    /// The client.
    pub client_id: String,
    /// The account's pairwise subject there.
    pub subject: String,
    /// Non-zero when the client needs `sid` in every logout token.
    pub session_required: i64,
    /// A session in which it got an ID token, if any is remembered.
    pub sid: Option<String>,
}

/// Every client the account granted, with its subject and whether it needs `sid`, and the sessions
/// in which each got an ID token (for an account's deletion).
pub async fn clients_of_account(db: &Db, account_id: &str) -> Result<Vec<AccountClient>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT g.client_id, g.subject, l.backchannel_logout_session_required AS session_required, s.sid \
         FROM grants g JOIN client_logout l ON l.client_id = g.client_id \
         LEFT JOIN session_clients s ON s.client_id = g.client_id AND s.account_id = g.account_id \
         WHERE g.account_id = $1 AND l.backchannel_logout_uri IS NOT NULL",
    )
    .bind(account_id)
    .fetch_all(db.pool())
    .await?)
}

/// Forgets every session of an account (its clients were queued a logout token).
pub async fn forget_account_sessions(tx: &mut Tx, account_id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM session_clients WHERE account_id = $1").bind(account_id).execute(tx).await?;
    Ok(())
}

/// Claims a due job (or the job `id`, if given and due) for `lease` seconds: of several instances
/// exactly one sends it. Returns the job and the client's back-channel logout URI.
pub async fn claim(db: &Db, id: Option<&str>, now: i64, lease: i64) -> Result<Option<(Job, String)>, StoreError> {
    let candidate: Option<String> = match id {
        Some(id) => Some(id.to_owned()),
        None => {
            sqlx::query_scalar(
                "SELECT id FROM backchannel_jobs WHERE next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT 1",
            )
            .bind(now)
            .fetch_optional(db.pool())
            .await?
        }
    };
    let Some(id) = candidate else { return Ok(None) };
    let mut tx = db.begin().await?;
    let job: Option<Job> = sqlx::query_as(
        "UPDATE backchannel_jobs SET next_attempt_at = $1 WHERE id = $2 AND next_attempt_at <= $3 \
         RETURNING id, client_id, subject, sid, attempts",
    )
    .bind(now + lease)
    .bind(&id)
    .bind(now)
    .fetch_optional(&mut tx)
    .await?;
    let Some(job) = job else {
        tx.rollback().await?;
        return Ok(None);
    };
    let uri: Option<String> =
        sqlx::query_scalar("SELECT backchannel_logout_uri FROM client_logout WHERE client_id = $1")
            .bind(&job.client_id)
            .fetch_optional(&mut tx)
            .await?
            .flatten();
    tx.commit().await?;
    match uri {
        Some(uri) => Ok(Some((job, uri))),
        None => {
            // The client dropped its back-channel URI since: nobody to tell.
            done(db, &job.id).await?;
            Ok(None)
        }
    }
}

/// Removes a delivered (or abandoned) job.
pub async fn done(db: &Db, id: &str) -> Result<(), StoreError> {
    db.execute(sqlx::query("DELETE FROM backchannel_jobs WHERE id = $1").bind(id)).await?;
    Ok(())
}

/// Records a failed attempt; the job is due again at `next_attempt_at`.
pub async fn failed(db: &Db, id: &str, next_attempt_at: i64, error: &str) -> Result<(), StoreError> {
    db.execute(
        sqlx::query(
            "UPDATE backchannel_jobs SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2 WHERE id = $3",
        )
        .bind(next_attempt_at)
        .bind(error)
        .bind(id),
    )
    .await?;
    Ok(())
}

/// Forgets which clients got tokens in sessions that cannot be alive any more (older than the
/// longest session).
pub async fn prune_sessions(db: &Db, before: i64) -> Result<u64, StoreError> {
    Ok(db.execute(sqlx::query("DELETE FROM session_clients WHERE created_at < $1").bind(before)).await?.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::sid_of;
    use crate::repo::sessions;

    async fn count(db: &Db, sql: &str, sid: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).bind(sid).fetch_one(db.pool()).await.unwrap()
    }

    /// A session's clients follow it through re-authentication (its id, and so its `sid`, change),
    /// and are owed a logout token when another account signs in over it.
    #[tokio::test]
    async fn re_authentication_keeps_the_clients_and_another_account_signing_in_tells_them() {
        let (db, _dir) = crate::test_db().await;
        for a in ["a1", "a2"] {
            db.execute(
                sqlx::query("INSERT INTO accounts (id, phone_hash, phone_enc, first_name, last_name, created_at) VALUES ($1, $1, 'x', 'И', 'Ф', 0)")
                    .bind(a),
            )
            .await
            .unwrap();
        }
        db.execute(sqlx::query(
            "INSERT INTO clients (client_id, name, redirect_uris, id_token_alg, sector, scopes, created_at) \
             VALUES ('c', 'C', '[]', 'EdDSA', 'c', 'openid', 0)",
        ))
        .await
        .unwrap();
        let reg =
            LogoutRegistration { backchannel_logout_uri: Some("https://c.example/bcl".into()), ..Default::default() };
        upsert_logout(&db, "c", &reg).await.unwrap();
        let (_, anon) = sessions::create_session(&db, 1, None).await.unwrap();
        let (_, first) = sessions::sign_in(&db, &anon, "a1", 2).await.unwrap();
        let mut tx = db.begin().await.unwrap();
        remember_client(&mut tx, &sid_of(&first.id_hash), "c", "a1", "s1", 2).await.unwrap();
        tx.commit().await.unwrap();
        let (_, again) = sessions::sign_in(&db, &first, "a1", 3).await.unwrap();
        let clients = "SELECT COUNT(*) FROM session_clients WHERE sid = $1";
        assert_eq!(count(&db, clients, &sid_of(&first.id_hash)).await, 0);
        assert_eq!(count(&db, clients, &sid_of(&again.id_hash)).await, 1);
        let jobs = "SELECT COUNT(*) FROM backchannel_jobs WHERE sid = $1";
        sessions::sign_in(&db, &again, "a2", 4).await.unwrap();
        assert_eq!(count(&db, clients, &sid_of(&again.id_hash)).await, 0);
        assert_eq!(count(&db, jobs, &sid_of(&again.id_hash)).await, 1, "a1's client is owed a logout token");
    }
}
