//! Cross-cutting layers: security headers, origin checks for state changes, client IP, request ids,
//! body limits, and the error renderer, assembled once by [`harden`].

use crate::error::{AppError, Brand, ErrorReader, render_error};
use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// Largest request body accepted (forms and JSON are small); larger ones get 413.
pub const BODY_LIMIT: usize = 64 * 1024;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The site-wide hardening settings of one party.
#[derive(Debug, Clone)]
pub struct SiteSecurity {
    /// This site's own origin, e.g. `http://127.0.0.1:8080`; state-changing requests from any other
    /// origin are refused.
    pub origin: String,
    /// Path prefixes exempt from the origin check: bearer-token and back-channel APIs, which carry no
    /// ambient credentials (no cookies) and are called by servers and apps.
    pub exempt_prefixes: Vec<&'static str>,
    /// Served over https: send HSTS.
    pub https: bool,
    /// Origins besides this site's own that its forms may end up at through redirects (CSP
    /// `form-action`, which browsers check on every redirect after a form is sent): the other
    /// party's origin, e.g. the diary's «Подключить» form, redirected to MAX.
    pub form_targets: Vec<String>,
}

/// A response extension that lets this page's forms end up at one more origin (see
/// [`SiteSecurity::form_targets`]): MAX's sign-in and consent pages add the origin of the
/// pending authorization request's redirect URI.
#[derive(Debug, Clone)]
pub struct FormTarget(pub String);

/// Adds the origin of `url` (when it has one: not an app's custom scheme) to the page's CSP
/// `form-action`.
pub fn with_form_target(mut resp: Response, url: &str) -> Response {
    if let Ok(u) = url::Url::parse(url)
        && matches!(u.scheme(), "https" | "http")
    {
        resp.extensions_mut().insert(FormTarget(u.origin().ascii_serialization()));
    }
    resp
}

/// The CSP of every response: no inline script, no framing, forms only to `'self'` and `targets`.
fn csp(targets: &[String], extra: Option<&FormTarget>) -> HeaderValue {
    let mut policy = String::from(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    );
    for t in targets.iter().chain(extra.map(|e| &e.0)) {
        policy.push(' ');
        policy.push_str(t);
    }
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'none'"))
}

/// Wraps a party's router with every shared layer.
pub fn harden(router: Router, brand: Brand, sec: SiteSecurity) -> Router {
    let sec = std::sync::Arc::new(sec);
    router
        // An unknown URL is the site's own «Страница не найдена» page (header, a way home), not an empty 404.
        .fallback(|| async { AppError::not_found() })
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        // One middleware for the per-response work (each `from_fn` layer costs a service clone and
        // a boxed future per request, which showed in the sign-in flow's profile).
        .layer(middleware::from_fn(move |req: Request, next: Next| edge(sec.clone(), brand, req, next)))
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.headers().get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
            // The route, not the URL: query strings hold one-time codes and states, and paths may
            // hold subjects; the route template holds neither.
            let route = req
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|m| m.as_str().to_owned())
                .unwrap_or_else(|| "(unmatched)".to_owned());
            let ip = req
                .extensions()
                .get::<crate::client_ip::ResolvedClientIp>()
                .map(|r| r.0)
                .or_else(|| req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()));
            // The journey's trace (`trace.rs`, the outermost layer): in every log line of the request.
            let trace = req.extensions().get::<crate::trace::RequestTrace>().copied();
            let trace_id = trace.map(|t| t.own.trace_id_hex()).unwrap_or_default();
            let span = match ip {
                Some(ip) => tracing::info_span!("request", method = %req.method(), route = %route, request_id = %id, trace_id = %trace_id, client_ip = %ip),
                None => tracing::info_span!("request", method = %req.method(), route = %route, request_id = %id, trace_id = %trace_id),
            };
            if let Some(t) = trace {
                crate::trace::span_hook(&span, t.remote.as_ref(), &t.own);
            }
            span
        }))
        .layer(SetRequestIdLayer::new(X_REQUEST_ID.clone(), MakeRequestUuid))
        .layer(middleware::from_fn(crate::trace::layer))
}

/// In order: refuses a cross-site state change, runs the handler, renders an [`AppError`] as a
/// page or JSON, adds the security headers, and counts the response.
async fn edge(sec: std::sync::Arc<SiteSecurity>, brand: Brand, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let is_static = req.uri().path().starts_with("/static/");
    let reader = ErrorReader::of(&req);
    // The route template, never the raw path (paths hold subjects and ids: unbounded series).
    let route = req.extensions().get::<axum::extract::MatchedPath>().map(|m| m.as_str().to_owned());
    let method = req.method().clone();
    let resp = if cross_site_change(&sec, &req) {
        metrics::counter!("edulink_csrf_refused_total").increment(1);
        AppError::forbidden("error-csrf").into_response()
    } else {
        next.run(req).await
    };
    let mut resp = render_error(brand, reader, resp);
    let policy = csp(&sec.form_targets, resp.extensions().get::<FormTarget>());
    security_headers(sec.https, is_static, policy, resp.headers_mut());
    observe(brand, route, &method, resp.status().as_u16(), started);
    resp
}

/// Records a request's duration by party, method, route template and status class. Probes
/// (`/healthz`, `/readyz`) are left out: they would swamp the rates and the percentiles.
fn observe(brand: Brand, route: Option<String>, method: &Method, status: u16, started: std::time::Instant) {
    let route = match route.as_deref() {
        Some("/healthz" | "/readyz" | "/metrics") => return,
        Some(r) => r.to_owned(),
        None => "unmatched".to_owned(),
    };
    let method = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => "other",
    };
    metrics::histogram!(
        "edulink_http_request_duration_seconds",
        "party" => brand.class,
        "method" => method,
        "route" => route,
        "status" => crate::metrics::status_class(status),
    )
    .record(started.elapsed().as_secs_f64());
}

/// A cross-site state change: a browser's `Sec-Fetch-Site: cross-site` or an `Origin` that is not
/// ours (OWASP CSRF cheat sheet, "verifying origin with standard headers"). Handlers still check
/// the per-session CSRF token; this is the first of two locks.
fn cross_site_change(sec: &SiteSecurity, req: &Request) -> bool {
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !unsafe_method || sec.exempt_prefixes.iter().any(|p| req.uri().path().starts_with(p)) {
        return false;
    }
    let h = req.headers();
    let site = h.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    matches!(site, Some("cross-site") | Some("same-site")) || origin.is_some_and(|o| o != sec.origin)
}

/// CSP without inline script, no framing, no MIME sniffing, no caching of personal pages.
fn security_headers(https: bool, is_static: bool, csp: HeaderValue, h: &mut axum::http::HeaderMap) {
    // Room for these at once rather than growing the map header by header.
    h.reserve(8);
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::REFERRER_POLICY).or_insert(HeaderValue::from_static("strict-origin-when-cross-origin"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    if !is_static {
        h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    }
    if https {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000; includeSubDomains"));
    }
}

/// The client's IP address: the one [`crate::client_ip::resolve`] found (the TCP peer, or behind a
/// trusted proxy the address that proxy saw), else the TCP peer.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The client IP of a request's parts.
    pub fn of(parts: &Parts) -> IpAddr {
        if let Some(r) = parts.extensions.get::<crate::client_ip::ResolvedClientIp>() {
            return r.0;
        }
        parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::from([127, 0, 0, 1]))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(ClientIp::of(parts)))
    }
}
