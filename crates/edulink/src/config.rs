//! Layered configuration: built-in defaults, then a TOML file, then `EDULINK_*` environment
//! variables (`__` separates sections: `EDULINK_MAX__SMS__GATEWAY=http`), then command-line flags.
//!
//! With no configuration at all, `edulink serve` runs in dev mode: both parties on 127.0.0.1, SQLite
//! under the data directory, secrets generated once into `<data-dir>/secrets.toml`, SMS to the dev inbox.

use edulink_domain::{CodePolicy, SecretKey, SmsLimits};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

mod validate;
pub use validate::{FieldError, FieldErrors, Scope};
mod server;
pub use server::{OpsSection, ServerSection};
mod retention;
pub use retention::{JanitorSection, RetentionSection};

/// How the process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Local development and demos: dev SMS inbox allowed, secrets may be generated.
    #[default]
    Dev,
    /// Production: every secret configured, a real SMS gateway, https URLs.
    Production,
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Dev or production.
    pub mode: Mode,
    /// Where SQLite files and generated secrets live.
    pub data_dir: PathBuf,
    /// Seed the demo school and demo MAX account (default: on in dev mode).
    pub demo: Option<bool>,
    /// Async worker threads (default: twice the CPUs, see [`Config::worker_threads`]).
    pub workers: Option<usize>,
    /// Load balancers and reverse proxies whose forwarding header is believed (CIDR blocks or
    /// addresses; `EDULINK_TRUSTED_PROXIES='["10.0.0.0/8"]'`). Empty by default: the TCP peer is the
    /// client, and forwarding headers are ignored.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The header the trusted proxies append the client address to: `x-forwarded-for` (default) or
    /// `forwarded` (RFC 7239).
    #[serde(default)]
    pub forwarded_header: edulink_web::client_ip::ForwardedHeader,
    /// The diary.
    pub diary: DiarySection,
    /// MAX.
    pub max: MaxSection,
    /// Timeouts, connection limits and the shutdown of the public listeners.
    pub server: ServerSection,
    /// The operator listener (`/metrics`, `/healthz`, `/readyz`).
    pub ops: OpsSection,
    /// How long each party keeps what (docs/retention.md).
    #[serde(default)]
    pub retention: RetentionSection,
    /// The janitor's schedule and batches.
    #[serde(default)]
    pub janitor: JanitorSection,
}

/// Settings of the diary.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiarySection {
    /// Address to listen on.
    pub listen: String,
    /// Public base URL (default: `http://<listen>`).
    pub public_url: Option<String>,
    /// Database URL (default: SQLite file `<data-dir>/diary.db`).
    pub database_url: Option<String>,
    /// Master secret (base64, 32 bytes).
    pub secret: Option<String>,
    /// MAX's issuer URL (default: MAX's public URL).
    pub max_issuer: Option<String>,
    /// Our client id at MAX.
    pub client_id: String,
    /// Our client secret at MAX.
    pub client_secret: Option<String>,
    /// Link attempts one diary account may start per hour (each may cause an SMS).
    pub link_starts_per_hour: i64,
    /// Base URL of the school's conferencing rooms for distance lessons without a teacher's call link.
    pub call_base_url: Option<String>,
    /// The longest wait between two attempts to deliver an outbox job to MAX, seconds
    /// (`EDULINK_DIARY__OUTBOX_MAX_BACKOFF_SECS`; 10 to 3600, default 300).
    pub outbox_max_backoff_secs: i64,
    /// This instance's name in a fleet (outbox leases carry it, so a restart takes its own back at
    /// once); default: `<host>/<listening address>`, distinct per instance.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// How often the links are compared with MAX's grants and differences repaired, seconds
    /// (0: never; default 600).
    #[serde(default = "default_reconcile_interval")]
    pub reconcile_interval_secs: i64,
    /// Connection pool and PostgreSQL schema.
    pub pool: PoolSection,
}

fn default_reconcile_interval() -> i64 {
    edulink_diary::reconcile::DEFAULT_INTERVAL_SECS
}

fn default_unfinished_link() -> i64 {
    edulink_max::links::DEFAULT_UNFINISHED_LINK_SECS
}

/// Bounds of `diary.outbox_max_backoff_secs`: retries at most every 10 s per job, and a job of an
/// outage waits at most an hour after MAX is back even if no probe notices it.
pub const OUTBOX_MAX_BACKOFF_SECS: std::ops::RangeInclusive<i64> = 10..=3600;

