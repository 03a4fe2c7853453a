//! `/metrics` on the operator listener, read as Prometheus would: parsed by `prometheus-parse`
//! (a parser we did not write, crates.io), checked against the text exposition format's rules
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>): every series has HELP and
//! TYPE, catalogued series exist at 0 from the start, the link funnel counts one walk, and the
//! request histograms have the catalogue's buckets.

use edulink_testkit::{Browser, FlowsExt, spawn_app};
use edulink_web::metrics::{CATALOGUE, DURATION_BUCKETS, FUNNEL_FAILURES, FUNNEL_STEPS, Kind};
use prometheus_parse::{Sample, Scrape, Value};

async fn scrape(ops: &str) -> (Scrape, String) {
    let text = reqwest::get(format!("{ops}/metrics")).await.unwrap().text().await.unwrap();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("exposition format");
    (scrape, text)
}

/// The series `name` with (at least) the labels `labels`.
fn series<'a>(s: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> &'a Sample {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {name}{labels:?}"))
}

/// Observations of a histogram series.
fn observed(x: &Sample) -> f64 {
    match &x.value {
        Value::Histogram(b) => b.last().map_or(0.0, |b| b.count),
        other => panic!("{} is not a histogram: {other:?}", x.metric),
    }
}

/// The value of the counter `name` whose label `key` is `value`.
fn counter(s: &Scrape, name: &str, key: &str, value: &str) -> f64 {
    let sample = series(s, name, &[(key, value)]);
    match sample.value {
        Value::Counter(v) => v,
        ref other => panic!("{name} is not a counter: {other:?}"),
    }
}

/// Every sample has a `# HELP` and a `# TYPE` (a histogram's `_sum` and `_count` belong to it).
fn assert_described(s: &Scrape) {
    let histograms: std::collections::HashSet<&str> =
        s.samples.iter().filter(|x| matches!(x.value, Value::Histogram(_))).map(|x| x.metric.as_str()).collect();
    for x in &s.samples {
        let base = ["_sum", "_count"]
            .iter()
            .find_map(|suffix| x.metric.strip_suffix(suffix).filter(|b| histograms.contains(b)))
            .unwrap_or(&x.metric);
        assert!(s.docs.contains_key(base), "no HELP for {}", x.metric);
        if base == x.metric {
            assert!(!matches!(x.value, Value::Untyped(_)), "no TYPE for {}", x.metric);
        }
    }
}

/// `promtool check metrics` (Prometheus's own linter, Debian's `prometheus` package, installed by
/// .ci/run) finds nothing to say about a scrape. Skipped where promtool is missing, unless CI.
fn promtool_lint(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(_) if std::env::var("CI").is_err() => return eprintln!("promtool missing: lint skipped"),
        Err(e) => panic!("promtool is required in CI: {e}"),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}");
}

fn kind_of(x: &Sample) -> Kind {
    match x.value {
        Value::Counter(_) => Kind::Counter,
        Value::Histogram(_) => Kind::Histogram,
        _ => Kind::Gauge,
    }
}

/// Issue 18: series appeared only after their first increment and had no HELP, there were no
/// histograms, and the funnel did not exist. Now the first scrape already has every catalogued
/// metric with its HELP, TYPE and zero series; one link walk (connect page, MAX's phone, code and
/// registration, consent, callback, provisioning, Сферум) moves each funnel step by exactly one;
/// and the diary's request histogram is labelled by route template with the catalogue's buckets.
#[tokio::test]
async fn metrics_follow_prometheus_conventions_and_count_the_link_funnel() {
    let app = spawn_app().await;
    let ops = app.running.ops_url.clone().expect("operator listener");
    let (before, _) = scrape(&ops).await;
    assert_described(&before);
    for m in CATALOGUE.iter().filter(|m| m.open_labels.is_empty()) {
        let found: Vec<&Sample> = before.samples.iter().filter(|x| x.metric == m.name).collect();
        assert!(!found.is_empty(), "{} is not exported from the start", m.name);
        assert!(found.iter().all(|x| kind_of(x) == m.kind), "{} has the wrong TYPE", m.name);
        assert_eq!(before.docs.get(m.name).map(String::as_str), Some(m.help), "HELP of {}", m.name);
    }
    for step in FUNNEL_STEPS {
        assert_eq!(counter(&before, "edulink_link_funnel_total", "step", step), 0.0, "{step}");
    }
    for reason in FUNNEL_FAILURES {
        assert_eq!(counter(&before, "edulink_link_failures_total", "reason", reason), 0.0, "{reason}");
    }
    let build = before.samples.iter().find(|x| x.metric == "edulink_build_info").expect("build info");
    assert_eq!(build.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
    let rss = before.samples.iter().find(|x| x.metric == "process_resident_memory_bytes").expect("process metrics");
    assert!(matches!(rss.value, Value::Gauge(v) if v > 1e6), "{rss:?}");

    // One student walks the whole journey with a phone MAX does not know yet.
    let b = Browser::new();
    app.diary_login(&b, "student4").await;
    let done = b.follow(app.link(&b, "+7 916 111-22-33", "+79161112233").await).await;
    assert!(done.url.ends_with("/sferum/linked"), "{}: {}", done.url, done.body);
    let sferum = b.visit(&format!("{}/sferum", app.max)).await;
    assert!(sferum.status.is_success(), "{}", sferum.body);

    let (after, text) = scrape(&ops).await;
    assert_described(&after);
    promtool_lint(&text);
    for step in FUNNEL_STEPS {
        let moved = counter(&after, "edulink_link_funnel_total", "step", step)
            - counter(&before, "edulink_link_funnel_total", "step", step);
        assert_eq!(moved, 1.0, "funnel step {step}");
    }
    assert!(!text.contains("/sferum/callback?"), "a raw URL is a label");

    // The connect form's POST, by route template and status class, with every bucket.
    let connect = series(
        &after,
        "edulink_http_request_duration_seconds",
        &[("party", "diary"), ("route", "/sferum/connect"), ("status", "3xx")],
    );
    let Value::Histogram(buckets) = &connect.value else { panic!("{connect:?}") };
    let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
    let mut expected = DURATION_BUCKETS.to_vec();
    expected.push(f64::INFINITY);
    assert_eq!(bounds, expected);
    assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count), "cumulative buckets");
    assert_eq!(observed(connect), 1.0);
    // Probes are not observed; the back channel is, by call and outcome.
    assert!(!after.samples.iter().any(|x| x.labels.get("route").is_some_and(|r| r == "/healthz" || r == "/readyz")));
    for call in ["token", "provisioning"] {
        let x = series(&after, "edulink_backchannel_duration_seconds", &[("call", call), ("outcome", "ok")]);
        assert!(observed(x) >= 1.0, "{x:?}");
    }
}
