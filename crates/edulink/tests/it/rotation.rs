//! Signing keys and client secrets rotated under running instances (docs/deployment.md, «Keys and
//! secrets»): linked students keep signing in, every instance agrees on the keys, and a diary still
//! holding the previous client secret keeps working through the grace period.

use crate::scale::Cluster;
use edulink::app::Role;
use edulink_diary::DiaryState;
use edulink_domain::ManualClock;
use edulink_max::MaxState;
use edulink_max::keys::{self, Rotation};
use edulink_store::sqlx;
use edulink_testkit::{
    Backend, Browser, Flows, FlowsExt, both_backends, drop_schemas, postgres_available, spawn_party, test_config,
};
use reqwest::StatusCode;
use std::sync::Arc;

const PHONE_A: &str = "+7 916 400-00-01";
const E164_A: &str = "+79164000001";
const PHONE_B: &str = "+7 916 400-00-02";
const E164_B: &str = "+79164000002";
const PHONE_C: &str = "+7 916 400-00-03";
const E164_C: &str = "+79164000003";
/// MAX's Сферум page of a 7 А student: where a sign-in from the diary lands.
const CLASS_CHAT: &str = "Чат класса 7 А";

/// Rotates MAX's keys as `edulink keys rotate` does, makes every instance poll them (as its
/// background task does every `keys::POLL_INTERVAL`) and moves the clock to when they sign.
async fn rotate_keys(maxes: &[&MaxState], clock: &ManualClock) -> Rotation {
    let st = maxes[0];
    let r = keys::rotate(&st.db, &st.secrets.key_cipher, st.now(), keys::retention_secs(&st.cfg)).await.unwrap();
    for m in maxes {
        assert!(m.keys.refresh(&m.db, &m.secrets.key_cipher, m.now()).await.unwrap());
    }
    clock.advance(keys::ACTIVATION_DELAY_SECS);
    r
}

/// The ID token the diary keeps as the `id_token_hint` of `login`'s link.
/// (Stored encrypted: issue 19.)
async fn stored_hint(diary: &DiaryState, login: &str) -> String {
    let sealed: String =
        sqlx::query_scalar("SELECT l.id_token_enc FROM links l JOIN users u ON u.id = l.user_id WHERE u.login = $1")
            .bind(login)
            .fetch_one(diary.db.pool())
            .await
            .unwrap();
    String::from_utf8(diary.cipher.open(edulink_diary::repo::HINT_CONTEXT, &sealed).unwrap()).unwrap()
}

async fn set_stored_hint(diary: &DiaryState, login: &str, hint: &str) {
    let sql = "UPDATE links SET id_token_enc = $1 WHERE user_id = (SELECT id FROM users WHERE login = $2)";
    let sealed = diary.cipher.seal(edulink_diary::repo::HINT_CONTEXT, hint.as_bytes());
    diary.db.execute(sqlx::query(sql).bind(sealed).bind(login)).await.unwrap();
}

async fn hints_ignored(max: &MaxState) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM audit WHERE event = 'hint_ignored' AND detail = 'signature'")
        .fetch_one(max.db.pool())
        .await
        .unwrap()
}

/// The EdDSA key of a rotation: the diary's client has its ID tokens signed with EdDSA.
fn eddsa_kid(r: &Rotation) -> Option<String> {
    let i = keys::ALGS.iter().position(|a| *a == "EdDSA").unwrap();
    Some(r.kids[i].clone())
}

