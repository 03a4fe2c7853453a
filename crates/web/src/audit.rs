//! The audit trail of both parties: one record type, one writer, one vocabulary of events.
//!
//! Records are pseudonymous (docs/architecture.md, «Rules»; SECURITY.md): a party's own principal id
//! (the diary's user id, MAX's account id), the link's pairwise subject, the OIDC client, the client
//! IP and a short detail — never a phone number, a name, a code or a token. Each party keeps its
//! own `audit` table in its own database; [`Trail`] names the table's principal column, so the SQL
//! and the code that fills it are shared.

use edulink_store::{Db, StoreError, Tx, sqlx};

/// What happened. The stored name is [`Event::as_str`]; it never changes once released, because
/// support queries and the «Безопасность» history filter on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    // Diary.
    /// A diary sign-in (web, app or handoff: see the detail).
    Login,
    /// A link stored after a valid callback.
    Link,
    /// A link refused because one side is already linked.
    LinkConflict,
    /// A link ended (web, app API or operator CLI: see the detail).
    Unlink,
    /// A callback whose `state` matched no transaction of this session.
    CallbackBadState,
    /// A callback whose `iss` was not MAX's (RFC 9207).
    CallbackBadIss,
    /// A callback whose code exchange or ID token failed validation.
    CallbackInvalid,
    /// A provisioning call to MAX failed (the detail: `unavailable`, retried; or `refused`).
    ProvisioningFailed,
    /// Detaching or revoking at MAX failed (the detail: `unavailable`, retried; or `refused`).
    RevocationFailed,
    /// A teacher changed a lesson.
    LessonChanged,
    /// A teacher cancelled a lesson.
    LessonCancelled,
    /// A logout token from MAX ended the Сферум state of a link (the detail: `sid` or `sub`).
    BackchannelLogout,
    /// A logout token was refused (the detail names the failed check).
    BackchannelRefused,
    // MAX.
    /// An SMS code was admitted and handed to the gateway.
    SmsSent,
    /// An SMS send was refused by a limit (the detail names it).
    SmsRefused,
    /// The SMS gateway failed to take a message.
    SmsFailed,
    /// A form arrived with a repeated parameter.
    ParamPollution,
    /// A wrong code was entered.
    CodeWrong,
    /// A wrong code locked the phone (failures across codes reached the lock threshold).
    PhoneLocked,
    /// A code was used up by wrong tries.
    CodeDead,
    /// A code was entered correctly.
    CodeVerified,
    /// A person signed in to MAX.
    SignIn,
    /// A MAX account was registered.
    Register,
    /// An authorization code was issued after consent.
    Authorize,
    /// An `id_token_hint` that did not verify was ignored and the sign-in went on without it
    /// (OIDC Core §3.1.2.1; the detail says why: `signature`, `issuer` or `subject`).
    HintIgnored,
    /// An authorization code was presented twice; what it issued is revoked.
    CodeReplay,
    /// A used refresh token was presented again; its family is revoked.
    RefreshReuse,
    /// A token was revoked at the client's request (RFC 7009).
    TokenRevoked,
    /// The diary attached school data to a Сферум profile.
    SferumAttached,
    /// The diary detached a Сферум profile.
    SferumDetached,
    /// A grant that never became a link (an unfinished link callback) was revoked with its tokens.
    GrantExpired,
    /// A MAX session ended (the detail: `end_session`, `web` or `app`).
    Logout,
    /// A logout token was delivered to a client (the detail: `sid` or `sub`).
    BackchannelSent,
    /// A logout token could not be delivered after every retry (the detail: the last error).
    BackchannelGaveUp,
    // Diary.
    /// The reconciliation with MAX repaired a difference (the detail names it).
    LinkRepaired,
}

