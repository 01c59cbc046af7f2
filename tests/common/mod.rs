//! The black-box harness: starts the real `luot` binary on free ports with a
//! fresh data directory, talks HTTP to it, and stops it.
//!
//! Every wait here is bounded; every address is 127.0.0.1.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

pub mod chromium;
pub mod redis;

/// How long the binary may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERM'd server may take to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on any single HTTP exchange made by the harness.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// The flush interval every test server runs with.
pub const FLUSH_INTERVAL: &str = "200ms";
/// How long [`Server::wait_flushed`] waits for the flusher to have written
/// everything.
pub const FLUSH_WAIT: Duration = Duration::from_secs(15);
/// A desktop browser's User-Agent, so that a test's hits are not taken for
/// a bot's.
pub const BROWSER_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 \
    (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// Where a server keeps its data: its own temporary directory, or one the
/// test owns (to restart a server on the same data).
enum DataDir {
    Owned(TempDir),
    Given(PathBuf),
}

impl DataDir {
    fn path(&self) -> &Path {
        match self {
            DataDir::Owned(t) => t.path(),
            DataDir::Given(p) => p,
        }
    }
}

/// A running `luot serve` child process.
pub struct Server {
    child: Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    data_dir: DataDir,
    /// Keeps the configuration file alive while the server runs.
    _config_dir: Option<TempDir>,
    /// Every stderr line so far (drained by a thread for the child's life).
    log: Arc<Mutex<Vec<String>>>,
    agent: ureq::Agent,
    exited: Option<ExitStatus>,
}

/// One HTTP answer, read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the body text when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The command for `luot serve` with the test's environment: free ports,
/// the given data directory, a fast flush, the config file if any.
fn command(data_dir: &Path, config: Option<&Path>, extra_env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_luot"));
    cmd.arg("serve")
        .env_remove("LUOT_CONFIG")
        .env_remove("LUOT_REDIS_URL")
        .env_remove("LUOT_TRUSTED_PROXIES")
        .env("RUST_LOG", "info")
        .env("LUOT_LISTEN", "127.0.0.1:0")
        .env("LUOT_ADMIN_LISTEN", "127.0.0.1:0")
        .env("LUOT_DATA_DIR", data_dir)
        .env("LUOT_FLUSH_INTERVAL", FLUSH_INTERVAL)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(config) = config {
        cmd.env("LUOT_CONFIG", config);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd
}

/// Writes `toml` into a fresh temporary directory; `None` for an empty text.
fn write_config(toml: &str) -> Option<(TempDir, PathBuf)> {
    if toml.trim().is_empty() {
        return None;
    }
    let dir = TempDir::new().expect("temp dir for the config");
    let path = dir.path().join("luot.toml");
    std::fs::write(&path, toml).expect("write the config file");
    Some((dir, path))
}

/// Parses `public=ADDR admin=ADDR` out of the listening log line.
fn parse_listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    if !line.contains("luot listening") {
        return None;
    }
    let field = |name: &str| -> Option<SocketAddr> {
        let start = line.find(&format!("{name}="))? + name.len() + 1;
        let rest = &line[start..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        rest[..end].trim_matches('"').parse().ok()
    };
    Some((field("public")?, field("admin")?))
}

/// An HTTP agent that returns 4xx/5xx answers instead of errors.
/// The `demo` site as the tests declare it (loopback hosts, any origin),
/// followed by `extra` lines: keys of its own, or more tables.
pub fn demo_site(extra: &str) -> String {
    format!(
        "\n[[sites]]\nid = \"demo\"\ntimezone = \"Asia/Ho_Chi_Minh\"\norigins = [\"*\"]\n\
         hosts = [\"localhost\", \"127.0.0.1\"]\ninitial_total = 0\n{extra}"
    )
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(HTTP_TIMEOUT))
        .build()
        .into()
}

impl Server {
    /// Starts a server with the built-in configuration.
    pub fn start() -> Server {
        Server::start_with("", &[])
    }

    /// Starts a server with `config_toml` merged over the built-ins and
    /// `extra_env` added, in a fresh data directory.
    pub fn start_with(config_toml: &str, extra_env: &[(&str, &str)]) -> Server {
        let dir = TempDir::new().expect("temp data dir");
        Server::launch(DataDir::Owned(dir), config_toml, extra_env)
    }

    /// Starts a server on the data directory `dir` (owned by the test).
    pub fn start_in(dir: &Path, config_toml: &str, extra_env: &[(&str, &str)]) -> Server {
        Server::launch(DataDir::Given(dir.to_path_buf()), config_toml, extra_env)
    }

    fn launch(data_dir: DataDir, config_toml: &str, extra_env: &[(&str, &str)]) -> Server {
        let config = write_config(config_toml);
        let mut child = command(
            data_dir.path(),
            config.as_ref().map(|(_, p)| p.as_path()),
            extra_env,
        )
        .spawn()
        .expect("spawn the luot binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        {
            let log = Arc::clone(&log);
            // Drains stderr for the life of the child so it never blocks.
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let addrs = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(addrs) = parse_listening(&line) {
                        break addrs;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    panic!(
                        "luot exited before listening ({status:?}); stderr:\n{}",
                        log.lock().unwrap().join("\n")
                    );
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "luot did not listen within {START_TIMEOUT:?}; stderr:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Server {
            child,
            public: addrs.0,
            admin: addrs.1,
            data_dir,
            _config_dir: config.map(|(d, _)| d),
            log,
            agent: agent(),
            exited: None,
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.public, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Sends signal `name` (`"TERM"`, `"KILL"`, `"HUP"`) to the server;
    /// panics unless `kill` succeeds.
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{name} failed");
    }

    /// Sends SIGTERM and waits (at most 30 s) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        self.signal("TERM");
        let status = wait_bounded(&mut self.child, STOP_TIMEOUT).unwrap_or_else(|| {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "luot did not exit within {STOP_TIMEOUT:?} of SIGTERM; stderr:\n{}",
                self.log()
            )
        });
        self.exited = Some(status);
        status
    }

    // ---- HTTP ----

    /// `GET` on the public listener.
    pub fn get(&self, path: &str) -> Reply {
        self.get_with(path, &[])
    }

    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.agent.get(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        into_reply(req.call(), path)
    }

    /// `GET` on the admin listener.
    pub fn admin_get(&self, path: &str) -> Reply {
        into_reply(self.agent.get(self.admin_url(path)).call(), path)
    }

    /// `POST` `body` with headers (set `Content-Type` among them).
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut req = self.agent.post(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        into_reply(req.send(body), path)
    }

    /// `POST /hit` with a JSON beacon, sent as `text/plain` (sendBeacon).
    pub fn hit(&self, beacon: &Value) -> Reply {
        self.post(
            "/hit",
            &[("Content-Type", "text/plain;charset=UTF-8")],
            beacon.to_string().as_bytes(),
        )
    }

    /// `POST /hit` of `beacon` as a browser's sendBeacon sends it, with
    /// User-Agent `user_agent`.
    pub fn hit_as(&self, beacon: &Value, user_agent: &str) -> Reply {
        self.post(
            "/hit",
            &[
                ("Content-Type", "text/plain;charset=UTF-8"),
                ("User-Agent", user_agent),
            ],
            beacon.to_string().as_bytes(),
        )
    }

    /// A site's figures (`page` = `Some("/a")` for a page's).
    pub fn counters(&self, site: &str, page: Option<&str>) -> Value {
        let path = match page {
            None => format!("/api/v1/sites/{site}/counters"),
            Some(p) => format!("/api/v1/sites/{site}/counters?page={}", encode(p)),
        };
        let r = self.get(&path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }

    /// The `total` of a site's figures (of a page's with `page`).
    pub fn total(&self, site: &str, page: Option<&str>) -> u64 {
        int(&self.counters(site, page), "total")
    }

    /// Polls a site's figures until `ok` holds, for at most `limit`; `Err`
    /// holds the last figures.
    pub fn wait_figures(
        &self,
        site: &str,
        limit: Duration,
        ok: impl Fn(&Value) -> bool,
    ) -> Result<Value, Value> {
        let mut last = Value::Null;
        poll(limit, || {
            let f = self.counters(site, None);
            let done = ok(&f);
            last = f.clone();
            done.then_some(f)
        })
        .ok_or(last)
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        let r = self.admin_get("/metrics");
        assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
        r.text()
    }

    /// The value of the sample whose name-and-labels is exactly `series`
    /// (e.g. `luot_hits_total{result="counted"}`), if present.
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics(), series)
    }

    /// [`Server::metric`], with an absent series read as 0.
    pub fn metric_or_zero(&self, series: &str) -> f64 {
        self.metric(series).unwrap_or(0.0)
    }

    /// Waits until the flusher has completed `n` more passes than when
    /// called (`luot_flush_passes_total`). With `n` = 2, at least one whole
    /// pass began after the call: what a test did before is flushed, and
    /// a change it guards against would have arrived. Panics after
    /// [`FLUSH_WAIT`].
    pub fn wait_flushes(&self, n: u32) {
        let passes = || self.metric("luot_flush_passes_total");
        let start = passes().expect("luot_flush_passes_total is exported");
        let done = poll(FLUSH_WAIT, || {
            (passes()? >= start + f64::from(n)).then_some(())
        });
        assert!(
            done.is_some(),
            "the flusher did not complete {n} passes within {FLUSH_WAIT:?}:\n{}",
            self.metrics()
        );
    }

    /// Waits until the flusher reports nothing pending, then half a second
    /// so that the read cache was refreshed from the store. Panics after
    /// [`FLUSH_WAIT`].
    pub fn wait_flushed(&self) {
        let flushed = poll(FLUSH_WAIT, || {
            let text = self.metrics();
            (metric_value(&text, "luot_pending_keys") == Some(0.0)).then_some(())
        });
        assert!(
            flushed.is_some(),
            "luot_pending_keys never reached 0:\n{}",
            self.metrics()
        );
        thread::sleep(Duration::from_millis(500));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of `series` in Prometheus text `text`.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// The count `v[key]`; panics when it is not one.
pub fn int(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("`{key}` is not a count in {v}"))
}

pub fn is_2xx(status: u16) -> bool {
    (200..300).contains(&status)
}

/// Resident set size of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads a ureq answer in full; panics on a transport error, naming `what`.
pub fn into_reply(res: Result<ureq::http::Response<ureq::Body>, ureq::Error>, what: &str) -> Reply {
    let mut resp = res.unwrap_or_else(|e| panic!("HTTP {what}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp
        .body_mut()
        .read_to_vec()
        .unwrap_or_else(|e| panic!("HTTP {what}: reading the body: {e}"));
    Reply {
        status,
        headers,
        body,
    }
}

/// Waits at most `limit` for `child` to exit.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// Runs `luot serve` on `data_dir` expecting it to stop by itself (e.g. the
/// directory is locked); returns its exit status and stderr. Panics if it is
/// still running after `limit`.
pub fn run_expecting_exit(data_dir: &Path, limit: Duration) -> (ExitStatus, String) {
    let mut child = command(data_dir, None, &[])
        .spawn()
        .expect("spawn the luot binary");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let Some(status) = wait_bounded(&mut child, limit) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("luot was still running after {limit:?}");
    };
    (status, reader.join().unwrap_or_default())
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `limit`.
pub fn poll<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

// ---- raw TCP, for the connection limits ----

/// Connects a raw socket to `addr` with a read timeout.
pub fn connect(addr: SocketAddr, read_timeout: Duration) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(read_timeout)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// A plain `GET /healthz` that leaves the connection open.
pub const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/// One answer read off a raw socket.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The status line and the header lines.
    pub head: String,
    pub body: Vec<u8>,
}

impl Answer {
    /// An answer with head `head` (its body still to be read); `Err` when
    /// `head` has no status code.
    pub fn from_head(head: String) -> Result<Answer, String> {
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP answer: {head:?}"))?;
        Ok(Answer {
            status,
            head,
            body: Vec::new(),
        })
    }

    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The server announced it closes the connection.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    /// Asserts status `status` and a JSON error body naming `code`; `what`
    /// says which answer it is.
    pub fn assert_error(&self, what: &str, status: u16, code: &str) {
        assert_eq!(self.status, status, "{what}: {}", self.head);
        let body: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{what}: not a JSON error body ({e}): {self:?}"));
        assert_eq!(body["error"], code, "{what}: {body}");
    }
}

/// Reads one HTTP/1.1 response (head + `Content-Length` body) from `s`.
/// Returns `None` on EOF before a full head.
pub fn read_response(s: &mut TcpStream) -> Option<Answer> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => return None,
            Ok(_) => buf.push(byte[0]),
            Err(e) => panic!("reading a response head: {e}"),
        }
        assert!(buf.len() < 64 * 1024, "response head too long");
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut answer = Answer::from_head(head).expect("status code");
    let len: usize = answer
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    answer.body = vec![0u8; len];
    s.read_exact(&mut answer.body).expect("response body");
    Some(answer)
}

