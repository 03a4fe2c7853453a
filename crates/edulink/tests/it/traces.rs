//! One journey, one trace: W3C Trace Context (<https://www.w3.org/TR/trace-context/>) across the
//! diary and MAX, seen in both parties' logs.

use edulink_testkit::{Browser, FlowsExt, LogCapture, spawn_app};
use tracing_subscriber::layer::SubscriberExt;

/// The trace ids of the log lines logged inside a request span of `route`.
fn trace_ids(logs: &str, route: &str) -> Vec<String> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["span"]["route"] == route)
        .filter_map(|v| v["span"]["trace_id"].as_str().map(String::from))
        .collect()
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Issue 18: the diary's calls to MAX got a new request id, so a student's journey could not be
/// followed across the parties. Here the browser's callback request arrives at the diary with a
/// `traceparent`; the diary's log lines for it, and MAX's for the code exchange and the
/// provisioning call that the diary makes while answering it, all carry that trace id (logs
/// captured as the JSON lines production writes).
#[tokio::test]
async fn a_diary_to_max_call_carries_the_journeys_trace_id_into_both_logs() {
    let capture = LogCapture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info,tower_http=debug"))
        .with(tracing_subscriber::fmt::layer().json().with_current_span(true).with_writer(move || writer.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = spawn_app().await;
    let b = Browser::new();
    app.diary_login(&b, "student6").await;
    let phone_page = app.start_link(&b).await;
    let code_page = app.enter_phone(&b, &phone_page, "+7 916 222-33-44").await;
    let code = app.last_code("+79162223344");
    let after = b
        .follow(b.post(&format!("{}/login/code", app.max), &[("csrf", &code_page.csrf()), ("code", &code)]).await)
        .await;
    let confirm = b
        .submit(
            &format!("{}/login/register", app.max),
            &[("csrf", &after.csrf()), ("first_name", "Иван"), ("last_name", "Новый")],
        )
        .await;
    assert!(confirm.url.contains("/authorize/continue"), "{}", confirm.url);
    let back = b.post(&format!("{}/authorize/confirm", app.max), &[("csrf", &confirm.csrf())]).await;
    let callback = back.location.clone().expect("redirect to the diary's callback");
    assert!(callback.starts_with(&format!("{}/sferum/callback", app.diary)), "{callback}");
    let parent = format!("00-{TRACE}-00f067aa0ba902b7-01");
    let linked = b.get_with(&callback, "traceparent", &parent).await;
    assert!(linked.location.as_deref().is_some_and(|l| l.ends_with("/sferum/linked")), "{}", linked.body);

    let logs = capture.text();
    let diary = trace_ids(&logs, "/sferum/callback");
    assert!(!diary.is_empty() && diary.iter().all(|t| t == TRACE), "diary: {diary:?}");
    let token = trace_ids(&logs, "/oauth/token");
    assert!(token.iter().any(|t| t == TRACE), "MAX's token endpoint: {token:?}");
    let provisioning = trace_ids(&logs, "/sferum/api/v1/profiles/{sub}");
    assert!(provisioning.iter().any(|t| t == TRACE), "MAX's provisioning API: {provisioning:?}");
    // Other requests are other traces.
    let others = trace_ids(&logs, "/login/phone");
    assert!(!others.is_empty() && others.iter().all(|t| t != TRACE && t.len() == 32), "{others:?}");
}

/// Both parties echo `traceparent`: the caller's trace with this party's span, or a new trace when
/// the caller sent none or an invalid one (§3.2: `ff` is not a valid version).
#[tokio::test]
async fn both_parties_echo_traceparent() {
    let app = spawn_app().await;
    let http = reqwest::Client::new();
    for base in [&app.diary, &app.max] {
        let sent = format!("00-{TRACE}-00f067aa0ba902b7-01");
        let r = http.get(format!("{base}/login")).header("traceparent", &sent).send().await.unwrap();
        let echoed = r.headers()["traceparent"].to_str().unwrap().to_string();
        assert!(echoed.starts_with(&format!("00-{TRACE}-")) && echoed != sent, "{base}: {echoed}");
        for header in [None, Some(format!("ff-{TRACE}-00f067aa0ba902b7-01"))] {
            let mut req = http.get(format!("{base}/login"));
            if let Some(h) = &header {
                req = req.header("traceparent", h);
            }
            let r = req.send().await.unwrap();
            let echoed = r.headers()["traceparent"].to_str().unwrap();
            assert!(echoed.starts_with("00-") && !echoed.contains(TRACE), "{base} {header:?}: {echoed}");
            assert_eq!(echoed.len(), 55);
        }
    }
}
