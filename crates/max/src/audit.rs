//! MAX's audit trail: what happened, when, from which IP and client, about which pseudonymous
//! account id and pairwise subject. Never a phone number, a code or a token. Written through the one
//! writer both parties share (`edulink_web::audit`).

pub use edulink_web::audit::{Event, Record};

/// MAX's audit table.
pub const TRAIL: edulink_web::audit::Trail = edulink_web::audit::Trail::MAX;
