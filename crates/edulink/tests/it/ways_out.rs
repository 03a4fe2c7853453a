//! Issue 21: the child's path never dead-ends. Each test makes the child's mistake through the
//! real pages and asserts the way out.

use edulink_testkit::{Browser, FlowsExt, both_backends};
use reqwest::StatusCode;

const NEW_PHONE: &str = "8 (916) 123-45-67";
const NEW_E164: &str = "+79161234567";

both_backends! {
    /// Item 3: Back after a successful link lands on MAX's spent confirmation page. It says the
    /// step is done and leads back to the diary, not «Что-то пошло не так… Запрос на вход устарел».
    async fn back_after_a_link_leads_back_to_the_diary(app) {
    let b = Browser::new();
    app.diary_login(&b, "student3").await;
    let done = app.link(&b, NEW_PHONE, NEW_E164).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let back = b.visit(&format!("{}/authorize/continue", app.max)).await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.body);
    assert!(back.has("Готово") && !back.has("Запрос на вход устарел"), "{}", back.body);
    assert!(back.has(&format!("href=\"{}/\"", app.diary)), "a way back to the diary: {}", back.body);
    // Without a finished request in this browser the old answer stands.
    let stranger = Browser::new();
    let p = stranger.visit(&format!("{}/authorize/continue", app.max)).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    }
}

both_backends! {
    /// Item 3: the child's own «Отменить» on MAX's confirmation page returns to «Сферум» in the
    /// diary with a calm note, not a red «Не удалось выполнить действие».
    async fn cancel_on_the_confirmation_returns_to_the_diary_calmly(app) {
    let b = Browser::new();
    app.diary_login(&b, "student3").await;
    let phone_page = app.start_link(&b).await;
    let code_page = app.enter_phone(&b, &phone_page, NEW_PHONE).await;
    let after = b.follow(app.enter_code(&b, &code_page, &app.last_code(NEW_E164)).await).await;
    let confirm = b
        .submit(&format!("{}/login/register", app.max), &[("csrf", &after.csrf()), ("first_name", "Мария"), ("last_name", "Новая")])
        .await;
    assert!(confirm.url.contains("/authorize/continue"), "{}", confirm.body);
    let back = b.submit(&format!("{}/authorize/deny", app.max), &[("csrf", &confirm.csrf())]).await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.body);
    assert!(back.url.starts_with(&format!("{}/sferum", app.diary)), "{}", back.url);
    assert!(back.has("class=\"notice\"") && back.has("Вы отменили привязку"), "{}", back.body);
    assert!(!back.has("Не удалось выполнить действие") && !back.has("class=\"error\""), "{}", back.body);
    assert!(back.has("Перейти к подключению"), "the link can start again: {}", back.body);
    }
}

both_backends! {
    /// Item 10 and item 3: an unknown URL gives the site's page, in Russian, with its header and a
    /// way home (not an empty 404); an API path still gets JSON.
    async fn an_unknown_url_has_a_page_with_the_header_and_a_way_home(app) {
    let b = Browser::new();
    for (site, brand) in [(&app.diary, "Электронный дневник МЭШ"), (&app.max, "MAX")] {
        let p = b.get(&format!("{site}/no-such-page")).await;
        assert_eq!(p.status, StatusCode::NOT_FOUND);
        assert!(p.has("Страница не найдена"), "{}", p.body);
        assert!(p.has("class=\"topbar\"") && p.has(brand), "the site's header: {}", p.body);
        assert!(p.has("href=\"/\"") && p.has("На главную"), "a way home: {}", p.body);
    }
    let api = b.get(&format!("{}/api/v1/no-such-thing", app.diary)).await;
    assert_eq!(api.status, StatusCode::NOT_FOUND);
    assert!(api.body.starts_with("{\"error\""), "{}", api.body);
    }
}

