//! Minimal storage (issue 19 item 3): what each party keeps about a pupil is what a feature uses.

use edulink_testkit::{Browser, FlowsExt, both_backends};

both_backends! {
    /// The diary kept MAX's raw ID token — a JWT with the child's name — in `links.id_token`. It
    /// keeps the token only as the next sign-in's `id_token_hint`, encrypted under its master key:
    /// no JWT is readable in a dump of its database, and the hint still reads back.
    async fn the_diary_keeps_no_id_token_in_clear(app) {
        let b = Browser::new();
        app.diary_login(&b, "student1").await;
        let done = app.link(&b, "+7 900 000-00-01", "+79000000001").await;
        assert!(done.has("Сферум"), "{}", done.body);
        let st = app.running.diary.as_ref().unwrap();
        let dump = crate::hygiene::dump(&st.db).await;
        assert!(!dump.contains("eyJ"), "a JWT in the diary's database:\n{dump}");
        let link = edulink_diary::repo::link(&st.db, "student-1").await.unwrap().expect("linked");
        let hint = link.hint(&st.cipher).expect("the hint decrypts");
        assert_eq!(hint.split('.').count(), 3, "an ID token: {hint}");
    }
}
