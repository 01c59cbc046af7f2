//! The HTTP client the command line talks to a running luot with: hyper-util's
//! pooled client (`client::legacy`, HTTP/1.1) driven by a current-thread
//! runtime of its own, one request at a time, bounded in time and size.
//!
//! It is meant for a loopback or private address (the admin listener, or
//! the public listener for a health check) and sends the admin token in the
//! clear: it speaks plain HTTP only. It knows nothing of what the requests
//! mean, nor of stores or the server's state.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest answer read; a longer one is refused, not cut short.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

/// How long a command may wait on the service.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// To open the connection.
    pub connect: Duration,
    /// For the whole exchange: connecting, sending, the whole answer.
    pub exchange: Duration,
    /// Largest answer body read.
    pub max_answer: usize,
}

impl Bounds {
    /// `luot import` and `luot export`: an import waits for the store to
    /// apply it, an export may be large.
    pub const ADMIN: Bounds = Bounds {
        connect: Duration::from_secs(5),
        exchange: Duration::from_secs(60),
        max_answer: MAX_ANSWER_BYTES,
    };
    /// `luot healthcheck`: a container's health check must answer quickly.
    pub const HEALTH: Bounds = Bounds {
        connect: Duration::from_secs(2),
        exchange: Duration::from_secs(5),
        max_answer: 64 * 1024,
    };
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach luot at {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("luot at {addr} did not answer within {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("luot answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("unreadable answer: {0}")]
    Answer(String),
    #[error("cannot build the request for {path}: {reason}")]
    Request { path: String, reason: String },
    #[error("cannot start the client's runtime: {0}")]
    Runtime(std::io::Error),
}

/// An answer: status and whole body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body of a 2xx answer.
    ///
    /// # Errors
    /// [`ClientError::Status`] with the status and body of any other.
    pub fn success(self) -> Result<Vec<u8>, ClientError> {
        if self.status / 100 == 2 {
            Ok(self.body)
        } else {
            Err(ClientError::Status {
                status: self.status,
                body: String::from_utf8_lossy(&self.body).into_owned(),
            })
        }
    }
}

/// A client for one luot listener.
pub struct HttpClient {
    // Declared before the runtime so that it (and its pooled connections)
    // is dropped while the runtime still exists.
    client: Client<HttpConnector, Full<Bytes>>,
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    token: Option<String>,
    bounds: Bounds,
}

impl HttpClient {
    /// A client for `addr`, sending `token` as a bearer token when given.
    ///
    /// # Errors
    /// [`ClientError::Runtime`] when the runtime cannot start.
    pub fn new(
        addr: SocketAddr,
        token: Option<String>,
        bounds: Bounds,
    ) -> Result<Self, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(bounds.connect));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            client,
            runtime,
            addr,
            token,
            bounds,
        })
    }

    /// Sends one request (a JSON body, possibly empty) and reads the whole
    /// answer, whatever its status.
    ///
    /// # Errors
    /// [`ClientError::Request`] for a path that is not a valid URI path,
    /// [`ClientError::Connect`], [`ClientError::Timeout`], or
    /// [`ClientError::Answer`] (including an answer over the size bound).
    pub fn request(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Answer, ClientError> {
        let request = self.build(method, path, body)?;
        let after = self.bounds.exchange;
        self.runtime.block_on(async {
            tokio::time::timeout(after, self.exchange(request))
                .await
                .map_err(|_| ClientError::Timeout {
                    addr: self.addr,
                    after,
                })?
        })
    }

    fn build(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let invalid = |reason: String| ClientError::Request {
            path: path.to_string(),
            reason,
        };
        let uri: Uri = format!("http://{}{path}", self.addr)
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| invalid(e.to_string()))?;
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| invalid(e.to_string()))
    }

    async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<Answer, ClientError> {
        let response = self.client.request(request).await.map_err(|e| {
            if e.is_connect() {
                ClientError::Connect {
                    addr: self.addr,
                    reason: reason(&e),
                }
            } else {
                ClientError::Answer(reason(&e))
            }
        })?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), self.bounds.max_answer)
            .collect()
            .await
            .map_err(|e| ClientError::Answer(reason(&*e)))?
            .to_bytes();
        Ok(Answer {
            status,
            body: body.to_vec(),
        })
    }
}

