//! The catalogue of every metric the process exports: name, type, help and labels, in one place.
//!
//! Prometheus conventions (<https://prometheus.io/docs/practices/naming/>): base units (seconds,
//! bytes), `_total` on counters, `_seconds` on durations, one `# HELP` and `# TYPE` per metric.
//! [`register`] describes every metric and creates every series whose label values are known in
//! advance at 0, so `/metrics` shows them from the first scrape and `rate()` and ratios work
//! before the first event. Series labelled by an open set (a route template, a method) appear with
//! their first observation.
//!
//! The code that counts uses the same literal names (the `metrics` macros need them at the call
//! site); `catalogue_names_match_the_code` checks that every name counted in the workspace is here,
//! and the `/metrics` test in `crates/edulink/tests/it/metrics.rs` parses a scrape with a parser we
//! did not write. docs/ops/ holds the dashboard and alert rules built on these names.

use metrics::{describe_counter, describe_gauge, describe_histogram};

/// A metric's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets (`_bucket`, `_sum`, `_count`).
    Histogram,
}

/// One metric of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// The exported name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Labels with a closed set of values: every combination is created at 0 by [`register`].
    pub labels: &'static [(&'static str, &'static [&'static str])],
    /// Labels whose values are open (route templates, methods): not pre-created.
    pub open_labels: &'static [&'static str],
}

const fn m(name: &'static str, kind: Kind, help: &'static str) -> Metric {
    Metric { name, kind, help, labels: &[], open_labels: &[] }
}

const fn l(
    name: &'static str,
    kind: Kind,
    help: &'static str,
    labels: &'static [(&'static str, &'static [&'static str])],
) -> Metric {
    Metric { name, kind, help, labels, open_labels: &[] }
}

use Kind::{Counter, Gauge, Histogram};

/// The two parties, as the `party` label names them.
pub const PARTIES: &[&str] = &["diary", "max"];
/// Status classes of HTTP answers.
pub const STATUS_CLASSES: &[&str] = &["2xx", "3xx", "4xx", "5xx"];

/// The steps of the link funnel, in the order a student walks them.
pub const FUNNEL_STEPS: &[&str] = &[
    "connect_page",
    "authorization_started",
    "sms_sent",
    "code_verified",
    "registered",
    "consent_given",
    "callback_accepted",
    "provisioned",
    "sferum_opened",
];

/// Why a link journey stopped.
pub const FUNNEL_FAILURES: &[&str] = &[
    "start_refused",
    "sms_refused",
    "code_wrong",
    "phone_locked",
    "consent_denied",
    "callback_bad_state",
    "callback_bad_iss",
    "callback_invalid",
    "conflict",
    "provisioning_failed",
];

/// The diary's calls to MAX, as the `call` label of `edulink_backchannel_duration_seconds`.
pub const BACKCHANNEL_CALLS: &[&str] = &["discovery", "token", "provisioning", "lessons", "revocation", "probe"];
/// How a back-channel call ended: 2xx, a 4xx refusal, or a 5xx / transport failure.
pub const OUTCOMES: &[&str] = &["ok", "refused", "error"];

