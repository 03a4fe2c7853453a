//! The diary's page templates and static assets.

use crate::repo::{Lesson, Session, User};
use askama::Template;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use edulink_web::Tr;

/// Moscow time (UTC+3, no daylight saving): the diary's schools are there.
fn msk(ts: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(ts).unwrap_or(time::OffsetDateTime::UNIX_EPOCH) + time::Duration::hours(3)
}

/// A date and time for people.
pub fn when(ts: impl std::borrow::Borrow<i64>) -> String {
    let t = msk(*ts.borrow());
    format!("{:02}.{:02}.{} {:02}:{:02}", t.day(), u8::from(t.month()), t.year(), t.hour(), t.minute())
}

/// Hours and minutes.
pub fn hm(ts: impl std::borrow::Borrow<i64>) -> String {
    let t = msk(*ts.borrow());
    format!("{:02}:{:02}", t.hour(), t.minute())
}

/// The navigation panel's state.
pub struct Nav {
    /// CSRF token for the logout form.
    pub csrf: String,
    /// The person's name.
    pub name: String,
    /// Which item is current.
    pub current: &'static str,
}

impl Nav {
    /// For a signed-in page.
    pub fn new(session: &Session, user: &User, current: &'static str) -> Self {
        Self { csrf: session.csrf.clone(), name: format!("{} {}", user.first_name, user.last_name), current }
    }
}

/// One day of the schedule.
pub struct Day {
    /// Date label (dd.mm).
    pub date: String,
    /// Weekday index 0 = Monday.
    pub weekday: u8,
    /// Lessons.
    pub lessons: Vec<Lesson>,
}

/// Groups lessons (already in time order) by Moscow date.
pub fn group_by_day(lessons: &[Lesson]) -> Vec<Day> {
    let mut days: Vec<Day> = Vec::new();
    for l in lessons {
        let t = msk(l.starts_at);
        let date = format!("{:02}.{:02}", t.day(), u8::from(t.month()));
        match days.last_mut() {
            Some(d) if d.date == date => d.lessons.push(l.clone()),
            _ => days.push(Day { date, weekday: t.weekday().number_days_from_monday(), lessons: vec![l.clone()] }),
        }
    }
    days
}

/// A link as the security tab shows it.
pub struct LinkView {
    /// The linked account's id (the subject MAX gave this diary).
    pub id: String,
    /// When.
    pub linked_at: String,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub tr: Tr,
    pub csrf: String,
    pub login: String,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage {
    pub tr: Tr,
    pub nav: Nav,
    pub days: Vec<Day>,
    pub linked: bool,
    pub now: i64,
}

#[derive(Template)]
#[template(path = "lesson.html")]
pub struct LessonPage {
    pub tr: Tr,
    pub nav: Nav,
    pub lesson: crate::repo::Lesson,
    pub teacher: bool,
    pub linked: bool,
    pub join_open: bool,
    pub call_url: String,
    pub date: String,
    pub time: String,
    pub attendance: Vec<crate::lessons::Attendee>,
    pub attendance_fresh: bool,
    pub error: Option<&'static str>,
    /// A calm note after the teacher's change (a message id).
    pub notice: Option<&'static str>,
}

/// «Подключиться» is open for the lesson now.
pub fn join_open(l: &crate::repo::Lesson, now: &i64) -> bool {
    l.distance && !l.cancelled && edulink_domain::sferum::JoinWindow::at(l.starts_at, l.ends_at, *now).is_open()
}

#[derive(Template)]
#[template(path = "connect.html")]
pub struct ConnectPage {
    pub tr: Tr,
    pub nav: Nav,
    /// A calm note (the link was cancelled at MAX).
    pub notice: Option<String>,
}

#[derive(Template)]
#[template(path = "linked.html")]
pub struct LinkedPage {
    pub tr: Tr,
    pub nav: Nav,
}

#[derive(Template)]
#[template(path = "problem.html")]
pub struct ProblemPage {
    pub tr: Tr,
    pub message: String,
}

#[derive(Template)]
#[template(path = "handoff.html")]
pub struct HandoffPage {
    pub tr: Tr,
    pub name: String,
    pub login: String,
    pub ticket: String,
}

#[derive(Template)]
#[template(path = "passport.html")]
pub struct PassportPage {
    pub tr: Tr,
    pub nav: Nav,
    pub user: User,
    pub school: String,
    pub classes: String,
}

#[derive(Template)]
#[template(path = "security.html")]
pub struct SecurityPage {
    pub tr: Tr,
    pub nav: Nav,
    pub link: Option<LinkView>,
    pub history: Vec<(String, String)>,
    pub notice: Option<String>,
    pub error: Option<String>,
    pub needs_password: bool,
}

#[derive(Template)]
#[template(path = "unlink.html")]
pub struct UnlinkPage {
    pub tr: Tr,
    pub nav: Nav,
    pub needs_password: bool,
    pub error: Option<String>,
}

/// `GET /static/diary.css`.
pub async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")],
        include_str!("../static/diary.css"),
    )
        .into_response()
}

/// `GET /static/app.js`.
pub async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")],
        include_str!("../../web/static/app.js"),
    )
        .into_response()
}

/// Message id of a weekday (0 = Monday).
pub fn weekday_key(d: impl std::borrow::Borrow<u8>) -> &'static str {
    ["day-mon", "day-tue", "day-wed", "day-thu", "day-fri", "day-sat", "day-sun"][usize::from(*d.borrow() % 7)]
}

/// Message id of a security event.
pub fn event_key(e: &str) -> &'static str {
    match e {
        "link" => "event-link",
        "unlink" => "event-unlink",
        "link_conflict" => "event-link-conflict",
        _ => "event-login",
    }
}

/// Whether the schedule holds a distance lesson that still takes place (for the hint to link
/// Сферум when the student is not linked yet).
pub fn any_distance(days: &[Day]) -> bool {
    days.iter().flat_map(|d| d.lessons.iter()).any(|l| l.distance && !l.cancelled)
}
