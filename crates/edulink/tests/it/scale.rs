//! Several instances on one PostgreSQL, and concurrency on both backends (docs/architecture.md, «Storage» and «Rules»).

use edulink::app::Role;
use edulink_domain::ManualClock;
use edulink_testkit::{
    Backend, Browser, FlowsExt, Party, TestApp, TestAppRef, both_backends, both_backends_with, drop_schemas,
    postgres_available, round_robin, spawn_party, test_config,
};
use reqwest::StatusCode;
use std::sync::Arc;

const PHONE_A: &str = "+7 916 300-00-01";
const E164_A: &str = "+79163000001";
const PHONE_B: &str = "+7 916 300-00-02";
const E164_B: &str = "+79163000002";

/// Two MAX and two diary instances on one PostgreSQL, each party behind a round-robin balancer.
pub(crate) struct Cluster {
    pub(crate) app: TestAppRef,
    pub(crate) maxes: Vec<Party>,
    pub(crate) diaries: Vec<Party>,
    pub(crate) max_instances: Vec<String>,
    diary_instances: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub(crate) async fn start() -> Option<Self> {
        if !postgres_available().await {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(Backend::Postgres, dir.path()).with_secrets().unwrap();
        let max_lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let diary_lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        config.max.public_url = Some(format!("http://{}", max_lb.local_addr().unwrap()));
        config.diary.public_url = Some(format!("http://{}", diary_lb.local_addr().unwrap()));
        let clock = Arc::new(ManualClock::default());
        let inbox = edulink_sms::DevInbox::default();
        let (mut maxes, mut diaries, mut max_addrs, mut diary_addrs) = (vec![], vec![], vec![], vec![]);
        for _ in 0..2 {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            max_addrs.push(l.local_addr().unwrap());
            maxes.push(spawn_party(&config, Role::Max, l, clock.clone(), &inbox).await);
        }
        for _ in 0..2 {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            diary_addrs.push(l.local_addr().unwrap());
            diaries.push(spawn_party(&config, Role::Diary, l, clock.clone(), &inbox).await);
        }
        round_robin(max_lb, max_addrs.clone());
        round_robin(diary_lb, diary_addrs.clone());
        let app = TestApp::from_parties(config, clock, &maxes[0], &diaries[0]);
        Some(Self {
            max_instances: max_addrs.iter().map(|a| format!("http://{a}")).collect(),
            diary_instances: diary_addrs.iter().map(|a| format!("http://{a}")).collect(),
            app,
            maxes,
            diaries,
            _dir: dir,
        })
    }

    /// A browser whose every request goes to the other instance than the one before.
    pub(crate) fn hopping_browser(&self) -> Browser {
        Browser::hopping(vec![
            (self.app.max.clone(), self.max_instances.clone()),
            (self.app.diary.clone(), self.diary_instances.clone()),
        ])
    }

    pub(crate) async fn stop(self) {
        for p in self.maxes.into_iter().chain(self.diaries) {
            p.running.stop().await;
        }
        drop_schemas(&self.app.config).await;
    }
}

#[tokio::test]
async fn flows_hop_between_instances_on_every_request() {
    let Some(c) = Cluster::start().await else { return };
    let b = c.hopping_browser();
    c.app.diary_login(&b, "student1").await;
    // Sessions, OIDC transactions, codes and keys all live in the database: every step may land on
    // another instance and the link still completes.
    let done = c.app.link(&b, PHONE_A, E164_A).await;
    assert!(done.has("Ваша учетная запись успешно привязана"), "{}", done.body);
    for _ in 0..4 {
        let sferum = b.visit(&format!("{}/sferum", c.app.diary)).await;
        assert!(sferum.has("Чат класса 7 А"), "{}", sferum.body);
    }
    let confirm = b.visit(&format!("{}/passport/security/unlink", c.app.diary)).await;
    let gone = b.submit(&format!("{}/passport/security/unlink", c.app.diary), &[("csrf", &confirm.csrf())]).await;
    assert!(gone.has("Аккаунт «Сферум» отвязан"));
    c.stop().await;
}

#[tokio::test]
async fn a_code_issued_by_one_instance_is_redeemed_at_the_other() {
    let Some(c) = Cluster::start().await else { return };
    // Everything at MAX instance 0 (no hopping)...
    let m0 = Browser::new();
    let base0 = &c.max_instances[0];
    let login = m0.visit(&format!("{base0}/login")).await;
    let code = m0.submit(&format!("{base0}/login/phone"), &[("csrf", &login.csrf()), ("phone", PHONE_B)]).await;
    let sms = c.app.inbox.to(E164_B);
    let digits = sms.last().unwrap().text.rsplit('#').next().unwrap().trim().to_string();
    let reg = m0.submit(&format!("{base0}/login/code"), &[("csrf", &code.csrf()), ("code", &digits)]).await;
    m0.submit(
        &format!("{base0}/login/register"),
        &[("csrf", &reg.csrf()), ("first_name", "Ия"), ("last_name", "Тест")],
    )
    .await;
    let verifier = edulink_domain::crypto::random_token(32);
    let redirect = format!("{}/sferum/callback", c.app.diary);
    let url = reqwest::Url::parse_with_params(
        &format!("{base0}/oauth/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", "mesh"),
            ("redirect_uri", redirect.as_str()),
            ("scope", "openid"),
            ("code_challenge", &edulink_domain::oauth::pkce_s256(&verifier)),
            ("code_challenge_method", "S256"),
        ],
    )
    .unwrap();
    let confirm = m0.visit(url.as_str()).await;
    let back = m0.post(&format!("{base0}/authorize/confirm"), &[("csrf", &confirm.csrf())]).await;
    let loc = reqwest::Url::parse(back.location.as_deref().unwrap()).unwrap();
    let code = loc.query_pairs().find(|(k, _)| k == "code").unwrap().1.to_string();
    // ...redeemed at instance 1.
    let resp = reqwest::Client::new()
        .post(format!("{}/oauth/token", c.max_instances[1]))
        .basic_auth("mesh", c.app.config.diary.client_secret.as_deref())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    c.stop().await;
}

