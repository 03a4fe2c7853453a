//! The seed's flows end to end: link (new phone, existing profile), sign-in when linked, unlink and
//! link again, conflict.

use edulink_testkit::{Browser, FlowsExt, both_backends, both_backends_with};
use reqwest::StatusCode;

const NEW_PHONE: &str = "8 (916) 123-45-67";
const NEW_E164: &str = "+79161234567";
const DEMO_PHONE: &str = "+7 900 000-00-01";
const DEMO_E164: &str = "+79000000001";

both_backends! {
    async fn link_with_a_new_phone_registers_then_provisions_sferum(app) {
    let b = Browser::new();
    app.diary_login(&b, "student3").await;
    let done = app.link(&b, NEW_PHONE, NEW_E164).await;
    assert_eq!(done.url, format!("{}/sferum/linked", app.diary));
    assert!(done.has("Ваша учетная запись успешно привязана"));
    assert!(done.has("Перейти в Сферум"));
    // The SMS: Russian, one segment, what it is for, never tell it, WebOTP line.
    let sms = app.inbox.to(NEW_E164);
    assert_eq!(sms.len(), 1);
    assert!(sms[0].text.encode_utf16().count() <= 70, "{}", sms[0].text);
    assert!(sms[0].text.contains("Никому") && sms[0].text.contains("#"));

    // «Перейти в Сферум»: SSO through MAX lands on «Сферум в MAX» with the provisioned data.
    let sferum = b.visit(&format!("{}/sferum", app.diary)).await;
    assert_eq!(sferum.url, format!("{}/sferum", app.max));
    assert!(sferum.has("Сферум в MAX"));
    assert!(sferum.has("Вера Кузнецова"), "diary name of student3: {}", sferum.body);
    assert!(sferum.has("Школа № 1535"));
    assert!(sferum.has("Подтверждено дневником «МЭШ»"));
    assert!(sferum.has("Чат класса 7 А"));
    assert!(sferum.has("Дистанционные уроки"));
    assert!(!sferum.has("Ближайших дистанционных уроков нет"), "lessons were provisioned");
    // Still only one SMS: the sign-in used MAX's session.
    assert_eq!(app.inbox.to(NEW_E164).len(), 1);

    // «Мой паспорт» → «Безопасность» shows the link.
    let sec = b.visit(&format!("{}/passport/security", app.diary)).await;
    assert!(sec.has("id аккаунта") && sec.has("Привязан"));
    assert!(
        sec.has("Удаление профиля \"Сферум\"")
            || sec.has("Удаление профиля &quot;Сферум&quot;")
            || sec.has("Удаление профиля &#34;Сферум&#34;")
    );
    }
}

both_backends! {
    async fn the_phone_with_an_existing_profile_links_that_profile_without_registration(app) {
    let b = Browser::new();
    app.diary_login(&b, "student1").await;
    let phone_page = app.start_link(&b).await;
    let code_page = app.enter_phone(&b, &phone_page, DEMO_PHONE).await;
    assert!(code_page.has("+7\u{a0}900\u{a0}***-**-01"), "masked phone shown: {}", code_page.body);
    let after = b.follow(app.enter_code(&b, &code_page, &app.last_code(DEMO_E164)).await).await;
    assert!(after.url.contains("/authorize/continue"), "no registration for a known phone: {}", after.url);
    assert!(after.has("Алиса Иванова") && after.has("+7\u{a0}900\u{a0}***-**-01"));
    assert!(after.has("уже есть учебный профиль"));
    let done = b.submit(&format!("{}/authorize/confirm", app.max), &[("csrf", &after.csrf())]).await;
    assert!(done.has("Ваша учетная запись успешно привязана"));
    let sferum = b.visit(&format!("{}/sferum", app.diary)).await;
    assert!(sferum.has("Подтверждено дневником «МЭШ»"));
    }
}

