//! «Мой паспорт»: personal data, and «Безопасность» with the link, its history and unlinking.

use super::{SESSION_COOKIE, set_cookie, tr};
use crate::links::{self, Actor, Removed};
use crate::repo::{self, Session, User};
use crate::views::{self, LinkView, Nav, PassportPage, SecurityPage, UnlinkPage};
use crate::{DiaryState, audit, passwords};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use edulink_web::forms::check_csrf;
use edulink_web::{AppError, ClientIp, StrictForm, StrictQuery, html, see_other};
use serde::Deserialize;

/// `GET /passport`: «Мой паспорт», personal data tab.
pub async fn passport(State(st): State<DiaryState>, headers: HeaderMap) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    let school = repo::school_name(&st.db, &user.school_id).await?;
    let classes = repo::classes_of(&st.db, &user).await?.into_iter().map(|(_, n)| n).collect::<Vec<_>>().join(", ");
    Ok(html(&PassportPage { tr: tr(&headers), nav: Nav::new(&session, &user, "passport"), school, classes, user }))
}

/// Query of the security tab.
#[derive(Debug, Deserialize)]
pub struct SecurityQuery {
    done: Option<String>,
}

async fn security_page(
    st: &DiaryState,
    headers: &HeaderMap,
    session: &Session,
    user: &User,
    notice: Option<String>,
    error: Option<String>,
) -> Result<Response, AppError> {
    let link = repo::link(&st.db, &user.id).await?;
    let history = audit::history(&st.db, &user.id).await?;
    Ok(html(&SecurityPage {
        tr: tr(headers),
        nav: Nav::new(session, user, "passport"),
        link: link.map(|l| LinkView { id: l.subject, linked_at: views::when(l.linked_at) }),
        history: history.into_iter().map(|e| (e.event, views::when(e.at))).collect(),
        notice,
        error,
        needs_password: st.now() - session.auth_at > st.cfg.reauth_secs,
    }))
}

/// `GET /passport/security`: «Безопасность» — the link status, the linked id, ✕ and the dialog.
pub async fn security(
    State(st): State<DiaryState>,
    headers: HeaderMap,
    StrictQuery(q): StrictQuery<SecurityQuery>,
) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    let notice = (q.done.as_deref() == Some("unlinked")).then(|| tr(&headers).t("security-unlinked"));
    security_page(&st, &headers, &session, &user, notice, None).await
}

/// `GET /passport/security/unlink`: the confirmation, as a page (without JavaScript).
pub async fn unlink_page(State(st): State<DiaryState>, headers: HeaderMap) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    if repo::link(&st.db, &user.id).await?.is_none() {
        return Ok(see_other("/passport/security"));
    }
    let needs_password = st.now() - session.auth_at > st.cfg.reauth_secs;
    Ok(html(&UnlinkPage { tr: tr(&headers), nav: Nav::new(&session, &user, "passport"), needs_password, error: None }))
}

/// The unlink form.
#[derive(Debug, Deserialize)]
pub struct UnlinkForm {
    csrf: String,
    #[serde(default)]
    password: Option<String>,
}

/// `POST /passport/security/unlink`: «Отвязать». The link goes at once; detaching at Сферум and
/// revoking the tokens at MAX go through the outbox in the same transaction, so they cannot be lost.
pub async fn unlink_submit(
    State(st): State<DiaryState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    StrictForm(form): StrictForm<UnlinkForm>,
) -> Result<Response, AppError> {
    let (session, user) = signed_in!(st, headers);
    check_csrf(&session.csrf, &form.csrf)?;
    let now = st.now();
    let mut cookie = None;
    if now - session.auth_at > st.cfg.reauth_secs {
        // A recent sign-in is required: the password again.
        let hash = repo::user_by_login(&st.db, &user.login).await?.map(|(_, h)| h);
        let ok = passwords::verify(form.password.unwrap_or_default(), hash, st.cfg.password_cost).await;
        if !ok {
            let tr = tr(&headers);
            let page = UnlinkPage {
                error: Some(tr.t("error-reauth")),
                tr,
                nav: Nav::new(&session, &user, "passport"),
                needs_password: true,
            };
            return Ok((StatusCode::UNAUTHORIZED, html(&page)).into_response());
        }
        let (raw, _) = repo::rotate_session(&st.db, &session, now, true).await?;
        cookie = Some(st.cookies.set(SESSION_COOKIE, &raw, None));
    }
    let ip = ip.to_string();
    if links::remove(&st, &user, Actor::Owner { ip: &ip }).await? == Removed::NotLinked {
        return Ok(see_other("/passport/security"));
    }
    let resp = see_other("/passport/security?done=unlinked");
    Ok(match cookie {
        Some(c) => set_cookie(resp, c),
        None => resp,
    })
}
