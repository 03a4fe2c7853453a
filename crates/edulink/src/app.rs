//! Wiring: connects databases, applies migrations, seeds the demo, and serves the parties.

use crate::config::{Config, Mode, Scope};
use anyhow::Context;
use edulink_diary::{DiaryConfig, DiaryState, PasswordCost};
use edulink_domain::{Clock, SecretKey};
use edulink_max::oidc::Client;
use edulink_max::{MaxConfig, MaxState};
use edulink_sms::{DevInbox, HttpGateway, SmsGateway};
use edulink_store::Db;
use edulink_web::serve::Phase;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Which parties this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Both (the default run).
    Both,
    /// Only the diary.
    Diary,
    /// Only MAX.
    Max,
}

impl Role {
    /// What running this role uses of the configuration.
    pub fn scope(self) -> Scope {
        match self {
            Role::Both => Scope::Both,
            Role::Diary => Scope::Diary,
            Role::Max => Scope::Max,
        }
    }
}

/// Knobs that tests and benchmarks change; production runs use the defaults.
#[derive(Debug, Default)]
pub struct Overrides {
    /// Password hashing cost (tests use a tiny one).
    pub password_cost: Option<PasswordCost>,
    /// Listen on these already-bound sockets instead of the configured addresses.
    pub listeners: Option<(TcpListener, TcpListener)>,
    /// Use this dev inbox (shared by several MAX instances in a test) instead of a new one.
    pub inbox: Option<DevInbox>,
}

/// Running parties.
pub struct Running {
    /// The diary's base URL.
    pub diary_url: String,
    /// MAX's base URL.
    pub max_url: String,
    /// The dev SMS inbox, when the dev gateway is in use.
    pub inbox: Option<DevInbox>,
    /// The diary's state (for tests and admin).
    pub diary: Option<DiaryState>,
    /// MAX's state.
    pub max: Option<MaxState>,
    /// The operator listener's base URL (`/metrics`, `/healthz`, `/readyz`), unless turned off.
    pub ops_url: Option<String>,
    /// The listeners' lifecycle (drain, stop, abort).
    phase: watch::Sender<Phase>,
    /// Background tasks (key reload, outbox) end when this turns true.
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    drain: Duration,
    shutdown_timeout: Duration,
}

impl Running {
    /// Stops as on SIGTERM: `/readyz` answers 503 for the drain period while every listener still
    /// serves; then no new connections are taken, chat streams end, requests in progress finish
    /// and their connections close. Whatever still runs after the shutdown timeout is cut.
    pub async fn stop(self) {
        let Running { phase, shutdown, mut tasks, drain, shutdown_timeout, diary, max, .. } = self;
        phase.send_replace(Phase::Draining);
        if !drain.is_zero() {
            tracing::info!(drain_secs = drain.as_secs(), "draining: /readyz answers 503, requests are still served");
            tokio::time::sleep(drain).await;
        }
        phase.send_replace(Phase::Stopping);
        if let Some(m) = &max {
            // Open chat streams end now, or the graceful shutdown would wait for them.
            m.hub.shut_down();
        }
        let _ = shutdown.send(true);
        let deadline = tokio::time::Instant::now() + shutdown_timeout;
        for t in &mut tasks {
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                break;
            }
        }
        if tasks.iter().any(|t| !t.is_finished()) {
            tracing::warn!(timeout_secs = shutdown_timeout.as_secs(), "shutdown timeout: closing what still runs");
            phase.send_replace(Phase::Abort);
            for t in tasks.iter_mut().filter(|t| !t.is_finished()) {
                if tokio::time::timeout(Duration::from_secs(1), &mut *t).await.is_err() {
                    t.abort();
                }
            }
        }
        if let Some(d) = &diary {
            d.db.close().await;
        }
        if let Some(m) = &max {
            m.db.close().await;
        }
    }

    /// Waits until Ctrl-C / SIGTERM (listened for since `signals` was installed), then stops.
    pub async fn wait_for_signal(self, mut signals: Signals) {
        signals.recv().await;
        tracing::info!("shutting down");
        self.stop().await;
    }
}

