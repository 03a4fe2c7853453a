//! The browser harness: chromedriver started per test, Chromium sessions (desktop, phone, without
//! JavaScript), and the checks every page goes through (console, labels, axe-core, screenshot).

use fantoccini::elements::Element;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// True when the browser tests must run (CI): a missing browser fails instead of skipping.
fn required() -> bool {
    std::env::var("EDULINK_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

/// `chromedriver`, started for one test and killed when dropped.
pub struct Driver {
    child: Child,
    url: String,
    profiles: Vec<tempfile::TempDir>,
    axe: Option<String>,
}

impl Driver {
    /// Starts chromedriver on a free port; `None` (after a message on stderr) when Chromium or
    /// chromedriver is not installed and the browser is not required.
    pub async fn start(test: &str) -> Option<Driver> {
        let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER].into_iter().filter(|p| !Path::new(p).exists()).collect();
        if !missing.is_empty() {
            let msg = format!(
                "browser test `{test}` SKIPPED: {} not installed (apt-get install chromium chromium-driver)",
                missing.join(" and ")
            );
            if required() {
                panic!("EDULINK_REQUIRE_BROWSER=1 but {msg}");
            }
            eprintln!("{msg}");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not answer on port {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(Driver { child, url, profiles: Vec::new(), axe: load_axe(test) })
    }

    /// A new browser (fresh profile: no cookies) in `view`.
    pub async fn open(&mut self, view: View) -> Page {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--hide-scrollbars".into(),
            "--force-color-profile=srgb".into(),
            "--lang=ru-RU".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let prefs = json!({ "intl.accept_languages": "ru-RU,ru" });
        let mut options = json!({ "binary": CHROMIUM, "prefs": prefs });
        if view.phone {
            options["mobileEmulation"] = json!({
                "deviceMetrics": { "width": 390, "height": 844, "pixelRatio": 2, "touch": true },
                "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) \
                              Chrome/130.0 Mobile Safari/537.36"
            });
        } else {
            args.push("--window-size=1280,800".into());
        }
        options["args"] = json!(args);
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let serde_json::Value::Object(caps) = caps else { unreachable!() };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session");
        self.profiles.push(profile);
        let page = Page { client, view, axe: self.axe.clone() };
        if !view.js {
            // No page script runs (DevTools still evaluates the test's own checks).
            page.scripts(false).await;
        }
        if !view.phone {
            // Headless Chromium keeps room for a (virtual) toolbar inside the window: fix the
            // viewport itself at 1280×800.
            page.cdp(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false }),
            )
            .await;
            assert_eq!(page.viewport().await, (1280, 800), "desktop viewport");
        }
        page
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.profiles.clear();
    }
}

fn load_axe(test: &str) -> Option<String> {
    let path = std::env::var_os("EDULINK_AXE_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("node_modules/axe-core/axe.min.js"));
    match std::fs::read_to_string(&path) {
        Ok(s) => Some(s),
        Err(e) if required() => panic!("EDULINK_REQUIRE_BROWSER=1 but axe-core is missing at {}: {e}", path.display()),
        Err(_) => {
            eprintln!(
                "browser test `{test}`: the axe-core check is SKIPPED: no {} (npm install --prefix crates/browser axe-core)",
                path.display()
            );
            None
        }
    }
}

/// How a browser looks at the site.
#[derive(Debug, Clone, Copy)]
pub struct View {
    /// A 390×844 phone (mobile emulation) rather than a 1280×800 desktop.
    pub phone: bool,
    /// JavaScript enabled.
    pub js: bool,
}

impl View {
    pub const DESKTOP: View = View { phone: false, js: true };
    pub const PHONE: View = View { phone: true, js: true };
    pub const NO_JS: View = View { phone: false, js: false };
}

/// A WebDriver command chromedriver offers beyond fantoccini's API.
#[derive(Debug)]
struct Extra {
    path: &'static str,
    body: Value,
}

impl WebDriverCompatibleCommand for Extra {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/{}", session_id.unwrap_or_default(), self.path))
    }
    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.body.to_string()))
    }
}

/// One browser, with the steps a person takes and the checks each page must pass.
pub struct Page {
    pub client: Client,
    pub view: View,
    axe: Option<String>,
}

impl Page {
    /// Turns the page's JavaScript on or off (for every following navigation too).
    async fn scripts(&self, on: bool) {
        self.cdp("Emulation.setScriptExecutionDisabled", json!({ "value": !on })).await;
    }

