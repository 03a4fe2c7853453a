//! Test kit: [`spawn_app`] starts both parties on `127.0.0.1:0` with fresh SQLite files, a movable
//! clock and the in-memory SMS gateway; [`Browser`] is a cookie-keeping client that follows the
//! flows step by step, like a person clicking.

use edulink::app::{self, Overrides, Role, Running};
use edulink::config::Config;
use edulink_diary::PasswordCost;
use edulink_domain::ManualClock;
use edulink_sms::DevInbox;
use reqwest::StatusCode;
use std::sync::Arc;

mod browser;
mod proxy;
pub use browser::{Browser, Page, hidden};
pub use proxy::{forward, forwarding_proxy};

/// What a test's log subscriber wrote: give it `move || capture.clone()` as its writer.
#[derive(Clone, Default)]
pub struct LogCapture(pub Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log capture").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log capture")).into_owned()
    }
}

/// The storage backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite files in a temporary directory.
    Sqlite,
    /// PostgreSQL (`EDULINK_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`), in
    /// schemas of its own per test.
    Postgres,
}

/// The PostgreSQL server the tests use.
pub fn postgres_url() -> String {
    std::env::var("EDULINK_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// True when the PostgreSQL half must run (CI): then an unreachable server fails the test.
pub fn postgres_required() -> bool {
    std::env::var("EDULINK_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// Whether the test PostgreSQL answers; panics when it does not but is required.
pub async fn postgres_available() -> bool {
    let cfg = edulink_store::PoolConfig {
        max_connections: 1,
        acquire_timeout: std::time::Duration::from_secs(3),
        ..Default::default()
    };
    match edulink_store::Db::connect(&postgres_url(), &cfg).await {
        Ok(db) => {
            db.close().await;
            true
        }
        Err(e) if postgres_required() => {
            panic!("PostgreSQL is required (EDULINK_REQUIRE_POSTGRES=1) but unreachable: {e}")
        }
        Err(_) => {
            eprintln!("PostgreSQL not reachable at {}: the PostgreSQL half of this test is skipped", postgres_url());
            false
        }
    }
}

/// Both parties, running.
pub struct TestApp {
    /// The diary's base URL.
    pub diary: String,
    /// MAX's base URL.
    pub max: String,
    /// The SMS inbox.
    pub inbox: DevInbox,
    /// The shared clock; move it forward to expire things.
    pub clock: Arc<ManualClock>,
    /// The configuration it runs with (secrets included).
    pub config: Config,
    /// The running parties.
    pub running: Running,
    /// The backend.
    pub backend: Backend,
    _dir: tempfile::TempDir,
}

/// A fresh configuration for a test on `backend`: temp data dir, demo data, and on PostgreSQL two
/// schemas of its own.
pub fn test_config(backend: Backend, dir: &std::path::Path) -> Config {
    let mut config = Config { data_dir: dir.to_path_buf(), demo: Some(true), ..Config::default() };
    // Tests run side by side: the operator listener takes a free port (see `Running::ops_url`).
    config.ops.listen = "127.0.0.1:0".into();
    if backend == Backend::Postgres {
        let tag = edulink_domain::crypto::random_bytes(6).iter().map(|b| format!("{b:02x}")).collect::<String>();
        // The application name lets a test find (and cut) exactly its own connections.
        let url = postgres_url();
        let sep = if url.contains('?') { '&' } else { '?' };
        config.max.database_url = Some(format!("{url}{sep}application_name=t{tag}"));
        config.diary.database_url = Some(format!("{url}{sep}application_name=t{tag}"));
        config.max.pool.schema = format!("t{tag}_max");
        config.diary.pool.schema = format!("t{tag}_diary");
    }
    config
}

/// Starts both parties with the demo data on `backend`, adjusting the configuration with `tweak`.
/// `None` when the backend is PostgreSQL and no server answers (and it is not required).
pub async fn spawn_app_on(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<TestApp> {
    if backend == Backend::Postgres && !postgres_available().await {
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(backend, dir.path());
    tweak(&mut config);
    let config = config.with_secrets().expect("secrets");
    let clock = Arc::new(ManualClock::default());
    let listeners = (
        tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind"),
    );
    let ov =
        Overrides { password_cost: Some(PasswordCost { m_kib: 64, t: 1 }), listeners: Some(listeners), inbox: None };
    let running = app::start(config.clone(), Role::Both, clock.clone(), ov).await.expect("start");
    Some(TestApp {
        diary: running.diary_url.clone(),
        max: running.max_url.clone(),
        // An app configured with a real gateway has no dev inbox: an empty one stands in.
        inbox: running.inbox.clone().unwrap_or_default(),
        clock,
        config,
        running,
        backend,
        _dir: dir,
    })
}

/// Starts both parties on SQLite with the demo data, adjusting the configuration with `tweak`.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_on(Backend::Sqlite, tweak).await.expect("SQLite always runs")
}

/// Terminates every PostgreSQL connection of the app configured by `config` (found by the
/// application name [`test_config`] gives them), as a failover or an operator would; returns how many.
pub async fn terminate_connections(config: &Config) -> usize {
    let url = config.diary.database_url.clone().expect("a PostgreSQL test configuration");
    let tag = url.rsplit("application_name=").next().unwrap_or_default().to_string();
    let admin = edulink_store::Db::connect(&postgres_url(), &Default::default()).await.expect("admin connection");
    let killed: Vec<(bool,)> = edulink_store::sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&tag)
    .fetch_all(admin.pool())
    .await
    .expect("pg_terminate_backend");
    admin.close().await;
    killed.len()
}

/// Drops the PostgreSQL schemas a test created.
pub async fn drop_schemas(config: &Config) {
    if !config.max.database_url.as_deref().unwrap_or("").starts_with("postgres") {
        return;
    }
    let cfg = edulink_store::PoolConfig { max_connections: 1, ..Default::default() };
    if let Ok(db) = edulink_store::Db::connect(&postgres_url(), &cfg).await {
        for schema in [&config.max.pool.schema, &config.diary.pool.schema] {
            let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
            let _ = edulink_store::sqlx::raw_sql(edulink_store::sqlx::AssertSqlSafe(sql)).execute(db.pool()).await;
        }
        db.close().await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if self.backend != Backend::Postgres {
            return;
        }
        let config = self.config.clone();
        // Drop runs inside the test's runtime: clean up on a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(drop_schemas(&config));
            }
        })
        .join();
    }
}

/// Runs a test body once on SQLite and once on PostgreSQL: `both_backends! { async fn name(app) { … } }`
/// expands to a module `name` with the tests `sqlite` and `postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($(#[$meta:meta])* async fn $name:ident($app:ident) $body:block)*) => {$(
        $crate::both_backends_with! { |_| {}; $(#[$meta])* async fn $name($app) $body }
    )*};
}

