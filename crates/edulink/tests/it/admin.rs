//! `edulink admin`: support's commands, run as the real binary against a test's databases.

use edulink::app::Role;
use edulink::config::Config;
use edulink_domain::ManualClock;
use edulink_store::sqlx;
use edulink_testkit::{Backend, Browser, FlowsExt, TestApp, drop_schemas, spawn_party, test_config};
use std::sync::Arc;

#[tokio::test]
async fn an_admin_unlink_is_the_web_unlink_sqlite() {
    admin_unlink(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_admin_unlink_is_the_web_unlink_postgres() {
    if edulink_testkit::postgres_available().await {
        admin_unlink(Backend::Postgres).await;
    }
}

/// Runs `edulink <args>` with the configuration `config` (through `EDULINK_*` variables), off the
/// test's thread: MAX serves on that thread while the command calls it.
pub(crate) async fn edulink(config: &Config, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_edulink"));
    cmd.args(args).current_dir(dir).env("EDULINK_DATA_DIR", dir);
    let vars = [
        ("EDULINK_DIARY__PUBLIC_URL", config.diary.public_url.clone()),
        ("EDULINK_MAX__PUBLIC_URL", config.max.public_url.clone()),
        ("EDULINK_DIARY__SECRET", config.diary.secret.clone()),
        ("EDULINK_DIARY__CLIENT_SECRET", config.diary.client_secret.clone()),
        ("EDULINK_MAX__SECRET", config.max.secret.clone()),
        ("EDULINK_DIARY__DATABASE_URL", config.diary.database_url.clone()),
        ("EDULINK_MAX__DATABASE_URL", config.max.database_url.clone()),
        ("EDULINK_DIARY__POOL__SCHEMA", Some(config.diary.pool.schema.clone())),
        ("EDULINK_MAX__POOL__SCHEMA", Some(config.max.pool.schema.clone())),
    ];
    for (k, v) in vars {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().unwrap()
}

async fn count(db: &edulink_store::Db, sql: &'static str, bind: &str) -> i64 {
    sqlx::query_scalar(sql).bind(bind).fetch_one(db.pool()).await.unwrap()
}

/// The command line unlinks as the web does: a pending link transaction of the student dies with the
/// link, and MAX hears of it before the command returns (no diary server runs to deliver it later).
async fn admin_unlink(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let max_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let diary_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = test_config(backend, dir.path()).with_secrets().unwrap();
    config.max.public_url = Some(format!("http://{}", max_listener.local_addr().unwrap()));
    config.diary.public_url = Some(format!("http://{}", diary_listener.local_addr().unwrap()));
    let clock = Arc::new(ManualClock::default());
    let inbox = edulink_sms::DevInbox::default();
    let max = spawn_party(&config, Role::Max, max_listener, clock.clone(), &inbox).await;
    let diary = spawn_party(&config, Role::Diary, diary_listener, clock.clone(), &inbox).await;
    let app = TestApp::from_parties(config.clone(), clock.clone(), &max, &diary);

    // The student starts a link in one browser and leaves it at MAX's phone screen; in another, links.
    let pending = Browser::new();
    app.diary_login(&pending, "student6").await;
    let phone_page = app.start_link(&pending).await;
    assert!(phone_page.url.starts_with(&app.max), "{}", phone_page.url);
    let b = Browser::new();
    app.diary_login(&b, "student6").await;
    app.link(&b, "+7 916 300-40-50", "+79163004050").await;
    let st = diary.running.diary.clone().unwrap();
    let subject = edulink_diary::repo::link(&st.db, "student-6").await.unwrap().expect("linked").subject;
    let mst = max.running.max.clone().unwrap();
    let grants = "SELECT COUNT(*) FROM grants WHERE subject = $1";
    assert_eq!(count(&mst.db, grants, &subject).await, 1);
    let transactions = "SELECT COUNT(*) FROM oidc_transactions WHERE user_id = $1";
    assert_eq!(count(&st.db, transactions, "student-6").await, 1, "the other browser's link is pending");
    let live = "SELECT COUNT(*) FROM tokens WHERE revoked_at IS NULL AND grant_id IS NOT NULL AND client_id = $1";
    assert!(count(&mst.db, live, "mesh").await > 0, "the link holds tokens");

    // Later, a stale tab's callback: refused, and audited for the student.
    clock.advance(5);
    let stale = b.get(&format!("{}/sferum/callback?state=stale&code=x&iss=x", app.diary)).await;
    assert_eq!(stale.status, reqwest::StatusCode::BAD_REQUEST);

    // No diary server runs: nobody but the command itself can tell MAX.
    diary.running.stop().await;
    let out = edulink(&config, dir.path(), &["admin", "unlink", "--login", "student6", "--operator", "anna"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("student6: unlinked"), "{stdout}");

    assert_eq!(count(&mst.db, grants, &subject).await, 0, "MAX's grant is gone when the command returns");
    assert_eq!(count(&mst.db, live, "mesh").await, 0, "the link's tokens are revoked");
    let db = edulink::app::diary_db(&config).await.unwrap();
    assert_eq!(count(&db, transactions, "student-6").await, 0, "the pending link died with the link");
    let undelivered = "SELECT COUNT(*) FROM outbox WHERE done_at IS NULL AND kind = $1";
    assert_eq!(count(&db, undelivered, "unlink").await, 0, "nothing is left to the outbox");
    let audited = "SELECT COUNT(*) FROM audit WHERE event = 'unlink' AND detail = $1 AND ip IS NULL";
    assert_eq!(count(&db, audited, "operator:anna").await, 1, "the audit says who unlinked");
    db.close().await;

    // A second run finds nothing to unlink.
    let again = edulink(&config, dir.path(), &["admin", "unlink", "--login", "student6"]).await;
    assert!(String::from_utf8_lossy(&again.stdout).contains("student6: was not linked"));

    // Issue 18, item 4: one timeline across both parties' trails, joined on the pairwise subject.
    let trace = edulink(&config, dir.path(), &["admin", "trace", "--login", "student6", "--since", "2h"]).await;
    let text = String::from_utf8_lossy(&trace.stdout);
    assert!(trace.status.success(), "{text}\n{}", String::from_utf8_lossy(&trace.stderr));
    let order = ["[login]", "[register]", "[authorize]", "[link]", "[sferum_attached]", "[callback_bad_state]"];
    let at: Vec<usize> = order.iter().map(|e| text.find(e).unwrap_or_else(|| panic!("{e} missing:\n{text}"))).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "steps in time order:\n{text}");
    assert!(text.contains("[unlink] (operator:anna)") && text.contains("[sferum_detached]"), "{text}");
    let refused = text.lines().skip_while(|l| !l.contains("[callback_bad_state]")).take(2).collect::<Vec<_>>();
    assert!(refused[0].contains("REFUSED") && refused[1].contains("what to do: an old tab"), "{refused:?}");
    assert!(refused[0].contains("diary") && text.contains("MAX    ok"), "{text}");
    assert!(!text.contains("+7") && !text.contains("79163004050"), "no phone in the trace");
    let later = edulink(&config, dir.path(), &["admin", "trace", "--login", "student6", "--since", "2099-01-01"]).await;
    assert!(String::from_utf8_lossy(&later.stdout).contains("(0 steps"));

    // An unknown login is an error, for support's scripts as for a person.
    for args in [
        &["admin", "trace", "--login", "nosuch"][..],
        &["admin", "link", "--login", "nosuch"],
        &["admin", "unlink", "--login", "nosuch"],
    ] {
        let out = edulink(&config, dir.path(), args).await;
        assert!(!out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch: no such diary login"), "{args:?}");
    }
    let linked = edulink(&config, dir.path(), &["admin", "link", "--login", "student6"]).await;
    assert!(linked.status.success() && String::from_utf8_lossy(&linked.stdout).contains("student6: not linked"));
    max.running.stop().await;
    drop_schemas(&config).await;
}