/// Link two students, rotate three times, sign in; then past the retention period, sign in with a
/// hint whose key is gone. OIDC Core §3.1.2.1: `id_token_hint` is a hint, which the OP may ignore;
/// RFC 7517 §5: a key set keeps the keys that tokens in use were signed with.
async fn rotations_never_strand_a_linked_student<A: Flows>(
    app: &A,
    maxes: &[&MaxState],
    diary: &DiaryState,
    clock: &ManualClock,
    browser: impl Fn() -> Browser,
) {
    let a = browser();
    app.diary_login(&a, "student3").await;
    assert!(app.link(&a, PHONE_A, E164_A).await.has("успешно привязана"));
    let b = browser();
    app.diary_login(&b, "student4").await;
    assert!(app.link(&b, PHONE_B, E164_B).await.has("успешно привязана"));
    let linked_hint = stored_hint(diary, "student4").await;

    let mut last = None;
    for _ in 0..3 {
        last = Some(rotate_keys(maxes, clock).await);
    }
    // MAX has a session in this browser: straight into Сферум, with no SMS.
    let sent = app.inbox().to(E164_A).len();
    let page = a.visit(&format!("{}/sferum", app.diary())).await;
    assert!(page.has(CLASS_CHAT), "after three rotations: {}", page.body);
    assert_eq!(app.inbox().to(E164_A).len(), sent);
    // The diary replaced its hint at once, because a newer key signed the new ID token.
    let hint = stored_hint(diary, "student3").await;
    assert_eq!(edulink_diary::rp::key_id(&hint), eddsa_kid(last.as_ref().unwrap()));

    // Past the retention period a rotation deletes the keys retired by the first one, among them
    // the key of student4's hint stored at link time.
    clock.advance(keys::retention_secs(&maxes[0].cfg) + 1);
    assert!(rotate_keys(maxes, clock).await.deleted >= 3);
    // No MAX session (a new browser): the hint is ignored and MAX's own login follows.
    let c = browser();
    app.diary_login(&c, "student4").await;
    let phone_page = c.visit(&format!("{}/sferum", app.diary())).await;
    assert!(phone_page.has("Продолжить"), "MAX's phone page expected: {}", phone_page.body);
    let code_page = app.enter_phone(&c, &phone_page, PHONE_B).await;
    let code = app.last_code(E164_B);
    let done = c.follow(app.enter_code(&c, &code_page, &code).await).await;
    assert!(done.has(CLASS_CHAT), "after MAX's login: {}", done.body);
    assert_eq!(hints_ignored(maxes[0]).await, 1, "the ignored hint is audited");
    // With a MAX session and the same dead hint (a stale copy): straight into Сферум, no SMS.
    set_stored_hint(diary, "student4", &linked_hint).await;
    let sent = app.inbox().to(E164_B).len();
    let page = c.visit(&format!("{}/sferum", app.diary())).await;
    assert!(page.has(CLASS_CHAT), "SSO with an ignored hint: {}", page.body);
    assert_eq!(app.inbox().to(E164_B).len(), sent);
    assert_eq!(hints_ignored(maxes[0]).await, 2);
}

both_backends! {
    async fn three_key_rotations_never_strand_a_linked_student(app) {
    let max = app.running.max.as_ref().unwrap();
    let diary = app.running.diary.as_ref().unwrap();
    rotations_never_strand_a_linked_student(&app, &[max], diary, &app.clock, Browser::new).await;
    }
}

/// The same with two MAX and two diary instances on PostgreSQL, every request on the other one.
#[tokio::test]
async fn three_key_rotations_never_strand_a_linked_student_on_two_instances() {
    let Some(c) = Cluster::start().await else { return };
    let maxes: Vec<&MaxState> = c.maxes.iter().map(|p| p.running.max.as_ref().unwrap()).collect();
    let diary = c.diaries[0].running.diary.as_ref().unwrap();
    rotations_never_strand_a_linked_student(&c.app, &maxes, diary, &c.app.clock, || c.hopping_browser()).await;
    c.stop().await;
}

async fn jwks_kids(max: &str) -> Vec<String> {
    let jwks: serde_json::Value = reqwest::get(format!("{max}/oauth/jwks")).await.unwrap().json().await.unwrap();
    let mut kids: Vec<String> =
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect();
    kids.sort();
    kids
}

/// Every instance publishes rotated keys within the documented poll interval, on its own (no reload
/// by the test), well before they sign (`keys::ACTIVATION_DELAY_SECS`): the "next key" of Keycloak
/// and Hydra, so no instance signs with a key another does not publish yet.
#[tokio::test]
async fn every_instance_publishes_rotated_keys_within_the_poll_interval() {
    let Some(c) = Cluster::start().await else { return };
    let st = c.maxes[0].running.max.as_ref().unwrap();
    let started = std::time::Instant::now();
    let r = keys::rotate(&st.db, &st.secrets.key_cipher, st.now(), keys::retention_secs(&st.cfg)).await.unwrap();
    loop {
        let mut agreed = true;
        for m in &c.max_instances {
            let kids = jwks_kids(m).await;
            agreed &= r.kids.iter().all(|k| kids.contains(k));
        }
        if agreed {
            break;
        }
        assert!(started.elapsed() < keys::POLL_INTERVAL + std::time::Duration::from_secs(3), "instances disagree");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(started.elapsed().as_secs() < keys::ACTIVATION_DELAY_SECS as u64);
    assert_eq!(jwks_kids(&c.max_instances[0]).await, jwks_kids(&c.max_instances[1]).await);
    c.stop().await;
}

/// Three instances starting at once on an empty PostgreSQL database create one key per algorithm
/// (the creation runs under an advisory lock and re-checks inside it, as the migrations do) and
/// publish the same JWKS.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn three_instances_starting_together_create_one_key_per_algorithm() {
    if !postgres_available().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(Backend::Postgres, dir.path()).with_secrets().unwrap();
    config.demo = Some(false);
    let clock = Arc::new(ManualClock::default());
    let inbox = edulink_sms::DevInbox::default();
    let start = || async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        spawn_party(&config, Role::Max, l, clock.clone(), &inbox).await
    };
    let parties = tokio::join!(start(), start(), start());
    let parties = [parties.0, parties.1, parties.2];
    let st = parties[0].running.max.as_ref().unwrap();
    let current: Vec<(String, i64)> =
        sqlx::query_as("SELECT alg, COUNT(*) FROM signing_keys WHERE retired_at IS NULL GROUP BY alg ORDER BY alg")
            .fetch_all(st.db.pool())
            .await
            .unwrap();
    assert_eq!(current, vec![("ES256".into(), 1), ("EdDSA".into(), 1), ("RS256".into(), 1)]);
    let first = jwks_kids(&parties[0].running.max_url).await;
    assert_eq!(first.len(), 3);
    for p in &parties[1..] {
        assert_eq!(jwks_kids(&p.running.max_url).await, first);
    }
    for p in parties {
        p.running.stop().await;
    }
    drop_schemas(&config).await;
}

