//! One integration-test binary: both parties on 127.0.0.1:0, driven over HTTP like a browser.

mod admin;
mod api;
mod backup;
mod churn;
mod conformance;
mod crash;
mod flows;
mod hygiene;
mod janitor;
mod links;
mod lockout;
mod logout;
mod oidc;
mod outbox;
mod proxy;
mod races;
mod resilience;
mod retention;
mod rotation;
mod rp;
mod rules;
mod scale;
mod security;
mod serving;
mod sferum;
