//! The connection loop: accepting, the connection cap, per-connection
//! deadlines (header read, idle keep-alive, request, write), the bound on
//! answers waiting to be written, and draining.
//!
//! hyper's own header timer also runs while a keep-alive connection waits
//! for its next request, which would make the idle timeout equal to the
//! header timeout. So the deadlines are kept here instead: a small wrapper
//! around the socket notes when a request's first bytes arrive and when an
//! answer has been written, and a per-connection watchdog closes the
//! connection when the phase it is in has lasted too long.
//!
//! A client that pipelines requests and never reads its answers is held
//! two ways. hyper 1 reads no further request of a connection whose
//! answers it cannot write, so such a client is held to what the sockets'
//! buffers carry and the pace it reads (tests/stalled.rs measures it: a
//! client pipelining 300,000 quiet beacons with a 64 KiB receive window got
//! 66,219 handled, the server's 4 MiB send buffer's worth, and the server's
//! memory stayed flat; a bound of 16 unwritten answers of luot's own changed
//! nothing, so there is none). And an answer that gets no room in the
//! socket's send buffer for `write_timeout` resets the connection (as
//! nginx's `send_timeout`, it bounds the time between two writes, not a
//! whole answer).

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

/// How long connections still open when the drain ends get to notice they
/// were closed (they end at their next poll) before the server returns.
const KILL_WAIT: Duration = Duration::from_secs(1);

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;

/// Which phase a connection is in, and since when ([`coarse_ms`]); since
/// when its writes are blocked.
struct ConnClock {
    phase: AtomicU8,
    since_ms: AtomicU64,
    /// When a write last found the send buffer full with no write making
    /// progress since ([`coarse_ms`], at least 1); 0 while writes go through.
    blocked_ms: AtomicU64,
    /// Set when the connection is closed for a stuck write or at the end
    /// of the drain: its socket is then reset rather than closed, so the
    /// kernel drops the answers it holds instead of trying to send them.
    reset: AtomicBool,
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
            blocked_ms: AtomicU64::new(0),
            reset: AtomicBool::new(false),
        }
    }

    /// Notes what a write did: blocked (the send buffer is full) starts the
    /// write deadline unless it runs already; any progress stops it.
    fn wrote(&self, res: &Poll<io::Result<usize>>) {
        match res {
            Poll::Pending => {
                if self.blocked_ms.load(Ordering::Relaxed) == 0 {
                    self.blocked_ms
                        .store(self.now_ms().max(1), Ordering::Relaxed);
                }
            }
            Poll::Ready(Ok(n)) if *n > 0 => {
                if self.blocked_ms.load(Ordering::Relaxed) != 0 {
                    self.blocked_ms.store(0, Ordering::Relaxed);
                }
            }
            Poll::Ready(_) => {}
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

/// The socket, noting request starts (first bytes read while idle),
/// answer ends (flushes while busy) and writes that find no room.
struct Watched {
    inner: TcpStream,
    clock: Arc<ConnClock>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        if self.clock.reset.load(Ordering::Relaxed) {
            // SO_LINGER 0: close sends a reset and frees the send buffer at
            // once (no blocking: the socket is non-blocking and linger 0).
            let _ = self.inner.set_zero_linger();
        }
    }
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
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.clock.wrote(&res);
        res
    }

    /// hyper calls this once its own write buffer is empty.
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
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.clock.wrote(&res);
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Why the server closed a connection (the `reason` label of
/// [`crate::metrics::CONNECTIONS_CLOSED`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    HeaderTimeout,
    IdleTimeout,
    WriteTimeout,
    /// Still open when the shutdown drain ended.
    Shutdown,
}

impl Closed {
    fn label(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::WriteTimeout => "write_timeout",
            Closed::Shutdown => "shutdown",
        }
    }
}

