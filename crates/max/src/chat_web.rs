//! Сферум's chats and lessons on the web: a chat page (history by cursor, member list, posting),
//! live delivery by Server-Sent Events, people search and direct conversations under safe mode, and
//! «Подключиться» to a distance lesson.

use crate::hub::{self, Event};
use crate::login::current;
use crate::repo::Session;
use crate::views::{self, ChatPage, LessonClosedPage, MessageView, PeoplePage};
use crate::{MaxState, repo};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use edulink_domain::Phone;
use edulink_domain::provisioning::Role;
use edulink_domain::sferum::{JoinWindow, MessageError, MessageText, can_post};
use edulink_sferum::{Author, ChatAccess, Denied, Message, MessageKind};
use edulink_web::forms::{CsrfForm, check_csrf};
use edulink_web::{AppError, Lang, StrictForm, StrictQuery, Tr, html, see_other};
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;

/// Messages per history page.
const PAGE: i64 = 30;

async fn signed_in(st: &MaxState, headers: &HeaderMap) -> Result<Option<(Session, String)>, AppError> {
    Ok(current(st, headers).await?.and_then(|s| s.account_id.clone().map(|a| (s, a))))
}

/// The chat as `account_id` may reach it: 404 for no such chat, 403 for a non-member (or a former
/// member: after unlinking nothing of the chat is readable).
async fn reach(st: &MaxState, chat_id: &str, account_id: &str) -> Result<ChatAccess, AppError> {
    match edulink_sferum::access(&st.db, &st.sferum_directory(), chat_id, account_id).await? {
        Ok(a) => Ok(a),
        Err(Denied::NotFound) => Err(AppError::not_found()),
        Err(Denied::NotMember) => Err(AppError::forbidden("error-not-member")),
    }
}

/// A message as the reader `me` sees it, in their language.
pub fn view(tr: &Tr, m: &Message, me: &str) -> MessageView {
    let (author, mine, teacher, former) = match &m.author {
        Author::Member { name, role, account_id } => {
            (name.clone(), account_id == me, *role == Some(Role::Teacher), false)
        }
        Author::Former => (tr.t("chat-former-member"), false, false, true),
        Author::System => (tr.t("chat-system"), false, false, false),
    };
    let system = m.kind != MessageKind::Text;
    let text = match (m.kind, m.at_ref) {
        (MessageKind::Text, _) => m.body.clone(),
        (kind, Some(at)) => tr.t2(
            &format!("chat-{}", kind.as_str().replace('_', "-")),
            ("subject", &m.body),
            ("when", &views::when(at)),
        ),
        _ => m.body.clone(),
    };
    MessageView { id: m.id, author, mine, teacher, former, system, text, at: views::when(m.created_at) }
}

/// `?before=` of a history page.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    before: Option<i64>,
}

/// `GET /sferum/chats/{id}`: the newest messages (or an older page), the member list, the composer.
pub async fn chat(
    State(st): State<MaxState>,
    headers: HeaderMap,
    Path(chat_id): Path<String>,
    StrictQuery(q): StrictQuery<HistoryQuery>,
) -> Result<Response, AppError> {
    let Some((session, me)) = signed_in(&st, &headers).await? else {
        return Ok(see_other("/login"));
    };
    let access = reach(&st, &chat_id, &me).await?;
    let tr = Tr::new(Lang::from_headers(&headers));
    // One row more than a page tells whether there is an older page, without another query.
    let mut messages = edulink_sferum::history(&st.db, &st.sferum_directory(), &chat_id, q.before, PAGE + 1).await?;
    let older = if messages.len() as i64 > PAGE {
        messages.remove(0);
        messages.first().map(|m| m.id)
    } else {
        None
    };
    let newer = match (q.before, messages.last()) {
        (Some(_), Some(last)) if edulink_sferum::last_id(&st.db, &chat_id).await? > last.id => Some(last.id + PAGE + 1),
        _ => None,
    };
    let lesson = edulink_sferum::lesson_of_chat(&st.db, &chat_id, &me).await?;
    let now = st.now();
    let members = edulink_sferum::members(&st.db, &st.sferum_directory(), &chat_id).await?;
    Ok(html(&ChatPage {
        csrf: session.csrf,
        can_post: access.role.is_none_or(|r| can_post(access.kind.as_str(), r)),
        live: q.before.is_none(),
        after: messages.last().map(|m| m.id).unwrap_or(0),
        messages: messages.iter().map(|m| view(&tr, m, &me)).collect(),
        older,
        newer,
        lesson_open: lesson
            .as_ref()
            .is_some_and(|l| !l.cancelled && !l.in_class && JoinWindow::at(l.starts_at, l.ends_at, now).is_open()),
        lesson,
        members,
        access,
        tr,
    }))
}

