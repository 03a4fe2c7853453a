//! `edulink demo mobile-link`: a command-line stand-in for the diary's mobile app. It signs in to
//! the diary's API, makes its own PKCE verifier (RFC 8252) and DPoP key (RFC 9449; the diary
//! pushes the request to MAX with the key's thumbprint, RFC 9126), starts a link, and either
//! * prints the authorization URL to open in a browser or the MAX app and waits for the address MAX
//!   redirected to (the app link), or
//! * with `--phone`, also plays the MAX app: sends the code, reads it (typed, or from the dev inbox
//!   with `--auto-code`), approves the request in-app,
//!
//! then completes the link with a DPoP proof for MAX's token endpoint and prints the result.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::io::{BufRead, Write};

/// What the command needs.
#[derive(Debug, Clone)]
pub struct MobileLink {
    /// The diary's base URL.
    pub diary: String,
    /// MAX's base URL.
    pub max: String,
    /// Diary login.
    pub login: String,
    /// Diary password.
    pub password: String,
    /// `dnevnik_mesh` or `moyashkola`.
    pub app: String,
    /// Play the MAX app too, with this phone.
    pub phone: Option<String>,
    /// Read the code from MAX's dev inbox instead of asking.
    pub auto_code: bool,
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "{} {}: {}",
            status.as_u16(),
            v["error"]["code"].as_str().unwrap_or("?"),
            v["error"]["message"].as_str().unwrap_or("")
        );
    }
    Ok(v)
}

fn ask(input: &mut impl BufRead, out: &mut impl Write, prompt: &str) -> anyhow::Result<String> {
    write!(out, "{prompt}")?;
    out.flush()?;
    let mut line = String::new();
    input.read_line(&mut line)?;
    Ok(line.trim().to_string())
}

/// Runs the app's link flow; prompts go to `out`, answers come from `input`.
pub async fn run(opts: &MobileLink, input: &mut impl BufRead, out: &mut impl Write) -> anyhow::Result<Value> {
    let http = reqwest::Client::new();
    let post = reqwest::Method::POST;
    let session = call(
        &http,
        post.clone(),
        &format!("{}/api/v1/sessions", opts.diary),
        None,
        Some(json!({ "login": opts.login, "password": opts.password })),
    )
    .await?;
    let token = session["token"].as_str().context("no token")?.to_string();
    writeln!(out, "Signed in to the diary as {}.", opts.login)?;
    let verifier = edulink_domain::crypto::random_token(32);
    let challenge = edulink_domain::oauth::pkce_s256(&verifier);
    // The app's DPoP key (RFC 9449): MAX binds the code and the app's tokens to it.
    let key = edulink_domain::dpop::ProofKey::generate();
    let started = call(
        &http,
        post.clone(),
        &format!("{}/api/v1/sferum/link", opts.diary),
        Some(&token),
        Some(json!({ "app": opts.app, "code_challenge": challenge, "dpop_jkt": key.jkt() })),
    )
    .await?;
    let url = started["authorization_url"].as_str().context("no authorization_url")?.to_string();
    let redirect = match &opts.phone {
        None => {
            writeln!(out, "Open this address in a browser or the MAX app and confirm the account:\n\n  {url}\n")?;
            ask(
                input,
                out,
                &format!(
                    "Then paste the address MAX sent you to ({}…): ",
                    started["redirect_uri"].as_str().unwrap_or("")
                ),
            )?
        }
        Some(phone) => {
            let sent = call(
                &http,
                post.clone(),
                &format!("{}/api/v1/auth/codes", opts.max),
                None,
                Some(json!({ "phone": phone })),
            )
            .await?;
            writeln!(out, "MAX sent a code to {}.", sent["phone_masked"].as_str().unwrap_or(""))?;
            let code = if opts.auto_code {
                let inbox = call(&http, reqwest::Method::GET, &format!("{}/dev/sms", opts.max), None, None).await?;
                let e164 = edulink_domain::Phone::parse(phone, "RU", &["RU".into()])
                    .map(|p| p.e164().to_string())
                    .unwrap_or_default();
                let text = inbox
                    .as_array()
                    .and_then(|a| a.iter().rev().find(|m| m["to"] == e164.as_str()))
                    .and_then(|m| m["text"].as_str())
                    .context("no SMS in the dev inbox")?
                    .to_string();
                text.rsplit('#').next().unwrap_or("").trim().to_string()
            } else {
                ask(input, out, "Code from the SMS: ")?
            };
            let verified = call(
                &http,
                post.clone(),
                &format!("{}/api/v1/auth/codes/verify", opts.max),
                None,
                Some(json!({ "challenge_id": sent["challenge_id"], "code": code })),
            )
            .await?;
            let max_token = if verified["registration_required"] == true {
                let first = ask(input, out, "New to MAX. First name: ")?;
                let last = ask(input, out, "Last name: ")?;
                let signed = call(
                    &http,
                    post.clone(),
                    &format!("{}/api/v1/auth/register", opts.max),
                    None,
                    Some(json!({ "registration_token": verified["registration_token"], "first_name": first, "last_name": last })),
                )
                .await?;
                signed["token"].as_str().context("no token")?.to_string()
            } else {
                verified["token"].as_str().context("no token")?.to_string()
            };
            let created = call(
                &http,
                post.clone(),
                &format!("{}/api/v1/authorizations", opts.max),
                Some(&max_token),
                Some(json!({ "authorization_url": url })),
            )
            .await?;
            writeln!(out, "Approving the link for «{}» in MAX.", created["client_name"].as_str().unwrap_or(""))?;
            let approved = call(
                &http,
                post.clone(),
                &format!("{}/api/v1/authorizations/{}/approve", opts.max, created["request_id"].as_str().unwrap_or("")),
                Some(&max_token),
                Some(json!({})),
            )
            .await?;
            approved["redirect_url"].as_str().context("no redirect_url")?.to_string()
        }
    };
    let back = url::Url::parse(&redirect).context("not an address")?;
    let q: std::collections::HashMap<String, String> = back.query_pairs().into_owned().collect();
    if let Some(e) = q.get("error") {
        bail!("MAX answered {e}: {}", q.get("error_description").map(String::as_str).unwrap_or(""));
    }
    let token_endpoint = started["token_endpoint"].as_str().context("no token_endpoint")?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let proof = key.proof("POST", token_endpoint, now, started["dpop_nonce"].as_str(), None);
    let linked = call(
        &http,
        post,
        &format!("{}/api/v1/sferum/link/complete", opts.diary),
        Some(&token),
        Some(json!({
            "state": q.get("state").context("no state")?,
            "code": q.get("code").context("no code")?,
            "iss": q.get("iss").context("no iss")?,
            "code_verifier": verifier,
            "dpop_proof": proof,
        })),
    )
    .await?;
    writeln!(
        out,
        "Ваша учетная запись успешно привязана (account id {}).",
        linked["account_id"].as_str().unwrap_or("")
    )?;
    Ok(linked)
}
