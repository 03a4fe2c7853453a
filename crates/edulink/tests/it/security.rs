//! The attacks an auditor sends, and what must happen (docs/architecture.md, «Rules»; references per test).

use edulink_testkit::{Backend, Browser, FlowsExt, TestApp, both_backends, spawn_app_on};
use reqwest::StatusCode;

const PHONE: &str = "+7 916 400-50-60";
const E164: &str = "+79164005060";

fn wrong(code: &str) -> String {
    format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000)
}

async fn code_screen(app: &TestApp, b: &Browser, phone: &str) -> edulink_testkit::Page {
    let login = b.visit(&format!("{}/login", app.max)).await;
    app.enter_phone(b, &login, phone).await
}

async fn resend(app: &TestApp, b: &Browser, page: &edulink_testkit::Page) -> edulink_testkit::Page {
    b.post(&format!("{}/login/resend", app.max), &[("csrf", &page.csrf())]).await
}

async fn failures(app: &TestApp, e164: &str) -> i64 {
    let st = app.running.max.as_ref().unwrap();
    edulink_store::sqlx::query_scalar("SELECT failures FROM phone_state WHERE phone_hash = $1")
        .bind(st.secrets.phone_hash.keyed_hash("phone", e164))
        .fetch_one(st.db.pool())
        .await
        .unwrap()
}

