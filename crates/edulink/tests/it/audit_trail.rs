//! Failures are audited too, pseudonymously: a provisioning call and an unlink's revocation that
//! MAX could not take.

use edulink_diary::outbox::{self, Job};
use edulink_store::sqlx;
use edulink_testkit::{Backend, Browser, FlowsExt, Parties, TestApp, test_config};

type Row = (String, Option<String>, Option<String>, Option<String>, Option<String>);

/// Issue 18, item 3: the trail recorded successes only, so a link whose provisioning or whose
/// unlink never reached MAX left no trace for support. With MAX down, a provisioning attempt and
/// a web unlink each leave one record — the first failed attempt, not every retry — naming the
/// student's pseudonymous id and the link's subject (the join to MAX's trail), the kind of failure,
/// and nothing personal.
#[tokio::test]
async fn failed_provisioning_and_revocation_are_audited_once_and_pseudonymously() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(Backend::Sqlite, dir.path()).with_secrets().unwrap();
    let Parties { max, diary, clock, .. } = Parties::start(&mut config, None).await;
    let app = TestApp::from_parties(config.clone(), clock.clone(), &max, &diary);
    let b = Browser::new();
    app.diary_login(&b, "student8").await;
    app.link(&b, "+7 916 700-80-90", "+79167008090").await;
    let st = diary.running.diary.clone().unwrap();
    let link = edulink_diary::repo::link(&st.db, "student-8").await.unwrap().expect("linked");
    let (subject, generation) = (link.subject, link.generation);

    max.running.stop().await;
    let job = Job::Provision { user_id: "student-8".into(), subject: subject.clone(), generation };
    let mut tx = st.db.begin().await.unwrap();
    let id = outbox::enqueue(&mut tx, &job, st.now()).await.unwrap();
    tx.commit().await.unwrap();
    assert!(!outbox::deliver(&st, &id).await.unwrap());
    // A retry after the backoff fails again but is not audited again.
    st.db.execute(sqlx::query("UPDATE outbox SET next_attempt_at = 0 WHERE id = $1").bind(&id)).await.unwrap();
    assert!(!outbox::deliver(&st, &id).await.unwrap());
    let confirm = b.visit(&format!("{}/passport/security/unlink", app.diary)).await;
    let done = b.submit(&format!("{}/passport/security/unlink", app.diary), &[("csrf", &confirm.csrf())]).await;
    assert!(done.has("Аккаунт «Сферум» отвязан"), "{}", done.body);

    let rows: Vec<Row> = sqlx::query_as(
        "SELECT event, user_id, subject, detail, ip FROM audit \
         WHERE event IN ('provisioning_failed', 'revocation_failed') ORDER BY at, event",
    )
    .fetch_all(st.db.pool())
    .await
    .unwrap();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        rows,
        vec![
            ("provisioning_failed".into(), s("student-8"), Some(subject.clone()), s("unavailable"), None),
            ("revocation_failed".into(), None, Some(subject.clone()), s("unavailable"), None),
        ]
    );
    let all: Vec<(String,)> = sqlx::query_as("SELECT COALESCE(detail, '') || COALESCE(subject, '') FROM audit")
        .fetch_all(st.db.pool())
        .await
        .unwrap();
    assert!(all.iter().all(|(t,)| !t.contains("7008090") && !t.contains("Мария")), "nothing personal");
    // The diary's journey query finds both (the revocation by the link's subject alone).
    let (journey, subjects) = edulink_diary::audit::journey(&st.db, "student-8", 0).await.unwrap();
    assert_eq!(subjects, vec![subject]);
    let events: Vec<&str> = journey.iter().map(|r| r.event.as_str()).collect();
    assert!(events.contains(&"provisioning_failed") && events.contains(&"revocation_failed"), "{events:?}");
}