/// What went wrong, for a person: the innermost I/O error when there is one
/// ("Connection refused (os error 111)", as a plain socket would say it),
/// since hyper's wrappers around it only add "client error (Connect)";
/// otherwise every cause in the chain.
fn reason(error: &(dyn std::error::Error + 'static)) -> String {
    let mut causes = Vec::new();
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.to_string();
        }
        causes.push(e.to_string());
        cause = e.source();
    }
    causes.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::thread;

    /// A one-connection HTTP server on loopback: reads one request's head
    /// and sends `answer` (raw bytes), or nothing at all when `None`, then
    /// holds the connection until the client hangs up. Returns its address
    /// and the request head it read.
    fn serve_once(answer: Option<Vec<u8>>) -> (SocketAddr, thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            if let Some(answer) = answer {
                let _ = stream.write_all(&answer);
            }
            // Until the client hangs up (or the read timeout).
            let _ = stream.read(&mut byte);
            String::from_utf8_lossy(&head).into_owned()
        });
        (addr, handle)
    }

    fn bounds(exchange_ms: u64, max_answer: usize) -> Bounds {
        Bounds {
            connect: Duration::from_secs(2),
            exchange: Duration::from_millis(exchange_ms),
            max_answer,
        }
    }

    #[test]
    fn a_chunked_answer_arrives_whole_with_the_token_sent() {
        let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                       3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let (addr, server) = serve_once(Some(answer.to_vec()));
        let client = HttpClient::new(addr, Some("s3cret".into()), bounds(5_000, 1024)).unwrap();
        let got = client.request(Method::GET, "/x?a=1", Vec::new()).unwrap();
        assert_eq!((got.status, got.body.as_slice()), (200, &b"abcde"[..]));
        drop(client);
        let head = server.join().unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /x?a=1 http/1.1\r\n"), "{head}");
        assert!(head.contains("authorization: bearer s3cret\r\n"), "{head}");
        assert!(head.contains(&format!("host: {addr}\r\n")), "{head}");
    }

    #[test]
    fn an_answer_over_the_size_bound_is_refused() {
        let body = vec![b'x'; 2048];
        let mut answer =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        answer.extend_from_slice(&body);
        let (addr, server) = serve_once(Some(answer));
        let client = HttpClient::new(addr, None, bounds(5_000, 1024)).unwrap();
        let err = client.request(Method::GET, "/", Vec::new()).unwrap_err();
        assert!(matches!(err, ClientError::Answer(_)), "{err}");
        drop(client);
        server.join().unwrap();
    }

    #[test]
    fn a_silent_server_times_out() {
        let (addr, server) = serve_once(None);
        let client = HttpClient::new(addr, None, bounds(300, 1024)).unwrap();
        let err = client.request(Method::GET, "/", Vec::new()).unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
        drop(client);
        server.join().unwrap();
    }

    #[test]
    fn a_closed_port_says_what_the_socket_said() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let client = HttpClient::new(addr, None, bounds(5_000, 1024)).unwrap();
        let err = client.request(Method::GET, "/", Vec::new()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot reach luot at {addr}: ")),
            "{text}"
        );
        assert!(text.contains("refused"), "{text}");
    }

    #[test]
    fn a_non_2xx_answer_is_an_error_with_its_body() {
        let answer = Answer {
            status: 404,
            body: b"{\"error\":\"unknown_site\"}".to_vec(),
        };
        let err = answer.success().unwrap_err();
        assert_eq!(
            err.to_string(),
            "luot answered 404: {\"error\":\"unknown_site\"}"
        );
    }
}
