//! `edulink backup` and `edulink restore`, run as the real binary beside running parties.

use crate::admin::edulink;
use axum::extract::Request;
use edulink::app::Role;
use edulink::config::Config;
use edulink_store::{Db, sqlx};
use edulink_testkit::{Backend, Browser, FlowsExt, Parties, TestApp, spawn_party, test_config};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

/// A gate in front of MAX: forwards every request, but holds the diary's provisioning calls
/// (`PUT /sferum/api/v1/profiles/…`) until opened, and tells when one arrives.
struct Gate {
    arrived: Arc<Notify>,
    open: watch::Sender<bool>,
}

impl Gate {
    fn serve(listener: TcpListener, backend: SocketAddr) -> Self {
        let (open, opened) = watch::channel(false);
        let arrived = Arc::new(Notify::new());
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let seen = arrived.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let (client, seen, mut opened) = (client.clone(), seen.clone(), opened.clone());
            async move {
                if req.method() == axum::http::Method::PUT && req.uri().path().starts_with("/sferum/api/v1/profiles/") {
                    seen.notify_one();
                    let _ = opened.wait_for(|open| *open).await;
                }
                edulink_testkit::forward(&client, backend, req).await
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { arrived, open }
    }
}

async fn count(db: &Db, sql: &'static str, bind: &str) -> i64 {
    sqlx::query_scalar(sql).bind(bind).fetch_one(db.pool()).await.unwrap()
}

async fn integrity(db: &Db) -> String {
    sqlx::query_scalar("PRAGMA integrity_check").fetch_one(db.pool()).await.unwrap()
}

/// Runs `edulink` and returns its stdout, failing the test with its output unless it succeeded.
async fn run_ok(config: &Config, dir: &Path, args: &[&str]) -> String {
    let out = edulink(config, dir, args).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "edulink {args:?}: {stdout}\n{stderr}");
    stdout.into_owned()
}

const PROVISIONED: &str = "SELECT COUNT(*) FROM sferum_profiles p JOIN grants g ON g.account_id = p.account_id \
                           WHERE g.subject = $1 AND p.confirmed_by IS NOT NULL";

