//! SMS send limits and phone lockout, held in the database so that they hold across instances.
//!
//! Every check-and-count is one atomic statement or one transaction that writes first, so concurrent
//! requests (on one instance or many) cannot both slip under a limit.

use edulink_domain::{CodePolicy, SmsLimits};
use edulink_store::{Db, StoreError, sqlx};

/// Why a code was not sent, with the seconds to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The phone is locked after too many wrong codes.
    Locked(i64),
    /// Less than the resend gap since the last send to this phone.
    TooSoon(i64),
    /// The phone's hourly or daily budget is spent.
    PhoneBudget(i64),
    /// The client IP's hourly budget is spent.
    IpBudget(i64),
    /// The service-wide hourly budget is spent (SMS pumping circuit breaker).
    Global(i64),
}

impl Refusal {
    /// Seconds until a retry may succeed.
    pub fn retry_after(self) -> i64 {
        match self {
            Refusal::Locked(s)
            | Refusal::TooSoon(s)
            | Refusal::PhoneBudget(s)
            | Refusal::IpBudget(s)
            | Refusal::Global(s) => s.max(1),
        }
    }

    /// A short name for metrics and audit.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Locked(_) => "locked",
            Refusal::TooSoon(_) => "too_soon",
            Refusal::PhoneBudget(_) => "phone_budget",
            Refusal::IpBudget(_) => "ip_budget",
            Refusal::Global(_) => "global_budget",
        }
    }
}

/// Admits one send to `phone_hash` from `ip` inside the caller's transaction, counting it against
/// every limit, or says why not. On a refusal the caller rolls the transaction back (drops it), so
/// nothing is counted.
pub async fn admit_send(
    tx: &mut edulink_store::Tx,
    phone_hash: &str,
    ip: &str,
    now: i64,
    limits: &SmsLimits,
) -> Result<Result<(), Refusal>, StoreError> {
    // Write first: this takes the phone's row lock (PostgreSQL) or the write lock (SQLite), so the
    // reads below see a stable state for this phone.
    sqlx::query("INSERT INTO phone_state (phone_hash) VALUES ($1) ON CONFLICT (phone_hash) DO NOTHING")
        .bind(phone_hash)
        .execute(&mut *tx)
        .await?;
    let admitted: Option<i64> = sqlx::query_scalar(
        "UPDATE phone_state SET last_sent_at = $2 \
         WHERE phone_hash = $1 AND last_sent_at <= $3 AND locked_until <= $2 RETURNING last_sent_at",
    )
    .bind(phone_hash)
    .bind(now)
    .bind(now - limits.resend_gap_secs)
    .fetch_optional(&mut *tx)
    .await?;
    if admitted.is_none() {
        let (last, locked): (i64, i64) =
            sqlx::query_as("SELECT last_sent_at, locked_until FROM phone_state WHERE phone_hash = $1")
                .bind(phone_hash)
                .fetch_one(&mut *tx)
                .await?;
        return Ok(Err(if locked > now {
            Refusal::Locked(locked - now)
        } else {
            Refusal::TooSoon(last + limits.resend_gap_secs - now)
        }));
    }
    // Exact sliding windows per phone, from the challenges themselves (one per send).
    for (window, cap) in [(3600, limits.per_phone_hour), (86_400, limits.per_phone_day)] {
        let (count, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(created_at) FROM sms_challenges WHERE phone_hash = $1 AND created_at > $2",
        )
        .bind(phone_hash)
        .bind(now - window)
        .fetch_one(&mut *tx)
        .await?;
        if count >= cap {
            return Ok(Err(Refusal::PhoneBudget(oldest.unwrap_or(now) + window - now)));
        }
    }
    // Fixed hourly windows per IP and for the whole service.
    let hour = now - now.rem_euclid(3600);
    for (bucket, cap, refusal) in [
        (format!("sms:ip:{ip}"), limits.per_ip_hour, Refusal::IpBudget(hour + 3600 - now)),
        ("sms:global".to_string(), limits.global_hour, Refusal::Global(hour + 3600 - now)),
    ] {
        let count: i64 = sqlx::query_scalar(
            "INSERT INTO rate_counters (bucket, window_start, count) VALUES ($1, $2, 1) \
             ON CONFLICT (bucket, window_start) DO UPDATE SET count = rate_counters.count + 1 RETURNING count",
        )
        .bind(&bucket)
        .bind(hour)
        .fetch_one(&mut *tx)
        .await?;
        if count > cap {
            if matches!(refusal, Refusal::Global(_)) {
                tracing::error!("global SMS budget exhausted: sends refused until the next hour");
            }
            return Ok(Err(refusal));
        }
    }
    Ok(Ok(()))
}

