//! The connection loop: accepting, the connection cap, per-connection
//! deadlines (header read, idle keep-alive, request), and draining.
//!
//! hyper's own header timer also runs while a keep-alive connection waits
//! for its next request, which would make the idle timeout equal to the
//! header timeout. So the deadlines are kept here instead: a small wrapper
//! around the socket notes when a request's first bytes arrive and when an
//! answer has been written, and a per-connection watchdog closes the
//! connection when the phase it is in has lasted too long.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use super::{ApiError, Body};
use crate::config::Limits;

/// How long a refused connection may take to receive its 503.
const REFUSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;

/// Which phase a connection is in, and since when ([`coarse_ms`]).
struct ConnClock {
    phase: AtomicU8,
    since_ms: AtomicU64,
}

/// Milliseconds on the kernel's coarse monotonic clock: the time of the
/// last timer tick (1–10 ms old), plenty for deadlines of seconds. A
/// connection notes its phase three times per request, and this read
/// costs ~5 ns against ~24 ns for `Instant::now` (the vDSO reading the
/// TSC; measured on the benchmark machine, 10^7 reads).
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn coarse_ms() -> u64 {
    use rustix::time::{ClockId, clock_gettime};
    let t = clock_gettime(ClockId::MonotonicCoarse);
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn coarse_ms() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl ConnClock {
    /// A new connection is waiting for its first request head, so the
    /// header deadline (not the idle one) applies from the moment it
    /// connects: a silent socket is a slowloris too.
    fn new() -> Self {
        ConnClock {
            phase: AtomicU8::new(HEAD),
            since_ms: AtomicU64::new(coarse_ms()),
        }
    }

    fn now_ms(&self) -> u64 {
        coarse_ms()
    }

    fn enter(&self, phase: u8) {
        self.since_ms.store(self.now_ms(), Ordering::Release);
        self.phase.store(phase, Ordering::Release);
    }

    fn enter_from(&self, from: u8, to: u8) {
        if self.phase.load(Ordering::Acquire) == from {
            self.enter(to);
        }
    }
}

/// The socket, noting request starts (first bytes read while idle) and
/// answer ends (writes while busy).
struct Watched {
    inner: TcpStream,
    clock: Arc<ConnClock>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.enter_from(IDLE, HEAD);
        }
        res
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(res, Poll::Ready(Ok(()))) {
            self.clock.enter_from(BUSY, IDLE);
        }
        res
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Resolves when the connection has been in its phase too long.
async fn watchdog(clock: Arc<ConnClock>, limits: Limits) {
    loop {
        let phase = clock.phase.load(Ordering::Acquire);
        let since = clock.since_ms.load(Ordering::Acquire);
        let limit = match phase {
            IDLE => Some(limits.idle_timeout),
            HEAD => Some(limits.header_read_timeout),
            // The request timeout bounds the handler; hyper then writes.
            _ => None,
        };
        let now = clock.now_ms();
        let wait = match limit {
            Some(limit) => {
                let deadline = since + limit.as_millis() as u64;
                if now >= deadline {
                    return;
                }
                Duration::from_millis(deadline - now)
            }
            None => limits.request_timeout,
        };
        tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
    }
}

/// Serves HTTP/1.1 on `listener` with `handler` until `shutdown` turns
/// true, then stops accepting, asks open connections to close after their
/// current request, and waits for them until `grace` has passed. Returns
/// whether every connection closed in time.
pub async fn serve<H, Fut>(
    listener: TcpListener,
    limits: Limits,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    count_connections: bool,
) -> bool
where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let cap = limits.max_connections.min(Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(cap));
    let mut builder = http1::Builder::new();
    // hyper's own limits sit above the configured ones, as a backstop: the
    // handler checks the configured limits itself so that a refusal gets
    // the JSON body every error has (hyper's own 431 has none).
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_headers(crate::config::hyper_max_headers(&limits))
        .max_header_size(limits.max_header_bytes.saturating_mul(2))
        .max_buf_size(crate::config::hyper_buf_size(&limits))
        .keep_alive(true);
    let connections = metrics::gauge!(crate::metrics::CONNECTIONS);
    let refused = metrics::counter!(crate::metrics::CONNECTIONS_REFUSED);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: pause, don't spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            refused.increment(1);
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let clock = Arc::new(ConnClock::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            clock: Arc::clone(&clock),
        });
        let service = {
            let handler = handler.clone();
            let clock = Arc::clone(&clock);
            let timeout = limits.request_timeout;
            service_fn(move |req| {
                clock.enter(BUSY);
                let fut = handler(req, peer);
                async move {
                    match tokio::time::timeout(timeout, fut).await {
                        Ok(resp) => resp,
                        Err(_) => Ok(ApiError::new(
                            StatusCode::REQUEST_TIMEOUT,
                            "request_timeout",
                            "the request took too long",
                        )
                        .response()),
                    }
                }
            })
        };
        let conn = builder.serve_connection(io, service);
        let mut stop = shutdown.clone();
        let watch_limits = limits.clone();
        let connections = connections.clone();
        if count_connections {
            connections.increment(1.0);
        }
        tokio::spawn(async move {
            tokio::pin!(conn);
            let dog = watchdog(clock, watch_limits);
            tokio::pin!(dog);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = &mut dog => {}
                _ = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = &mut dog => {}
                    }
                }
            }
            if count_connections {
                connections.decrement(1.0);
            }
            drop(permit);
        });
    }
    drop(listener);
    // Every connection holds a permit; getting them all back means all
    // connections are closed.
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    match tokio::time::timeout(grace, permits.acquire_many(all)).await {
        Ok(_) => true,
        Err(_) => {
            tracing::warn!(
                open = cap - permits.available_permits(),
                "connections still open when the grace period ended"
            );
            false
        }
    }
}

/// Resolves once `rx` holds true (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Answers a connection over the cap with a 503 and closes it.
async fn refuse(mut stream: TcpStream) {
    let body = br#"{"error":"overloaded","message":"too many open connections; retry shortly"}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(REFUSE_WRITE_TIMEOUT, write).await;
}
