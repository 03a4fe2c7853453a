//! The diary's janitor (docs/retention.md): which of its rows have outlived their purpose. The
//! mechanism — lease, bounded batches, metric — is `edulink_store::janitor`'s.

use crate::DiaryState;
use crate::repo::ROTATION_GRACE_SECS;
use edulink_store::StoreError;
use edulink_store::janitor::{self, Batching, COUNTER_HORIZON_SECS, Purge, Retention, Swept};

/// What the diary's janitor deletes at `now`, in order.
pub fn purges(st: &DiaryState, r: &Retention, now: i64) -> Vec<Purge> {
    let grace = r.expired_grace_secs;
    let p = |table, key, condition, binds: Vec<i64>| Purge { table, key, condition, binds };
    vec![
        p(
            "sessions",
            "id_hash",
            "last_seen_at < $1 OR created_at < $2 OR (replaced_at IS NOT NULL AND replaced_at < $3)",
            vec![
                now - st.cfg.session_idle_secs - grace,
                now - st.cfg.session_absolute_secs - grace,
                now - ROTATION_GRACE_SECS - grace,
            ],
        ),
        p("oidc_transactions", "state_hash", "expires_at < $1", vec![now - grace]),
        p("api_tokens", "token_hash", "expires_at < $1", vec![now - grace]),
        p("handoff_tickets", "ticket_hash", "expires_at < $1", vec![now - grace]),
        p("logout_jtis", "jti", "expires_at < $1", vec![now - grace]),
        p("rate_counters", "bucket, window_start", "window_start < $1", vec![now - COUNTER_HORIZON_SECS]),
        p("outbox", "id", "done_at IS NOT NULL AND done_at < $1", vec![now - r.outbox_done_secs]),
        p("audit", "id", "at < $1", vec![now - r.audit_secs]),
    ]
}

/// One run of the diary's janitor under its lease (`None`: another instance holds it).
pub async fn run(
    st: &DiaryState,
    holder: &str,
    r: &Retention,
    batching: Batching,
    dry_run: bool,
) -> Result<Option<Vec<Swept>>, StoreError> {
    let clock = st.clock.clone();
    let list = purges(st, r, clock.now());
    janitor::run_leased(&st.db, holder, &move || clock.now(), &list, batching, dry_run).await
}
