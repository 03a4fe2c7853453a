//! A virtual student's browser: a cookie jar of its own, requests through the worker's HTTP client
//! (keep-alive connections are the worker's, like a browser tab reusing its connections), redirects
//! followed by hand so that every hop is one counted request.

use reqwest::{Client, StatusCode, Url};

/// Cookies of one virtual student, kept per origin (host and port): the diary and MAX are two sites.
#[derive(Debug, Default, Clone)]
pub struct Jar {
    cookies: Vec<(String, String, String)>, // (origin, name, value)
}

fn origin(url: &Url) -> String {
    format!("{}:{}", url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(0))
}

impl Jar {
    fn header(&self, url: &Url) -> Option<String> {
        let o = origin(url);
        let parts: Vec<String> =
            self.cookies.iter().filter(|(co, _, _)| *co == o).map(|(_, n, v)| format!("{n}={v}")).collect();
        if parts.is_empty() { None } else { Some(parts.join("; ")) }
    }

    fn store(&mut self, url: &Url, headers: &reqwest::header::HeaderMap) {
        let o = origin(url);
        for h in headers.get_all(reqwest::header::SET_COOKIE) {
            let Ok(s) = h.to_str() else { continue };
            let mut attrs = s.split(';');
            let Some((name, value)) = attrs.next().and_then(|nv| nv.trim().split_once('=')) else { continue };
            let expired = attrs.any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
            self.cookies.retain(|(co, n, _)| !(*co == o && n == name));
            if !expired && !value.is_empty() {
                self.cookies.push((o.clone(), name.to_string(), value.to_string()));
            }
        }
    }
}

/// A response as the browser saw it.
#[derive(Debug)]
pub struct Page {
    pub url: Url,
    pub status: StatusCode,
    pub location: Option<Url>,
    pub body: String,
}

impl Page {
    /// The value of the hidden input `name` (the first form's `csrf`).
    pub fn hidden(&self, name: &str) -> Result<String, String> {
        let needle = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&needle).ok_or_else(|| self.err(&format!("no hidden field {name}")))? + needle.len();
        let end = self.body[start..].find('"').ok_or_else(|| self.err("unterminated value"))? + start;
        Ok(self.body[start..end].to_string())
    }

    pub fn csrf(&self) -> Result<String, String> {
        self.hidden("csrf")
    }

    /// An error that says where the flow went wrong.
    pub fn err(&self, what: &str) -> String {
        let snippet: String = self.body.chars().take(160).collect::<String>().replace('\n', " ");
        format!("{what} at {} ({}): {snippet}", self.url.path(), self.status)
    }

    /// Expects a redirect and returns its target.
    pub fn redirect(&self) -> Result<Url, String> {
        match (&self.location, self.status.is_redirection()) {
            (Some(l), true) => Ok(l.clone()),
            _ => Err(self.err("expected a redirect")),
        }
    }
}

/// The browser: a jar and a request counter, driven through a borrowed client.
#[derive(Debug, Default)]
pub struct Browser {
    pub jar: Jar,
    pub requests: u64,
}

impl Browser {
    pub fn with_jar(jar: Jar) -> Self {
        Self { jar, requests: 0 }
    }

    async fn send(&mut self, client: &Client, url: Url, form: Option<&[(&str, &str)]>) -> Result<Page, String> {
        let mut req = match form {
            Some(f) => client.post(url.clone()).form(f),
            None => client.get(url.clone()),
        };
        if let Some(c) = self.jar.header(&url) {
            req = req.header(reqwest::header::COOKIE, c);
        }
        self.requests += 1;
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{} {}: {e}", if form.is_some() { "POST" } else { "GET" }, url.path()))?;
        let status = resp.status();
        self.jar.store(&url, resp.headers());
        let location =
            resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).and_then(|l| url.join(l).ok());
        let body = resp.text().await.map_err(|e| format!("body of {}: {e}", url.path()))?;
        Ok(Page { url, status, location, body })
    }

    /// One `GET`, redirects not followed.
    pub async fn get(&mut self, client: &Client, url: Url) -> Result<Page, String> {
        self.send(client, url, None).await
    }

    /// One form `POST`, redirects not followed.
    pub async fn post(&mut self, client: &Client, url: Url, form: &[(&str, &str)]) -> Result<Page, String> {
        self.send(client, url, Some(form)).await
    }

    /// Follows redirects from `page` (at most 10) and returns the final page, which must be 200.
    pub async fn follow(&mut self, client: &Client, mut page: Page) -> Result<Page, String> {
        for _ in 0..10 {
            if !page.status.is_redirection() {
                return if page.status == StatusCode::OK { Ok(page) } else { Err(page.err("unexpected status")) };
            }
            let next = page.redirect()?;
            page = self.get(client, next).await?;
        }
        Err(page.err("redirect loop"))
    }

    pub async fn visit(&mut self, client: &Client, url: Url) -> Result<Page, String> {
        let p = self.get(client, url).await?;
        self.follow(client, p).await
    }

    pub async fn submit(&mut self, client: &Client, url: Url, form: &[(&str, &str)]) -> Result<Page, String> {
        let p = self.post(client, url, form).await?;
        self.follow(client, p).await
    }
}

/// The HTTP client of one worker: no redirects, no cookies of its own, keep-alive.
pub fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(15))
        .pool_max_idle_per_host(4)
        .tcp_nodelay(true)
        .build()
        .expect("HTTP client")
}
