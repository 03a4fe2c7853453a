//! The outbox after a long outage of MAX: backoff capped, deliveries resume as soon as MAX
//! answers, and the backlog shows in `/metrics`.

use edulink::app::Role;
use edulink_diary::outbox::{self, Job};
use edulink_store::sqlx;
use edulink_testkit::{Backend, Browser, FlowsExt, Parties, TestApp, drop_schemas, spawn_party, test_config};
use std::time::{Duration, Instant};

/// On SQLite, then on PostgreSQL when it answers (one process: the gauges are process-wide).
#[tokio::test]
async fn after_a_long_outage_the_outbox_delivers_within_a_tick_of_max_answering() {
    after_a_long_outage(Backend::Sqlite).await;
    if edulink_testkit::postgres_available().await {
        after_a_long_outage(Backend::Postgres).await;
    }
}

/// A gauge's value in the Prometheus text `/metrics` serves.
fn gauge(name: &str) -> Option<f64> {
    let text = edulink_web::ops::prometheus().expect("recorder").render();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `done` every 50 ms for up to `limit`; returns how long it took, or `None`.
async fn within(limit: Duration, mut done: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// `(seconds until the next attempt, attempts)` of each job waiting out a backoff.
async fn waits(st: &edulink_diary::DiaryState) -> Vec<(i64, i64)> {
    sqlx::query_as(
        "SELECT next_attempt_at - $1, attempts FROM outbox WHERE done_at IS NULL AND last_error IS NOT NULL ORDER BY id",
    )
    .bind(st.now())
    .fetch_all(st.db.pool())
    .await
    .unwrap()
}

/// Issue 17: the backoff grew to an hour and nothing noticed MAX answering again, so after a long
/// outage an unlink reached MAX up to an hour late, and nothing showed the backlog. Here MAX is
/// down for hours of the test's clock, three jobs (an unlink, two revocations) back off to the
/// configured cap and never past it; when MAX is back, without the clock moving, they are
/// delivered within one worker tick (plus the delivery) — not after the backoff. Meanwhile the
/// worker publishes the backlog as the gauges `edulink_outbox_pending` and
/// `edulink_outbox_oldest_age_seconds` (Prometheus exposition format).
async fn after_a_long_outage(backend: Backend) {
    edulink_web::ops::prometheus();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(backend, dir.path()).with_secrets().unwrap();
    let Parties { max, diary, clock, inbox, max_addr, .. } = Parties::start(&mut config, None).await;
    let cap = config.diary.outbox_max_backoff_secs;
    let app = TestApp::from_parties(config.clone(), clock.clone(), &max, &diary);
    let b = Browser::new();
    app.diary_login(&b, "student7").await;
    app.link(&b, "+7 916 500-60-70", "+79165006070").await;
    let st = diary.running.diary.clone().unwrap();
    let subject = edulink_diary::repo::link(&st.db, "student-7").await.unwrap().expect("linked").subject;

    // MAX goes down: an unlink and two revocations wait in the outbox.
    max.running.stop().await;
    let confirm = b.visit(&format!("{}/passport/security/unlink", app.diary)).await;
    let done = b.submit(&format!("{}/passport/security/unlink", app.diary), &[("csrf", &confirm.csrf())]).await;
    assert!(done.has("Аккаунт «Сферум» отвязан"), "{}", done.body);
    for token in ["first", "second"] {
        let refresh_enc = st.cipher.seal("links.refresh", token.as_bytes());
        let mut tx = st.db.begin().await.unwrap();
        outbox::enqueue(&mut tx, &Job::Revoke { refresh_enc }, st.now()).await.unwrap();
        tx.commit().await.unwrap();
    }

    // Hours pass: every attempt fails, the backoff doubles up to the cap and stays there.
    for round in 0..14 {
        clock.advance(if round == 13 { 6 * 3600 } else { cap });
        outbox::run_due(&st).await.unwrap();
        // The worker may hold a job's lease for a moment: wait until all three wait again.
        let settled = within(Duration::from_secs(5), async || waits(&st).await.len() == 3).await;
        assert!(settled.is_some(), "round {round}: {:?}", waits(&st).await);
        for (wait, attempts) in waits(&st).await {
            assert!((1..=cap).contains(&wait), "round {round}: waits {wait} s after {attempts} attempts");
        }
    }
    // (The test's clock is the wall clock moved forward: a second may pass between two readings.)
    let at_cap = |&(wait, attempts): &(i64, i64)| cap - wait <= 2 && attempts > 9;
    assert!(waits(&st).await.iter().all(at_cap), "{:?}", waits(&st).await);

    // The worker's next pass publishes the backlog (and finds MAX silent).
    let oldest: i64 = sqlx::query_scalar("SELECT MIN(created_at) FROM outbox WHERE done_at IS NULL")
        .fetch_one(st.db.pool())
        .await
        .unwrap();
    let age = (st.now() - oldest) as f64;
    assert!(age > 6.0 * 3600.0);
    let about = |g: Option<f64>, v: f64| g.is_some_and(|g| (g - v).abs() <= 2.0);
    st.outbox_wake.notify_one();
    let published = within(Duration::from_secs(5), async || {
        gauge("edulink_outbox_pending") == Some(3.0) && about(gauge("edulink_outbox_oldest_age_seconds"), age)
    })
    .await;
    assert!(
        published.is_some(),
        "{:?} {:?}",
        gauge("edulink_outbox_pending"),
        gauge("edulink_outbox_oldest_age_seconds")
    );

    // MAX is back; the clock stands still, so only noticing MAX can deliver now.
    let max =
        spawn_party(&config, Role::Max, tokio::net::TcpListener::bind(max_addr).await.unwrap(), clock.clone(), &inbox)
            .await;
    let delivered = within(outbox::TICK * 2, async || outbox::pending(&st).await.unwrap() == 0).await;
    assert!(delivered.is_some(), "still waiting after {:?}: {:?}", outbox::TICK * 2, waits(&st).await);
    let mst = max.running.max.clone().unwrap();
    let grants: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM grants WHERE subject = $1")
        .bind(&subject)
        .fetch_one(mst.db.pool())
        .await
        .unwrap();
    assert_eq!(grants, 0, "the unlink reached MAX");
    let emptied = within(Duration::from_secs(5), async || {
        gauge("edulink_outbox_pending") == Some(0.0) && gauge("edulink_outbox_oldest_age_seconds") == Some(0.0)
    })
    .await;
    assert!(emptied.is_some(), "{:?}", gauge("edulink_outbox_pending"));
    max.running.stop().await;
    diary.running.stop().await;
    drop_schemas(&config).await;
}
