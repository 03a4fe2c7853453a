//! A reverse proxy for tests, standing for a load balancer that terminates client connections and
//! appends the client's address to `X-Forwarded-For`, as haproxy's `option forwardfor` and nginx's
//! `proxy_add_x_forwarded_for` do. Connections go to the backends in turn.

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Serves a forwarding proxy on `listener` in front of `backends` (requests in turn).
pub fn forwarding_proxy(listener: tokio::net::TcpListener, backends: Vec<SocketAddr>) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let next = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().fallback(move |ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request| {
        let (client, next, backends) = (client.clone(), next.clone(), backends.clone());
        async move {
            let backend = backends[next.fetch_add(1, Ordering::SeqCst) % backends.len()];
            let (mut parts, body) = req.into_parts();
            let forwarded = match parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(prev) => format!("{prev}, {}", peer.ip()),
                None => peer.ip().to_string(),
            };
            parts.headers.insert("x-forwarded-for", forwarded.parse().expect("header"));
            forward(&client, backend, Request::from_parts(parts, body)).await
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
}

/// Sends `req` on to `backend` as it is (method, path, headers, body) and returns the backend's
/// answer, or 502 when it cannot be reached: the forwarding part of a test proxy.
pub async fn forward(client: &reqwest::Client, backend: SocketAddr, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let upstream =
        client.request(parts.method, format!("http://{backend}{path}")).headers(parts.headers).body(body).send().await;
    match upstream {
        Ok(r) => {
            let mut resp = Response::builder().status(r.status());
            for (k, v) in r.headers() {
                resp = resp.header(k, v);
            }
            resp.body(Body::from(r.bytes().await.unwrap_or_default())).expect("response")
        }
        Err(_) => axum::http::StatusCode::BAD_GATEWAY.into_response(),
    }
}
