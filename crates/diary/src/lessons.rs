//! Distance lessons on the diary's side: who may see and manage a lesson, a teacher's changes (mark
//! as distance, call link, move, cancel) with the push to Сферум written to the outbox in the same
//! transaction, the call link, and the attendance that comes back from Сферум.

use crate::DiaryState;
use crate::outbox::{self, Job};
use crate::repo::{self, Lesson, Role, User};
use crate::rp::RpError;
use edulink_domain::provisioning;
use edulink_store::{StoreError, sqlx};

/// Moscow time, where the diary's schools are (UTC+3, no daylight saving).
const MSK: i64 = 3 * 3600;

/// Whether `user` teaches the lesson's class (and so may change it and see its attendance).
pub async fn teaches(st: &DiaryState, user: &User, lesson: &Lesson) -> Result<bool, StoreError> {
    if user.role != Role::Teacher {
        return Ok(false);
    }
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM teacher_classes WHERE teacher_id = $1 AND class_id = $2")
        .bind(&user.id)
        .bind(&lesson.class_id)
        .fetch_one(st.db.pool())
        .await?;
    Ok(n > 0)
}

/// Whether `user` may see the lesson: a pupil of its class or a teacher of it.
pub async fn may_view(st: &DiaryState, user: &User, lesson: &Lesson) -> Result<bool, StoreError> {
    Ok(user.class_id.as_deref() == Some(lesson.class_id.as_str()) || teaches(st, user, lesson).await?)
}

/// A start time typed as a date and a time of day in Moscow, e.g. `2026-11-25` and `10:20`.
pub fn parse_msk(date: &str, hm: &str) -> Option<i64> {
    let d = time::Date::parse(date.trim(), time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    let t = time::Time::parse(hm.trim(), time::macros::format_description!("[hour]:[minute]")).ok()?;
    Some(time::PrimitiveDateTime::new(d, t).assume_utc().unix_timestamp() - MSK)
}

/// The date and time fields of an instant, in Moscow time.
pub fn msk_fields(ts: i64) -> (String, String) {
    let t = time::OffsetDateTime::from_unix_timestamp(ts + MSK).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    (format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()), format!("{:02}:{:02}", t.hour(), t.minute()))
}

/// What a teacher may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// A distance lesson.
    pub distance: bool,
    /// The conferencing link; `None` to use the school's own room address.
    pub call_url: Option<String>,
    /// New start (the duration stays).
    pub starts_at: i64,
}

/// Why an edit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// Not an `https://` link.
    #[error("the call link is not an https link")]
    CallUrl,
    /// Not a date and time.
    #[error("not a date and time")]
    When,
    /// The lesson is cancelled: it takes no more changes.
    #[error("the lesson is cancelled")]
    Cancelled,
}

impl EditError {
    /// The message id.
    pub fn key(self) -> &'static str {
        match self {
            EditError::CallUrl => "lesson-error-url",
            EditError::When => "lesson-error-when",
            EditError::Cancelled => "lesson-error-cancelled",
        }
    }
}