/// The composer.
#[derive(Debug, Deserialize)]
pub struct PostForm {
    csrf: String,
    text: String,
}

/// `POST /sferum/chats/{id}/messages`: post a text message.
pub async fn post(
    State(st): State<MaxState>,
    headers: HeaderMap,
    Path(chat_id): Path<String>,
    StrictForm(form): StrictForm<PostForm>,
) -> Result<Response, AppError> {
    let Some((session, me)) = signed_in(&st, &headers).await? else {
        return Ok(see_other("/login"));
    };
    check_csrf(&session.csrf, &form.csrf)?;
    let access = reach(&st, &chat_id, &me).await?;
    if !access.role.is_none_or(|r| can_post(access.kind.as_str(), r)) {
        return Err(AppError::forbidden("error-announcements-readonly"));
    }
    let now = st.now();
    if let Err(wait) =
        edulink_store::count_in_window(&st.db, &format!("chat:{me}"), 60, crate::limits::MESSAGES_PER_MINUTE, now)
            .await?
    {
        return Err(AppError::too_many("error-chat-flood", wait));
    }
    let text = MessageText::parse(&form.text).map_err(|e| match e {
        MessageError::Empty => AppError::bad_request("error-message-empty"),
        MessageError::TooLong => AppError::bad_request("error-message-too-long"),
    })?;
    edulink_sferum::post(&st.db, &chat_id, &me, &text, now).await?;
    metrics::counter!("edulink_chat_messages_total").increment(1);
    st.hub.publish(Event::Posted(chat_id.as_str().into()));
    Ok(see_other(&format!("/sferum/chats/{chat_id}#composer")))
}

/// `?after=` of the live stream (the `Last-Event-ID` header wins when the browser reconnects).
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    after: Option<i64>,
}

struct Live {
    st: MaxState,
    tr: Tr,
    chat_id: String,
    me: String,
    session: String,
    after: i64,
    rx: tokio::sync::broadcast::Receiver<Event>,
    queue: VecDeque<sse::Event>,
    ended: bool,
}

impl Live {
    /// Still allowed to read: the session is alive and the account is a member.
    async fn allowed(&self) -> bool {
        let session_alive = repo::session_alive(&self.st.db, &self.session).await.unwrap_or(false);
        session_alive
            && matches!(
                edulink_sferum::access(&self.st.db, &self.st.sferum_directory(), &self.chat_id, &self.me).await,
                Ok(Ok(_))
            )
    }

    async fn refill(&mut self) {
        if let Ok(new) =
            edulink_sferum::since(&self.st.db, &self.st.sferum_directory(), &self.chat_id, self.after, 100).await
        {
            for m in new {
                self.after = m.id;
                let v = view(&self.tr, &m, &self.me);
                let data = serde_json::json!({
                    "id": v.id, "author": v.author, "mine": v.mine, "teacher": v.teacher, "former": v.former,
                    "system": v.system, "text": v.text, "at": v.at,
                });
                self.queue.push_back(sse::Event::default().id(m.id.to_string()).data(data.to_string()));
            }
        }
    }

