//! Time-based one-time passwords (RFC 6238) for operator accounts: HOTP (RFC 4226) over a counter
//! of 30-second steps, the secret shared as base32 (RFC 4648 §6) in an `otpauth://` URI that
//! authenticator apps read.

use aws_lc_rs::hmac;
use subtle::ConstantTimeEq;

/// The HMAC of a TOTP (RFC 6238 §1.2: SHA-1 by default; SHA-256 and SHA-512 allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC-SHA-1, what authenticator apps assume.
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

/// A TOTP configuration: algorithm, digits and step (RFC 6238 §4: X = 30 s, T0 = 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totp {
    /// The HMAC.
    pub algorithm: Algorithm,
    /// Digits of a code (6 in apps, 8 in the RFC's vectors).
    pub digits: u32,
    /// Seconds per step.
    pub step: i64,
}

impl Default for Totp {
    /// SHA-1, 6 digits, 30 s: what every authenticator app reads from a plain `otpauth://` URI.
    fn default() -> Self {
        Totp { algorithm: Algorithm::Sha1, digits: 6, step: 30 }
    }
}

impl Totp {
    /// The HOTP value of `counter` (RFC 4226 §5.3: HMAC, dynamic truncation, modulo 10^digits).
    pub fn hotp(&self, secret: &[u8], counter: u64) -> String {
        let alg = match self.algorithm {
            Algorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Algorithm::Sha256 => hmac::HMAC_SHA256,
            Algorithm::Sha512 => hmac::HMAC_SHA512,
        };
        let tag = hmac::sign(&hmac::Key::new(alg, secret), &counter.to_be_bytes());
        let h = tag.as_ref();
        let offset = (h[h.len() - 1] & 0x0f) as usize;
        let bin = u32::from_be_bytes([h[offset] & 0x7f, h[offset + 1], h[offset + 2], h[offset + 3]]);
        let modulus = 10u64.pow(self.digits);
        format!("{:0width$}", u64::from(bin) % modulus, width = self.digits as usize)
    }

    /// The step that Unix time `now` falls in.
    pub fn step_of(&self, now: i64) -> i64 {
        now.div_euclid(self.step)
    }

    /// The code at Unix time `now`.
    pub fn code_at(&self, secret: &[u8], now: i64) -> String {
        self.hotp(secret, self.step_of(now).max(0) as u64)
    }

    /// Checks `code` at `now`, allowing one step of clock drift either way (RFC 6238 §5.2), and
    /// refusing steps at or before `last_used` (a code works once). Returns the matched step, to
    /// be stored as the new `last_used`. Compared in constant time.
    pub fn verify(&self, secret: &[u8], code: &str, now: i64, last_used: Option<i64>) -> Option<i64> {
        let code = code.trim();
        if code.len() != self.digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let current = self.step_of(now);
        let mut found = None;
        for step in [current - 1, current, current + 1] {
            let fresh = step >= 0 && last_used.is_none_or(|l| step > l);
            let matches: bool = self.hotp(secret, step.max(0) as u64).as_bytes().ct_eq(code.as_bytes()).into();
            if fresh && matches && found.is_none() {
                found = Some(step);
            }
        }
        found
    }

    /// The `otpauth://totp/` URI of an account (the Key Uri Format of authenticator apps).
    pub fn uri(&self, issuer: &str, account: &str, secret: &[u8]) -> String {
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20");
        let alg = match self.algorithm {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        };
        format!(
            "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm={alg}&digits={}&period={}",
            enc(issuer),
            enc(account),
            base32_encode(secret).trim_end_matches('='),
            enc(issuer),
            self.digits,
            self.step
        )
    }
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Base32 (RFC 4648 §6) with padding.
pub fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    for chunk in data.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let bits = u64::from_be_bytes([0, 0, 0, buf[0], buf[1], buf[2], buf[3], buf[4]]);
        let chars = (chunk.len() * 8).div_ceil(5);
        for i in 0..8 {
            if i < chars {
                out.push(BASE32[((bits >> (35 - i * 5)) & 31) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes base32 (RFC 4648 §6), padded or not, case-insensitive, spaces ignored (as apps show
/// secrets in groups).
pub fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut bits: u64 = 0;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes().filter(|b| *b != b' ') {
        let v = BASE32.iter().position(|x| *x == c.to_ascii_uppercase())? as u64;
        bits = (bits << 5) | v;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238, Appendix B: the seeds are the ASCII strings "12345678901234567890" repeated to
    /// the HMAC's key length (20, 32 and 64 bytes), 8 digits, X = 30.
    #[test]
    fn rfc_6238_appendix_b_vectors() {
        let seed = |n: usize| b"1234567890".iter().cycle().take(n).copied().collect::<Vec<u8>>();
        let cases: [(i64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (t, sha1, sha256, sha512) in cases {
            for (alg, len, want) in
                [(Algorithm::Sha1, 20, sha1), (Algorithm::Sha256, 32, sha256), (Algorithm::Sha512, 64, sha512)]
            {
                let totp = Totp { algorithm: alg, digits: 8, step: 30 };
                assert_eq!(totp.code_at(&seed(len), t), want, "T={t} {alg:?}");
            }
        }
    }

    /// RFC 4226, Appendix D: HOTP values of counters 0 to 9 for the secret "12345678901234567890".
    #[test]
    fn rfc_4226_appendix_d_vectors() {
        let want = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"];
        for (counter, code) in want.iter().enumerate() {
            assert_eq!(Totp::default().hotp(b"12345678901234567890", counter as u64), *code);
        }
    }

    /// RFC 4648 §10 test vectors (BASE32).
    #[test]
    fn rfc_4648_base32_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "MY======"),
            ("fo", "MZXQ===="),
            ("foo", "MZXW6==="),
            ("foob", "MZXW6YQ="),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI======"),
        ] {
            assert_eq!(base32_encode(plain.as_bytes()), enc);
            assert_eq!(base32_decode(enc).unwrap(), plain.as_bytes());
            assert_eq!(base32_decode(&enc.to_lowercase().replace('=', "")).unwrap(), plain.as_bytes());
        }
        assert_eq!(base32_decode("MZ1W"), None);
    }

    #[test]
    fn a_code_works_once_within_one_step_of_drift() {
        let t = Totp::default();
        let secret = b"operator secret 0001";
        let now = 1_765_000_000;
        let code = t.code_at(secret, now);
        let step = t.verify(secret, &code, now, None).expect("valid now");
        assert_eq!(t.verify(secret, &code, now, Some(step)), None, "replayed");
        assert_eq!(t.verify(secret, &code, now + 30, None), Some(step), "a step of drift");
        assert_eq!(t.verify(secret, &code, now + 90, None), None, "too old");
        assert_eq!(t.verify(secret, "12345", now, None), None);
        assert_eq!(t.verify(secret, "abcdef", now, None), None);
        let uri = t.uri("edulink ops", "anna", secret);
        assert!(uri.starts_with("otpauth://totp/edulink%20ops:anna?secret="), "{uri}");
        assert!(uri.contains("&digits=6&period=30"));
        let secret_param = uri.split("secret=").nth(1).unwrap().split('&').next().unwrap();
        assert_eq!(base32_decode(secret_param).unwrap(), secret);
    }
}