#[tokio::test]
async fn send_limits_and_failure_counters_hold_across_instances() {
    let Some(c) = Cluster::start().await else { return };
    let b = c.hopping_browser();
    let login = b.visit(&format!("{}/login", c.app.max)).await;
    let code_page = c.app.enter_phone(&b, &login, PHONE_A).await;
    // The send landed on one instance; the resend goes to the other and is refused all the same.
    let resend = b.post(&format!("{}/login/resend", c.app.max), &[("csrf", &code_page.csrf())]).await;
    assert_eq!(resend.status, StatusCode::TOO_MANY_REQUESTS);
    let right = c.app.last_code(E164_A);
    let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 1) % 1_000_000);
    for _ in 0..5 {
        let p = c.app.enter_code(&b, &code_page, &wrong).await;
        assert!(p.has("Неверный код"));
    }
    // The sixth try, on whichever instance, finds the code dead.
    let p = c.app.enter_code(&b, &code_page, &right).await;
    assert!(p.has("Код больше не действует"), "{}", p.body);
    c.stop().await;
}

/// Signs a fresh browser in to MAX as `phone` (registering it if new).
async fn max_browser(app: &TestApp, phone: &str, e164: &str) -> Browser {
    let b = Browser::new();
    let login = b.visit(&format!("{}/login", app.max)).await;
    let code = app.enter_phone(&b, &login, phone).await;
    let after = b.follow(app.enter_code(&b, &code, &app.last_code(e164)).await).await;
    if after.url.ends_with("/login/register") {
        b.submit(
            &format!("{}/login/register", app.max),
            &[("csrf", &after.csrf()), ("first_name", "Ян"), ("last_name", "Тест")],
        )
        .await;
    }
    b
}

