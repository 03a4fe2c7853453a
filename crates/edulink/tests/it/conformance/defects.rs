//! Issue 16's defects that no plan module catches as such, each reproduced as the issue reports it
//! (each of these failed before its fix).

use super::*;
use edulink_testkit::both_backends;

both_backends! {
    /// Defect 1 (OIDC Core §2): `auth_time` is when the person signed in to MAX by SMS, not when the
    /// code was issued: a code issued 45 s after the sign-in says so.
    async fn auth_time_is_the_sms_sign_in_not_the_code(app) {
    let rp = suite_rp(&app).await;
    let b = Browser::new();
    let signed_in_at = edulink_domain::Clock::now(app.clock.as_ref());
    sign_in(&app, &b).await;
    app.clock.advance(45);
    let body = tokens(&app, &b, &rp, &Authz::new(&rp)).await;
    let c = claims(body["id_token"].as_str().unwrap());
    // The clock is the wall clock moved forward: a real second or two may pass too.
    let (auth_time, iat) = (c["auth_time"].as_i64().unwrap(), c["iat"].as_i64().unwrap());
    assert!((signed_in_at..signed_in_at + 5).contains(&auth_time), "{signed_in_at} → {auth_time}");
    assert!(iat - auth_time >= 45, "auth_time {auth_time}, iat {iat}");
    }
}

both_backends! {
    /// Defect 1 (OIDC Core §3.1.2.1): `prompt=none` cannot re-authenticate, so a sign-in older than
    /// `max_age` is `login_required` — and the diary's silent sign-in without `max_age` still works.
    async fn prompt_none_with_a_sign_in_older_than_max_age_is_login_required(app) {
    let (rp, b) = signed_in_suite(&app).await;
    tokens(&app, &b, &rp, &Authz::new(&rp)).await;
    app.clock.advance(120);
    let page = b.get(&Authz::new(&rp).set("prompt", "none").set("max_age", "60").url(&app)).await;
    assert_eq!(redirected_error(&app, &rp, &page), "login_required");
    let page = b.get(&Authz::new(&rp).set("prompt", "none").url(&app)).await;
    assert!(callback(&rp, &page).unwrap().contains_key("code"));
    }
}

