//! OpenID Connect Back-Channel Logout 1.0 at the provider: when a MAX session ends (the end-session
//! endpoint, MAX's «Выйти», the app's sign-out) every client that received an ID token in that
//! session and registered a `backchannel_logout_uri` is sent a logout token (§2.4: `typ`
//! `logout+jwt`, `iss`, `aud`, `iat`, `exp`, `jti`, `sub` and `sid`, the back-channel `events`
//! member, never a `nonce`), posted as the form parameter `logout_token` (§2.5).
//!
//! Delivery must survive a crash: each token to send is a row of `backchannel_jobs`, written in the
//! transaction that ends the session, tried at once, and retried with exponential backoff by
//! whichever instance's [`worker`] claims it, until the client answers 2xx or [`MAX_ATTEMPTS`] have
//! failed (about two days). The token is signed at each attempt, so a retry is never stale.
//! [`account_deleted`] is what a deletion of a MAX account calls first: every client of the
//! account is told, with a token naming only the subject (§2.4: `sid` absent ends every session).

use crate::audit::{Event, Record};
use crate::oidc::clients::cached_client;
use crate::repo::logout::{self as store, Job};
use crate::{MaxState, audit};
use edulink_domain::crypto::random_token;
use edulink_store::StoreError;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::watch;

/// The `events` member that makes a JWT a logout token (§2.4).
pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// A logout token is valid this long (§2.4 recommends a short lifetime: two minutes).
pub const LOGOUT_TOKEN_TTL: i64 = 120;
/// After this many failed attempts a job is dropped (and audited as given up).
pub const MAX_ATTEMPTS: i64 = 40;
/// How long an instance holds a claimed job before another may try it.
const LEASE_SECS: i64 = 60;
/// The worker's poll interval when nothing wakes it.
const POLL: Duration = Duration::from_secs(5);
/// How often the worker forgets the clients of sessions that cannot be alive any more.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// The HTTP client of the back channel (made on first use: most processes never sign anybody
/// out, and a TLS client costs start-up time) and the worker's wake-up call.
#[derive(Debug, Default)]
pub struct Courier {
    http: std::sync::OnceLock<reqwest::Client>,
    wake: tokio::sync::Notify,
}

impl Courier {
    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            reqwest::Client::builder()
                // A logout URI is registered by the client: never follow it elsewhere (SSRF).
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(5))
                .build()
                .expect("HTTP client")
        })
    }

    /// Wakes the worker (a job was queued that the immediate attempt did not deliver).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Seconds to wait after `attempts` failed attempts: 10 s doubling, at most an hour.
pub fn backoff(attempts: i64) -> i64 {
    (10i64 << attempts.clamp(0, 20)).min(3600)
}

/// The claims of a logout token for `job`, issued at `now` (§2.4).
pub fn logout_claims(issuer: &str, job: &Job, now: i64) -> serde_json::Value {
    let mut claims = json!({
        "iss": issuer,
        "aud": job.client_id,
        "iat": now,
        "exp": now + LOGOUT_TOKEN_TTL,
        "jti": random_token(16),
        "sub": job.subject,
        "events": { BACKCHANNEL_EVENT: {} },
    });
    if let Some(sid) = &job.sid {
        claims["sid"] = sid.clone().into();
    }
    claims
}

/// Why one delivery failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("client unknown")]
    NoClient,
    #[error("signing: {0}")]
    Sign(String),
    #[error("send: {0}")]
    Send(String),
    #[error("status {0}")]
    Status(u16),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Signs and posts the logout token of `job` to `uri`.
async fn send(st: &MaxState, job: &Job, uri: &str) -> Result<(), Failure> {
    let client = cached_client(st, &job.client_id).await?.ok_or(Failure::NoClient)?;
    let now = st.now();
    let claims = logout_claims(&st.cfg.issuer, job, now);
    let token = st
        .keys
        .sign_typed(&client.id_token_alg, "logout+jwt", &claims, now)
        .map_err(|e| Failure::Sign(e.to_string()))?;
    let resp = st
        .backchannel
        .http()
        .post(uri)
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .map_err(|e| Failure::Send(e.without_url().to_string()))?;
    if resp.status().is_success() { Ok(()) } else { Err(Failure::Status(resp.status().as_u16())) }
}