both_backends! {
    /// NIST SP 800-63B §5.1.3 (rate limiting of OOB sends), OWASP ASVS 5.0 V6: at most 5 sends an
    /// hour and 10 a day per phone, 60 s apart; refusals are 429 with Retry-After.
    async fn per_phone_send_caps_hold_per_hour_and_per_day(app) {
        let b = Browser::new();
        let page = code_screen(&app, &b, PHONE).await;
        for _ in 0..4 {
            app.clock.advance(61);
            assert_eq!(resend(&app, &b, &page).await.status, StatusCode::SEE_OTHER);
        }
        app.clock.advance(61);
        let sixth = resend(&app, &b, &page).await;
        assert_eq!(sixth.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(sixth.has("Слишком много кодов на этот номер"), "{}", sixth.body);
        let wait: i64 = sixth.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(wait > 3000 && wait <= 3600, "{wait}");
        app.clock.advance(wait + 1);
        for _ in 0..5 {
            assert_eq!(resend(&app, &b, &page).await.status, StatusCode::SEE_OTHER);
            app.clock.advance(61);
        }
        assert_eq!(app.inbox.to(E164).len(), 10, "ten sends");
        // Ten sends in the day: the next hour still refuses. (The page is visited on the way, so
        // the sign-in session, which ends after an idle hour, stays alive.)
        app.clock.advance(1800);
        assert_eq!(b.get(&format!("{}/login/code", app.max)).await.status, StatusCode::OK);
        app.clock.advance(1800);
        let eleventh = resend(&app, &b, &page).await;
        assert_eq!(eleventh.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(app.inbox.to(E164).len(), 10);
    }

    /// RFC 9700 §4.5 / OWASP ASVS 5.0 V6.6: 20 failures per phone across codes lock it; a resend does not
    /// reset the count; while locked, even the right code is answered exactly like a wrong one; the
    /// lock lasts 15 minutes and does not grow (SECURITY.md, «Lockout model»).
    async fn twenty_failures_lock_the_phone_for_a_bounded_time(app) {
        // The owner asks for a code first; an attacker then spends four codes of their own.
        let owner = Browser::new();
        let owner_page = code_screen(&app, &owner, PHONE).await;
        let owner_code = app.last_code(E164);
        let b = Browser::new();
        app.clock.advance(61);
        let mut page = code_screen(&app, &b, PHONE).await;
        for round in 0..4 {
            if round > 0 {
                app.clock.advance(61);
                page = b.follow(resend(&app, &b, &page).await).await;
            }
            for _ in 0..5 {
                app.enter_code(&b, &page, &wrong(&app.last_code(E164))).await;
            }
            if round < 3 {
                assert_eq!(failures(&app, E164).await, 5 * (round + 1), "a resend does not reset the count");
            }
        }
        let wrong_answer = app.enter_code(&owner, &owner_page, &wrong(&owner_code)).await;
        let locked_answer = app.enter_code(&owner, &owner_page, &owner_code).await;
        assert_eq!(locked_answer.status, wrong_answer.status);
        // Byte for byte but the resend countdown, which follows the real clock between the two.
        let no_countdown = |b: &str| b.chars().filter(|c| !c.is_ascii_digit()).collect::<String>();
        assert_eq!(no_countdown(&locked_answer.body), no_countdown(&wrong_answer.body), "a locked phone answers exactly like a wrong code");
        assert!(locked_answer.location.is_none(), "the right code does not sign in while locked");
        // Sends are refused while locked, with the lock's wait: the rest of 15 minutes.
        app.clock.advance(61);
        let refused = resend(&app, &b, &page).await;
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.has("Слишком много неверных кодов"));
        let wait: i64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((900 - 64..=900 - 61).contains(&wait), "the lock does not grow: {wait}");
    }

    /// OWASP ASVS 5.0 V6 (SMS pumping): a per-IP cap and a global hourly budget (circuit breaker).
    async fn the_per_ip_cap_refuses_a_flood_from_one_address(app) {
        // Defaults allow 30 per IP per hour: the 31st distinct phone from 127.0.0.1 is refused.
        for i in 0..31 {
            let b = Browser::new();
            let login = b.visit(&format!("{}/login", app.max)).await;
            let p = b.post(&format!("{}/login/phone", app.max), &[("csrf", &login.csrf()), ("phone", &format!("+7 916 500-{:02}-{:02}", i / 100, i % 100))]).await;
            if i < 30 {
                assert_eq!(p.status, StatusCode::SEE_OTHER, "send {i}");
            } else {
                assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS);
                assert!(p.has("Слишком много запросов"));
                assert!(p.headers.contains_key("retry-after"));
            }
        }
        assert_eq!(app.inbox.len(), 30);
    }

    /// RFC 9700 §4.1 / §2.1: exact redirect URI matching; a mismatch is never redirected to.
    async fn twenty_redirect_uri_variants_are_refused_without_redirect(app) {
        let b = Browser::new();
        let cb = format!("{}/sferum/callback", app.diary);
        let host_port = app.diary.trim_start_matches("http://").to_string();
        let port = host_port.rsplit(':').next().unwrap().to_string();
        let variants = vec![
            format!("{cb}/"),
            format!("{cb}?x=1"),
            format!("{cb}#"),
            format!("{cb}#frag"),
            format!("{}/sferum/callback/..;/", app.diary),
            format!("{}/sferum/%2e%2e/sferum/callback", app.diary),
            format!("{}/sferum/../sferum/callback", app.diary),
            format!("http://a@b@{host_port}/sferum/callback"),
            format!("http://evil.example@{host_port}/sferum/callback"),
            format!("{}/SFERUM/callback", app.diary),
            format!("{}/sferum/Callback", app.diary),
            format!("HTTP://{host_port}/sferum/callback"),
            format!("http://127.0.0.1:{port}:80/sferum/callback"),
            format!("http://127.0.0.1:0{port}/sferum/callback"),
            cb.replace("http://", "https://"),
            format!("http://localhost:{port}/sferum/callback"),
            format!("http://127.0.0.2:{port}/sferum/callback"),
            format!("http://127.0.0.1.nip.io:{port}/sferum/callback"),
            "javascript:alert(1)".to_string(),
            "data:text/html,<script>alert(1)</script>".to_string(),
            format!("{cb}%20"),
            format!("{cb}%00"),
            format!(" {cb}"),
            String::new(),
        ];
        assert!(variants.len() >= 20);
        let challenge = edulink_domain::oauth::pkce_s256(&edulink_domain::crypto::random_token(32));
        for redirect in &variants {
            let url = reqwest::Url::parse_with_params(
                &format!("{}/oauth/authorize", app.max),
                &[("response_type", "code"), ("client_id", "mesh"), ("redirect_uri", redirect.as_str()), ("scope", "openid"),
                  ("state", "s"), ("code_challenge", &challenge), ("code_challenge_method", "S256")],
            )
            .unwrap();
            let p = b.get(url.as_str()).await;
            assert_eq!(p.status, StatusCode::BAD_REQUEST, "{redirect}");
            assert!(p.location.is_none(), "{redirect} must not be redirected to");
        }
        // Parameter pollution: two redirect_uri values, even both registered, are refused.
        let url = format!(
            "{}/oauth/authorize?response_type=code&client_id=mesh&redirect_uri={}&redirect_uri={}&scope=openid&code_challenge={challenge}&code_challenge_method=S256",
            app.max, cb, cb
        );
        let p = b.get(&url).await;
        assert_eq!(p.status, StatusCode::BAD_REQUEST);
        assert!(p.location.is_none());
    }

    /// OIDC Core §3.1.2.1 (prompt=none) and RFC 6749 §4.1.3 (codes bound to the client): a silent request
    /// never creates a first grant; a code of one client cannot be redeemed by another; a code whose
    /// grant was removed (the account unlinked meanwhile) is invalid.
    async fn provider_binds_codes_and_never_links_silently(app) {
        let b = Browser::new();
        let login = b.visit(&format!("{}/login", app.max)).await;
        let code = app.enter_phone(&b, &login, PHONE).await;
        let reg = b.follow(app.enter_code(&b, &code, &app.last_code(E164)).await).await;
        b.submit(&format!("{}/login/register", app.max), &[("csrf", &reg.csrf()), ("first_name", "Ли"), ("last_name", "Тест")]).await;
        let cb = format!("{}/sferum/callback", app.diary);
        let verifier = edulink_domain::crypto::random_token(32);
        let challenge = edulink_domain::oauth::pkce_s256(&verifier);
        let authorize = |prompt: &str| {
            let mut params = vec![("response_type", "code"), ("client_id", "mesh"), ("redirect_uri", cb.as_str()), ("scope", "openid"),
              ("state", "s"), ("code_challenge", challenge.as_str()), ("code_challenge_method", "S256")];
            if !prompt.is_empty() {
                params.push(("prompt", prompt));
            }
            reqwest::Url::parse_with_params(&format!("{}/oauth/authorize", app.max), &params).unwrap().to_string()
        };
        let silent = b.get(&authorize("none")).await;
        assert!(silent.location.as_deref().unwrap().contains("error=consent_required"), "{:?}", silent.location);
        let st = app.running.max.as_ref().unwrap();
        let grants: i64 = edulink_store::sqlx::query_scalar("SELECT COUNT(*) FROM grants").fetch_one(st.db.pool()).await.unwrap();
        assert_eq!(grants, 0, "prompt=none created nothing");
        let anonymous = Browser::new().get(&authorize("none")).await;
        assert!(anonymous.location.as_deref().unwrap().contains("error=login_required"));

        // A code for mesh, presented by the public client «Моя школа»: refused.
        let confirm = b.visit(&authorize("consent")).await;
        let back = b.post(&format!("{}/authorize/confirm", app.max), &[("csrf", &confirm.csrf())]).await;
        let loc = reqwest::Url::parse(back.location.as_deref().unwrap()).unwrap();
        let code = loc.query_pairs().find(|(k, _)| k == "code").unwrap().1.to_string();
        let form = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", cb.as_str()),
            ("code_verifier", verifier.as_str()), ("client_id", "moyashkola")];
        let r = reqwest::Client::new().post(format!("{}/oauth/token", app.max)).form(&form).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);

        // Another code; the grant goes (unlink) before it is redeemed: invalid_grant.
        let confirm = b.visit(&authorize("consent")).await;
        let back = b.post(&format!("{}/authorize/confirm", app.max), &[("csrf", &confirm.csrf())]).await;
        let loc = reqwest::Url::parse(back.location.as_deref().unwrap()).unwrap();
        let code = loc.query_pairs().find(|(k, _)| k == "code").unwrap().1.to_string();
        st.db.execute(edulink_store::sqlx::query("DELETE FROM grants")).await.unwrap();
        let secret = app.config.diary.client_secret.clone().unwrap();
        let r = reqwest::Client::new()
            .post(format!("{}/oauth/token", app.max))
            .basic_auth("mesh", Some(secret))
            .form(&[("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", cb.as_str()), ("code_verifier", verifier.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant");
    }

    /// OWASP ASVS 5.0 V7 (session management): 256-bit ids, only hashes stored, rotation on login and
    /// on link, idle and absolute timeouts, server-side logout.
    async fn sessions_rotate_expire_and_end_on_the_server(app) {
        let b = Browser::new();
        app.diary_login(&b, "student3").await;
        let sid = |p: &edulink_testkit::Page| -> Option<String> {
            p.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find(|c| c.starts_with("diary_sid=")).map(|c| {
                c.trim_start_matches("diary_sid=").split(';').next().unwrap().to_string()
            })
        };
        let login_page = b.get(&format!("{}/login", app.diary)).await;
        assert_eq!(login_page.status, StatusCode::SEE_OTHER, "already signed in");
        // Sign in again from a fresh login page: a new id.
        let b2 = Browser::new();
        let lp = b2.get(&format!("{}/login", app.diary)).await;
        let r1 = b2.post(&format!("{}/login", app.diary), &[("csrf", &lp.csrf()), ("login", "student3"), ("password", "demo")]).await;
        let id1 = sid(&r1).expect("session cookie");
        assert_eq!(id1.len(), 43, "256 bits, base64url");
        let st = app.running.diary.as_ref().unwrap();
        let stored: Vec<(String,)> = edulink_store::sqlx::query_as("SELECT id_hash FROM sessions").fetch_all(st.db.pool()).await.unwrap();
        assert!(stored.iter().all(|(h,)| *h != id1), "only hashes are stored");
        // Link: the id rotates.
        app.link(&b2, PHONE, E164).await;
        let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let home_with = |id: String| {
            let plain = plain.clone();
            let url = format!("{}/", app.diary);
            async move { plain.get(url).header("cookie", format!("diary_sid={id}")).send().await.unwrap().status() }
        };
        // The pre-link id still works only for the few seconds of the rotation grace, then not at all.
        app.clock.advance(11);
        assert_eq!(home_with(id1.clone()).await, StatusCode::SEE_OTHER, "the id from before the link is dead");
        let home = b2.get(&format!("{}/", app.diary)).await;
        assert_eq!(home.status, StatusCode::OK, "the rotated id works");
        // Logout ends it on the server: replaying the cookie afterwards gets the login page.
        let csrf = edulink_testkit::hidden(&home.body, "csrf").unwrap();
        let out = b2.post(&format!("{}/logout", app.diary), &[("csrf", &csrf)]).await;
        assert_eq!(out.status, StatusCode::SEE_OTHER);
        let n: i64 = edulink_store::sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE user_id = 'student-3'").fetch_one(st.db.pool()).await.unwrap();
        assert_eq!(n, 1, "only the first browser's session remains");
        // Idle timeout (30 min) for the first browser.
        app.clock.advance(31 * 60);
        let p = b.get(&format!("{}/", app.diary)).await;
        assert_eq!(p.location.as_deref(), Some(format!("{}/login", app.diary).as_str()));
        // Absolute timeout (12 h) even when active.
        let b3 = Browser::new();
        app.diary_login(&b3, "student4").await;
        for _ in 0..28 {
            app.clock.advance(25 * 60);
            let p = b3.get(&format!("{}/", app.diary)).await;
            assert_eq!(p.status, StatusCode::OK);
        }
        app.clock.advance(25 * 60);
        let p = b3.get(&format!("{}/", app.diary)).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "12 h after sign-in the session ends");
    }

    /// RFC 7231 / OWASP: bodies over the limit are refused with 413; the state parameter cannot be repeated.
    async fn oversized_bodies_and_repeated_state_are_refused(app) {
        let b = Browser::new();
        let login = b.visit(&format!("{}/login", app.max)).await;
        let big = "9".repeat(100 * 1024);
        let p = b.post(&format!("{}/login/phone", app.max), &[("csrf", &login.csrf()), ("phone", &big)]).await;
        assert_eq!(p.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(app.inbox.is_empty());
        app.diary_login(&b, "student5").await;
        let p = b.get(&format!("{}/sferum/callback?code=a&state=b&state=c&iss=x", app.diary)).await;
        assert_eq!(p.status, StatusCode::BAD_REQUEST);
    }

    /// ASVS 5.0 V6.3.1 / 800-63B §3.2.2: diary passwords cannot be guessed at speed — ten failures for
    /// a login in an hour stop sign-in to it (even with the right password) until the hour ends, on the
    /// web and in the apps' API alike; other logins are unaffected.
    async fn repeated_wrong_passwords_throttle_the_login(app) {
        let b = Browser::new();
        for _ in 0..10 {
            let page = b.get(&format!("{}/login", app.diary)).await;
            let p = b.post(&format!("{}/login", app.diary), &[("csrf", &page.csrf()), ("login", "student8"), ("password", "guess")]).await;
            assert_eq!(p.status, StatusCode::UNAUTHORIZED);
        }
        let page = b.get(&format!("{}/login", app.diary)).await;
        let p = b.post(&format!("{}/login", app.diary), &[("csrf", &page.csrf()), ("login", "student8"), ("password", "demo")]).await;
        assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS, "{}", p.body);
        assert!(p.has("Слишком много неверных попыток входа"));
        assert!(p.headers.contains_key("retry-after"));
        let api = reqwest::Client::new()
            .post(format!("{}/api/v1/sessions", app.diary))
            .json(&serde_json::json!({ "login": "student8", "password": "demo" }))
            .send()
            .await
            .unwrap();
        assert_eq!(api.status(), StatusCode::TOO_MANY_REQUESTS);
        app.diary_login(&Browser::new(), "student9").await;
        app.clock.advance(3600);
        app.diary_login(&Browser::new(), "student8").await;
    }

    /// A per-diary-account cap on link attempts bounds the SMS one account can cause.
    async fn link_attempts_per_diary_account_are_capped(app) {
        let b = Browser::new();
        app.diary_login(&b, "student6").await;
        for i in 0..11 {
            let connect = b.visit(&format!("{}/sferum", app.diary)).await;
            let p = b.post(&format!("{}/sferum/connect", app.diary), &[("csrf", &connect.csrf())]).await;
            if i < 10 {
                assert_eq!(p.status, StatusCode::SEE_OTHER);
            } else {
                assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS);
                assert!(p.has("Слишком много попыток привязки"), "{}", p.body);
                assert!(p.headers.contains_key("retry-after"));
            }
        }
    }

    /// The SMS pumping alarm: many sends, few verifications → a metric and an error log.
    async fn low_sms_conversion_raises_the_alert(app) {
        for i in 0..4 {
            let b = Browser::new();
            code_screen(&app, &b, &format!("+7 916 600-00-0{i}")).await;
        }
        let st = app.running.max.as_ref().unwrap();
        let alert = edulink_max::ConversionAlert { below: 0.5, min_sent: 3 };
        let c = edulink_max::limits::check_conversion(&st.db, st.now(), &alert).await.unwrap();
        assert_eq!((c.sent, c.verified, c.alert), (4, 0, true));
        // Verify three of them: the ratio recovers and the alert clears.
        let b = Browser::new();
        let page = code_screen(&app, &b, PHONE).await;
        app.enter_code(&b, &page, &app.last_code(E164)).await;
        let c = edulink_max::limits::check_conversion(&st.db, st.now(), &edulink_max::ConversionAlert { below: 0.1, min_sent: 3 }).await.unwrap();
        assert_eq!((c.sent, c.verified, c.alert), (5, 1, false));
    }
}

