//! Issue 23: links stay consistent across the two parties under races and crashes. Each race of the
//! issue is reproduced here deterministically (the crash harness in `crash.rs` drives them at
//! random): a late unlink never touches a newer link, MAX's detach and the diary's unlink are each
//! one transaction, a refused job waits for the reconciliation instead of being marked done, the
//! reconciliation repairs every difference, unfinished link grants are revoked, and a restarted
//! instance takes its own outbox leases back at once.

use crate::sferum::linked;
use edulink_diary::links::{self, Actor};
use edulink_diary::outbox::{self, Job, Lease};
use edulink_diary::{DiaryState, audit::Event, reconcile, repo};
use edulink_max::MaxState;
use edulink_store::sqlx;
use edulink_testkit::{Browser, FlowsExt, TestApp, both_backends, spawn_app};

const PHONE: (&str, &str) = ("8 916 909-10-20", "+79169091020");
const OTHER: (&str, &str) = ("8 916 909-30-40", "+79169093040");

fn diary(app: &TestApp) -> &DiaryState {
    app.running.diary.as_ref().unwrap()
}

fn max(app: &TestApp) -> &MaxState {
    app.running.max.as_ref().unwrap()
}

async fn user(app: &TestApp, login: &str) -> repo::User {
    repo::user_by_login(&diary(app).db, login).await.unwrap().expect("user").0
}

/// The live link of `login`: (subject, generation).
async fn link_of(app: &TestApp, login: &str) -> Option<(String, i64)> {
    let u = user(app, login).await;
    repo::link(&diary(app).db, &u.id).await.unwrap().map(|l| (l.subject, l.generation))
}

/// MAX's side of `subject`: (grants, live tokens of those grants, profile confirmed by a diary).
async fn at_max(app: &TestApp, subject: &str) -> (i64, i64, bool) {
    let db = &max(app).db;
    let grants: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM grants WHERE subject = $1")
        .bind(subject)
        .fetch_one(db.pool())
        .await
        .unwrap();
    let tokens: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM tokens t JOIN grants g ON g.id = t.grant_id WHERE g.subject = $1 AND t.revoked_at IS NULL",
    )
    .bind(subject)
    .fetch_one(db.pool())
    .await
    .unwrap();
    let confirmed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sferum_profiles p WHERE p.confirmed_by IS NOT NULL AND p.account_id IN \
         (SELECT account_id FROM grants WHERE subject = $1)",
    )
    .bind(subject)
    .fetch_one(db.pool())
    .await
    .unwrap();
    (grants, tokens, confirmed > 0)
}

