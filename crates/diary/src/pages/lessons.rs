//! A lesson: its page, the teacher's changes and cancellation, and «Подключиться» to its room.

use super::link::start;
use super::tr;
use crate::audit::{Event, Record};
use crate::lessons::{self, LessonError};
use crate::repo::{self, Lesson, Purpose, Session, User};
use crate::views::{LessonPage, Nav};
use crate::{DiaryState, audit};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use edulink_web::forms::check_csrf;
use edulink_web::{AppError, StrictForm, StrictQuery, html, see_other};
use serde::Deserialize;

/// `GET /sferum/lessons/{id}`: «Подключиться» next to a distance lesson. Signs in to Сферум (SSO,
/// as «Сферум» does) and lands in the lesson's room, where Сферум checks the time window and records
/// attendance. Not linked yet: the connection page.
pub async fn join_lesson(
    State(st): State<DiaryState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    let lesson = seen_lesson(&st, &user, &id).await?;
    if !lesson.distance || lesson.cancelled {
        return Ok(see_other(&format!("/lessons/{}", lesson.id)));
    }
    match repo::link(&st.db, &user.id).await? {
        Some(link) => start(&st, &session, &user, Purpose::Join(lesson.id), Some(&link)).await,
        None => Ok(see_other("/sferum")),
    }
}

async fn render_lesson(
    st: &DiaryState,
    headers: &HeaderMap,
    session: &Session,
    user: &User,
    lesson: Lesson,
    error: Option<&'static str>,
    notice: Option<&'static str>,
) -> Result<Response, AppError> {
    let teacher = lessons::teaches(st, user, &lesson).await?;
    let (attendance, fresh) =
        if teacher && lesson.distance { lessons::attendance(st, &lesson).await? } else { (Vec::new(), true) };
    let linked = repo::link(&st.db, &user.id).await?.is_some();
    let (date, time) = lessons::msk_fields(lesson.starts_at);
    let now = st.now();
    let page = LessonPage {
        tr: tr(headers),
        nav: Nav::new(session, user, "home"),
        call_url: crate::sferum::call_url(st, &lesson),
        join_open: edulink_domain::sferum::JoinWindow::at(lesson.starts_at, lesson.ends_at, now).is_open(),
        lesson,
        teacher,
        linked,
        date,
        time,
        attendance,
        attendance_fresh: fresh,
        error,
        notice,
    };
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    Ok((status, html(&page)).into_response())
}

/// `GET /lessons/{id}`: a lesson; for its teacher, the distance-lesson settings and who joined.
pub async fn lesson_page(
    State(st): State<DiaryState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    StrictQuery(q): StrictQuery<LessonQuery>,
) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    let lesson = seen_lesson(&st, &user, &id).await?;
    // After the teacher's change: say it was saved (or the lesson is back).
    let notice = match q.done.as_deref() {
        Some("saved") => Some("lesson-saved"),
        Some("restored") => Some("lesson-restored"),
        _ => None,
    };
    render_lesson(&st, &headers, &session, &user, lesson, None, notice).await
}

/// Query of a lesson page: `done=saved|restored` after the teacher's change.
#[derive(Debug, Deserialize)]
pub struct LessonQuery {
    done: Option<String>,
}

/// The lesson `id` as `user` may see it: 404 when they may not (or it does not exist).
async fn seen_lesson(st: &DiaryState, user: &User, id: &str) -> Result<Lesson, AppError> {
    lessons::visible(st, user, id).await?.ok_or_else(AppError::not_found)
}

/// The lesson `id` for a change by `user`: 404 when they cannot see it, 403 when they do not teach it.
async fn taught_lesson(st: &DiaryState, user: &User, id: &str) -> Result<Lesson, AppError> {
    let lesson = seen_lesson(st, user, id).await?;
    if !lessons::teaches(st, user, &lesson).await? {
        return Err(AppError::forbidden("error-forbidden"));
    }
    Ok(lesson)
}

/// The teacher's lesson form.
#[derive(Debug, Deserialize)]
pub struct LessonForm {
    csrf: String,
    distance: Option<String>,
    call_url: String,
    date: String,
    time: String,
}

/// `POST /lessons/{id}`: the teacher marks the lesson as distance (or not), sets the call link,
/// moves it. Сферум hears of it through the outbox.
pub async fn lesson_submit(
    State(st): State<DiaryState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    StrictForm(form): StrictForm<LessonForm>,
) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    check_csrf(&session.csrf, &form.csrf)?;
    let lesson = taught_lesson(&st, &user, &id).await?;
    let applied = match lessons::parse_edit(&lesson, form.distance.is_some(), &form.call_url, &form.date, &form.time) {
        Ok(edit) => lessons::apply(&st, &lesson, &edit).await,
        Err(e) => Err(e.into()),
    };
    match applied {
        Ok(()) => {}
        Err(LessonError::Refused(e)) => {
            return render_lesson(&st, &headers, &session, &user, lesson, Some(e.key()), None).await;
        }
        Err(LessonError::Store(e)) => return Err(e.into()),
    }
    audit::TRAIL
        .record(&st.db, st.now(), &Record::new(Event::LessonChanged).principal(&user.id).detail(&lesson.id))
        .await;
    Ok(see_other(&format!("/lessons/{}?done=saved", lesson.id)))
}

/// The cancellation form: the teacher ticks that they mean it.
#[derive(Debug, Deserialize)]
pub struct CancelForm {
    csrf: String,
    confirm: Option<String>,
}

/// `POST /lessons/{id}/cancel`: the teacher cancels the lesson.
pub async fn lesson_cancel(
    State(st): State<DiaryState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    StrictForm(form): StrictForm<CancelForm>,
) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    check_csrf(&session.csrf, &form.csrf)?;
    if form.confirm.as_deref() != Some("yes") {
        return Err(AppError::bad_request("lesson-error-confirm"));
    }
    let lesson = taught_lesson(&st, &user, &id).await?;
    lessons::cancel(&st, &lesson).await?;
    audit::TRAIL
        .record(&st.db, st.now(), &Record::new(Event::LessonCancelled).principal(&user.id).detail(&lesson.id))
        .await;
    Ok(see_other(&format!("/lessons/{}", lesson.id)))
}

/// `POST /lessons/{id}/restore`: the teacher puts a cancelled lesson back.
pub async fn lesson_restore(
    State(st): State<DiaryState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    StrictForm(form): StrictForm<edulink_web::forms::CsrfForm>,
) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    check_csrf(&session.csrf, &form.csrf)?;
    let lesson = taught_lesson(&st, &user, &id).await?;
    lessons::restore(&st, &lesson).await?;
    audit::TRAIL
        .record(&st.db, st.now(), &Record::new(Event::LessonChanged).principal(&user.id).detail(&lesson.id))
        .await;
    Ok(see_other(&format!("/lessons/{}?done=restored", lesson.id)))
}
