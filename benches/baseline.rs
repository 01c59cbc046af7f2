//! The physical limit luot is measured against: a bare hyper 1 server with
//! hyper's and tokio's default settings that reads each request's body (as
//! luot must) and answers `204`, and does nothing else. Nothing of luot's
//! configuration is in it: its limits, header sizes and buffer sizes are
//! luot's choices, whose cost is part of what is measured. The one setting
//! it shares with luot is `TCP_NODELAY` on each socket, which any HTTP
//! server sets: without it, Nagle's algorithm would hold answers back and
//! measure the kernel's timers instead of the server.
//!
//! ```sh
//! cargo build --release --example baseline
//! target/release/examples/baseline 127.0.0.1:18090
//! ```
//!
//! Without an address it prints how to use it and exits, so building all
//! targets never starts a server.
//!
//! For `benches/spin.py` only, two costs that luot has and the bare server
//! has not, each off unless its variable is set:
//! - `BASELINE_SPIN_NS`: each request also spins that many nanoseconds of
//!   CPU before its `204` (a smooth extra cost per request);
//! - `BASELINE_LUMP_MS`: once a second a thread of its own does that many
//!   milliseconds of CPU work over a 4 MiB buffer, at the flusher's
//!   priority and paced by the flusher's own [`luot::background::pace`]
//!   (lumps like a flush's, with nothing counted).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn main() {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: baseline ADDR   (e.g. 127.0.0.1:18090)");
        return;
    };
    let addr: SocketAddr = addr.parse().expect("a socket address");
    let spin = std::env::var("BASELINE_SPIN_NS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ns| ns > 0)
        .map(Duration::from_nanos);
    if let Some(ms) = std::env::var("BASELINE_LUMP_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| ms > 0)
    {
        std::thread::spawn(move || lumps(Duration::from_millis(ms)));
    }
    // tokio's multi-threaded runtime with its defaults, as `luot serve` has.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(serve(addr, spin));
}

/// The CPU time this thread has used.
#[allow(unsafe_code)]
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes one timespec to a live, owned value.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Once a second, `work` of CPU over a 4 MiB buffer (64 cache lines a
/// step, each step followed by the flusher's [`luot::background::pace`]),
/// on a thread at the flusher's priority and slice.
fn lumps(work: Duration) {
    luot::background::background_priority();
    let mut buf = vec![0u64; 4 << 17];
    let mut at = 0usize;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let start = thread_cpu();
        while thread_cpu() - start < work {
            for _ in 0..64 {
                // 67 cache lines on, so steps land all over the buffer.
                at = (at + 8 * 67) % buf.len();
                buf[at] = buf[at].wrapping_add(1);
            }
            luot::background::pace();
        }
    }
}

/// Reads the request's body to its end, then answers `204`. A body that
/// fails to arrive is answered the same way: the connection ends anyway.
async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    drop(req.into_body().collect().await);
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

/// [`answer`] after `spin` of CPU.
async fn answer_after(
    spin: Duration,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let start = Instant::now();
    while start.elapsed() < spin {
        std::hint::spin_loop();
    }
    answer(req).await
}

async fn serve(addr: SocketAddr, spin: Option<Duration>) {
    let listener = TcpListener::bind(addr).await.expect("bind");
    eprintln!("baseline listening on {addr}");
    // hyper's defaults (keep-alive on; its 30 s header timeout needs a timer,
    // which the defaults do not set, so it is off).
    let builder = http1::Builder::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        // A connection's task ends with its connection; its result (an
        // I/O error at worst) is of no use here.
        match spin {
            None => drop(tokio::spawn(
                builder.serve_connection(io, service_fn(answer)),
            )),
            Some(spin) => drop(tokio::spawn(
                builder.serve_connection(io, service_fn(move |r| answer_after(spin, r))),
            )),
        }
    }
}
