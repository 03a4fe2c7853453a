//! The reconciliation pass: the diary's live links compared with MAX's grants of the diary's sector
//! (`GET /sferum/api/v1/links`, paged by subject), every difference repaired or reported
//! (docs/architecture.md, «Links across the two parties»). Runs periodically in `edulink serve`
//! and as `edulink admin reconcile`.
//!
//! A difference is read again, the diary's side first and then MAX's, before it is repaired: a link
//! stored after the diary's read was consented to at MAX before MAX's read, so the pass never takes
//! a link being made for one MAX lost.

use crate::audit::Event;
use crate::outbox::{self, Job};
use crate::rp::RpError;
use crate::{DiaryState, audit, links};
use edulink_domain::links::LinkEntry;
use edulink_store::{StoreError, sqlx};
use std::collections::{BTreeMap, HashSet};

/// The default period of the pass in `edulink serve`: ten minutes.
pub const DEFAULT_INTERVAL_SECS: i64 = 600;

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The diary's database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// MAX could not be asked.
    #[error(transparent)]
    Max(#[from] RpError),
}

/// A live link of the diary.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DiaryLink {
    /// The diary user.
    pub user_id: String,
    /// The pairwise subject.
    pub subject: String,
    /// Its generation.
    pub generation: i64,
}

/// What a difference calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// None: both parties agree.
    None,
    /// MAX has the grant but not this link provisioned (an older or no generation, or the profile
    /// unconfirmed): provision it again.
    Provision,
    /// MAX has no grant for the diary's link (lost or never finished): the link cannot work, so it
    /// ends in the diary too (the person links again).
    RemoveLocal,
    /// MAX holds a live link the diary no longer has (an unlink that never landed): detach it.
    Detach(i64),
    /// MAX has a grant no link claims (a link callback under way or unfinished): MAX revokes it
    /// after a bounded time; reported only.
    Awaiting,
    /// MAX holds a newer generation than the diary's live link: cannot happen unless a database was
    /// restored; reported for support.
    MaxNewer,
}

/// What to do about one subject, given each party's view of it.
pub fn decide(diary: Option<&DiaryLink>, max: Option<&LinkEntry>) -> Action {
    match (diary, max) {
        (None, None) => Action::None,
        (Some(d), Some(m)) => match m.generation {
            Some(g) if g == d.generation && m.confirmed => Action::None,
            Some(g) if g > d.generation => Action::MaxNewer,
            _ => Action::Provision,
        },
        (Some(_), None) => Action::RemoveLocal,
        (None, Some(m)) => match m.generation {
            Some(g) => Action::Detach(g),
            None => Action::Awaiting,
        },
    }
}

/// What a pass found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Subjects compared.
    pub checked: usize,
    /// Links provisioned again.
    pub reprovisioned: Vec<String>,
    /// Links ended in the diary because MAX has no grant for them.
    pub removed_locally: Vec<String>,
    /// Links MAX held that the diary no longer has: detached.
    pub detached: Vec<String>,
    /// Grants no link claims (yet): left to MAX's sweep.
    pub awaiting: Vec<String>,
    /// Differences only reported (MAX newer than the diary).
    pub reported: Vec<String>,
    /// Refused jobs made due again after the repairs.
    pub retried: u64,
}

impl Report {
    /// Differences repaired.
    pub fn repaired(&self) -> usize {
        self.reprovisioned.len() + self.removed_locally.len() + self.detached.len()
    }
}

/// The diary's links with a subject in `(after, until]` (`until` `None`: no upper bound).
async fn diary_links(st: &DiaryState, after: &str, until: Option<&str>) -> Result<Vec<DiaryLink>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT user_id, subject, generation FROM links WHERE issuer = $1 AND subject > $2 \
         AND ($3 IS NULL OR subject <= $3) ORDER BY subject",
    )
    .bind(st.rp.issuer())
    .bind(after)
    .bind(until)
    .fetch_all(st.db.pool())
    .await?)
}

