//! Secret hygiene (docs/architecture.md, «Rules»; OWASP ASVS 5.0 V16 logging, V14 data protection): no SMS code,
//! token, session id or full phone number in any log line or any page, and none in the database.

use edulink_testkit::{Backend, Browser, FlowsExt, LogCapture as Capture, TestApp, both_backends, spawn_app_on};
use std::io::Write;
use tracing_subscriber::layer::SubscriberExt;

const PHONE: &str = "8 916 123-45-67";
const E164: &str = "+79161234567";
const DIGITS: &str = "9161234567";

/// Standalone occurrences of `needle` (not inside a longer run of digits).
fn has_standalone(haystack: &str, needle: &str) -> bool {
    haystack.match_indices(needle).any(|(i, _)| {
        let before = haystack[..i].chars().next_back().is_some_and(|c| c.is_ascii_digit());
        let after = haystack[i + needle.len()..].chars().next().is_some_and(|c| c.is_ascii_digit());
        !before && !after
    })
}

/// Runs of URL-safe base64 at least 43 long: the shape of every 256-bit secret we make (session ids,
/// CSRF tokens, codes, access and refresh tokens, PKCE verifiers).
fn long_tokens(s: &str) -> Vec<String> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|w| w.len() >= 43)
        .map(str::to_owned)
        .collect()
}

/// Walks everything once: registration link, a wrong code, sign-in to Сферум, unlink, link again.
async fn walk(app: &TestApp, b: &Browser) {
    app.diary_login(b, "student3").await;
    let phone = app.start_link(b).await;
    let code_page = app.enter_phone(b, &phone, PHONE).await;
    let right = app.last_code(E164);
    let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 1) % 1_000_000);
    app.enter_code(b, &code_page, &wrong).await;
    let reg = b.follow(app.enter_code(b, &code_page, &right).await).await;
    let confirm = b
        .submit(
            &format!("{}/login/register", app.max),
            &[("csrf", &reg.csrf()), ("first_name", "Вера"), ("last_name", "Тест")],
        )
        .await;
    let done = b.submit(&format!("{}/authorize/confirm", app.max), &[("csrf", &confirm.csrf())]).await;
    assert!(done.has("успешно привязана"));
    b.visit(&format!("{}/sferum", app.diary)).await;
    b.visit(&format!("{}/", app.max)).await;
    let unlink = b.visit(&format!("{}/passport/security/unlink", app.diary)).await;
    b.submit(&format!("{}/passport/security/unlink", app.diary), &[("csrf", &unlink.csrf())]).await;
    app.clock.advance(61);
    app.link(b, PHONE, E164).await;
    let sferum = b.visit(&format!("{}/sferum", app.diary)).await;
    // Сферум in use: the class chat with a post, and the people search by phone (own and other).
    let i = sferum.body.find("chat-class").expect("class chat");
    let start = sferum.body[i..].find("href=\"").unwrap() + i + 6;
    let chat = format!("{}{}", app.max, &sferum.body[start..start + sferum.body[start..].find('"').unwrap()]);
    let page = b.visit(&chat).await;
    b.submit(&format!("{chat}/messages"), &[("csrf", &page.csrf()), ("text", "Всем привет")]).await;
    let people = b.visit(&format!("{}/sferum/people", app.max)).await;
    for q in [PHONE, "+7 900 000-00-01"] {
        let found = b.post(&format!("{}/sferum/people", app.max), &[("csrf", &people.csrf()), ("q", q)]).await;
        assert_eq!(found.status, reqwest::StatusCode::OK);
    }
}

#[tokio::test]
async fn no_log_line_and_no_page_holds_a_code_a_token_a_session_id_or_a_phone() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("debug"))
        .with(tracing_subscriber::fmt::layer().json().with_current_span(true).with_writer(move || writer.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = spawn_app_on(Backend::Sqlite, |_| {}).await.unwrap();
    let (b, recorded) = Browser::recording();
    walk(&app, &b).await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.lines().count() > 50, "the walk was logged");
    assert!(logs.contains("request_id"), "log lines carry the request id");
    let codes: Vec<String> =
        app.inbox.to(E164).iter().map(|m| m.text.rsplit('#').next().unwrap().trim().to_string()).collect();
    assert!(!codes.is_empty());
    for code in &codes {
        assert!(!has_standalone(&logs, code), "an SMS code is in the logs");
    }
    assert!(!logs.contains(DIGITS), "a full phone number is in the logs");
    let tokens = long_tokens(&logs);
    assert!(tokens.is_empty(), "secret-shaped values in the logs: {tokens:?}");

    // Pages and API answers: no phone and no code anywhere but the dev SMS inbox, which is the SMS
    // channel itself; no session id in any body.
    let pages = recorded.lock().unwrap().clone();
    assert!(pages.len() > 30);
    let session_ids: Vec<String> = pages
        .iter()
        .flat_map(|p| {
            p.headers
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .filter_map(|c| {
            c.split(';').next().and_then(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string()))
        })
        // Session cookies only: the login form's double-submit CSRF cookie is meant to be in the page.
        .filter(|(k, v)| k.ends_with("_sid") && v.len() == 43)
        .map(|(_, v)| v)
        .collect();
    assert!(!session_ids.is_empty());
    for p in pages.iter().filter(|p| !p.url.contains("/dev/")) {
        assert!(!p.body.contains(DIGITS), "{} shows the full phone", p.url);
        for code in &codes {
            assert!(!has_standalone(&p.body, code), "{} shows an SMS code", p.url);
        }
        for sid in &session_ids {
            assert!(!p.body.contains(sid.as_str()), "{} shows a session id", p.url);
        }
    }
    let _ = std::io::stdout().flush();
}

/// Every text value of every table of `db`, one a line.
pub(crate) async fn dump(db: &edulink_store::Db) -> String {
    use edulink_store::Row;
    let tables: Vec<String> = match db.backend() {
        edulink_store::Backend::Sqlite => {
            edulink_store::sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        edulink_store::Backend::Postgres => edulink_store::sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
        ),
    }
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert!(tables.len() > 5, "{tables:?}");
    let mut out = String::new();
    for t in tables {
        let rows = edulink_store::sqlx::query(edulink_store::sqlx::AssertSqlSafe(format!("SELECT * FROM {t}")))
            .fetch_all(db.pool())
            .await
            .unwrap();
        for r in rows {
            for i in 0..r.len() {
                if let Ok(Some(v)) = r.try_get::<Option<String>, _>(i) {
                    out.push_str(&v);
                    out.push('\n');
                }
            }
        }
    }
    out
}

both_backends! {
    /// Phones at rest are a keyed hash (lookup) and an AEAD ciphertext (sending): a dump of either
    /// database holds no phone number, no SMS code, no token in clear.
    async fn a_database_dump_holds_no_phone_number_and_no_secret(app) {
        let b = Browser::new();
        walk(&app, &b).await;
        let codes: Vec<String> = app.inbox.to(E164).iter().map(|m| m.text.rsplit('#').next().unwrap().trim().to_string()).collect();
        for db in [&app.running.max.as_ref().unwrap().db, &app.running.diary.as_ref().unwrap().db] {
            let text = dump(db).await;
            assert!(text.len() > 1000, "the dump has content");
            assert!(!text.contains(DIGITS), "a phone number in clear");
            for code in &codes {
                assert!(!has_standalone(&text, code), "an SMS code in clear");
            }
        }
    }
}
