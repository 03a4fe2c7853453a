//! Back after a finished sign-in or link: the browser's history still holds MAX's confirmation
//! page, whose request is spent. Instead of «Запрос на вход устарел» the page says the step is done
//! and leads back to the client it was for.

use crate::MaxState;
use crate::oidc::clients::cached_client;
use crate::views::FinishedPage;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use edulink_web::{AppError, Lang, Tr, html};

/// The cookie that names the client of this browser's last finished request (its id, base64url:
/// client ids are public, and base64url is always a valid cookie value).
pub const FINISHED_COOKIE: &str = "max_done";

/// How long Back finds its way: an hour.
const FINISHED_SECS: i64 = 3600;

/// Remembers, on the response that sends the code to the client, which client the request was for.
pub fn remember(st: &MaxState, resp: &mut Response, client_id: &str) {
    let value = B64.encode(client_id);
    resp.headers_mut().append(header::SET_COOKIE, st.cookies.set(FINISHED_COOKIE, &value, Some(FINISHED_SECS)));
}

/// The «done» page for a browser whose last request was finished, or `None`.
pub async fn page(st: &MaxState, headers: &HeaderMap) -> Result<Option<Response>, AppError> {
    let Some(client_id) = st.cookies.get(headers, FINISHED_COOKIE).and_then(|v| decode(&v)) else {
        return Ok(None);
    };
    let Some(client) = cached_client(st, &client_id).await? else { return Ok(None) };
    let Some(home) = client.redirect_uris.iter().find_map(|u| url::Url::parse(u).ok()).map(|u| u.origin()) else {
        return Ok(None);
    };
    if !home.is_tuple() {
        return Ok(None);
    }
    let tr = Tr::new(Lang::from_headers(headers));
    Ok(Some(html(&FinishedPage { tr, client_name: client.name, home: format!("{}/", home.ascii_serialization()) })))
}

fn decode(value: &str) -> Option<String> {
    if value.len() > 256 {
        return None;
    }
    String::from_utf8(B64.decode(value).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_value_round_trips_and_junk_is_refused() {
        assert_eq!(decode(&B64.encode("diary")).as_deref(), Some("diary"));
        assert_eq!(decode("%%"), None);
        assert_eq!(decode(&"A".repeat(300)), None);
    }
}
