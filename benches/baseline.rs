//! The physical limit luot is measured against: a bare hyper server with
//! luot's hyper version and runtime settings that answers `204` to every
//! request and does nothing else.
//!
//! ```sh
//! cargo build --release --example baseline
//! target/release/examples/baseline 127.0.0.1:18090
//! ```
//!
//! Without an address it prints how to use it and exits, so building all
//! targets never starts a server.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use luot::config::{Limits, hyper_buf_size, hyper_max_headers};
use tokio::net::TcpListener;

fn main() {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: baseline ADDR   (e.g. 127.0.0.1:18090)");
        return;
    };
    let addr: SocketAddr = addr.parse().expect("a socket address");
    // The same runtime as `luot serve`: tokio's multi-threaded default.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(serve(addr));
}

async fn answer(_req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

async fn serve(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.expect("bind");
    eprintln!("baseline listening on {addr}");
    // The same HTTP/1 settings as luot's public listener with its default
    // limits (src/http/server.rs), from the same functions.
    let limits = Limits::default();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_headers(hyper_max_headers(&limits))
        .max_header_size(limits.max_header_bytes.saturating_mul(2))
        .max_buf_size(hyper_buf_size(&limits))
        .keep_alive(true);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = builder.serve_connection(TokioIo::new(stream), service_fn(answer));
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
