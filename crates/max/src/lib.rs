//! MAX: the messenger's identity and its OpenID Connect provider, with Сферум inside.
//!
//! * Accounts are keyed by mobile phone; sign-in and registration are by SMS code (`login`).
//! * The provider (`oidc`) serves discovery, JWKS, authorize, token, userinfo and revocation, with
//!   PKCE S256, exact redirect URIs, single-use 60 s codes, rotating refresh tokens and pairwise subjects.
//! * Сферум's pages and its provisioning API (`sferum_web`) sit on the same site and database.

pub mod api;
pub mod audit;
pub mod chat_web;
pub mod demo;
pub mod export;
pub mod finished;
pub mod hub;
pub mod janitor;
pub mod keys;
pub mod limits;
pub mod links;
pub mod login;
pub mod oidc;
pub mod repo;
pub mod sferum_port;
pub mod sferum_web;
pub mod views;

use axum::Router;
use axum::routing::{get, post, put};
use edulink_domain::{Cipher, Clock, CodePolicy, SecretKey, SmsLimits};
use edulink_sms::SmsGateway;
use edulink_store::{Db, Migration};
use edulink_web::cookies::CookiePolicy;
use edulink_web::error::Brand;
use edulink_web::layers::{SiteSecurity, harden};
use std::sync::Arc;

/// MAX's own tables followed by Сферум's.
pub fn migrations() -> Vec<Migration> {
    let own: &[Migration] = edulink_store::migrations![1 => "0001_max", 2 => "0002_grant_lookups", 3 => "0003_challenge_window", 4 => "0004_audit_subject", 5 => "0005_rotation", 6 => "0006_reauth", 7 => "0007_logout", 8 => "0008_dpop_par", 9 => "0009_session_kind", 10 => "0010_link_marks", 13 => "0013_janitor"];
    own.iter().chain(edulink_sferum::MIGRATIONS).copied().collect()
}

/// MAX's configuration.
#[derive(Debug, Clone)]
pub struct MaxConfig {
    /// The issuer: MAX's public base URL, e.g. `https://max.example` (no trailing slash).
    pub issuer: String,
    /// Master secret; purpose keys are derived from it (phone lookup, phone encryption, code MACs,
    /// signing-key encryption, pairwise subjects).
    pub secret: SecretKey,
    /// Host name printed in the SMS autofill line `@host #code`.
    pub sms_host: String,
    /// How codes live and die.
    pub code_policy: CodePolicy,
    /// How often codes may be sent.
    pub sms_limits: SmsLimits,
    /// Countries whose mobile numbers are accepted (ISO alpha-2).
    pub allowed_countries: Vec<String>,
    /// Region for numbers typed without a country code.
    pub default_region: String,
    /// Development mode: the dev SMS inbox is served.
    pub dev_mode: bool,
    /// Lifetime of access tokens, seconds.
    pub access_token_ttl: i64,
    /// Lifetime of refresh tokens, seconds.
    pub refresh_token_ttl: i64,
    /// Lifetime of ID tokens, seconds.
    pub id_token_ttl: i64,
    /// A browser session ends after this long without requests, seconds.
    pub session_idle_secs: i64,
    /// A browser session ends this long after sign-in whatever happens, seconds.
    pub session_absolute_secs: i64,
    /// When to alert on a low SMS conversion.
    pub conversion_alert: ConversionAlert,
    /// A link grant no link claimed is revoked this long after its consent, seconds
    /// ([`links::sweep_unfinished`]).
    pub unfinished_link_secs: i64,
}

/// Alert threshold for the verified/sent ratio of SMS codes over the last hour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConversionAlert {
    /// Alert below this ratio…
    pub below: f64,
    /// …when at least this many codes were sent.
    pub min_sent: i64,
}

impl MaxConfig {
    /// A configuration with the defaults of docs/architecture.md («Rules») for `issuer`.
    pub fn new(issuer: String, secret: SecretKey) -> Self {
        let sms_host = url::Url::parse(&issuer)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "localhost".into());
        Self {
            issuer,
            secret,
            sms_host,
            code_policy: CodePolicy::default(),
            sms_limits: SmsLimits::default(),
            allowed_countries: vec!["RU".into()],
            default_region: "RU".into(),
            dev_mode: false,
            access_token_ttl: 600,
            refresh_token_ttl: 30 * 86_400,
            id_token_ttl: 300,
            session_idle_secs: 86_400,
            session_absolute_secs: 30 * 86_400,
            conversion_alert: ConversionAlert { below: 0.2, min_sent: 50 },
            unfinished_link_secs: links::DEFAULT_UNFINISHED_LINK_SECS,
        }
    }

    /// True when served over https.
    pub fn https(&self) -> bool {
        self.issuer.starts_with("https://")
    }
}

