use super::*;
use crate::config::{ClientSection, ConfigError, SmsSection};

/// A complete production configuration, as docs/deployment.md («Bootstrap») builds one.
fn production() -> Config {
    let mut c = Config { mode: Mode::Production, ..Config::default() };
    c.diary.public_url = Some("https://diary.example".into());
    c.max.public_url = Some("https://max.example".into());
    c.diary.secret = Some(SecretKey::generate().to_base64());
    c.max.secret = Some(SecretKey::generate().to_base64());
    c.diary.client_secret = Some(edulink_domain::crypto::random_token(32));
    c.max.sms = SmsSection {
        gateway: "http".into(),
        url: Some("https://sms.example/send".into()),
        token: Some("provider-token".into()),
    };
    c
}

fn fields(r: Result<(), FieldErrors>) -> Vec<FieldError> {
    r.err().map(|e| e.0).unwrap_or_default()
}

const ZERO_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

type Tweak = fn(&mut Config);

/// Every value issue 17 found accepted, and one out-of-bounds value per other numeric field: each
/// is refused alone, naming its field and the allowed values. Bounds: NIST SP 800-63B §5.1.3.2
/// (an out-of-band code lives ≤ 10 minutes) and §5.2.2 (≤ 100 failed tries per account); OpenID
/// Connect Discovery 1.0 §4.3 (the issuer is compared byte for byte, so a trailing slash breaks
/// every sign-in); RFC 3986 §2.3 for ids; `SocketAddr` syntax for listeners.
#[test]
fn every_out_of_bounds_value_is_refused_naming_its_field_and_bounds() {
    let cases: &[(&str, &str, Tweak)] = &[
        ("max.public_url", "slash", |c| c.max.public_url = Some("https://max.example/".into())),
        ("diary.public_url", "slash", |c| c.diary.public_url = Some("https://diary.example/".into())),
        ("diary.max_issuer", "slash", |c| c.diary.max_issuer = Some("https://max.example/".into())),
        ("diary.max_issuer", "https", |c| c.diary.max_issuer = Some("http://max.example".into())),
        ("max.public_url", "https", |c| c.max.public_url = Some("http://max.example".into())),
        ("max.public_url", "query", |c| c.max.public_url = Some("https://max.example?a=1".into())),
        ("diary.listen", "port 0..=65535", |c| c.diary.listen = "127.0.0.1:99999".into()),
        ("max.listen", "IP:port", |c| c.max.listen = "max.example".into()),
        ("max.allowed_countries", "ISO 3166", |c| c.max.allowed_countries = vec!["XX".into()]),
        ("max.allowed_countries", "at least one", |c| c.max.allowed_countries.clear()),
        ("max.codes.max_attempts", "1..=10", |c| c.max.codes.max_attempts = 1_000_000),
        ("max.codes.ttl_secs", "30..=600", |c| c.max.codes.ttl_secs = 86_400),
        ("max.codes.phone_lock_after", "1..=100", |c| c.max.codes.phone_lock_after = 1_000_000),
        ("max.codes.phone_lock_base_secs", "60..=86400", |c| c.max.codes.phone_lock_base_secs = 0),
        ("max.limits.per_ip_hour", "1..=10000 in production", |c| c.max.limits.per_ip_hour = 1_000_000_000),
        ("max.limits.resend_gap_secs", "60..=3600", |c| c.max.limits.resend_gap_secs = 0),
        ("max.limits.per_phone_hour", "1..=20", |c| c.max.limits.per_phone_hour = 0),
        ("max.limits.per_phone_day", "per_phone_hour", |c| c.max.limits.per_phone_day = 4),
        ("max.limits.global_hour", "1..=1000000", |c| c.max.limits.global_hour = 1_000_000_000),
        ("max.sms.url", "https", |c| c.max.sms.url = Some("http://sms.example/send".into())),
        ("max.sms.url", "required", |c| c.max.sms.url = None),
        ("max.sms.token", "visible ASCII", |c| c.max.sms.token = Some("two words".into())),
        ("max.sms.gateway", "dev or http", |c| c.max.sms.gateway = "smtp".into()),
        ("max.sms.gateway", "refused", |c| c.max.sms.gateway = "dev".into()),
        ("diary.secret", "not random", |c| c.diary.secret = Some(ZERO_KEY.into())),
        ("max.secret", "not random", |c| c.max.secret = Some(ZERO_KEY.into())),
        ("max.secret", "32 bytes", |c| c.max.secret = Some("c2hvcnQ=".into())),
        ("diary.client_secret", "32..=512", |c| c.diary.client_secret = Some("x".into())),
        ("diary.client_secret", "not random", |c| c.diary.client_secret = Some("ab".repeat(20))),
        ("diary.client_id", "A-Z a-z 0-9", |c| c.diary.client_id = "me:sh".into()),
        ("diary.link_starts_per_hour", "1..=100", |c| c.diary.link_starts_per_hour = 100_000),
        ("diary.call_base_url", "https", |c| c.diary.call_base_url = Some("ftp://call.example".into())),
        ("diary.database_url", "postgres://", |c| c.diary.database_url = Some("mysql://db/x".into())),
        ("diary.pool.max_connections", "1..=256", |c| c.diary.pool.max_connections = 0),
        ("max.pool.max_connections", "1..=256", |c| c.max.pool.max_connections = 100_000),
        ("max.pool.acquire_timeout_ms", "100..=60000", |c| c.max.pool.acquire_timeout_ms = 0),
        ("diary.pool.statement_timeout_ms", "100..=600000", |c| c.diary.pool.statement_timeout_ms = u64::MAX),
        ("diary.pool.sqlite_synchronous", "FULL or NORMAL", |c| c.diary.pool.sqlite_synchronous = "OFF".into()),
        ("max.pool.sqlite_synchronous", "FULL in production", |c| c.max.pool.sqlite_synchronous = "NORMAL".into()),
        ("max.pool.schema", "lowercase", |c| c.max.pool.schema = "Max".into()),
        ("max.pool.schema", "must differ", |c| c.max.pool.schema = "diary".into()),
        ("max.alerts.conversion_below", "0.0..=1.0", |c| c.max.alerts.conversion_below = 1.5),
        ("max.alerts.conversion_below", "0.0..=1.0", |c| c.max.alerts.conversion_below = f64::NAN),
        ("max.alerts.min_sent", "1..=1000000", |c| c.max.alerts.min_sent = 0),
        ("workers", "1..=1024", |c| c.workers = Some(0)),
        ("trusted_proxies", "10.0.0.0/33", |c| c.trusted_proxies = vec!["10.0.0.0/33".into()]),
        ("demo", "refused in production", |c| c.demo = Some(true)),
        ("max.clients[0].alg", "RS256", |c| c.max.clients[0].alg = "HS256".into()),
        ("max.clients[0].redirect_uris", "absolute", |c| c.max.clients[0].redirect_uris = vec!["/cb".into()]),
        ("max.clients[0].secret_sha256", "43", |c| c.max.clients[0].secret_sha256 = Some("x".into())),
        ("max.clients[0].post_logout_redirect_uris", "absolute", |c| {
            c.max.clients[0].post_logout_redirect_uris = vec!["/bye".into()]
        }),
        ("max.clients[0].backchannel_logout_uri", "absolute", |c| {
            c.max.clients[0].backchannel_logout_uri = Some("/oidc/backchannel-logout".into())
        }),
        ("max.clients[1].id", "twice", |c| c.max.clients.push(c.max.clients[0].clone())),
    ];
    let base = {
        let mut c = production();
        c.max.clients.push(ClientSection {
            id: "other".into(),
            name: "Другой дневник".into(),
            redirect_uris: vec!["https://other.example/cb".into()],
            alg: "ES256".into(),
            secret_sha256: Some(edulink_domain::crypto::sha256_b64("s")),
            sector: None,
            provisioning: false,
            phone: false,
            post_logout_redirect_uris: vec![],
            backchannel_logout_uri: None,
            backchannel_logout_session_required: false,
            dpop_bound_access_tokens: false,
            require_pushed_authorization_requests: false,
        });
        c
    };
    assert_eq!(fields(check(&base, Scope::Both)), vec![], "the base configuration is valid");
    for (field, allowed, tweak) in cases {
        let mut c = base.clone();
        tweak(&mut c);
        let errors = fields(check(&c, Scope::Both));
        assert_eq!(errors.len(), 1, "{field}: exactly one error expected, got {errors:?}");
        assert_eq!(errors[0].field, *field, "{errors:?}");
        assert!(errors[0].problem.contains(allowed), "{field}: {:?} should say {allowed:?}", errors[0].problem);
        let shown = ConfigError::Fields(FieldErrors(errors)).to_string();
        assert!(shown.contains(field) && !shown.contains(ZERO_KEY), "{shown}");
    }
}

