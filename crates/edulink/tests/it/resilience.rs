//! Outages and restarts: calls to MAX that must not be lost go through the durable outbox.

use edulink::app::Role;
use edulink_domain::ManualClock;
use edulink_testkit::{Backend, Browser, FlowsExt, TestApp, drop_schemas, spawn_party, test_config};
use std::sync::Arc;

#[tokio::test]
async fn an_unlink_during_a_max_outage_is_delivered_when_max_is_back_sqlite() {
    unlink_during_outage(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_unlink_during_a_max_outage_is_delivered_when_max_is_back_postgres() {
    if edulink_testkit::postgres_available().await {
        unlink_during_outage(Backend::Postgres).await;
    }
}

async fn unlink_during_outage(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let max_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let diary_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let max_addr = max_listener.local_addr().unwrap();
    let diary_addr = diary_listener.local_addr().unwrap();
    let mut config = test_config(backend, dir.path()).with_secrets().unwrap();
    config.max.public_url = Some(format!("http://{max_addr}"));
    config.diary.public_url = Some(format!("http://{diary_addr}"));
    let clock = Arc::new(ManualClock::default());
    let inbox = edulink_sms::DevInbox::default();
    let max = spawn_party(&config, Role::Max, max_listener, clock.clone(), &inbox).await;
    let diary = spawn_party(&config, Role::Diary, diary_listener, clock.clone(), &inbox).await;
    let app = TestApp::from_parties(config.clone(), clock.clone(), &max, &diary);

    let b = Browser::new();
    app.diary_login(&b, "student5").await;
    app.link(&b, "+7 916 200-30-40", "+79162003040").await;
    let st = diary.running.diary.clone().unwrap();
    let subject = edulink_diary::repo::link(&st.db, "student-5").await.unwrap().unwrap().subject;

    // MAX goes down. The student unlinks: the diary answers at once, the call to MAX waits.
    max.running.stop().await;
    let confirm = b.visit(&format!("{}/passport/security/unlink", app.diary)).await;
    let done = b.submit(&format!("{}/passport/security/unlink", app.diary), &[("csrf", &confirm.csrf())]).await;
    assert!(done.has("Аккаунт «Сферум» отвязан"), "{}", done.body);
    assert_eq!(edulink_diary::outbox::pending(&st).await.unwrap(), 1, "the detach waits in the outbox");

    // MAX comes back (same database, same address); the outbox delivers after its backoff.
    let max =
        spawn_party(&config, Role::Max, tokio::net::TcpListener::bind(max_addr).await.unwrap(), clock.clone(), &inbox)
            .await;
    let mst = max.running.max.clone().unwrap();
    // The worker retries with backoff; move time past it and let the worker deliver by itself.
    clock.advance(3600);
    let mut waited = 0;
    while edulink_diary::outbox::pending(&st).await.unwrap() > 0 {
        assert!(waited < 100, "the outbox worker did not deliver within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    }
    let grants: i64 = edulink_store::sqlx::query_scalar("SELECT COUNT(*) FROM grants WHERE subject = $1")
        .bind(&subject)
        .fetch_one(mst.db.pool())
        .await
        .unwrap();
    assert_eq!(grants, 0, "the grant is gone after the delayed detach");
    let members: i64 = edulink_store::sqlx::query_scalar("SELECT COUNT(*) FROM sferum_members")
        .fetch_one(mst.db.pool())
        .await
        .unwrap();
    assert_eq!(members, 0, "the profile left its chats");
    let live: i64 = edulink_store::sqlx::query_scalar(
        "SELECT COUNT(*) FROM tokens WHERE revoked_at IS NULL AND grant_id IS NOT NULL",
    )
    .fetch_one(mst.db.pool())
    .await
    .unwrap();
    assert_eq!(live, 0, "every token of the link is revoked");
    max.running.stop().await;
    diary.running.stop().await;
    drop_schemas(&config).await;
}