/// Every metric of the process.
pub const CATALOGUE: &[Metric] = &[
    // HTTP, both parties.
    Metric {
        name: "edulink_http_request_duration_seconds",
        kind: Histogram,
        help: "Time from request to response head, by party, route template and status class (health and metrics endpoints excluded).",
        labels: &[("party", PARTIES), ("status", STATUS_CLASSES)],
        open_labels: &["method", "route"],
    },
    m("edulink_http_server_errors_total", Counter, "Responses with a 5xx status (details are logged, never shown)."),
    m("edulink_csrf_refused_total", Counter, "State-changing requests refused by the origin or CSRF check."),
    // The link funnel.
    l(
        "edulink_link_funnel_total",
        Counter,
        "Steps of the diary-to-Сферум link journey reached, per step (the funnel).",
        &[("step", FUNNEL_STEPS)],
    ),
    l("edulink_link_failures_total", Counter, "Link journeys that stopped, by reason.", &[("reason", FUNNEL_FAILURES)]),
    m("edulink_links_total", Counter, "Links stored after a valid callback."),
    m("edulink_link_conflicts_total", Counter, "Links refused because one side was already linked."),
    m("edulink_unlinks_total", Counter, "Links ended (web, app or operator)."),
    m("edulink_link_starts_refused_total", Counter, "Link starts refused by the per-user hourly limit."),
    // The diary's back channel to MAX.
    l(
        "edulink_backchannel_duration_seconds",
        Histogram,
        "Duration of the diary's calls to MAX, by call and outcome.",
        &[("call", BACKCHANNEL_CALLS), ("outcome", OUTCOMES)],
    ),
    // SMS.
    m("edulink_sms_sent_total", Counter, "SMS codes admitted and handed to the gateway."),
    l(
        "edulink_sms_refused_total",
        Counter,
        "SMS sends refused by a limit, by reason.",
        &[("reason", &["locked", "too_soon", "phone_budget", "ip_budget", "global_budget"])],
    ),
    l(
        "edulink_sms_gateway_duration_seconds",
        Histogram,
        "Time the SMS gateway took to take a message, by outcome.",
        &[("outcome", &["ok", "error"])],
    ),
    m("edulink_sms_sent_last_hour", Gauge, "SMS codes sent in the last hour (updated every minute)."),
    m(
        "edulink_sms_conversion_ratio",
        Gauge,
        "Codes verified per SMS sent in the last hour (updated every minute; low means SMS pumping).",
    ),
    m("edulink_code_verified_total", Counter, "SMS codes entered correctly."),
    m("edulink_code_failures_total", Counter, "Wrong SMS codes entered."),
    m("edulink_param_pollution_total", Counter, "Forms refused for a repeated parameter."),
    // Diary sign-in.
    m("edulink_diary_login_failures_total", Counter, "Diary sign-ins with a wrong login or password."),
    m("edulink_diary_login_throttled_total", Counter, "Diary sign-ins refused by the throttle."),
    // OAuth / OIDC at MAX.
    l(
        "edulink_oauth_tokens_issued_total",
        Counter,
        "Token responses issued by MAX, by grant type.",
        &[("grant", &["authorization_code", "refresh_token", "client_credentials"])],
    ),
    m("edulink_oauth_redirect_mismatch_total", Counter, "Authorization requests with an unregistered redirect_uri."),
    m("edulink_oauth_code_replay_total", Counter, "Authorization codes presented twice (their tokens revoked)."),
    m("edulink_oauth_refresh_reuse_total", Counter, "Used refresh tokens presented again (their family revoked)."),
    m("edulink_client_previous_secret_total", Counter, "Client authentications with a previous (rotated) secret."),
    // The outbox of the diary.
    m("edulink_outbox_pending", Gauge, "Outbox jobs not yet delivered to MAX."),
    m("edulink_outbox_oldest_age_seconds", Gauge, "Age of the oldest undelivered outbox job."),
    m("edulink_outbox_delivered_total", Counter, "Outbox jobs delivered to MAX."),
    m("edulink_outbox_refused_total", Counter, "Outbox jobs MAX refused for good."),
    m("edulink_outbox_retries_total", Counter, "Outbox deliveries that failed and will be retried."),
    // Сферум in MAX.
    m("edulink_chat_messages_total", Counter, "Chat messages posted."),
    m("edulink_chat_streams", Gauge, "Open chat event streams."),
    m("edulink_people_searches_total", Counter, "People searches in Сферум."),
    m("edulink_safe_mode_refusals_total", Counter, "Messages to strangers refused by the safe mode."),
    m("edulink_lesson_joins_total", Counter, "Distance lessons joined."),
    l(
        "edulink_lesson_pushes_total",
        Counter,
        "Lesson states pushed by the diary, by whether Сферум applied them.",
        &[("applied", &["true", "false"])],
    ),
    // Storage.
    l(
        "edulink_sqlite_commits_total",
        Counter,
        "SQLite COMMIT statements run by the group-committing writer.",
        &[("db", PARTIES)],
    ),
    l(
        "edulink_sqlite_committed_writes_total",
        Counter,
        "Write transactions committed by those COMMITs (their ratio is the batch size).",
        &[("db", PARTIES)],
    ),
    l(
        "edulink_db_pool_size",
        Gauge,
        "Open database connections of a party's pool (SQLite: readers kept plus the writer).",
        &[("db", PARTIES)],
    ),
    l("edulink_db_pool_idle", Gauge, "Idle connections of a party's pool.", &[("db", PARTIES)]),
    l(
        "edulink_db_pool_waiting",
        Gauge,
        "Writers waiting for the SQLite writer connection (sqlx does not expose PostgreSQL pool waiters: 0 there).",
        &[("db", PARTIES)],
    ),
    // Limits taken before secrets are checked (SECURITY.md, «Lockout model»).
    m(
        "edulink_diary_password_checks_total",
        Counter,
        "Diary passwords evaluated (Argon2 run) after an attempt was reserved.",
    ),
    m(
        "edulink_code_evaluations_total",
        Counter,
        "SMS codes evaluated after a guess was reserved against the phone's allowance.",
    ),
    // Links across the two parties (docs/architecture.md, «Links across the two parties»).
    l(
        "edulink_link_stale_messages_total",
        Counter,
        "Provisioning-API messages about a link that is no longer the subject's current one, answered 409 stale_link.",
        &[("op", &["provision", "detach"])],
    ),
    m(
        "edulink_grants_expired_total",
        Counter,
        "Grants no link claimed in time (unfinished link callbacks), revoked with their tokens.",
    ),
    l(
        "edulink_outbox_superseded_total",
        Counter,
        "Outbox jobs skipped because their link is no longer current.",
        &[("kind", &["provision", "unlink", "revoke", "lesson"])],
    ),
    m("edulink_outbox_refused", Gauge, "Outbox jobs MAX refused for good, waiting for the reconciliation or support."),
    l(
        "edulink_reconcile_differences_total",
        Counter,
        "Differences between the diary's links and MAX's grants found by the reconciliation, by what was done.",
        &[("kind", &["reprovisioned", "removed_locally", "detached", "awaiting", "reported"])],
    ),
    m(
        "edulink_reconcile_last_pass_timestamp_seconds",
        Gauge,
        "When the last reconciliation pass ended (Unix seconds).",
    ),
    // Logout, DPoP and PAR (docs/oidc.md).
    l(
        "edulink_backchannel_logout_total",
        Counter,
        "Logout tokens MAX sent to clients, by result.",
        &[("result", &["sent", "retry", "gave_up"])],
    ),
    l(
        "edulink_backchannel_logout_received_total",
        Counter,
        "Logout tokens the diary received, accepted or refused by the check that failed.",
        &[(
            "result",
            &[
                "accepted",
                "malformed",
                "typ",
                "alg",
                "signature",
                "iss",
                "aud",
                "iat",
                "exp",
                "jti",
                "jti_replay",
                "events",
                "nonce",
                "sub_or_sid",
            ],
        )],
    ),
    m("edulink_oauth_par_total", Counter, "Pushed authorization requests accepted (RFC 9126)."),
    m("edulink_dpop_replay_total", Counter, "DPoP proofs refused because their jti was seen before (RFC 9449 §11.1)."),
    // Retention (docs/retention.md).
    Metric {
        name: "edulink_janitor_deleted_rows_total",
        kind: Counter,
        help: "Rows the janitor deleted because their retention period ended, by table.",
        labels: &[],
        open_labels: &["table"],
    },
    // The build and the process.
    Metric {
        name: "edulink_build_info",
        kind: Gauge,
        help: "Always 1; the labels say which build runs.",
        labels: &[],
        open_labels: &["version", "profile"],
    },
    m("process_cpu_seconds_total", Counter, "User and system CPU time spent by the process."),
    m("process_resident_memory_bytes", Gauge, "Resident memory of the process."),
    m("process_virtual_memory_bytes", Gauge, "Virtual memory of the process."),
    m("process_open_fds", Gauge, "Open file descriptors of the process."),
    m("process_max_fds", Gauge, "Limit of open file descriptors of the process."),
    m("process_start_time_seconds", Gauge, "Start time of the process since the Unix epoch."),
];

