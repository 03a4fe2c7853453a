//! One integration-test binary: both parties on 127.0.0.1:0, driven over HTTP like a browser.

mod flows;
mod oidc;
mod resilience;
mod rules;
mod scale;
mod security;
