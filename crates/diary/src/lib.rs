//! The МЭШ e-diary: students, teachers, schedule, «Мой паспорт», and the OpenID Connect relying
//! party that links a diary account to an educational profile Сферум in MAX.

pub mod api;
pub mod audit;
pub mod demo;
pub mod export;
pub mod janitor;
pub mod lessons;
pub mod links;
pub mod outbox;
pub mod pages;
pub mod passwords;
pub mod reconcile;
pub mod repo;
pub mod rp;
pub mod sferum;
pub mod signin;
mod views;

use axum::Router;
use axum::routing::{get, post};
use edulink_domain::{Cipher, Clock, SecretKey};
use edulink_store::{Db, Migration};
use edulink_web::cookies::CookiePolicy;
use edulink_web::error::Brand;
use edulink_web::layers::{SiteSecurity, harden};
use std::sync::Arc;

/// The diary's tables.
pub fn migrations() -> Vec<Migration> {
    let own: &[Migration] = edulink_store::migrations![1 => "0001_diary", 2 => "0002_distance_lessons", 3 => "0003_audit_client", 5 => "0005_backchannel_logout", 6 => "0006_handoff_session", 7 => "0007_link_generations", 10 => "0010_lifecycle"];
    own.to_vec()
}

/// Argon2id cost. The defaults are OWASP's recommendation (19 MiB, 2 passes); tests lower them.
#[derive(Debug, Clone, Copy)]
pub struct PasswordCost {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
}

impl Default for PasswordCost {
    fn default() -> Self {
        Self { m_kib: 19 * 1024, t: 2 }
    }
}

/// The diary's configuration.
#[derive(Debug, Clone)]
pub struct DiaryConfig {
    /// The diary's public base URL (no trailing slash).
    pub base_url: String,
    /// Master secret; purpose keys are derived from it.
    pub secret: SecretKey,
    /// MAX's issuer URL.
    pub max_issuer: String,
    /// Our `client_id` at MAX.
    pub client_id: String,
    /// Our client secret at MAX.
    pub client_secret: String,
    /// The display name of this diary («МЭШ»).
    pub name: String,
    /// Session idle timeout, seconds.
    pub session_idle_secs: i64,
    /// Session absolute lifetime, seconds.
    pub session_absolute_secs: i64,
    /// Unlinking needs a sign-in no older than this, seconds.
    pub reauth_secs: i64,
    /// Password hashing cost.
    pub password_cost: PasswordCost,
    /// Link attempts («Перейти к подключению») one diary account may start per hour: each may end
    /// in an SMS, so this caps the SMS one account can cause.
    pub link_starts_per_hour: i64,
    /// The diary's mobile apps, each a public client at MAX with its own app-link redirect.
    pub apps: Vec<AppClient>,
    /// Lifetime of an app's bearer token, seconds.
    pub api_token_ttl: i64,
    /// Base URL of the school's conferencing rooms: a distance lesson without a call link set by its
    /// teacher gets `<base>/<room>`, the room derived from the lesson.
    pub call_base_url: String,
    /// The longest wait between two delivery attempts of an outbox job, seconds (see
    /// [`outbox::backoff`]).
    pub outbox_max_backoff_secs: i64,
    /// This instance's name, stable across its restarts and distinct within a fleet (by default its
    /// host and listening address): outbox leases carry it, so a restarted instance takes its own
    /// back at once ([`outbox::release_own_leases`]).
    pub instance_id: String,
    /// How often a server compares its links with MAX's grants ([`reconcile`]), seconds; 0: never.
    pub reconcile_interval_secs: i64,
}

/// A mobile app of the diary, registered at MAX as a public client.
#[derive(Debug, Clone)]
pub struct AppClient {
    /// The name the app gives in the API (`dnevnik_mesh`, `moyashkola`).
    pub key: String,
    /// Its `client_id` at MAX.
    pub client_id: String,
    /// Its app-link redirect URI.
    pub redirect_uri: String,
}