/// Like [`both_backends!`], with a configuration tweak for both runs:
/// `both_backends_with! { |c| c.diary.link_starts_per_hour = 100; async fn name(app) { … } }`.
#[macro_export]
macro_rules! both_backends_with {
    ($tweak:expr; $(#[$meta:meta])* async fn $name:ident($app:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($app: $crate::TestApp) $body

            #[tokio::test]
            async fn sqlite() {
                run($crate::spawn_app_on($crate::Backend::Sqlite, $tweak).await.expect("SQLite")).await
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(app) = $crate::spawn_app_on($crate::Backend::Postgres, $tweak).await {
                    run(app).await
                }
            }
        }
    };
}

/// Starts both parties on SQLite with the demo data and the default configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// One party started on its own (see [`spawn_party`]).
pub struct Party {
    /// The running party.
    pub running: Running,
}

/// Starts one party of `config` (with secrets already filled) on `listener`, for tests that stop and
/// restart one party while the other keeps running.
/// MAX instances given the same `inbox` share it, as they would share a real SMS provider.
pub async fn spawn_party(
    config: &Config,
    role: Role,
    listener: tokio::net::TcpListener,
    clock: Arc<ManualClock>,
    inbox: &DevInbox,
) -> Party {
    let spare = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let listeners = if role == Role::Max { (spare, listener) } else { (listener, spare) };
    let ov = Overrides {
        password_cost: Some(PasswordCost { m_kib: 64, t: 1 }),
        listeners: Some(listeners),
        inbox: Some(inbox.clone()),
    };
    Party { running: app::start(config.clone(), role, clock, ov).await.expect("start") }
}

