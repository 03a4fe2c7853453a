//! One-time SMS codes and the limits around sending and guessing them (docs/architecture.md, «Rules»).

use crate::crypto::{SecretKey, ct_eq};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::{Rng, TryRngCore};

/// A six-digit code as typed by a person or drawn from the CSPRNG.
#[derive(Clone, PartialEq, Eq)]
pub struct OtpCode(String);

impl std::fmt::Debug for OtpCode {
    // A code must never reach a log, even through debug formatting.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtpCode(******)")
    }
}

/// The input is not six digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the code must be six digits")]
pub struct BadCodeFormat;

impl OtpCode {
    /// Six uniformly random digits from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let n: u32 = rand::rngs::OsRng.unwrap_err().random_range(0..1_000_000);
        Self(format!("{n:06}"))
    }

    /// Parses what a person typed: six ASCII digits, spaces and dashes ignored (`123 456`, `123-456`).
    pub fn parse(input: &str) -> Result<Self, BadCodeFormat> {
        if input.len() > 16 {
            return Err(BadCodeFormat);
        }
        let digits: String = input.chars().filter(|c| !matches!(c, ' ' | '-' | '\t')).collect();
        if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(digits))
        } else {
            Err(BadCodeFormat)
        }
    }

    /// The digits, for the SMS text only.
    pub fn digits(&self) -> &str {
        &self.0
    }

    /// The keyed MAC under which a code is stored: bound to one flow (`challenge_id`), so a code
    /// can never be replayed into another flow and the stored value reveals nothing without the key.
    pub fn mac(&self, key: &SecretKey, challenge_id: &str) -> String {
        URL_SAFE_NO_PAD.encode(key.mac(&[b"sms-code", challenge_id.as_bytes(), self.0.as_bytes()]))
    }

    /// Compares this code against a stored MAC in constant time.
    pub fn matches(&self, key: &SecretKey, challenge_id: &str, stored_mac: &str) -> bool {
        ct_eq(self.mac(key, challenge_id).as_bytes(), stored_mac.as_bytes())
    }
}

/// How codes live and die.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodePolicy {
    /// How long a code is valid, in seconds.
    pub ttl_secs: i64,
    /// Wrong tries that kill a code.
    pub max_attempts: i64,
    /// Wrong codes per phone (across codes, since its last lock or right code) that lock it.
    pub phone_lock_after: i64,
    /// How long a lock lasts. It does not grow: guesses while locked are not evaluated and count
    /// nothing, and the count starts again after a lock (SECURITY.md, «Lockout model»).
    pub phone_lock_base_secs: i64,
}

impl Default for CodePolicy {
    fn default() -> Self {
        Self { ttl_secs: 300, max_attempts: 5, phone_lock_after: 20, phone_lock_base_secs: 900 }
    }
}

impl CodePolicy {
    /// How long a phone is locked after its `failures`-th wrong code in a row, or `None` when it is
    /// not. The same length every time: an attacker cannot grow a lock, only start a new one with
    /// codes sent after the last lock ended.
    pub fn lock_secs(&self, failures: i64) -> Option<i64> {
        (failures >= self.phone_lock_after).then_some(self.phone_lock_base_secs)
    }
}

/// How often codes may be sent: per phone, per client IP, and for the whole service (SMS pumping guard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsLimits {
    /// Minimum seconds between two sends to one phone.
    pub resend_gap_secs: i64,
    /// Sends to one phone per hour.
    pub per_phone_hour: i64,
    /// Sends to one phone per day.
    pub per_phone_day: i64,
    /// Sends requested from one client IP per hour.
    pub per_ip_hour: i64,
    /// Sends by the whole service per hour.
    pub global_hour: i64,
}

impl Default for SmsLimits {
    fn default() -> Self {
        Self { resend_gap_secs: 60, per_phone_hour: 5, per_phone_day: 10, per_ip_hour: 30, global_hour: 100_000 }
    }
}

/// The SMS text for a sign-in code: Russian, one UCS-2 segment, no personal data, and the WebOTP
/// line `@host #code` last so that browsers and iOS can offer the code for autofill.
pub fn sms_text(code: &OtpCode, host: &str) -> String {
    format!("{} — код входа в MAX. Никому не сообщайте\n@{} #{}", code.digits(), host, code.digits())
}

/// Length of a text in UTF-16 code units: what an SMS segment counts when the text needs UCS-2.
pub fn ucs2_len(text: &str) -> usize {
    text.encode_utf16().count()
}

/// The longest host name for which [`sms_text`] still fits one UCS-2 segment (70 units).
pub const SMS_MAX_HOST_LEN: usize = 15;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_are_six_digits_and_vary() {
        let codes: std::collections::HashSet<String> =
            (0..200).map(|_| OtpCode::generate().digits().to_string()).collect();
        assert!(codes.iter().all(|c| c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit())));
        // 200 draws from a million values: a handful of repeats at most, never one constant.
        assert!(codes.len() > 190);
    }

    #[test]
    fn parse_accepts_spacing_and_refuses_the_rest() {
        assert_eq!(OtpCode::parse("123 456").unwrap().digits(), "123456");
        assert_eq!(OtpCode::parse("123-456").unwrap().digits(), "123456");
        for bad in ["12345", "1234567", "12345a", "", "１２３４５６", "123456789012345678"] {
            assert!(OtpCode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mac_is_bound_to_key_and_flow() {
        let k = SecretKey::generate();
        let c = OtpCode::parse("123456").unwrap();
        let m = c.mac(&k, "flow-a");
        assert!(c.matches(&k, "flow-a", &m));
        assert!(!c.matches(&k, "flow-b", &m));
        assert!(!OtpCode::parse("123457").unwrap().matches(&k, "flow-a", &m));
        assert!(!c.matches(&SecretKey::generate(), "flow-a", &m));
        assert!(!m.contains("123456"));
    }

    #[test]
    fn debug_never_shows_digits() {
        assert_eq!(format!("{:?}", OtpCode::parse("123456").unwrap()), "OtpCode(******)");
    }

    #[test]
    fn a_lock_has_one_bounded_length() {
        // A lock that grew with every post let one SMS buy a 24-hour lock kept alive forever (issue 20).
        let p = CodePolicy::default();
        assert_eq!(p.lock_secs(19), None);
        assert_eq!(p.lock_secs(20), Some(900));
        assert_eq!(p.lock_secs(21), Some(900));
        assert_eq!(p.lock_secs(100), Some(900));
    }

    #[test]
    fn sms_fits_one_ucs2_segment() {
        let code = OtpCode::parse("123456").unwrap();
        let host = "a".repeat(SMS_MAX_HOST_LEN);
        let text = sms_text(&code, &host);
        assert_eq!(ucs2_len(&text), 70, "{text}");
        assert!(text.ends_with(&format!("@{host} #123456")));
        assert!(text.contains("Никому"));
        assert!(ucs2_len(&sms_text(&code, &format!("{host}x"))) > 70);
    }
}
