//! Limits under races (issue 20): every limit that protects a secret takes its attempt in the
//! database before the secret is evaluated, so 50 attempts sent together never evaluate more than
//! the limit — over HTTP, and at the storage layer 50 times over (OWASP ASVS 5.0 V6.3.1, NIST SP
//! 800-63B §3.2.2). Evaluations are counted for real: by the answers that only an evaluation gives
//! (401, 200, 303 against 429), and for SMS codes, where a locked phone answers exactly like a wrong
//! code on purpose, by the `edulink_code_evaluations_total` counter (nextest runs each test in its
//! own process, so the counter is this test's).

use edulink_testkit::{Browser, FlowsExt, both_backends};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;

/// A counter's value in the Prometheus text of this process.
fn counter(name: &str) -> f64 {
    let text = edulink_web::ops::prometheus().expect("recorder").render();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

async fn api_post(url: String, body: Value) -> StatusCode {
    reqwest::Client::new().post(url).json(&body).send().await.unwrap().status()
}

/// Sends `n` requests at once; returns their statuses.
async fn all_at_once<F, Fut>(n: usize, f: F) -> Vec<StatusCode>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = StatusCode> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(f(i))).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn count(statuses: &[StatusCode], s: StatusCode) -> usize {
    statuses.iter().filter(|x| **x == s).count()
}

