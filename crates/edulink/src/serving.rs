//! The operator listener (`ops.listen`, loopback by default): the process-wide Prometheus
//! registry, liveness, and the readiness of every party this process runs. The public ports keep
//! `/healthz` and `/readyz` for load balancers, but not `/metrics`.

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use edulink_store::Db;

/// `/metrics`, `/healthz`, and `/readyz` (200 when every database of this process takes writes).
pub fn ops_router(dbs: Vec<(&'static str, Db)>) -> Router {
    let scraped = dbs.clone();
    let dbs: Vec<Db> = dbs.into_iter().map(|(_, db)| db).collect();
    Router::new()
        .route("/metrics", get(move || std::future::ready(edulink_web::ops::render(&scraped))))
        .route("/healthz", get(edulink_web::ops::healthz))
        .route("/readyz", get(move || ready(dbs.clone())))
}

async fn ready(dbs: Vec<Db>) -> Response {
    for db in &dbs {
        let answer = edulink_web::ops::readyz(db).await;
        if answer.status() != StatusCode::OK {
            return answer;
        }
    }
    "ready".into_response()
}