/// Why a teacher's change was not made.
#[derive(Debug, thiserror::Error)]
pub enum LessonError {
    /// The change is refused (the teacher is told why).
    #[error("change refused: {0}")]
    Refused(#[from] EditError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Parses the teacher's form for `lesson` at the edge. A cancelled lesson takes no edit, whatever
/// the form says.
pub fn parse_edit(lesson: &Lesson, distance: bool, call_url: &str, date: &str, hm: &str) -> Result<Edit, EditError> {
    if lesson.cancelled {
        return Err(EditError::Cancelled);
    }
    let call_url = match call_url.trim() {
        "" => None,
        u if provisioning::valid_teacher_call_url(u) => Some(u.to_owned()),
        _ => return Err(EditError::CallUrl),
    };
    let starts_at = parse_msk(date, hm).ok_or(EditError::When)?;
    Ok(Edit { distance, call_url, starts_at })
}

/// Applies a teacher's change: the lesson's revision grows, and when Сферум has (or should have) the
/// lesson, a push goes into the outbox in the same transaction, then is tried at once. A cancelled
/// lesson is refused.
pub async fn apply(st: &DiaryState, lesson: &Lesson, edit: &Edit) -> Result<(), LessonError> {
    if lesson.cancelled {
        return Err(EditError::Cancelled.into());
    }
    let ends_at = edit.starts_at + (lesson.ends_at - lesson.starts_at);
    let push = lesson.distance || edit.distance;
    change(st, lesson, push, |q| {
        q.bind(i64::from(edit.distance)).bind(edit.call_url.clone()).bind(edit.starts_at).bind(ends_at)
    }, "UPDATE lessons SET distance = $2, call_url = $3, starts_at = $4, ends_at = $5, revision = revision + 1 WHERE id = $1")
    .await?;
    Ok(())
}

/// Cancels the lesson (pushed to Сферум when it is a distance lesson).
pub async fn cancel(st: &DiaryState, lesson: &Lesson) -> Result<(), StoreError> {
    if lesson.cancelled {
        return Ok(());
    }
    change(
        st,
        lesson,
        lesson.distance,
        |q| q,
        "UPDATE lessons SET cancelled = 1, revision = revision + 1 WHERE id = $1",
    )
    .await
}

/// Puts a cancelled lesson back in the schedule (Сферум hears of it like of a new lesson).
pub async fn restore(st: &DiaryState, lesson: &Lesson) -> Result<(), StoreError> {
    if !lesson.cancelled {
        return Ok(());
    }
    change(
        st,
        lesson,
        lesson.distance,
        |q| q,
        "UPDATE lessons SET cancelled = 0, revision = revision + 1 WHERE id = $1",
    )
    .await
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

async fn change(
    st: &DiaryState,
    lesson: &Lesson,
    push: bool,
    bind: impl for<'q> FnOnce(Query<'q>) -> Query<'q>,
    sql: &'static str,
) -> Result<(), StoreError> {
    let now = st.now();
    let mut tx = st.db.begin().await?;
    bind(sqlx::query(sql).bind(&lesson.id)).execute(&mut tx).await?;
    let job = Job::Lesson { lesson_id: lesson.id.clone() };
    let id = if push { Some(outbox::enqueue_claimed(&mut tx, &st.lease, &job, now).await?) } else { None };
    tx.commit().await?;
    if let Some(id) = id {
        if let Err(e) = outbox::deliver_claimed(st, &id, &job).await {
            tracing::warn!(error = %e, "immediate lesson push failed; left to the outbox");
        }
        st.outbox_wake.notify_one();
    }
    Ok(())
}

/// An attendance row with the attendee's name.
#[derive(sqlx::FromRow)]
struct AttendeeRow {
    first_name: String,
    last_name: String,
    joined_at: i64,
}

/// One attendee as the teacher sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendee {
    /// Name.
    pub name: String,
    /// When they joined, Unix seconds.
    pub joined_at: i64,
}

/// Who joined the lesson: fetched from Сферум and kept (so the list stays when MAX is away).
/// Returns the list and whether it is fresh.
pub async fn attendance(st: &DiaryState, lesson: &Lesson) -> Result<(Vec<Attendee>, bool), StoreError> {
    let fresh = match st.rp.attendance(&lesson.id).await {
        Ok(list) => {
            let mut tx = st.db.begin().await?;
            for entry in list.attendance {
                sqlx::query(
                    "INSERT INTO attendance (lesson_id, user_id, joined_at) \
                     SELECT $1, user_id, $3 FROM links WHERE issuer = $4 AND subject = $2 \
                     ON CONFLICT (lesson_id, user_id) DO NOTHING",
                )
                .bind(&lesson.id)
                .bind(&entry.sub)
                .bind(entry.joined_at)
                .bind(st.rp.issuer())
                .execute(&mut tx)
                .await?;
            }
            tx.commit().await?;
            true
        }
        Err(RpError::Unavailable(e))
        | Err(RpError::Refused(e))
        | Err(RpError::Invalid(e))
        | Err(RpError::CodeRefused(e))
        | Err(RpError::Stale(e)) => {
            tracing::warn!(error = %e, "attendance not fetched; showing what the diary has");
            false
        }
    };
    let rows: Vec<AttendeeRow> = sqlx::query_as(
        "SELECT u.first_name, u.last_name, a.joined_at FROM attendance a JOIN users u ON u.id = a.user_id \
         WHERE a.lesson_id = $1 ORDER BY a.joined_at, u.last_name",
    )
    .bind(&lesson.id)
    .fetch_all(st.db.pool())
    .await?;
    let list = rows
        .into_iter()
        .map(|r| Attendee { name: format!("{} {}", r.first_name, r.last_name), joined_at: r.joined_at })
        .collect();
    Ok((list, fresh))
}

/// A lesson of the user's classes by id, if they may see it.
pub async fn visible(st: &DiaryState, user: &User, id: &str) -> Result<Option<Lesson>, StoreError> {
    match repo::lesson(&st.db, id).await? {
        Some(l) if may_view(st, user, &l).await? => Ok(Some(l)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moscow_times_round_trip() {
        let ts = parse_msk("2026-11-25", "10:20").unwrap();
        assert_eq!(ts, 1_795_591_200); // 07:20 UTC
        assert_eq!(msk_fields(ts), ("2026-11-25".to_string(), "10:20".to_string()));
        assert!(parse_msk("2026-13-01", "10:20").is_none());
        assert!(parse_msk("2026-11-25", "25:00").is_none());
    }

    fn lesson(cancelled: bool) -> Lesson {
        Lesson {
            id: "lesson-1".into(),
            class_id: "class-7a".into(),
            class_name: "7 А".into(),
            subject: "Алгебра".into(),
            teacher_id: "teacher-1".into(),
            teacher: "Ольга Сергеевна".into(),
            starts_at: 1_795_591_200,
            ends_at: 1_795_593_900,
            distance: false,
            call_url: None,
            cancelled,
            revision: 1,
        }
    }

    #[test]
    fn an_edit_takes_only_web_call_links() {
        let l = lesson(false);
        assert_eq!(parse_edit(&l, true, "javascript:alert(1)", "2026-11-25", "10:20"), Err(EditError::CallUrl));
        assert_eq!(parse_edit(&l, true, "https://", "2026-11-25", "10:20"), Err(EditError::CallUrl));
        // Issue 20: the form says https, and so does the server.
        assert_eq!(parse_edit(&l, true, "http://call.example/r/1", "2026-11-25", "10:20"), Err(EditError::CallUrl));
        assert_eq!(parse_edit(&l, true, "HTTP://call.example/r/1", "2026-11-25", "10:20"), Err(EditError::CallUrl));
        assert_eq!(parse_edit(&l, true, "", "25.11.2026", "10:20"), Err(EditError::When));
        let e = parse_edit(&l, true, " https://call.example/r/1 ", "2026-11-25", "10:20").unwrap();
        assert_eq!(e.call_url.as_deref(), Some("https://call.example/r/1"));
    }

    #[test]
    fn a_cancelled_lesson_takes_no_edit_before_its_form_is_read() {
        let l = lesson(true);
        assert_eq!(parse_edit(&l, true, "javascript:alert(1)", "2026-11-25", "10:20"), Err(EditError::Cancelled));
        assert_eq!(parse_edit(&l, false, "", "2026-11-25", "10:20"), Err(EditError::Cancelled));
    }
}