/// Claims one due job (the job `id` if given) and tries it. Returns false when there was nothing
/// to claim.
pub async fn attempt(st: &MaxState, id: Option<&str>) -> Result<bool, StoreError> {
    let now = st.now();
    let Some((job, uri)) = store::claim(&st.db, id, now, LEASE_SECS).await? else { return Ok(false) };
    match send(st, &job, &uri).await {
        Ok(()) => {
            store::done(&st.db, &job.id).await?;
            metrics::counter!("edulink_backchannel_logout_total", "result" => "sent").increment(1);
            let r = Record::new(Event::BackchannelSent).client(&job.client_id).subject(&job.subject);
            audit::TRAIL.record(&st.db, st.now(), &r.detail(if job.sid.is_some() { "sid" } else { "sub" })).await;
        }
        Err(e) => {
            let error = e.to_string();
            tracing::warn!(client = %job.client_id, attempts = job.attempts + 1, error = %error, "logout token not delivered");
            if job.attempts + 1 >= MAX_ATTEMPTS {
                store::done(&st.db, &job.id).await?;
                metrics::counter!("edulink_backchannel_logout_total", "result" => "gave_up").increment(1);
                let r = Record::new(Event::BackchannelGaveUp).client(&job.client_id).subject(&job.subject);
                audit::TRAIL.record(&st.db, st.now(), &r.detail(&error)).await;
            } else {
                metrics::counter!("edulink_backchannel_logout_total", "result" => "retry").increment(1);
                store::failed(&st.db, &job.id, now + backoff(job.attempts), &error).await?;
            }
        }
    }
    Ok(true)
}

/// Tries every due job once (at most `limit`). Returns how many were tried.
pub async fn deliver_due(st: &MaxState, limit: usize) -> Result<usize, StoreError> {
    let mut n = 0;
    while n < limit && attempt(st, None).await? {
        n += 1;
    }
    Ok(n)
}

/// Tries the jobs just queued, in the background: a sign-out answers at once, the clients hear of
/// it within moments, and what fails is left to the [`worker`].
pub fn send_now(st: &MaxState, ids: Vec<String>) {
    if ids.is_empty() {
        return;
    }
    let st = st.clone();
    tokio::spawn(async move {
        for id in ids {
            if let Err(e) = attempt(&st, Some(&id)).await {
                tracing::warn!(error = %e, "logout token left to the worker");
            }
        }
        st.backchannel.wake();
    });
}

/// Delivers due logout tokens until `shutdown`, and forgets the clients of sessions that cannot be
/// alive any more.
pub async fn worker(st: MaxState, mut shutdown: watch::Receiver<bool>) {
    let mut pruned = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = st.backchannel.wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = deliver_due(&st, 100).await {
            tracing::warn!(error = %e, "logout tokens not delivered");
        }
        if pruned.elapsed() >= PRUNE_EVERY {
            // A write: once in a while, not on every poll.
            pruned = std::time::Instant::now();
            if let Err(e) = store::prune_sessions(&st.db, st.now() - st.cfg.session_absolute_secs).await {
                tracing::warn!(error = %e, "session clients not pruned");
            }
        }
    }
}

/// Tells every client of `account_id` that the account is gone: a deletion of a MAX account calls
/// this before it deletes anything (the grants name the clients). A client that registered
/// `backchannel_logout_session_required` gets one token per session it got an ID token in (with
/// `sid`); every other client one token naming the subject only, which ends all its sessions of
/// the account (§2.4). Returns the number of tokens queued.
pub async fn account_deleted(st: &MaxState, account_id: &str) -> Result<usize, StoreError> {
    let now = st.now();
    let targets = store::clients_of_account(&st.db, account_id).await?;
    let mut tokens: BTreeSet<(String, String, Option<String>)> = BTreeSet::new();
    for t in targets {
        let sid = if t.session_required != 0 {
            match t.sid {
                Some(sid) => Some(sid),
                None => continue,
            }
        } else {
            None
        };
        tokens.insert((t.client_id, t.subject, sid));
    }
    let mut tx = st.db.begin().await?;
    let mut ids = Vec::new();
    for (client_id, subject, sid) in &tokens {
        if let Some(id) = store::enqueue(&mut tx, client_id, subject, sid.as_deref(), now).await? {
            ids.push(id);
        }
    }
    store::forget_account_sessions(&mut tx, account_id).await?;
    tx.commit().await?;
    let n = ids.len();
    send_now(st, ids);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// §2.4: the claims a logout token must and must not carry.
    #[test]
    fn a_logout_token_has_the_required_claims_and_no_nonce() {
        let job =
            Job { id: "j".into(), client_id: "mesh".into(), subject: "s".into(), sid: Some("x".into()), attempts: 0 };
        let c = logout_claims("https://max.example", &job, 1_000);
        assert_eq!(c["aud"], "mesh");
        assert_eq!(c["exp"], 1_000 + LOGOUT_TOKEN_TTL);
        assert_eq!(c["sid"], "x");
        assert!(c["events"][BACKCHANNEL_EVENT].is_object());
        assert!(c.get("nonce").is_none());
        assert!(c["jti"].as_str().is_some_and(|j| j.len() >= 16));
        let job = Job { sid: None, ..job };
        assert!(logout_claims("https://max.example", &job, 1_000).get("sid").is_none());
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(0), 10);
        assert_eq!(backoff(1), 20);
        assert_eq!(backoff(30), 3600);
    }
}
