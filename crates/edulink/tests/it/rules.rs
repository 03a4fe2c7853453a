//! The code rules and the callback's checks (docs/architecture.md, «Rules»), attacked through the real pages.

use edulink_testkit::{Browser, FlowsExt, TestApp, both_backends};
use reqwest::StatusCode;

const PHONE: &str = "+7 916 777-88-99";
const E164: &str = "+79167778899";

async fn code_screen(app: &TestApp, b: &Browser) -> edulink_testkit::Page {
    let login = b.visit(&format!("{}/login", app.max)).await;
    let code = app.enter_phone(b, &login, PHONE).await;
    assert!(code.has("Перейти в MAX"), "{}", code.body);
    code
}

fn wrong(code: &str) -> String {
    let d: u32 = code.parse().unwrap();
    format!("{:06}", (d + 1) % 1_000_000)
}

both_backends! {
    async fn five_wrong_codes_kill_the_code(app) {
    let b = Browser::new();
    let page = code_screen(&app, &b).await;
    let right = app.last_code(E164);
    // Issue 21, item 5: each wrong answer says how many tries this code has left, and the last
    // one says they are used up.
    for left in (0..5).rev() {
        let p = app.enter_code(&b, &page, &wrong(&right)).await;
        assert_eq!(p.status, StatusCode::BAD_REQUEST);
        assert!(p.has("Неверный код"), "{}", p.body);
        if left > 0 {
            assert!(p.has(&format!("Осталось попыток для этого кода: {left}.")), "{}", p.body);
        } else {
            assert!(p.has("Попытки для этого кода закончились"), "{}", p.body);
        }
    }
    let p = app.enter_code(&b, &page, &right).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(p.has("Код больше не действует: попытки"), "the right code is refused after five wrong ones: {}", p.body);
    assert!(!p.has("Срок действия кода истёк"), "used up is not expired: {}", p.body);
    }
}

both_backends! {
    async fn an_expired_code_is_refused(app) {
    let b = Browser::new();
    let page = code_screen(&app, &b).await;
    // Issue 21, item 5: the page says how long a code lasts, and an expired code is told apart
    // from a used-up one. Pasted with a space («927 727») the code is the same code (nothing on the
    // page cuts it to «927 72»).
    assert!(page.has("Код действует 5 мин."), "{}", page.body);
    assert!(!page.has("maxlength=\"6\""), "{}", page.body);
    app.clock.advance(301);
    let p = app.enter_code(&b, &page, &app.last_code(E164)).await;
    assert!(p.has("Срок действия кода истёк: код действует 5 мин."), "{}", p.body);
    assert!(!p.has("попытки для него закончились"), "{}", p.body);
    }
}

both_backends! {
    async fn a_code_is_single_use_and_bound_to_its_browser(app) {
    let b = Browser::new();
    let page = code_screen(&app, &b).await;
    let code = app.last_code(E164);
    // Another browser cannot use it: it has no challenge of its own.
    let other = Browser::new();
    let other_login = other.visit(&format!("{}/login", app.max)).await;
    let p = other.post(&format!("{}/login/code", app.max), &[("csrf", &other_login.csrf()), ("code", &code)]).await;
    assert_eq!(p.location.as_deref(), Some(format!("{}/login", app.max).as_str()));
    let pasted = format!("{} {}", &code[..3], &code[3..]);
    let ok = app.enter_code(&b, &page, &pasted).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "a code pasted with a space works: {}", ok.body);
    }
}

both_backends! {
    async fn resend_waits_60_seconds_and_does_not_reset_the_failure_count(app) {
    let b = Browser::new();
    let page = code_screen(&app, &b).await;
    assert!(page.has("data-countdown=\""), "the countdown comes from the server's retry_after");
    let p = b.post(&format!("{}/login/resend", app.max), &[("csrf", &page.csrf())]).await;
    assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS);
    let wait: i64 = p.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((55..=60).contains(&wait), "{wait}");
    assert_eq!(app.inbox.to(E164).len(), 1);
    for _ in 0..3 {
        app.enter_code(&b, &page, &wrong(&app.last_code(E164))).await;
    }
    app.clock.advance(61);
    let p = b.submit(&format!("{}/login/resend", app.max), &[("csrf", &page.csrf())]).await;
    assert_eq!(p.status, StatusCode::OK);
    assert_eq!(app.inbox.to(E164).len(), 2);
    let failures: i64 = edulink_store_failures(&app).await;
    assert_eq!(failures, 3, "the resend kept the per-phone failure count");
    }
}

