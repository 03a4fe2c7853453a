//! How long each party keeps what (`EDULINK_RETENTION__*`) and how its janitor runs
//! (`EDULINK_JANITOR__*`): docs/retention.md and docs/deployment.md.

use edulink_store::janitor::{Batching, DAY, Retention, UNLINKED_MAX_SECS};
use serde::{Deserialize, Serialize};

/// Retention periods; bounds in [`RetentionSection::check`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Audit records of both parties, days (30 to 1095; default 365).
    pub audit_days: i64,
    /// The diary's outbox jobs once delivered, days (1 to 90; default 7).
    pub outbox_done_days: i64,
    /// MAX's notifications, days (1 to 365; default 30).
    pub notifications_days: i64,
    /// What an ended link leaves behind, days (1 to 30, the most 152-FZ art. 21 allows; default 30).
    pub unlinked_days: i64,
    /// Expired sessions, codes, tokens and tickets kept after their expiry, seconds (0 to 7 days;
    /// default a day).
    pub expired_grace_secs: i64,
}

/// The janitor's schedule and batches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JanitorSection {
    /// Seconds between two runs inside `edulink serve` (0: never; otherwise 60 to 86400; default
    /// 3600). One instance of a fleet runs at a time (a lease row in each party's database).
    pub interval_secs: i64,
    /// Rows deleted per statement (10 to 10000; default 500).
    pub batch_rows: i64,
    /// Pause between two statements, milliseconds (0 to 1000; default 10).
    pub pause_ms: u64,
}

impl Default for RetentionSection {
    fn default() -> Self {
        let r = Retention::default();
        Self {
            audit_days: r.audit_secs / DAY,
            outbox_done_days: r.outbox_done_secs / DAY,
            notifications_days: r.notifications_secs / DAY,
            unlinked_days: r.unlinked_secs / DAY,
            expired_grace_secs: r.expired_grace_secs,
        }
    }
}

impl Default for JanitorSection {
    fn default() -> Self {
        Self { interval_secs: 3600, batch_rows: edulink_store::janitor::DEFAULT_BATCH_ROWS, pause_ms: 10 }
    }
}

fn within(name: &str, v: i64, lo: i64, hi: i64) -> Result<(), String> {
    if (lo..=hi).contains(&v) { Ok(()) } else { Err(format!("{name} must be between {lo} and {hi}")) }
}

impl RetentionSection {
    /// The periods, in seconds.
    pub fn to_retention(&self) -> Retention {
        Retention {
            audit_secs: self.audit_days * DAY,
            outbox_done_secs: self.outbox_done_days * DAY,
            notifications_secs: self.notifications_days * DAY,
            unlinked_secs: self.unlinked_days * DAY,
            expired_grace_secs: self.expired_grace_secs,
        }
    }

    /// The documented bounds (docs/deployment.md, «Retention and the janitor»).
    pub(super) fn check(&self, janitor: &JanitorSection) -> Result<(), String> {
        within("retention.audit_days", self.audit_days, 30, 1095)?;
        within("retention.outbox_done_days", self.outbox_done_days, 1, 90)?;
        within("retention.notifications_days", self.notifications_days, 1, 365)?;
        within("retention.unlinked_days", self.unlinked_days, 1, UNLINKED_MAX_SECS / DAY)?;
        within("retention.expired_grace_secs", self.expired_grace_secs, 0, 7 * DAY)?;
        if janitor.interval_secs != 0 {
            within("janitor.interval_secs", janitor.interval_secs, 60, DAY)?;
        }
        within("janitor.batch_rows", janitor.batch_rows, 10, 10_000)?;
        within("janitor.pause_ms", janitor.pause_ms as i64, 0, 1000)?;
        Ok(())
    }
}

impl JanitorSection {
    /// The batches.
    pub fn batching(&self) -> Batching {
        Batching { rows: self.batch_rows, pause: std::time::Duration::from_millis(self.pause_ms) }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    /// The defaults are valid; a period past the law's 30 days, or no batching, is refused.
    #[test]
    fn retention_has_bounds_and_safe_defaults() {
        let mut c = Config::default();
        c.check().unwrap();
        assert_eq!(c.retention.to_retention(), edulink_store::janitor::Retention::default());
        c.retention.unlinked_days = 31;
        assert!(c.check().unwrap_err().to_string().contains("retention.unlinked_days must be between 1 and 30"));
        c.retention.unlinked_days = 30;
        c.janitor.batch_rows = 1_000_000;
        assert!(c.check().unwrap_err().to_string().contains("janitor.batch_rows"));
        c.janitor.batch_rows = 500;
        c.janitor.interval_secs = 5;
        assert!(c.check().unwrap_err().to_string().contains("janitor.interval_secs"));
        c.janitor.interval_secs = 0;
        c.check().unwrap();
    }
}
