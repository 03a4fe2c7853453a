//! The durable outbox of calls to MAX that must not be lost: provisioning Сферум after a link,
//! detaching and revoking after an unlink, revoking tokens of a link that could not be stored.
//!
//! A job is written in the same transaction as the change that needs it, so a crash at any instant
//! leaves either both or neither. Delivery is tried at once and then retried with backoff by a
//! worker; every call is idempotent at MAX, so delivering twice is harmless. Jobs are claimed with
//! an atomic lease, so several diary instances never deliver the same job at the same time.
//!
//! Backoff doubles per attempt up to `outbox_max_backoff_secs` ([`backoff`]). A long outage thus
//! leaves every job waiting up to the cap; so that none waits that long once MAX is back, the
//! worker watches MAX while jobs wait ([`worker`]): when MAX answers again after it did not, every
//! waiting job is due at once. `last_error` holds the error of a job's last finished attempt and
//! is cleared when an attempt begins, which tells a job waiting out a backoff from one leased to a
//! deliverer.
//!
//! Every job about a link carries the link's generation (docs/architecture.md, «Links across the
//! two parties»): a job whose link is no longer the current one is superseded — done without
//! changing anything at MAX — and MAX itself answers `409 stale_link` to a message it knows is late.
//! A job MAX refuses for good is not marked done: it waits, counted by the gauge
//! `edulink_outbox_refused`, for the reconciliation ([`crate::reconcile`]) to repair what made it
//! refused and retry it, or for support (`edulink admin outbox`). A lease names the instance and
//! boot that holds it, so an instance restarted after a crash takes its own leases back at once
//! ([`release_own_leases`]).

use crate::rp::RpError;
use crate::{DiaryState, repo, sferum};
use edulink_domain::crypto::random_token;
use edulink_store::{StoreError, sqlx};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A call to MAX.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// Send the user's current school data to their profile.
    Provision {
        /// Diary user.
        user_id: String,
        /// Their subject at MAX.
        subject: String,
        /// The link's generation (0 for links made before generations).
        #[serde(default)]
        generation: i64,
    },
    /// Detach the profile and revoke the link's tokens.
    Unlink {
        /// The former subject.
        subject: String,
        /// The removed link's generation.
        #[serde(default)]
        generation: i64,
        /// The link's refresh token, encrypted.
        refresh_enc: Option<String>,
    },
    /// Revoke a refresh token that belongs to no link.
    Revoke {
        /// Encrypted refresh token.
        refresh_enc: String,
    },
    /// Tell Сферум a distance lesson's current state (created, moved, changed, cancelled).
    Lesson {
        /// The diary's lesson id.
        lesson_id: String,
    },
}

impl Job {
    fn kind(&self) -> &'static str {
        match self {
            Job::Provision { .. } => "provision",
            Job::Unlink { .. } => "unlink",
            Job::Revoke { .. } => "revoke",
            Job::Lesson { .. } => "lesson",
        }
    }
}

/// How long a claimed job is leased to one deliverer.
const LEASE_SECS: i64 = 60;

/// Who holds a lease: the instance (stable across its restarts, distinct within a fleet: by default
/// its host and listening address) and this boot of it (new at every start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The instance.
    pub instance: String,
    /// This boot.
    pub boot: String,
}

impl Lease {
    /// A new boot of `instance`.
    pub fn boot(instance: &str) -> Self {
        Lease { instance: instance.to_owned(), boot: random_token(9) }
    }
}

/// The default of `outbox_max_backoff_secs`: five minutes.
pub const DEFAULT_MAX_BACKOFF_SECS: i64 = 300;

/// How often the worker looks for due jobs (and, while jobs wait, whether MAX answers).
pub const TICK: Duration = Duration::from_secs(2);

/// Seconds to wait after failed attempt number `attempts`: 2, 4, 8, … doubling, never more than
/// `cap` (nor less than a second).
pub fn backoff(attempts: i64, cap: i64) -> i64 {
    (1i64 << attempts.clamp(1, 30)).min(cap.max(1))
}