/// SIGTERM and Ctrl-C, caught from [`Signals::install`] on: install before serving, or a signal
/// that arrives right after the listeners open ends the process without a drain.
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts catching the signals (inside the runtime).
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! { _ = self.term.recv() => {}, _ = self.int.recv() => {} }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The sector of the demo diary client; subjects are pairwise per sector.
pub const MESH_CLIENT: &str = "mesh";
/// «Моя школа Дневник», the diary's second app (public, PKCE only).
pub const MYSCHOOL_CLIENT: &str = "moyashkola";

/// Connects to MAX's database and migrates it.
pub async fn max_db(cfg: &Config) -> anyhow::Result<Db> {
    let db = Db::connect(&cfg.max_db(), &cfg.max.pool.to_pool_config()).await?;
    db.migrate(&edulink_max::migrations()).await?;
    Ok(db)
}

/// Connects to the diary's database and migrates it.
pub async fn diary_db(cfg: &Config) -> anyhow::Result<Db> {
    let db = Db::connect(&cfg.diary_db(), &cfg.diary.pool.to_pool_config()).await?;
    db.migrate(&edulink_diary::migrations()).await?;
    Ok(db)
}

fn sms_gateway(cfg: &Config, inbox: Option<DevInbox>) -> SmsGateway {
    match cfg.max.sms.gateway.as_str() {
        "http" => SmsGateway::Http(HttpGateway::new(
            cfg.max.sms.url.clone().unwrap_or_default(),
            cfg.max.sms.token.clone().unwrap_or_default(),
        )),
        _ => SmsGateway::Dev(inbox.unwrap_or_default()),
    }
}

/// MAX's configuration from the file's.
pub fn max_config(cfg: &Config, issuer: String) -> anyhow::Result<MaxConfig> {
    let secret = SecretKey::from_base64(cfg.max.secret.as_deref().unwrap_or_default())?;
    let mut m = MaxConfig::new(issuer, secret);
    m.code_policy = cfg.max.codes;
    m.sms_limits = cfg.max.limits;
    m.allowed_countries = cfg.max.allowed_countries.clone();
    m.dev_mode = cfg.mode == Mode::Dev;
    m.conversion_alert =
        edulink_max::ConversionAlert { below: cfg.max.alerts.conversion_below, min_sent: cfg.max.alerts.min_sent };
    m.unfinished_link_secs = cfg.max.unfinished_link_secs;
    Ok(m)
}

/// The diary client registration that matches the diary's configuration.
pub fn mesh_client(cfg: &Config, diary_url: &str) -> Client {
    Client {
        client_id: cfg.diary.client_id.clone(),
        name: "МЭШ".into(),
        secret_hash: cfg.diary.client_secret.as_deref().map(edulink_domain::crypto::sha256_b64),
        redirect_uris: vec![format!("{diary_url}/sferum/callback")],
        // A fast signature for our own client (docs/architecture.md, «Numbers»). Ed25519 rather than P-256: both sign
        // fast at MAX, but the diary's verifier (openidconnect) checks P-256 in pure Rust, ~9 % of
        // the server's CPU in a sign-in profile (BENCHMARKS.md). RS256 stays the default for others.
        id_token_alg: "EdDSA".into(),
        sector: MESH_CLIENT.into(),
        scopes: ["openid", "profile", "offline_access", "sferum.provision"].map(String::from).to_vec(),
        // Confidential: DPoP and PAR are offered, not required.
        policy: edulink_max::oidc::ClientPolicy::default(),
    }
}

/// The diary client's logout registration: back to the diary's main page after a logout at MAX
/// (RP-Initiated Logout 1.0), and logout tokens to the diary (Back-Channel Logout 1.0). `sid` is
/// not required: a deleted MAX account is announced by subject alone.
pub fn mesh_logout(diary_url: &str) -> edulink_max::repo::logout::LogoutRegistration {
    edulink_max::repo::logout::LogoutRegistration {
        post_logout_redirect_uris: vec![format!("{diary_url}/")],
        backchannel_logout_uri: Some(format!("{diary_url}/oidc/backchannel-logout")),
        backchannel_logout_session_required: false,
    }
}