impl DiaryConfig {
    /// A configuration with defaults.
    pub fn new(
        base_url: String,
        secret: SecretKey,
        max_issuer: String,
        client_id: String,
        client_secret: String,
    ) -> Self {
        Self {
            base_url,
            secret,
            max_issuer,
            client_id,
            client_secret,
            name: "МЭШ".into(),
            session_idle_secs: 30 * 60,
            session_absolute_secs: 12 * 3600,
            reauth_secs: 15 * 60,
            password_cost: PasswordCost::default(),
            link_starts_per_hour: 10,
            apps: Vec::new(),
            api_token_ttl: 12 * 3600,
            call_base_url: "https://call.sferum.example/room".into(),
            outbox_max_backoff_secs: outbox::DEFAULT_MAX_BACKOFF_SECS,
            instance_id: "diary".into(),
            reconcile_interval_secs: reconcile::DEFAULT_INTERVAL_SECS,
        }
    }

    /// The registered redirect URI.
    pub fn redirect_uri(&self) -> String {
        format!("{}/sferum/callback", self.base_url)
    }

    /// True when served over https.
    pub fn https(&self) -> bool {
        self.base_url.starts_with("https://")
    }
}

/// Everything a diary handler needs.
#[derive(Clone)]
pub struct DiaryState {
    /// The diary's database.
    pub db: Db,
    /// Configuration.
    pub cfg: Arc<DiaryConfig>,
    /// Encryption of tokens and PKCE verifiers at rest.
    pub cipher: Cipher,
    /// The relying party (MAX's metadata and keys, our client).
    pub rp: Arc<rp::RelyingParty>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Cookie attributes.
    pub cookies: CookiePolicy,
    /// Wakes the outbox worker.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    /// Who holds this process's outbox leases (instance and boot).
    pub lease: Arc<outbox::Lease>,
}

impl DiaryState {
    /// Builds the state.
    pub fn new(db: Db, cfg: DiaryConfig, clock: Arc<dyn Clock>) -> Self {
        let cipher = Cipher::new(&cfg.secret.derive("diary/at-rest"));
        let cookies = CookiePolicy { secure: cfg.https() };
        let rp = Arc::new(rp::RelyingParty::new(&cfg));
        let lease = Arc::new(outbox::Lease::boot(&cfg.instance_id));
        Self { db, cfg: Arc::new(cfg), cipher, rp, clock, cookies, outbox_wake: Arc::default(), lease }
    }

    /// Current time, Unix seconds.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }
}

/// The look of the diary's pages.
pub const BRAND: Brand = Brand { css: "/static/diary.css", title_key: "diary-title", class: "diary", logo: "МЭШ" };

/// The diary's whole site.
pub fn router(state: DiaryState) -> Router {
    let r = Router::new()
        .route("/", get(pages::home::home))
        .route("/login", get(pages::home::login_page).post(pages::home::login_submit))
        .route("/logout", post(pages::home::logout))
        .route("/sferum", get(pages::link::sferum))
        .route("/sferum/connect", post(pages::link::connect))
        .route("/sferum/callback", get(pages::link::callback))
        .route("/sferum/linked", get(pages::link::linked))
        .route("/oidc/backchannel-logout", post(rp::backchannel::receive))
        .route("/sferum/handoff", get(pages::home::handoff).post(pages::home::handoff_submit))
        .route("/sferum/lessons/{id}", get(pages::lessons::join_lesson))
        .route("/lessons/{id}", get(pages::lessons::lesson_page).post(pages::lessons::lesson_submit))
        .route("/lessons/{id}/cancel", post(pages::lessons::lesson_cancel))
        .route("/lessons/{id}/restore", post(pages::lessons::lesson_restore))
        .route("/passport", get(pages::passport::passport))
        .route("/passport/security", get(pages::passport::security))
        .route("/passport/export", get(export::download))
        .route("/passport/security/unlink", get(pages::passport::unlink_page).post(pages::passport::unlink_submit))
        .route(
            "/readyz",
            get(|axum::extract::State(s): axum::extract::State<DiaryState>| async move {
                edulink_web::ops::readyz(&s.db).await
            }),
        )
        .route("/static/diary.css", get(views::css))
        .route("/static/app.js", get(views::js));
    let sec = SiteSecurity {
        origin: state.cfg.base_url.clone(),
        exempt_prefixes: vec!["/api/", "/oidc/"],
        https: state.cfg.https(),
        // «Подключить» and the handoff post here and are redirected on to MAX.
        form_targets: url::Url::parse(&state.cfg.max_issuer)
            .map(|u| vec![u.origin().ascii_serialization()])
            .unwrap_or_default(),
    };
    harden(r.merge(edulink_web::ops::routes()).merge(api::routes()).with_state(state), BRAND, sec)
}