/// The diary's live link of `subject`.
async fn diary_link(st: &DiaryState, subject: &str) -> Result<Option<DiaryLink>, StoreError> {
    Ok(sqlx::query_as("SELECT user_id, subject, generation FROM links WHERE issuer = $1 AND subject = $2")
        .bind(st.rp.issuer())
        .bind(subject)
        .fetch_optional(st.db.pool())
        .await?)
}

/// (kind, subject, generation) of every undelivered link job: a repair already under way is not
/// queued twice.
async fn queued(st: &DiaryState) -> Result<HashSet<(String, String, i64)>, StoreError> {
    let payloads: Vec<String> =
        sqlx::query_scalar("SELECT payload FROM outbox WHERE done_at IS NULL AND kind IN ('provision', 'unlink')")
            .fetch_all(st.db.pool())
            .await?;
    Ok(payloads
        .iter()
        .filter_map(|p| serde_json::from_str::<Job>(p).ok())
        .filter_map(|j| match j {
            Job::Provision { subject, generation, .. } => Some(("provision".to_owned(), subject, generation)),
            Job::Unlink { subject, generation, .. } => Some(("unlink".to_owned(), subject, generation)),
            _ => None,
        })
        .collect())
}

/// Runs one pass. Repairs go through the outbox (and are audited as `link_repaired`); refused jobs
/// are made due again at the end, so each runs once more against the repaired state.
pub async fn run(st: &DiaryState) -> Result<Report, ReconcileError> {
    let mut report = Report::default();
    let queued = queued(st).await?;
    let mut after = String::new();
    loop {
        let page = st.rp.links_page(&after, None).await?;
        let until = page.next.clone();
        let mut subjects: BTreeMap<String, (Option<DiaryLink>, Option<LinkEntry>)> = BTreeMap::new();
        for d in diary_links(st, &after, until.as_deref()).await? {
            let key = d.subject.clone();
            subjects.entry(key).or_default().0 = Some(d);
        }
        for m in page.links {
            let key = m.sub.clone();
            subjects.entry(key).or_default().1 = Some(m);
        }
        for (subject, (d, m)) in subjects {
            report.checked += 1;
            if decide(d.as_ref(), m.as_ref()) == Action::None {
                continue;
            }
            // Read again, the diary first, then act on the fresh views.
            let d = diary_link(st, &subject).await?;
            let m = st.rp.links_page("", Some(&subject)).await?.links.into_iter().next();
            repair(st, &mut report, &queued, &subject, d, m).await?;
        }
        match until {
            Some(next) => after = next,
            None => break,
        }
    }
    report.retried = outbox::retry_refused(st, None).await?;
    for (kind, n) in [
        ("reprovisioned", report.reprovisioned.len()),
        ("removed_locally", report.removed_locally.len()),
        ("detached", report.detached.len()),
        ("awaiting", report.awaiting.len()),
        ("reported", report.reported.len()),
    ] {
        metrics::counter!("edulink_reconcile_differences_total", "kind" => kind).increment(n as u64);
    }
    metrics::gauge!("edulink_reconcile_last_pass_timestamp_seconds").set(st.now() as f64);
    Ok(report)
}

