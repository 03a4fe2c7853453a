//! The janitor (issue 19, docs/retention.md): what outlived its period goes, in bounded batches,
//! one instance at a time; what is still in use stays. On SQLite and PostgreSQL, with the test clock.

use edulink::janitor::{Party, Settings};
use edulink_store::janitor::{self, Batching, Retention};
use edulink_store::{Db, sqlx};
use edulink_testkit::{Browser, FlowsExt, TestApp, both_backends};

const PHONE: &str = "+7 900 000-00-01";
const E164: &str = "+79000000001";

/// Rows in `table`.
pub(crate) async fn rows(db: &Db, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"))).fetch_one(db.pool()).await.unwrap()
}

/// The janitor's settings as `serve` makes them, with a holder of the test's choosing.
pub(crate) fn settings(app: &TestApp, holder: &str) -> Settings {
    Settings { holder: holder.into(), ..Settings::new(&app.config) }
}

fn parties(app: &TestApp) -> (Party, Party) {
    (Party::Diary(app.running.diary.clone().expect("diary")), Party::Max(app.running.max.clone().expect("max")))
}

/// Runs both parties' janitors; panics when a lease is held elsewhere.
pub(crate) async fn sweep(app: &TestApp, dry_run: bool) -> Vec<(String, u64)> {
    let s = settings(app, "test");
    let (diary, max) = parties(app);
    let mut out = Vec::new();
    for (name, p) in [("diary", diary), ("max", max)] {
        for t in p.run(&s, dry_run).await.unwrap().expect("lease free") {
            out.push((format!("{name}.{}", t.table), t.rows));
        }
    }
    out
}

fn deleted(swept: &[(String, u64)], table: &str) -> u64 {
    swept.iter().filter(|(t, _)| t == table).map(|(_, n)| n).sum()
}

both_backends! {
    /// A link's sign-ins leave codes, tokens, SMS challenges, sessions, done outbox jobs and audit
    /// records. While they are within their periods the janitor (dry run or not) deletes none of
    /// them; once the clock passes every period, it deletes them all — and never the account, the
    /// user, the grant or the live link.
    async fn the_janitor_deletes_what_outlived_its_period_and_nothing_in_use(app) {
        let b = Browser::new();
        app.diary_login(&b, "student1").await;
        let done = app.link(&b, PHONE, E164).await;
        assert!(done.has("Сферум"), "{}", done.body);
        let (d, m) = (&app.running.diary.as_ref().unwrap().db, &app.running.max.as_ref().unwrap().db);
        for t in ["auth_codes", "tokens", "sms_challenges", "sessions", "audit"] {
            assert!(rows(m, t).await > 0, "MAX.{t} is empty after a link");
        }
        for t in ["sessions", "audit", "links"] {
            assert!(rows(d, t).await > 0, "diary.{t} is empty after a link");
        }
        let swept = sweep(&app, true).await;
        assert!(swept.iter().all(|(_, n)| *n == 0), "nothing is past its period yet: {swept:?}");
        assert!(sweep(&app, false).await.iter().all(|(_, n)| *n == 0));

        let kept = [("accounts", rows(m, "accounts").await), ("grants", rows(m, "grants").await)];
        let users = rows(d, "users").await;
        app.clock.advance(Retention::default().longest() + 1);
        let dry = sweep(&app, true).await;
        assert!(deleted(&dry, "max.audit") > 0 && deleted(&dry, "max.sms_challenges") > 0, "{dry:?}");
        let swept = sweep(&app, false).await;
        assert_eq!(
            dry.iter().map(|(t, _)| t).collect::<Vec<_>>(),
            swept.iter().map(|(t, _)| t).collect::<Vec<_>>()
        );
        for t in ["auth_codes", "auth_requests", "tokens", "sms_challenges", "sessions", "session_clients", "audit", "rate_counters"] {
            assert_eq!(rows(m, t).await, 0, "MAX.{t} left after every period passed: {swept:?}");
        }
        for t in ["sessions", "oidc_transactions", "audit", "rate_counters"] {
            assert_eq!(rows(d, t).await, 0, "diary.{t} left after every period passed: {swept:?}");
        }
        let done_jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE done_at IS NOT NULL")
            .fetch_one(d.pool())
            .await
            .unwrap();
        assert_eq!(done_jobs, 0);
        for (t, n) in kept {
            assert_eq!(rows(m, t).await, n, "MAX.{t} is in use and stays");
        }
        assert_eq!(rows(d, "users").await, users);
        assert_eq!(rows(d, "links").await, 1, "the live link stays");
    }

    /// One instance at a time: while one holder's lease runs another gets nothing (and its run does
    /// nothing); when the holder dies its lease runs out after `LEASE_SECS`, and another takes it.
    async fn one_janitor_at_a_time_by_a_lease_that_runs_out(app) {
        let (diary, max) = parties(&app);
        for (p, db) in [(diary, &app.running.diary.as_ref().unwrap().db), (max, &app.running.max.as_ref().unwrap().db)] {
            let now = app.clock_now();
            assert!(janitor::take_lease(db, janitor::LEASE, "a", now, janitor::LEASE_SECS).await.unwrap());
            assert!(janitor::take_lease(db, janitor::LEASE, "a", now, janitor::LEASE_SECS).await.unwrap(), "renewal");
            assert!(!janitor::take_lease(db, janitor::LEASE, "b", now, janitor::LEASE_SECS).await.unwrap());
            assert!(p.run(&settings(&app, "b"), false).await.unwrap().is_none(), "a held it");
            assert!(p.run(&settings(&app, "b"), true).await.unwrap().is_some(), "a dry run takes no lease");
            app.clock.advance(janitor::LEASE_SECS + 1);
            assert!(p.run(&settings(&app, "b"), false).await.unwrap().is_some(), "a's lease ran out");
            assert_eq!(rows(db, "janitor_lease").await, 0, "b gave it back");
        }
    }

    /// Deletion goes in batches of `batch_rows` (each its own statement and commit), and every row
    /// deleted is counted in `edulink_janitor_deleted_rows_total{table}`.
    async fn the_janitor_deletes_in_batches_and_counts_rows(app) {
        let d = &app.running.diary.as_ref().unwrap().db;
        let old = app.clock_now() - Retention::default().audit_secs - 10;
        for i in 0..1234 {
            d.execute(
                sqlx::query("INSERT INTO audit (id, at, event) VALUES ($1, $2, 'sign_in')").bind(format!("old{i}")).bind(old),
            )
            .await
            .unwrap();
        }
        let before = counted(&app, "audit").await;
        let purge = edulink_diary::janitor::purges(app.running.diary.as_ref().unwrap(), &Retention::default(), app.clock_now())
            .into_iter()
            .find(|p| p.table == "audit")
            .unwrap();
        let batching = Batching { rows: 100, pause: std::time::Duration::ZERO };
        assert_eq!(purge.count(d).await.unwrap(), 1234);
        assert_eq!(purge.run(d, batching).await.unwrap(), 1234);
        assert_eq!(purge.count(d).await.unwrap(), 0);
        assert!(counted(&app, "audit").await - before >= 1234.0, "the metric counts every row");
    }
}