/// Resolves when the connection has been in its phase too long, or its
/// writes have found the send buffer full for `write_timeout`.
async fn watchdog(clock: Arc<ConnClock>, limits: Limits) -> Closed {
    loop {
        let phase = clock.phase.load(Ordering::Acquire);
        let since = clock.since_ms.load(Ordering::Acquire);
        let limit = match phase {
            IDLE => Some((limits.idle_timeout, Closed::IdleTimeout)),
            HEAD => Some((limits.header_read_timeout, Closed::HeaderTimeout)),
            // The request timeout bounds the handler; hyper then writes,
            // under the write deadline.
            _ => None,
        };
        let now = clock.now_ms();
        let blocked = clock.blocked_ms.load(Ordering::Relaxed);
        let mut wait = limits.request_timeout;
        if blocked != 0 {
            let deadline = blocked + limits.write_timeout.as_millis() as u64;
            if now >= deadline {
                return Closed::WriteTimeout;
            }
            wait = wait.min(Duration::from_millis(deadline - now));
        }
        if let Some((limit, why)) = limit {
            let deadline = since + limit.as_millis() as u64;
            if now >= deadline {
                return why;
            }
            wait = wait.min(Duration::from_millis(deadline - now));
        }
        tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
    }
}

/// Serves HTTP/1.1 on `listener` with `handler` until `shutdown` turns
/// true, then stops accepting, asks open connections to close after their
/// current request, and waits for them until `drain` has passed; then it
/// resets those still open (a client that does not read its answers, a
/// slow request) and returns once they are gone, so that no handler runs
/// after it returns. Returns whether every connection closed by itself.
///
/// It spawns a task per connection (and per refused connection, to write
/// its 503): request-scoped, not long-lived, and all tracked here — a
/// connection's task holds one of the semaphore's permits until it ends,
/// and refusals (each bounded by [`REFUSE_WRITE_TIMEOUT`]) are kept in a
/// `JoinSet` and awaited — so that when this returns, nothing it spawned
/// still runs. `app` spawns the server itself and awaits it at shutdown.
pub async fn serve<H, Fut>(
    listener: TcpListener,
    limits: Limits,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    count_connections: bool,
) -> bool
where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let cap = limits.max_connections.min(Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(cap));
    let refused = metrics::counter!(crate::metrics::CONNECTIONS_REFUSED);
    let mut refusals = tokio::task::JoinSet::new();
    let (kill_tx, kill_rx) = watch::channel(false);
    let connections = Connections {
        builder: connection_builder(&limits),
        handler,
        limits,
        stop: shutdown.clone(),
        kill: kill_rx,
        gauge: metrics::gauge!(crate::metrics::CONNECTIONS),
        counted: count_connections,
    };
    while let Some((stream, peer)) = accept(&listener, &mut shutdown).await {
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            refused.increment(1);
            // Forget the refusals already answered, so the set holds only
            // those still writing.
            while refusals.try_join_next().is_some() {}
            refusals.spawn(refuse(stream));
            continue;
        };
        connections.spawn(stream, peer, permit);
    }
    drop(listener);
    let drained = drain_connections(&permits, cap, drain, &kill_tx).await;
    // Each refusal ends within its write limit.
    while refusals.join_next().await.is_some() {}
    drained
}

/// hyper's connection settings. Its own limits sit above the configured
/// ones, as a backstop: the handler checks the configured limits itself so
/// that a refusal gets the JSON body every error has (hyper's own 431 has
/// none); its header timer is off, the watchdog keeps the deadlines.
fn connection_builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_headers(crate::config::hyper_max_headers(limits))
        .max_header_size(limits.max_header_bytes.saturating_mul(2))
        .max_buf_size(crate::config::hyper_buf_size(limits))
        .keep_alive(true);
    builder
}

/// The next connection, or `None` once `shutdown` turns true. An accept
/// that fails (out of file descriptors and the like) pauses, not spins.
async fn accept(
    listener: &TcpListener,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopped(shutdown) => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok(pair) => return Some(pair),
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Once the server stops accepting, waits for every connection's permit
/// until `drain` has passed; then resets the connections still open and
/// waits [`KILL_WAIT`] for them to end. Returns whether every connection
/// closed by itself.
async fn drain_connections(
    permits: &Semaphore,
    cap: usize,
    drain: Duration,
    kill: &watch::Sender<bool>,
) -> bool {
    // Every connection holds a permit; getting them all back means all
    // connections are closed.
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    if tokio::time::timeout(drain, permits.acquire_many(all))
        .await
        .is_ok()
    {
        return true;
    }
    tracing::warn!(
        open = cap - permits.available_permits(),
        "connections still open when the drain ended; resetting them"
    );
    let _ = kill.send(true);
    if tokio::time::timeout(KILL_WAIT, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            open = cap - permits.available_permits(),
            "connections still open after being reset"
        );
    }
    false
}

