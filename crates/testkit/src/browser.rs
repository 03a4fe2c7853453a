//! The test browser: a cookie-keeping HTTP client that follows the flows step by step, like a person
//! clicking, and the page it saw.

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use std::sync::Arc;

/// A response as the browser saw it.
#[derive(Debug, Clone)]
pub struct Page {
    /// The URL that answered.
    pub url: String,
    /// Status.
    pub status: StatusCode,
    /// `Location`, for redirects.
    pub location: Option<String>,
    /// Body.
    pub body: String,
    /// All headers.
    pub headers: reqwest::header::HeaderMap,
}

impl Page {
    /// The `csrf` hidden field of the first form.
    pub fn csrf(&self) -> String {
        hidden(&self.body, "csrf").unwrap_or_else(|| panic!("no csrf field on {}:\n{}", self.url, self.body))
    }

    /// True when the body contains `text`.
    pub fn has(&self, text: &str) -> bool {
        self.body.contains(text)
    }
}

/// The value of a hidden input `name`.
pub fn hidden(html: &str, name: &str) -> Option<String> {
    let needle = format!("name=\"{name}\" value=\"");
    let start = html.find(&needle)? + needle.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_string())
}

/// A cookie-keeping client that does not follow redirects by itself.
///
/// A "hopping" browser stands for a load balancer that sends every request to another instance:
/// requests to a public base URL go to the instances in turn.
pub struct Browser {
    client: reqwest::Client,
    hops: Vec<Hop>,
    recorder: Option<Arc<std::sync::Mutex<Vec<Page>>>>,
}

struct Hop {
    public: String,
    instances: Vec<String>,
    next: std::sync::atomic::AtomicUsize,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    /// A fresh browser (empty cookie jar).
    pub fn new() -> Self {
        let client = reqwest::Client::builder().cookie_store(true).redirect(Policy::none()).build().expect("client");
        Self { client, hops: Vec::new(), recorder: None }
    }

    /// A fresh browser whose connections come from `ip` (any address of 127.0.0.0/8 works on
    /// loopback): a distinct client for per-IP limits.
    pub fn from_address(ip: std::net::IpAddr) -> Self {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .local_address(ip)
            .build()
            .expect("client");
        Self { client, hops: Vec::new(), recorder: None }
    }

    /// A fresh browser that keeps every response it receives, for auditing what was shown.
    pub fn recording() -> (Self, Arc<std::sync::Mutex<Vec<Page>>>) {
        let rec = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut b = Self::new();
        b.recorder = Some(rec.clone());
        (b, rec)
    }

    /// A fresh browser whose requests to each public base URL go to its instances in turn.
    pub fn hopping(hops: Vec<(String, Vec<String>)>) -> Self {
        let mut b = Self::new();
        b.hops = hops
            .into_iter()
            .map(|(public, instances)| Hop { public, instances, next: std::sync::atomic::AtomicUsize::new(0) })
            .collect();
        b
    }

    fn route(&self, url: &str) -> String {
        for h in &self.hops {
            if let Some(rest) = url.strip_prefix(&h.public) {
                let i = h.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % h.instances.len();
                return format!("{}{rest}", h.instances[i]);
            }
        }
        url.to_string()
    }

    async fn page(&self, url: String, resp: reqwest::Response) -> Page {
        let status = resp.status();
        let headers = resp.headers().clone();
        let location = headers.get("location").and_then(|v| v.to_str().ok()).map(|l| absolutize(&url, l));
        let body = resp.text().await.unwrap_or_default();
        let page = Page { url, status, location, body, headers };
        if let Some(r) = &self.recorder {
            r.lock().expect("recorder").push(page.clone());
        }
        page
    }

    /// `GET url` (one request, no redirects followed).
    pub async fn get(&self, url: &str) -> Page {
        let resp = self.client.get(self.route(url)).send().await.expect("GET");
        self.page(url.to_string(), resp).await
    }

    /// `POST url` with a form (one request).
    pub async fn post(&self, url: &str, form: &[(&str, &str)]) -> Page {
        let resp = self.client.post(self.route(url)).form(form).send().await.expect("POST");
        self.page(url.to_string(), resp).await
    }

    /// `POST url` with a form and one extra request header (one request).
    pub async fn post_with(&self, url: &str, form: &[(&str, &str)], name: &str, value: &str) -> Page {
        let resp = self.client.post(self.route(url)).header(name, value).form(form).send().await.expect("POST");
        self.page(url.to_string(), resp).await
    }

    /// `GET url` with one extra request header (one request, no redirects followed).
    pub async fn get_with(&self, url: &str, name: &str, value: &str) -> Page {
        let resp = self.client.get(self.route(url)).header(name, value).send().await.expect("GET");
        self.page(url.to_string(), resp).await
    }

    /// `GET url` as a stream (Server-Sent Events): the response with its body still arriving.
    pub async fn stream(&self, url: &str) -> reqwest::Response {
        self.client.get(self.route(url)).header("accept", "text/event-stream").send().await.expect("GET stream")
    }

    /// Follows redirects from `page` (at most 15), returning the final page.
    pub async fn follow(&self, mut page: Page) -> Page {
        for _ in 0..15 {
            match (&page.location, page.status.is_redirection()) {
                (Some(loc), true) => page = self.get(&loc.clone()).await,
                _ => return page,
            }
        }
        panic!("redirect loop at {}", page.url);
    }

    /// `GET` and follow redirects.
    pub async fn visit(&self, url: &str) -> Page {
        let p = self.get(url).await;
        self.follow(p).await
    }

    /// `POST` and follow redirects.
    pub async fn submit(&self, url: &str, form: &[(&str, &str)]) -> Page {
        let p = self.post(url, form).await;
        self.follow(p).await
    }
}

fn absolutize(base: &str, loc: &str) -> String {
    url::Url::parse(base).and_then(|b| b.join(loc)).map(|u| u.to_string()).unwrap_or_else(|_| loc.to_string())
}
