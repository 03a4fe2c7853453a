//! SMS gateways.
//!
//! * [`DevInbox`] keeps messages in memory so a person (the MAX inbox page, `GET /dev/sms`) or a test can
//!   read the code. It exists only in dev mode: production configuration refuses it.
//! * [`HttpGateway`] posts each message as JSON to an SMS provider's HTTP endpoint with a bearer token.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The dev inbox keeps at most this many messages (oldest dropped first).
const DEV_INBOX_CAPACITY: usize = 1000;

/// An SMS as the dev inbox shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SentSms {
    /// Recipient, E.164.
    pub to: String,
    /// Text.
    pub text: String,
    /// When it was sent, RFC 3339.
    pub sent_at: String,
}

/// Failure to hand a message to the gateway.
#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    /// The provider could not be reached or timed out.
    #[error("SMS provider unreachable: {0}")]
    Unreachable(String),
    /// The provider answered with an error status.
    #[error("SMS provider refused the message with status {0}")]
    Refused(u16),
}

/// In-memory gateway for development and tests.
#[derive(Debug, Clone, Default)]
pub struct DevInbox {
    messages: Arc<Mutex<VecDeque<SentSms>>>,
}

impl DevInbox {
    /// All messages, oldest first.
    pub fn all(&self) -> Vec<SentSms> {
        self.messages.lock().expect("dev inbox lock").iter().cloned().collect()
    }

    /// Messages to one phone (E.164), oldest first.
    pub fn to(&self, e164: &str) -> Vec<SentSms> {
        self.messages.lock().expect("dev inbox lock").iter().filter(|m| m.to == e164).cloned().collect()
    }

    /// Number of messages kept.
    pub fn len(&self) -> usize {
        self.messages.lock().expect("dev inbox lock").len()
    }

    /// True when nothing was sent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&self, to: &str, text: &str) {
        let sent_at =
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let mut q = self.messages.lock().expect("dev inbox lock");
        if q.len() == DEV_INBOX_CAPACITY {
            q.pop_front();
        }
        q.push_back(SentSms { to: to.to_string(), text: text.to_string(), sent_at });
    }
}

/// A gateway that posts `{"to": "+7…", "text": "…"}` to an HTTP endpoint with a bearer token.
#[derive(Debug, Clone)]
pub struct HttpGateway {
    client: reqwest::Client,
    url: String,
    token: String,
}

impl HttpGateway {
    /// A gateway for `url`, authenticated with `token`.
    pub fn new(url: String, token: String) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("HTTP client");
        Self { client, url, token }
    }

    async fn send(&self, to: &str, text: &str) -> Result<(), SmsError> {
        let resp = self
            .client
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "to": to, "text": text }))
            .send()
            .await
            .map_err(|e| SmsError::Unreachable(e.without_url().to_string()))?;
        if resp.status().is_success() { Ok(()) } else { Err(SmsError::Refused(resp.status().as_u16())) }
    }
}

/// The configured gateway.
#[derive(Debug, Clone)]
pub enum SmsGateway {
    /// Development inbox.
    Dev(DevInbox),
    /// A real provider.
    Http(HttpGateway),
}

impl SmsGateway {
    /// Sends `text` to `to` (E.164).
    /// Times the hand-over (`edulink_sms_gateway_duration_seconds`, by outcome).
    pub async fn send(&self, to: &str, text: &str) -> Result<(), SmsError> {
        let started = std::time::Instant::now();
        let sent = match self {
            SmsGateway::Dev(inbox) => {
                inbox.push(to, text);
                Ok(())
            }
            SmsGateway::Http(g) => g.send(to, text).await,
        };
        let outcome = if sent.is_ok() { "ok" } else { "error" };
        metrics::histogram!("edulink_sms_gateway_duration_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        sent
    }

    /// The dev inbox, when this is the dev gateway.
    pub fn dev_inbox(&self) -> Option<&DevInbox> {
        match self {
            SmsGateway::Dev(inbox) => Some(inbox),
            SmsGateway::Http(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{Json, Router, http::HeaderMap, routing::post};

    #[tokio::test]
    async fn dev_inbox_keeps_order_and_filters() {
        let g = SmsGateway::Dev(DevInbox::default());
        g.send("+79000000001", "a").await.unwrap();
        g.send("+79000000002", "b").await.unwrap();
        g.send("+79000000001", "c").await.unwrap();
        let inbox = g.dev_inbox().unwrap();
        assert_eq!(inbox.len(), 3);
        let texts: Vec<_> = inbox.to("+79000000001").into_iter().map(|m| m.text).collect();
        assert_eq!(texts, vec!["a", "c"]);
    }

    #[tokio::test]
    async fn http_gateway_posts_json_with_bearer_and_reports_refusals() {
        let received: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
        let r2 = received.clone();
        let app = Router::new().route(
            "/send",
            post(move |headers: HeaderMap, Json(body): Json<serde_json::Value>| {
                let r2 = r2.clone();
                async move {
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    let refuse = body["to"] == "+79000000009";
                    r2.lock().unwrap().push((auth, body));
                    if refuse { axum::http::StatusCode::BAD_REQUEST } else { axum::http::StatusCode::OK }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let g = SmsGateway::Http(HttpGateway::new(format!("http://{addr}/send"), "tok".into()));
        g.send("+79000000001", "hello").await.unwrap();
        assert!(matches!(g.send("+79000000009", "x").await, Err(SmsError::Refused(400))));
        let got = received.lock().unwrap().clone();
        assert_eq!(got[0].0, "Bearer tok");
        assert_eq!(got[0].1, serde_json::json!({"to": "+79000000001", "text": "hello"}));
        let dead = SmsGateway::Http(HttpGateway::new("http://127.0.0.1:9/send".into(), "t".into()));
        assert!(matches!(dead.send("+79000000001", "x").await, Err(SmsError::Unreachable(_))));
    }
}