/// Seconds until the next send to this phone is allowed by the resend gap (0 when allowed now).
pub async fn resend_wait(db: &Db, phone_hash: &str, now: i64, limits: &SmsLimits) -> Result<i64, StoreError> {
    let last: Option<i64> = sqlx::query_scalar("SELECT last_sent_at FROM phone_state WHERE phone_hash = $1")
        .bind(phone_hash)
        .fetch_optional(db.pool())
        .await?;
    Ok(last.map_or(0, |l| (l + limits.resend_gap_secs - now).max(0)))
}

/// Takes one guess from the phone's allowance before a code is evaluated: the phone is not locked
/// and fewer than `phone_lock_after` guesses are counted since its last lock or success. The check
/// and the count are one statement (and the row stays locked until the caller commits), so guesses
/// sent together, to any instance, never evaluate more than the allowance. Returns the guess's
/// number, or `None` when nothing may be evaluated now. The guess counts as a failure until
/// [`clear_failures`] (a right code) gives it back.
pub async fn reserve_guess(
    tx: &mut edulink_store::Tx,
    phone_hash: &str,
    now: i64,
    policy: &CodePolicy,
) -> Result<Option<i64>, StoreError> {
    sqlx::query("INSERT INTO phone_state (phone_hash) VALUES ($1) ON CONFLICT (phone_hash) DO NOTHING")
        .bind(phone_hash)
        .execute(&mut *tx)
        .await?;
    Ok(sqlx::query_scalar(
        "UPDATE phone_state SET failures = failures + 1 \
         WHERE phone_hash = $1 AND locked_until <= $2 AND failures < $3 RETURNING failures",
    )
    .bind(phone_hash)
    .bind(now)
    .bind(policy.phone_lock_after)
    .fetch_optional(&mut *tx)
    .await?)
}

/// Settles a wrong guess reserved by [`reserve_guess`] as guess number `failures`: the last one of
/// the allowance locks the phone for `phone_lock_base_secs` and starts the count again, so a lock is
/// never extended by guesses (only by new ones, on codes sent after it, which the send caps bound).
/// Returns the lock's length when it locked.
pub async fn settle_failure(
    tx: &mut edulink_store::Tx,
    phone_hash: &str,
    failures: i64,
    now: i64,
    policy: &CodePolicy,
) -> Result<Option<i64>, StoreError> {
    let Some(secs) = policy.lock_secs(failures) else { return Ok(None) };
    sqlx::query("UPDATE phone_state SET locked_until = $2, failures = 0 WHERE phone_hash = $1")
        .bind(phone_hash)
        .bind(now + secs)
        .execute(&mut *tx)
        .await?;
    tracing::warn!(failures, lock_secs = secs, "phone locked after repeated wrong codes");
    Ok(Some(secs))
}

/// A correct code clears the phone's failure count.
pub async fn clear_failures(tx: &mut edulink_store::Tx, phone_hash: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE phone_state SET failures = 0 WHERE phone_hash = $1").bind(phone_hash).execute(tx).await?;
    Ok(())
}

/// The SMS conversion over the last hour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conversion {
    /// Codes sent.
    pub sent: i64,
    /// Codes verified.
    pub verified: i64,
    /// Whether it is low enough to alert.
    pub alert: bool,
}

/// Challenges created after `$1`, and how many of them were used (by index on `created_at`).
pub(crate) const CHALLENGES_SINCE: &str = "SELECT COUNT(*), COUNT(used_at) FROM sms_challenges WHERE created_at > $1";

/// Computes verified/sent over the last hour, publishes it as a gauge, and logs an error (the alert)
/// when many codes go out and few come back — the signature of SMS pumping.
pub async fn check_conversion(db: &Db, now: i64, alert: &crate::ConversionAlert) -> Result<Conversion, StoreError> {
    let (sent, verified): (i64, i64) = sqlx::query_as(CHALLENGES_SINCE).bind(now - 3600).fetch_one(db.pool()).await?;
    let ratio = if sent > 0 { verified as f64 / sent as f64 } else { 1.0 };
    metrics::gauge!("edulink_sms_conversion_ratio").set(ratio);
    metrics::gauge!("edulink_sms_sent_last_hour").set(sent as f64);
    let low = sent >= alert.min_sent && ratio < alert.below;
    if low {
        tracing::error!(
            sent,
            verified,
            ratio,
            threshold = alert.below,
            alert = "sms_conversion_low",
            "SMS conversion is low: possible SMS pumping"
        );
    }
    Ok(Conversion { sent, verified, alert: low })
}