async fn repair(
    st: &DiaryState,
    report: &mut Report,
    queued: &HashSet<(String, String, i64)>,
    subject: &str,
    d: Option<DiaryLink>,
    m: Option<LinkEntry>,
) -> Result<(), StoreError> {
    let now = st.now();
    match (decide(d.as_ref(), m.as_ref()), d) {
        (Action::None, _) => {}
        (Action::Provision, Some(d)) => {
            if !queued.contains(&("provision".to_owned(), d.subject.clone(), d.generation)) {
                let mut tx = st.db.begin().await?;
                let job =
                    Job::Provision { user_id: d.user_id.clone(), subject: d.subject.clone(), generation: d.generation };
                outbox::enqueue(&mut tx, &job, now).await?;
                audit::TRAIL.record_in(&mut tx, now, &record(subject, "reprovision", Some(&d.user_id))).await?;
                tx.commit().await?;
            }
            report.reprovisioned.push(subject.to_owned());
        }
        (Action::RemoveLocal, Some(d)) => {
            let mut tx = st.db.begin().await?;
            let removed = links::remove_in(
                &mut tx,
                &d.user_id,
                Some(d.generation),
                Event::LinkRepaired,
                None,
                Some("no grant at MAX"),
                now,
            )
            .await?;
            tx.commit().await?;
            if removed.is_some() {
                tracing::warn!(user = %d.user_id, "link ended: MAX has no grant for it");
                report.removed_locally.push(subject.to_owned());
            }
        }
        (Action::Detach(generation), None) => {
            if !queued.contains(&("unlink".to_owned(), subject.to_owned(), generation)) {
                let mut tx = st.db.begin().await?;
                let job = Job::Unlink { subject: subject.to_owned(), generation, refresh_enc: None };
                outbox::enqueue(&mut tx, &job, now).await?;
                audit::TRAIL.record_in(&mut tx, now, &record(subject, "detach", None)).await?;
                tx.commit().await?;
            }
            report.detached.push(subject.to_owned());
        }
        (Action::Awaiting, _) => report.awaiting.push(subject.to_owned()),
        (Action::MaxNewer, _) => {
            tracing::error!(subject, "MAX holds a newer link generation than the diary: restored database?");
            report.reported.push(subject.to_owned());
        }
        // `decide` gives these only with a diary link, or without one.
        (Action::Provision | Action::RemoveLocal, None) | (Action::Detach(_), Some(_)) => {}
    }
    st.outbox_wake.notify_one();
    Ok(())
}

/// The audit record of a repair.
fn record<'a>(subject: &'a str, detail: &'a str, user: Option<&'a str>) -> audit::Record<'a> {
    let r = audit::Record::new(Event::LinkRepaired).subject(subject).detail(detail);
    match user {
        Some(u) => r.principal(u),
        None => r,
    }
}

/// Runs the pass every `reconcile_interval_secs` until `shutdown` fires (the first one a full period
/// after start, when the outbox has had its chance).
pub async fn worker(st: DiaryState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let secs = st.cfg.reconcile_interval_secs;
    if secs <= 0 {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(secs as u64)) => {}
            _ = shutdown.changed() => return,
        }
        match run(&st).await {
            Ok(r) if r.repaired() + r.reported.len() > 0 => tracing::warn!(
                checked = r.checked,
                reprovisioned = r.reprovisioned.len(),
                removed_locally = r.removed_locally.len(),
                detached = r.detached.len(),
                reported = r.reported.len(),
                "reconciliation with MAX repaired differences"
            ),
            Ok(r) => tracing::info!(checked = r.checked, awaiting = r.awaiting.len(), "links agree with MAX"),
            Err(e) => tracing::warn!(error = %e, "reconciliation with MAX not run"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(generation: i64) -> DiaryLink {
        DiaryLink { user_id: "u".into(), subject: "s".into(), generation }
    }

    fn m(generation: Option<i64>, confirmed: bool) -> LinkEntry {
        LinkEntry { sub: "s".into(), generation, confirmed, consented_at: 0 }
    }

    /// Every combination of the two views gets one action.
    #[test]
    fn each_difference_has_its_repair() {
        assert_eq!(decide(Some(&d(3)), Some(&m(Some(3), true))), Action::None);
        assert_eq!(decide(Some(&d(3)), Some(&m(Some(3), false))), Action::Provision);
        assert_eq!(decide(Some(&d(3)), Some(&m(Some(2), true))), Action::Provision);
        assert_eq!(decide(Some(&d(3)), Some(&m(None, false))), Action::Provision);
        assert_eq!(decide(Some(&d(3)), Some(&m(Some(4), true))), Action::MaxNewer);
        assert_eq!(decide(Some(&d(3)), None), Action::RemoveLocal);
        assert_eq!(decide(None, Some(&m(Some(2), true))), Action::Detach(2));
        assert_eq!(decide(None, Some(&m(None, false))), Action::Awaiting);
        assert_eq!(decide(None, None), Action::None);
    }
}