/// Writes a job inside the caller's transaction; returns its id.
pub async fn enqueue(tx: &mut edulink_store::Tx, job: &Job, now: i64) -> Result<String, StoreError> {
    // Ids sort by creation time, so jobs are delivered in the order they were made.
    let id = format!("{:012x}-{}", now, random_token(9));
    sqlx::query("INSERT INTO outbox (id, kind, payload, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $4)")
        .bind(&id)
        .bind(job.kind())
        .bind(serde_json::to_string(job).expect("jobs serialize"))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    Ok(id)
}

/// Writes a job inside the caller's transaction already claimed by the caller (its first attempt
/// leased), for [`deliver_claimed`] right after the commit: one write fewer than enqueue + claim. If
/// the caller never delivers (a crash), the worker takes the job when the lease ends.
pub async fn enqueue_claimed(
    tx: &mut edulink_store::Tx,
    lease: &Lease,
    job: &Job,
    now: i64,
) -> Result<String, StoreError> {
    let id = format!("{:012x}-{}", now, random_token(9));
    sqlx::query(
        "INSERT INTO outbox (id, kind, payload, attempts, next_attempt_at, created_at, lease_owner, lease_boot) \
         VALUES ($1, $2, $3, 1, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(job.kind())
    .bind(serde_json::to_string(job).expect("jobs serialize"))
    .bind(now + LEASE_SECS)
    .bind(now)
    .bind(&lease.instance)
    .bind(&lease.boot)
    .execute(&mut *tx)
    .await?;
    Ok(id)
}

/// Delivers a job written by [`enqueue_claimed`] (the caller holds its lease).
pub async fn deliver_claimed(st: &DiaryState, id: &str, job: &Job) -> Result<bool, StoreError> {
    let outcome = run(st, job).await;
    audit_failure(st, job, 1, &outcome).await;
    finish(st, id, 1, outcome).await
}

/// Claims and delivers job `id` now, if it is due and nobody else holds it. Returns whether it was
/// delivered.
pub async fn deliver(st: &DiaryState, id: &str) -> Result<bool, StoreError> {
    let now = st.now();
    let claimed: Option<(String, i64)> = sqlx::query_as(
        "UPDATE outbox SET next_attempt_at = $2, attempts = attempts + 1, last_error = NULL, lease_owner = $4, \
           lease_boot = $5 \
         WHERE id = $1 AND done_at IS NULL AND refused_at IS NULL AND next_attempt_at <= $3 RETURNING payload, attempts",
    )
    .bind(id)
    .bind(now + LEASE_SECS)
    .bind(now)
    .bind(&st.lease.instance)
    .bind(&st.lease.boot)
    .fetch_optional(st.db.writer())
    .await?;
    let Some((payload, attempts)) = claimed else {
        return Ok(false);
    };
    let outcome = match serde_json::from_str::<Job>(&payload) {
        // The worker's jobs each get a trace of their own; a request's delivery stays in its trace.
        Ok(job) if edulink_web::trace::current().is_none() => {
            edulink_web::trace::in_new_trace("outbox", run(st, &job)).await
        }
        Ok(job) => run(st, &job).await,
        Err(e) => Err(RpError::Refused(format!("unreadable job: {e}"))),
    };
    if let Ok(job) = serde_json::from_str::<Job>(&payload) {
        audit_failure(st, &job, attempts, &outcome).await;
    }
    finish(st, id, attempts, outcome).await
}

/// Audits a failed provisioning or revocation (the detach and revocation of an unlink count as
/// revocation): on the first failed attempt and when MAX refuses for good, not on every retry. The
/// detail is the kind of failure, never the error text (it may quote a token endpoint's answer).
async fn audit_failure(st: &DiaryState, job: &Job, attempts: i64, outcome: &Result<(), RpError>) {
    use crate::audit::{Event, Record, TRAIL};
    let Err(e) = outcome else { return };
    let refused = matches!(e, RpError::Refused(_));
    if attempts > 1 && !refused {
        return;
    }
    let detail = if refused { "refused" } else { "unavailable" };
    let record = match job {
        Job::Provision { user_id, subject, .. } => {
            Record::new(Event::ProvisioningFailed).principal(user_id).subject(subject).detail(detail)
        }
        Job::Unlink { subject, .. } => Record::new(Event::RevocationFailed).subject(subject).detail(detail),
        Job::Revoke { .. } => Record::new(Event::RevocationFailed).detail(detail),
        Job::Lesson { .. } => return,
    };
    TRAIL.record(&st.db, st.now(), &record).await;
}

/// Records the outcome of an attempt: done, refused for good (kept for the reconciliation and
/// support), or retried with backoff.
async fn finish(st: &DiaryState, id: &str, attempts: i64, outcome: Result<(), RpError>) -> Result<bool, StoreError> {
    let now = st.now();
    match outcome {
        Ok(()) => {
            st.db
                .execute(
                    sqlx::query("UPDATE outbox SET done_at = $2, last_error = NULL WHERE id = $1").bind(id).bind(now),
                )
                .await?;
            metrics::counter!("edulink_outbox_delivered_total").increment(1);
            Ok(true)
        }
        Err(RpError::Refused(e)) => {
            tracing::error!(job = id, error = %e, "outbox job refused: waiting for the reconciliation or support");
            st.db
                .execute(
                    sqlx::query("UPDATE outbox SET refused_at = $2, last_error = $3 WHERE id = $1")
                        .bind(id)
                        .bind(now)
                        .bind(format!("refused: {e}")),
                )
                .await?;
            metrics::counter!("edulink_outbox_refused_total").increment(1);
            Ok(false)
        }
        Err(e) => {
            let wait = backoff(attempts, st.cfg.outbox_max_backoff_secs);
            tracing::warn!(job = id, attempts, retry_in = wait, error = %e, "outbox job failed, will retry");
            st.db
                .execute(
                    sqlx::query("UPDATE outbox SET next_attempt_at = $2, last_error = $3 WHERE id = $1")
                        .bind(id)
                        .bind(now + wait)
                        .bind(e.to_string()),
                )
                .await?;
            metrics::counter!("edulink_outbox_retries_total").increment(1);
            Ok(false)
        }
    }
}

/// Delivers every due job once. Returns how many were delivered.
pub async fn run_due(st: &DiaryState) -> Result<usize, StoreError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM outbox WHERE done_at IS NULL AND refused_at IS NULL AND next_attempt_at <= $1 \
         ORDER BY id LIMIT 50",
    )
    .bind(st.now())
    .fetch_all(st.db.pool())
    .await?;
    let mut delivered = 0;
    for id in ids {
        if deliver(st, &id).await? {
            delivered += 1;
        }
    }
    Ok(delivered)
}

