//! Password sign-in with throttling, shared by the web login and the apps' API: failures are counted
//! per login and per client IP in the database (so they hold across instances); past the cap the
//! password is not even checked until the hour ends (OWASP ASVS 5.0 V6.3.1, NIST SP 800-63B §3.2.2).

use crate::repo::{self, User};
use crate::{DiaryState, passwords};
use edulink_store::StoreError;

/// Wrong passwords per login per hour before sign-in is refused.
pub const FAILURES_PER_LOGIN_HOUR: i64 = 10;
/// Wrong passwords per client IP per hour (a school shares one address: higher).
pub const FAILURES_PER_IP_HOUR: i64 = 100;

/// The outcome of a sign-in attempt.
#[derive(Debug)]
pub enum Outcome {
    /// The password is right.
    Ok(Box<User>),
    /// Unknown login or wrong password (the same answer for both).
    Wrong,
    /// Too many failures: retry after this many seconds.
    Throttled(i64),
}

/// Checks `login`/`password` from `ip`. An attempt is taken from the login's and the IP's hourly
/// limits before Argon2 runs (one atomic reservation in the database, so guesses sent together, to
/// any instance, cannot all pass the check); a wrong password keeps it as a failure, a right one
/// clears the login's failures and gives the IP's attempt back.
pub async fn check(st: &DiaryState, login: &str, password: String, ip: &str) -> Result<Outcome, StoreError> {
    let now = st.now();
    let login = login.trim().to_lowercase();
    // A login longer than any real one (it cannot exist) is counted under its hash: the counter's
    // key stays short whatever is posted.
    let key = if login.len() <= 64 { login.clone() } else { edulink_domain::crypto::sha256_b64(&login) };
    let by_login = format!("login-fail:{key}");
    let limits = [
        edulink_store::Limit { bucket: by_login.clone(), window: 3600, cap: FAILURES_PER_LOGIN_HOUR },
        edulink_store::Limit { bucket: format!("login-fail-ip:{ip}"), window: 3600, cap: FAILURES_PER_IP_HOUR },
    ];
    let reservation = match edulink_store::reserve(&st.db, &limits, now).await? {
        Ok(r) => r,
        Err(wait) => {
            metrics::counter!("edulink_diary_login_throttled_total").increment(1);
            return Ok(Outcome::Throttled(wait));
        }
    };
    let found = if login.len() <= 64 { repo::user_by_login(&st.db, &login).await? } else { None };
    let (user, hash) = match found {
        Some((u, h)) => (Some(u), Some(h)),
        None => (None, None),
    };
    metrics::counter!("edulink_diary_password_checks_total").increment(1);
    let ok = password.len() <= 256 && passwords::verify(password, hash, st.cfg.password_cost).await;
    match (ok, user) {
        (true, Some(user)) => {
            reservation.give_back(&st.db).await?;
            edulink_store::clear_bucket(&st.db, &by_login).await?;
            Ok(Outcome::Ok(Box::new(user)))
        }
        _ => {
            metrics::counter!("edulink_diary_login_failures_total").increment(1);
            Ok(Outcome::Wrong)
        }
    }
}