both_backends! {
    async fn signing_in_to_sferum_when_linked_needs_no_sms_while_max_has_a_session_and_one_sms_when_not(app) {
    let b = Browser::new();
    app.diary_login(&b, "student2").await;
    app.link(&b, NEW_PHONE, NEW_E164).await;
    for _ in 0..3 {
        let p = b.visit(&format!("{}/sferum", app.diary)).await;
        assert_eq!(p.url, format!("{}/sferum", app.max));
    }
    assert_eq!(app.inbox.to(NEW_E164).len(), 1, "no SMS while MAX holds the session");

    // A new browser: the diary session is new and MAX has none → one SMS sign-in, then Сферум.
    let b2 = Browser::new();
    app.clock.advance(61);
    app.diary_login(&b2, "student2").await;
    let phone = b2.visit(&format!("{}/sferum", app.diary)).await;
    assert!(phone.url.starts_with(&format!("{}/login", app.max)), "{}", phone.url);
    let code = app.enter_phone(&b2, &phone, NEW_PHONE).await;
    let end = b2.follow(app.enter_code(&b2, &code, &app.last_code(NEW_E164)).await).await;
    assert_eq!(end.url, format!("{}/sferum", app.max), "straight to Сферум after the code: {}", end.body);
    assert_eq!(app.inbox.to(NEW_E164).len(), 2);
    }
}

both_backends! {
    async fn when_max_is_signed_in_as_somebody_else_it_says_so_and_offers_to_switch(app) {
    let b = Browser::new();
    app.diary_login(&b, "student2").await;
    app.link(&b, NEW_PHONE, NEW_E164).await;
    // Sign MAX out (the diary hears of it on the back channel, so its next «Сферум» asks MAX for
    // a fresh sign-in), and sign in there as the demo phone, in the same browser.
    let home = b.visit(&format!("{}/", app.max)).await;
    b.submit(&format!("{}/logout", app.max), &[("csrf", &home.csrf())]).await;
    let login = b.visit(&format!("{}/sferum", app.diary)).await;
    assert!(login.url.starts_with(&format!("{}/login", app.max)), "{}", login.url);
    let code = app.enter_phone(&b, &login, DEMO_PHONE).await;
    let mismatch = b.follow(app.enter_code(&b, &code, &app.last_code(DEMO_E164)).await).await;
    assert!(mismatch.has("Вы вошли в другую учетную запись"), "{}", mismatch.body);
    assert!(mismatch.has("Сменить учетную запись"));
    // Switching leads to the phone screen, and the right account ends in Сферум.
    app.clock.advance(61);
    let phone = b.submit(&format!("{}/authorize/switch", app.max), &[("csrf", &mismatch.csrf())]).await;
    let code = app.enter_phone(&b, &phone, NEW_PHONE).await;
    let end = b.follow(app.enter_code(&b, &code, &app.last_code(NEW_E164)).await).await;
    assert_eq!(end.url, format!("{}/sferum", app.max));
    }
}

both_backends! {
    async fn unlink_cuts_access_and_linking_again_works(app) {
    let b = Browser::new();
    app.diary_login(&b, "student4").await;
    app.link(&b, NEW_PHONE, NEW_E164).await;
    let before = b.visit(&format!("{}/sferum", app.diary)).await;
    assert!(before.has("Чат класса 7 А"));

    // Without JavaScript: ✕ leads to a confirmation page with the seed's words.
    let confirm = b.visit(&format!("{}/passport/security/unlink", app.diary)).await;
    assert!(confirm.has("Вы действительно хотите отвязать аккаунт «Сферум» от вашей учетной записи?"));
    assert!(confirm.has("Отменить") && confirm.has("Отвязать"));
    let done = b.submit(&format!("{}/passport/security/unlink", app.diary), &[("csrf", &confirm.csrf())]).await;
    assert!(done.has("Аккаунт «Сферум» отвязан"), "{}", done.body);
    assert!(done.has("Учебный профиль Сферум в MAX не привязан"));
    assert!(done.has("Учебный профиль Сферум отвязан"), "history shows the unlink");

    // At MAX: the profile left the chats, lost the school data, and was told.
    let after = b.visit(&format!("{}/sferum", app.max)).await;
    assert!(!after.has("Чат класса 7 А"), "{}", after.body);
    assert!(!after.has("Подтверждено дневником"));
    let home = b.visit(&format!("{}/", app.max)).await;
    assert!(home.has("отвязана от вашего учебного профиля"), "{}", home.body);

    // «Сферум» in the diary offers to connect again, and linking again works.
    app.clock.advance(61);
    let again = app.link(&b, NEW_PHONE, NEW_E164).await;
    assert!(again.has("Ваша учетная запись успешно привязана"));
    let back = b.visit(&format!("{}/sferum", app.diary)).await;
    assert!(back.has("Чат класса 7 А"));
    }
}