/// Histogram buckets for every `_duration_seconds` metric: 5 ms to 10 s.
pub const DURATION_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Every combination of a metric's closed label values.
fn combinations(labels: &[(&'static str, &'static [&'static str])]) -> Vec<Vec<(&'static str, &'static str)>> {
    let mut out = vec![Vec::new()];
    for (key, values) in labels {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut p = prefix.clone();
                    p.push((*key, *v));
                    p
                })
            })
            .collect();
    }
    out
}

/// Describes every metric and creates its known series at 0 (idempotent: adding 0 to a counter
/// that already counts leaves it alone). Called once the recorder is installed.
pub fn register() {
    for metric in CATALOGUE {
        if metric.name.starts_with("process_") {
            // Rendered from /proc at each scrape (`process.rs`), outside the registry.
            continue;
        }
        match metric.kind {
            Counter => describe_counter!(metric.name, metric.help),
            Gauge => describe_gauge!(metric.name, metric.help),
            Histogram => describe_histogram!(metric.name, metric.help),
        }
        if !metric.open_labels.is_empty() {
            continue;
        }
        for labels in combinations(metric.labels) {
            let labels: Vec<metrics::Label> = labels.iter().map(|(k, v)| metrics::Label::new(*k, *v)).collect();
            match metric.kind {
                Counter => metrics::counter!(metric.name, labels).increment(0),
                Gauge => metrics::gauge!(metric.name, labels).increment(0.0),
                Histogram => drop(metrics::histogram!(metric.name, labels)),
            }
        }
    }
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    metrics::gauge!("edulink_build_info", "version" => env!("CARGO_PKG_VERSION"), "profile" => profile).set(1.0);
}

