//! Operations endpoints: liveness, readiness, Prometheus metrics (on the operator listener only).

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once, with the catalogue's descriptions and zero
/// series (`metrics.rs`); later calls reuse it.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), crate::metrics::DURATION_BUCKETS)
                .ok()?
                .install_recorder()
                .ok()?;
            crate::metrics::register();
            Some(handle)
        })
        .as_ref()
}

/// Folds recorded histogram samples into their buckets every few seconds, so they do not pile up
/// between scrapes (the recorder has no thread of its own). Ends when `shutdown` turns true.
pub async fn upkeep(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            _ = shutdown.changed() => return,
        }
        if let Some(h) = prometheus() {
            h.run_upkeep();
        }
    }
}

/// The body of `GET /metrics`: the process's registry in the text exposition format, after the
/// pool gauges of `dbs` (by party) are read, followed by the `process_*` metrics. Served on the
/// operator listener only (`ops.listen`), never on the public ports.
pub fn render(dbs: &[(&'static str, edulink_store::Db)]) -> axum::response::Response {
    for (party, db) in dbs {
        let s = db.pool_stats();
        metrics::gauge!("edulink_db_pool_size", "db" => *party).set(s.size as f64);
        metrics::gauge!("edulink_db_pool_idle", "db" => *party).set(s.idle as f64);
        metrics::gauge!("edulink_db_pool_waiting", "db" => *party).set(s.waiting as f64);
    }
    let mut body = prometheus().map(|h| h.render()).unwrap_or_default();
    crate::process::render(&mut body);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// `GET /healthz`: the process runs.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `/healthz` (the process runs), the language switch, and `/favicon.ico` (browsers ask for it on
/// every site; an empty answer instead of a 404 in the console).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/healthz", get(healthz)).route("/lang/{code}", get(set_lang)).route(
        "/favicon.ico",
        get(|| async { (StatusCode::NO_CONTENT, [(header::CACHE_CONTROL, "public, max-age=86400")]) }),
    )
}

/// The body of `/readyz`: 200 when the database can take writes (checked at most once a second,
/// see [`edulink_store::Db::ready`]), 503 otherwise. While the process drains, the server answers
/// 503 before this runs (`serve.rs`).
pub async fn readyz(db: &edulink_store::Db) -> axum::response::Response {
    match db.ready().await {
        Ok(()) => "ready".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

/// `GET /lang/{code}`: remembers the interface language in a cookie and returns to the page the
/// person came from (same site only: only the path of the `Referer` is used).
pub async fn set_lang(
    axum::extract::Path(code): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let lang = crate::Lang::parse(&code).unwrap_or_default();
    let back = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(url_path)
        .unwrap_or_else(|| "/".to_string());
    let mut resp = crate::see_other(&back);
    let cookie = format!("lang={}; Path=/; SameSite=Lax; Max-Age=31536000", lang.tag());
    if let Ok(v) = axum::http::HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// The path and query of an absolute URL, if it is a plain local path (never `//host`).
fn url_path(r: &str) -> Option<String> {
    let after_scheme = r.split_once("://").map(|(_, rest)| rest)?;
    let path = &after_scheme[after_scheme.find('/')?..];
    (path.starts_with('/') && !path.starts_with("//") && !path.contains('\\')).then(|| path.to_string())
}
