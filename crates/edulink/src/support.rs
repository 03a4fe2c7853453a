//! `edulink admin trace`: one student's journey across both parties' audit trails, in local time,
//! each step with its outcome and, when refused, the reason and what to do.
//!
//! Each party reads its own trail (`edulink_diary::audit::journey`, `edulink_max::audit::journey`);
//! they join on the link's pairwise subject, the only id both know.

use std::fmt::Write;

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It happened.
    Done,
    /// A rule refused it (a limit, a wrong code, a conflict).
    Refused,
    /// Something failed (a gateway, a call between the parties).
    Failed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Done => "ok",
            Outcome::Refused => "REFUSED",
            Outcome::Failed => "FAILED",
        }
    }
}

/// Which party recorded a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The diary (МЭШ).
    Diary,
    /// MAX.
    Max,
}

/// One step of a journey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// When, Unix seconds.
    pub at: i64,
    /// Who recorded it.
    pub party: Party,
    /// The stored event name.
    pub event: String,
    /// The record's detail (a limit, a channel, the operator).
    pub detail: Option<String>,
}

/// What a step means for support: a description, its outcome, and for a refusal or failure what to
/// do about it.
pub fn explain(event: &str, detail: Option<&str>) -> (&'static str, Outcome, Option<&'static str>) {
    use Outcome::*;
    match event {
        "login" => ("signed in to the diary", Done, None),
        "link" => ("linked to Сферум (callback accepted)", Done, None),
        "link_conflict" => (
            "link refused: one side is already linked",
            Refused,
            Some(
                "the MAX account is linked to another diary login, or this login to another MAX account: \
                 unlink the other one (edulink admin unlink) or have the student use the linked account",
            ),
        ),
        "unlink" => ("unlinked", Done, None),
        "callback_bad_state" => (
            "MAX's answer did not match this browser's session",
            Refused,
            Some("an old tab, another browser, or more than 10 minutes: start again from «Сферум» in one browser"),
        ),
        "callback_bad_iss" => (
            "MAX's answer came from another issuer",
            Refused,
            Some("check diary.max_issuer against MAX's public URL; an attack is possible"),
        ),
        "callback_invalid" => (
            "MAX's answer failed validation (code or ID token)",
            Refused,
            Some("check the clocks of both servers and the client secret (edulink config check); then retry"),
        ),
        "provisioning_failed" => (
            "school data not delivered to Сферум",
            Failed,
            Some("the outbox retries; if it stays, check MAX's /readyz and edulink_outbox_oldest_age_seconds"),
        ),
        "revocation_failed" => (
            "tokens not revoked at MAX yet",
            Failed,
            Some("the outbox retries; if it stays, check MAX's /readyz and edulink_outbox_oldest_age_seconds"),
        ),
        "lesson_changed" => ("a teacher changed a lesson", Done, None),
        "lesson_cancelled" => ("a teacher cancelled a lesson", Done, None),
        "sms_sent" => ("SMS code sent", Done, None),
        "sms_refused" => ("SMS not sent: a limit refused it", Refused, Some(sms_advice(detail))),
        "sms_failed" => (
            "SMS gateway did not take the message",
            Failed,
            Some("check the SMS provider (max.sms.url) and its balance; the student can resend"),
        ),
        "param_pollution" => ("a form came with a repeated field", Refused, Some("a broken client or an attack")),
        "code_wrong" => ("wrong code entered", Refused, Some("the student retries with the last SMS's code")),
        "phone_locked" => (
            "phone locked after wrong codes",
            Refused,
            Some("wait for the lock to end (max.codes); do not unlock by hand unless the student is verified"),
        ),
        "code_dead" => ("code used up by wrong tries", Refused, Some("the student asks for a new code")),
        "code_verified" => ("code verified", Done, None),
        "sign_in" => ("signed in to MAX", Done, None),
        "register" => ("MAX account registered", Done, None),
        "authorize" => ("consent given, code issued to the diary", Done, None),
        "hint_ignored" => ("a stale sign-in hint was ignored", Done, None),
        "code_replay" => (
            "an authorization code was used twice: its tokens revoked",
            Refused,
            Some("a replay or a double submit; if it repeats, look at the diary's logs by trace_id"),
        ),
        "refresh_reuse" => (
            "a used refresh token came back: its family revoked",
            Refused,
            Some("a stolen token or a diary bug; the student links again if Сферум sign-in fails"),
        ),
        "token_revoked" => ("a token was revoked", Done, None),
        "sferum_attached" => ("school data attached in Сферум (provisioned)", Done, None),
        "sferum_detached" => ("Сферум profile detached", Done, None),
        _ => ("(unknown event)", Done, None),
    }
}

fn sms_advice(reason: Option<&str>) -> &'static str {
    match reason {
        Some("locked") => "the phone is locked after wrong codes: wait for the lock to end",
        Some("too_soon") => "a resend came before the pause between codes: wait a minute",
        Some("phone_budget") => "the number's daily SMS budget is spent: retry tomorrow",
        Some("ip_budget") => {
            "many sends from this network (a school behind one address?): retry later or from another \
             network; raise max.limits for a school's address range"
        }
        Some("global_budget") => {
            "the service-wide SMS budget is spent: look for SMS pumping (edulink_sms_conversion_ratio) \
             before raising max.limits"
        }
        _ => "see edulink_sms_refused_total by reason",
    }
}