/// Jobs not delivered yet (refused ones aside: see [`refused`]).
pub async fn pending(st: &DiaryState) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE done_at IS NULL AND refused_at IS NULL")
        .fetch_one(st.db.pool())
        .await?)
}

/// A job MAX refused for good, waiting for the reconciliation or support.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Refused {
    /// Its id.
    pub id: String,
    /// `provision`, `unlink`, `revoke` or `lesson`.
    pub kind: String,
    /// What MAX said.
    pub last_error: Option<String>,
    /// When, Unix seconds.
    pub refused_at: i64,
    /// Attempts made.
    pub attempts: i64,
}

/// The refused jobs, oldest first.
pub async fn refused(st: &DiaryState) -> Result<Vec<Refused>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, kind, last_error, refused_at, attempts FROM outbox \
         WHERE refused_at IS NOT NULL AND done_at IS NULL ORDER BY refused_at, id",
    )
    .fetch_all(st.db.pool())
    .await?)
}

/// Makes refused jobs due again (all, or the one with `id`): support's retry, and the
/// reconciliation's after its repairs. Returns how many.
pub async fn retry_refused(st: &DiaryState, id: Option<&str>) -> Result<u64, StoreError> {
    let done = st
        .db
        .execute(
            sqlx::query(
                "UPDATE outbox SET refused_at = NULL, next_attempt_at = $1 \
                 WHERE refused_at IS NOT NULL AND done_at IS NULL AND ($2 IS NULL OR id = $2)",
            )
            .bind(st.now())
            .bind(id),
        )
        .await?;
    st.outbox_wake.notify_one();
    Ok(done.rows_affected())
}