impl Event {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Event::Login => "login",
            Event::Link => "link",
            Event::LinkConflict => "link_conflict",
            Event::Unlink => "unlink",
            Event::CallbackBadState => "callback_bad_state",
            Event::CallbackBadIss => "callback_bad_iss",
            Event::CallbackInvalid => "callback_invalid",
            Event::ProvisioningFailed => "provisioning_failed",
            Event::RevocationFailed => "revocation_failed",
            Event::LessonChanged => "lesson_changed",
            Event::LessonCancelled => "lesson_cancelled",
            Event::BackchannelLogout => "backchannel_logout",
            Event::BackchannelRefused => "backchannel_refused",
            Event::SmsSent => "sms_sent",
            Event::SmsRefused => "sms_refused",
            Event::SmsFailed => "sms_failed",
            Event::ParamPollution => "param_pollution",
            Event::CodeWrong => "code_wrong",
            Event::PhoneLocked => "phone_locked",
            Event::CodeDead => "code_dead",
            Event::CodeVerified => "code_verified",
            Event::SignIn => "sign_in",
            Event::Register => "register",
            Event::Authorize => "authorize",
            Event::HintIgnored => "hint_ignored",
            Event::CodeReplay => "code_replay",
            Event::RefreshReuse => "refresh_reuse",
            Event::TokenRevoked => "token_revoked",
            Event::SferumAttached => "sferum_attached",
            Event::SferumDetached => "sferum_detached",
            Event::GrantExpired => "grant_expired",
            Event::LinkRepaired => "link_repaired",
            Event::Logout => "logout",
            Event::BackchannelSent => "backchannel_sent",
            Event::BackchannelGaveUp => "backchannel_gave_up",
        }
    }
}

/// One audit record. Build it with [`Record::new`] and the setters; unset fields are stored as NULL.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// What happened.
    pub event: Event,
    /// The party's own principal: the diary's user id or MAX's account id.
    pub principal: Option<&'a str>,
    /// The link's pairwise subject (`sub` of the diary's client at MAX).
    pub subject: Option<&'a str>,
    /// The OIDC client involved.
    pub client: Option<&'a str>,
    /// The client IP.
    pub ip: Option<&'a str>,
    /// A short, non-personal detail (a channel such as `app`, a limit's name, a lesson id).
    pub detail: Option<&'a str>,
}

impl<'a> Record<'a> {
    /// A record of `event` with every other field unset.
    pub const fn new(event: Event) -> Self {
        Record { event, principal: None, subject: None, client: None, ip: None, detail: None }
    }
    /// Sets the principal (diary user id or MAX account id).
    pub const fn principal(mut self, v: &'a str) -> Self {
        self.principal = Some(v);
        self
    }
    /// Sets the pairwise subject.
    pub const fn subject(mut self, v: &'a str) -> Self {
        self.subject = Some(v);
        self
    }
    /// Sets the OIDC client.
    pub const fn client(mut self, v: &'a str) -> Self {
        self.client = Some(v);
        self
    }
    /// Sets the client IP.
    pub const fn ip(mut self, v: &'a str) -> Self {
        self.ip = Some(v);
        self
    }
    /// Sets the detail.
    pub const fn detail(mut self, v: &'a str) -> Self {
        self.detail = Some(v);
        self
    }
    /// Sets the client IP when there is one.
    pub const fn ip_opt(mut self, v: Option<&'a str>) -> Self {
        self.ip = v;
        self
    }
    /// Sets the detail when there is one.
    pub const fn detail_opt(mut self, v: Option<&'a str>) -> Self {
        self.detail = v;
        self
    }
}

/// A party's audit table.
#[derive(Debug, Clone, Copy)]
pub struct Trail {
    insert: &'static str,
}

impl Trail {
    /// The diary's table: the principal is `user_id`.
    pub const DIARY: Trail = Trail {
        insert: "INSERT INTO audit (id, at, event, user_id, subject, client_id, ip, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    };
    /// MAX's table: the principal is `account`.
    pub const MAX: Trail = Trail {
        insert: "INSERT INTO audit (id, at, event, account, subject, client_id, ip, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    };

    fn query<'q>(&self, now: i64, r: &Record<'q>) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        sqlx::query(self.insert)
            .bind(edulink_domain::crypto::new_id())
            .bind(now)
            .bind(r.event.as_str())
            .bind(r.principal)
            .bind(r.subject)
            .bind(r.client)
            .bind(r.ip)
            .bind(r.detail)
    }

