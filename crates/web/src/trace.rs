//! One journey, one trace: W3C Trace Context (<https://www.w3.org/TR/trace-context/>).
//!
//! Every request of either party runs in a trace: the one its `traceparent` header names, or a new
//! one. The trace id is a field of the request's span (so every log line of the request carries
//! it), the answer echoes `traceparent` with this party's span, and the diary's calls to MAX send
//! `traceparent` ([`outgoing`]), so MAX's request spans carry the diary's trace id. Work without a
//! request (the outbox worker) opens a trace of its own per job ([`in_new_trace`]).
//!
//! The OpenTelemetry exporter, when configured (`edulink` crate, `telemetry.rs`), parents its spans
//! on the same ids through [`set_span_hook`]; this module has no OpenTelemetry dependency.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use std::fmt;
use std::sync::OnceLock;

/// The `traceparent` header.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A position in a trace: the trace, the span that called us, and the sampled flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 16 bytes, not all zero.
    pub trace_id: [u8; 16],
    /// The caller's span (8 bytes, not all zero).
    pub span_id: [u8; 8],
    /// `trace-flags` (bit 0: sampled).
    pub flags: u8,
}

fn random<const N: usize>() -> [u8; N] {
    loop {
        let bytes = edulink_domain::crypto::random_bytes(N);
        if bytes.iter().any(|b| *b != 0) {
            return bytes.try_into().expect("N bytes");
        }
    }
}

fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    // Lowercase hex only (the specification's `HEXDIGLC`).
    if s.len() != N * 2 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

impl TraceContext {
    /// A new trace, sampled.
    pub fn new_trace() -> Self {
        TraceContext { trace_id: random(), span_id: random(), flags: 1 }
    }

    /// Parses a `traceparent` value (§3.2): `version-traceid-parentid-flags`. Version `00` must
    /// have exactly four fields; a later version may add fields after them; `ff` is invalid; ids
    /// of all zeros are invalid.
    pub fn parse(v: &str) -> Option<Self> {
        let mut parts = v.trim().split('-');
        let version = hex::<1>(parts.next()?)?[0];
        let trace_id = hex::<16>(parts.next()?)?;
        let span_id = hex::<8>(parts.next()?)?;
        let flags_field = parts.next()?;
        // A later version may have more fields after the flags, and more than two flag digits.
        let flags = hex::<1>(flags_field.get(..2)?)?[0];
        if version == 0xff
            || (version == 0 && (flags_field.len() != 2 || parts.next().is_some()))
            || (version != 0 && flags_field.len() != 2)
        {
            return None;
        }
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext { trace_id, span_id, flags })
    }

    /// The same trace, continued by a new span of ours.
    pub fn child(self) -> Self {
        TraceContext { span_id: random(), ..self }
    }

    /// The trace id as 32 lowercase hex digits (what the logs show).
    pub fn trace_id_hex(&self) -> String {
        self.trace_id.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        self.span_id.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for TraceContext {
    /// The `traceparent` value (version 00).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", self.trace_id_hex(), self.span_id_hex(), self.flags)
    }
}

/// The request's trace, in its extensions: `remote` is what the caller sent (if anything),
/// `own` this party's span in it.
#[derive(Debug, Clone, Copy)]
pub struct RequestTrace {
    /// The caller's context, when it sent a valid `traceparent`.
    pub remote: Option<TraceContext>,
    /// This request's span in the trace.
    pub own: TraceContext,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// The trace the running task works in, if any.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| *c).ok()
}

/// The `traceparent` for a call this task makes: the current trace (or a new one) with a new span.
pub fn outgoing() -> (HeaderName, HeaderValue) {
    let ctx = current().map(TraceContext::child).unwrap_or_else(TraceContext::new_trace);
    (TRACEPARENT.clone(), HeaderValue::from_str(&ctx.to_string()).expect("ASCII"))
}

/// Runs `fut` in a new trace, with a span `name` that carries its id (the outbox's jobs).
pub async fn in_new_trace<F: Future>(name: &'static str, fut: F) -> F::Output {
    use tracing::Instrument;
    let ctx = TraceContext::new_trace();
    CURRENT
        .scope(ctx, async move {
            // Made inside the scope: an exporter's root span takes the trace id from `current`.
            let span = tracing::info_span!("job", job = name, trace_id = %ctx.trace_id_hex());
            fut.instrument(span).await
        })
        .await
}

type SpanHook = fn(&tracing::Span, Option<&TraceContext>, &TraceContext);
static SPAN_HOOK: OnceLock<SpanHook> = OnceLock::new();

/// Installs the hook that parents a request's span on its trace (the OpenTelemetry layer's
/// `set_parent`), once per process.
pub fn set_span_hook(hook: SpanHook) {
    let _ = SPAN_HOOK.set(hook);
}

/// Calls the installed hook for a new span: `remote` is the caller's context, `own` ours.
pub fn span_hook(span: &tracing::Span, remote: Option<&TraceContext>, own: &TraceContext) {
    if let Some(h) = SPAN_HOOK.get() {
        h(span, remote, own);
    }
}

/// The outermost layer: reads the caller's `traceparent` (or starts a trace), keeps the request's
/// trace in its extensions for the request span, runs the rest in it, and echoes `traceparent`
/// with this party's span.
pub async fn layer(mut req: Request, next: Next) -> Response {
    let remote = req.headers().get(&TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(TraceContext::parse);
    let own = remote.map(TraceContext::child).unwrap_or_else(TraceContext::new_trace);
    req.extensions_mut().insert(RequestTrace { remote, own });
    let mut resp = CURRENT.scope(own, next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(&own.to_string()) {
        resp.headers_mut().insert(TRACEPARENT.clone(), v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples and rules of W3C Trace Context Level 1, §3.2 (traceparent).
    #[test]
    fn parses_the_specifications_examples() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = TraceContext::parse(v).unwrap();
        assert_eq!(c.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(c.flags, 1);
        assert_eq!(c.to_string(), v);
        let unsampled = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert_eq!(unsampled.flags, 0);
        // A later version may carry more fields; version 00 may not.
        assert!(
            TraceContext::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future").is_some()
        );
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "",
            "garbage",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn outgoing_calls_continue_the_current_trace() {
        let ctx = TraceContext::new_trace();
        let (name, value) = CURRENT.scope(ctx, async { outgoing() }).await;
        assert_eq!(name, TRACEPARENT);
        let sent = TraceContext::parse(value.to_str().unwrap()).unwrap();
        assert_eq!(sent.trace_id, ctx.trace_id);
        assert_ne!(sent.span_id, ctx.span_id);
        let (_, outside) = outgoing();
        assert_ne!(TraceContext::parse(outside.to_str().unwrap()).unwrap().trace_id, ctx.trace_id);
        let in_job = in_new_trace("t", async { current().unwrap() }).await;
        assert_ne!(in_job.trace_id, ctx.trace_id);
    }
}