/// A back-channel POST of the diary's client authenticated with HTTP Basic (RFC 6749 §2.3.1).
async fn as_mesh(url: String, secret: &str, form: &[(&str, &str)]) -> (StatusCode, serde_json::Value) {
    let resp = reqwest::Client::new().post(url).basic_auth("mesh", Some(secret)).form(form).send().await.unwrap();
    (resp.status(), resp.json().await.unwrap_or_default())
}

/// A `client_credentials` token request (RFC 6749 §4.4).
async fn client_token(max: &str, secret: &str) -> (StatusCode, serde_json::Value) {
    let form = [("grant_type", "client_credentials"), ("scope", "sferum.provision")];
    as_mesh(format!("{max}/oauth/token"), secret, &form).await
}

/// Rotates the diary's client secret while the diary still uses the old one. RFC 6749 §2.3.1 and
/// §5.2 (`invalid_client`); the overlap is what Keycloak's "client secret rotation" policy and
/// Auth0's rotation guidance give: the previous secret works until the grace period ends.
async fn secret_rotation_overlaps<A: Flows>(
    app: &A,
    max: &MaxState,
    instances: &[String],
    old: &str,
    grace: i64,
    clock: &ManualClock,
    browser: impl Fn() -> Browser,
) {
    let a = browser();
    app.diary_login(&a, "student5").await;
    assert!(app.link(&a, PHONE_C, E164_C).await.has("успешно привязана"));
    for m in instances {
        assert_eq!(client_token(m, old).await.0, StatusCode::OK, "every instance caches the client now");
    }
    let new = edulink_max::oidc::rotate_secret(&max.db, "mesh", max.now(), grace).await.unwrap().unwrap();
    for m in instances {
        assert_eq!(client_token(m, &new).await.0, StatusCode::OK, "the new secret works at once at {m}");
        assert_eq!(client_token(m, old).await.0, StatusCode::OK, "the old one through the grace period");
    }
    // The diary, still configured with the old secret: sign-in (a code exchange) and a new link
    // (code exchange and provisioning) work.
    let page = a.visit(&format!("{}/sferum", app.diary())).await;
    assert!(page.has(CLASS_CHAT), "{}", page.body);
    let b = browser();
    app.diary_login(&b, "student2").await;
    assert!(app.link(&b, PHONE_A, E164_A).await.has("успешно привязана"));
    assert!(b.visit(&format!("{}/sferum", app.diary())).await.has(CLASS_CHAT));
    let (_, body) = client_token(&instances[0], old).await;
    let token = body["access_token"].as_str().unwrap();
    let detach = reqwest::Client::new()
        .delete(format!("{}/sferum/api/v1/profiles/nobody?generation=1", instances[0]))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(detach.status(), StatusCode::NO_CONTENT, "provisioning takes the old secret's token");

    clock.advance(grace - 10);
    assert_eq!(client_token(&instances[0], old).await.0, StatusCode::OK, "still within the grace period");
    clock.advance(10);
    for m in instances {
        let (status, body) = client_token(m, old).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")), "{m}");
        assert_eq!(client_token(m, &new).await.0, StatusCode::OK);
    }
    let (status, _) = as_mesh(format!("{}/oauth/revoke", instances[0]), old, &[("token", "x")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

both_backends! {
    async fn a_rotated_client_secret_stays_valid_through_the_grace_period_only(app) {
    let max = app.running.max.as_ref().unwrap();
    let old = app.config.diary.client_secret.clone().unwrap();
    let grace = app.config.max.client_secret_grace_secs;
    secret_rotation_overlaps(&app, max, std::slice::from_ref(&app.max), &old, grace, &app.clock, Browser::new).await;
    }
}

/// The same on two MAX instances that both cached the client before the rotation.
#[tokio::test]
async fn a_rotated_client_secret_works_at_once_on_every_instance() {
    let Some(c) = Cluster::start().await else { return };
    let max = c.maxes[0].running.max.as_ref().unwrap();
    let old = c.app.config.diary.client_secret.clone().unwrap();
    let grace = c.app.config.max.client_secret_grace_secs;
    secret_rotation_overlaps(&c.app, max, &c.max_instances, &old, grace, &c.app.clock, || c.hopping_browser()).await;
    c.stop().await;
}
