//! Bounds of every configuration field, checked by `edulink config check` and before every command.
//!
//! Values are checked whatever the command: a value out of bounds is a mistake wherever it is read.
//! Which values must be *present* in production depends on what the command uses ([`Scope`]), so
//! production can be set up from an empty database: `migrate` and `max client add` need only the
//! databases, and the secret `max client add` prints is what the diary's configuration then needs.
//! The bounds are listed in docs/deployment.md («Bounds»); each message names the field and them.

use super::{Config, Mode, PoolSection};
use edulink_domain::SecretKey;
use std::ops::RangeInclusive;

/// What a command uses of the configuration; production requires only that to be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The databases only (`migrate`, `max client add`).
    Databases,
    /// MAX's signing keys: its database and master secret (`keys rotate`).
    MaxKeys,
    /// Running or administering the diary (`serve --role diary`, `admin`).
    Diary,
    /// Running MAX (`serve --role max`).
    Max,
    /// Both parties (`serve`, `config check`, `demo seed`).
    Both,
}

/// A field outside its bounds, or missing where the command needs it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    /// The field's path (`max.codes.ttl_secs`; environment: `EDULINK_MAX__CODES__TTL_SECS`).
    pub field: String,
    /// What is wrong and what is allowed.
    pub problem: String,
}

/// Every invalid field of a configuration (all at once, so one edit fixes them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} invalid setting(s):\n  {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
pub struct FieldErrors(pub Vec<FieldError>);

/// The largest count dev mode accepts: benchmarks (loadtest) lift the send limits this far.
const BENCH_MAX: i64 = 1_000_000_000;

/// Checks `c` for a command that uses `scope`.
pub(super) fn check(c: &Config, scope: Scope) -> Result<(), FieldErrors> {
    let mut r = Rules { production: c.mode == Mode::Production, errors: Vec::new() };
    r.top_level(c);
    r.diary(c);
    r.max(c);
    if r.production {
        r.presence(c, scope);
    }
    if r.errors.is_empty() { Ok(()) } else { Err(FieldErrors(r.errors)) }
}

struct Rules {
    production: bool,
    errors: Vec<FieldError>,
}

impl Rules {
    fn fail(&mut self, field: &str, problem: impl Into<String>) {
        self.errors.push(FieldError { field: field.to_string(), problem: problem.into() });
    }

    /// `v` within `allowed` in every mode.
    fn int<T: TryInto<i64> + Copy + std::fmt::Display>(&mut self, field: &str, v: T, allowed: RangeInclusive<i64>) {
        // Values beyond i64 (u64 milliseconds) are out of every range.
        if !v.try_into().is_ok_and(|w| allowed.contains(&w)) {
            self.fail(field, format!("{v} is outside {}..={}", allowed.start(), allowed.end()));
        }
    }

    /// `v` within `prod` in production, within the wider `dev` (benchmark values) otherwise.
    fn int_by_mode(&mut self, field: &str, v: i64, dev: RangeInclusive<i64>, prod: RangeInclusive<i64>) {
        if self.production && !prod.contains(&v) {
            let (lo, hi) = (prod.start(), prod.end());
            self.fail(field, format!("{v} is outside {lo}..={hi} in production (wider values are for benchmarks)"));
        } else {
            self.int(field, v, dev);
        }
    }

    fn listen(&mut self, field: &str, v: &str) {
        if v.parse::<std::net::SocketAddr>().is_err() {
            self.fail(field, format!("{v:?} is not a socket address IP:port (port 0..=65535)"));
        }
    }

