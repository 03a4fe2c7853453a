//! Сферум for real: class chats and the announcements channel, live delivery, unlinking out of every
//! chat, safe mode, distance lessons pushed from the diary (once per change), «Подключиться» and the
//! attendance that comes back to the diary.

use edulink_testkit::{Browser, FlowsExt, Page, TestApp, both_backends};
use reqwest::StatusCode;
use std::time::Duration;

const PHONE_A: (&str, &str) = ("+7 900 000-00-01", "+79000000001"); // the demo's existing profile
const PHONE_B: (&str, &str) = ("8 916 222-33-44", "+79162223344");
const PHONE_C: (&str, &str) = ("8 916 333-44-55", "+79163334455");
const PHONE_T: (&str, &str) = ("8 916 777-88-99", "+79167778899");
const PHONE_X: (&str, &str) = ("8 916 555-66-77", "+79165556677");
const PHONE_O: (&str, &str) = ("8 916 444-11-22", "+79164441122");

/// A diary user signed in and linked in a browser of their own.
pub(crate) async fn linked(app: &TestApp, login: &str, phone: (&str, &str)) -> Browser {
    let b = Browser::new();
    app.diary_login(&b, login).await;
    let done = app.link(&b, phone.0, phone.1).await;
    assert!(done.has("Ваша учетная запись успешно привязана"), "{login}: {}", done.body);
    b
}

/// «Сферум» from the diary: the «Сферум в MAX» page.
async fn sferum(app: &TestApp, b: &Browser) -> Page {
    let p = b.visit(&format!("{}/sferum", app.diary)).await;
    assert_eq!(p.url, format!("{}/sferum", app.max), "{}", p.body);
    p
}

/// The href after `marker` up to the closing quote.
fn href_after(body: &str, marker: &str) -> String {
    let i = body.find(marker).unwrap_or_else(|| panic!("no {marker} in {body}"));
    let rest = &body[i..];
    let start = rest.find("href=\"").map(|s| s + 6).unwrap();
    let slice = &rest[start..];
    slice[..slice.find('"').unwrap()].to_string()
}

/// The link of a chat on the «Сферум в MAX» page, by the text it shows.
fn chat_url(app: &TestApp, page: &Page, title: &str) -> String {
    let i = page.body.find(title).unwrap_or_else(|| panic!("no chat {title} on {}", page.body));
    let before = &page.body[..i];
    let start = before.rfind("href=\"").unwrap() + 6;
    let rel = &page.body[start..start + page.body[start..].find('"').unwrap()];
    format!("{}{rel}", app.max)
}

async fn post_message(b: &Browser, chat: &str, text: &str) -> Page {
    let page = b.get(chat).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    b.post(&format!("{chat}/messages"), &[("csrf", &page.csrf()), ("text", text)]).await
}

