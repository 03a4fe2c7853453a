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