/// What every connection of one server shares: how hyper serves it, the
/// handler, the deadlines, and the signals that stop and reset it.
struct Connections<H> {
    builder: http1::Builder,
    handler: H,
    limits: Limits,
    /// Turns true when the server stops: finish the current request.
    stop: watch::Receiver<bool>,
    /// Turns true when the drain ends: reset what is still open.
    kill: watch::Receiver<bool>,
    gauge: metrics::Gauge,
    /// Whether this server's connections are counted in the metrics.
    counted: bool,
}

impl<H, Fut> Connections<H>
where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    /// Spawns the task that serves one connection until it ends, holding
    /// `permit` until then (the server's drain waits for every permit).
    fn spawn(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let _ = stream.set_nodelay(true);
        let clock = Arc::new(ConnClock::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            clock: Arc::clone(&clock),
        });
        let service = {
            let handler = self.handler.clone();
            let clock = Arc::clone(&clock);
            let timeout = self.limits.request_timeout;
            service_fn(move |req| {
                clock.enter(BUSY);
                Deadline::new(handler(req, peer), timeout)
            })
        };
        let conn = self.builder.serve_connection(io, service);
        let stop = self.stop.clone();
        let kill = self.kill.clone();
        let limits = self.limits.clone();
        let gauge = self.gauge.clone();
        let counted = self.counted;
        if counted {
            gauge.increment(1.0);
        }
        tokio::spawn(async move {
            tokio::pin!(conn);
            let dog = watchdog(Arc::clone(&clock), limits);
            let closed =
                guard_connection(conn.as_mut(), |c| c.graceful_shutdown(), dog, stop, kill).await;
            if let Some(why) = closed {
                if matches!(why, Closed::WriteTimeout | Closed::Shutdown) {
                    clock.reset.store(true, Ordering::Relaxed);
                }
                if counted {
                    metrics::counter!(crate::metrics::CONNECTIONS_CLOSED, "reason" => why.label())
                        .increment(1);
                }
            }
            // The connection is no longer polled, so its handler counts
            // nothing more; the socket closes (or resets) when the task's
            // pinned connection drops, just after.
            if counted {
                gauge.decrement(1.0);
            }
            drop(permit);
        });
    }
}

/// Serves `conn` until it ends (`None`), its watchdog `dog` fires or the
/// server stops; on a stop, lets the current request finish (hyper closes
/// after it, through `graceful_shutdown`), the watchdog still on guard,
/// until `kill` says the drain ended. Returns why the connection was
/// closed, if it did not end by itself.
async fn guard_connection<C: Future>(
    mut conn: Pin<&mut C>,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
    dog: impl Future<Output = Closed>,
    mut stop: watch::Receiver<bool>,
    mut kill: watch::Receiver<bool>,
) -> Option<Closed> {
    tokio::pin!(dog);
    let event = {
        let guard = async {
            tokio::select! {
                biased;
                why = &mut dog => Guard::Expired(why),
                _ = stopped(&mut stop) => Guard::Stopping,
            }
        };
        tokio::pin!(guard);
        let mut side = Side::new();
        std::future::poll_fn(|cx| side.poll(cx, conn.as_mut(), guard.as_mut())).await
    };
    match event {
        None => None,
        Some(Guard::Expired(why)) => Some(why),
        Some(Guard::Stopping) => {
            graceful_shutdown(conn.as_mut());
            let guard = async {
                tokio::select! {
                    biased;
                    why = &mut dog => why,
                    _ = stopped(&mut kill) => Closed::Shutdown,
                }
            };
            tokio::pin!(guard);
            let mut side = Side::new();
            std::future::poll_fn(|cx| side.poll(cx, conn.as_mut(), guard.as_mut())).await
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
    /// The watchdog: the connection stayed too long in its phase, or its
    /// answers found no room for too long.
    Expired(Closed),
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
