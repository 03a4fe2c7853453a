//! The `edulink` binary's library: configuration and the wiring that starts the parties.

pub mod app;
pub mod backup;
pub mod config;
pub mod export;
pub mod janitor;
pub mod mobile;
pub mod serving;
pub mod support;
pub mod telemetry;