/// Keys derived from the master secret, one per purpose.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// Keyed hash for phone lookup.
    pub phone_hash: SecretKey,
    /// Encryption of phones at rest.
    pub phone_cipher: Cipher,
    /// MAC of SMS codes.
    pub code_mac: SecretKey,
    /// Encryption of signing keys at rest.
    pub key_cipher: Cipher,
    /// Pairwise subject derivation.
    pub pairwise: SecretKey,
}

/// The derivation label of the key that seals signing keys at rest (`edulink keys rotate` derives it too).
pub const SIGNING_KEYS_LABEL: &str = "max/signing-keys";

impl Secrets {
    fn derive(master: &SecretKey) -> Self {
        Self {
            phone_hash: master.derive("max/phone-hash"),
            phone_cipher: Cipher::new(&master.derive("max/phone-enc")),
            code_mac: master.derive("max/sms-code"),
            key_cipher: Cipher::new(&master.derive(SIGNING_KEYS_LABEL)),
            pairwise: master.derive("max/pairwise-sub"),
        }
    }
}

/// Everything a MAX handler needs.
#[derive(Clone)]
pub struct MaxState {
    /// MAX's database.
    pub db: Db,
    /// Configuration.
    pub cfg: Arc<MaxConfig>,
    /// Purpose keys.
    pub secrets: Arc<Secrets>,
    /// Signing keys, loaded once.
    pub keys: Arc<keys::KeyRing>,
    /// The SMS gateway.
    pub sms: SmsGateway,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Cookie attributes.
    pub cookies: CookiePolicy,
    /// The discovery document, serialised once.
    pub discovery: Arc<str>,
    /// Live delivery of chat messages inside this instance.
    pub hub: hub::Hub,
    /// Client registrations read recently.
    pub clients: Arc<oidc::ClientCache>,
    /// Delivery of logout tokens to clients (OpenID Connect Back-Channel Logout 1.0).
    pub backchannel: Arc<oidc::backchannel::Courier>,
}

impl MaxState {
    /// Builds the state, creating signing keys on first start.
    pub async fn new(db: Db, cfg: MaxConfig, sms: SmsGateway, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let secrets = Arc::new(Secrets::derive(&cfg.secret));
        let keys = keys::KeyRing::load_or_create(&db, &secrets.key_cipher, clock.now()).await?;
        let cookies = CookiePolicy { secure: cfg.https() };
        let discovery = oidc::discovery_document(&cfg.issuer).into();
        Ok(Self {
            db,
            cfg: Arc::new(cfg),
            secrets,
            keys: Arc::new(keys),
            sms,
            clock,
            cookies,
            discovery,
            hub: hub::Hub::default(),
            clients: Arc::default(),
            backchannel: Arc::default(),
        })
    }

    /// Current time, Unix seconds.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }
}

/// Why MAX could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Storage.
    #[error(transparent)]
    Store(#[from] edulink_store::StoreError),
    /// Signing keys.
    #[error("signing keys: {0}")]
    Keys(String),
}

/// The look of MAX's pages.
pub const BRAND: Brand = Brand { css: "/static/max.css", title_key: "max-title", class: "max", logo: "M" };

