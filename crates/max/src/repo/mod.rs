//! MAX's storage, one module per table family. Rows are read into `sqlx::FromRow` structs; callers
//! use the names re-exported here.
//!
//! * [`sessions`]: browser sessions (`sessions`).
//! * [`accounts`]: accounts and their notifications (`accounts`, `notifications`).
//! * [`challenges`]: SMS challenges (`sms_challenges`).
//! * [`clients`]: registered OpenID clients (`clients`).
//! * [`grants`]: authorization requests, grants and codes (`auth_requests`, `grants`, `auth_codes`).
//! * [`links`]: link marks of the diary's links (`link_marks`), the sweep of unfinished link grants.
//! * [`tokens`]: access and refresh tokens (`tokens`).
//! * [`logout`]: logout registrations, sessions' clients, logout tokens to deliver (`client_logout`,
//!   `session_clients`, `backchannel_jobs`).
//! * [`dpop`]: DPoP key bindings, proofs seen, pushed authorization requests (`dpop_bindings`,
//!   `dpop_proofs`, `pushed_requests`).
//! * [`signing_keys`]: the provider's signing keys (`signing_keys`).

pub mod accounts;
pub mod challenges;
pub mod clients;
pub mod dpop;
pub mod grants;
pub mod links;
pub mod logout;
pub mod sessions;
pub mod signing_keys;
pub mod tokens;

pub use accounts::{
    Account, Notification, account, account_by_phone, create_account, notifications, notify, notify_in,
};
pub use challenges::{Challenge, challenge, create_challenge, take_attempt, use_challenge};
pub use sessions::{
    ANON_IDLE_SECS, Session, SessionKind, attach_request, create_app_session, create_session, create_session_in,
    delete_session, delete_session_in, load_session, session_alive, set_challenge, set_pending_request,
    set_verified_phone, sign_in, sign_in_in,
};