    /// An absolute http(s) URL; https in production.
    fn url(&mut self, field: &str, v: Option<&str>) -> Option<url::Url> {
        let v = v?;
        let rule = if self.production { "an absolute https URL" } else { "an absolute http(s) URL" };
        match url::Url::parse(v) {
            Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && !self.production) => {
                if u.host_str().is_none_or(str::is_empty) || !u.username().is_empty() || u.password().is_some() {
                    self.fail(field, format!("{v:?} must be {rule} with a host and no user info"));
                    return None;
                }
                Some(u)
            }
            _ => {
                self.fail(field, format!("{v:?} must be {rule}"));
                None
            }
        }
    }

    /// A base URL that paths are appended to, and that an issuer is compared with byte for byte
    /// (OpenID Connect Discovery 1.0 §4.3): no trailing slash, query or fragment.
    fn base_url(&mut self, field: &str, v: Option<&str>) {
        let Some(u) = self.url(field, v) else { return };
        let v = v.unwrap_or_default();
        if v.ends_with('/') || u.query().is_some() || u.fragment().is_some() {
            self.fail(field, format!("{v:?} must not end with a slash or have a query or fragment"));
        }
    }

    fn database_url(&mut self, field: &str, v: Option<&str>) {
        if let Some(v) = v
            && !["sqlite:", "postgres://", "postgresql://"].iter().any(|p| v.starts_with(p))
        {
            self.fail(field, "must start with sqlite:, postgres:// or postgresql://");
        }
    }

    /// A master key: 32 random bytes, base64. The value is never echoed.
    fn master_secret(&mut self, field: &str, v: Option<&str>) {
        match v.map(SecretKey::from_base64) {
            None => {}
            Some(Err(_)) => self.fail(field, "must be 32 bytes encoded as base64 (`openssl rand -base64 32`)"),
            Some(Ok(k)) if k.is_weak() => {
                self.fail(field, "is not random (fewer than 16 distinct bytes); use `openssl rand -base64 32`")
            }
            Some(Ok(_)) => {}
        }
    }

    /// A token sent in an HTTP header: visible ASCII, at most 512 characters; in production at least
    /// `prod_min` characters and not a repetition of a few. The value is never echoed.
    fn token(&mut self, field: &str, v: Option<&str>, prod_min: usize) {
        let Some(v) = v else { return };
        let min = if self.production { prod_min.max(1) } else { 1 };
        let mut distinct: Vec<char> = v.chars().collect();
        distinct.sort_unstable();
        distinct.dedup();
        if !v.bytes().all(|b| b.is_ascii_graphic()) || !(min..=512).contains(&v.len()) {
            self.fail(field, format!("must be {min}..=512 visible ASCII characters"));
        } else if self.production && prod_min >= 32 && distinct.len() < 8 {
            self.fail(field, "is not random (fewer than 8 distinct characters)");
        }
    }

    /// A client id or sector: 1..=64 unreserved characters (RFC 3986 §2.3), safe in a Basic
    /// `Authorization` header (RFC 6749 §2.3.1) and in URLs.
    fn id(&mut self, field: &str, v: &str) {
        let ok = v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
        if !ok || !(1..=64).contains(&v.len()) {
            self.fail(field, format!("{v:?} must be 1..=64 characters of A-Z a-z 0-9 - . _ ~"));
        }
    }

    fn pool(&mut self, party: &str, p: &PoolSection) {
        let f = |name: &str| format!("{party}.pool.{name}");
        if !edulink_store::valid_schema(&p.schema) || p.schema.len() > 63 {
            self.fail(&f("schema"), format!("{:?}: 1..=63 lowercase letters, digits and underscores", p.schema));
        }
        self.int(&f("max_connections"), p.max_connections, 1..=256);
        self.int(&f("acquire_timeout_ms"), p.acquire_timeout_ms, 100..=60_000);
        self.int(&f("statement_timeout_ms"), p.statement_timeout_ms, 100..=600_000);
        let sync = &p.sqlite_synchronous;
        if !["FULL", "NORMAL"].iter().any(|v| sync.eq_ignore_ascii_case(v)) {
            self.fail(&f("sqlite_synchronous"), format!("{sync:?}: FULL or NORMAL"));
        } else if self.production && !sync.eq_ignore_ascii_case("FULL") {
            self.fail(&f("sqlite_synchronous"), "must be FULL in production (durable security state)");
        }
    }

    fn top_level(&mut self, c: &Config) {
        if let Some(w) = c.workers {
            self.int("workers", w, 1..=1024);
        }
        if let Err(e) = c.trusted() {
            self.fail("trusted_proxies", e);
        }
        if c.data_dir.as_os_str().is_empty() {
            self.fail("data_dir", "must not be empty");
        }
        if self.production && c.demo == Some(true) {
            self.fail("demo", "refused in production: the demo accounts' password is «demo»");
        }
        if c.diary.pool.schema == c.max.pool.schema {
            self.fail("max.pool.schema", "must differ from diary.pool.schema: the parties never share tables");
        }
    }

    /// What both parties have: a listener, a public URL, a database and a master secret.
    fn party(
        &mut self,
        name: &str,
        listen: &str,
        public_url: &Option<String>,
        db: &Option<String>,
        secret: &Option<String>,
    ) {
        self.listen(&format!("{name}.listen"), listen);
        self.base_url(&format!("{name}.public_url"), public_url.as_deref());
        self.database_url(&format!("{name}.database_url"), db.as_deref());
        self.master_secret(&format!("{name}.secret"), secret.as_deref());
    }

    fn diary(&mut self, c: &Config) {
        let d = &c.diary;
        self.party("diary", &d.listen, &d.public_url, &d.database_url, &d.secret);
        self.base_url("diary.max_issuer", d.max_issuer.as_deref());
        self.id("diary.client_id", &d.client_id);
        self.token("diary.client_secret", d.client_secret.as_deref(), 32);
        self.int_by_mode("diary.link_starts_per_hour", d.link_starts_per_hour, 1..=BENCH_MAX, 1..=100);
        self.url("diary.call_base_url", d.call_base_url.as_deref());
        self.int("diary.outbox_max_backoff_secs", d.outbox_max_backoff_secs, super::OUTBOX_MAX_BACKOFF_SECS);
        self.int("diary.reconcile_interval_secs", d.reconcile_interval_secs, 0..=86_400);
        if let Some(id) = &d.instance_id {
            self.id("diary.instance_id", id);
        }
        self.pool("diary", &d.pool);
    }

    fn max(&mut self, c: &Config) {
        let m = &c.max;
        self.party("max", &m.listen, &m.public_url, &m.database_url, &m.secret);
        self.int(
            "max.client_secret_grace_secs",
            m.client_secret_grace_secs,
            0..=edulink_max::oidc::CLIENT_SECRET_GRACE_MAX,
        );
        self.int("max.unfinished_link_secs", m.unfinished_link_secs, 60..=7 * 86_400);
        match m.sms.gateway.as_str() {
            "dev" => {}
            "http" => {
                for (field, v) in [("max.sms.url", &m.sms.url), ("max.sms.token", &m.sms.token)] {
                    if v.is_none() {
                        self.fail(field, "required for the http gateway");
                    }
                }
            }
            other => self.fail("max.sms.gateway", format!("{other:?}: dev or http")),
        }
        self.url("max.sms.url", m.sms.url.as_deref());
        self.token("max.sms.token", m.sms.token.as_deref(), 1);
        // An out-of-band code lives at most 10 minutes (NIST SP 800-63B §5.1.3.2); failed tries are
        // limited to 100 per account (§5.2.2); a 6-digit code allows at most 10 guesses.
        self.int("max.codes.ttl_secs", m.codes.ttl_secs, 30..=600);
        self.int("max.codes.max_attempts", m.codes.max_attempts, 1..=10);
        self.int("max.codes.phone_lock_after", m.codes.phone_lock_after, 1..=100);
        self.int("max.codes.phone_lock_base_secs", m.codes.phone_lock_base_secs, 60..=86_400);
        let l = &m.limits;
        self.int_by_mode("max.limits.resend_gap_secs", l.resend_gap_secs, 0..=3600, 60..=3600);
        self.int_by_mode("max.limits.per_phone_hour", l.per_phone_hour, 1..=BENCH_MAX, 1..=20);
        self.int_by_mode("max.limits.per_phone_day", l.per_phone_day, 1..=BENCH_MAX, 1..=100);
        self.int_by_mode("max.limits.per_ip_hour", l.per_ip_hour, 1..=BENCH_MAX, 1..=10_000);
        self.int_by_mode("max.limits.global_hour", l.global_hour, 1..=BENCH_MAX, 1..=1_000_000);
        if l.per_phone_day < l.per_phone_hour {
            self.fail("max.limits.per_phone_day", "must be at least max.limits.per_phone_hour");
        }
        if m.allowed_countries.is_empty() {
            self.fail("max.allowed_countries", "must name at least one country");
        }
        for code in &m.allowed_countries {
            if !edulink_domain::phone::is_known_region(code) {
                self.fail("max.allowed_countries", format!("{code:?} is not an ISO 3166 region with phone numbering"));
            }
        }
        let below = m.alerts.conversion_below;
        if !(0.0..=1.0).contains(&below) {
            self.fail("max.alerts.conversion_below", format!("{below} is outside 0.0..=1.0"));
        }
        self.int("max.alerts.min_sent", m.alerts.min_sent, 1..=1_000_000);
        self.clients(c);
        self.pool("max", &m.pool);
    }

    fn clients(&mut self, c: &Config) {
        for (i, cl) in c.max.clients.iter().enumerate() {
            let f = |name: &str| format!("max.clients[{i}].{name}");
            self.id(&f("id"), &cl.id);
            if cl.name.trim().is_empty() || cl.name.chars().count() > 100 {
                self.fail(&f("name"), "1..=100 characters");
            }
            if cl.redirect_uris.is_empty() || cl.redirect_uris.iter().any(|u| url::Url::parse(u).is_err()) {
                self.fail(&f("redirect_uris"), "one or more absolute URIs");
            }
            if cl.post_logout_redirect_uris.iter().any(|u| url::Url::parse(u).is_err()) {
                self.fail(&f("post_logout_redirect_uris"), "absolute URIs");
            }
            if cl.backchannel_logout_uri.as_deref().is_some_and(|u| url::Url::parse(u).is_err()) {
                self.fail(&f("backchannel_logout_uri"), "an absolute URI");
            }
            if !edulink_max::keys::ALGS.contains(&cl.alg.as_str()) {
                self.fail(&f("alg"), format!("{:?}: one of {:?}", cl.alg, edulink_max::keys::ALGS));
            }
            let b64url = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
            if cl.secret_sha256.as_deref().is_some_and(|h| h.len() != 43 || !b64url(h)) {
                self.fail(&f("secret_sha256"), "a SHA-256 digest in URL-safe base64 without padding (43 characters)");
            }
            if let Some(s) = &cl.sector {
                self.id(&f("sector"), s);
            }
            if c.max.clients[..i].iter().any(|o| o.id == cl.id) {
                self.fail(&f("id"), format!("{:?} is registered twice", cl.id));
            }
        }
    }

    /// Production: what the command uses must be configured.
    fn presence(&mut self, c: &Config, scope: Scope) {
        let diary = matches!(scope, Scope::Diary | Scope::Both);
        let max = matches!(scope, Scope::Max | Scope::Both);
        let mut need = |field: &str, set: bool, why: &str| {
            if !set {
                self.fail(field, format!("required in production {why}"));
            }
        };
        if diary {
            need("diary.secret", c.diary.secret.is_some(), "to run the diary");
            need(
                "diary.client_secret",
                c.diary.client_secret.is_some(),
                "to run the diary (`max client add` prints it)",
            );
            need("diary.public_url", c.diary.public_url.is_some(), "to run the diary");
            let issuer = c.diary.max_issuer.is_some() || c.max.public_url.is_some();
            need("diary.max_issuer", issuer, "to run the diary (or max.public_url)");
        }
        if max || scope == Scope::MaxKeys {
            need("max.secret", c.max.secret.is_some(), "to run MAX or rotate its keys");
        }
        if max {
            need("max.public_url", c.max.public_url.is_some(), "to run MAX");
            need("max.sms.gateway", c.max.sms.gateway != "dev", "to run MAX: http (the dev inbox is refused)");
        }
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
