//! The durable outbox of calls to MAX that must not be lost: provisioning Сферум after a link,
//! detaching and revoking after an unlink, revoking tokens of a link that could not be stored.
//!
//! A job is written in the same transaction as the change that needs it, so a crash at any instant
//! leaves either both or neither. Delivery is tried at once and then retried with backoff by a
//! worker; every call is idempotent at MAX, so delivering twice is harmless. Jobs are claimed with
//! an atomic lease, so several diary instances never deliver the same job at the same time.

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
    },
    /// Detach the profile and revoke the link's tokens.
    Unlink {
        /// The former subject.
        subject: String,
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
pub async fn enqueue_claimed(tx: &mut edulink_store::Tx, job: &Job, now: i64) -> Result<String, StoreError> {
    let id = format!("{:012x}-{}", now, random_token(9));
    sqlx::query(
        "INSERT INTO outbox (id, kind, payload, attempts, next_attempt_at, created_at) VALUES ($1, $2, $3, 1, $4, $5)",
    )
    .bind(&id)
    .bind(job.kind())
    .bind(serde_json::to_string(job).expect("jobs serialize"))
    .bind(now + LEASE_SECS)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(id)
}

/// Delivers a job written by [`enqueue_claimed`] (the caller holds its lease).
pub async fn deliver_claimed(st: &DiaryState, id: &str, job: &Job) -> Result<bool, StoreError> {
    let outcome = run(st, job).await;
    finish(st, id, 1, outcome).await
}

/// Claims and delivers job `id` now, if it is due and nobody else holds it. Returns whether it was
/// delivered.
pub async fn deliver(st: &DiaryState, id: &str) -> Result<bool, StoreError> {
    let now = st.now();
    let claimed: Option<(String, i64)> = sqlx::query_as(
        "UPDATE outbox SET next_attempt_at = $2, attempts = attempts + 1 \
         WHERE id = $1 AND done_at IS NULL AND next_attempt_at <= $3 RETURNING payload, attempts",
    )
    .bind(id)
    .bind(now + LEASE_SECS)
    .bind(now)
    .fetch_optional(st.db.writer())
    .await?;
    let Some((payload, attempts)) = claimed else {
        return Ok(false);
    };
    let outcome = match serde_json::from_str::<Job>(&payload) {
        Ok(job) => run(st, &job).await,
        Err(e) => Err(RpError::Refused(format!("unreadable job: {e}"))),
    };
    finish(st, id, attempts, outcome).await
}

/// Records the outcome of an attempt: done, refused for good, or retried with backoff.
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
            tracing::error!(job = id, error = %e, "outbox job refused for good");
            st.db
                .execute(
                    sqlx::query("UPDATE outbox SET done_at = $2, last_error = $3 WHERE id = $1")
                        .bind(id)
                        .bind(now)
                        .bind(format!("refused: {e}")),
                )
                .await?;
            metrics::counter!("edulink_outbox_refused_total").increment(1);
            Ok(false)
        }
        Err(e) => {
            let backoff = (1i64 << attempts.clamp(0, 12)).min(3600);
            tracing::warn!(job = id, attempts, retry_in = backoff, error = %e, "outbox job failed, will retry");
            st.db
                .execute(
                    sqlx::query("UPDATE outbox SET next_attempt_at = $2, last_error = $3 WHERE id = $1")
                        .bind(id)
                        .bind(now + backoff)
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
        "SELECT id FROM outbox WHERE done_at IS NULL AND next_attempt_at <= $1 ORDER BY id LIMIT 50",
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

/// Jobs not delivered yet.
pub async fn pending(st: &DiaryState) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE done_at IS NULL").fetch_one(st.db.pool()).await?)
}

/// Runs the delivery loop until `shutdown` fires: on every wake-up and at least every 2 seconds.
pub async fn worker(st: DiaryState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        if let Err(e) = run_due(&st).await {
            tracing::warn!(error = %e, "outbox pass failed");
        }
        tokio::select! {
            _ = st.outbox_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
    }
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
        Job::Provision { user_id, subject } => {
            // Sent as the diary knows it at delivery time; if the link is gone, so is the job.
            match repo::link(&st.db, user_id).await.map_err(|e| RpError::Unavailable(e.to_string()))? {
                Some(l) if l.subject == *subject => {}
                _ => return Ok(()),
            }
            let profile = sferum::profile_of(st, user_id).await.map_err(|e| RpError::Unavailable(e.to_string()))?;
            st.rp.provision(subject, &profile).await
        }
        Job::Unlink { subject, refresh_enc } => {
            st.rp.detach(subject).await?;
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