    /// Waits for something relevant: a post to this chat, this account leaving, or the poll tick.
    async fn wait(&mut self) {
        let tick = tokio::time::sleep(hub::POLL);
        tokio::pin!(tick);
        loop {
            tokio::select! {
                _ = &mut tick => return,
                ev = self.rx.recv() => match ev {
                    Ok(Event::Posted(c)) if *c == *self.chat_id => return,
                    Ok(Event::Left(a)) if *a == *self.me => return,
                    Ok(Event::Shutdown) => return,
                    Ok(_) => continue,
                    // Missed events or a closed hub: re-read the database.
                    Err(_) => return,
                },
            }
        }
    }
}

/// `GET /sferum/chats/{id}/events`: new messages as Server-Sent Events. The stream ends (with an
/// `end` event) as soon as the account is no longer a member or its session ends.
pub async fn events(
    State(st): State<MaxState>,
    headers: HeaderMap,
    Path(chat_id): Path<String>,
    StrictQuery(q): StrictQuery<EventsQuery>,
) -> Result<Response, AppError> {
    let Some((session, me)) = signed_in(&st, &headers).await? else {
        return Err(AppError::new(edulink_web::ErrorKind::Unauthorized, "error-unauthorized"));
    };
    reach(&st, &chat_id, &me).await?;
    let last_event = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i64>().ok());
    let after = match last_event.or(q.after) {
        Some(a) => a.max(0),
        None => edulink_sferum::last_id(&st.db, &chat_id).await?,
    };
    let live = Live {
        rx: st.hub.subscribe(),
        tr: Tr::new(Lang::from_headers(&headers)),
        st,
        chat_id,
        me,
        session: session.id_hash,
        after,
        queue: VecDeque::new(),
        ended: false,
    };
    metrics::gauge!("edulink_chat_streams").increment(1.0);
    let stream = futures_util::stream::unfold(live, |mut live| async move {
        loop {
            if let Some(ev) = live.queue.pop_front() {
                return Some((Ok::<_, Infallible>(ev), live));
            }
            if live.ended || live.st.hub.stopping() {
                metrics::gauge!("edulink_chat_streams").decrement(1.0);
                return None;
            }
            if !live.allowed().await {
                live.ended = true;
                live.queue.push_back(sse::Event::default().event("end").data("left"));
                continue;
            }
            live.refill().await;
            if live.queue.is_empty() {
                live.wait().await;
            }
        }
    });
    let mut resp = Sse::new(stream).keep_alive(KeepAlive::default()).into_response();
    // Proxies must not buffer the stream.
    resp.headers_mut().insert("x-accel-buffering", axum::http::HeaderValue::from_static("no"));
    Ok(resp)
}

/// `GET /sferum/people`: the search form.
pub async fn people(State(st): State<MaxState>, headers: HeaderMap) -> Result<Response, AppError> {
    let Some((session, _)) = signed_in(&st, &headers).await? else {
        return Ok(see_other("/login"));
    };
    Ok(html(&PeoplePage {
        tr: Tr::new(Lang::from_headers(&headers)),
        csrf: session.csrf,
        query: String::new(),
        searched: None,
        found: Vec::new(),
    }))
}

/// The search box: a phone number or a name.
#[derive(Debug, Deserialize)]
pub struct SearchForm {
    csrf: String,
    q: String,
}

/// `POST /sferum/people`: find people by phone or by name; safe mode decides who appears. A POST so
/// that a phone number never sits in a URL (history, logs, Referer); a phone is echoed only masked.
pub async fn search(
    State(st): State<MaxState>,
    headers: HeaderMap,
    StrictForm(form): StrictForm<SearchForm>,
) -> Result<Response, AppError> {
    let Some((session, me)) = signed_in(&st, &headers).await? else {
        return Ok(see_other("/login"));
    };
    check_csrf(&session.csrf, &form.csrf)?;
    let query = form.q.chars().take(100).collect::<String>().trim().to_owned();
    if !query.is_empty() {
        let bucket = format!("search:{me}");
        if let Err(wait) =
            edulink_store::count_in_window(&st.db, &bucket, 3600, crate::limits::SEARCHES_PER_HOUR, st.now()).await?
        {
            return Err(AppError::too_many("error-search-flood", wait));
        }
    }
    let (found, query, searched) = if query.is_empty() {
        (Vec::new(), String::new(), None)
    } else if let Ok(phone) = Phone::parse(&query, &st.cfg.default_region, &st.cfg.allowed_countries) {
        let hash = st.secrets.phone_hash.keyed_hash("phone", phone.e164());
        let found = match repo::account_by_phone(st.db.pool(), &hash).await? {
            Some(a) if a.id != me => edulink_sferum::find_account(&st.db, &me, &a.id).await?.into_iter().collect(),
            _ => Vec::new(),
        };
        (found, String::new(), Some(phone.masked().replace(' ', "\u{a0}")))
    } else {
        let found = edulink_sferum::search_by_name(&st.db, &me, &query).await?;
        (found, query.clone(), Some(query))
    };
    metrics::counter!("edulink_people_searches_total").increment(1);
    Ok(html(&PeoplePage { tr: Tr::new(Lang::from_headers(&headers)), csrf: session.csrf, query, searched, found }))
}

