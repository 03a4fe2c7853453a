//! Serving behind a load balancer: the drain on SIGTERM, readiness that means "can take writes",
//! slow-client timeouts, the connection cap, and the operator listener.

use edulink::app::Role;
use edulink::config::Config;
use edulink_domain::ManualClock;
use edulink_testkit::{Backend, Party, spawn_party, test_config};
use reqwest::StatusCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Both parties on SQLite as a [`Party`] (which `stop` may consume), diary on the returned URL.
async fn party(tweak: impl FnOnce(&mut Config)) -> (Party, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(Backend::Sqlite, dir.path()).with_secrets().unwrap();
    tweak(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let inbox = edulink_sms::DevInbox::default();
    let p = spawn_party(&config, Role::Both, listener, Arc::new(ManualClock::default()), &inbox).await;
    (p, dir)
}

async fn status(url: String) -> StatusCode {
    reqwest::get(url).await.unwrap().status()
}

/// Opens a connection to `base` (`http://host:port`) and sends `bytes`.
async fn raw(base: &str, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

/// Reads until the peer closes (or errs); returns what came and when the close was seen.
async fn until_closed(s: &mut TcpStream) -> (String, Instant) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return (String::from_utf8_lossy(&got).into_owned(), Instant::now()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A token request whose head has arrived and whose 40-byte body has not: in progress.
async fn token_request_in_progress(max: &str) -> TcpStream {
    let head = "POST /oauth/token HTTP/1.1\r\nHost: max\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                Content-Length: 40\r\n\r\ngrant_type=authorization_code";
    raw(max, head.as_bytes()).await
}

/// The drain as Kubernetes and haproxy expect it (Kubernetes "Termination of Pods": SIGTERM, then
/// the grace period; the balancer's health check must see the instance go unready while it still
/// serves): `/readyz` answers 503 on every listener for `drain_secs` while pages answer 200; then
/// no new connections, a request in progress still gets its answer, and `stop` — the code the
/// SIGTERM handler runs — returns within drain + `shutdown_timeout_secs` even with a request that
/// never completes.
#[tokio::test]
async fn a_drain_answers_unready_while_serving_then_finishes_requests_within_the_timeout() {
    let (p, _dir) = party(|c| {
        c.server.drain_secs = Some(2);
        c.server.shutdown_timeout_secs = 2;
    })
    .await;
    let (diary, max, ops) =
        (p.running.diary_url.clone(), p.running.max_url.clone(), p.running.ops_url.clone().unwrap());
    for base in [&diary, &max, &ops] {
        assert_eq!(status(format!("{base}/readyz")).await, StatusCode::OK, "{base}");
    }
    let mut finishing = token_request_in_progress(&max).await;
    let mut stuck = token_request_in_progress(&max).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let stopping = tokio::spawn(p.running.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    for base in [&diary, &max, &ops] {
        assert_eq!(status(format!("{base}/readyz")).await, StatusCode::SERVICE_UNAVAILABLE, "{base} drains");
    }
    assert_eq!(status(format!("{diary}/login")).await, StatusCode::OK, "pages are served during the drain");
    assert_eq!(status(format!("{max}/.well-known/openid-configuration")).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(TcpStream::connect(diary.trim_start_matches("http://")).await.is_err(), "no new connections after it");
    finishing.write_all(b"&code=nothing-at-all").await.unwrap();
    let (answer, _) = until_closed(&mut finishing).await;
    assert!(answer.starts_with("HTTP/1.1 4") && answer.contains("invalid_"), "answered, then closed: {answer}");
    let (_, cut) = until_closed(&mut stuck).await;
    assert!(cut.duration_since(started) >= Duration::from_millis(3800), "the shutdown timeout ran");
    tokio::time::timeout(Duration::from_secs(3), stopping).await.expect("stop returns in time").unwrap();
    assert!(started.elapsed() < Duration::from_secs(6), "drain 2 s + timeout 2 s: {:?}", started.elapsed());
}

/// Slowloris (CVE-2007-6750 class) and idle keep-alive connections, with Go's `net/http` server
/// semantics (`ReadHeaderTimeout`, `IdleTimeout`): a head dribbled one line at a time is cut at the
/// header timeout; a kept-alive connection is cut after the idle timeout, not the shorter header
/// timeout; a request body must arrive within the body timeout.
#[tokio::test]
async fn slow_heads_idle_connections_and_slow_bodies_are_closed_at_their_timeouts() {
    let (p, _dir) = party(|c| {
        c.server.header_timeout_secs = 1;
        c.server.idle_timeout_secs = 3;
        c.server.body_timeout_secs = 1;
    })
    .await;
    let diary = p.running.diary_url.clone();
    let t0 = Instant::now();
    let mut slow = raw(&diary, b"GET / HTTP/1.1\r\n").await;
    let dribble = async {
        for i in 0..20 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if slow.write_all(format!("X-Line-{i}: 1\r\n").as_bytes()).await.is_err() {
                break;
            }
        }
        until_closed(&mut slow).await
    };
    let (got, closed) = tokio::time::timeout(Duration::from_secs(4), dribble).await.expect("cut");
    let took = closed.duration_since(t0);
    assert!(got.is_empty() && took >= Duration::from_millis(900) && took < Duration::from_millis(2500), "{took:?}");

    let mut idle = raw(&diary, b"GET /healthz HTTP/1.1\r\nHost: d\r\n\r\n").await;
    let mut first = [0u8; 256];
    let n = idle.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    let (_, closed) = tokio::time::timeout(Duration::from_secs(6), until_closed(&mut idle)).await.expect("cut");
    let idle_for = closed.duration_since(answered);
    assert!(idle_for >= Duration::from_millis(2800) && idle_for < Duration::from_millis(4500), "{idle_for:?}");

    let mut body = token_request_in_progress(&p.running.max_url).await;
    let (answer, _) = tokio::time::timeout(Duration::from_secs(4), until_closed(&mut body)).await.expect("cut");
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    p.running.stop().await;
}

/// Over `max_connections`, a new connection waits in the kernel's listen backlog (as nginx's
/// `worker_connections` and Go's `netutil.LimitListener` do) and is served once a slot frees.
#[tokio::test]
async fn connections_over_the_limit_wait_for_a_free_slot() {
    let (p, _dir) = party(|c| c.server.max_connections = 2).await;
    let diary = p.running.diary_url.clone();
    let req = b"GET /healthz HTTP/1.1\r\nHost: d\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = raw(&diary, req).await;
        let mut buf = [0u8; 256];
        assert!(s.read(&mut buf).await.unwrap() > 0);
        held.push(s);
    }
    let mut third = raw(&diary, req).await;
    let mut buf = [0u8; 256];
    let early = tokio::time::timeout(Duration::from_millis(600), third.read(&mut buf)).await;
    assert!(early.is_err(), "the third connection waits");
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(3), third.read(&mut buf)).await.expect("served").unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    p.running.stop().await;
}

/// "database or disk is full": SQLite refuses to grow the file (here `PRAGMA max_page_count`, the
/// error a full disk gives, sqlite.org/pragma.html#pragma_max_page_count). `/readyz` must say 503
/// although SELECT still works, so the balancer stops sending sign-ins that would fail.
#[tokio::test]
async fn readiness_fails_when_the_database_cannot_take_writes() {
    let (p, _dir) = party(|_| {}).await;
    let diary = p.running.diary_url.clone();
    let db = p.running.diary.as_ref().unwrap().db.clone();
    assert_eq!(status(format!("{diary}/readyz")).await, StatusCode::OK);
    let pages: i64 = edulink_store::sqlx::query_scalar("PRAGMA page_count").fetch_one(db.pool()).await.unwrap();
    let cap = format!("PRAGMA max_page_count = {pages}");
    db.execute(edulink_store::sqlx::query(edulink_store::sqlx::AssertSqlSafe(cap))).await.unwrap();
    tokio::time::sleep(edulink_store::READY_CHECK_EVERY).await;
    assert_eq!(status(format!("{diary}/readyz")).await, StatusCode::SERVICE_UNAVAILABLE);
    let ops = p.running.ops_url.clone().unwrap();
    assert_eq!(status(format!("{ops}/readyz")).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(status(format!("{diary}/healthz")).await, StatusCode::OK, "alive, only not ready");
    assert_eq!(status(format!("{}/readyz", p.running.max_url)).await, StatusCode::OK, "MAX's database is fine");
    p.running.stop().await;
}

/// After `pg_terminate_backend` of every pooled connection (a failover, an operator's kill), the
/// database is fine: `/readyz` retries on a fresh connection instead of telling the balancer to
/// drop every instance at once (PostgreSQL docs, "Server Signaling Functions").
#[tokio::test]
async fn readiness_survives_terminated_pooled_connections() {
    let Some(app) = edulink_testkit::spawn_app_on(Backend::Postgres, |_| {}).await else { return };
    for base in [&app.diary, &app.max] {
        assert_eq!(status(format!("{base}/readyz")).await, StatusCode::OK);
    }
    assert!(edulink_testkit::terminate_connections(&app.config).await > 0, "the app had connections to cut");
    tokio::time::sleep(edulink_store::READY_CHECK_EVERY).await;
    for base in [&app.diary, &app.max] {
        assert_eq!(status(format!("{base}/readyz")).await, StatusCode::OK, "{base}");
    }
}

/// `/metrics` is for operators: on the loopback operator listener, not on the public ports
/// (OWASP ASVS 14.3: no internal information on public interfaces); the balancer's `/healthz` and
/// `/readyz` are on both.
#[tokio::test]
async fn metrics_are_on_the_operator_listener_only() {
    let (p, _dir) = party(|_| {}).await;
    let ops = p.running.ops_url.clone().unwrap();
    assert!(ops.starts_with("http://127.0.0.1:"));
    for base in [&p.running.diary_url, &p.running.max_url] {
        assert_eq!(status(format!("{base}/metrics")).await, StatusCode::NOT_FOUND, "{base}");
        for path in ["/healthz", "/readyz"] {
            assert_eq!(status(format!("{base}{path}")).await, StatusCode::OK, "{base}{path}");
        }
    }
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(status(format!("{ops}{path}")).await, StatusCode::OK, "{ops}{path}");
    }
    p.running.stop().await;
}

/// Kills the child process when a test ends early.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The real binary on SIGTERM (what `kill`, systemd's `KillSignal` and Kubernetes send first):
/// `/readyz` answers 503 on the public and operator ports during the drain while `/healthz` still
/// answers, then the process exits by itself, successfully, within drain + shutdown timeout.
#[tokio::test]
async fn sigterm_drains_the_real_binary_then_it_exits() {
    let dir = tempfile::tempdir().unwrap();
    let (d, m, o) = (free_port(), free_port(), free_port());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_edulink"))
        .arg("serve")
        .env("EDULINK_DATA_DIR", dir.path())
        .env("EDULINK_DEMO", "false")
        .env("EDULINK_DIARY__LISTEN", format!("127.0.0.1:{d}"))
        .env("EDULINK_MAX__LISTEN", format!("127.0.0.1:{m}"))
        .env("EDULINK_OPS__LISTEN", format!("127.0.0.1:{o}"))
        .env("EDULINK_SERVER__DRAIN_SECS", "2")
        .env("EDULINK_SERVER__SHUTDOWN_TIMEOUT_SECS", "3")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Child(child);
    let url = |port: u16, path: &str| format!("http://127.0.0.1:{port}{path}");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    let get = |u: String| {
        let client = client.clone();
        async move { client.get(u).send().await.map(|r| r.status()).ok() }
    };
    let up = Instant::now();
    while get(url(o, "/readyz")).await != Some(StatusCode::OK) {
        assert!(up.elapsed() < Duration::from_secs(60), "the server starts");
        assert!(child.0.try_wait().unwrap().is_none(), "the server runs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let term = Instant::now();
    assert_eq!(unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) }, 0);
    tokio::time::sleep(Duration::from_millis(400)).await;
    for port in [d, m, o] {
        let exited = child.0.try_wait().unwrap();
        assert_eq!(
            get(url(port, "/readyz")).await,
            Some(StatusCode::SERVICE_UNAVAILABLE),
            "{port} drains ({exited:?})"
        );
    }
    assert_eq!(get(url(d, "/login")).await, Some(StatusCode::OK), "still serving");
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(term.elapsed() < Duration::from_secs(7), "exits within drain + timeout");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(term.elapsed() >= Duration::from_secs(2), "not before the drain ends");
}