/// The global hourly budget is a circuit breaker for the whole service.
#[tokio::test]
async fn the_global_budget_stops_all_sends() {
    let app = spawn_app_on(Backend::Sqlite, |c| c.max.limits.global_hour = 3).await.unwrap();
    for i in 0..4 {
        let b = Browser::new();
        let login = b.visit(&format!("{}/login", app.max)).await;
        let p = b
            .post(
                &format!("{}/login/phone", app.max),
                &[("csrf", &login.csrf()), ("phone", &format!("+7 916 700-00-0{i}"))],
            )
            .await;
        let expected = if i < 3 { StatusCode::SEE_OTHER } else { StatusCode::TOO_MANY_REQUESTS };
        assert_eq!(p.status, expected, "send {i}");
    }
    assert_eq!(app.inbox.len(), 3);
}

/// Over https the cookies are `__Host-`, `Secure`, and HSTS is sent (RFC 6265bis §4.1.3, RFC 6797).
#[tokio::test]
async fn over_https_cookies_are_host_prefixed_and_secure_and_hsts_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = edulink_testkit::test_config(Backend::Sqlite, dir.path()).with_secrets().unwrap();
    config.max.public_url = Some("https://max.example".into());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let clock = std::sync::Arc::new(edulink_domain::ManualClock::default());
    let party = edulink_testkit::spawn_party(&config, edulink::app::Role::Max, l, clock, &Default::default()).await;
    let r = reqwest::get(format!("http://{addr}/login")).await.unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("__Host-max_sid=") && cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    assert!(r.headers()["strict-transport-security"].to_str().unwrap().contains("max-age="));
    party.running.stop().await;
}