    /// Writes `r` inside the caller's transaction: it commits with the change it records (one commit
    /// instead of two), and a failure fails the change.
    pub async fn record_in(&self, tx: &mut Tx, now: i64, r: &Record<'_>) -> Result<(), StoreError> {
        self.query(now, r).execute(&mut *tx).await?;
        tracing::info!(event = r.event.as_str(), principal = r.principal, client = r.client, "audit");
        Ok(())
    }

    /// Writes `r` on its own. A failure is logged and swallowed: the action it records already
    /// happened, and auditing must not turn it into an error for the user (the log line is alerted on).
    pub async fn record(&self, db: &Db, now: i64, r: &Record<'_>) {
        match db.execute(self.query(now, r)).await {
            Ok(_) => tracing::info!(event = r.event.as_str(), principal = r.principal, client = r.client, "audit"),
            Err(e) => tracing::error!(event = r.event.as_str(), error = %e, "audit record not written"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edulink_store::PoolConfig;

    async fn db(table: &str) -> (Db, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("a.db").display()), &PoolConfig::default())
            .await
            .unwrap();
        let mut tx = db.begin().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(table.to_string())).execute(&mut tx).await.unwrap();
        tx.commit().await.unwrap();
        (db, dir)
    }

    type Row = (String, i64, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>);

    #[tokio::test]
    async fn one_record_shape_lands_in_each_partys_table() {
        for (trail, principal, table) in [
            (
                Trail::DIARY,
                "user_id",
                "CREATE TABLE audit (id TEXT PRIMARY KEY, at BIGINT, event TEXT, user_id TEXT, subject TEXT, ip TEXT, detail TEXT, client_id TEXT)",
            ),
            (
                Trail::MAX,
                "account",
                "CREATE TABLE audit (id TEXT PRIMARY KEY, at BIGINT, event TEXT, account TEXT, client_id TEXT, ip TEXT, detail TEXT, subject TEXT)",
            ),
        ] {
            let (db, _dir) = db(table).await;
            let r =
                Record::new(Event::Unlink).principal("u1").subject("s1").client("mesh").ip("10.0.0.1").detail("admin");
            let mut tx = db.begin().await.unwrap();
            trail.record_in(&mut tx, 7, &r).await.unwrap();
            tx.commit().await.unwrap();
            trail.record(&db, 8, &Record::new(Event::SmsRefused).ip("10.0.0.2")).await;
            let sql = format!("SELECT event, at, {principal}, subject, client_id, ip, detail FROM audit ORDER BY at");
            let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(db.pool()).await.unwrap();
            let s = |v: &str| Some(v.to_string());
            assert_eq!(rows[0], ("unlink".into(), 7, s("u1"), s("s1"), s("mesh"), s("10.0.0.1"), s("admin")));
            assert_eq!(rows[1], ("sms_refused".into(), 8, None, None, None, s("10.0.0.2"), None));
        }
    }

    #[test]
    fn stored_names_are_distinct() {
        use std::collections::HashSet;
        let all = [
            Event::Login,
            Event::Link,
            Event::LinkConflict,
            Event::Unlink,
            Event::CallbackBadState,
            Event::CallbackBadIss,
            Event::CallbackInvalid,
            Event::ProvisioningFailed,
            Event::RevocationFailed,
            Event::LessonChanged,
            Event::LessonCancelled,
            Event::SmsSent,
            Event::SmsRefused,
            Event::SmsFailed,
            Event::ParamPollution,
            Event::CodeWrong,
            Event::PhoneLocked,
            Event::CodeDead,
            Event::CodeVerified,
            Event::SignIn,
            Event::Register,
            Event::Authorize,
            Event::CodeReplay,
            Event::RefreshReuse,
            Event::TokenRevoked,
            Event::SferumAttached,
            Event::SferumDetached,
            Event::BackchannelLogout,
            Event::BackchannelRefused,
            Event::Logout,
            Event::BackchannelSent,
            Event::BackchannelGaveUp,
        ];
        assert_eq!(all.iter().map(|e| e.as_str()).collect::<HashSet<_>>().len(), all.len());
    }
}