/// The order of a journey's events, for steps recorded in the same second (the trails keep whole
/// seconds, and a link takes less than one).
const JOURNEY_ORDER: &[&str] = &[
    "login",
    "sms_refused",
    "sms_failed",
    "sms_sent",
    "param_pollution",
    "code_wrong",
    "phone_locked",
    "code_dead",
    "code_verified",
    "sign_in",
    "register",
    "hint_ignored",
    "authorize",
    "code_replay",
    "callback_bad_state",
    "callback_bad_iss",
    "callback_invalid",
    "link_conflict",
    "link",
    "provisioning_failed",
    "sferum_attached",
    "unlink",
    "sferum_detached",
    "revocation_failed",
    "token_revoked",
    "refresh_reuse",
];

/// Both trails as one timeline, oldest first; within a second, in the journey's order.
pub fn timeline(mut steps: Vec<Step>) -> Vec<Step> {
    let rank = |e: &str| JOURNEY_ORDER.iter().position(|x| *x == e).unwrap_or(JOURNEY_ORDER.len());
    steps.sort_by_key(|s| (s.at, rank(&s.event)));
    steps
}

/// The timeline as text, one line per step, in the machine's local time.
pub fn render(login: &str, steps: &[Step]) -> String {
    let mut out = format!("journey of {login} ({} steps, local time)\n", steps.len());
    for s in steps {
        let party = match s.party {
            Party::Diary => "diary",
            Party::Max => "MAX  ",
        };
        let (what, outcome, advice) = explain(&s.event, s.detail.as_deref());
        let _ = write!(out, "{}  {party}  {:<7}  {what} [{}]", local_time(s.at), outcome.label(), s.event);
        if let Some(d) = &s.detail {
            let _ = write!(out, " ({d})");
        }
        out.push('\n');
        if let Some(a) = advice.filter(|_| outcome != Outcome::Done) {
            let _ = writeln!(out, "{:21}→ what to do: {a}", "");
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS ±HHMM` in the process's local time zone (`TZ`, else /etc/localtime).
pub fn local_time(at: i64) -> String {
    // SAFETY: localtime_r writes only into `tm`, which lives on this stack; `t` is a valid time_t.
    let (tm, ok) = unsafe {
        let t: libc::time_t = at as libc::time_t;
        let mut tm: libc::tm = std::mem::zeroed();
        let ok = !libc::localtime_r(&t, &mut tm).is_null();
        (tm, ok)
    };
    if !ok {
        return format!("@{at}");
    }
    let off = tm.tm_gmtoff / 60;
    let sign = if off < 0 { '-' } else { '+' };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {sign}{:02}{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        off.abs() / 60,
        off.abs() % 60
    )
}

/// `--since`: a duration back from `now` (`90m`, `6h`, `7d`) or a date `YYYY-MM-DD` (UTC midnight).
pub fn parse_since(v: &str, now: i64) -> Result<i64, String> {
    let v = v.trim();
    let unit = |c: char| match c {
        's' => Some(1),
        'm' => Some(60),
        'h' => Some(3600),
        'd' => Some(86_400),
        _ => None,
    };
    if let Some(last) = v.chars().last()
        && let Some(mult) = unit(last)
        && let Ok(n) = v[..v.len() - 1].parse::<i64>()
        && n >= 0
    {
        return Ok(now - n * mult);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(v, &fmt)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .map_err(|_| format!("--since {v:?}: a duration (90m, 6h, 7d) or a date (2026-12-01)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_dates() {
        assert_eq!(parse_since("90m", 10_000), Ok(10_000 - 5400));
        assert_eq!(parse_since("2d", 200_000), Ok(200_000 - 172_800));
        assert_eq!(parse_since("2026-12-01", 0), Ok(1_796_083_200));
        assert!(parse_since("yesterday", 0).is_err());
        assert!(parse_since("-5h", 0).is_err());
    }

    #[test]
    fn refusals_say_why_and_what_to_do() {
        let steps = timeline(vec![
            Step { at: 20, party: Party::Max, event: "sms_refused".into(), detail: Some("ip_budget".into()) },
            Step { at: 10, party: Party::Diary, event: "login".into(), detail: None },
        ]);
        assert_eq!(steps[0].event, "login");
        let text = render("student1", &steps);
        assert!(text.contains("REFUSED") && text.contains("(ip_budget)"), "{text}");
        assert!(text.contains("what to do: many sends from this network"), "{text}");
        assert_eq!(text.lines().count(), 4, "{text}");
        // Every event both parties record has an explanation.
        for e in [
            "login",
            "link",
            "link_conflict",
            "unlink",
            "sms_sent",
            "sms_refused",
            "code_wrong",
            "phone_locked",
            "code_verified",
            "register",
            "authorize",
            "sferum_attached",
            "sferum_detached",
            "token_revoked",
        ] {
            assert_ne!(explain(e, None).0, "(unknown event)", "{e}");
        }
    }

    #[test]
    fn local_time_has_an_offset() {
        let t = local_time(0);
        assert!(t.starts_with("1970-01-01") || t.starts_with("1969-12-31"), "{t}");
        assert!(t.ends_with(|c: char| c.is_ascii_digit()) && (t.contains(" +") || t.contains(" -")), "{t}");
    }
}