/// The benchmark (loadtest) runs dev mode with lifted send limits and a zero resend gap: dev
/// accepts them, production refuses each.
#[test]
fn benchmark_limits_pass_in_dev_only() {
    let bench = |c: &mut Config| {
        c.max.limits.resend_gap_secs = 0;
        c.max.limits.per_phone_hour = 1_000_000;
        c.max.limits.per_phone_day = 1_000_000;
        c.max.limits.per_ip_hour = 1_000_000_000;
        c.max.limits.global_hour = 1_000_000_000;
        c.diary.link_starts_per_hour = 100_000;
    };
    let mut dev = Config::default();
    bench(&mut dev);
    assert_eq!(fields(check(&dev, Scope::Both)), vec![]);
    let mut prod = production();
    bench(&mut prod);
    let refused: Vec<String> = fields(check(&prod, Scope::Both)).into_iter().map(|e| e.field).collect();
    assert_eq!(refused.len(), 6, "{refused:?}");
}

/// Production bootstrap from an empty database (docs/deployment.md «Bootstrap»): `migrate` and
/// `max client add` need no secret, `keys rotate` only MAX's, and only the diary needs the client
/// secret that `max client add` prints.
#[test]
fn each_command_requires_only_what_it_uses() {
    let mut c = production();
    c.diary.client_secret = None;
    c.diary.secret = None;
    c.max.secret = None;
    let missing = |c: &Config, s| fields(check(c, s)).into_iter().map(|e| e.field).collect::<Vec<_>>();
    assert_eq!(missing(&c, Scope::Databases), Vec::<String>::new());
    assert_eq!(missing(&c, Scope::MaxKeys), ["max.secret"]);
    assert_eq!(missing(&c, Scope::Max), ["max.secret"]);
    assert_eq!(missing(&c, Scope::Diary), ["diary.secret", "diary.client_secret"]);
    c.max.secret = Some(SecretKey::generate().to_base64());
    c.diary.secret = Some(SecretKey::generate().to_base64());
    assert_eq!(missing(&c, Scope::Max), Vec::<String>::new());
    assert_eq!(missing(&c, Scope::Both), ["diary.client_secret"]);
    assert!(c.clone().with_secrets().unwrap().diary.client_secret.is_none(), "production never generates");
    // A value out of bounds is refused whatever the command.
    c.max.codes.ttl_secs = 86_400;
    assert_eq!(missing(&c, Scope::Databases), ["max.codes.ttl_secs"]);
    // A MAX-only deployment needs no diary settings; a diary-only one needs MAX's issuer.
    c.max.public_url = None;
    c.max.codes.ttl_secs = 300;
    assert_eq!(missing(&c, Scope::Diary), ["diary.client_secret", "diary.max_issuer"]);
}