/// The diary's mobile apps: public clients (PKCE, PAR and DPoP) with their app-link redirects, in the diary's
/// sector, so a link made in an app is the same link as on the web.
pub fn app_clients() -> Vec<Client> {
    let app = |id: &str, name: &str, redirect: &str, alg: &str| Client {
        client_id: id.into(),
        name: name.into(),
        secret_hash: None,
        redirect_uris: vec![redirect.into()],
        id_token_alg: alg.into(),
        sector: MESH_CLIENT.into(),
        scopes: ["openid", "profile", "offline_access"].map(String::from).to_vec(),
        // Public: a stolen code or token must be useless without the app's key (RFC 9449, RFC 9126).
        policy: edulink_max::oidc::ClientPolicy::APP,
    };
    vec![
        app(MESH_APP_CLIENT, "Дневник МЭШ", MESH_APP_REDIRECT, "ES256"),
        app(MYSCHOOL_CLIENT, "Моя школа Дневник", MYSCHOOL_REDIRECT, "EdDSA"),
    ]
}

/// «Дневник МЭШ», the diary's app.
pub const MESH_APP_CLIENT: &str = "mesh-app";
/// Its app-link redirect.
pub const MESH_APP_REDIRECT: &str = "ru.mos.dnevnik:/sferum/callback";
/// Its app-link redirect («Моя школа Дневник»).
pub const MYSCHOOL_REDIRECT: &str = "ru.myschool.diary:/sferum/callback";

/// The diary's configuration from the file's, served at `diary_url`, with MAX at `max_url` unless
/// the file names another issuer.
pub fn diary_config(cfg: &Config, diary_url: String, max_url: &str) -> anyhow::Result<DiaryConfig> {
    let secret = SecretKey::from_base64(cfg.diary.secret.as_deref().unwrap_or_default())?;
    let mut dc = DiaryConfig::new(
        diary_url,
        secret,
        cfg.diary.max_issuer.clone().unwrap_or_else(|| max_url.to_owned()),
        cfg.diary.client_id.clone(),
        cfg.diary.client_secret.clone().unwrap_or_default(),
    );
    dc.link_starts_per_hour = cfg.diary.link_starts_per_hour;
    dc.outbox_max_backoff_secs = cfg.diary.outbox_max_backoff_secs;
    dc.reconcile_interval_secs = cfg.diary.reconcile_interval_secs;
    dc.instance_id = cfg.diary.instance_id.clone().unwrap_or_else(|| format!("{}/{}", host_name(), cfg.diary.listen));
    if let Some(base) = &cfg.diary.call_base_url {
        dc.call_base_url = base.clone();
    }
    dc.apps = vec![
        edulink_diary::AppClient {
            key: "dnevnik_mesh".into(),
            client_id: MESH_APP_CLIENT.into(),
            redirect_uri: MESH_APP_REDIRECT.into(),
        },
        edulink_diary::AppClient {
            key: "moyashkola".into(),
            client_id: MYSCHOOL_CLIENT.into(),
            redirect_uri: MYSCHOOL_REDIRECT.into(),
        },
    ];
    Ok(dc)
}

