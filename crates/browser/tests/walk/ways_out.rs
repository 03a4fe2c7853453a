//! Issue 21: the child's path never dead-ends. Each walk makes a child's mistake in real Chromium
//! and takes the way out.

use super::{NEW_E164, NEW_PHONE, diary_login};
use crate::harness::{Driver, Page, View};
use edulink_testkit::{FlowsExt, spawn_app};

/// The rendered size of `css` in CSS px.
async fn size(p: &Page, css: &str) -> (f64, f64) {
    let v = p
        .js(&format!("var r = document.querySelector(\"{css}\").getBoundingClientRect(); return [r.width, r.height];"))
        .await;
    (v[0].as_f64().unwrap_or(0.0), v[1].as_f64().unwrap_or(0.0))
}

/// Waits (up to 5 s) for `needle`: a page restored from the back-forward cache reloads itself.
async fn eventually_sees(p: &Page, needle: &str) {
    for _ in 0..50 {
        if p.text().await.contains(needle) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    p.sees(needle).await;
}

/// Item 1 on a phone: Back on the code page. The phone page offers the code already sent (no
/// masked number in the field, no frozen «59 с»); «Продолжить» with the same number goes back to
/// the code page; the code works. Item 10: the ways out are ≥ 24 × 24 px (WCAG 2.2, 2.5.8) and
/// the ticking countdown is no live region (a polite region announces only its end).
#[tokio::test]
async fn back_on_the_code_page_leads_to_the_code() {
    let Some(mut driver) = Driver::start("back_on_the_code_page_leads_to_the_code").await else { return };
    let app = spawn_app().await;
    let p = driver.open(View::PHONE).await;
    diary_login(&p, &app, "student5", None).await;
    p.click("nav .sferum-link").await;
    p.press("Перейти к подключению").await;
    p.fill("#phone", NEW_PHONE).await;
    p.press("Продолжить").await;
    assert_eq!(p.url().await, format!("{}/login/code", app.max));
    let wait = p.el("#resend-wait").await;
    assert_eq!(wait.attr("aria-live").await.unwrap(), None, "the ticking text is not read every second");
    let live = p.js("var n = document.getElementById('resend-wait').nextElementSibling; return [n.getAttribute('aria-live'), n.textContent];").await;
    assert_eq!(live, serde_json::json!(["polite", ""]), "the end is announced once, in its own region");
    let (w, h) = size(&p, "a[href='/login']").await;
    assert!(w >= 24.0 && h >= 24.0, "«Ввести другой номер» is {w}×{h}");

    // Back: the way on is the code already sent.
    p.back().await;
    assert!(p.url().await.starts_with(&format!("{}/login", app.max)), "{}", p.url().await);
    eventually_sees(&p, "Код уже отправлен на номер +7 916 ***-**-67").await;
    let typed = p.el("#phone").await.prop("value").await.unwrap().unwrap_or_default();
    assert!(!typed.contains('*'), "no masked number in the field: {typed}");
    let (w, h) = size(&p, "a[href='/login/code']").await;
    assert!(w >= 24.0 && h >= 24.0, "«Ввести код из СМС» is {w}×{h}");
    p.check("ways-out-back-phone").await;
    // The child types the number again and presses «Продолжить»: the code page, no refusal.
    p.fill("#phone", NEW_PHONE).await;
    p.press("Продолжить").await;
    assert_eq!(p.url().await, format!("{}/login/code", app.max));
    p.does_not_see("Код уже отправлен.").await;
    // Back once more, and the link this time.
    p.back().await;
    eventually_sees(&p, "Ввести код из СМС").await;
    p.click("a[href='/login/code']").await;
    assert_eq!(p.url().await, format!("{}/login/code", app.max));
    assert_eq!(app.inbox.to(NEW_E164).len(), 1, "one SMS: the code already sent is the one");
    p.fill("#code", &app.last_code(NEW_E164)).await;
    p.press("Перейти в MAX").await;
    assert_eq!(p.url().await, format!("{}/login/register", app.max));
    p.close().await;
}