/// Chat messages one account may post per minute (a child's flood, a stuck script).
pub const MESSAGES_PER_MINUTE: i64 = 20;
/// People searches one account may run per hour: a phone search tells whether a number is in MAX.
pub const SEARCHES_PER_HOUR: i64 = 30;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const LIMITS: SmsLimits =
        SmsLimits { resend_gap_secs: 60, per_phone_hour: 5, per_phone_day: 10, per_ip_hour: 7, global_hour: 12 };

    /// One send attempt as `login::send_code` makes it: admitted and its challenge stored in one
    /// transaction, or nothing written.
    async fn admit(db: &Db, phone: &str, ip: &str, now: i64) -> Result<(), Refusal> {
        edulink_store::retry(|| async {
            let mut tx = db.begin().await?;
            if let Err(refusal) = admit_send(&mut tx, phone, ip, now, &LIMITS).await? {
                return Ok(Err(refusal));
            }
            sqlx::query(
                "INSERT INTO sms_challenges (id, session_hash, phone_hash, phone_enc, code_mac, created_at, expires_at) \
                 VALUES ($1, 's', $2, 'e', 'm', $3, $4)",
            )
            .bind(edulink_domain::crypto::new_id())
            .bind(phone)
            .bind(now)
            .bind(now + 300)
            .execute(&mut tx)
            .await?;
            tx.commit().await?;
            Ok(Ok(()))
        })
        .await
        .unwrap()
    }

    /// Runs batches of concurrent send attempts (each batch at one instant), recording what was
    /// admitted.
    async fn run(batches: Vec<(i64, Vec<(usize, usize)>)>) -> Vec<(i64, usize, usize)> {
        let (db, _dir) = crate::test_db().await;
        let mut now = 1_800_000_000;
        let mut admitted = Vec::new();
        for (dt, ops) in batches {
            now += dt;
            let tasks: Vec<_> = ops
                .into_iter()
                .map(|(phone, ip)| {
                    let db = db.clone();
                    tokio::spawn(async move {
                        let ok = admit(&db, &format!("p{phone}"), &format!("ip{ip}"), now).await.is_ok();
                        (ok, phone, ip)
                    })
                })
                .collect();
            for t in tasks {
                let (ok, phone, ip) = t.await.unwrap();
                if ok {
                    admitted.push((now, phone, ip));
                }
            }
        }
        db.close().await;
        admitted
    }

    fn batches() -> impl Strategy<Value = Vec<(i64, Vec<(usize, usize)>)>> {
        prop::collection::vec((0i64..400, prop::collection::vec((0usize..3, 0usize..2), 1..6)), 1..40)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Whatever the interleaving of concurrent attempts, the limiter never admits more than its
        /// budget: per phone 60 s apart, ≤ 5 in any hour and ≤ 10 in any day; per IP and globally
        /// within the hourly windows.
        #[test]
        fn the_limiter_never_admits_more_than_its_budget(b in batches()) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let admitted = rt.block_on(run(b));
            for (i, &(t, phone, _)) in admitted.iter().enumerate() {
                let same: Vec<i64> = admitted.iter().filter(|x| x.1 == phone).map(|x| x.0).collect();
                prop_assert!(same.iter().filter(|&&u| u > t - 3600 && u <= t).count() <= 5);
                prop_assert!(same.iter().filter(|&&u| u > t - 86_400 && u <= t).count() <= 10);
                if let Some(&(prev, _, _)) = admitted[..i].iter().rev().find(|x| x.1 == phone) {
                    prop_assert!(t - prev >= 60, "gap {}", t - prev);
                }
            }
            let mut per_ip: HashMap<(usize, i64), i64> = HashMap::new();
            let mut global: HashMap<i64, i64> = HashMap::new();
            for &(t, _, ip) in &admitted {
                let hour = t - t.rem_euclid(3600);
                *per_ip.entry((ip, hour)).or_default() += 1;
                *global.entry(hour).or_default() += 1;
            }
            prop_assert!(per_ip.values().all(|&n| n <= 7));
            prop_assert!(global.values().all(|&n| n <= 12));
        }
    }

    #[tokio::test]
    async fn a_refused_send_counts_nothing() {
        let (db, _dir) = crate::test_db().await;
        let now = 1_800_000_000;
        assert!(admit(&db, "p", "ip", now).await.is_ok());
        assert_eq!(admit(&db, "p", "ip", now + 10).await, Err(Refusal::TooSoon(50)));
        let n: i64 = sqlx::query_scalar("SELECT count FROM rate_counters WHERE bucket = 'sms:ip:ip'")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(n, 1, "the refused attempt was not counted against the IP");
    }
}
