//! Pure domain rules of edulink.
//!
//! Everything here is deterministic given its inputs (a clock and a random source are passed in or
//! isolated behind small functions), has no I/O, and is tested without HTTP or a database.

pub mod clock;
pub mod crypto;
pub mod dpop;
pub mod links;
pub mod oauth;
pub mod otp;
pub mod phone;
pub mod provisioning;
pub mod sferum;
pub mod text;
pub mod totp;

pub use clock::{Clock, ManualClock, SystemClock};
pub use crypto::{Cipher, SecretKey};
pub use otp::{CodePolicy, OtpCode, SmsLimits};
pub use phone::{Phone, PhoneError};
pub use text::{NameError, PersonName};
