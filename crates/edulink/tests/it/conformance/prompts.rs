//! The basic plan's modules for `prompt`, `max_age`, the hints, the locales and the request
//! parameters an OP must accept even when it does not act on them (OIDC Core §3.1.2.1).

use super::*;
use edulink_testkit::both_backends;

/// Links the suite's client once (sign-in and consent) and returns the first ID token's claims.
async fn first_link(app: &TestApp, b: &Browser, rp: &Rp) -> Value {
    sign_in(app, b).await;
    let body = tokens(app, b, rp, &Authz::new(rp)).await;
    claims(body["id_token"].as_str().unwrap())
}

both_backends! {
    /// `oidcc-prompt-login`: with a MAX session, `prompt=login` asks for a new SMS sign-in before
    /// the code, and the second ID token's `auth_time` is that sign-in's (OIDC Core §3.1.2.1).
    async fn oidcc_prompt_login(app) {
    let rp = suite_rp(&app).await;
    let b = Browser::new();
    let first = first_link(&app, &b, &rp).await;
    // Past the SMS resend gap (60 s), so a second code may go to the same phone.
    app.clock.advance(61);
    let authz = Authz::new(&rp).set("prompt", "login");
    let page = visit_max(&app, &b, &authz.url(&app)).await;
    assert!(page.url.ends_with("/login"), "a sign-in page, not a code: {} {:?}", page.url, page.location);
    let after = sms_sign_in(&app, &b, &page).await;
    let q = to_client(&b, &rp, after, true).await.unwrap();
    let (_, body) = redeem(&app, &rp, &q["code"], &authz.verifier).await;
    let second = claims(body["id_token"].as_str().unwrap());
    // The clock is the wall clock moved forward: a real second may pass too.
    let (first_at, second_at) = (first["auth_time"].as_i64().unwrap(), second["auth_time"].as_i64().unwrap());
    assert!((first_at + 61..=first_at + 66).contains(&second_at), "{first_at} → {second_at}");
    assert_eq!(second["sub"], first["sub"]);
    }
}

both_backends! {
    /// `oidcc-prompt-none-not-logged-in`: no MAX session → `login_required`, with no page.
    async fn oidcc_prompt_none_not_logged_in(app) {
    let rp = suite_rp(&app).await;
    let page = Browser::new().get(&Authz::new(&rp).set("prompt", "none").url(&app)).await;
    assert_eq!(redirected_error(&app, &rp, &page), "login_required");
    }
}

both_backends! {
    /// `oidcc-prompt-none-logged-in`: with a session and a grant, `prompt=none` returns a code at
    /// once; its ID token keeps the sign-in's `auth_time` (issue 16, defect 1: it moved before).
    async fn oidcc_prompt_none_logged_in(app) {
    let rp = suite_rp(&app).await;
    let b = Browser::new();
    let first = first_link(&app, &b, &rp).await;
    app.clock.advance(45);
    let authz = Authz::new(&rp).set("prompt", "none");
    let page = b.get(&authz.url(&app)).await;
    let q = callback(&rp, &page).expect("a code at once");
    let (_, body) = redeem(&app, &rp, &q["code"], &authz.verifier).await;
    let second = claims(body["id_token"].as_str().unwrap());
    assert_eq!(second["auth_time"], first["auth_time"], "no new authentication happened");
    }
}

both_backends! {
    /// `oidcc-max-age-1` (issue 16, defect 1): a sign-in older than `max_age=1` is not enough: MAX
    /// asks for a new SMS sign-in, and the ID token has an `auth_time` later than the first and
    /// recent (OIDC Core §3.1.2.1; openid-client with `maxAge: 1` checks the same).
    async fn oidcc_max_age_1(app) {
    let rp = suite_rp(&app).await;
    let b = Browser::new();
    let first = first_link(&app, &b, &rp).await;
    // Past max_age, and past the SMS resend gap (60 s) so a second code may go to the same phone.
    app.clock.advance(61);
    let authz = Authz::new(&rp).set("max_age", "1");
    let page = visit_max(&app, &b, &authz.url(&app)).await;
    assert!(page.url.ends_with("/login"), "a sign-in page, not a code: {}", page.url);
    let after = sms_sign_in(&app, &b, &page).await;
    let q = to_client(&b, &rp, after, true).await.unwrap();
    let (_, body) = redeem(&app, &rp, &q["code"], &authz.verifier).await;
    let second = claims(body["id_token"].as_str().unwrap());
    let auth_time = second["auth_time"].as_i64().expect("auth_time is REQUIRED with max_age");
    assert!(auth_time > first["auth_time"].as_i64().unwrap());
    assert!(second["iat"].as_i64().unwrap() - auth_time <= 5, "recent");
    }
}