/// Makes the jobs leased by an earlier boot of this instance due now: it crashed (this boot is
/// running in its place), so nobody will finish them. Leases of other instances are left to end.
/// Returns how many.
pub async fn release_own_leases(st: &DiaryState) -> Result<u64, StoreError> {
    let now = st.now();
    let released = st
        .db
        .execute(
            sqlx::query(
                "UPDATE outbox SET next_attempt_at = $1, lease_owner = NULL, lease_boot = NULL \
                 WHERE done_at IS NULL AND refused_at IS NULL AND next_attempt_at > $1 AND last_error IS NULL \
                   AND lease_owner = $2 AND lease_boot <> $3",
            )
            .bind(now)
            .bind(&st.lease.instance)
            .bind(&st.lease.boot),
        )
        .await?;
    if released.rows_affected() > 0 {
        tracing::info!(jobs = released.rows_affected(), "outbox leases of a previous boot released");
        st.outbox_wake.notify_one();
    }
    Ok(released.rows_affected())
}

/// The jobs not delivered yet, as the worker reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Backlog {
    /// Jobs not delivered yet.
    pub pending: i64,
    /// When the oldest of them was written, Unix seconds.
    pub oldest_created_at: Option<i64>,
    /// Those waiting out a backoff after a failed attempt.
    pub waiting: i64,
    /// Those refused for good, waiting for the reconciliation or support (not in `pending`).
    pub refused: i64,
}

/// The backlog now.
pub async fn backlog(st: &DiaryState) -> Result<Backlog, StoreError> {
    Ok(sqlx::query_as(
        "SELECT COALESCE(SUM(CASE WHEN refused_at IS NULL THEN 1 ELSE 0 END), 0) AS pending, \
           MIN(CASE WHEN refused_at IS NULL THEN created_at END) AS oldest_created_at, \
           COALESCE(SUM(CASE WHEN refused_at IS NULL AND last_error IS NOT NULL AND next_attempt_at > $1 \
             THEN 1 ELSE 0 END), 0) AS waiting, \
           COALESCE(SUM(CASE WHEN refused_at IS NOT NULL THEN 1 ELSE 0 END), 0) AS refused \
         FROM outbox WHERE done_at IS NULL",
    )
    .bind(st.now())
    .fetch_one(st.db.pool())
    .await?)
}

/// Makes every job that waits out a backoff due now (not those leased to a deliverer). Returns
/// how many.
pub async fn wake_waiting(st: &DiaryState) -> Result<u64, StoreError> {
    let now = st.now();
    let woken = st
        .db
        .execute(
            sqlx::query(
                "UPDATE outbox SET next_attempt_at = $1 \
                 WHERE done_at IS NULL AND refused_at IS NULL AND last_error IS NOT NULL AND next_attempt_at > $1",
            )
            .bind(now),
        )
        .await?;
    Ok(woken.rows_affected())
}

/// Whether MAX answered when the worker last looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Answering,
    Silent,
}

