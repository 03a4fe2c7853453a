//! The churn test (issue 19 item 6): link, sign in, unlink, again and again; once the clock has
//! passed every retention period and the janitor has run, every table of both parties holds as many
//! rows as before the first link — nothing a link carried outlives its periods. The school's own
//! content in Сферум (its class chats and distance lessons, which the first link of a school
//! provisions) is the school's, not the pupil's: it is counted after the first cycle and must not
//! grow with the cycles.

use edulink_store::janitor::Retention;
use edulink_store::{Db, sqlx};
use edulink_testkit::{Browser, FlowsExt, both_backends};
use std::collections::BTreeMap;

/// The demo MAX account's phone: the account (and its own Сферум profile) exists before the cycles.
const PHONE: &str = "+7 900 000-00-01";
const E164: &str = "+79000000001";
const CYCLES: usize = 4;

/// Rows per table of `db` (the store's own bookkeeping tables left out).
async fn counts(db: &Db) -> BTreeMap<String, i64> {
    let tables: Vec<String> = match db.backend() {
        edulink_store::Backend::Sqlite => {
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        }
        edulink_store::Backend::Postgres => sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
        ),
    }
    .fetch_all(db.pool())
    .await
    .unwrap();
    let mut out = BTreeMap::new();
    for t in tables.into_iter().filter(|t| !["schema_migrations", "store_health"].contains(&t.as_str())) {
        let n = crate::janitor::rows(db, &t).await;
        out.insert(t, n);
    }
    out
}

both_backends! {
    async fn link_sign_in_unlink_cycles_leave_every_table_at_its_baseline(app) {
        let (d, m) = (&app.running.diary.as_ref().unwrap().db, &app.running.max.as_ref().unwrap().db);
        let (diary_before, mut max_before) = (counts(d).await, counts(m).await);
        for i in 0..CYCLES {
            let b = Browser::new();
            app.diary_login(&b, "student1").await;
            let linked = app.link(&b, PHONE, E164).await;
            assert!(linked.has("Ваша учетная запись успешно привязана"), "cycle {i}: {}", linked.body);
            // A sign-in to Сферум from the diary.
            let signed_in = b.visit(&format!("{}/sferum", app.diary)).await;
            assert_eq!(signed_in.url, format!("{}/sferum", app.max), "cycle {i}");
            let confirm = b.visit(&format!("{}/passport/security/unlink", app.diary)).await;
            let done = b.submit(&format!("{}/passport/security/unlink", app.diary), &[("csrf", &confirm.csrf())]).await;
            assert!(done.has("Аккаунт «Сферум» отвязан"), "cycle {i}: {}", done.body);
            app.clock.advance(61);
            if i == 0 {
                let school = counts(m).await;
                for t in ["sferum_chats", "sferum_lessons"] {
                    max_before.insert(t.into(), school[t]);
                }
            }
        }
        let grown = counts(m).await;
        assert!(grown["audit"] > max_before["audit"] && grown["tokens"] > max_before["tokens"], "{grown:?}");
        app.clock.advance(Retention::default().longest() + 1);
        crate::janitor::sweep(&app, false).await;
        assert_eq!(counts(d).await, diary_before, "the diary's tables after {CYCLES} cycles and the janitor");
        assert_eq!(counts(m).await, max_before, "MAX's tables after {CYCLES} cycles and the janitor");
    }
}

/// Rows of `table` in MAX's database that name `column` = `value`.
async fn naming(db: &Db, table: &str, column: &str, value: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table} WHERE {column} = $1");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(value).fetch_one(db.pool()).await.unwrap()
}