/// `edulink_janitor_deleted_rows_total{table}` as the operator listener shows it (all tables of the
/// name, both parties: the registry is the process's).
async fn counted(app: &TestApp, table: &str) -> f64 {
    let ops = app.running.ops_url.clone().expect("ops listener");
    let text = reqwest::get(format!("{ops}/metrics")).await.unwrap().text().await.unwrap();
    let needle = format!("edulink_janitor_deleted_rows_total{{table=\"{table}\"}}");
    text.lines().filter(|l| l.starts_with(&needle)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

trait ClockNow {
    fn clock_now(&self) -> i64;
}

impl ClockNow for TestApp {
    fn clock_now(&self) -> i64 {
        use edulink_domain::Clock;
        self.clock.now()
    }
}

both_backends! {
    /// `edulink janitor --dry-run` counts and deletes nothing; `edulink janitor` deletes (the real
    /// binary, on the app's databases, with the wall clock).
    async fn the_janitor_command_counts_then_deletes(app) {
        let d = &app.running.diary.as_ref().unwrap().db;
        let two_years_ago = edulink_domain::Clock::now(&edulink_domain::SystemClock) - 2 * 365 * janitor::DAY;
        d.execute(sqlx::query("INSERT INTO audit (id, at, event) VALUES ('ancient', $1, 'sign_in')").bind(two_years_ago))
            .await
            .unwrap();
        let run = |args: &'static [&'static str]| crate::admin::edulink(&app.config, &app.config.data_dir, args);
        let dry = run(&["janitor", "--dry-run"]).await;
        let text = String::from_utf8_lossy(&dry.stdout).to_string();
        assert!(dry.status.success(), "{text} {}", String::from_utf8_lossy(&dry.stderr));
        assert!(text.contains("diary.audit: would delete 1 rows"), "{text}");
        assert!(text.contains("max.tokens: would delete 0 rows"), "{text}");
        assert_eq!(rows(d, "audit").await, 1);
        let real = run(&["janitor"]).await;
        let text = String::from_utf8_lossy(&real.stdout).to_string();
        assert!(text.contains("diary.audit: deleted 1 rows"), "{text} {}", String::from_utf8_lossy(&real.stderr));
        assert_eq!(rows(d, "audit").await, 0);
    }
}
