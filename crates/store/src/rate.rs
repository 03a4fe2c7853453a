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