/// Both parties started apart ([`spawn_party`]) on 127.0.0.1, with a movable clock and one SMS
/// inbox: for tests that stop and restart one of them.
pub struct Parties {
    /// MAX.
    pub max: Party,
    /// The diary.
    pub diary: Party,
    /// The shared clock.
    pub clock: Arc<ManualClock>,
    /// The shared SMS inbox.
    pub inbox: DevInbox,
    /// Where MAX listens (to start it again there).
    pub max_addr: std::net::SocketAddr,
    /// Where the diary listens.
    pub diary_addr: std::net::SocketAddr,
}

impl Parties {
    /// Binds both parties, points `config`'s public URLs at them — MAX's at `max_front` instead
    /// when given (a proxy in front of MAX) — and starts them. `config` has its secrets.
    pub async fn start(config: &mut Config, max_front: Option<String>) -> Self {
        let max_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let diary_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (max_addr, diary_addr) =
            (max_listener.local_addr().expect("bound"), diary_listener.local_addr().expect("bound"));
        config.max.public_url = Some(max_front.unwrap_or_else(|| format!("http://{max_addr}")));
        config.diary.public_url = Some(format!("http://{diary_addr}"));
        let (clock, inbox) = (Arc::new(ManualClock::default()), DevInbox::default());
        let max = spawn_party(config, Role::Max, max_listener, clock.clone(), &inbox).await;
        let diary = spawn_party(config, Role::Diary, diary_listener, clock.clone(), &inbox).await;
        Self { max, diary, clock, inbox, max_addr, diary_addr }
    }
}

