//! Logs and, when `ops.otlp_endpoint` is set, an OpenTelemetry exporter of the request spans.
//!
//! Logs are JSON lines on stdout; each line inside a request carries the request's span fields,
//! among them the journey's `trace_id` (`edulink_web::trace`). With an endpoint, the same spans
//! are exported over OTLP/HTTP with protobuf (no gRPC stack: `opentelemetry-otlp` without tonic,
//! its blocking reqwest client on the batch processor's own thread), under the same trace ids:
//! a root span takes the id of the request's trace ([`JourneyIds`]), and a request that came with
//! a `traceparent` is parented on the caller's span. The exporter is behind the cargo feature
//! `otlp` (off by default; docs/deployment.md, «Observability», says why).

/// What must live as long as the process logs: the exporter flushes its last spans when dropped.
#[derive(Default)]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Installs the process's subscriber: JSON logs (`RUST_LOG`, default `info,sqlx=warn`) and, with
/// `otlp_endpoint` (the collector's traces URL, e.g. `http://collector:4318/v1/traces`), the
/// exporter.
pub fn init(otlp_endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let logs = tracing_subscriber::fmt::layer().json().with_current_span(true);
    let registry = tracing_subscriber::registry().with(filter).with(logs);
    let Some(endpoint) = otlp_endpoint else {
        registry.init();
        return Ok(Telemetry::default());
    };
    #[cfg(feature = "otlp")]
    {
        use opentelemetry::trace::TracerProvider;
        use opentelemetry_otlp::{Protocol, WithExportConfig};
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .build()?;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_id_generator(JourneyIds)
            .with_resource(opentelemetry_sdk::Resource::builder().with_service_name("edulink").build())
            .build();
        let tracer = provider.tracer("edulink");
        registry.with(tracing_opentelemetry::layer().with_tracer(tracer)).init();
        edulink_web::trace::set_span_hook(parent_on_caller);
        tracing::info!(endpoint, "exporting traces over OTLP/HTTP");
        Ok(Telemetry { provider: Some(provider) })
    }
    #[cfg(not(feature = "otlp"))]
    {
        registry.init();
        anyhow::bail!("ops.otlp_endpoint = {endpoint:?}, but this build has no OTLP exporter (cargo feature `otlp`)")
    }
}

/// Trace ids of new root spans: the running request's or job's trace, so the exported trace and
/// the logs' `trace_id` are the same; span ids are random.
#[cfg(feature = "otlp")]
#[derive(Debug)]
struct JourneyIds;

#[cfg(feature = "otlp")]
impl opentelemetry_sdk::trace::IdGenerator for JourneyIds {
    fn new_trace_id(&self) -> opentelemetry::trace::TraceId {
        let ctx = edulink_web::trace::current().unwrap_or_else(edulink_web::trace::TraceContext::new_trace);
        opentelemetry::trace::TraceId::from_bytes(ctx.trace_id)
    }

    fn new_span_id(&self) -> opentelemetry::trace::SpanId {
        opentelemetry::trace::SpanId::from_bytes(edulink_web::trace::TraceContext::new_trace().span_id)
    }
}

/// Parents a request's span on the caller's span when the caller sent a `traceparent`.
#[cfg(feature = "otlp")]
fn parent_on_caller(
    span: &tracing::Span,
    remote: Option<&edulink_web::trace::TraceContext>,
    _own: &edulink_web::trace::TraceContext,
) {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let Some(r) = remote else { return };
    let caller = SpanContext::new(
        TraceId::from_bytes(r.trace_id),
        SpanId::from_bytes(r.span_id),
        TraceFlags::new(r.flags),
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(caller));
}

#[cfg(all(test, feature = "otlp"))]
mod tests {
    /// The exporter posts OTLP/HTTP protobuf (`application/x-protobuf`, OTLP specification,
    /// «OTLP/HTTP») to the configured endpoint, and the exported span carries the trace id of the
    /// request's trace, as the logs do.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exported_spans_carry_the_journeys_trace_id() {
        use axum::body::Bytes;
        use axum::http::HeaderMap;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Vec<u8>)>();
        let collector = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |h: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let ct = h.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    let _ = tx.send((ct, body.to_vec()));
                    ""
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, collector).await });

        let endpoint = format!("http://{addr}/v1/traces");
        let telemetry = tokio::task::spawn_blocking(move || super::init(Some(&endpoint)).unwrap()).await.unwrap();
        // A job's root span takes the job's trace id (`JourneyIds`).
        edulink_web::trace::in_new_trace("test", async { tracing::info!("inside") }).await;
        // A request with the caller's `traceparent`: its span is parented on the caller's.
        let ctx =
            edulink_web::trace::TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let span = tracing::info_span!("request", route = "/test");
        super::parent_on_caller(&span, Some(&ctx), &ctx.child());
        span.in_scope(|| tracing::info!("in the request"));
        drop(span);
        tokio::task::spawn_blocking(move || drop(telemetry)).await.unwrap();

        let mut bodies = Vec::new();
        while let Ok(Some(b)) = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await {
            bodies.push(b);
            if bodies.iter().any(|(_, b)| b.windows(16).any(|w| w == ctx.trace_id)) {
                break;
            }
        }
        assert!(!bodies.is_empty(), "the collector got nothing");
        assert!(
            bodies.iter().all(|(ct, _)| ct == "application/x-protobuf"),
            "{:?}",
            bodies.iter().map(|b| &b.0).collect::<Vec<_>>()
        );
        assert!(
            bodies.iter().any(|(_, b)| b.windows(16).any(|w| w == ctx.trace_id)),
            "no exported span carries the caller's trace id"
        );
    }
}