/// Counts a step of the link funnel.
pub fn funnel(step: &'static str) {
    debug_assert!(FUNNEL_STEPS.contains(&step), "{step}");
    metrics::counter!("edulink_link_funnel_total", "step" => step).increment(1);
}

/// Counts a link journey that stopped, and why.
pub fn funnel_failure(reason: &'static str) {
    debug_assert!(FUNNEL_FAILURES.contains(&reason), "{reason}");
    metrics::counter!("edulink_link_failures_total", "reason" => reason).increment(1);
}

/// The status class label of an HTTP status.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric name used with a `metrics` macro anywhere in the workspace's sources is in the
    /// catalogue, and every catalogue name follows the naming rules.
    #[test]
    fn catalogue_names_match_the_code() {
        let names: std::collections::HashSet<&str> = CATALOGUE.iter().map(|m| m.name).collect();
        assert_eq!(names.len(), CATALOGUE.len(), "a name is listed twice");
        for m in CATALOGUE {
            match m.kind {
                Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
                Histogram => assert!(m.name.ends_with("_seconds"), "{}", m.name),
                Gauge => assert!(!m.name.ends_with("_total"), "{}", m.name),
            }
            assert!(!m.help.is_empty());
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut stack = vec![root];
        let mut seen = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = entry.path();
                if p.is_dir() && p.file_name().is_some_and(|n| n != "target" && n != "node_modules") {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    for kind in ["counter!(\"", "gauge!(\"", "histogram!(\""] {
                        for (i, _) in text.match_indices(kind) {
                            let rest = &text[i + kind.len()..];
                            let name = &rest[..rest.find('"').unwrap()];
                            if name.starts_with("edulink_") || name.starts_with("process_") {
                                seen += 1;
                                assert!(names.contains(name), "{name} ({}) is not in the catalogue", p.display());
                            }
                        }
                    }
                }
            }
        }
        assert!(seen > 20, "the scan found the metric calls ({seen})");
    }

    /// Every metric the alert rules and the Grafana dashboard (docs/ops) query is in the
    /// catalogue (a histogram through its `_bucket`, `_sum` or `_count` series), and each names
    /// several: a renamed metric cannot leave a silent alert or an empty panel behind.
    #[test]
    fn ops_files_name_catalogued_metrics() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/ops");
        for file in ["alerts.yml", "alerts.test.yml", "grafana-dashboard.json"] {
            let text = std::fs::read_to_string(docs.join(file)).unwrap();
            let mut named = std::collections::BTreeSet::new();
            for (i, _) in text.match_indices("edulink_").chain(text.match_indices("process_")) {
                if text[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                    continue;
                }
                let end =
                    text[i..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(text.len(), |e| i + e);
                named.insert(&text[i..end]);
            }
            assert!(named.len() >= 4, "{file} names {named:?}");
            for name in named {
                let found = CATALOGUE.iter().any(|m| {
                    m.name == name
                        || (m.kind == Histogram
                            && ["_bucket", "_sum", "_count"].iter().any(|s| name.strip_suffix(s) == Some(m.name)))
                });
                assert!(found, "{file} names {name}, which is not in the catalogue");
            }
        }
    }

    #[test]
    fn combinations_cover_every_label_value() {
        let c = combinations(&[("a", &["1", "2"]), ("b", &["x", "y", "z"])]);
        assert_eq!(c.len(), 6);
        assert!(c.contains(&vec![("a", "2"), ("b", "z")]));
        assert_eq!(combinations(&[]), vec![Vec::<(&str, &str)>::new()]);
    }
}