/// Settings of MAX.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxSection {
    /// Address to listen on.
    pub listen: String,
    /// Public base URL = issuer (default: `http://<listen>`).
    pub public_url: Option<String>,
    /// Database URL (default: SQLite file `<data-dir>/max.db`).
    pub database_url: Option<String>,
    /// Master secret (base64, 32 bytes).
    pub secret: Option<String>,
    /// SMS gateway.
    pub sms: SmsSection,
    /// Code rules.
    pub codes: CodePolicy,
    /// Send limits.
    pub limits: SmsLimits,
    /// Countries whose mobile numbers are accepted.
    pub allowed_countries: Vec<String>,
    /// The SMS conversion alert (SMS pumping shows as many sends and few verifications).
    pub alerts: AlertSection,
    /// Clients registered from configuration at start (besides `edulink max client add`).
    pub clients: Vec<ClientSection>,
    /// Connection pool and PostgreSQL schema.
    pub pool: PoolSection,
    /// How long a client's previous secret stays valid after `edulink max client rotate-secret`,
    /// seconds (0 to 30 days; default a day).
    #[serde(default = "default_client_secret_grace")]
    pub client_secret_grace_secs: i64,
    /// A grant consented to for a link that no link claimed is revoked, with its tokens, this long
    /// after the consent (an unfinished link callback), seconds (60 to 7 days; default an hour).
    #[serde(default = "default_unfinished_link")]
    pub unfinished_link_secs: i64,
}

fn default_client_secret_grace() -> i64 {
    edulink_max::oidc::CLIENT_SECRET_GRACE_DEFAULT
}

/// A client registration in configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// `client_id`.
    pub id: String,
    /// Display name, shown on MAX's confirmation page.
    pub name: String,
    /// Redirect URIs, matched exactly.
    pub redirect_uris: Vec<String>,
    /// ID token algorithm: RS256 (default), ES256 or EdDSA.
    #[serde(default = "default_alg")]
    pub alg: String,
    /// SHA-256 (URL-safe base64) of the client secret; absent for a public client (PKCE only).
    pub secret_sha256: Option<String>,
    /// Sector of its pairwise subjects (clients of one diary share one); default: the client id.
    pub sector: Option<String>,
    /// May call the Сферум provisioning API.
    #[serde(default)]
    pub provisioning: bool,
    /// May ask for the `phone` scope (`phone_number`, with the person's consent).
    #[serde(default)]
    pub phone: bool,
    /// Where MAX may send the browser after a logout (OpenID Connect RP-Initiated Logout 1.0),
    /// matched exactly.
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// Where MAX posts logout tokens (OpenID Connect Back-Channel Logout 1.0).
    #[serde(default)]
    pub backchannel_logout_uri: Option<String>,
    /// The client needs `sid` in every logout token.
    #[serde(default)]
    pub backchannel_logout_session_required: bool,
    /// Its tokens must be DPoP-bound (RFC 9449 §5.2 `dpop_bound_access_tokens`).
    #[serde(default)]
    pub dpop_bound_access_tokens: bool,
    /// It must push its authorization requests (RFC 9126 §6).
    #[serde(default)]
    pub require_pushed_authorization_requests: bool,
}

fn default_alg() -> String {
    "RS256".into()
}

impl ClientSection {
    /// Its logout registration.
    pub fn to_logout(&self) -> edulink_max::repo::logout::LogoutRegistration {
        edulink_max::repo::logout::LogoutRegistration {
            post_logout_redirect_uris: self.post_logout_redirect_uris.clone(),
            backchannel_logout_uri: self.backchannel_logout_uri.clone(),
            backchannel_logout_session_required: self.backchannel_logout_session_required,
        }
    }

    /// The registration MAX stores.
    pub fn to_client(&self) -> edulink_max::oidc::Client {
        let mut scopes = vec!["openid".to_string(), "profile".into(), "offline_access".into()];
        if self.provisioning {
            scopes.push("sferum.provision".into());
        }
        if self.phone {
            scopes.push("phone".into());
        }
        edulink_max::oidc::Client {
            client_id: self.id.clone(),
            name: self.name.clone(),
            secret_hash: self.secret_sha256.clone(),
            redirect_uris: self.redirect_uris.clone(),
            id_token_alg: self.alg.clone(),
            sector: self.sector.clone().unwrap_or_else(|| self.id.clone()),
            scopes,
            policy: edulink_max::oidc::ClientPolicy {
                dpop_bound_access_tokens: self.dpop_bound_access_tokens,
                require_pushed_authorization_requests: self.require_pushed_authorization_requests,
            },
        }
    }
}

