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
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
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
                Deadline::new(handler(req, peer), timeout)
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
            // Serve until the connection ends, its watchdog fires or the
            // server stops; on a stop, let the current request finish
            // (hyper closes after it), the watchdog still on guard.
            let event = {
                let guard = async {
                    tokio::select! {
                        biased;
                        _ = &mut dog => Guard::Expired,
                        _ = stopped(&mut stop) => Guard::Stopping,
                    }
                };
                tokio::pin!(guard);
                let mut side = Side::new();
                std::future::poll_fn(|cx| side.poll(cx, conn.as_mut(), guard.as_mut())).await
            };
            if event == Some(Guard::Stopping) {
                conn.as_mut().graceful_shutdown();
                let mut side = Side::new();
                std::future::poll_fn(|cx| side.poll(cx, conn.as_mut(), dog.as_mut())).await;
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

pin_project_lite::pin_project! {
    /// A request handler's future with the request timeout. The handler is
    /// polled first and the timer is only started when it first has to wait: a
    /// beacon is answered in its first poll, and `tokio::time::timeout` would
    /// read the clock, clone the runtime's handle and move the handler's future
    /// into itself for every request (~450 instructions of ~26,000 per quiet
    /// beacon, callgrind). The deadline therefore counts from the handler's
    /// first wait, microseconds after it starts.
    struct Deadline<F> {
        #[pin]
        fut: F,
        timeout: Duration,
        // Boxed: only a request that waits pays for a timer.
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<F> Deadline<F> {
    fn new(fut: F, timeout: Duration) -> Self {
        Deadline {
            fut,
            timeout,
            timer: None,
        }
    }
}

impl<F> Future for Deadline<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(resp) = this.fut.poll(cx) {
            return Poll::Ready(resp);
        }
        let timeout = *this.timeout;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Ok(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request took too long",
            )
            .response())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// What ended a connection's wait other than the connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// The watchdog: the connection stayed too long in its phase.
    Expired,
    /// The server is shutting down.
    Stopping,
}

/// Polls a connection on every wake of its task, and the futures that
/// guard it (the watchdog, the shutdown signal) only when their own waker
/// fired. `tokio::select!` polls every branch on every wake, and a
/// connection task wakes a few times per request: polling the shutdown
/// watch and the watchdog's timer each time cost ~750 instructions per
/// quiet beacon (callgrind).
struct Side {
    wake: Arc<SideWake>,
    waker: Waker,
}

struct SideWake {
    /// Set when the guard's waker fired since it was last polled (and at
    /// first, so that it is polled once to register its wakers).
    woken: AtomicBool,
    /// The connection task's waker, woken with the guard's.
    task: parking_lot::Mutex<Option<Waker>>,
}

impl Wake for SideWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(task) = &*self.task.lock() {
            task.wake_by_ref();
        }
    }
}

impl Side {
    fn new() -> Self {
        let wake = Arc::new(SideWake {
            woken: AtomicBool::new(true),
            task: parking_lot::Mutex::new(None),
        });
        let waker = Waker::from(Arc::clone(&wake));
        Side { wake, waker }
    }

    /// `None` when the connection ended, `Some` with the guard's output
    /// when the guard resolved first.
    fn poll<C: Future, G: Future>(
        &mut self,
        cx: &mut Context<'_>,
        conn: Pin<&mut C>,
        guard: Pin<&mut G>,
    ) -> Poll<Option<G::Output>> {
        if conn.poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        {
            // The task's waker is stored before the flag is read: a guard
            // waking after the read finds it and wakes the task again.
            let mut task = self.wake.task.lock();
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        if self.wake.woken.swap(false, Ordering::AcqRel) {
            let mut side = Context::from_waker(&self.waker);
            if let Poll::Ready(out) = guard.poll(&mut side) {
                return Poll::Ready(Some(out));
            }
        }
        Poll::Pending
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
