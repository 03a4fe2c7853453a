//! MAX's janitor, Сферум's tables included (they live in MAX's database): which rows have outlived
//! their purpose (docs/retention.md). The mechanism — lease, bounded batches, metric — is
//! `edulink_store::janitor`'s.

use crate::MaxState;
use crate::repo::sessions::ANON_IDLE_SECS;
use edulink_store::StoreError;
use edulink_store::janitor::{self, Batching, COUNTER_HORIZON_SECS, Purge, Retention, Swept};

/// What MAX's janitor deletes at `now`, in order.
pub fn purges(st: &MaxState, r: &Retention, now: i64) -> Vec<Purge> {
    let grace = r.expired_grace_secs;
    let (idle, absolute) = (st.cfg.session_idle_secs, st.cfg.session_absolute_secs);
    let p = |table, key, condition, binds: Vec<i64>| Purge { table, key, condition, binds };
    vec![
        p(
            "sessions",
            "id_hash",
            "(account_id IS NULL AND last_seen_at < $1) OR last_seen_at < $2 \
             OR (auth_at IS NOT NULL AND auth_at < $3)",
            vec![now - ANON_IDLE_SECS - grace, now - idle - grace, now - absolute - grace],
        ),
        p("session_clients", "sid, client_id", "created_at < $1", vec![now - absolute - grace]),
        // A client whose grant ended (an unlink, a swept grant) is told of no more logouts of the
        // account: what named its subject goes with the grant, not a session lifetime later.
        p(
            "session_clients",
            "sid, client_id",
            "created_at < $1 AND NOT EXISTS (SELECT 1 FROM grants g \
               WHERE g.client_id = session_clients.client_id AND g.account_id = session_clients.account_id)",
            vec![now - 60],
        ),
        p("auth_requests", "id", "expires_at < $1", vec![now - grace]),
        p("auth_codes", "code_hash", "expires_at < $1", vec![now - grace]),
        p("tokens", "token_hash", "expires_at < $1 OR (revoked_at IS NOT NULL AND revoked_at < $1)", vec![now - grace]),
        // The per-phone send caps look back a day (`limits::allow_send`): older challenges count
        // nothing, and their codes died minutes after they were sent.
        p("sms_challenges", "id", "created_at < $1 AND expires_at < $2", vec![now - COUNTER_HORIZON_SECS, now - grace]),
        // A phone with no send for two days and no lock running has no guess left to count.
        p("phone_state", "phone_hash", "last_sent_at < $1 AND locked_until < $1", vec![now - COUNTER_HORIZON_SECS]),
        p("rate_counters", "bucket, window_start", "window_start < $1", vec![now - COUNTER_HORIZON_SECS]),
        p("notifications", "id", "created_at < $1", vec![now - r.notifications_secs]),
        // A removed link's mark refuses late messages about it; past the unlinked period it goes —
        // unless a grant of the subject exists again (a new link consented, perhaps in flight: its
        // provision and a late detach are judged against this mark, docs/architecture.md).
        p(
            "link_marks",
            "sector, subject",
            "removed = 1 AND updated_at < $1 AND NOT EXISTS (SELECT 1 FROM grants g \
               JOIN clients c ON c.client_id = g.client_id \
               WHERE c.sector = link_marks.sector AND g.subject = link_marks.subject)",
            vec![now - r.unlinked_secs],
        ),
        p("audit", "id", "at < $1", vec![now - r.audit_secs]),
    ]
}

/// One run of MAX's janitor under its lease (`None`: another instance holds it).
pub async fn run(
    st: &MaxState,
    holder: &str,
    r: &Retention,
    batching: Batching,
    dry_run: bool,
) -> Result<Option<Vec<Swept>>, StoreError> {
    let clock = st.clock.clone();
    let list = purges(st, r, clock.now());
    janitor::run_leased(&st.db, holder, &move || clock.now(), &list, batching, dry_run).await
}