both_backends_with! {
    // 50 link attempts in a row: the per-account hourly cap on link attempts is raised for this test.
    |c: &mut edulink::config::Config| c.diary.link_starts_per_hour = 100;
    async fn fifty_simultaneous_link_completions_leave_exactly_one_link(app) {
        let student = Arc::new(Browser::new());
        app.diary_login(&student, "student1").await;
        let accounts = [max_browser(&app, PHONE_A, E164_A).await, max_browser(&app, PHONE_B, E164_B).await];
        // 50 link attempts of the same student, confirmed alternately with two MAX accounts.
        let mut callbacks = Vec::new();
        for i in 0..50 {
            let connect = student.visit(&format!("{}/sferum", app.diary)).await;
            let to_max = student.post(&format!("{}/sferum/connect", app.diary), &[("csrf", &connect.csrf())]).await;
            let m = &accounts[i % 2];
            let confirm = m.visit(to_max.location.as_deref().unwrap()).await;
            let back = m.post(&format!("{}/authorize/confirm", app.max), &[("csrf", &confirm.csrf())]).await;
            callbacks.push(back.location.unwrap());
        }
        // All 50 callbacks at once, from the student's browser.
        let tasks: Vec<_> = callbacks
            .into_iter()
            .map(|url| {
                let s = student.clone();
                tokio::spawn(async move { s.get(&url).await })
            })
            .collect();
        let mut linked = 0;
        let mut conflicts = 0;
        for t in tasks {
            let p = t.await.unwrap();
            match p.status {
                StatusCode::SEE_OTHER if p.location.as_deref().is_some_and(|l| l.ends_with("/sferum/linked")) => linked += 1,
                StatusCode::CONFLICT if p.has("уже привязан учебный профиль") => conflicts += 1,
                other => panic!("unexpected answer {other}: {}", p.body),
            }
        }
        assert_eq!((linked, conflicts), (1, 49));
        let st = app.running.diary.as_ref().unwrap();
        let n: i64 = edulink_store::sqlx::query_scalar("SELECT COUNT(*) FROM links").fetch_one(st.db.pool()).await.unwrap();
        assert_eq!(n, 1);

        // The same race at the storage layer, 50 times: 50 concurrent inserts of one student's link
        // with two subjects; the constraint lets exactly one through, the rest are conflicts.
        for round in 0..50 {
            st.db.execute(edulink_store::sqlx::query("DELETE FROM links WHERE user_id = 'student-2'")).await.unwrap();
            let tasks: Vec<_> = (0..50)
                .map(|i| {
                    let db = st.db.clone();
                    tokio::spawn(async move {
                        db.execute(edulink_store::sqlx::query(
                            "INSERT INTO links (user_id, issuer, subject, linked_at) VALUES ('student-2', 'iss', $1, 0)",
                        )
                        .bind(format!("sub-{}-{round}", i % 2)))
                        .await
                    })
                })
                .collect();
            let (mut ok, mut conflict) = (0, 0);
            for t in tasks {
                match t.await.unwrap() {
                    Ok(_) => ok += 1,
                    Err(edulink_store::StoreError::Conflict(_)) => conflict += 1,
                    Err(e) => panic!("round {round}: {e}"),
                }
            }
            assert_eq!((ok, conflict), (1, 49), "round {round}");
        }
    }
}

both_backends! {
    async fn a_hundred_simultaneous_guesses_evaluate_at_most_five(app) {
        let b = Arc::new(Browser::new());
        let login = b.visit(&format!("{}/login", app.max)).await;
        let page = app.enter_phone(&b, &login, PHONE_A).await;
        let csrf = page.csrf();
        let right = app.last_code(E164_A);
        let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 1) % 1_000_000);
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (b, url, csrf, wrong) = (b.clone(), format!("{}/login/code", app.max), csrf.clone(), wrong.clone());
                tokio::spawn(async move { b.post(&url, &[("csrf", &csrf), ("code", &wrong)]).await })
            })
            .collect();
        let mut evaluated = 0;
        for t in tasks {
            let p = t.await.unwrap();
            assert_eq!(p.status, StatusCode::BAD_REQUEST);
            if p.has("Неверный код") {
                evaluated += 1;
            }
        }
        assert!(evaluated <= 5, "{evaluated} guesses were evaluated");
        let st = app.running.max.as_ref().unwrap();
        let hash = st.secrets.phone_hash.keyed_hash("phone", E164_A);
        let failures: i64 = edulink_store::sqlx::query_scalar("SELECT failures FROM phone_state WHERE phone_hash = $1")
            .bind(&hash)
            .fetch_one(st.db.pool())
            .await
            .unwrap();
        assert_eq!(failures, evaluated);

        // The same race at the storage layer, 50 times: 100 concurrent attempts, exactly 5 taken.
        let now = st.now();
        for round in 0..50 {
            let challenge = edulink_max::repo::Challenge {
                id: format!("race-{round}"),
                session_hash: "s".into(),
                phone_hash: hash.clone(),
                phone_enc: "x".into(),
                expires_at: now + 300,
            };
            let mut tx = st.db.begin().await.unwrap();
            edulink_max::repo::create_challenge(&mut tx, &challenge, "mac", now).await.unwrap();
            tx.commit().await.unwrap();
            let tasks: Vec<_> = (0..100)
                .map(|_| {
                    let db = st.db.clone();
                    let id = challenge.id.clone();
                    tokio::spawn(async move {
                        let mut tx = db.begin().await.unwrap();
                        let taken = edulink_max::repo::take_attempt(&mut tx, &id, now, 5).await.unwrap();
                        tx.commit().await.unwrap();
                        taken
                    })
                })
                .collect();
            let mut taken = 0;
            for t in tasks {
                if t.await.unwrap().is_some() {
                    taken += 1;
                }
            }
            assert_eq!(taken, 5, "round {round}");
        }
    }
}