/// Runs the delivery loop until `shutdown` fires: on every wake-up and at least every [`TICK`].
/// Each pass also sets the gauges `edulink_outbox_pending` and
/// `edulink_outbox_oldest_age_seconds`. While jobs wait out a backoff, a pass that delivered
/// nothing asks MAX whether it answers ([`crate::rp::RelyingParty::answers`], one small GET);
/// when it answers — or a delivery succeeds — after a pass found it silent, every waiting job
/// becomes due and the next pass follows at once: after an outage, deliveries resume within a
/// tick instead of after the backoff.
pub async fn worker(st: DiaryState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut peer = Peer::Answering;
    loop {
        let delivered = run_due(&st).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "outbox pass failed");
            0
        });
        match backlog(&st).await {
            Ok(b) => {
                metrics::gauge!("edulink_outbox_pending").set(b.pending as f64);
                let age = b.oldest_created_at.map_or(0, |t| (st.now() - t).max(0));
                metrics::gauge!("edulink_outbox_oldest_age_seconds").set(age as f64);
                metrics::gauge!("edulink_outbox_refused").set(b.refused as f64);
                if b.waiting > 0 {
                    let answers = delivered > 0 || st.rp.answers().await;
                    if answers && peer == Peer::Silent {
                        peer = Peer::Answering;
                        match wake_waiting(&st).await {
                            Ok(n) => tracing::info!(jobs = n, "MAX answers again: waiting outbox jobs are due now"),
                            Err(e) => tracing::warn!(error = %e, "waiting outbox jobs not woken"),
                        }
                        continue;
                    }
                    peer = if answers { Peer::Answering } else { Peer::Silent };
                }
            }
            Err(e) => tracing::warn!(error = %e, "outbox backlog not read"),
        }
        tokio::select! {
            _ = st.outbox_wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Counts a job whose link is no longer the current one (nothing to change at MAX).
fn superseded(job: &Job) {
    tracing::info!(kind = job.kind(), "outbox job superseded by a newer state of its link");
    metrics::counter!("edulink_outbox_superseded_total", "kind" => job.kind()).increment(1);
}

async fn run(st: &DiaryState, job: &Job) -> Result<(), RpError> {
    let open = |enc: &str| {
        st.cipher
            .open("links.refresh", enc)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| RpError::Refused("refresh token cannot be decrypted".into()))
    };
    match job {
        Job::Provision { user_id, subject, generation } => {
            // Sent as the diary knows it at delivery time, for this link only: if the link is gone
            // or another one took its place, the job is superseded.
            match repo::link(&st.db, user_id).await.map_err(|e| RpError::Unavailable(e.to_string()))? {
                Some(l) if l.subject == *subject && l.generation == *generation => {}
                _ => {
                    superseded(job);
                    return Ok(());
                }
            }
            let profile = sferum::profile_of(st, user_id).await.map_err(|e| RpError::Unavailable(e.to_string()))?;
            match st.rp.provision(subject, *generation, &profile).await {
                Err(RpError::Stale(_)) => {
                    superseded(job);
                    Ok(())
                }
                Ok(()) => {
                    edulink_web::metrics::funnel("provisioned");
                    Ok(())
                }
                Err(e) => {
                    edulink_web::metrics::funnel_failure("provisioning_failed");
                    Err(e)
                }
            }
        }
        Job::Unlink { subject, generation, refresh_enc } => {
            // A newer link of the same subject (the account linked again since) is not this
            // job's to detach: only the old link's own tokens go.
            let newer: Option<i64> =
                sqlx::query_scalar("SELECT generation FROM links WHERE issuer = $1 AND subject = $2")
                    .bind(st.rp.issuer())
                    .bind(subject)
                    .fetch_optional(st.db.pool())
                    .await
                    .map_err(|e| RpError::Unavailable(e.to_string()))?;
            if newer.is_some_and(|g| g >= *generation) {
                superseded(job);
            } else {
                match st.rp.detach(subject, *generation).await {
                    Err(RpError::Stale(_)) => {
                        superseded(job);
                    }
                    other => other?,
                }
            }
            if let Some(enc) = refresh_enc {
                st.rp.revoke(&open(enc)?).await?;
            }
            Ok(())
        }
        Job::Revoke { refresh_enc } => st.rp.revoke(&open(refresh_enc)?).await,
        Job::Lesson { lesson_id } => {
            // Sent as the lesson is at delivery time, under its current revision: a job delivered
            // twice, or after a later one, changes nothing at Сферум.
            let Some(lesson) =
                repo::lesson(&st.db, lesson_id).await.map_err(|e| RpError::Unavailable(e.to_string()))?
            else {
                return Ok(());
            };
            let push = sferum::push_of(st, &lesson).await.map_err(|e| RpError::Unavailable(e.to_string()))?;
            st.rp.push_lesson(&push).await.map(|_| ())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backoff doubles from 2 s and never exceeds the configured cap (issue 17: it reached an
    /// hour), whatever the attempt count, even past the width of the shift.
    #[test]
    fn backoff_doubles_up_to_the_cap_and_never_past_it() {
        assert_eq!((1..=5).map(|a| backoff(a, 300)).collect::<Vec<_>>(), [2, 4, 8, 16, 32]);
        for cap in [10, 60, 300, 3600] {
            let mut last = 0;
            for attempts in -1..200 {
                let b = backoff(attempts, cap);
                assert!((1..=cap).contains(&b), "attempt {attempts}, cap {cap}: {b}");
                assert!(b >= last, "never shorter than the attempt before");
                last = b;
            }
            assert_eq!(last, cap, "a long outage reaches the cap");
        }
        assert_eq!(backoff(i64::MAX, DEFAULT_MAX_BACKOFF_SECS), 300);
    }
}