both_backends! {
    async fn a_max_account_linked_to_another_student_is_a_clear_conflict_and_changes_nothing(app) {
    let a = Browser::new();
    app.diary_login(&a, "student1").await;
    app.link(&a, NEW_PHONE, NEW_E164).await;

    let b = Browser::new();
    app.diary_login(&b, "student2").await;
    app.clock.advance(61);
    let phone = app.start_link(&b).await;
    let code = app.enter_phone(&b, &phone, NEW_PHONE).await;
    let confirm = b.follow(app.enter_code(&b, &code, &app.last_code(NEW_E164)).await).await;
    let result = b.submit(&format!("{}/authorize/confirm", app.max), &[("csrf", &confirm.csrf())]).await;
    assert_eq!(result.status, StatusCode::CONFLICT);
    assert!(result.has("уже привязан к другой учетной записи дневника"), "{}", result.body);
    assert!(result.has("Мой паспорт"), "explains what to do");
    // student2 is not linked; student1 still is.
    let sec_b = b.visit(&format!("{}/passport/security", app.diary)).await;
    assert!(sec_b.has("не привязан"));
    let sec_a = a.visit(&format!("{}/passport/security", app.diary)).await;
    assert!(sec_a.has("id аккаунта"));
    let sferum_a = a.visit(&format!("{}/sferum", app.diary)).await;
    assert!(sferum_a.has("Чат класса 7 А"), "student1's profile untouched");
    }
}

both_backends! {
    async fn a_teacher_links_too_and_joins_every_class_chat(app) {
    let b = Browser::new();
    app.diary_login(&b, "teacher").await;
    app.link(&b, NEW_PHONE, NEW_E164).await;
    let sferum = b.visit(&format!("{}/sferum", app.diary)).await;
    assert!(sferum.has("Учитель"), "{}", sferum.body);
    assert!(sferum.has("Чат класса 7 А") && sferum.has("Чат класса 7 Б"));
    }
}

both_backends! {
    async fn the_pages_speak_english_on_request(app) {
    let b = Browser::new();
    app.diary_login(&b, "student6").await;
    let switched = b.follow(b.get(&format!("{}/lang/en", app.diary)).await).await;
    assert!(switched.has("Schedule"), "{}", switched.body);
    let connect = b.visit(&format!("{}/sferum", app.diary)).await;
    assert!(connect.has("Start connecting"));
    let sec = b.visit(&format!("{}/passport/security", app.diary)).await;
    assert!(sec.has("Security") && sec.has("No Sferum educational profile"));
    // The cookie is per host, so MAX (another port on the same test host) speaks English too.
    let phone = b.visit(&format!("{}/login", app.max)).await;
    assert!(phone.has("Continue") && phone.has("lang=\"en\""));
    }
}

