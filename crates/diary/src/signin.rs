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

/// Checks `login`/`password` from `ip`.
pub async fn check(st: &DiaryState, login: &str, password: String, ip: &str) -> Result<Outcome, StoreError> {
    let now = st.now();
    let login = login.trim().to_lowercase();
    let by_login = format!("login-fail:{login}");
    let by_ip = format!("login-fail-ip:{ip}");
    for (bucket, cap) in [(&by_login, FAILURES_PER_LOGIN_HOUR), (&by_ip, FAILURES_PER_IP_HOUR)] {
        if repo::hourly_count(&st.db, bucket, now).await? >= cap {
            metrics::counter!("edulink_diary_login_throttled_total").increment(1);
            return Ok(Outcome::Throttled(3600 - now.rem_euclid(3600)));
        }
    }
    let found = if login.len() <= 64 { repo::user_by_login(&st.db, &login).await? } else { None };
    let (user, hash) = match found {
        Some((u, h)) => (Some(u), Some(h)),
        None => (None, None),
    };
    let ok = password.len() <= 256 && passwords::verify(password, hash, st.cfg.password_cost).await;
    match (ok, user) {
        (true, Some(user)) => Ok(Outcome::Ok(Box::new(user))),
        _ => {
            metrics::counter!("edulink_diary_login_failures_total").increment(1);
            repo::count_hourly(&st.db, &by_login, i64::MAX, now).await?.ok();
            repo::count_hourly(&st.db, &by_ip, i64::MAX, now).await?.ok();
            Ok(Outcome::Wrong)
        }
    }
}