both_backends! {
    async fn class_chat_and_announcements_post_read_escape_members_and_history(app) {
    let a = linked(&app, "student1", PHONE_A).await;
    let b = linked(&app, "student2", PHONE_B).await;
    let t = linked(&app, "teacher", PHONE_T).await;

    let page_a = sferum(&app, &a).await;
    assert!(page_a.has("Чат класса 7 А") && page_a.has("Объявления: Школа № 1535"), "{}", page_a.body);
    let class_a = chat_url(&app, &page_a, "Чат класса 7 А");
    let news_a = chat_url(&app, &page_a, "Объявления: Школа № 1535");
    let page_t = sferum(&app, &t).await;
    assert_eq!(chat_url(&app, &page_t, "Чат класса 7 А"), class_a, "the teacher is in the same class chat");
    assert!(page_t.has("Чат класса 7 Б"), "and in every class they teach");

    // Post and read; markup is shown as text.
    let sent = post_message(&a, &class_a, "Привет! <b>жирный</b><script>alert(1)</script>").await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER);
    let read = b.get(&class_a).await;
    assert_eq!(read.status, StatusCode::OK);
    assert!(read.has("Привет! &#60;b&#62;жирный&#60;/b&#62;&#60;script&#62;alert(1)&#60;/script&#62;"), "{}", read.body);
    assert!(!read.has("<script>alert(1)"), "no markup injected");
    assert!(read.has("Алиса Иванова"), "the author by name");
    // The member list: both pupils and the teacher.
    for name in ["Алиса Иванова", "Борис Смирнов", "Ольга Сергеевна"] {
        assert!(read.body.matches(name).count() >= 1, "{name} among the members: {}", read.body);
    }
    assert!(read.has("Участники (3)"), "{}", read.body);

    // Limits: empty and too long are refused; nothing stored.
    assert_eq!(post_message(&b, &class_a, "   ").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(post_message(&b, &class_a, &"я".repeat(2001)).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(post_message(&b, &class_a, &"я".repeat(2000)).await.status, StatusCode::SEE_OTHER);

    // Announcements: pupils read, only teachers post.
    let refused = a.post(&format!("{news_a}/messages"), &[("csrf", &page_a.csrf()), ("text", "Я тоже хочу объявить")]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(!a.get(&news_a).await.has("Я тоже хочу объявить"));
    assert_eq!(post_message(&t, &news_a, "Завтра линейка в 8:00").await.status, StatusCode::SEE_OTHER);
    let news = b.get(&news_a).await;
    assert!(news.has("Завтра линейка в 8:00") && news.has("Ольга Сергеевна"), "{}", news.body);
    assert!(news.has("В этом канале пишут только учителя"), "no composer for pupils");

    // A CSRF token from another session is refused.
    let foreign = b.post(&format!("{class_a}/messages"), &[("csrf", &a.get(&class_a).await.csrf()), ("text", "x")]).await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);

    // History pages by cursor: 35 more messages; the newest page holds 30, the older page the rest.
    for i in 1..=35 {
        if i % 15 == 0 {
            app.clock.advance(61); // under the per-minute cap
        }
        assert_eq!(post_message(&b, &class_a, &format!("сообщение №{i}")).await.status, StatusCode::SEE_OTHER);
    }
    let newest = a.get(&class_a).await;
    assert!(newest.has("сообщение №35") && newest.has("сообщение №6<") && !newest.has("сообщение №5<"), "{}", newest.body);
    let older = href_after(&newest.body, "href=\"?before=");
    assert!(newest.has("Более ранние сообщения"));
    let page2 = a.get(&format!("{class_a}{older}")).await;
    assert_eq!(page2.status, StatusCode::OK);
    assert!(page2.has("сообщение №5<") && page2.has("сообщение №1<") && page2.has("Привет!"), "{}", page2.body);
    assert!(!page2.has("сообщение №6<"), "no overlap between pages");
    // A flood: the 21st message within a minute waits (from the start of a fresh minute window).
    let now = app.running.max.as_ref().unwrap().now();
    app.clock.advance(60 - now.rem_euclid(60) + 1);
    for i in 1..=20 {
        assert_eq!(post_message(&t, &class_a, &format!("поток {i}")).await.status, StatusCode::SEE_OTHER);
    }
    let flood = post_message(&t, &class_a, "поток 21").await;
    assert_eq!(flood.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(flood.headers.contains_key("retry-after"));
    assert!(!a.get(&class_a).await.has("поток 21"));
    // An unknown chat is 404; a chat of another class is 403 for a pupil.
    assert_eq!(a.get(&format!("{}/sferum/chats/nope", app.max)).await.status, StatusCode::NOT_FOUND);
    let class_b = chat_url(&app, &page_t, "Чат класса 7 Б");
    assert_eq!(a.get(&class_b).await.status, StatusCode::FORBIDDEN);
    assert_eq!(post_message_raw(&a, &class_b, &page_a.csrf()).await, StatusCode::FORBIDDEN);
    }
}

async fn post_message_raw(b: &Browser, chat: &str, csrf: &str) -> StatusCode {
    b.post(&format!("{chat}/messages"), &[("csrf", csrf), ("text", "чужой чат")]).await.status
}

/// Reads the stream until `pred` holds for what arrived, or the stream ends; returns what arrived
/// and whether it ended.
async fn read_until(resp: &mut reqwest::Response, seen: &mut String, pred: impl Fn(&str) -> bool) -> bool {
    loop {
        if pred(seen) {
            return false;
        }
        match tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await {
            Ok(Ok(Some(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(Ok(None)) | Ok(Err(_)) => return true,
            Err(_) => panic!("nothing arrived within 10 s; so far: {seen}"),
        }
    }
}

both_backends! {
    async fn live_delivery_reaches_a_second_member_and_unlink_closes_everything(app) {
    let a = linked(&app, "student1", PHONE_A).await;
    let b = linked(&app, "student2", PHONE_B).await;
    let class = chat_url(&app, &sferum(&app, &a).await, "Чат класса 7 А");
    assert_eq!(post_message(&b, &class, "Я Борис, до отвязки").await.status, StatusCode::SEE_OTHER);

    // B listens; A posts; B receives it live, as text in JSON.
    let mut stream = b.stream(&format!("{class}/events")).await;
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(stream.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut seen = String::new();
    assert_eq!(post_message(&a, &class, "Живое <i>сообщение</i>").await.status, StatusCode::SEE_OTHER);
    let ended = read_until(&mut stream, &mut seen, |s| s.contains("Живое <i>сообщение</i>")).await;
    assert!(!ended, "the stream stays open: {seen}");
    assert!(seen.contains("\"author\":\"Алиса Иванова\""), "{seen}");
    assert!(!seen.contains("Я Борис, до отвязки"), "only what is new");

    // B unlinks in the diary: the stream ends at once, reading and posting are refused.
    let confirm = b.visit(&format!("{}/passport/security/unlink", app.diary)).await;
    let done = b.submit(&format!("{}/passport/security/unlink", app.diary), &[("csrf", &confirm.csrf())]).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let ended = read_until(&mut stream, &mut seen, |_| false).await;
    assert!(ended, "the stream ended");
    assert!(seen.contains("event: end"), "{seen}");
    assert_eq!(b.get(&class).await.status, StatusCode::FORBIDDEN);
    assert_eq!(b.stream(&format!("{class}/events")).await.status(), StatusCode::FORBIDDEN);
    let csrf = b.visit(&format!("{}/sferum", app.max)).await.csrf();
    assert_eq!(post_message_raw(&b, &class, &csrf).await, StatusCode::FORBIDDEN);
    // B's chats are gone from the Сферум page, and the class sees B's past message without a name.
    let page_b = b.visit(&format!("{}/sferum", app.max)).await;
    assert!(!page_b.has("Чат класса 7 А") && !page_b.has("Объявления"), "{}", page_b.body);
    let read = a.get(&class).await;
    assert!(read.has("Я Борис, до отвязки") && read.has("Бывший участник"), "{}", read.body);
    assert!(!read.has("Борис Смирнов"), "the child's name is not shown: {}", read.body);
    }
}

/// A MAX account made directly in the messenger (no diary): phone, code, registration.
async fn max_user(app: &TestApp, phone: (&str, &str), first: &str, last: &str) -> Browser {
    let x = Browser::new();
    let phone_page = x.visit(&format!("{}/login", app.max)).await;
    let code_page = app.enter_phone(&x, &phone_page, phone.0).await;
    let after = x.follow(app.enter_code(&x, &code_page, &app.last_code(phone.1)).await).await;
    assert!(after.url.ends_with("/login/register"), "{}", after.url);
    let home = x
        .submit(
            &format!("{}/login/register", app.max),
            &[("csrf", &after.csrf()), ("first_name", first), ("last_name", last)],
        )
        .await;
    assert_eq!(home.status, StatusCode::OK);
    x
}

async fn search(app: &TestApp, b: &Browser, q: &str) -> Page {
    let url = format!("{}/sferum/people", app.max);
    let form = b.get(&url).await;
    let p = b.post(&url, &[("csrf", &form.csrf()), ("q", q)]).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    if q.starts_with('+') || q.starts_with('8') {
        // A phone is never echoed in full.
        let digits: String = q.chars().filter(|c| c.is_ascii_digit()).collect();
        assert!(!p.body.contains(&digits[1..]), "{}", p.body);
        assert!(p.has("***-**-"), "shown masked: {}", p.body);
    }
    p
}

/// The account id in the «Написать» form of a search result.
fn message_action(p: &Page) -> String {
    let i = p.body.find("/sferum/people/").unwrap_or_else(|| panic!("no result: {}", p.body));
    let rest = &p.body[i..];
    rest[..rest.find('"').unwrap()].to_string()
}

both_backends! {
    async fn safe_mode_keeps_pupils_within_their_school_and_chats(app) {
    let a = linked(&app, "student1", PHONE_A).await;
    let page_a = sferum(&app, &a).await;
    assert!(page_a.has("Безопасный режим включён"), "safe mode is on for a pupil");

    // A pupil of another school in the same diary.
    let diary = app.running.diary.as_ref().unwrap();
    for sql in [
        "INSERT INTO schools (id, name) VALUES ('school-2', 'Школа № 2')",
        "INSERT INTO classes (id, school_id, name) VALUES ('class-9a', 'school-2', '9 А')",
        "INSERT INTO users (id, login, password_hash, role, first_name, last_name, school_id, class_id, created_at) \
         SELECT 'student-o', 'other1', password_hash, 'student', 'Олег', 'Иванов', 'school-2', 'class-9a', created_at \
         FROM users WHERE id = 'student-1'",
    ] {
        diary.db.execute(edulink_store::sqlx::query(sql)).await.unwrap();
    }
    let o = linked(&app, "other1", PHONE_O).await;
    let x = max_user(&app, PHONE_X, "Незнакомец", "Взрослый").await;
    let c = linked(&app, "student3", PHONE_C).await; // same class as Алиса (7 А)
    let t = linked(&app, "teacher", PHONE_T).await;

    // The classmate finds Алиса by name and may write to her.
    let found = search(&app, &c, "алиса").await;
    assert!(found.has("Алиса Иванова") && found.has("Школа № 1535"), "{}", found.body);
    let action = message_action(&found);
    let dm = c.submit(&format!("{}{action}", app.max), &[("csrf", &found.csrf())]).await;
    assert!(dm.url.contains("/sferum/chats/"), "{}: {}", dm.url, dm.body);
    assert_eq!(c.post(&format!("{}/messages", dm.url), &[("csrf", &dm.csrf()), ("text", "Привет, Алиса")]).await.status, StatusCode::SEE_OTHER);
    assert!(a.get(&dm.url).await.has("Привет, Алиса"), "the direct conversation reaches her");
    // Her teacher finds her by phone.
    assert!(search(&app, &t, PHONE_A.0).await.has("Алиса Иванова"));

    // A stranger finds her neither by phone nor by name, and cannot write to her.
    for q in [PHONE_A.0, "Алиса", "Иванова"] {
        let p = search(&app, &x, q).await;
        assert!(!p.has("Алиса Иванова") && p.has("Никого не нашлось"), "{q}: {}", p.body);
    }
    let xs = search(&app, &x, "Сергеевна").await;
    assert!(xs.has("Ольга Сергеевна"), "adults stay findable: {}", xs.body);
    let refused = x.post(&format!("{}{action}", app.max), &[("csrf", &xs.csrf())]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(refused.has("в безопасном режиме"));
    // Nor can the stranger read the direct conversation.
    assert_eq!(x.get(&dm.url).await.status, StatusCode::FORBIDDEN);

    // The pupil of another school: does not find Алиса, and Алиса does not see him (his name or school).
    let p = search(&app, &o, "Иванова").await;
    assert!(!p.has("Алиса Иванова"), "{}", p.body);
    let p = search(&app, &a, "Олег").await;
    assert!(!p.has("Олег Иванов") && !p.has("Школа № 2"), "{}", p.body);
    let p = search(&app, &a, "Иванов").await;
    assert!(!p.has("Олег Иванов"), "{}", p.body);
    let p = search(&app, &o, PHONE_A.0).await;
    assert!(!p.has("Алиса"), "{}", p.body);
    // Nor does a teacher of another school see him.
    assert!(search(&app, &t, "Олег").await.has("Никого не нашлось"));
    // And Алиса cannot start a conversation with him even knowing his account id.
    let max = app.running.max.as_ref().unwrap();
    let oleg: String =
        edulink_store::sqlx::query_scalar("SELECT account_id FROM sferum_profiles WHERE search_name = 'олег иванов'")
            .fetch_one(max.db.pool())
            .await
            .unwrap();
    let p = a.post(&format!("{}/sferum/people/{oleg}/message", app.max), &[("csrf", &page_a.csrf())]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    }
}

/// The first distance lesson of 7 А that starts at least two hours from now: `(id, starts_at, ends_at)`.
async fn next_distance_lesson(app: &TestApp) -> (String, i64, i64) {
    let diary = app.running.diary.as_ref().unwrap();
    edulink_store::sqlx::query_as(
        "SELECT id, starts_at, ends_at FROM lessons WHERE class_id = 'class-7a' AND distance = 1 \
         AND starts_at > $1 ORDER BY starts_at LIMIT 1",
    )
    .bind(diary.now() + 7200)
    .fetch_one(diary.db.pool())
    .await
    .unwrap()
}

async fn max_messages(app: &TestApp, kind: &str) -> i64 {
    let max = app.running.max.as_ref().unwrap();
    edulink_store::sqlx::query_scalar("SELECT COUNT(*) FROM sferum_messages WHERE kind = $1")
        .bind(kind)
        .fetch_one(max.db.pool())
        .await
        .unwrap()
}

/// Delivers the newest lesson job again, as if the first delivery's acknowledgement was lost.
async fn redeliver_last_lesson_job(app: &TestApp) {
    let diary = app.running.diary.as_ref().unwrap();
    let id: String = edulink_store::sqlx::query_scalar(
        "SELECT id FROM outbox WHERE kind = 'lesson' AND done_at IS NOT NULL ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(diary.db.pool())
    .await
    .unwrap();
    diary
        .db
        .execute(
            edulink_store::sqlx::query("UPDATE outbox SET done_at = NULL, next_attempt_at = 0 WHERE id = $1").bind(&id),
        )
        .await
        .unwrap();
    assert!(edulink_diary::outbox::deliver(diary, &id).await.unwrap(), "delivered again");
}

both_backends! {
    async fn lesson_changes_are_pushed_once_each_even_when_delivered_twice(app) {
    let a = linked(&app, "student1", PHONE_A).await;
    let t = Browser::new();
    app.diary_login(&t, "teacher").await;
    let (lesson, starts, _) = next_distance_lesson(&app).await;
    let form = t.get(&format!("{}/lessons/{lesson}", app.diary)).await;
    assert!(form.has("Провести урок дистанционно в Сферуме"), "{}", form.body);
    let (date, _) = edulink_diary::lessons::msk_fields(starts);

    // Move: one hour later, with the teacher's own call link.
    let (_, new_time) = edulink_diary::lessons::msk_fields(starts + 3600);
    let saved = t
        .post(
            &format!("{}/lessons/{lesson}", app.diary),
            &[("csrf", &form.csrf()), ("distance", "on"), ("call_url", "https://call.example.org/r/42"), ("date", &date), ("time", &new_time)],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    assert_eq!(max_messages(&app, "lesson_moved").await, 1);
    redeliver_last_lesson_job(&app).await;
    assert_eq!(max_messages(&app, "lesson_moved").await, 1, "a second delivery changes nothing");
    let page = sferum(&app, &a).await;
    assert!(page.has(&new_time), "the moved time on the Сферум page: {}", page.body);
    let class = chat_url(&app, &page, "Чат класса 7 А");
    let chat = a.get(&class).await;
    assert!(chat.has("перенесён на") && chat.has(&new_time), "{}", chat.body);

    // Create: a lesson that was not a distance lesson becomes one.
    let diary = app.running.diary.as_ref().unwrap();
    let (plain, plain_starts): (String, i64) = edulink_store::sqlx::query_as(
        "SELECT id, starts_at FROM lessons WHERE class_id = 'class-7a' AND distance = 0 AND starts_at > $1 ORDER BY starts_at LIMIT 1",
    )
    .bind(diary.now() + 7200)
    .fetch_one(diary.db.pool())
    .await
    .unwrap();
    let (pdate, ptime) = edulink_diary::lessons::msk_fields(plain_starts);
    let form = t.get(&format!("{}/lessons/{plain}", app.diary)).await;
    let saved = t
        .post(
            &format!("{}/lessons/{plain}", app.diary),
            &[("csrf", &form.csrf()), ("distance", "on"), ("call_url", ""), ("date", &pdate), ("time", &ptime)],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    assert_eq!(max_messages(&app, "lesson_created").await, 1);
    redeliver_last_lesson_job(&app).await;
    assert_eq!(max_messages(&app, "lesson_created").await, 1);

    // No longer a distance lesson: the class hears it is held in class (not that it is cancelled).
    let form = t.get(&format!("{}/lessons/{plain}", app.diary)).await;
    let saved = t
        .post(
            &format!("{}/lessons/{plain}", app.diary),
            &[("csrf", &form.csrf()), ("call_url", ""), ("date", &pdate), ("time", &ptime)],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    assert_eq!(max_messages(&app, "lesson_in_class").await, 1);
    redeliver_last_lesson_job(&app).await;
    assert_eq!(max_messages(&app, "lesson_in_class").await, 1);
    assert_eq!(max_messages(&app, "lesson_cancelled").await, 0);
    let chat = a.get(&class).await;
    assert!(chat.has("пройдёт в классе"), "{}", chat.body);
    let join = a.get(&format!("{}/sferum/lessons/mesh/{plain}/join", app.max)).await;
    assert_eq!(join.status, StatusCode::FORBIDDEN);
    assert!(join.has("Урок пройдёт в классе"), "{}", join.body);

    // Cancel the moved lesson.
    let form = t.get(&format!("{}/lessons/{lesson}", app.diary)).await;
    let cancelled = t.post(&format!("{}/lessons/{lesson}/cancel", app.diary), &[("csrf", &form.csrf())]).await;
    assert_eq!(cancelled.status, StatusCode::BAD_REQUEST, "not without the confirmation");
    assert_eq!(max_messages(&app, "lesson_cancelled").await, 0);
    let cancelled = t
        .post(&format!("{}/lessons/{lesson}/cancel", app.diary), &[("csrf", &form.csrf()), ("confirm", "yes")])
        .await;
    assert_eq!(cancelled.status, StatusCode::SEE_OTHER);
    assert_eq!(max_messages(&app, "lesson_cancelled").await, 1);
    redeliver_last_lesson_job(&app).await;
    assert_eq!(max_messages(&app, "lesson_cancelled").await, 1);
    let page = sferum(&app, &a).await;
    assert!(page.has("Отменён"), "{}", page.body);
    // «Подключиться» to a cancelled lesson is refused.
    let join = a.get(&format!("{}/sferum/lessons/mesh/{lesson}/join", app.max)).await;
    assert_eq!(join.status, StatusCode::FORBIDDEN);
    assert!(join.has("Урок отменён"));

    // A stale revision arriving late does not roll anything back.
    let max = app.running.max.as_ref().unwrap();
    let l = edulink_diary::repo::lesson(&diary.db, &plain).await.unwrap().unwrap();
    let mut push = edulink_diary::sferum::push_of(diary, &l).await.unwrap();
    push.lesson.revision -= 1;
    push.lesson.starts_at += 86_400;
    push.lesson.ends_at += 86_400;
    let outcome = edulink_sferum::push_lesson(&max.db, "mesh", &push, max.now()).await.unwrap();
    assert!(!outcome.applied);
    let stored: i64 = edulink_store::sqlx::query_scalar("SELECT starts_at FROM sferum_lessons WHERE id = $1")
        .bind(format!("mesh:{plain}"))
        .fetch_one(max.db.pool())
        .await
        .unwrap();
    assert_eq!(stored, plain_starts);

    // A pupil cannot change lessons; a bad call link is refused with a message.
    let sform = a.get(&format!("{}/lessons/{plain}", app.diary)).await;
    assert!(!sform.has("Провести урок дистанционно"));
    let refused = a
        .post(
            &format!("{}/lessons/{plain}", app.diary),
            &[("csrf", &hidden_csrf(&sform)), ("call_url", ""), ("date", &pdate), ("time", &ptime)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let form = t.get(&format!("{}/lessons/{plain}", app.diary)).await;
    let bad = t
        .post(
            &format!("{}/lessons/{plain}", app.diary),
            &[("csrf", &form.csrf()), ("distance", "on"), ("call_url", "javascript:alert(1)"), ("date", &pdate), ("time", &ptime)],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.has("https://"));
    }
}

fn hidden_csrf(p: &Page) -> String {
    edulink_testkit::hidden(&p.body, "csrf").expect("logout form csrf")
}

both_backends! {
    async fn join_opens_ten_minutes_early_closes_at_the_end_and_attendance_reaches_the_diary(app) {
    let (lesson, starts, ends) = next_distance_lesson(&app).await;
    let diary_now = app.running.diary.as_ref().unwrap().now();
    // Twenty minutes before the lesson.
    app.clock.advance(starts - 20 * 60 - diary_now);
    let a = linked(&app, "student1", PHONE_A).await;
    let join = format!("{}/sferum/lessons/mesh/{lesson}/join", app.max);
    let early = a.get(&join).await;
    assert_eq!(early.status, StatusCode::FORBIDDEN);
    assert!(early.has("Подключиться можно с"), "{}", early.body);
    let home = a.get(&format!("{}/", app.diary)).await;
    assert!(!home.has(&format!("/sferum/lessons/{lesson}")), "no «Подключиться» before the window");

    // Five minutes before: one click from the diary's lesson list lands in the lesson room.
    app.clock.advance(15 * 60);
    let home = a.get(&format!("{}/", app.diary)).await;
    let button = format!("/sferum/lessons/{lesson}");
    assert!(home.has(&button) && home.has("Подключиться"), "{}", home.body);
    // A browser's speculative prefetch of «Подключиться» records nothing.
    let prefetch = a.get_with(&join, "sec-purpose", "prefetch").await;
    assert_eq!(prefetch.status, StatusCode::NO_CONTENT);
    let max = app.running.max.as_ref().unwrap();
    let none: i64 = edulink_store::sqlx::query_scalar("SELECT COUNT(*) FROM sferum_attendance")
        .fetch_one(max.db.pool())
        .await
        .unwrap();
    assert_eq!(none, 0);
    let room = a.visit(&format!("{}{button}", app.diary)).await;
    assert!(room.url.starts_with(&format!("{}/sferum/chats/", app.max)), "{}: {}", room.url, room.body);
    assert!(room.has("Открыть видеосвязь") && room.has("https://call.sferum.example/room/"), "{}", room.body);
    assert!(room.has("Урок: "), "{}", room.body);
    // The lesson's own chat works like any chat of the class.
    assert_eq!(a.post(&format!("{}/messages", room.url), &[("csrf", &room.csrf()), ("text", "Я на уроке")]).await.status, StatusCode::SEE_OTHER);
    assert!(a.get(&room.url).await.has("Я на уроке"));
    // Joining twice keeps the first time.
    let joined_at: i64 = {
        let max = app.running.max.as_ref().unwrap();
        edulink_store::sqlx::query_scalar("SELECT joined_at FROM sferum_attendance WHERE lesson_id = $1")
            .bind(format!("mesh:{lesson}"))
            .fetch_one(max.db.pool())
            .await
            .unwrap()
    };
    app.clock.advance(60);
    assert_eq!(a.get(&join).await.status, StatusCode::SEE_OTHER);
    let rows: Vec<(i64,)> = edulink_store::sqlx::query_as("SELECT joined_at FROM sferum_attendance WHERE lesson_id = $1")
        .bind(format!("mesh:{lesson}"))
        .fetch_all(max.db.pool())
        .await
        .unwrap();
    assert_eq!(rows, vec![(joined_at,)], "one row, the first join");

    // The teacher sees who joined and when, in the diary.
    let t = Browser::new();
    app.diary_login(&t, "teacher").await;
    let page = t.get(&format!("{}/lessons/{lesson}", app.diary)).await;
    assert!(page.has("Кто подключился"), "{}", page.body);
    assert!(page.has("Алиса Иванова"), "{}", page.body);
    assert!(page.has(&edulink_diary::lessons::msk_fields(joined_at).1), "{}", page.body);
    let diary = app.running.diary.as_ref().unwrap();
    let kept: i64 = edulink_store::sqlx::query_scalar("SELECT COUNT(*) FROM attendance WHERE lesson_id = $1")
        .bind(&lesson)
        .fetch_one(diary.db.pool())
        .await
        .unwrap();
    assert_eq!(kept, 1, "kept by the diary");

    // After the end: refused. (Visit pages on the way so the sessions stay alive.)
    let mut now = starts - 4 * 60;
    while now < ends {
        app.clock.advance(20 * 60);
        now += 20 * 60;
        a.get(&format!("{}/sferum", app.max)).await;
    }
    let late = a.get(&join).await;
    assert_eq!(late.status, StatusCode::FORBIDDEN);
    assert!(late.has("Урок уже закончился"), "{}", late.body);
    }
}