/// Issue 17: a plain copy of `diary.db` taken while the diary ran held none of its links, and the
/// two parties were never captured at one instant. The backup here is taken by the binary, in
/// another process, at the worst moment of a link: the diary has stored the link and its
/// provisioning job, MAX has the grant, and the provisioning call is on its way (held at the
/// gate). Restored into a fresh data directory, the link is there, MAX's grant matches it, and
/// the outbox job that provisions Сферум is there and delivers once its lease ends — the state of
/// one instant (SQLite's online backup API, <https://sqlite.org/backup.html>). A restore over the
/// files of a running instance is refused.
#[tokio::test]
async fn a_backup_taken_during_a_link_restores_the_link_and_its_provisioning() {
    let dir = tempfile::tempdir().unwrap();
    let backup_dir = dir.path().join("backup");
    let backup_arg = backup_dir.display().to_string();
    let gate_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = test_config(Backend::Sqlite, dir.path()).with_secrets().unwrap();
    let front = format!("http://{}", gate_listener.local_addr().unwrap());
    let Parties { max, diary, clock, inbox, max_addr, diary_addr } = Parties::start(&mut config, Some(front)).await;
    let gate = Gate::serve(gate_listener, max_addr);
    let app = TestApp::from_parties(config.clone(), clock.clone(), &max, &diary);

    let b = Browser::new();
    app.diary_login(&b, "student8").await;
    let arrived = gate.arrived.clone();
    let (_, stdout) = tokio::join!(app.link(&b, "+7 916 400-50-60", "+79164005060"), async {
        arrived.notified().await;
        let stdout = run_ok(&config, dir.path(), &["backup", "--to", &backup_arg]).await;
        gate.open.send_replace(true);
        stdout
    });
    assert!(stdout.contains("writes paused"), "{stdout}");
    let (st, mst) = (diary.running.diary.clone().unwrap(), max.running.max.clone().unwrap());
    let subject = edulink_diary::repo::link(&st.db, "student-8").await.unwrap().expect("linked").subject;
    assert_eq!(count(&mst.db, PROVISIONED, &subject).await, 1, "live: provisioned once the gate opened");

    let refused = edulink(&config, dir.path(), &["restore", "--from", &backup_arg]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("running instance"), "{refused:?}");
    diary.running.stop().await;
    max.running.stop().await;

    // A fresh data directory, the same configuration and secrets otherwise.
    let fresh = tempfile::tempdir().unwrap();
    let restored = Config { data_dir: fresh.path().to_path_buf(), ..config.clone() };
    run_ok(&restored, fresh.path(), &["restore", "--from", &backup_arg]).await;
    let max =
        spawn_party(&restored, Role::Max, TcpListener::bind(max_addr).await.unwrap(), clock.clone(), &inbox).await;
    let diary =
        spawn_party(&restored, Role::Diary, TcpListener::bind(diary_addr).await.unwrap(), clock.clone(), &inbox).await;
    let (st, mst) = (diary.running.diary.clone().unwrap(), max.running.max.clone().unwrap());
    let link = edulink_diary::repo::link(&st.db, "student-8").await.unwrap().expect("the link is in the backup");
    assert_eq!(link.subject, subject);
    assert_eq!(count(&mst.db, "SELECT COUNT(*) FROM grants WHERE subject = $1", &subject).await, 1, "MAX's grant");
    assert_eq!(count(&mst.db, PROVISIONED, &subject).await, 0, "taken before the provisioning reached MAX");
    let queued = "SELECT COUNT(*) FROM outbox WHERE done_at IS NULL AND kind = $1";
    assert_eq!(count(&st.db, queued, "provision").await, 1, "…and the job that provisions is there");
    assert_eq!((integrity(&st.db).await, integrity(&mst.db).await), ("ok".into(), "ok".into()));

    // The job was leased to the request that was delivering it; when the lease ends, the
    // restored diary's worker delivers it and both parties agree again.
    clock.advance(61);
    st.outbox_wake.notify_one();
    let mut waited = 0;
    while count(&mst.db, PROVISIONED, &subject).await == 0 {
        assert!(waited < 100, "the restored outbox did not provision within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    }
    diary.running.stop().await;
    max.running.stop().await;
}

/// A backup taken while 50 tasks write to both parties (each writes a row to the diary, then the
/// same row to MAX) restores to files that pass `PRAGMA integrity_check`
/// (<https://sqlite.org/pragma.html#pragma_integrity_check>), and to one instant: MAX holds no
/// row the diary lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_concurrent_writes_restores_sound_files_of_one_instant() {
    let app = edulink_testkit::spawn_app().await;
    let backup_dir = app.config.data_dir.join("backup");
    let (st, mst) = (app.running.diary.clone().unwrap(), app.running.max.clone().unwrap());
    let insert = "INSERT INTO audit (id, at, event, detail) VALUES ($1, 0, 'backup-test', $1)";
    let mut writers = Vec::new();
    for i in 0..50 {
        let (diary, max) = (st.db.clone(), mst.db.clone());
        writers.push(tokio::spawn(async move {
            for j in 0..20 {
                let id = format!("w{i:02}-{j:02}");
                diary.execute(sqlx::query(insert).bind(id.clone())).await.unwrap();
                max.execute(sqlx::query(insert).bind(id)).await.unwrap();
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    run_ok(&app.config, &app.config.data_dir, &["backup", "--to", &backup_dir.display().to_string()]).await;
    for w in writers {
        w.await.unwrap();
    }

    let fresh = tempfile::tempdir().unwrap();
    let restored = Config { data_dir: fresh.path().to_path_buf(), ..app.config.clone() };
    run_ok(&restored, fresh.path(), &["restore", "--from", &backup_dir.display().to_string()]).await;
    let diary = edulink::app::diary_db(&restored).await.unwrap();
    let max = edulink::app::max_db(&restored).await.unwrap();
    assert_eq!((integrity(&diary).await, integrity(&max).await), ("ok".into(), "ok".into()));
    let rows = "SELECT id FROM audit WHERE event = 'backup-test'";
    let in_diary: Vec<String> = sqlx::query_scalar(rows).fetch_all(diary.pool()).await.unwrap();
    let in_max: Vec<String> = sqlx::query_scalar(rows).fetch_all(max.pool()).await.unwrap();
    assert!(in_max.iter().all(|id| in_diary.contains(id)), "MAX holds rows the diary lacks: not one instant");
    diary.close().await;
    max.close().await;
}

/// PostgreSQL has its own tools: both commands refuse it and name them (docs/deployment.md).
#[tokio::test]
async fn backup_and_restore_refuse_postgresql_and_point_to_pg_dump() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(Backend::Postgres, dir.path()).with_secrets().unwrap();
    for args in [["backup", "--to", "b"], ["restore", "--from", "b"]] {
        let out = edulink(&config, dir.path(), &args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains("pg_dump") && stderr.contains("docs/deployment.md"), "{stderr}");
    }
    assert!(!dir.path().join("b").exists(), "nothing was written");
}