both_backends! {
    /// The diary's password throttle per login (10 an hour): 50 wrong passwords at once on the
    /// API and 50 on the web form give exactly 10 evaluations (401) and 40 refusals (429); 29 wrong
    /// and the right one at once evaluate at most 10. Before the fix all 30 were evaluated.
    async fn fifty_parallel_passwords_evaluate_at_most_the_login_limit(app) {
        let url = format!("{}/api/v1/sessions", app.diary);
        let api = all_at_once(50, |_| api_post(url.clone(), json!({ "login": "student8", "password": "guess" }))).await;
        assert_eq!((count(&api, StatusCode::UNAUTHORIZED), count(&api, StatusCode::TOO_MANY_REQUESTS)), (10, 40), "{api:?}");

        let forms: Vec<(Arc<Browser>, String)> = {
            let mut v = Vec::new();
            for _ in 0..50 {
                let b = Arc::new(Browser::new());
                let page = b.get(&format!("{}/login", app.diary)).await;
                v.push((b, page.csrf()));
            }
            v
        };
        let forms = Arc::new(forms);
        let login_url = format!("{}/login", app.diary);
        let web = all_at_once(50, |i| {
            let (forms, url) = (forms.clone(), login_url.clone());
            async move {
                let (b, csrf) = &forms[i];
                b.post(&url, &[("csrf", csrf), ("login", "student9"), ("password", "guess")]).await.status
            }
        })
        .await;
        assert_eq!((count(&web, StatusCode::UNAUTHORIZED), count(&web, StatusCode::TOO_MANY_REQUESTS)), (10, 40), "{web:?}");

        // 29 wrong and the right one together: never more than 10 evaluated.
        let mixed = all_at_once(30, |i| {
            api_post(url.clone(), json!({ "login": "student7", "password": if i == 17 { "demo" } else { "guess" } }))
        })
        .await;
        let evaluated = count(&mixed, StatusCode::UNAUTHORIZED) + count(&mixed, StatusCode::CREATED);
        assert!(evaluated <= 10, "{evaluated} passwords evaluated: {mixed:?}");
        assert_eq!(count(&mixed, StatusCode::TOO_MANY_REQUESTS), 30 - evaluated);

        // The same race at the storage layer, 50 times: 50 reservations at once, exactly 10 taken.
        let st = app.running.diary.as_ref().unwrap();
        let now = st.now();
        for round in 0..50 {
            let limits = Arc::new(vec![edulink_store::Limit { bucket: format!("race:{round}"), window: 3600, cap: 10 }]);
            let tasks: Vec<_> = (0..50)
                .map(|_| {
                    let (db, limits) = (st.db.clone(), limits.clone());
                    tokio::spawn(async move { edulink_store::reserve(&db, &limits, now).await.unwrap().is_ok() })
                })
                .collect();
            let mut taken = 0;
            for t in tasks {
                taken += usize::from(t.await.unwrap());
            }
            assert_eq!(taken, 10, "round {round}");
        }
    }

    /// The per-IP cap (100 wrong passwords an hour): after 80, 50 at once for 50 different logins
    /// from the same address evaluate exactly 20.
    async fn fifty_parallel_passwords_from_one_address_evaluate_at_most_the_ip_limit(app) {
        let url = format!("{}/api/v1/sessions", app.diary);
        for i in 0..80 {
            let s = api_post(url.clone(), json!({ "login": format!("nobody{i}"), "password": "guess" })).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED);
        }
        let statuses =
            all_at_once(50, |i| api_post(url.clone(), json!({ "login": format!("someone{i}"), "password": "guess" })))
                .await;
        assert_eq!(
            (count(&statuses, StatusCode::UNAUTHORIZED), count(&statuses, StatusCode::TOO_MANY_REQUESTS)),
            (20, 30),
            "{statuses:?}"
        );
    }

    /// SMS codes per code (5 tries) and per phone (20 guesses between locks): five codes sent to
    /// one phone, 50 wrong guesses at once spread over them. Without the per-phone reservation all
    /// 25 tries were evaluated; now exactly 20 are, and the phone is locked.
    async fn fifty_parallel_guesses_on_one_phone_evaluate_at_most_the_phone_limit(app) {
        const PHONE: &str = "+7 916 410-20-30";
        const E164: &str = "+79164102030";
        let mut challenges = Vec::new();
        for i in 0..5 {
            if i > 0 {
                app.clock.advance(61);
            }
            let resp = reqwest::Client::new()
                .post(format!("{}/api/v1/auth/codes", app.max))
                .json(&json!({ "phone": PHONE }))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::ACCEPTED);
            let sent: Value = resp.json().await.unwrap();
            challenges.push(sent["challenge_id"].as_str().unwrap().to_string());
        }
        let right = app.last_code(E164);
        let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 1) % 1_000_000);
        let before = counter("edulink_code_evaluations_total");
        let challenges = Arc::new(challenges);
        let url = format!("{}/api/v1/auth/codes/verify", app.max);
        let statuses = all_at_once(50, |i| {
            let body = json!({ "challenge_id": challenges[i % 5], "code": wrong });
            api_post(url.clone(), body)
        })
        .await;
        assert_eq!(count(&statuses, StatusCode::BAD_REQUEST), 50, "{statuses:?}");
        let evaluated = counter("edulink_code_evaluations_total") - before;
        assert_eq!(evaluated, 20.0, "guesses evaluated");
        // Locked: even the right code on a fresh-looking challenge is not evaluated now.
        let st = app.running.max.as_ref().unwrap();
        let hash = st.secrets.phone_hash.keyed_hash("phone", E164);
        let locked: i64 = edulink_store::sqlx::query_scalar("SELECT locked_until FROM phone_state WHERE phone_hash = $1")
            .bind(&hash)
            .fetch_one(st.db.pool())
            .await
            .unwrap();
        assert!(locked > st.now());

        // The same race at the storage layer, 50 times: 50 guesses at once on a fresh phone, each a
        // transaction taking from the phone's allowance, exactly 20 taken.
        let policy = edulink_domain::CodePolicy::default();
        let now = st.now();
        for round in 0..50 {
            let phone = format!("race-phone-{round}");
            let tasks: Vec<_> = (0..50)
                .map(|_| {
                    let (db, phone) = (st.db.clone(), phone.clone());
                    tokio::spawn(async move {
                        edulink_store::retry(|| async {
                            let mut tx = db.begin().await?;
                            let taken = edulink_max::limits::reserve_guess(&mut tx, &phone, now, &policy).await?;
                            tx.commit().await?;
                            Ok(taken.is_some())
                        })
                        .await
                        .unwrap()
                    })
                })
                .collect();
            let mut taken = 0;
            for t in tasks {
                taken += usize::from(t.await.unwrap());
            }
            assert_eq!(taken, 20, "round {round}");
        }
    }

    /// People search (30 an hour) and chat posts (20 a minute): 50 at once, exactly the limit served.
    async fn fifty_parallel_searches_and_chat_posts_serve_exactly_the_limit(app) {
        let b = Arc::new(Browser::new());
        app.diary_login(&b, "student1").await;
        let done = app.link(&b, "+7 900 000-00-01", "+79000000001").await;
        assert!(done.has("Ваша учетная запись успешно привязана"), "{}", done.body);
        let people = format!("{}/sferum/people", app.max);
        let csrf = b.get(&people).await.csrf();
        let searches = all_at_once(50, |_| {
            let (b, url, csrf) = (b.clone(), people.clone(), csrf.clone());
            async move { b.post(&url, &[("csrf", &csrf), ("q", "Борис")]).await.status }
        })
        .await;
        assert_eq!((count(&searches, StatusCode::OK), count(&searches, StatusCode::TOO_MANY_REQUESTS)), (30, 20));

        let page = b.visit(&format!("{}/sferum", app.diary)).await;
        let i = page.body.find("Чат класса 7 А").expect("class chat");
        let start = page.body[..i].rfind("href=\"").unwrap() + 6;
        let chat = format!("{}{}", app.max, &page.body[start..start + page.body[start..].find('"').unwrap()]);
        let csrf = b.get(&chat).await.csrf();
        let now = app.running.max.as_ref().unwrap().now();
        app.clock.advance(60 - now.rem_euclid(60) + 1);
        let posts = all_at_once(50, |i| {
            let (b, url, csrf) = (b.clone(), format!("{chat}/messages"), csrf.clone());
            async move { b.post(&url, &[("csrf", &csrf), ("text", &format!("сообщение {i}"))]).await.status }
        })
        .await;
        assert_eq!((count(&posts, StatusCode::SEE_OTHER), count(&posts, StatusCode::TOO_MANY_REQUESTS)), (20, 30));
    }
}

/// The password limit holds across instances: 50 wrong passwords at once through a balancer that
/// sends each request to the next of two diary instances on one PostgreSQL evaluate exactly 10.
#[tokio::test]
async fn the_password_limit_holds_across_instances() {
    let Some(c) = crate::scale::Cluster::start().await else { return };
    let url = format!("{}/api/v1/sessions", c.app.diary);
    let statuses =
        all_at_once(50, |_| api_post(url.clone(), json!({ "login": "student8", "password": "guess" }))).await;
    assert_eq!(
        (count(&statuses, StatusCode::UNAUTHORIZED), count(&statuses, StatusCode::TOO_MANY_REQUESTS)),
        (10, 40),
        "{statuses:?}"
    );
    c.stop().await;
}