both_backends! {
    /// Item 2: «Перейти к подключению» in tab A, then in tab B, then the phone in tab A goes on
    /// (no 403 «Форма устарела»), and the link completes. A form that is stale anyway (the session
    /// was replaced) comes back current with the number kept, so one more «Продолжить» goes on.
    async fn two_tabs_do_not_break_the_first(app) {
    let b = Browser::new();
    app.diary_login(&b, "student3").await;
    let tab_a = app.start_link(&b).await;
    let tab_b = app.start_link(&b).await;
    assert!(tab_b.has("Продолжить"), "{}", tab_b.body);
    let code_page = app.enter_phone(&b, &tab_a, NEW_PHONE).await;
    assert_eq!(code_page.status, StatusCode::OK, "tab A still works: {}", code_page.body);
    assert!(code_page.has("Перейти в MAX"), "{}", code_page.body);
    let after = b.follow(app.enter_code(&b, &code_page, &app.last_code(NEW_E164)).await).await;
    let confirm = b
        .submit(&format!("{}/login/register", app.max), &[("csrf", &after.csrf()), ("first_name", "Мария"), ("last_name", "Новая")])
        .await;
    let done = b.submit(&format!("{}/authorize/confirm", app.max), &[("csrf", &confirm.csrf())]).await;
    assert_eq!(done.url, format!("{}/sferum/linked", app.diary), "{}", done.body);

    // A stale form: refused (nothing sent), but the answer is the form again, current.
    let other = Browser::new();
    let login = other.visit(&format!("{}/login", app.max)).await;
    let stale = other.post(&format!("{}/login/phone", app.max), &[("csrf", "from-an-old-page"), ("phone", "+7 916 555-44-33")]).await;
    assert_eq!(stale.status, StatusCode::FORBIDDEN);
    assert!(stale.has("Страница обновлена") && stale.has("value=\"+7 916 555-44-33\""), "{}", stale.body);
    assert_eq!(stale.csrf(), login.csrf(), "the form comes back with the current token");
    assert!(app.inbox.to("+79165554433").is_empty());
    let again = app.enter_phone(&other, &stale, "+7 916 555-44-33").await;
    assert!(again.has("Перейти в MAX"), "one more «Продолжить» goes on: {}", again.body);
    }
}

both_backends! {
    /// Item 8: an unlinked student whose week has a distance lesson is told where those lessons
    /// are and given the link to start linking; once linked, the hint is gone.
    async fn an_unlinked_student_is_shown_how_to_join_distance_lessons(app) {
    let b = Browser::new();
    app.diary_login(&b, "student3").await;
    let home = b.get(&format!("{}/", app.diary)).await;
    assert!(home.has("дистанционный"), "the seed's week has a distance lesson: {}", home.body);
    assert!(home.has("Дистанционные уроки проходят в Сферуме"), "{}", home.body);
    assert!(home.has("href=\"/sferum\">Привязать Сферум</a>"), "{}", home.body);
    app.link(&b, NEW_PHONE, NEW_E164).await;
    let home = b.get(&format!("{}/", app.diary)).await;
    assert!(!home.has("Дистанционные уроки проходят в Сферуме"), "{}", home.body);
    }
}

both_backends! {
    /// Item 10: the teacher's «Сохранить» says «Сохранено», and a cancelled lesson can be put back.
    async fn a_teacher_sees_saved_and_can_restore_a_cancelled_lesson(app) {
    let t = Browser::new();
    app.diary_login(&t, "teacher").await;
    let diary = app.running.diary.as_ref().unwrap();
    let (lesson, starts): (String, i64) = edulink_store::sqlx::query_as(
        "SELECT id, starts_at FROM lessons WHERE class_id = 'class-7a' AND distance = 1 AND starts_at > $1 ORDER BY starts_at LIMIT 1",
    )
    .bind(diary.now() + 7200)
    .fetch_one(diary.db.pool())
    .await
    .unwrap();
    let url = format!("{}/lessons/{lesson}", app.diary);
    let form = t.get(&url).await;
    let (date, time) = edulink_diary::lessons::msk_fields(starts);
    let saved = t.submit(&url, &[("csrf", &form.csrf()), ("distance", "on"), ("call_url", ""), ("date", &date), ("time", &time)]).await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    assert!(saved.has("Сохранено."), "{}", saved.body);
    let cancelled = t.submit(&format!("{url}/cancel"), &[("csrf", &form.csrf()), ("confirm", "yes")]).await;
    assert!(cancelled.has("Урок отменён") && cancelled.has("Вернуть урок в расписание"), "{}", cancelled.body);
    let back = t.submit(&format!("{url}/restore"), &[("csrf", &form.csrf())]).await;
    assert!(back.has("Урок снова в расписании") && !back.has("Урок отменён"), "{}", back.body);
    assert!(back.has("Отменить урок"), "the lesson's settings are back: {}", back.body);
    }
}