    /// A Chrome DevTools Protocol command.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.client
            .issue_cmd(Extra { path: "goog/cdp/execute", body: json!({ "cmd": cmd, "params": params }) })
            .await
            .unwrap_or_else(|e| panic!("{cmd}: {e}"))
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    pub async fn url(&self) -> String {
        self.client.current_url().await.expect("url").to_string()
    }

    /// The visible text of the page.
    pub async fn text(&self) -> String {
        self.client.find(Locator::Css("body")).await.expect("body").text().await.expect("text")
    }

    /// Asserts that the page shows `needle`.
    pub async fn sees(&self, needle: &str) {
        let text = self.text().await;
        assert!(text.contains(needle), "expected «{needle}» on {}:\n{text}", self.url().await);
    }

    /// Asserts that the page does not show `needle`.
    pub async fn does_not_see(&self, needle: &str) {
        let text = self.text().await;
        assert!(!text.contains(needle), "did not expect «{needle}» on {}:\n{text}", self.url().await);
    }

    pub async fn viewport(&self) -> (u64, u64) {
        let v = self.js("return [window.innerWidth, window.innerHeight];").await;
        (v[0].as_u64().unwrap_or(0), v[1].as_u64().unwrap_or(0))
    }

    /// Runs `script` in the page (through DevTools: it works without page JavaScript and under CSP).
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The element for `css`.
    pub async fn el(&self, css: &str) -> Element {
        self.client.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await.unwrap_or_else(|e| {
            panic!("no element `{css}`: {e}");
        })
    }

    /// The button (or button-like link) whose visible text is exactly `text`.
    pub async fn button(&self, text: &str) -> Element {
        let xpath = format!(
            "//*[(self::button or self::a) and normalize-space(.)='{text}'] | //input[@type='submit' and @value='{text}']"
        );
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no button «{text}»: {e}"))
    }

    /// Clicks the button «text» and waits for the next page.
    pub async fn press(&self, text: &str) {
        self.mark().await;
        self.button(text).await.click().await.unwrap_or_else(|e| panic!("click «{text}»: {e}"));
        self.next_page(&format!("«{text}»")).await;
    }