/// `POST /sferum/people/{account}/message`: open the direct conversation, if safe mode allows it.
pub async fn message_person(
    State(st): State<MaxState>,
    headers: HeaderMap,
    Path(target): Path<String>,
    StrictForm(form): StrictForm<CsrfForm>,
) -> Result<Response, AppError> {
    let Some((session, me)) = signed_in(&st, &headers).await? else {
        return Ok(see_other("/login"));
    };
    check_csrf(&session.csrf, &form.csrf)?;
    match edulink_sferum::open_direct(&st.db, &st.sferum_directory(), &me, &target, st.now()).await? {
        Some(chat_id) => Ok(see_other(&format!("/sferum/chats/{chat_id}"))),
        None => {
            metrics::counter!("edulink_safe_mode_refusals_total").increment(1);
            Err(AppError::forbidden("error-cannot-message"))
        }
    }
}

/// `GET /sferum/lessons/{client}/{lesson}/join`: «Подключиться». Open from 10 minutes before the
/// start to the end: records attendance (the first join counts) and lands in the lesson room.
///
/// A GET, like a conference's join link, so that the diary's one click can end here after signing
/// in; it only ever records the signed-in member's own attendance, within the window, and a
/// browser's speculative prefetch records nothing.
pub async fn join(
    State(st): State<MaxState>,
    headers: HeaderMap,
    Path((client_id, lesson_id)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let Some((_, me)) = signed_in(&st, &headers).await? else {
        return Ok(see_other("/login"));
    };
    let key = edulink_sferum::key(&client_id, &lesson_id);
    let Some((lesson, member)) = edulink_sferum::lesson_for(&st.db, &key, &me).await? else {
        return Err(AppError::not_found());
    };
    if !member {
        return Err(AppError::forbidden("error-not-member"));
    }
    let tr = Tr::new(Lang::from_headers(&headers));
    let closed = |message: String| {
        (StatusCode::FORBIDDEN, html(&LessonClosedPage { message, lesson: lesson.clone(), tr: tr.clone() }))
            .into_response()
    };
    if lesson.cancelled {
        return Ok(closed(tr.t("lesson-cancelled")));
    }
    if lesson.in_class {
        return Ok(closed(tr.t("lesson-in-class")));
    }
    match JoinWindow::at(lesson.starts_at, lesson.ends_at, st.now()) {
        JoinWindow::NotYet { opens_at } => return Ok(closed(tr.t1("lesson-not-yet", "time", views::when(opens_at)))),
        JoinWindow::Over => return Ok(closed(tr.t("lesson-over"))),
        JoinWindow::Open => {}
    }
    let prefetch = ["sec-purpose", "purpose"]
        .iter()
        .any(|h| headers.get(*h).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("prefetch")));
    if prefetch {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    if edulink_sferum::record_attendance(&st.db, &key, &me, st.now()).await? {
        metrics::counter!("edulink_lesson_joins_total").increment(1);
    }
    let chat = lesson.chat_id.ok_or_else(|| AppError::internal("lesson without chat"))?;
    Ok(see_other(&format!("/sferum/chats/{chat}")))
}