both_backends! {
    // A student (or a script with their session) cannot start link after link: ten starts an hour,
    // then 429; the refused starts leave no OIDC transaction behind but are counted.
    async fn link_starts_are_capped_per_hour(app) {
        let b = Browser::new();
        app.diary_login(&b, "student2").await;
        let connect = b.visit(&format!("{}/sferum", app.diary)).await;
        let csrf = connect.csrf();
        for i in 0..10 {
            let to_max = b.post(&format!("{}/sferum/connect", app.diary), &[("csrf", &csrf)]).await;
            assert_eq!(to_max.status, StatusCode::SEE_OTHER, "start {i}: {}", to_max.body);
            assert!(to_max.location.as_deref().unwrap().starts_with(&format!("{}/oauth/authorize", app.max)));
        }
        for _ in 0..2 {
            let refused = b.post(&format!("{}/sferum/connect", app.diary), &[("csrf", &csrf)]).await;
            assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
            assert!(refused.has("Слишком много попыток привязки"), "{}", refused.body);
        }
        let diary = app.running.diary.as_ref().unwrap();
        let stored: i64 = edulink_store::sqlx::query_scalar("SELECT COUNT(*) FROM oidc_transactions WHERE purpose = 'link'")
            .fetch_one(diary.db.pool())
            .await
            .unwrap();
        assert_eq!(stored, 10);
        let counted: i64 = edulink_store::sqlx::query_scalar("SELECT count FROM rate_counters WHERE bucket LIKE 'link:%'")
            .fetch_one(diary.db.pool())
            .await
            .unwrap();
        assert_eq!(counted, 12);
    }
}