/// A round-robin TCP load balancer on `listener`: each new connection goes to the next backend.
pub fn round_robin(listener: tokio::net::TcpListener, backends: Vec<std::net::SocketAddr>) {
    tokio::spawn(async move {
        let mut next = 0usize;
        while let Ok((mut inbound, _)) = listener.accept().await {
            let backend = backends[next % backends.len()];
            next += 1;
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
}

impl TestApp {
    /// A handle over two separately started parties (the parties stay owned by the caller).
    pub fn from_parties(config: Config, clock: Arc<ManualClock>, max: &Party, diary: &Party) -> TestAppRef {
        TestAppRef {
            diary: diary.running.diary_url.clone(),
            max: max.running.max_url.clone(),
            inbox: max.running.inbox.clone().expect("dev inbox"),
            clock,
            config,
        }
    }
}

/// The flows of [`TestApp`] over parties started with [`spawn_party`].
pub struct TestAppRef {
    /// The diary's base URL.
    pub diary: String,
    /// MAX's base URL.
    pub max: String,
    /// The SMS inbox.
    pub inbox: DevInbox,
    /// The shared clock.
    pub clock: Arc<ManualClock>,
    /// The configuration.
    pub config: Config,
}

/// What the flows need from an app under test.
pub trait Flows {
    /// The diary's base URL.
    fn diary(&self) -> &str;
    /// MAX's base URL.
    fn max(&self) -> &str;
    /// The SMS inbox.
    fn inbox(&self) -> &DevInbox;
}

impl Flows for TestApp {
    fn diary(&self) -> &str {
        &self.diary
    }
    fn max(&self) -> &str {
        &self.max
    }
    fn inbox(&self) -> &DevInbox {
        &self.inbox
    }
}

impl Flows for TestAppRef {
    fn diary(&self) -> &str {
        &self.diary
    }
    fn max(&self) -> &str {
        &self.max
    }
    fn inbox(&self) -> &DevInbox {
        &self.inbox
    }
}

impl<T: Flows> FlowsExt for T {}

/// The browser flows, for any app under test. (Test code only runs on tokio's current-thread test
/// runtime, so the futures need not be `Send`.)
#[allow(async_fn_in_trait)]
pub trait FlowsExt: Flows {
    /// Signs `login` in to the diary (password `demo`) in `b`.
    async fn diary_login(&self, b: &Browser, login: &str) -> Page {
        let page = b.get(&format!("{}/login", self.diary())).await;
        let csrf = page.csrf();
        let p = b
            .submit(&format!("{}/login", self.diary()), &[("csrf", &csrf), ("login", login), ("password", "demo")])
            .await;
        assert_eq!(p.status, StatusCode::OK, "login of {login} failed: {}", p.body);
        p
    }

    /// The newest code sent to `e164`.
    fn last_code(&self, e164: &str) -> String {
        let msgs = self.inbox().to(e164);
        let text = &msgs.last().unwrap_or_else(|| panic!("no SMS to {e164}")).text;
        text.rsplit('#').next().expect("WebOTP line").trim().to_string()
    }

    /// From the diary's connect page, runs «Перейти к подключению» up to MAX's phone screen.
    async fn start_link(&self, b: &Browser) -> Page {
        let connect = b.visit(&format!("{}/sferum", self.diary())).await;
        assert!(connect.has("Перейти к подключению"), "connect page: {}", connect.body);
        b.submit(&format!("{}/sferum/connect", self.diary()), &[("csrf", &connect.csrf())]).await
    }

    /// On MAX's phone screen, enters `phone` and «Продолжить».
    async fn enter_phone(&self, b: &Browser, phone_page: &Page, phone: &str) -> Page {
        b.submit(&format!("{}/login/phone", self.max()), &[("csrf", &phone_page.csrf()), ("phone", phone)]).await
    }

    /// On MAX's code screen, enters `code` and «Перейти в MAX» (redirects not followed).
    async fn enter_code(&self, b: &Browser, code_page: &Page, code: &str) -> Page {
        b.post(&format!("{}/login/code", self.max()), &[("csrf", &code_page.csrf()), ("code", code)]).await
    }

    /// The whole link flow for a signed-in diary browser: phone, code, registration for a new
    /// phone (all skipped when MAX already has a session), confirmation at MAX, back to the diary.
    /// Returns the final page.
    async fn link(&self, b: &Browser, phone: &str, e164: &str) -> Page {
        let phone_page = self.start_link(b).await;
        if phone_page.url.contains("/authorize/continue") {
            // MAX already has a session in this browser: straight to the confirmation.
            return b.submit(&format!("{}/authorize/confirm", self.max()), &[("csrf", &phone_page.csrf())]).await;
        }
        assert!(
            phone_page.url.starts_with(self.max()) && phone_page.has("Продолжить"),
            "phone page: {}",
            phone_page.body
        );
        let code_page = self.enter_phone(b, &phone_page, phone).await;
        assert!(code_page.has("Перейти в MAX"), "code page: {}", code_page.body);
        let code = self.last_code(e164);
        let after = b.follow(self.enter_code(b, &code_page, &code).await).await;
        let confirm = if after.url.ends_with("/login/register") {
            b.submit(
                &format!("{}/login/register", self.max()),
                &[("csrf", &after.csrf()), ("first_name", "Мария"), ("last_name", "Новая")],
            )
            .await
        } else {
            after
        };
        assert!(
            confirm.url.contains("/authorize/continue"),
            "expected confirmation, got {}: {}",
            confirm.url,
            confirm.body
        );
        b.submit(&format!("{}/authorize/confirm", self.max()), &[("csrf", &confirm.csrf())]).await
    }
}