/// When to raise the SMS conversion alert.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSection {
    /// Alert when verified/sent over the last hour falls below this ratio…
    pub conversion_below: f64,
    /// …and at least this many codes were sent in that hour.
    pub min_sent: i64,
}

/// Connection pool settings of one party.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// PostgreSQL schema of the party's tables (ignored for SQLite).
    pub schema: String,
    /// Maximum connections per instance.
    pub max_connections: u32,
    /// Wait for a free connection before answering 503, milliseconds.
    pub acquire_timeout_ms: u64,
    /// PostgreSQL statement timeout, milliseconds.
    pub statement_timeout_ms: u64,
    /// SQLite `synchronous`: `FULL` (default: every commit durable, as security state must be) or
    /// `NORMAL` (commits reach the disk at checkpoints; a power cut may lose the last ones). Production
    /// refuses `NORMAL`.
    pub sqlite_synchronous: String,
}

impl PoolSection {
    fn new(schema: &str) -> Self {
        Self {
            schema: schema.into(),
            max_connections: 8,
            acquire_timeout_ms: 5000,
            statement_timeout_ms: 5000,
            sqlite_synchronous: "FULL".into(),
        }
    }

    /// The storage layer's pool configuration.
    pub fn to_pool_config(&self) -> edulink_store::PoolConfig {
        edulink_store::PoolConfig {
            max_connections: self.max_connections,
            acquire_timeout: std::time::Duration::from_millis(self.acquire_timeout_ms),
            statement_timeout: std::time::Duration::from_millis(self.statement_timeout_ms),
            schema: Some(self.schema.clone()),
            sqlite_synchronous: self.sqlite_synchronous.clone(),
        }
    }
}

/// Which SMS gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsSection {
    /// `dev` (in-memory inbox; dev mode only) or `http`.
    pub gateway: String,
    /// Provider URL for `http`.
    pub url: Option<String>,
    /// Provider bearer token for `http`.
    pub token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Dev,
            data_dir: PathBuf::from("./edulink-data"),
            demo: None,
            workers: None,
            trusted_proxies: Vec::new(),
            forwarded_header: Default::default(),
            diary: DiarySection {
                listen: "127.0.0.1:8080".into(),
                public_url: None,
                database_url: None,
                secret: None,
                max_issuer: None,
                client_id: "mesh".into(),
                client_secret: None,
                link_starts_per_hour: 10,
                call_base_url: None,
                outbox_max_backoff_secs: edulink_diary::outbox::DEFAULT_MAX_BACKOFF_SECS,
                instance_id: None,
                reconcile_interval_secs: default_reconcile_interval(),
                pool: PoolSection::new("diary"),
            },
            max: MaxSection {
                listen: "127.0.0.1:8081".into(),
                public_url: None,
                database_url: None,
                secret: None,
                sms: SmsSection { gateway: "dev".into(), url: None, token: None },
                codes: CodePolicy::default(),
                limits: SmsLimits::default(),
                allowed_countries: vec!["RU".into()],
                alerts: AlertSection { conversion_below: 0.2, min_sent: 50 },
                clients: Vec::new(),
                pool: PoolSection::new("max"),
                client_secret_grace_secs: default_client_secret_grace(),
                unfinished_link_secs: default_unfinished_link(),
            },
            server: ServerSection::default(),
            ops: OpsSection { listen: "127.0.0.1:9090".into(), otlp_endpoint: None },
            retention: RetentionSection::default(),
            janitor: JanitorSection::default(),
        }
    }
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The sources could not be read or have unknown keys.
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A rule about the values is broken.
    #[error("configuration: {0}")]
    Invalid(String),
    /// Fields are out of their bounds or missing.
    #[error("configuration: {0}")]
    Fields(FieldErrors),
    /// The secrets file could not be written or read.
    #[error("secrets file {0}: {1}")]
    Secrets(PathBuf, String),
}