both_backends! {
    async fn unlinking_after_15_minutes_asks_for_the_password_again(app) {
    let b = Browser::new();
    app.diary_login(&b, "student7").await;
    app.link(&b, NEW_PHONE, NEW_E164).await;
    app.clock.advance(16 * 60);
    let confirm = b.visit(&format!("{}/passport/security/unlink", app.diary)).await;
    assert!(confirm.has("введите пароль"), "{}", confirm.body);
    let url = format!("{}/passport/security/unlink", app.diary);
    let wrong = b.post(&url, &[("csrf", &confirm.csrf()), ("password", "nope")]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let still = b.visit(&format!("{}/passport/security", app.diary)).await;
    assert!(still.has("id аккаунта"), "a wrong password unlinks nothing");
    let done = b.submit(&url, &[("csrf", &confirm.csrf()), ("password", "demo")]).await;
    assert!(done.has("Аккаунт «Сферум» отвязан"), "{}", done.body);
    }
}

both_backends! {
    async fn sign_in_keeps_working_across_a_key_rotation_and_the_old_key_stays_published(app) {
    let b = Browser::new();
    app.diary_login(&b, "student8").await;
    app.link(&b, NEW_PHONE, NEW_E164).await;
    let kids = |jwks: &serde_json::Value| -> Vec<String> {
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect()
    };
    let before: serde_json::Value =
        reqwest::get(format!("{}/oauth/jwks", app.max)).await.unwrap().json().await.unwrap();
    let st = app.running.max.as_ref().unwrap();
    let retention = edulink_max::keys::retention_secs(&st.cfg);
    edulink_max::keys::rotate(&st.db, &st.secrets.key_cipher, st.now(), retention).await.unwrap();
    st.keys.refresh(&st.db, &st.secrets.key_cipher, st.now()).await.unwrap();
    // The new keys sign once every instance has had the time to publish them.
    app.clock.advance(edulink_max::keys::ACTIVATION_DELAY_SECS);
    let after: serde_json::Value = reqwest::get(format!("{}/oauth/jwks", app.max)).await.unwrap().json().await.unwrap();
    for kid in kids(&before) {
        assert!(kids(&after).contains(&kid), "previous key {kid} still published");
    }
    assert_eq!(kids(&after).len(), 2 * kids(&before).len());
    // The diary has the old JWKS cached; the new signature makes it re-fetch, and SSO succeeds.
    let sferum = b.visit(&format!("{}/sferum", app.diary)).await;
    assert_eq!(sferum.url, format!("{}/sferum", app.max), "{}", sferum.body);
    }
}

both_backends! {
    async fn link_and_unlink_are_in_both_audit_trails_with_pseudonymous_ids_only(app) {
    let b = Browser::new();
    app.diary_login(&b, "student9").await;
    app.link(&b, NEW_PHONE, NEW_E164).await;
    let confirm = b.visit(&format!("{}/passport/security/unlink", app.diary)).await;
    b.submit(&format!("{}/passport/security/unlink", app.diary), &[("csrf", &confirm.csrf())]).await;
    let diary = app.running.diary.as_ref().unwrap();
    let max = app.running.max.as_ref().unwrap();
    let events = |rows: Vec<(String,)>| rows.into_iter().map(|r| r.0).collect::<Vec<_>>();
    let d: Vec<(String,)> = edulink_store::sqlx::query_as("SELECT event FROM audit ORDER BY at, id")
        .fetch_all(diary.db.pool())
        .await
        .unwrap();
    let d = events(d);
    assert!(d.contains(&"link".to_string()) && d.contains(&"unlink".to_string()), "{d:?}");
    let m: Vec<(String,)> = edulink_store::sqlx::query_as("SELECT event FROM audit ORDER BY at, id")
        .fetch_all(max.db.pool())
        .await
        .unwrap();
    let m = events(m);
    for e in ["sms_sent", "register", "authorize", "sferum_attached", "sferum_detached"] {
        assert!(m.contains(&e.to_string()), "{e} in {m:?}");
    }
    // Nothing in either trail holds the phone, in any form.
    for db in [diary.db.pool(), max.db.pool()] {
        let all: Vec<(Option<String>, Option<String>)> =
            edulink_store::sqlx::query_as("SELECT detail, ip FROM audit").fetch_all(db).await.unwrap();
        for (detail, _) in all {
            assert!(!detail.unwrap_or_default().contains("9161234567"));
        }
    }
    }
}

both_backends_with! {
    // An SMS provider that refuses connections (port 9, discard, is closed on loopback).
    |c: &mut edulink::config::Config| {
        c.max.sms.gateway = "http".into();
        c.max.sms.url = Some("http://127.0.0.1:9/send".into());
        c.max.sms.token = Some("t".into());
    };
    async fn an_sms_gateway_failure_says_so_and_is_audited(app) {
        let b = Browser::new();
        app.diary_login(&b, "student3").await;
        let phone_page = app.start_link(&b).await;
        let failed = app.enter_phone(&b, &phone_page, NEW_PHONE).await;
        assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE, "{}", failed.body);
        assert!(failed.has("Не удалось отправить СМС"), "{}", failed.body);
        // The code was issued (and counted against the limits) before the gateway refused it:
        // the trail has both, in that order.
        let max = app.running.max.as_ref().unwrap();
        let m: Vec<(String,)> = edulink_store::sqlx::query_as(
            "SELECT event FROM audit WHERE event LIKE 'sms_%' ORDER BY at, event DESC",
        )
        .fetch_all(max.db.pool())
        .await
        .unwrap();
        let m: Vec<String> = m.into_iter().map(|r| r.0).collect();
        assert_eq!(m, ["sms_sent", "sms_failed"]);
    }
}