both_backends! {
    /// Defect 4 (RFC 9700 §4.14): a refresh token presented by another client — here the public
    /// app client, which needs no secret — is refused without being marked used: the owner's next
    /// refresh is no «reuse», and its access token lives on.
    async fn a_refresh_token_of_another_client_is_refused_and_left_alone(app) {
    let (rp, b) = signed_in_suite(&app).await;
    let body = tokens(&app, &b, &rp, &Authz::new(&rp).set("scope", "openid offline_access")).await;
    let refresh = body["refresh_token"].as_str().unwrap();
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh)];
    let [native, _] = native_rps(&app).await;
    let (status, err) = token(&app, &native, &form).await;
    assert_eq!((status, err["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    assert_eq!(userinfo(&app, body["access_token"].as_str().unwrap()).await.0, StatusCode::OK);
    let (status, next) = token(&app, &rp, &form).await;
    assert_eq!(status, StatusCode::OK, "the owner's refresh is no reuse: {next}");
    assert_eq!(userinfo(&app, next["access_token"].as_str().unwrap()).await.0, StatusCode::OK);
    }
}

both_backends! {
    /// Defect 6 (RFC 6749 §4.1.2.1, Appendix A.5: `state` is VSCHAR, space included): a `state`
    /// with a space is accepted and comes back exactly, with the code and with an error.
    async fn a_state_with_a_space_is_echoed_exactly(app) {
    let (rp, b) = signed_in_suite(&app).await;
    let state = "a b+c%20d/?";
    let q = authorize(&app, &b, &rp, &Authz::new(&rp).set("state", state)).await;
    assert_eq!(q.get("state").map(String::as_str), Some(state));
    assert!(q.contains_key("code"));
    let page = b.get(&Authz::new(&rp).set("state", state).set("response_type", "token").url(&app)).await;
    let q = callback(&rp, &page).unwrap();
    assert_eq!((q["error"].as_str(), q.get("state").map(String::as_str)), ("unsupported_response_type", Some(state)));
    let bad = "tab\there";
    let page = b.get(&Authz::new(&rp).set("state", bad).url(&app)).await;
    let q = callback(&rp, &page).unwrap();
    assert_eq!((q["error"].as_str(), q.get("state").map(String::as_str)), ("invalid_request", Some(bad)));
    }
}

both_backends! {
    /// Defect 7 (RFC 8252 §8.6): a native app (public client, custom-scheme redirect) never gets a
    /// code without a click, even with a MAX session and a grant — for the app the child used and
    /// for one it never used — and `prompt=none` answers `consent_required`. The diary (confidential,
    /// first party) keeps its silent sign-in.
    async fn native_apps_never_get_a_code_without_a_click(app) {
    let b = Browser::new();
    sign_in(&app, &b).await;
    let diary = diary_rp(&app);
    authorize(&app, &b, &diary, &Authz::new(&diary)).await;
    let again = b.get(&Authz::new(&diary).url(&app)).await;
    assert!(callback(&diary, &again).unwrap().contains_key("code"), "the diary's SSO stays silent");

    for native in native_rps(&app).await {
        for round in 0..2 {
            let page = visit_max(&app, &b, &Authz::new(&native).url(&app)).await;
            assert!(page.url.contains("/authorize/continue") && page.has("/authorize/confirm"),
                "{} round {round}: a confirmation page, not a code: {} {:?}", native.id, page.url, page.location);
            let q = to_client(&b, &native, page, true).await.unwrap();
            assert!(q.contains_key("code"), "a code after the click");
        }
        let page = b.get(&Authz::new(&native).set("prompt", "none").url(&app)).await;
        assert_eq!(redirected_error(&app, &native, &page), "consent_required", "{}", native.id);
    }
    }
}

both_backends! {
    /// Defect 8 (logout CSRF): a cross-site `GET /oauth/authorize?…&prompt=login` does not end the
    /// person's MAX session; it lasts until a new SMS sign-in succeeds and replaces it.
    async fn a_cross_site_prompt_login_leaves_the_person_signed_in(app) {
    let (rp, b) = signed_in_suite(&app).await;
    let home = b.visit(&format!("{}/", app.max)).await;
    assert!(home.has("action=\"/logout\""), "signed in");
    // The attacker's page makes the browser load this.
    let page = b.get(&Authz::new(&rp).set("prompt", "login").set("state", "attacker").url(&app)).await;
    assert!(page.location.as_deref().is_some_and(|l| l.ends_with("/login")), "{:?}", page.location);
    let home = b.visit(&format!("{}/", app.max)).await;
    assert!(home.has("action=\"/logout\"") && home.has("Пётр Тестов"), "still signed in: {}", home.body);
    // The session is whole: the diary's silent sign-in still answers at once.
    let diary = diary_rp(&app);
    authorize(&app, &b, &diary, &Authz::new(&diary)).await;
    let page = b.get(&Authz::new(&diary).set("prompt", "none").url(&app)).await;
    assert!(callback(&diary, &page).unwrap().contains_key("code"));
    }
}

both_backends! {
    /// Item 11: `phone` is released only to a client registered for it — the diary asks and gets
    /// no phone (its minimal claims) — and only with consent: a client whose grant did not include
    /// `phone` shows the consent page again, and `prompt=none` is `consent_required`.
    async fn the_phone_goes_only_to_registered_clients_with_consent(app) {
    let b = Browser::new();
    sign_in(&app, &b).await;
    let diary = diary_rp(&app);
    let body = tokens(&app, &b, &diary, &Authz::new(&diary).set("scope", "openid profile phone")).await;
    assert_eq!(body["scope"], "openid profile", "the diary is not registered for phone");
    let (_, info) = userinfo(&app, body["access_token"].as_str().unwrap()).await;
    assert!(info.get("phone_number").is_none(), "{info}");

    let rp = suite_rp(&app).await;
    tokens(&app, &b, &rp, &Authz::new(&rp)).await;
    let silent = b.get(&Authz::new(&rp).set("scope", "openid phone").set("prompt", "none").url(&app)).await;
    assert_eq!(redirected_error(&app, &rp, &silent), "consent_required");
    let page = visit_max(&app, &b, &Authz::new(&rp).set("scope", "openid phone").url(&app)).await;
    assert!(page.has("/authorize/confirm") && page.has("получит номер телефона"), "{}", page.body);
    let deny = b.post(&format!("{}/authorize/deny", app.max), &[("csrf", &page.csrf())]).await;
    assert_eq!(callback(&rp, &deny).unwrap()["error"], "access_denied");
    }
}