impl Config {
    /// Loads defaults ← `file` (or `./edulink.toml` if present) ← environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(f) => fig = fig.merge(Toml::file_exact(f)),
            None => fig = fig.merge(Toml::file("edulink.toml")),
        }
        // Only our own keys: other `EDULINK_*` variables (test and CI switches) are not configuration.
        fig = fig.merge(Env::prefixed("EDULINK_").filter(|k| is_config_key(k.as_str())).split("__"));
        Ok(fig.extract().map_err(Box::new)?)
    }

    /// The trusted proxies, parsed.
    pub fn trusted(&self) -> Result<edulink_web::client_ip::TrustedProxies, String> {
        edulink_web::client_ip::TrustedProxies::parse(&self.trusted_proxies, self.forwarded_header)
    }

    /// Whether to seed demo data.
    pub fn demo(&self) -> bool {
        self.demo.unwrap_or(self.mode == Mode::Dev)
    }

    /// Async worker threads: `workers`, or twice the CPUs. More workers than CPUs measured faster
    /// (BENCHMARKS.md): a request's SQLite statements run on the worker that serves it, and while
    /// one worker waits in the kernel another has the CPU.
    pub fn worker_threads(&self) -> usize {
        self.workers.unwrap_or_else(|| 2 * std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Checks every field against its bounds, and in production that everything both parties use
    /// is set (`config check`, `serve`).
    pub fn check(&self) -> Result<(), ConfigError> {
        self.check_for(Scope::Both)
    }

    /// Checks every field against its bounds, and in production that what `scope` uses is set.
    pub fn check_for(&self, scope: Scope) -> Result<(), ConfigError> {
        validate::check(self, scope).map_err(ConfigError::Fields)?;
        self.server.check(&self.ops).map_err(ConfigError::Invalid)?;
        self.retention.check(&self.janitor).map_err(ConfigError::Invalid)
    }

    /// The configuration a command runs with: dev secrets filled in, then checked for `scope`.
    pub fn prepare(self, scope: Scope) -> Result<Self, ConfigError> {
        let c = self.with_secrets()?;
        c.check_for(scope)?;
        Ok(c)
    }

    /// Fills missing secrets from `<data-dir>/secrets.toml`, generating and saving them on first use
    /// (dev mode only: production uses what is configured, and [`Config::check_for`] requires what a
    /// command needs).
    pub fn with_secrets(mut self) -> Result<Self, ConfigError> {
        let all_set = self.diary.secret.is_some() && self.max.secret.is_some() && self.diary.client_secret.is_some();
        if all_set || self.mode == Mode::Production {
            return Ok(self);
        }
        let path = self.data_dir.join("secrets.toml");
        let err = |e: String| ConfigError::Secrets(path.clone(), e);
        let stored: Secrets = if path.exists() {
            toml_read(&path).map_err(err)?
        } else {
            let s = Secrets {
                diary_secret: SecretKey::generate().to_base64(),
                max_secret: SecretKey::generate().to_base64(),
                client_secret: edulink_domain::crypto::random_token(32),
            };
            std::fs::create_dir_all(&self.data_dir).map_err(|e| err(e.to_string()))?;
            write_private(&path, &s).map_err(err)?;
            s
        };
        self.diary.secret.get_or_insert(stored.diary_secret);
        self.max.secret.get_or_insert(stored.max_secret);
        self.diary.client_secret.get_or_insert(stored.client_secret);
        Ok(self)
    }

    /// MAX's public URL.
    pub fn max_url(&self) -> String {
        self.max.public_url.clone().unwrap_or_else(|| format!("http://{}", self.max.listen))
    }

    /// The diary's public URL.
    pub fn diary_url(&self) -> String {
        self.diary.public_url.clone().unwrap_or_else(|| format!("http://{}", self.diary.listen))
    }

    /// The diary's database URL.
    pub fn diary_db(&self) -> String {
        self.diary
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("diary.db").display()))
    }

    /// MAX's database URL.
    pub fn max_db(&self) -> String {
        self.max.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("max.db").display()))
    }
}

/// Whether an `EDULINK_*` variable (prefix stripped) names a configuration key: a top-level field or
/// something inside the `diary` or `max` section.
fn is_config_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    matches!(k.as_str(), "mode" | "data_dir" | "demo" | "workers" | "trusted_proxies" | "forwarded_header")
        || k.starts_with("diary__")
        || k.starts_with("max__")
        || k.starts_with("server__")
        || k.starts_with("ops__")
}

#[derive(Debug, Serialize, Deserialize)]
struct Secrets {
    diary_secret: String,
    max_secret: String,
    client_secret: String,
}

fn toml_read(path: &Path) -> Result<Secrets, String> {
    Figment::from(Toml::file_exact(path)).extract().map_err(|e| e.to_string())
}

