//! Fixed-window rate counters (table `rate_counters`, which both parties have).

use crate::{Db, StoreError, Tx};

/// Counts one event in `bucket`'s fixed window of `window` seconds (table `rate_counters`, which
/// both parties have); `Err(wait)` once more than `cap` happened in it (the refused event counts
/// too, so hammering does not help). Count and check are one statement, so the cap holds across
/// concurrent requests and instances.
pub async fn count_in_window(
    db: &Db,
    bucket: &str,
    window: i64,
    cap: i64,
    now: i64,
) -> Result<Result<(), i64>, StoreError> {
    count_on(db.writer(), bucket, window, cap, now).await
}

/// [`count_in_window`] inside the caller's write transaction, so the count commits with the
/// change it admits (one commit instead of two). A refusal is counted too: commit the
/// transaction either way.
pub async fn count_in_window_in(
    tx: &mut Tx,
    bucket: &str,
    window: i64,
    cap: i64,
    now: i64,
) -> Result<Result<(), i64>, StoreError> {
    count_on(&mut *tx, bucket, window, cap, now).await
}

async fn count_on<'c, E: sqlx::Executor<'c, Database = sqlx::Any>>(
    executor: E,
    bucket: &str,
    window: i64,
    cap: i64,
    now: i64,
) -> Result<Result<(), i64>, StoreError> {
    let start = now - now.rem_euclid(window);
    let count: i64 = sqlx::query_scalar(
        "INSERT INTO rate_counters (bucket, window_start, count) VALUES ($1, $2, 1) \
         ON CONFLICT (bucket, window_start) DO UPDATE SET count = rate_counters.count + 1 RETURNING count",
    )
    .bind(bucket)
    .bind(start)
    .fetch_one(executor)
    .await?;
    Ok(if count > cap { Err(start + window - now) } else { Ok(()) })
}

/// One limit a [`reserve`] call takes an attempt from: at most `cap` attempts in `bucket`'s fixed
/// window of `window` seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// The counter's name (`login-fail:alice`, `login-fail-ip:10.0.0.1`).
    pub bucket: String,
    /// Window length, seconds.
    pub window: i64,
    /// Attempts admitted per window.
    pub cap: i64,
}

/// Attempts taken by [`reserve`], one per limit, to give back where the policy says so (a right
/// password is not a failure). Keeps each window's start, so an attempt taken just before a window
/// boundary is given back to its own window.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a reservation is kept (a failure) or given back (a success)"]
pub struct Reservation {
    taken: Vec<(String, i64)>,
}

/// Takes one attempt from every limit in `limits` before the secret they protect is evaluated, or
/// none: `Err(wait)` when any is spent, with the seconds until its window ends. One transaction of
/// conditional increments (`count < cap`), so concurrent requests on any number of instances never
/// take more than `cap` attempts; a refusal takes nothing from any limit.
pub async fn reserve(db: &Db, limits: &[Limit], now: i64) -> Result<Result<Reservation, i64>, StoreError> {
    crate::retry(|| async {
        let mut tx = db.begin().await?;
        let mut taken = Vec::with_capacity(limits.len());
        for l in limits {
            let start = now - now.rem_euclid(l.window);
            let count: Option<i64> = sqlx::query_scalar(
                "INSERT INTO rate_counters (bucket, window_start, count) VALUES ($1, $2, 1) \
                 ON CONFLICT (bucket, window_start) DO UPDATE SET count = rate_counters.count + 1 \
                 WHERE rate_counters.count < $3 RETURNING count",
            )
            .bind(&l.bucket)
            .bind(start)
            .bind(l.cap)
            .fetch_optional(&mut tx)
            .await?;
            if count.is_none_or(|c| c > l.cap) {
                // Dropping the transaction gives back what the earlier limits took.
                return Ok(Err((start + l.window - now).max(1)));
            }
            taken.push((l.bucket.clone(), start));
        }
        tx.commit().await?;
        Ok(Ok(Reservation { taken }))
    })
    .await
}

impl Reservation {
    /// Gives every attempt back (the policy says this one was not a failure).
    pub async fn give_back(self, db: &Db) -> Result<(), StoreError> {
        let mut tx = db.begin().await?;
        for (bucket, start) in &self.taken {
            sqlx::query(
                "UPDATE rate_counters SET count = count - 1 WHERE bucket = $1 AND window_start = $2 AND count > 0",
            )
            .bind(bucket)
            .bind(start)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await
    }
}

/// Forgets every attempt counted in `bucket` (all windows): a right password clears its login's
/// failures (NIST SP 800-63B §3.2.2: previous failures are disregarded after a success).
pub async fn clear_bucket(db: &Db, bucket: &str) -> Result<(), StoreError> {
    db.execute(sqlx::query("DELETE FROM rate_counters WHERE bucket = $1").bind(bucket)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> (tempfile::TempDir, Db) {
        let (dir, db) = crate::migrate::tests::sqlite().await;
        db.execute(sqlx::query(
            "CREATE TABLE rate_counters (bucket TEXT NOT NULL, window_start BIGINT NOT NULL, count BIGINT NOT NULL, \
             PRIMARY KEY (bucket, window_start))",
        ))
        .await
        .unwrap();
        (dir, db)
    }

    async fn count(db: &Db, bucket: &str) -> i64 {
        sqlx::query_scalar("SELECT COALESCE(SUM(count), 0) FROM rate_counters WHERE bucket = $1")
            .bind(bucket)
            .fetch_one(db.pool())
            .await
            .unwrap()
    }

    fn limit(bucket: &str, cap: i64) -> Limit {
        Limit { bucket: bucket.into(), window: 3600, cap }
    }

    /// All or nothing: a spent limit refuses and takes nothing from the others; a refusal is not
    /// counted (the cap is reached, not exceeded); a given-back attempt returns to its own window.
    #[tokio::test]
    async fn a_reservation_is_all_or_nothing_and_given_back_to_its_window() {
        let (_dir, db) = db().await;
        let now = 1_800_000_000 - 10; // 10 s before a window ends
        let both = [limit("login", 2), limit("ip", 3)];
        let first = reserve(&db, &both, now).await.unwrap().unwrap();
        let _kept = reserve(&db, &both, now).await.unwrap().unwrap();
        assert_eq!(reserve(&db, &both, now).await.unwrap(), Err(10), "login spent: wait for the window's end");
        assert_eq!((count(&db, "login").await, count(&db, "ip").await), (2, 2), "the refusal took nothing");
        // Given back after the window ended: the old window's count goes down, the new one is untouched.
        first.give_back(&db).await.unwrap();
        assert_eq!((count(&db, "login").await, count(&db, "ip").await), (1, 1));
        let _new = reserve(&db, &[limit("ip", 3)], now + 20).await.unwrap().unwrap();
        let new_window: i64 =
            sqlx::query_scalar("SELECT count FROM rate_counters WHERE bucket = 'ip' AND window_start = $1")
                .bind(1_800_000_000i64)
                .fetch_one(db.pool())
                .await
                .unwrap();
        assert_eq!(new_window, 1);
        clear_bucket(&db, "login").await.unwrap();
        assert_eq!(count(&db, "login").await, 0);
    }
}