#[tokio::test]
async fn lost_database_connections_give_503_and_recover() {
    let Some(app) = edulink_testkit::spawn_app_on(Backend::Postgres, |_| {}).await else { return };
    let b = Browser::new();
    app.diary_login(&b, "student2").await;
    assert!(edulink_testkit::terminate_connections(&app.config).await > 0, "the app had connections to cut");
    // Right after: a clear 503 at worst, never a 500; soon everything answers again.
    let mut recovered = false;
    for _ in 0..20 {
        let p = b.get(&format!("{}/", app.diary)).await;
        assert!(p.status == StatusCode::OK || p.status == StatusCode::SERVICE_UNAVAILABLE, "{}: {}", p.status, p.body);
        if p.status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(p.has("Сервис временно недоступен"));
        }
        let r = reqwest::get(format!("{}/readyz", app.max)).await.unwrap().status();
        if p.status == StatusCode::OK && r == StatusCode::OK {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(recovered, "the parties recover once the database is back");
}

/// The href of the class chat on a «Сферум в MAX» page.
fn class_chat_path(body: &str) -> String {
    let i = body.find("chat-class").expect("a class chat");
    let rest = &body[i..];
    let start = rest.find("href=\"").unwrap() + 6;
    rest[start..start + rest[start..].find('"').unwrap()].to_string()
}

#[tokio::test]
async fn live_chat_crosses_instances_and_an_unlink_at_either_ends_the_stream() {
    let Some(c) = Cluster::start().await else { return };
    let (a, b) = (Browser::new(), Browser::new());
    for (br, login, phone, e164) in [(&a, "student1", PHONE_A, E164_A), (&b, "student2", PHONE_B, E164_B)] {
        c.app.diary_login(br, login).await;
        let done = c.app.link(br, phone, e164).await;
        assert!(done.has("Ваша учетная запись успешно привязана"), "{}", done.body);
    }
    let page = a.visit(&format!("{}/sferum", c.app.diary)).await;
    let path = class_chat_path(&page.body);
    // B listens at instance 0; A posts at instance 1.
    let mut stream = b.stream(&format!("{}{path}/events", c.max_instances[0])).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let chat1 = format!("{}{path}", c.max_instances[1]);
    let form = a.get(&chat1).await;
    let sent = a.post(&format!("{chat1}/messages"), &[("csrf", &form.csrf()), ("text", "через балансировщик")]).await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER);
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen.contains("через балансировщик") {
        assert!(std::time::Instant::now() < deadline, "not delivered across instances: {seen}");
        if let Ok(Ok(Some(bytes))) = tokio::time::timeout(std::time::Duration::from_secs(1), stream.chunk()).await {
            seen.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    // B unlinks; whichever MAX instance detaches, the stream at instance 0 ends within a poll.
    let confirm = b.visit(&format!("{}/passport/security/unlink", c.app.diary)).await;
    b.submit(&format!("{}/passport/security/unlink", c.app.diary), &[("csrf", &confirm.csrf())]).await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Ok(Some(bytes)) = stream.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&bytes));
        }
    })
    .await;
    assert!(ended.is_ok() && seen.contains("event: end"), "{seen}");
    // A stream still open does not hold up a graceful shutdown.
    let mut open = a.stream(&format!("{}{path}/events", c.max_instances[0])).await;
    assert_eq!(open.status(), StatusCode::OK);
    assert!(tokio::time::timeout(std::time::Duration::from_secs(10), c.stop()).await.is_ok(), "stopped");
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Ok(Some(_)) = open.chunk().await {}
    })
    .await;
    assert!(closed.is_ok(), "the open stream was closed");
}
