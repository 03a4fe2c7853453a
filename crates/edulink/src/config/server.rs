//! The listeners' settings: timeouts, connection limits, the drain and the operator listener.

use super::Mode;
use serde::{Deserialize, Serialize};

/// Timeouts, connection limits and the shutdown of every listener (`EDULINK_SERVER__*`); bounds in
/// [`ServerSection::check`] and docs/deployment.md.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// After SIGTERM, `/readyz` answers 503 for this long while everything is still served, so
    /// balancers take the instance out first (default: 5 in production, 0 in dev).
    pub drain_secs: Option<u64>,
    /// After the drain, requests in progress get this long to finish; then connections are cut.
    pub shutdown_timeout_secs: u64,
    /// A request head must arrive within this (from the connection's start, or from the first byte
    /// of a kept-alive connection's next request).
    pub header_timeout_secs: u64,
    /// A request body must arrive within this of its head.
    pub body_timeout_secs: u64,
    /// A kept-alive connection with no request is closed after this.
    pub idle_timeout_secs: u64,
    /// Open connections per listener; more wait in the kernel's listen backlog.
    pub max_connections: usize,
}

/// The operator listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsSection {
    /// Address of `/metrics`, `/healthz` and `/readyz` for operators (`EDULINK_OPS__LISTEN`);
    /// loopback by default, empty to turn it off.
    pub listen: String,
    /// The OTLP/HTTP traces endpoint of an OpenTelemetry collector, e.g.
    /// `http://collector:4318/v1/traces` (`EDULINK_OPS__OTLP_ENDPOINT`); unset: no export.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            drain_secs: None,
            shutdown_timeout_secs: 30,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            idle_timeout_secs: 75,
            max_connections: 4096,
        }
    }
}

impl ServerSection {
    /// The drain period in `mode`.
    pub fn drain(&self, mode: Mode) -> std::time::Duration {
        let default = if mode == Mode::Production { 5 } else { 0 };
        std::time::Duration::from_secs(self.drain_secs.unwrap_or(default))
    }

    /// The listeners' limits.
    pub fn limits(&self) -> edulink_web::serve::Limits {
        use std::time::Duration;
        edulink_web::serve::Limits {
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            body_timeout: Duration::from_secs(self.body_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_connections: self.max_connections,
        }
    }

    /// The documented bounds (docs/deployment.md, «Timeouts, limits and shutdown»).
    pub(super) fn check(&self, ops: &OpsSection) -> Result<(), String> {
        let within = |name: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) { Ok(()) } else { Err(format!("server.{name} must be between {lo} and {hi}")) }
        };
        within("drain_secs", self.drain_secs.unwrap_or(0), 0, 300)?;
        within("shutdown_timeout_secs", self.shutdown_timeout_secs, 1, 600)?;
        within("header_timeout_secs", self.header_timeout_secs, 1, 300)?;
        within("body_timeout_secs", self.body_timeout_secs, 1, 3600)?;
        within("idle_timeout_secs", self.idle_timeout_secs, 1, 3600)?;
        within("max_connections", self.max_connections as u64, 1, 1_000_000)?;
        if !ops.listen.is_empty() && ops.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!("ops.listen: {:?} is not an address:port (or empty to turn it off)", ops.listen));
        }
        if let Some(e) = &ops.otlp_endpoint {
            let ok = url::Url::parse(e).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err(format!(
                    "ops.otlp_endpoint: {e:?} is not an http(s) URL (e.g. http://collector:4318/v1/traces)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Mode};

    #[test]
    fn server_limits_and_the_drain_have_bounds_and_mode_defaults() {
        let mut c = Config::default();
        assert_eq!(c.server.drain(Mode::Dev).as_secs(), 0, "a person's Ctrl-C stops at once");
        assert_eq!(c.server.drain(Mode::Production).as_secs(), 5);
        assert!(c.server.idle_timeout_secs >= 60, "kept-alive clients (the benchmark's) are not cut");
        c.server.header_timeout_secs = 0;
        assert!(c.check().unwrap_err().to_string().contains("server.header_timeout_secs must be between 1 and 300"));
        c.server.header_timeout_secs = 10;
        c.ops.listen = "localhost".into();
        assert!(c.check().unwrap_err().to_string().contains("ops.listen"));
        c.ops.listen = String::new();
        c.check().unwrap();
        for bad in ["collector:4318", "ftp://collector/v1/traces", "http://"] {
            c.ops.otlp_endpoint = Some(bad.into());
            assert!(c.check().unwrap_err().to_string().contains("ops.otlp_endpoint"), "{bad}");
        }
        c.ops.otlp_endpoint = Some("http://127.0.0.1:4318/v1/traces".into());
        c.check().unwrap();
    }
}