fn write_private(path: &Path, s: &Secrets) -> Result<(), String> {
    use std::io::Write;
    let body = format!(
        "# Generated by edulink in dev mode. Keep private; deleting it invalidates sessions and keys.\n\
         diary_secret = \"{}\"\nmax_secret = \"{}\"\nclient_secret = \"{}\"\n",
        s.diary_secret, s.max_secret, s.client_secret
    );
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| e.to_string())?;
    f.write_all(body.as_bytes()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_a_valid_dev_config() {
        let c = Config::default();
        c.check().unwrap();
        assert!(c.demo());
        assert_eq!(c.max_url(), "http://127.0.0.1:8081");
    }

    #[test]
    fn production_refuses_the_dev_gateway_and_missing_secrets() {
        let mut c = Config { mode: Mode::Production, ..Config::default() };
        assert!(c.check().unwrap_err().to_string().contains("max.sms.gateway: required in production"));
        c.max.sms = SmsSection {
            gateway: "http".into(),
            url: Some("https://sms.example/send".into()),
            token: Some("t".into()),
        };
        let err = c.check().unwrap_err().to_string();
        assert!(err.contains("diary.client_secret: required in production") && !err.contains("gateway"), "{err}");
        assert!(c.clone().with_secrets().unwrap().max.secret.is_none(), "production never generates secrets");
    }

    #[test]
    fn sqlite_durability_is_full_unless_chosen() {
        let mut c = Config::default();
        assert_eq!(c.diary.pool.to_pool_config().sqlite_synchronous, "FULL");
        c.max.pool.sqlite_synchronous = "NORMAL".into();
        c.check().unwrap();
        c.max.pool.sqlite_synchronous = "OFF".into();
        assert!(c.check().unwrap_err().to_string().contains("FULL or NORMAL"));
    }

    #[test]
    fn worker_threads_default_to_twice_the_cpus_and_are_bounded() {
        let mut c = Config::default();
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(c.worker_threads(), 2 * cpus);
        c.workers = Some(3);
        assert_eq!(c.worker_threads(), 3);
        c.check().unwrap();
        c.workers = Some(0);
        assert!(c.check().unwrap_err().to_string().contains("workers"));
    }

    #[test]
    fn the_outbox_backoff_cap_is_bounded() {
        let mut c = Config::default();
        assert_eq!(c.diary.outbox_max_backoff_secs, 300);
        for (v, ok) in [(10, true), (3600, true), (9, false), (3601, false)] {
            c.diary.outbox_max_backoff_secs = v;
            assert_eq!(c.check().is_ok(), ok, "{v}");
        }
        assert!(c.check().unwrap_err().to_string().contains("diary.outbox_max_backoff_secs"));
    }

    #[test]
    fn only_configuration_variables_are_read_from_the_environment() {
        for k in
            ["MODE", "data_dir", "WORKERS", "DIARY__LISTEN", "MAX__SMS__GATEWAY", "max__pool__schema", "OPS__LISTEN"]
        {
            assert!(is_config_key(k), "{k}");
        }
        for k in ["REQUIRE_BROWSER", "REQUIRE_POSTGRES", "TEST_POSTGRES_URL", "AXE_JS", "UPDATE_OPENAPI", "MAXIMUM"] {
            assert!(!is_config_key(k), "{k}");
        }
    }

    #[test]
    fn clients_from_configuration_are_checked() {
        let mut c = Config::default();
        c.max.clients.push(ClientSection {
            id: "other".into(),
            name: "Другой дневник".into(),
            redirect_uris: vec!["https://other.example/cb".into()],
            alg: "ES256".into(),
            secret_sha256: None,
            sector: None,
            provisioning: true,
            phone: false,
            post_logout_redirect_uris: vec![],
            backchannel_logout_uri: None,
            backchannel_logout_session_required: false,
            dpop_bound_access_tokens: true,
            require_pushed_authorization_requests: true,
        });
        c.check().unwrap();
        assert_eq!(c.max.clients[0].to_client().sector, "other");
        c.max.clients[0].alg = "HS256".into();
        assert!(c.check().is_err());
    }

    #[test]
    fn secrets_are_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        let a = c.clone().with_secrets().unwrap();
        let b = c.with_secrets().unwrap();
        assert_eq!(a.max.secret, b.max.secret);
        assert!(a.diary.client_secret.is_some());
    }
}