both_backends! {
    /// `oidcc-max-age-10000`: a sign-in younger than `max_age` needs no new one; `auth_time` is
    /// present and unchanged.
    async fn oidcc_max_age_10000(app) {
    let rp = suite_rp(&app).await;
    let b = Browser::new();
    let first = first_link(&app, &b, &rp).await;
    app.clock.advance(60);
    let authz = Authz::new(&rp).set("max_age", "10000");
    let page = b.get(&authz.url(&app)).await;
    let q = callback(&rp, &page).expect("a code at once");
    let (_, body) = redeem(&app, &rp, &q["code"], &authz.verifier).await;
    assert_eq!(claims(body["id_token"].as_str().unwrap())["auth_time"], first["auth_time"]);
    }
}

both_backends! {
    /// `oidcc-id-token-hint`: the first ID token as `id_token_hint` with `prompt=none` gives a code
    /// for the same subject at once, and does not move `auth_time` (issue 16, defect 1).
    async fn oidcc_id_token_hint(app) {
    let (rp, b) = signed_in_suite(&app).await;
    let body = tokens(&app, &b, &rp, &Authz::new(&rp)).await;
    let hint = body["id_token"].as_str().unwrap();
    app.clock.advance(30);
    let authz = Authz::new(&rp).set("prompt", "none").set("id_token_hint", hint);
    let page = b.get(&authz.url(&app)).await;
    let q = callback(&rp, &page).expect("a code at once");
    let (_, again) = redeem(&app, &rp, &q["code"], &authz.verifier).await;
    let (first, second) = (claims(hint), claims(again["id_token"].as_str().unwrap()));
    assert_eq!(second["sub"], first["sub"]);
    assert_eq!(second["auth_time"], first["auth_time"]);
    }
}

/// Asserts the request `authz` (a fresh browser, signed in) gives a code: an optional parameter
/// MAX does not act on is accepted.
async fn accepted(app: &TestApp, authz_of: impl Fn(&Rp) -> Authz) {
    let (rp, b) = signed_in_suite(app).await;
    let authz = authz_of(&rp);
    tokens(app, &b, &rp, &authz).await;
}

both_backends! {
    /// `oidcc-login-hint`: `login_hint` (a phone) is accepted; MAX's phone page asks all the same.
    async fn oidcc_login_hint(app) {
    accepted(&app, |rp| Authz::new(rp).set("login_hint", E164)).await;
    }
}

both_backends! {
    /// `oidcc-display-page`: `display=page` is accepted (MAX's pages are made for any screen).
    async fn oidcc_display_page(app) {
    accepted(&app, |rp| Authz::new(rp).set("display", "page")).await;
    }
}

both_backends! {
    /// `oidcc-display-popup`: `display=popup` is accepted.
    async fn oidcc_display_popup(app) {
    accepted(&app, |rp| Authz::new(rp).set("display", "popup")).await;
    }
}

both_backends! {
    /// `oidcc-ensure-request-with-unknown-parameter-succeeds`: an unknown parameter is ignored
    /// (OIDC Core §3.1.2.1, RFC 6749 §3.1).
    async fn oidcc_ensure_request_with_unknown_parameter_succeeds(app) {
    accepted(&app, |rp| Authz::new(rp).set("extra", "foobar")).await;
    }
}

both_backends! {
    /// `oidcc-claims-locales`: `claims_locales` is accepted (MAX's claims have one language).
    async fn oidcc_claims_locales(app) {
    accepted(&app, |rp| Authz::new(rp).set("claims_locales", "se")).await;
    }
}

both_backends! {
    /// `oidcc-ensure-request-with-acr-values-succeeds`: `acr_values` is accepted (MAX has one
    /// authentication level, the SMS code; no `acr` is claimed).
    async fn oidcc_ensure_request_with_acr_values_succeeds(app) {
    accepted(&app, |rp| Authz::new(rp).set("acr_values", "1 2")).await;
    }
}

both_backends! {
    /// `oidcc-ui-locales` (issue 16, defect 6): `ui_locales` picks the language of the pages MAX
    /// shows for the request — the first supported tag wins (`fr-CA en-GB ru` → English) — over the
    /// browser's `Accept-Language`, through sign-in to the consent page.
    async fn oidcc_ui_locales(app) {
    let rp = suite_rp(&app).await;
    let b = Browser::new();
    let authz = Authz::new(&rp).set("ui_locales", "fr-CA en-GB ru");
    let phone = visit_max(&app, &b, &authz.url(&app)).await;
    assert!(phone.body.contains("<html lang=\"en\""), "{}", phone.body);
    let after = sms_sign_in(&app, &b, &phone).await;
    let confirm = b.follow(after).await;
    assert!(confirm.url.contains("/authorize/continue"), "{}", confirm.url);
    assert!(confirm.body.contains("<html lang=\"en\""), "{}", confirm.body);
    let ru = visit_max(&app, &Browser::new(), &Authz::new(&rp).set("ui_locales", "ru").url(&app)).await;
    assert!(ru.body.contains("<html lang=\"ru\""));
    }
}
