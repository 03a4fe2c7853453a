//! The walks of a virtual student, step by step as a browser does them.

use crate::browser::{Browser, Page};
use reqwest::{Client, Url};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Where SMS codes are read.
#[derive(Clone)]
pub enum Sms {
    /// MAX's in-memory dev gateway, read over `GET /dev/sms` (one extra request per flow, counted).
    Dev,
    /// An HTTP SMS provider stand-in inside the benchmark: MAX posts `{to, text}` to it.
    Sink(Arc<Mutex<HashMap<String, String>>>),
}

/// The two parties as the browser sees them.
#[derive(Clone)]
pub struct Ctx {
    pub diary: Url,
    pub max: Url,
    /// The server's operator listener (`/metrics`).
    pub ops: Url,
    pub sms: Sms,
}

impl Ctx {
    pub fn d(&self, path: &str) -> Url {
        self.diary.join(path).expect("diary URL")
    }

    pub fn m(&self, path: &str) -> Url {
        self.max.join(path).expect("MAX URL")
    }

    /// The server's Prometheus metrics (on the operator listener, never on the public ports).
    pub fn metrics(&self) -> Url {
        self.ops.join("/metrics").expect("ops URL")
    }

    fn is_max(&self, u: &Url) -> bool {
        u.port_or_known_default() == self.max.port_or_known_default()
    }

    /// The newest code sent to `e164`.
    async fn code(&self, client: &Client, b: &mut Browser, e164: &str) -> Result<String, String> {
        let text = match &self.sms {
            Sms::Sink(map) => map.lock().expect("sms sink").remove(e164),
            Sms::Dev => {
                #[derive(serde::Deserialize)]
                struct Msg {
                    to: String,
                    text: String,
                }
                let mut url = self.m("/dev/sms");
                url.query_pairs_mut().append_pair("to", e164);
                let page = b.get(client, url).await?;
                let msgs: Vec<Msg> = serde_json::from_str(&page.body).map_err(|e| page.err(&e.to_string()))?;
                msgs.into_iter().rev().find(|m| m.to == e164).map(|m| m.text)
            }
        };
        let text = text.ok_or_else(|| format!("no SMS to {e164}"))?;
        Ok(text.rsplit('#').next().unwrap_or_default().trim().to_string())
    }
}

fn expect_path(p: &Page, ctx_is_max: bool, path: &str) -> Result<(), String> {
    if ctx_is_max && p.url.path() == path { Ok(()) } else { Err(p.err(&format!("expected {path}"))) }
}

/// Signs a diary user in (password `demo`).
pub async fn diary_login(ctx: &Ctx, client: &Client, b: &mut Browser, login: &str) -> Result<(), String> {
    let page = b.get(client, ctx.d("/login")).await?;
    let csrf = page.csrf()?;
    let home = b.submit(client, ctx.d("/login"), &[("csrf", &csrf), ("login", login), ("password", "demo")]).await?;
    expect_path(&home, !ctx.is_max(&home.url), "/")
}

/// The full link flow of a signed-in, unlinked diary user with a phone new to MAX: «Сферум» →
/// «Перейти к подключению» → MAX phone → code → registration → confirmation → diary callback (code
/// exchange and provisioning on the back channel) → «успешно привязана».
pub async fn link(ctx: &Ctx, client: &Client, b: &mut Browser, e164: &str) -> Result<(), String> {
    let connect = b.visit(client, ctx.d("/sferum")).await?;
    if !connect.body.contains("Перейти к подключению") {
        return Err(connect.err("not the connect page"));
    }
    let csrf = connect.csrf()?;
    let phone_page = b.submit(client, ctx.d("/sferum/connect"), &[("csrf", &csrf)]).await?;
    expect_path(&phone_page, ctx.is_max(&phone_page.url), "/login")?;
    let csrf = phone_page.csrf()?;
    let code_page = b.submit(client, ctx.m("/login/phone"), &[("csrf", &csrf), ("phone", e164)]).await?;
    expect_path(&code_page, ctx.is_max(&code_page.url), "/login/code")?;
    let code = ctx.code(client, b, e164).await?;
    let csrf = code_page.csrf()?;
    let after = b.submit(client, ctx.m("/login/code"), &[("csrf", &csrf), ("code", &code)]).await?;
    let confirm = if after.url.path() == "/login/register" {
        let csrf = after.csrf()?;
        b.submit(client, ctx.m("/login/register"), &[("csrf", &csrf), ("first_name", "Мария"), ("last_name", "Новая")])
            .await?
    } else {
        after
    };
    expect_path(&confirm, ctx.is_max(&confirm.url), "/authorize/continue")?;
    let csrf = confirm.csrf()?;
    let done = b.submit(client, ctx.m("/authorize/confirm"), &[("csrf", &csrf)]).await?;
    expect_path(&done, !ctx.is_max(&done.url), "/sferum/linked")
}

/// The sign-in flow of a linked student with a MAX session: «Сферум» → MAX authorize → diary callback
/// (back-channel code exchange) → MAX «Сферум» page.
pub async fn sso(ctx: &Ctx, client: &Client, b: &mut Browser) -> Result<(), String> {
    let page = b.visit(client, ctx.d("/sferum")).await?;
    expect_path(&page, ctx.is_max(&page.url), "/sferum")
}