/// MAX's whole site.
pub fn router(state: MaxState) -> Router {
    let mut r = Router::new()
        .route("/", get(login::home))
        .route("/login", get(login::phone_page))
        .route("/login/phone", post(login::phone_submit))
        .route("/login/code", get(login::code_page).post(login::code_submit))
        .route("/login/resend", post(login::resend))
        .route("/login/register", get(login::register_page).post(login::register_submit))
        .route("/logout", post(login::logout))
        .route("/logout/confirm", post(oidc::logout::confirm))
        .route("/authorize/continue", get(oidc::continue_authorization))
        .route("/authorize/confirm", post(oidc::confirm))
        .route("/authorize/deny", post(oidc::deny))
        .route("/authorize/switch", post(oidc::switch_account))
        .route("/.well-known/openid-configuration", get(oidc::discovery))
        .route("/oauth/jwks", get(oidc::jwks))
        .route("/oauth/authorize", get(oidc::authorize).post(oidc::authorize_post))
        .route("/oauth/token", post(oidc::token))
        .route("/oauth/userinfo", get(oidc::userinfo).post(oidc::userinfo))
        .route("/oauth/revoke", post(oidc::revoke))
        .route("/oauth/logout", get(oidc::logout::end_session).post(oidc::logout::end_session_post))
        .route("/oauth/par", post(oidc::par::push))
        .route("/oauth/introspect", post(oidc::introspection::introspect))
        .route("/sferum", get(sferum_web::page))
        .route("/sferum/api/v1/profiles/{sub}", put(sferum_web::provision).delete(sferum_web::detach))
        .route("/sferum/api/v1/profiles/{sub}/export", get(export::export_api))
        .route("/sferum/api/v1/links", get(sferum_web::list_links))
        .route("/sferum/api/v1/lessons/{lesson}", put(sferum_web::push_lesson))
        .route("/sferum/api/v1/lessons/{lesson}/attendance", get(sferum_web::attendance))
        .route("/sferum/chats/{id}", get(chat_web::chat))
        .route("/sferum/chats/{id}/messages", post(chat_web::post))
        .route("/sferum/chats/{id}/events", get(chat_web::events))
        .route("/sferum/people", get(chat_web::people).post(chat_web::search))
        .route("/sferum/people/{account}/message", post(chat_web::message_person))
        .route("/sferum/lessons/{client}/{lesson}/join", get(chat_web::join))
        .route(
            "/readyz",
            get(|axum::extract::State(s): axum::extract::State<MaxState>| async move {
                edulink_web::ops::readyz(&s.db).await
            }),
        )
        .route("/static/max.css", get(views::css))
        .route("/static/app.js", get(views::js));
    if state.cfg.dev_mode {
        r = r.route("/dev/sms", get(login::dev_sms_json)).route("/dev/inbox", get(login::dev_inbox_page));
    }
    let sec = SiteSecurity {
        origin: state.cfg.issuer.clone(),
        exempt_prefixes: vec!["/oauth/", "/sferum/api/", "/api/"],
        https: state.cfg.https(),
        // Only the pages of an authorization request add its client's origin (`with_form_target`).
        form_targets: Vec::new(),
    };
    harden(r.merge(edulink_web::ops::routes()).merge(api::routes()).with_state(state), BRAND, sec)
}

/// A fresh SQLite database with MAX's migrations, for unit tests (dropped with the directory).
#[cfg(test)]
pub(crate) async fn test_db() -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("max.db").display());
    let db = Db::connect(&url, &edulink_store::PoolConfig::default()).await.unwrap();
    db.migrate(&migrations()).await.unwrap();
    (db, dir)
}

#[cfg(test)]
mod query_plans {
    use edulink_store::{Db, sqlx};

    /// One step of SQLite's `EXPLAIN QUERY PLAN`.
    #[derive(sqlx::FromRow)]
    struct Step {
        detail: String,
    }

    /// SQLite's plan for `sql` (arguments bound to dummies), one line per step.
    async fn plan(db: &Db, sql: &str, args: usize) -> Vec<String> {
        let text = format!("EXPLAIN QUERY PLAN {sql}");
        let mut q = sqlx::query_as::<_, Step>(sqlx::AssertSqlSafe(text));
        for _ in 0..args {
            q = q.bind("x");
        }
        q.fetch_all(db.pool()).await.unwrap().into_iter().map(|s| s.detail).collect()
    }

    /// The grant lookups of every sign-in and every provisioning call use an index: a scan of
    /// `grants` (one row per linked student) grows with the whole country's links.
    #[tokio::test]
    async fn grant_lookups_on_hot_paths_never_scan_the_grants_table() {
        let (db, _dir) = crate::test_db().await;
        let attendance = crate::sferum_port::subjects_sql(1);
        for sql in [
            crate::repo::grants::GRANTS_IN_SECTOR_OF_ACCOUNT,
            crate::repo::links::GRANTS_OF_SUBJECT_IN_SECTOR,
            attendance.as_str(),
        ] {
            let steps = plan(&db, sql, 2).await;
            assert!(!steps.iter().any(|s| s.starts_with("SCAN g")), "{sql}: {steps:?}");
            assert!(steps.iter().any(|s| s.contains("USING") && s.contains("grants_")), "{sql}: {steps:?}");
        }
    }

    /// Tables that grow with the country (challenges, chats, lessons) are not scanned by the periodic
    /// SMS-pumping check, by unlinking, or by a lesson chat's page.
    #[tokio::test]
    async fn growing_tables_are_searched_by_index() {
        let (db, _dir) = crate::test_db().await;
        for (sql, args) in [
            (crate::limits::CHALLENGES_SINCE, 1),
            (edulink_sferum::LEAVE_DIARY_CHATS, 2),
            (edulink_sferum::LESSON_OF_CHAT, 1),
        ] {
            let steps = plan(&db, sql, args).await;
            assert!(!steps.iter().any(|s| s.starts_with("SCAN")), "{sql}: {steps:?}");
        }
    }
}