both_backends! {
    /// Issue 21, item 1: Back (or a closed tab) on the code page is no dead end. The phone page
    /// offers the code already sent; «Продолжить» with the same number leads back to it, not to
    /// «Код уже отправлен»; another browser refused by the send gap keeps what the child typed
    /// (not the masked number, which does not parse) and shows the wait once, in the countdown.
    async fn back_on_the_code_page_leads_to_the_code_already_sent(app) {
    let b = Browser::new();
    code_screen(&app, &b).await;
    // Back: the phone page again, in the same browser.
    let back = b.visit(&format!("{}/login", app.max)).await;
    assert!(back.has("Код уже отправлен на номер +7"), "{}", back.body);
    assert!(back.has("href=\"/login/code\""), "a way to enter the code: {}", back.body);
    // «Продолжить» with the same number: to the code page, no second SMS, no refusal.
    let again = app.enter_phone(&b, &back, PHONE).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert!(again.url.ends_with("/login/code") && again.has("Перейти в MAX"), "{}", again.body);
    assert_eq!(app.inbox.to(E164).len(), 1);
    let signed_in = app.enter_code(&b, &again, &app.last_code(E164)).await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER, "the code already sent works: {}", signed_in.body);

    // Another browser, the same phone within the gap: refused, but the field keeps the number
    // typed, and the only number of seconds on the page is the countdown's.
    let other = Browser::new();
    let login = other.visit(&format!("{}/login", app.max)).await;
    assert!(!login.has("Код уже отправлен на номер"), "no code of this browser: {}", login.body);
    let p = other.post(&format!("{}/login/phone", app.max), &[("csrf", &login.csrf()), ("phone", PHONE)]).await;
    assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(p.has(&format!("value=\"{PHONE}\"")), "the number typed, not the masked one: {}", p.body);
    assert!(p.has(">Код уже отправлен.</p>"), "the reason without a frozen wait: {}", p.body);
    assert_eq!(p.body.matches(" с.").count(), 1, "one wait, the countdown's: {}", p.body);
    assert!(p.has("data-countdown=\""), "{}", p.body);
    }
}

both_backends! {
    /// Issue 21, item 10: an empty phone field asks for the number instead of calling it wrong.
    async fn an_empty_phone_asks_for_the_number(app) {
    let b = Browser::new();
    let login = b.visit(&format!("{}/login", app.max)).await;
    let p = b.post(&format!("{}/login/phone", app.max), &[("csrf", &login.csrf()), ("phone", "  ")]).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(p.has("Введите номер телефона"), "{}", p.body);
    assert!(!p.has("введён неверно"), "{}", p.body);
    // A Kazakhstan number (+7 7xx) is told which number is needed.
    let p = b.post(&format!("{}/login/phone", app.max), &[("csrf", &login.csrf()), ("phone", "+7 701 234-56-78")]).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(p.has("нужен российский мобильный номер"), "{}", p.body);
    }
}

async fn edulink_store_failures(app: &TestApp) -> i64 {
    let st = app.running.max.as_ref().unwrap();
    let hash = st.secrets.phone_hash.keyed_hash("phone", E164);
    edulink_store::sqlx::query_scalar("SELECT failures FROM phone_state WHERE phone_hash = $1")
        .bind(hash)
        .fetch_one(st.db.pool())
        .await
        .unwrap()
}

both_backends! {
    async fn continue_answers_the_same_for_registered_and_new_phones(app) {
    let mut answers = Vec::new();
    for phone in ["+7 900 000-00-01", "+7 900 000-00-02"] {
        let b = Browser::new();
        let login = b.visit(&format!("{}/login", app.max)).await;
        let p = b.post(&format!("{}/login/phone", app.max), &[("csrf", &login.csrf()), ("phone", phone)]).await;
        let mut names: Vec<String> =
            p.headers.keys().map(|k| k.to_string()).filter(|k| k != "x-request-id" && k != "date").collect();
        names.sort();
        answers.push((p.status, p.location.clone(), p.body.clone(), names));
    }
    assert_eq!(answers[0], answers[1], "«Продолжить» must not reveal whether a phone is registered");
    }
}

