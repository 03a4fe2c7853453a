//! The HTTP server loop: hyper's HTTP/1 connection (as `axum::serve` runs it) with the limits
//! `axum::serve` lacks — a header read timeout, a request body deadline, an idle keep-alive
//! timeout, and a cap on open connections per listener — and a lifecycle ([`Phase`]) for drains.
//!
//! The timeouts follow Go's `net/http` server (`ReadHeaderTimeout`, `IdleTimeout`): a new
//! connection, and a kept-alive one from the first byte of its next request, must deliver the
//! whole request head within `header_timeout`; a kept-alive connection may wait `idle_timeout`
//! for that first byte; the body must arrive within `body_timeout` of the head. A connection past
//! its deadline is closed. While a request is being served there is no connection deadline
//! (server-sent event streams stay open). Over `max_connections`, new connections wait in the
//! kernel's listen backlog until one closes (none is refused by us).

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::Service;

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request head must arrive within this (from the connection's start, or from the first
    /// byte of a kept-alive connection's next request).
    pub header_timeout: Duration,
    /// A request body must arrive within this of its head.
    pub body_timeout: Duration,
    /// A kept-alive connection with no request in progress is closed after this.
    pub idle_timeout: Duration,
    /// Open connections; more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            max_connections: 4096,
        }
    }
}

/// Where a server is in its life; the owner moves it forward through a `watch` channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Serving; `/readyz` answers from the database.
    Serving,
    /// Still serving every request, but `/readyz` answers 503 so that balancers stop sending
    /// new traffic.
    Draining,
    /// No new connections; requests in progress finish, then their connections close.
    Stopping,
    /// The shutdown timeout passed: remaining connections are closed now.
    Abort,
}

/// Serves `router` on `listener` until `phase` reaches [`Phase::Stopping`] and every connection
/// has ended (or [`Phase::Abort`]). Handlers see the peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, phase: watch::Receiver<Phase>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Every connection holds a receiver; `closed()` on the sender waits for the last one.
    let (all_closed, open) = watch::channel(());
    let mut stop = phase.clone();
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            _ = reached(&mut stop, Phase::Stopping) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = reached(&mut stop, Phase::Stopping) => break,
        };
        let conn = Connection { router: router.clone(), limits, phase: phase.clone(), peer, open: open.clone() };
        tokio::spawn(async move {
            conn.run(stream).await;
            drop(slot);
        });
    }
    drop(listener);
    drop(open);
    all_closed.closed().await;
}

/// Resolves once `phase` is at `at` or later (or its owner is gone).
async fn reached(phase: &mut watch::Receiver<Phase>, at: Phase) {
    let _ = phase.wait_for(|p| *p >= at).await.is_ok();
}

struct Connection {
    router: Router,
    limits: Limits,
    phase: watch::Receiver<Phase>,
    peer: SocketAddr,
    open: watch::Receiver<()>,
}

impl Connection {
    async fn run(mut self, stream: TcpStream) {
        let state = Arc::new(InFlight::default());
        let io = TokioIo::new(Watched::new(stream, state.clone(), self.limits));
        let (router, peer, body_timeout, phase) =
            (self.router, self.peer, self.limits.body_timeout, self.phase.clone());
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let guard = Started::new(&state);
            let draining = req.uri().path() == "/readyz" && *phase.borrow() >= Phase::Draining;
            let mut req = req.map(|b| {
                if http_body::Body::is_end_stream(&b) {
                    Body::new(b)
                } else {
                    Body::new(tower_http::timeout::DeadlineBody::new(body_timeout, b))
                }
            });
            req.extensions_mut().insert(ConnectInfo(peer));
            let answer = (!draining).then(|| router.clone().call(req));
            async move {
                let resp = match answer {
                    Some(fut) => fut.await.unwrap_or_else(|never| match never {}),
                    None => (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response(),
                };
                Ok::<_, std::convert::Infallible>(resp.map(|inner| Tracked { inner, _guard: guard }))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.keep_alive(true).header_read_timeout(None);
        let conn = builder.serve_connection(io, svc);
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = reached(&mut self.phase, Phase::Stopping) => {}
        }
        // An idle connection closes now; one serving a request closes after its response.
        conn.as_mut().graceful_shutdown();
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = reached(&mut self.phase, Phase::Abort) => {}
        }
        drop(self.open);
    }
}

/// Requests of one connection in progress (head received, response body not yet finished), and a
/// counter of changes, so that the connection's reader notices a request ending.
#[derive(Default)]
struct InFlight {
    requests: AtomicUsize,
    changes: AtomicUsize,
    /// The connection task: woken when a request ends, so that its reader arms the idle deadline
    /// (hyper does not read again by itself after a response).
    task: std::sync::OnceLock<std::task::Waker>,
}

/// Marks one request in progress until dropped (with its response body).
struct Started(Arc<InFlight>);

impl Started {
    fn new(state: &Arc<InFlight>) -> Self {
        state.requests.fetch_add(1, Ordering::AcqRel);
        state.changes.fetch_add(1, Ordering::AcqRel);
        Self(state.clone())
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
        self.0.changes.fetch_add(1, Ordering::AcqRel);
        if let Some(task) = self.0.task.get() {
            task.wake_by_ref();
        }
    }
}

/// A response body that marks its request finished when hyper is done with it.
struct Tracked {
    inner: Body,
    _guard: Started,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// What the connection waits for, and so which deadline applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// The first byte of the next request (`idle_timeout`).
    Idle,
    /// The rest of a request head (`header_timeout`).
    Head,
    /// Nothing: a request is in progress.
    Busy,
}

/// The TCP stream with the connection's read deadline.
struct Watched {
    stream: TcpStream,
    state: Arc<InFlight>,
    seen: usize,
    waiting: Waiting,
    deadline: Pin<Box<Sleep>>,
    limits: Limits,
}

impl Watched {
    fn new(stream: TcpStream, state: Arc<InFlight>, limits: Limits) -> Self {
        let deadline = Box::pin(tokio::time::sleep(limits.header_timeout));
        Self { stream, state, seen: 0, waiting: Waiting::Head, deadline, limits }
    }

    fn wait_for(&mut self, what: Waiting, within: Duration) {
        self.waiting = what;
        self.deadline.as_mut().reset(Instant::now() + within);
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.state.task.get().is_none() {
            let _ = this.state.task.set(cx.waker().clone());
        }
        let changes = this.state.changes.load(Ordering::Acquire);
        if changes != this.seen {
            this.seen = changes;
            if this.state.requests.load(Ordering::Acquire) > 0 {
                this.waiting = Waiting::Busy;
            } else {
                this.wait_for(Waiting::Idle, this.limits.idle_timeout);
            }
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.waiting == Waiting::Idle && buf.filled().len() > before {
                    this.wait_for(Waiting::Head, this.limits.header_timeout);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.waiting != Waiting::Busy && this.deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("{:?} timeout", this.waiting),
                )))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
