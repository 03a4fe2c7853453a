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

both_backends! {
    /// `edulink admin export --login` (152-FZ art. 14): one JSON with the diary's part (the
    /// account, the link, the audit) and MAX's part found through the link's subject (the account
    /// with its phone, the Сферум profile, memberships, consents, audit) — and no secret.
    async fn admin_export_holds_both_parties_data_and_no_secret(app) {
        let b = Browser::new();
        app.diary_login(&b, "student1").await;
        app.link(&b, "+7 900 000-00-01", "+79000000001").await;
        let out = crate::admin::edulink(&app.config, &app.config.data_dir, &["admin", "export", "--login", "student1"]).await;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["format"], "edulink-export/1");
        assert_eq!(v["diary"]["user"]["login"], "student1");
        assert!(v["diary"]["link"]["subject"].is_string(), "linked: {text}");
        assert!(v["diary"]["audit"].as_array().unwrap().iter().any(|r| r["event"] == "link"), "{text}");
        assert_eq!(v["max"]["account"]["phone"], "+79000000001");
        assert!(v["max"]["sferum_profile"]["school_name"].is_string(), "{text}");
        assert!(!v["max"]["memberships"].as_array().unwrap().is_empty(), "{text}");
        assert_eq!(v["max"]["grants"].as_array().unwrap().len(), 1, "{text}");
        assert!(!v["max"]["audit"].as_array().unwrap().is_empty(), "{text}");
        for secret in ["eyJ", "password", "refresh_enc", "phone_hash", "phone_enc"] {
            assert!(!text.contains(secret), "{secret} in the export: {text}");
        }
        let missing = crate::admin::edulink(&app.config, &app.config.data_dir, &["admin", "export", "--login", "nobody"]).await;
        assert!(!missing.status.success());
    }
}

both_backends! {
    /// «Мой паспорт» → «Скачать мои данные»: the student downloads the same export as support's
    /// command — the diary's part read directly, MAX's fetched from MAX's provisioning API with the
    /// diary's service token (the diary reads none of MAX's tables).
    async fn the_student_downloads_the_export_from_the_passport(app) {
        let b = Browser::new();
        app.diary_login(&b, "student1").await;
        let unlinked: serde_json::Value = serde_json::from_str(&b.get(&format!("{}/passport/export", app.diary)).await.body).unwrap();
        assert_eq!(unlinked["format"], "edulink-export/1");
        assert!(unlinked["max"].is_null());
        app.link(&b, "+7 900 000-00-01", "+79000000001").await;
        let passport = b.visit(&format!("{}/passport", app.diary)).await;
        assert!(passport.has("Скачать мои данные"), "{}", passport.body);
        let page = b.get(&format!("{}/passport/export", app.diary)).await;
        assert_eq!(page.status, reqwest::StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&page.body).unwrap();
        assert_eq!(v["diary"]["user"]["login"], "student1");
        assert_eq!(v["max"]["account"]["phone"], "+79000000001");
        assert!(!v["max"]["memberships"].as_array().unwrap().is_empty(), "{}", page.body);
        assert!(!page.body.contains("eyJ"));
        // Someone else's browser gets nothing.
        let stranger = Browser::new().get(&format!("{}/passport/export", app.diary)).await;
        assert!(!stranger.body.contains("student1"), "{}", stranger.body);
    }
}
