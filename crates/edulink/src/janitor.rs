//! The janitor's wiring (docs/retention.md): a task per party inside `edulink serve`, and
//! `edulink janitor [--dry-run]`. Each party's janitor works on its own database under its own
//! lease; the rules are `edulink_diary::janitor` and `edulink_max::janitor`.

use crate::config::Config;
use edulink_diary::DiaryState;
use edulink_max::MaxState;
use edulink_store::janitor::{Batching, Retention, Swept};
use tokio::sync::watch;

/// What a janitor runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The periods.
    pub retention: Retention,
    /// The batches.
    pub batching: Batching,
    /// Seconds between runs in `serve` (0: never).
    pub interval_secs: i64,
    /// Who holds the lease while this process runs (host, process, boot).
    pub holder: String,
}

impl Settings {
    /// From the configuration, with a holder name distinct per process.
    pub fn new(cfg: &Config) -> Self {
        Settings {
            retention: cfg.retention.to_retention(),
            batching: cfg.janitor.batching(),
            interval_secs: cfg.janitor.interval_secs,
            holder: format!(
                "{}/{}/{}",
                crate::app::host_name(),
                std::process::id(),
                edulink_domain::crypto::random_token(6)
            ),
        }
    }
}

/// Which party's janitor.
#[derive(Clone)]
pub enum Party {
    /// The diary's.
    Diary(DiaryState),
    /// MAX's (Сферум's tables included).
    Max(MaxState),
}

impl Party {
    fn name(&self) -> &'static str {
        match self {
            Party::Diary(_) => "diary",
            Party::Max(_) => "max",
        }
    }

    /// One run (`None`: another instance holds the lease).
    pub async fn run(&self, s: &Settings, dry_run: bool) -> Result<Option<Vec<Swept>>, edulink_store::StoreError> {
        match self {
            Party::Diary(st) => edulink_diary::janitor::run(st, &s.holder, &s.retention, s.batching, dry_run).await,
            Party::Max(st) => edulink_max::janitor::run(st, &s.holder, &s.retention, s.batching, dry_run).await,
        }
    }
}

/// Runs `party`'s janitor every `interval_secs` until shutdown (the first run one interval after
/// start, so a fleet starting together does not sweep at once).
pub async fn worker(party: Party, s: Settings, mut shutdown: watch::Receiver<bool>) {
    if s.interval_secs <= 0 {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(s.interval_secs as u64)) => {}
            _ = shutdown.changed() => return,
        }
        match party.run(&s, false).await {
            Ok(Some(swept)) => {
                let rows: u64 = swept.iter().map(|t| t.rows).sum();
                tracing::info!(party = party.name(), rows, "janitor run");
            }
            Ok(None) => tracing::debug!(party = party.name(), "janitor run by another instance"),
            Err(e) => tracing::warn!(party = party.name(), error = %e, "janitor run failed"),
        }
    }
}

/// `edulink janitor [--dry-run]`: one run of both parties' janitors (each under its lease, so it
/// never overlaps a run inside `serve`), printing rows per table.
pub async fn run_cli(cfg: &Config, dry_run: bool) -> anyhow::Result<()> {
    use edulink_domain::SystemClock;
    use std::sync::Arc;
    let s = Settings::new(cfg);
    let max = crate::app::max_state(cfg, Arc::new(SystemClock)).await?;
    let diary = crate::app::diary_state(cfg, Arc::new(SystemClock)).await?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    for party in [Party::Diary(diary.clone()), Party::Max(max.clone())] {
        match party.run(&s, dry_run).await? {
            None => println!("{}: another instance holds the janitor lease; nothing done", party.name()),
            Some(swept) => {
                for t in swept {
                    println!("{}.{}: {verb} {} rows", party.name(), t.table, t.rows);
                }
            }
        }
    }
    diary.db.close().await;
    max.db.close().await;
    Ok(())
}
