//! Back after a finished sign-in or link: the browser's history still holds MAX's confirmation
//! page, whose request is spent. Instead of «Запрос на вход устарел» the page says the step is done
//! and leads back to the client it was for.

use crate::MaxState;
use crate::oidc::clients::cached_client;
use crate::views::FinishedPage;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use edulink_web::{AppError, Lang, Tr, html};

/// The cookie that names the client of this browser's last finished request (its id, hex-encoded:
/// client ids are public, and hex is always a valid cookie value).
pub const FINISHED_COOKIE: &str = "max_done";

/// How long Back finds its way: an hour.
const FINISHED_SECS: i64 = 3600;

/// Remembers, on the response that sends the code to the client, which client the request was for.
pub fn remember(st: &MaxState, resp: &mut Response, client_id: &str) {
    let hex: String = client_id.bytes().map(|b| format!("{b:02x}")).collect();
    resp.headers_mut().append(header::SET_COOKIE, st.cookies.set(FINISHED_COOKIE, &hex, Some(FINISHED_SECS)));
}

/// The «done» page for a browser whose last request was finished, or `None`.
pub async fn page(st: &MaxState, headers: &HeaderMap) -> Result<Option<Response>, AppError> {
    let Some(client_id) = st.cookies.get(headers, FINISHED_COOKIE).and_then(|h| unhex(&h)) else {
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

fn unhex(s: &str) -> Option<String> {
    if s.len() % 2 != 0 || s.len() > 256 {
        return None;
    }
    let bytes =
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trips_and_refuses_junk() {
        let hex: String = "diary".bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(super::unhex(&hex).as_deref(), Some("diary"));
        assert_eq!(super::unhex("zz"), None);
        assert_eq!(super::unhex("abc"), None);
    }
}