both_backends! {
    async fn bad_phones_and_polluted_parameters_send_nothing(app) {
    let b = Browser::new();
    let login = b.visit(&format!("{}/login", app.max)).await;
    let csrf = login.csrf();
    for phone in ["12345", "+7 495 123-45-67", "<script>alert(1)</script>"] {
        let p = b.post(&format!("{}/login/phone", app.max), &[("csrf", &csrf), ("phone", phone)]).await;
        assert_eq!(p.status, StatusCode::BAD_REQUEST);
        assert!(p.has("Номер телефона введён неверно") || p.has("Это не мобильный номер"), "{}", p.body);
        assert!(!p.has("<script>alert"), "input is escaped");
    }
    let p = b
        .post(&format!("{}/login/phone", app.max), &[("csrf", &csrf), ("phone", PHONE), ("phone", "+79000000002")])
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(app.inbox.is_empty(), "no SMS for bad or polluted input");
    }
}

both_backends! {
    async fn state_changes_need_the_csrf_token_and_our_origin(app) {
    let b = Browser::new();
    let login = b.visit(&format!("{}/login", app.max)).await;
    let p = b.post(&format!("{}/login/phone", app.max), &[("csrf", "forged"), ("phone", PHONE)]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let resp = reqwest::Client::new()
        .post(format!("{}/login/phone", app.max))
        .header("origin", "https://evil.example")
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", login.csrf().as_str()), ("phone", PHONE)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(app.inbox.is_empty());
    }
}

both_backends! {
    async fn a_callback_with_a_state_from_another_browser_links_nobody(app) {
    let a = Browser::new();
    app.diary_login(&a, "student1").await;
    let phone = app.start_link(&a).await;
    let code = app.enter_phone(&a, &phone, PHONE).await;
    let reg = a.follow(app.enter_code(&a, &code, &app.last_code(E164)).await).await;
    let confirm = a
        .submit(
            &format!("{}/login/register", app.max),
            &[("csrf", &reg.csrf()), ("first_name", "Анна"), ("last_name", "Тест")],
        )
        .await;
    let redirect = a.post(&format!("{}/authorize/confirm", app.max), &[("csrf", &confirm.csrf())]).await;
    let callback = redirect.location.expect("redirect to the diary callback");
    assert!(callback.starts_with(&format!("{}/sferum/callback?", app.diary)));

    // An attacker's browser, signed in as another student, replays A's callback.
    let b = Browser::new();
    app.diary_login(&b, "student2").await;
    let p = b.visit(&callback).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(p.has("открыта в другом браузере"), "{}", p.body);
    assert_eq!(p.headers["referrer-policy"], "no-referrer");
    let sec = b.visit(&format!("{}/passport/security", app.diary)).await;
    assert!(sec.has("не привязан"));

    // The rightful browser completes; a reused state then fails.
    let done = a.visit(&callback).await;
    assert!(done.has("Ваша учетная запись успешно привязана"), "{}", done.body);
    let again = a.visit(&callback).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    }
}

both_backends! {
    async fn the_dev_inbox_and_operations_endpoints_answer(app) {
    let b = Browser::new();
    code_screen(&app, &b).await;
    let sms: serde_json::Value = reqwest::get(format!("{}/dev/sms", app.max)).await.unwrap().json().await.unwrap();
    assert_eq!(sms[0]["to"], E164);
    assert!(sms[0]["text"].as_str().unwrap().contains("код входа в MAX"));
    assert!(sms[0]["sent_at"].as_str().unwrap().contains('T'));
    let url = |to: &str| format!("{}/dev/sms?to={}", app.max, to.replace('+', "%2B"));
    let mine: serde_json::Value = reqwest::get(url(E164)).await.unwrap().json().await.unwrap();
    assert_eq!(mine, sms, "one phone's messages");
    let none: serde_json::Value = reqwest::get(url("+79990000000")).await.unwrap().json().await.unwrap();
    assert_eq!(none, serde_json::json!([]));
    for base in [&app.max, &app.diary] {
        for path in ["/healthz", "/readyz"] {
            let r = reqwest::get(format!("{base}{path}")).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{base}{path}");
        }
        // Operators read metrics on the operator listener (`serving.rs`), never on public ports.
        let r = reqwest::get(format!("{base}/metrics")).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{base}/metrics");
    }
    let r = reqwest::get(format!("{}/login", app.diary)).await.unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
}