/// A keep-alive connection to `addr` (reads time out after
/// `read_timeout`), proven admitted by a 200 answer to [`HEALTHZ`].
pub fn admitted(addr: SocketAddr, read_timeout: Duration) -> TcpStream {
    let mut s = connect(addr, read_timeout);
    send(&mut s, HEALTHZ).unwrap();
    let answer = read_response(&mut s).expect("answer");
    assert_eq!(answer.status, 200, "{}", answer.head);
    s
}

/// A read that failed only because its timeout passed.
pub fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// What became of a socket waited on.
#[derive(Debug, PartialEq, Eq)]
pub enum Fate {
    /// The server closed it (EOF or reset).
    Closed,
    /// Still open when the wait ended.
    Open,
    /// The server sent bytes (e.g. an error answer) — kept for the caller.
    Data(Vec<u8>),
}

/// Waits up to the socket's read timeout for EOF or data.
pub fn fate(s: &mut TcpStream) -> Fate {
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(0) => Fate::Closed,
        Ok(n) => Fate::Data(buf[..n].to_vec()),
        Err(e) if timed_out(&e) => Fate::Open,
        Err(_) => Fate::Closed,
    }
}

/// Writes all of `bytes`, ignoring a server that already closed.
pub fn send(s: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(bytes)?;
    s.flush()
}

/// POSTs `body` to `path` over a raw socket, writing from another thread so
/// that a server answering early (and closing) can be read; the body goes
/// with `Content-Length`, or chunked when `chunked`, and `extra_head` (header
/// lines, each ending in CRLF) after the framing: the only way to send no
/// User-Agent at all. Returns the answer.
pub fn raw_post(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    extra_head: &str,
    body: Vec<u8>,
    chunked: bool,
) -> Option<Answer> {
    let mut s = connect(addr, Duration::from_secs(10));
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {}", body.len())
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{framing}\r\n\
         {extra_head}Connection: close\r\n\r\n"
    );
    let mut writer = s.try_clone().expect("clone the socket");
    let writing = thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(head.as_bytes())?;
        if chunked {
            for chunk in body.chunks(16 * 1024) {
                writer.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
                writer.write_all(chunk)?;
                writer.write_all(b"\r\n")?;
            }
            writer.write_all(b"0\r\n\r\n")?;
        } else {
            writer.write_all(&body)?;
        }
        writer.flush()
    });
    let answer = read_response(&mut s);
    // The writer may have failed (the server closed early); that is fine.
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writing.join();
    answer
}