/// Unlinks `login` in the diary as the web does, but keeps the unlink job from MAX (its first attempt
/// pushed an hour away, in the same transaction): a late job, as a crash or an outage leaves it.
/// Returns the job's id.
async fn unlink_held(app: &TestApp, login: &str) -> String {
    let st = diary(app);
    let u = user(app, login).await;
    let mut tx = st.db.begin().await.unwrap();
    let id = links::remove_in(&mut tx, &u.id, None, Event::Unlink, Some("127.0.0.1"), None, st.now())
        .await
        .unwrap()
        .expect("was linked");
    sqlx::query("UPDATE outbox SET next_attempt_at = $1 WHERE id = $2")
        .bind(st.now() + 3600)
        .bind(&id)
        .execute(&mut tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

/// Delivers a held job now.
async fn deliver_now(st: &DiaryState, id: &str) -> bool {
    st.db.execute(sqlx::query("UPDATE outbox SET next_attempt_at = 0 WHERE id = $1").bind(id)).await.unwrap();
    outbox::deliver(st, id).await.unwrap()
}

/// Delivers every due job until none is left (the server's own worker may hold one meanwhile).
async fn settle(st: &DiaryState) {
    for _ in 0..100 {
        outbox::run_due(st).await.unwrap();
        if outbox::pending(st).await.unwrap() == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the outbox did not settle");
}

/// Delivers due jobs until job `id` is done, for up to 5 s (well inside a 60 s lease).
async fn settle_job<F: std::future::Future<Output = bool>>(st: &DiaryState, id: &str, done: impl Fn(String) -> F) {
    for _ in 0..100 {
        outbox::run_due(st).await.unwrap();
        if done(id.to_owned()).await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("job {id} not delivered without waiting out its lease");
}

/// «Сферум» from the diary lands on MAX's Сферум page (the sign-in works).
async fn sferum_works(app: &TestApp, b: &Browser) -> bool {
    b.visit(&format!("{}/sferum", app.diary)).await.url == format!("{}/sferum", app.max)
}

both_backends! {
    /// Issue 23, race 1: student-1 links account A and unlinks, student-10 links A and unlinks,
    /// student-1 links A again; the unlink jobs of the first two links (same pairwise subject) are
    /// delivered late, after the new link. MAX's detach must not remove the new link's profile and
    /// grant: both jobs are stale. (Without generations, each late job detached the new link: the
    /// student's «Сферум» answered 400 at `/sferum/callback` from then on.)
    async fn late_unlinks_of_the_same_account_never_touch_its_newer_link(app) {
        let st = diary(&app);
        let b1 = linked(&app, "student1", PHONE).await;
        let (subject, g1) = link_of(&app, "student1").await.unwrap();
        let late1 = unlink_held(&app, "student1").await;
        app.clock.advance(120); // past the SMS resend interval of the phone
        let b10 = linked(&app, "student10", PHONE).await;
        let (subject10, g2) = link_of(&app, "student10").await.unwrap();
        assert_eq!(subject10, subject, "the subject is per account and sector, not per link");
        let late2 = unlink_held(&app, "student10").await;
        drop(b10);
        let done = app.link(&b1, PHONE.0, PHONE.1).await;
        assert!(done.has("успешно привязана"), "{}", done.body);
        let (_, g3) = link_of(&app, "student1").await.unwrap();
        assert!(g1 < g2 && g2 < g3, "generations grow: {g1} {g2} {g3}");

        assert!(deliver_now(st, &late1).await, "the late job is done (superseded)");
        assert!(deliver_now(st, &late2).await);
        let (grants, tokens, confirmed) = at_max(&app, &subject).await;
        assert!(grants >= 1 && tokens >= 1 && confirmed, "the new link survives: {grants} {tokens} {confirmed}");
        assert!(sferum_works(&app, &b1).await, "«Сферум» still signs in");
        // MAX refuses a stale detach itself too, whatever the diary believes.
        assert!(matches!(st.rp.detach(&subject, g2).await, Err(edulink_diary::rp::RpError::Stale(_))));
        assert!(at_max(&app, &subject).await.2);
        // And a late provision of a removed link never revives it.
        links::remove(st, &user(&app, "student1").await, Actor::Operator { name: "test" }).await.unwrap();
        assert!(matches!(
            st.rp.provision(&subject, g3, &edulink_diary::sferum::profile_of(st, "student-1").await.unwrap()).await,
            Err(edulink_diary::rp::RpError::Stale(_)) | Err(edulink_diary::rp::RpError::Refused(_))
        ));
        assert_eq!(at_max(&app, &subject).await, (0, 0, false), "removed for good");
    }
}

both_backends! {
    /// Issue 23, race 1 at its narrowest: the old link's unlink reaches MAX after the person
    /// consented to a new link but before the diary stored it (between `/authorize/confirm` and the
    /// callback). MAX detaches the old link's profile but keeps the grant, which now carries the new
    /// link: the callback's code exchange and the provisioning succeed.
    async fn an_unlink_landing_between_consent_and_callback_keeps_the_new_grant(app) {
        let st = diary(&app);
        let b = linked(&app, "student2", OTHER).await;
        let (subject, _) = link_of(&app, "student2").await.unwrap();
        let late = unlink_held(&app, "student2").await;
        // The new link, up to MAX's consent: the browser still has its MAX session.
        let cont = app.start_link(&b).await;
        assert!(cont.url.contains("/authorize/continue"), "{}", cont.url);
        let to_callback = b.post(&format!("{}/authorize/confirm", app.max), &[("csrf", &cont.csrf())]).await;
        assert!(to_callback.location.as_deref().is_some_and(|l| l.contains("/sferum/callback")), "{:?}", to_callback.location);
        assert!(deliver_now(st, &late).await, "the old link's unlink lands now");
        let done = b.follow(to_callback).await;
        assert!(done.has("успешно привязана"), "{}", done.body);
        let (grants, tokens, confirmed) = at_max(&app, &subject).await;
        assert!(grants >= 1 && tokens >= 1 && confirmed, "{grants} {tokens} {confirmed}");
        assert!(sferum_works(&app, &b).await);
    }
}

both_backends! {
    /// Issue 23, defect 3: a job MAX refuses ("no grant for this subject") is not marked done: it
    /// waits, visible, until the reconciliation repairs the difference (MAX lost the grant, so the
    /// link ends in the diary too) and retries it — then it is superseded and nothing is left.
    async fn a_refused_job_waits_for_the_reconciliation_which_repairs_and_retries_it(app) {
        let st = diary(&app);
        let _b = linked(&app, "student3", OTHER).await;
        let (subject, generation) = link_of(&app, "student3").await.unwrap();
        max(&app).db.execute(sqlx::query("DELETE FROM grants WHERE subject = $1").bind(&subject)).await.unwrap();
        let mut tx = st.db.begin().await.unwrap();
        let job = Job::Provision { user_id: "student-3".into(), subject: subject.clone(), generation };
        let id = outbox::enqueue(&mut tx, &job, st.now()).await.unwrap();
        tx.commit().await.unwrap();
        assert!(!outbox::deliver(st, &id).await.unwrap());
        let refused = outbox::refused(st).await.unwrap();
        assert_eq!(refused.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [id.as_str()], "kept, not done");
        assert_eq!(outbox::backlog(st).await.unwrap().refused, 1);
        // Support sees it.
        let out = crate::admin::edulink(&app.config, &app.config.data_dir, &["admin", "outbox"]).await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("refused: 1") && text.contains(&id) && text.contains("no grant"), "{text}");

        let report = reconcile::run(st).await.unwrap();
        assert_eq!(report.removed_locally, [subject.as_str()], "{report:?}");
        assert!(report.retried >= 1);
        assert_eq!(link_of(&app, "student3").await, None, "the link MAX lost ends in the diary");
        settle(st).await;
        assert!(outbox::refused(st).await.unwrap().is_empty());
    }
}

both_backends! {
    /// The reconciliation repairs the other differences: a live link at MAX the diary no longer has
    /// (an unlink that never landed) is detached, and a diary link MAX has not provisioned (its mark
    /// and profile lost) is provisioned again. A second pass finds nothing.
    async fn the_reconciliation_detaches_what_the_diary_lost_and_provisions_what_max_lost(app) {
        let st = diary(&app);
        let _a = linked(&app, "student4", PHONE).await;
        let _b = linked(&app, "student5", OTHER).await;
        let (gone, _) = link_of(&app, "student4").await.unwrap();
        let (kept, _) = link_of(&app, "student5").await.unwrap();
        st.db.execute(sqlx::query("DELETE FROM links WHERE user_id = 'student-4'")).await.unwrap();
        let m = &max(&app).db;
        m.execute(sqlx::query("UPDATE link_marks SET generation = -1, removed = 1 WHERE subject = $1").bind(&kept)).await.unwrap();
        m.execute(sqlx::query(
            "UPDATE sferum_profiles SET confirmed_by = NULL WHERE account_id IN (SELECT account_id FROM grants WHERE subject = $1)",
        ).bind(&kept)).await.unwrap();

        let report = reconcile::run(st).await.unwrap();
        assert_eq!((report.detached.clone(), report.reprovisioned.clone()), (vec![gone.clone()], vec![kept.clone()]), "{report:?}");
        settle(st).await;
        assert_eq!(at_max(&app, &gone).await, (0, 0, false));
        assert!(at_max(&app, &kept).await.2, "confirmed again");
        let again = reconcile::run(st).await.unwrap();
        assert_eq!(again.repaired() + again.awaiting.len(), 0, "{again:?}");
    }
}

both_backends! {
    /// Issue 23, defect 5: a grant made at `/authorize/confirm` whose callback never came back (an
    /// abandoned or interrupted link) is revoked with its tokens once `max.unfinished_link_secs`
    /// passed; a grant that became a link is not.
    async fn unfinished_link_grants_are_revoked_after_a_bounded_time(app) {
        let _linked = linked(&app, "student6", PHONE).await;
        let (live, _) = link_of(&app, "student6").await.unwrap();
        let b = Browser::new();
        app.diary_login(&b, "student7").await;
        let phone_page = app.start_link(&b).await;
        let code_page = app.enter_phone(&b, &phone_page, OTHER.0).await;
        let code = app.last_code(OTHER.1);
        let after = b.follow(app.enter_code(&b, &code_page, &code).await).await;
        let confirm = if after.url.ends_with("/login/register") {
            b.submit(&format!("{}/login/register", app.max), &[("csrf", &after.csrf()), ("first_name", "Анна"), ("last_name", "Брошенная")]).await
        } else {
            after
        };
        let abandoned = b.post(&format!("{}/authorize/confirm", app.max), &[("csrf", &confirm.csrf())]).await;
        assert!(abandoned.location.is_some(), "a code was issued");
        let m = max(&app);
        let grants = || async { sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM grants").fetch_one(m.db.pool()).await.unwrap() };
        let before = grants().await;
        assert_eq!(edulink_max::links::sweep_unfinished(m, m.cfg.unfinished_link_secs).await.unwrap(), 0, "not yet");
        app.clock.advance(m.cfg.unfinished_link_secs + 1);
        assert_eq!(edulink_max::links::sweep_unfinished(m, m.cfg.unfinished_link_secs).await.unwrap(), 1);
        assert_eq!(grants().await, before - 1);
        assert_eq!(at_max(&app, &live).await.0, 1, "the linked grant stays");
    }
}

/// Issue 23, defects 2 and 4 at MAX (SQLite: a trigger makes the grant's deletion, then the audit
/// record, fail): MAX's detach is one transaction — the profile, the tokens, the grant, the
/// notification and the audit record change together or not at all. Before, the profile was
/// detached and the tokens revoked in their own commits and the grant stayed; the notification and
/// audit record came after the commit.
#[tokio::test]
async fn max_detach_is_one_transaction() {
    let app = spawn_app().await;
    let st = diary(&app);
    let _b = linked(&app, "student8", PHONE).await;
    let (subject, generation) = link_of(&app, "student8").await.unwrap();
    let m = &max(&app).db;
    m.execute(sqlx::query(
        "CREATE TRIGGER no_grant_delete BEFORE DELETE ON grants BEGIN SELECT RAISE(ABORT, 'injected'); END",
    ))
    .await
    .unwrap();
    assert!(st.rp.detach(&subject, generation).await.is_err(), "the injected failure");
    let (grants, tokens, confirmed) = at_max(&app, &subject).await;
    assert!(grants == 1 && tokens >= 1 && confirmed, "nothing changed: {grants} {tokens} {confirmed}");
    m.execute(sqlx::query("DROP TRIGGER no_grant_delete")).await.unwrap();
    // The same when the audit record fails: before, it was written after the commit and lost.
    m.execute(sqlx::query(
        "CREATE TRIGGER no_detach_audit BEFORE INSERT ON audit WHEN NEW.event = 'sferum_detached' \
         BEGIN SELECT RAISE(ABORT, 'injected'); END",
    ))
    .await
    .unwrap();
    assert!(st.rp.detach(&subject, generation).await.is_err(), "the injected failure");
    let (grants, tokens, confirmed) = at_max(&app, &subject).await;
    assert!(grants == 1 && tokens >= 1 && confirmed, "nothing changed: {grants} {tokens} {confirmed}");
    m.execute(sqlx::query("DROP TRIGGER no_detach_audit")).await.unwrap();
    st.rp.detach(&subject, generation).await.unwrap();
    assert_eq!(at_max(&app, &subject).await, (0, 0, false));
    let detached: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit WHERE event = 'sferum_detached' AND subject = $1")
            .bind(&subject)
            .fetch_one(m.pool())
            .await
            .unwrap();
    assert_eq!(detached, 1, "audited once, with the change");
}

/// Issue 23, defect 4 (SQLite: a trigger makes the unlink's audit record fail): the diary's unlink
/// commits with its audit record or not at all. Before, the record was written after the commit and
/// its failure (or a crash) lost it while the link was gone.
#[tokio::test]
async fn the_diary_unlink_commits_with_its_audit_record() {
    let app = spawn_app().await;
    let st = diary(&app);
    let _b = linked(&app, "student9", PHONE).await;
    st.db
        .execute(sqlx::query(
            "CREATE TRIGGER no_unlink_audit BEFORE INSERT ON audit WHEN NEW.event = 'unlink' \
             BEGIN SELECT RAISE(ABORT, 'injected'); END",
        ))
        .await
        .unwrap();
    let u = user(&app, "student9").await;
    assert!(links::remove(st, &u, Actor::Operator { name: "test" }).await.is_err());
    assert!(link_of(&app, "student9").await.is_some(), "still linked: nothing committed");
    st.db.execute(sqlx::query("DROP TRIGGER no_unlink_audit")).await.unwrap();
    links::remove(st, &u, Actor::Operator { name: "test" }).await.unwrap();
    let history = edulink_diary::audit::history(&st.db, &u.id).await.unwrap();
    assert_eq!(history.iter().filter(|h| h.event == "unlink").count(), 1);
}

both_backends! {
    /// Issue 23, defect 6: a job leased by this instance's previous boot (it crashed between the
    /// commit and the delivery) is due as soon as the instance is back, not after the lease's 60 s;
    /// another instance's lease is left alone.
    async fn a_restarted_instance_takes_its_own_leases_back_at_once(app) {
        let st = diary(&app);
        let _b = linked(&app, "student1", PHONE).await;
        let (subject, generation) = link_of(&app, "student1").await.unwrap();
        let job = Job::Provision { user_id: "student-1".into(), subject, generation };
        let previous_boot = Lease { instance: st.lease.instance.clone(), boot: "crashed".into() };
        let other_instance = Lease { instance: "elsewhere/10.0.0.9:8080".into(), boot: "alive".into() };
        let mut tx = st.db.begin().await.unwrap();
        let mine = outbox::enqueue_claimed(&mut tx, &previous_boot, &job, st.now()).await.unwrap();
        let theirs = outbox::enqueue_claimed(&mut tx, &other_instance, &job, st.now()).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(outbox::release_own_leases(st).await.unwrap(), 1);
        let done = |id: String| async move {
            sqlx::query_scalar::<_, Option<i64>>("SELECT done_at FROM outbox WHERE id = $1")
                .bind(id).fetch_one(st.db.pool()).await.unwrap().is_some()
        };
        // Delivered by this test or by the server's worker, within seconds, the clock unmoved.
        settle_job(st, &mine, done).await;
        assert!(!done(theirs).await, "a live instance's lease is its own");
    }
}