both_backends! {
    /// 152-FZ art. 21 part 4: once the purpose is reached (the link ended), what the link carried is
    /// destroyed within 30 days. At the unlink itself: the diary's link row (subject, encrypted
    /// refresh token and ID token hint), MAX's grant, Сферум's school data and chat memberships; by
    /// the janitor within `unlinked_days` (30) of it: the revoked tokens, codes, the link's mark, the
    /// notifications about it, the delivered outbox jobs. Only pseudonymous audit records stay
    /// (their own purpose and period, docs/retention.md).
    async fn what_an_unlink_leaves_is_gone_within_thirty_days(app) {
        let (ds, ms) = (app.running.diary.as_ref().unwrap(), app.running.max.as_ref().unwrap());
        let b = Browser::new();
        app.diary_login(&b, "student1").await;
        app.link(&b, PHONE, E164).await;
        assert_eq!(b.visit(&format!("{}/sferum", app.diary)).await.url, format!("{}/sferum", app.max));
        let subject = edulink_diary::repo::link(&ds.db, "student-1").await.unwrap().expect("linked").subject;
        let account: String = sqlx::query_scalar("SELECT account_id FROM grants WHERE subject = $1")
            .bind(&subject)
            .fetch_one(ms.db.pool())
            .await
            .unwrap();
        let confirm = b.visit(&format!("{}/passport/security/unlink", app.diary)).await;
        b.submit(&format!("{}/passport/security/unlink", app.diary), &[("csrf", &confirm.csrf())]).await;

        assert_eq!(naming(&ds.db, "links", "subject", &subject).await, 0);
        assert_eq!(naming(&ms.db, "grants", "subject", &subject).await, 0);
        assert_eq!(naming(&ms.db, "sferum_members", "account_id", &account).await, 0);
        let school: Option<String> = sqlx::query_scalar("SELECT school_key FROM sferum_profiles WHERE account_id = $1")
            .bind(&account)
            .fetch_one(ms.db.pool())
            .await
            .unwrap();
        assert_eq!(school, None, "the school data went with the link");

        app.clock.advance(edulink_store::janitor::UNLINKED_MAX_SECS + 1);
        crate::janitor::sweep(&app, false).await;
        for (table, column, value) in [
            ("tokens", "account_id", &account),
            ("auth_codes", "account_id", &account),
            ("notifications", "account_id", &account),
            ("session_clients", "account_id", &account),
            ("link_marks", "subject", &subject),
        ] {
            assert_eq!(naming(&ms.db, table, column, value).await, 0, "MAX.{table} still names the link");
        }
        let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox").fetch_one(ds.db.pool()).await.unwrap();
        assert_eq!(jobs, 0, "the link's delivered jobs");
        assert!(naming(&ms.db, "audit", "subject", &subject).await > 0, "the pseudonymous audit stays");
    }
}

both_backends! {
    /// A removed link's mark outlives `unlinked_days` while a grant of its subject exists again (a
    /// new link consented to and under way: its provision and any late detach are judged against
    /// the mark), and goes once no grant is left.
    async fn a_removed_mark_stays_while_a_new_grant_of_its_subject_exists(app) {
        let (ds, ms) = (app.running.diary.as_ref().unwrap(), app.running.max.as_ref().unwrap());
        let b = Browser::new();
        app.diary_login(&b, "student1").await;
        app.link(&b, PHONE, E164).await;
        let subject = edulink_diary::repo::link(&ds.db, "student-1").await.unwrap().expect("linked").subject;
        let account: String = sqlx::query_scalar("SELECT account_id FROM grants WHERE subject = $1")
            .bind(&subject)
            .fetch_one(ms.db.pool())
            .await
            .unwrap();
        let confirm = b.visit(&format!("{}/passport/security/unlink", app.diary)).await;
        b.submit(&format!("{}/passport/security/unlink", app.diary), &[("csrf", &confirm.csrf())]).await;
        // A consent to a new link, its callback not yet back at the diary.
        ms.db
            .execute(
                sqlx::query(
                    "INSERT INTO grants (id, client_id, account_id, subject, scope, created_at, consented_at) \
                     VALUES ('g-new', 'mesh', $1, $2, 'openid profile offline_access', $3, $3)",
                )
                .bind(&account)
                .bind(&subject)
                .bind(ms.now() + edulink_store::janitor::UNLINKED_MAX_SECS),
            )
            .await
            .unwrap();
        app.clock.advance(edulink_store::janitor::UNLINKED_MAX_SECS + 1);
        crate::janitor::sweep(&app, false).await;
        assert_eq!(naming(&ms.db, "link_marks", "subject", &subject).await, 1, "the mark of a link under way stays");
        ms.db.execute(sqlx::query("DELETE FROM grants WHERE id = 'g-new'")).await.unwrap();
        crate::janitor::sweep(&app, false).await;
        assert_eq!(naming(&ms.db, "link_marks", "subject", &subject).await, 0);
    }
}