    /// The browser's Back button, waiting for the page it goes back to.
    /// (The page may come back from the back-forward cache, already marked by the click that left
    /// it: the wait is for another URL, fully loaded.)
    pub async fn back(&self) {
        let from = self.url().await;
        self.client.back().await.expect("back");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let state = self.client.execute("return document.readyState;", vec![]).await;
            if self.url().await != from && matches!(state, Ok(Value::String(ref s)) if s == "complete") {
                return;
            }
            assert!(Instant::now() < deadline, "no page after Back from {from}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A real pointer tap at (`x`, `y`) CSS px from the viewport's top left.
    pub async fn tap_at(&self, x: f64, y: f64) {
        use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
        let tap = MouseActions::new("tap".into())
            .then(PointerAction::MoveTo { duration: None, x, y })
            .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
            .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
        self.client.perform_actions(tap).await.expect("tap");
        self.client.release_actions().await.expect("release");
    }

    /// Clicks the button «text» that acts within the page (a dialog's button).
    pub async fn press_here(&self, text: &str) {
        self.button(text).await.click().await.unwrap_or_else(|e| panic!("click «{text}»: {e}"));
    }

    /// Clicks `css` and waits for the next page.
    pub async fn click(&self, css: &str) {
        self.mark().await;
        self.el(css).await.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
        self.next_page(css).await;
    }

    /// Clicks `css` that acts within the page (opens a dialog).
    pub async fn click_here(&self, css: &str) {
        self.el(css).await.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Marks the current document, to tell when the next one has replaced it.
    async fn mark(&self) {
        self.js("window.__edulinkOld = true; return null;").await;
    }

    /// Waits until a new document has replaced the marked one and finished loading.
    async fn next_page(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let state =
                self.client.execute("return window.__edulinkOld === true ? 'old' : document.readyState;", vec![]).await;
            if matches!(state, Ok(Value::String(ref s)) if s == "complete") {
                return;
            }
            assert!(Instant::now() < deadline, "no new page after {what} (still {state:?})");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `value` into the field `css` (after clearing it).
    pub async fn fill(&self, css: &str, value: &str) {
        let el = self.el(css).await;
        el.clear().await.expect("clear");
        el.send_keys(value).await.expect("type");
    }

    /// The CSS selector of the focused element, for focus checks: `#id`, or `tag.class`.
    pub async fn focused(&self) -> String {
        self.js(
            "var e = document.activeElement; if (!e) return ''; \
             if (e.id) return '#' + e.id; \
             return e.tagName.toLowerCase() + (e.className ? '.' + String(e.className).trim().split(/\\s+/).join('.') : '');",
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Presses `key` (a `fantoccini::key::Key` as a string, or text) on the focused element.
    pub async fn key(&self, key: &str) {
        let el = self.client.active_element().await.expect("active element");
        el.send_keys(key).await.expect("key");
    }

    /// The browser console since the last call: SEVERE entries (errors, failed loads, CSP).
    async fn console_errors(&self) -> Vec<String> {
        let log = self.client.issue_cmd(Extra { path: "se/log", body: json!({ "type": "browser" }) }).await;
        let Ok(Value::Array(entries)) = log else {
            panic!("the browser log is not available: {log:?}");
        };
        entries
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The checks every screen passes, then its screenshot as `name`.png.
    /// `expected_status` allows the one console line Chromium writes for a page answered with a
    /// deliberate 4xx (e.g. a wrong code: 400); anything else in the console fails the test.
    pub async fn check(&self, name: &str) {
        self.check_allowing(name, None).await;
    }

    /// [`Page::check`] for a page whose document was deliberately answered with `status`.
    pub async fn check_allowing(&self, name: &str, status: Option<u16>) {
        let url = self.url().await;
        // Let the page run its scripts (countdowns, dialogs) before reading the console.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let errors: Vec<String> = self
            .console_errors()
            .await
            .into_iter()
            .filter(|m| {
                !status.is_some_and(|s| m.contains("Failed to load resource") && m.contains(&format!("status of {s}")))
            })
            .collect();
        assert!(errors.is_empty(), "console errors on {name} ({url}):\n{}", errors.join("\n"));

        let unlabeled = self
            .js(
                "var bad = []; document.querySelectorAll('input, select, textarea').forEach(function (e) { \
                   if (e.type === 'hidden') return; \
                   var named = (e.labels && e.labels.length > 0) || e.getAttribute('aria-label') || e.getAttribute('aria-labelledby'); \
                   if (!named) bad.push(e.outerHTML); }); return bad;",
            )
            .await;
        assert_eq!(unlabeled, json!([]), "inputs without a label on {name} ({url})");

        let lang = self.js("return document.documentElement.lang;").await;
        assert!(lang == "ru" || lang == "en", "html lang on {name}: {lang}");

        self.axe(name, &url).await;
        self.screenshot(name).await;
    }

    /// axe-core on the current page: no serious or critical violation.
    async fn axe(&self, name: &str, url: &str) {
        let Some(axe) = &self.axe else { return };
        if !self.view.js {
            // axe-core needs timers and promises: let scripts run for the audit only (the page's own
            // scripts ran — or rather did not — when it loaded).
            self.scripts(true).await;
        }
        let loaded = self.js("return typeof window.axe === 'object';").await;
        if loaded != json!(true) {
            // Evaluated through DevTools: the page's CSP (script-src 'self') does not apply.
            self.client.execute(&format!("{axe}\n;return true;"), vec![]).await.expect("load axe-core");
        }
        let result = self
            .client
            .execute_async(
                "var done = arguments[arguments.length - 1]; \
                 axe.run(document, { resultTypes: ['violations'] }).then(function (r) { \
                   done(r.violations.filter(function (v) { return v.impact === 'serious' || v.impact === 'critical'; }) \
                     .map(function (v) { return v.impact + ' ' + v.id + ': ' + v.help + ' — ' + \
                       v.nodes.slice(0, 3).map(function (n) { return n.html + ' (' + n.failureSummary + ')'; }).join(' | '); })); \
                 }, function (e) { done(['axe failed: ' + e]); });",
                vec![],
            )
            .await
            .expect("axe.run");
        if !self.view.js {
            self.scripts(false).await;
        }
        assert_eq!(result, json!([]), "axe-core: serious/critical violations on {name} ({url})");
    }

    /// Saves a PNG of the page (its top 1,000 CSS px on a desktop, 1,100 on a phone) as `$EDULINK_SCREENSHOTS/name.png`.
    pub async fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("EDULINK_SCREENSHOTS") else { return };
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let size = self
            .js("return [document.documentElement.clientWidth, Math.max(document.documentElement.scrollHeight, window.innerHeight)];")
            .await;
        let width = size[0].as_f64().unwrap_or(1280.0);
        // Long pages (the schedule, the lesson list) are cut: a README picture, not an archive.
        let height = size[1].as_f64().unwrap_or(800.0).min(if self.view.phone { 1100.0 } else { 1000.0 });
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": { "x": 0, "y": 0, "width": width, "height": height, "scale": 1 }
                }),
            )
            .await;
        let data = shot["data"].as_str().expect("png data");
        let png = decode_base64(data);
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