/// This machine's host name (for the default instance id).
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The diary's state without a server, for the command line: its database (migrated), and MAX at
/// the configured address, so calls to MAX (an unlink's detach) are made as a server would make them.
pub async fn diary_state(cfg: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<DiaryState> {
    let dc = diary_config(cfg, cfg.diary_url(), &cfg.max_url())?;
    Ok(DiaryState::new(diary_db(cfg).await?, dc, clock))
}

/// MAX's state without a server, for the command line: its database (migrated), no SMS gateway
/// (commands send none).
pub async fn max_state(cfg: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<MaxState> {
    let sms = edulink_sms::SmsGateway::Dev(Default::default());
    Ok(MaxState::new(max_db(cfg).await?, max_config(cfg, cfg.max_url())?, sms, clock).await?)
}

/// Starts the parties of `role` and returns once they accept connections.
pub async fn start(cfg: Config, role: Role, clock: Arc<dyn Clock>, ov: Overrides) -> anyhow::Result<Running> {
    cfg.check_for(role.scope())?;
    // The process-wide recorder, with every catalogued series at 0, before anything counts.
    edulink_web::ops::prometheus();
    let janitor = crate::janitor::Settings::new(&cfg);
    let (diary_listener, max_listener) = match ov.listeners {
        Some(l) => l,
        None => {
            let bind = |field: &'static str, addr: &str| {
                let addr = addr.to_owned();
                async move { TcpListener::bind(&addr).await.with_context(|| format!("{field} = {addr:?}")) }
            };
            let d = if role != Role::Max { Some(bind("diary.listen", &cfg.diary.listen).await?) } else { None };
            let m = if role != Role::Diary { Some(bind("max.listen", &cfg.max.listen).await?) } else { None };
            match (d, m) {
                (Some(d), Some(m)) => (d, m),
                (Some(d), None) => (d, TcpListener::bind("127.0.0.1:0").await?),
                (None, Some(m)) => (TcpListener::bind("127.0.0.1:0").await?, m),
                (None, None) => unreachable!("a role runs at least one party"),
            }
        }
    };
    let diary_url = cfg
        .diary
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", diary_listener.local_addr().expect("bound")));
    let max_url =
        cfg.max.public_url.clone().unwrap_or_else(|| format!("http://{}", max_listener.local_addr().expect("bound")));
    let trusted = cfg.trusted().map_err(|e| anyhow::anyhow!("trusted_proxies: {e}"))?;
    let ops_listener = match cfg.ops.listen.as_str() {
        "" => None,
        addr => match TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            // `edulink serve` with no configuration must start on a fresh machine even where a local
            // Prometheus holds the port: in dev mode the operator listener is optional.
            Err(e) if cfg.mode == Mode::Dev => {
                tracing::warn!(addr, error = %e, "ops.listen not bound: no /metrics in this process");
                eprintln!("note: ops.listen {addr} is taken ({e}); /metrics is off (set EDULINK_OPS__LISTEN)");
                None
            }
            Err(e) => return Err(anyhow::anyhow!("ops.listen {addr}: {e}")),
        },
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (phase, phase_rx) = watch::channel(Phase::Serving);
    let limits = cfg.server.limits();
    let mut tasks = vec![tokio::spawn(edulink_web::ops::upkeep(shutdown_rx.clone()))];
    let mut running = Running {
        diary_url: diary_url.clone(),
        max_url: max_url.clone(),
        inbox: None,
        diary: None,
        max: None,
        ops_url: ops_listener.as_ref().map(|l| format!("http://{}", l.local_addr().expect("bound"))),
        phase,
        shutdown,
        tasks: Vec::new(),
        drain: cfg.server.drain(cfg.mode),
        shutdown_timeout: Duration::from_secs(cfg.server.shutdown_timeout_secs),
    };

    if role != Role::Diary {
        let db = max_db(&cfg).await?;
        let sms = sms_gateway(&cfg, ov.inbox.clone());
        running.inbox = sms.dev_inbox().cloned();
        let st = MaxState::new(db, max_config(&cfg, max_url.clone())?, sms, clock.clone()).await?;
        for c in &cfg.max.clients {
            edulink_max::demo::register(&st, &c.to_client()).await?;
            edulink_max::repo::logout::upsert_logout(&st.db, &c.id, &c.to_logout()).await?;
        }
        if cfg.mode == Mode::Dev {
            edulink_max::demo::register(&st, &mesh_client(&cfg, &diary_url)).await?;
            edulink_max::repo::logout::upsert_logout(&st.db, &cfg.diary.client_id, &mesh_logout(&diary_url)).await?;
            for c in app_clients() {
                edulink_max::demo::register(&st, &c).await?;
            }
        }
        if cfg.demo() {
            edulink_max::demo::seed(&st).await?;
        }
        let router = edulink_web::client_ip::resolve(edulink_max::router(st.clone()), trusted.clone());
        tasks.push(tokio::spawn(reload_keys(st.clone(), shutdown_rx.clone())));
        tasks.push(tokio::spawn(watch_conversion(st.clone(), shutdown_rx.clone())));
        tasks.push(tokio::spawn(sweep_grants(st.clone(), shutdown_rx.clone())));
        tasks.push(tokio::spawn(edulink_max::oidc::backchannel::worker(st.clone(), shutdown_rx.clone())));
        let party = crate::janitor::Party::Max(st.clone());
        tasks.push(tokio::spawn(crate::janitor::worker(party, janitor.clone(), shutdown_rx.clone())));
        tasks.push(tokio::spawn(edulink_web::serve::serve(max_listener, router, limits, phase_rx.clone())));
        running.max = Some(st);
    }
    if role != Role::Max {
        let db = diary_db(&cfg).await?;
        let mut dc = diary_config(&cfg, diary_url.clone(), &max_url)?;
        if let Some(cost) = ov.password_cost {
            dc.password_cost = cost;
        }
        if cfg.diary.instance_id.is_none() {
            // The address actually bound (a port chosen by the system differs per instance).
            dc.instance_id = format!("{}/{}", host_name(), diary_listener.local_addr()?);
        }
        let st = DiaryState::new(db, dc, clock.clone());
        // Jobs leased by this instance's previous boot (a crash) are due now, not when the lease ends.
        edulink_diary::outbox::release_own_leases(&st).await?;
        if cfg.demo() {
            edulink_diary::demo::seed(&st.db, st.cfg.password_cost, st.now()).await?;
        }
        let router = edulink_web::client_ip::resolve(edulink_diary::router(st.clone()), trusted.clone());
        tasks.push(tokio::spawn(edulink_web::serve::serve(diary_listener, router, limits, phase_rx.clone())));
        tasks.push(tokio::spawn(edulink_diary::outbox::worker(st.clone(), shutdown_rx.clone())));
        tasks.push(tokio::spawn(edulink_diary::reconcile::worker(st.clone(), shutdown_rx.clone())));
        let party = crate::janitor::Party::Diary(st.clone());
        tasks.push(tokio::spawn(crate::janitor::worker(party, janitor.clone(), shutdown_rx.clone())));
        running.diary = Some(st);
    }
    if let Some(l) = ops_listener {
        let dbs = running
            .diary
            .iter()
            .map(|d| ("diary", d.db.clone()))
            .chain(running.max.iter().map(|m| ("max", m.db.clone())));
        let router = crate::serving::ops_router(dbs.collect());
        tasks.push(tokio::spawn(edulink_web::serve::serve(l, router, limits, phase_rx)));
    }
    running.tasks = tasks;
    Ok(running)
}

/// Polls the signing keys' ids every few seconds (`keys::POLL_INTERVAL`) and reloads them when they
/// changed, so a rotation by `edulink keys rotate` (another process) is published by every instance
/// before its keys start signing (`keys::ACTIVATION_DELAY_SECS`).
async fn reload_keys(st: MaxState, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(edulink_max::keys::POLL_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = st.keys.refresh(&st.db, &st.secrets.key_cipher, st.now()).await {
            tracing::warn!(error = %e, "signing keys not reloaded");
        }
    }
}

/// Checks the SMS conversion every minute (SMS pumping guard): a gauge, and an error log as alert.
async fn watch_conversion(st: MaxState, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = edulink_max::limits::check_conversion(&st.db, st.now(), &st.cfg.conversion_alert).await {
            tracing::warn!(error = %e, "SMS conversion not checked");
        }
    }
}

/// Revokes unfinished link grants every minute ([`edulink_max::links::sweep_unfinished`]).
async fn sweep_grants(st: MaxState, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = edulink_max::links::sweep_unfinished(&st, st.cfg.unfinished_link_secs).await {
            tracing::warn!(error = %e, "unfinished link grants not swept");
        }
    }
}
