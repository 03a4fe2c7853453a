//! The lockout model an attacker cannot weaponise, one purpose per credential, and forms that post
//! only where they should (issue 20; SECURITY.md, «Lockout model»). OWASP ASVS 5.0 V6.1.1: controls
//! must not allow malicious account lockout; NIST SP 800-63B §3.2.2; CSP Level 3 `form-action`.

use edulink_testkit::{Browser, FlowsExt, TestApp, both_backends};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PHONE: &str = "+7 916 420-30-40";
const E164: &str = "+79164203040";

fn wrong(code: &str) -> String {
    format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000)
}

/// `(failures, locked_until)` of a phone.
async fn phone_state(app: &TestApp, e164: &str) -> (i64, i64) {
    let st = app.running.max.as_ref().unwrap();
    edulink_store::sqlx::query_as("SELECT failures, locked_until FROM phone_state WHERE phone_hash = $1")
        .bind(st.secrets.phone_hash.keyed_hash("phone", e164))
        .fetch_one(st.db.pool())
        .await
        .unwrap()
}

async fn code_screen(app: &TestApp, b: &Browser) -> edulink_testkit::Page {
    let login = b.visit(&format!("{}/login", app.max)).await;
    app.enter_phone(b, &login, PHONE).await
}

async fn api(
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    cookie: Option<String>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(c) = cookie {
        req = req.header(reqwest::header::COOKIE, c);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

async fn diary_token(app: &TestApp) -> String {
    let body = json!({ "login": "student3", "password": "demo" });
    let r = api(reqwest::Method::POST, format!("{}/api/v1/sessions", app.diary), None, None, Some(body)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string()
}

async fn open_sferum(app: &TestApp, token: &str) -> String {
    let r = api(reqwest::Method::POST, format!("{}/api/v1/sferum/open", app.diary), Some(token), None, Some(json!({})))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<Value>().await.unwrap()["url"].as_str().unwrap().to_string()
}

both_backends! {
    /// Issue 20, defect 2: 28 polluted code forms locked the victim's phone for 24 h and one post on
    /// the attacker's long-expired code re-extended it. Now a polluted form, a malformed code and a
    /// dead code count nothing; 20 real wrong guesses lock for 15 minutes, guesses during the lock
    /// neither count nor extend it, and the owner signs in when it ends.
    async fn polluted_forms_and_dead_codes_never_lock_and_a_lock_cannot_be_extended(app) {
        let attacker = Browser::new();
        let mut page = code_screen(&app, &attacker).await;
        for _ in 0..28 {
            let polluted = attacker
                .post(&format!("{}/login/code", app.max), &[("csrf", &page.csrf()), ("code", "1"), ("code", "2")])
                .await;
            assert_eq!(polluted.status, StatusCode::BAD_REQUEST);
        }
        let malformed = app.enter_code(&attacker, &page, "12").await;
        assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
        assert_eq!(phone_state(&app, E164).await, (0, 0), "nothing counted, nothing locked");

        // 20 real wrong guesses over four codes (each one a fresh, capped SMS) lock the phone.
        for round in 0..4 {
            if round > 0 {
                app.clock.advance(61);
                let resend = attacker.post(&format!("{}/login/resend", app.max), &[("csrf", &page.csrf())]).await;
                assert_eq!(resend.status, StatusCode::SEE_OTHER, "round {round}: {}", resend.body);
                page = attacker.follow(resend).await;
            }
            for _ in 0..5 {
                app.enter_code(&attacker, &page, &wrong(&app.last_code(E164))).await;
            }
        }
        let now = app.running.max.as_ref().unwrap().now();
        let (failures, locked_until) = phone_state(&app, E164).await;
        // (The test clock is the real one moved forward: a second may tick between two readings.)
        assert_eq!(failures, 0, "the count starts again");
        assert!((899..=900).contains(&(locked_until - now)), "a 15-minute lock: {}", locked_until - now);
        // While locked: more posts (wrong codes, polluted forms, on the spent code and then on an
        // expired one) neither count nor extend the lock.
        for step in 0..2 {
            if step == 1 {
                app.clock.advance(400);
            }
            for _ in 0..5 {
                app.enter_code(&attacker, &page, &wrong(&app.last_code(E164))).await;
                attacker.post(&format!("{}/login/code", app.max), &[("csrf", &page.csrf()), ("code", "1"), ("code", "2")]).await;
            }
        }
        assert_eq!(phone_state(&app, E164).await, (0, locked_until), "the lock is not extended");
        let refused = attacker.post(&format!("{}/login/resend", app.max), &[("csrf", &page.csrf())]).await;
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        let wait: i64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((497..=500).contains(&wait), "the rest of the 15 minutes, never more: {wait}");

        // When the lock ends, the owner (who receives the SMS) signs in.
        app.clock.advance(wait);
        let owner = Browser::new();
        let code = code_screen(&app, &owner).await;
        assert_eq!((code.status, code.url.ends_with("/login/code")), (StatusCode::OK, true), "{}", code.body);
        let signed_in = app.enter_code(&owner, &code, &app.last_code(E164)).await;
        assert_eq!(signed_in.status, StatusCode::SEE_OTHER, "{}", signed_in.body);
        assert!(signed_in.location.is_some_and(|l| l.contains("/login/register") || l == "/"));
        // The attacker's long-expired code: still no guess.
        let dead = app.enter_code(&attacker, &page, "000000").await;
        assert!(dead.has("Срок действия кода истёк"), "{}", dead.body);
        assert_eq!(phone_state(&app, E164).await, (0, locked_until));
    }

    /// Issue 20, defect 4: the MAX web session cookie worked as the app's bearer token. Now a
    /// session is found only by the credential that made it, both ways.
    async fn a_web_session_cookie_is_no_app_token_and_an_app_token_no_cookie(app) {
        let b = Browser::new();
        let page = code_screen(&app, &b).await;
        let signed = app.enter_code(&b, &page, &app.last_code(E164)).await;
        let signed = if signed.location.as_deref().is_some_and(|l| l.ends_with("/login/register")) {
            let reg = b.follow(signed).await;
            b.post(&format!("{}/login/register", app.max), &[("csrf", &reg.csrf()), ("first_name", "Ян"), ("last_name", "Тест")]).await
        } else {
            signed
        };
        let cookie = signed.headers.get_all(reqwest::header::SET_COOKIE).iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("max_sid="))
            .map(|v| v.split(';').next().unwrap().to_string())
            .expect("a session cookie");
        let home = api(reqwest::Method::GET, format!("{}/", app.max), None, Some(format!("max_sid={cookie}")), None).await;
        assert!(home.text().await.unwrap().contains("Ян Тест"), "the cookie is a browser session");
        let me = api(reqwest::Method::GET, format!("{}/api/v1/me", app.max), Some(&cookie), None, None).await;
        assert_eq!(me.status(), StatusCode::UNAUTHORIZED, "the cookie is no bearer token");

        app.clock.advance(61);
        let sent: Value = api(reqwest::Method::POST, format!("{}/api/v1/auth/codes", app.max), None, None, Some(json!({ "phone": PHONE }))).await.json().await.unwrap();
        let verified: Value = api(
            reqwest::Method::POST,
            format!("{}/api/v1/auth/codes/verify", app.max),
            None,
            None,
            Some(json!({ "challenge_id": sent["challenge_id"], "code": app.last_code(E164) })),
        )
        .await
        .json()
        .await
        .unwrap();
        let token = verified["token"].as_str().expect("an app token").to_string();
        let me = api(reqwest::Method::GET, format!("{}/api/v1/me", app.max), Some(&token), None, None).await;
        assert_eq!(me.status(), StatusCode::OK);
        let home = api(reqwest::Method::GET, format!("{}/", app.max), None, Some(format!("max_sid={token}")), None).await;
        assert!(!home.text().await.unwrap().contains("Ян Тест"), "the app token is no browser session");
        // The anonymous app session (the challenge id) is no browser session either.
        let code = api(reqwest::Method::GET, format!("{}/login/code", app.max), None, Some(format!("max_sid={}", sent["challenge_id"].as_str().unwrap())), None).await;
        assert_eq!(code.status(), StatusCode::SEE_OTHER);
    }

    /// Issue 20, defect 3: an «open Сферум» ticket kept working for its 60 s after the app signed
    /// out. Now it dies with the app session that made it; another session's ticket still works.
    async fn a_handoff_ticket_dies_with_the_app_session_that_made_it(app) {
        let b = Browser::new();
        app.diary_login(&b, "student3").await;
        let done = app.link(&b, PHONE, E164).await;
        assert!(done.has("Ваша учетная запись успешно привязана"), "{}", done.body);
        let (gone, kept) = (diary_token(&app).await, diary_token(&app).await);
        let (dead_url, live_url) = (open_sferum(&app, &gone).await, open_sferum(&app, &kept).await);
        let out = api(reqwest::Method::DELETE, format!("{}/api/v1/sessions/current", app.diary), Some(&gone), None, None).await;
        assert_eq!(out.status(), StatusCode::NO_CONTENT);
        let fresh = Browser::new();
        assert_eq!(fresh.get(&dead_url).await.status, StatusCode::BAD_REQUEST, "the page refuses the dead ticket");
        let ticket = dead_url.rsplit("ticket=").next().unwrap();
        let post = fresh.post(&format!("{}/sferum/handoff", app.diary), &[("ticket", ticket)]).await;
        assert_eq!(post.status, StatusCode::BAD_REQUEST, "and so does the click");
        // The other session's ticket is unaffected.
        let page = fresh.get(&live_url).await;
        assert_eq!(page.status, StatusCode::OK);
        let ticket = live_url.rsplit("ticket=").next().unwrap();
        let post = fresh.post(&format!("{}/sferum/handoff", app.diary), &[("ticket", ticket)]).await;
        assert_eq!(post.status, StatusCode::SEE_OTHER, "{}", post.body);
    }

    /// CSP Level 3 §6.3.1 `form-action` (browsers check it on each redirect after a form is sent):
    /// the diary's forms go to itself and to MAX («Подключить» is redirected there); MAX's forms go
    /// to itself, and its consent page's also to the client the request came from — nowhere else.
    async fn forms_post_only_to_their_party_and_where_they_are_redirected(app) {
        let csp = |r: &edulink_testkit::Page| r.headers["content-security-policy"].to_str().unwrap().to_string();
        let b = Browser::new();
        let login = b.get(&format!("{}/login", app.diary)).await;
        assert!(csp(&login).ends_with(&format!("form-action 'self' {}", app.max)), "{}", csp(&login));
        let max_home = b.get(&format!("{}/", app.max)).await;
        assert!(csp(&max_home).ends_with("form-action 'self'"), "{}", csp(&max_home));
        app.diary_login(&b, "student4").await;
        let phone = app.start_link(&b).await;
        let code = app.enter_phone(&b, &phone, PHONE).await;
        assert!(csp(&code).ends_with(&format!("form-action 'self' {}", app.diary)), "the code page: {}", csp(&code));
        let next = b.follow(app.enter_code(&b, &code, &app.last_code(E164)).await).await;
        let next = if next.url.ends_with("/login/register") {
            assert!(csp(&next).ends_with(&format!("form-action 'self' {}", app.diary)), "{}", csp(&next));
            b.submit(&format!("{}/login/register", app.max), &[("csrf", &next.csrf()), ("first_name", "Ян"), ("last_name", "Тест")]).await
        } else {
            next
        };
        assert!(next.url.ends_with("/authorize/continue"), "{}", next.url);
        assert!(csp(&next).ends_with(&format!("form-action 'self' {}", app.diary)), "the consent page: {}", csp(&next));
    }

    /// Issue 20, defect 5: names took a blank-looking U+3164, a U+202E override, zero-width and
    /// stacked marks. Registration (the page and the app API) parses them into `PersonName` now.
    async fn registration_refuses_invisible_bidi_stacked_and_mixed_script_names(app) {
        let b = Browser::new();
        let page = code_screen(&app, &b).await;
        let reg = b.follow(app.enter_code(&b, &page, &app.last_code(E164)).await).await;
        assert!(reg.url.ends_with("/login/register"), "{}", reg.url);
        for (first, last) in [("\u{3164}", "Тест"), ("Ив\u{202E}ан", "Тест"), ("Ив\u{200B}ан", "Тест"), ("Ян", "Те\u{0301}\u{0301}\u{0301}ст"), ("Ивaн", "Тест")] {
            let p = b.post(&format!("{}/login/register", app.max), &[("csrf", &reg.csrf()), ("first_name", first), ("last_name", last)]).await;
            assert_eq!(p.status, StatusCode::BAD_REQUEST, "{first:?} {last:?}");
            assert!(p.has("буквами одного алфавита"), "{}", p.body);
        }
        let ok = b.post(&format!("{}/login/register", app.max), &[("csrf", &reg.csrf()), ("first_name", "Алёна"), ("last_name", "Д'Артаньян")]).await;
        assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    }

    /// Issue 20, defect 5: a chat message kept its U+202E, which reversed the text after it. The
    /// control is gone from what is stored and shown, and names and texts are shown as isolates.
    async fn a_chat_message_cannot_reorder_the_page(app) {
        let b = Browser::new();
        app.diary_login(&b, "student1").await;
        app.link(&b, "+7 900 000-00-01", "+79000000001").await;
        let page = b.visit(&format!("{}/sferum", app.diary)).await;
        let i = page.body.find("Чат класса 7 А").expect("class chat");
        let start = page.body[..i].rfind("href=\"").unwrap() + 6;
        let chat = format!("{}{}", app.max, &page.body[start..start + page.body[start..].find('"').unwrap()]);
        let csrf = b.get(&chat).await.csrf();
        let sent = b.post(&format!("{chat}/messages"), &[("csrf", &csrf), ("text", "купи \u{202E}gpj.exe\u{202C} сегодня")]).await;
        assert_eq!(sent.status, StatusCode::SEE_OTHER);
        let read = b.get(&chat).await;
        assert!(read.has("купи gpj.exe сегодня"), "{}", read.body);
        assert!(!read.body.contains('\u{202E}') && !read.body.contains('\u{202C}'));
        assert!(read.has("<p class=\"text\" dir=\"auto\">") && read.has("<span class=\"author\" dir=\"auto\">"));
    }
}
