//! Redis for the integration tests: a single `redis-server` whose append-only
//! file survives SIGKILL, a cluster (masters with replicas) that can fail over
//! and move slots, a proxy that swallows the reply to a script call, and a
//! tiny RESP client to talk to all of them.
//!
//! Every server binds 127.0.0.1 only, every wait is bounded in time and in
//! rounds, and dropping a harness object SIGKILLs every child it started.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a `redis-server` may take to answer `PING` (and finish loading).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How many times a server start is tried (a fresh port each time).
const START_ATTEMPTS: usize = 5;
/// Bound on connecting to a Redis (or to the proxy).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on reading or writing one command's bytes.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a cluster converging (create, failover, slot move).
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on `redis-cli --cluster create`.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Polling interval of every wait.
const POLL: Duration = Duration::from_millis(50);
/// Number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

// ---- helpers ----

/// A port on 127.0.0.1 that was free a moment ago (bound to 0, read, dropped).
/// Callers retry on a start failure since another process may take it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A free port `P` for a cluster node whose bus port `P + 10000` is free too.
fn free_cluster_port() -> u16 {
    for _ in 0..500 {
        let port = free_port();
        if port > u16::MAX - 10_000 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port P with P+10000 free on 127.0.0.1 after 500 tries");
}

/// Calls `f` every 50 ms until it returns true, for at most `timeout` (and at
/// most `timeout / 50 ms + 2` rounds). Returns whether it did.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let rounds = timeout.as_millis() / POLL.as_millis() + 2;
    for _ in 0..rounds {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
    false
}

/// `127.0.0.1:port`.
fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Panics with a pointer to the runner when `redis-server` is missing.
fn require_redis() {
    for tool in ["redis-server", "redis-cli"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "`{tool}` is not installed or does not run: run `bash tests/run.sh` \
             (it installs the Debian packages redis-server and redis-tools)"
        );
    }
}

/// Waits at most `limit` for `child` to exit.
fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(limit, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

// ---- RESP ----

/// One RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespValue {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Array(Vec<RespValue>),
    Null,
}

impl RespValue {
    /// A simple or bulk string as text.
    pub fn text(&self) -> Option<String> {
        match self {
            RespValue::Simple(s) => Some(s.clone()),
            RespValue::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// An integer, or a string holding one.
    pub fn int(&self) -> Option<i64> {
        match self {
            RespValue::Integer(i) => Some(*i),
            other => other.text()?.trim().parse().ok(),
        }
    }

    pub fn array(&self) -> Option<&[RespValue]> {
        match self {
            RespValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// `+OK`.
    pub fn is_ok(&self) -> bool {
        matches!(self, RespValue::Simple(s) if s == "OK")
    }

    pub fn is_error(&self) -> bool {
        matches!(self, RespValue::Error(_))
    }

    /// The error text, if an error.
    pub fn error(&self) -> Option<&str> {
        match self {
            RespValue::Error(e) => Some(e),
            _ => None,
        }
    }
}

/// A command as a RESP array of bulk strings.
pub fn encode_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn io_error(e: std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            format!("timed out ({e})")
        }
        std::io::ErrorKind::UnexpectedEof => "connection closed by peer".to_string(),
        _ => format!("i/o error: {e}"),
    }
}

/// One line without its CRLF.
fn read_line(r: &mut impl BufRead) -> Result<Vec<u8>, String> {
    let mut line = Vec::new();
    let n = r
        .take(1024 * 1024)
        .read_until(b'\n', &mut line)
        .map_err(io_error)?;
    if n == 0 {
        return Err("connection closed by peer".to_string());
    }
    if !line.ends_with(b"\r\n") {
        return Err(format!(
            "protocol error: line without CRLF: {:?}",
            String::from_utf8_lossy(&line)
        ));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn parse_int(bytes: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "protocol error: bad integer {:?}",
                String::from_utf8_lossy(bytes)
            )
        })
}

/// Reads one RESP2 value (and the RESP3 null `_`).
pub fn read_value(r: &mut impl BufRead) -> Result<RespValue, String> {
    read_value_at(r, 0)
}

fn read_value_at(r: &mut impl BufRead, depth: usize) -> Result<RespValue, String> {
    if depth > 32 {
        return Err("protocol error: nesting deeper than 32".to_string());
    }
    let line = read_line(r)?;
    let Some((&tag, rest)) = line.split_first() else {
        return Err("protocol error: empty line".to_string());
    };
    let text = || String::from_utf8_lossy(rest).into_owned();
    match tag {
        b'+' => Ok(RespValue::Simple(text())),
        b'-' => Ok(RespValue::Error(text())),
        b':' => Ok(RespValue::Integer(parse_int(rest)?)),
        b'_' => Ok(RespValue::Null),
        b'$' => {
            let len = parse_int(rest)?;
            if len < 0 {
                return Ok(RespValue::Null);
            }
            let mut data = vec![0u8; len as usize + 2];
            r.read_exact(&mut data).map_err(io_error)?;
            if !data.ends_with(b"\r\n") {
                return Err("protocol error: bulk string without CRLF".to_string());
            }
            data.truncate(len as usize);
            Ok(RespValue::Bulk(data))
        }
        b'*' => {
            let len = parse_int(rest)?;
            if len < 0 {
                return Ok(RespValue::Null);
            }
            let mut items = Vec::with_capacity(len.min(1024) as usize);
            for _ in 0..len {
                items.push(read_value_at(r, depth + 1)?);
            }
            Ok(RespValue::Array(items))
        }
        other => Err(format!(
            "protocol error: unknown type byte {:?} in {:?}",
            other as char,
            String::from_utf8_lossy(&line)
        )),
    }
}

/// A RESP connection kept open (pipelining, several commands on one socket).
pub struct RespConn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl RespConn {
    /// Connects with a 5 s connect timeout and 10 s read/write timeouts.
    pub fn connect(addr: SocketAddr) -> Result<RespConn, String> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|_| stream.set_write_timeout(Some(IO_TIMEOUT)))
            .and_then(|_| stream.set_nodelay(true))
            .map_err(|e| format!("socket options: {e}"))?;
        let reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        Ok(RespConn { stream, reader })
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("set the read timeout");
    }

    /// Writes one command without reading its reply.
    pub fn send(&mut self, args: &[&str]) -> Result<(), String> {
        self.stream
            .write_all(&encode_command(args))
            .and_then(|_| self.stream.flush())
            .map_err(io_error)
    }

    /// Reads one reply.
    pub fn read(&mut self) -> Result<RespValue, String> {
        read_value(&mut self.reader)
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&str]) -> Result<RespValue, String> {
        self.send(args)?;
        self.read()
    }
}

/// Sends one command on a fresh connection to `addr` and reads the reply.
/// `Err` is a transport or protocol failure; a Redis error reply is
/// `Ok(RespValue::Error(..))`.
pub fn command(addr: SocketAddr, args: &[&str]) -> Result<RespValue, String> {
    RespConn::connect(addr)?.call(args)
}

/// Like [`command`] but panics on a transport failure or an error reply.
pub fn must(addr: SocketAddr, args: &[&str]) -> RespValue {
    match command(addr, args) {
        Ok(RespValue::Error(e)) => panic!("{args:?} on {addr}: Redis error: {e}"),
        Ok(v) => v,
        Err(e) => panic!("{args:?} on {addr}: {e}"),
    }
}

/// The text of a command's reply, as a `Result` (for polling).
fn text_of(addr: SocketAddr, args: &[&str]) -> Result<String, String> {
    match command(addr, args)? {
        RespValue::Error(e) => Err(format!("{args:?} on {addr}: {e}")),
        v => v
            .text()
            .ok_or_else(|| format!("{args:?} on {addr}: not a string: {v:?}")),
    }
}

/// The value of `field` in an `INFO`-style `field:value` text.
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        let (k, v) = l.trim_end().split_once(':')?;
        (k == field).then_some(v)
    })
}

// ---- a single server ----

/// A `redis-server` child with its own temporary directory (AOF, log, and
/// for a cluster node `nodes-P.conf`). SIGKILLed on drop.
pub struct RedisServer {
    child: Mutex<Option<Child>>,
    port: u16,
    cluster: bool,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a standalone server with an AOF fsynced on every write.
    pub fn start() -> RedisServer {
        RedisServer::launch(false)
    }

    /// Starts a cluster-enabled node (not yet part of any cluster).
    fn start_cluster_node() -> RedisServer {
        RedisServer::launch(true)
    }

    fn launch(cluster: bool) -> RedisServer {
        require_redis();
        let dir = TempDir::new().expect("temp dir for redis-server");
        let mut server = RedisServer {
            child: Mutex::new(None),
            port: 0,
            cluster,
            dir,
        };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            server.port = if cluster {
                free_cluster_port()
            } else {
                free_port()
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) => {
                    server.kill();
                    failures.push(format!("port {}: {e}", server.port));
                }
            }
        }
        panic!(
            "redis-server did not start in {START_ATTEMPTS} attempts:\n{}\nlog:\n{}",
            failures.join("\n"),
            server.log()
        );
    }

    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            &self.dir.path().to_string_lossy(),
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.cluster {
            let conf = format!("nodes-{}.conf", self.port);
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-node-timeout",
                    "3000",
                    // A replica's full sync otherwise waits 5 s for others.
                    "--repl-diskless-sync-delay",
                    "0",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
        }
        args
    }

    /// Spawns on `self.port` and waits for `PONG` and `loading:0`.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("open the log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("redis-server")
            .args(self.args())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        *self.child.lock().unwrap() = Some(child);

        let addr = self.addr();
        let mut last = String::from("no answer yet");
        let ready = wait_until(START_TIMEOUT, || {
            if !self.is_running() {
                last = "redis-server exited".to_string();
                return true;
            }
            match command(addr, &["PING"]) {
                Ok(RespValue::Simple(s)) if s == "PONG" => {}
                Ok(other) => {
                    last = format!("PING answered {other:?}");
                    return false;
                }
                Err(e) => {
                    last = format!("PING: {e}");
                    return false;
                }
            }
            match text_of(addr, &["INFO", "persistence"]) {
                Ok(info) if info_field(&info, "loading") == Some("0") => true,
                Ok(_) => {
                    last = "still loading".to_string();
                    false
                }
                Err(e) => {
                    last = e;
                    false
                }
            }
        });
        if ready && self.is_running() {
            Ok(())
        } else if ready {
            Err(last)
        } else {
            Err(format!("not ready within {START_TIMEOUT:?}: {last}"))
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        local(self.port)
    }

    /// `redis://127.0.0.1:P/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's directory (AOF, log, nodes file).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Everything the server printed so far (across restarts).
    pub fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(|c| c.id())
    }

    /// Whether the child process is alive.
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap();
        match child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILLs the server and reaps it (no-op when not running).
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            if wait_child(&mut child, Duration::from_secs(30)).is_none() {
                panic!("redis-server {} did not die of SIGKILL", child.id());
            }
        }
    }

    /// Kills the server if running, then starts it again on the same port
    /// and directory (the AOF is replayed) and waits for `PONG` and
    /// `loading:0`.
    pub fn restart(&mut self) {
        self.kill();
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) => {
                    self.kill();
                    failures.push(e);
                    thread::sleep(Duration::from_millis(300));
                }
            }
        }
        panic!(
            "redis-server did not restart on port {}:\n{}\nlog:\n{}",
            self.port,
            failures.join("\n"),
            self.log_tail(40)
        );
    }

    /// One command on a fresh connection.
    pub fn command(&self, args: &[&str]) -> Result<RespValue, String> {
        command(self.addr(), args)
    }

    /// One command; panics on failure or an error reply (with the log tail).
    pub fn must(&self, args: &[&str]) -> RespValue {
        match self.command(args) {
            Ok(RespValue::Error(e)) => panic!("{args:?} on {}: Redis error: {e}", self.addr()),
            Ok(v) => v,
            Err(e) => panic!(
                "{args:?} on {}: {e}\nlog:\n{}",
                self.addr(),
                self.log_tail(40)
            ),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Ok(mut guard) = self.child.lock()
            && let Some(mut child) = guard.take()
        {
            let _ = child.kill();
            let _ = wait_child(&mut child, Duration::from_secs(30));
        }
    }
}

// ---- cluster ----

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), Redis Cluster's hash.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of `key`: CRC16 of the hash tag (the bytes between the
/// first `{` and the first `}` after it, when not empty) or of the whole key.
pub fn slot_of(key: impl AsRef<[u8]>) -> u16 {
    let key = key.as_ref();
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub id: String,
    pub addr: SocketAddr,
    pub flags: Vec<String>,
    /// The master's id, for a replica.
    pub master_id: Option<String>,
    pub connected: bool,
    /// Owned slot ranges, inclusive (migrating/importing markers left out).
    pub slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    fn flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }

    pub fn is_master(&self) -> bool {
        self.flag("master")
    }

    pub fn is_replica(&self) -> bool {
        self.flag("slave")
    }

    pub fn is_myself(&self) -> bool {
        self.flag("myself")
    }

    /// Flagged `fail` or `fail?` by the node that was asked.
    pub fn is_failed(&self) -> bool {
        self.flag("fail") || self.flag("fail?")
    }

    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }
}

/// Parses `CLUSTER NODES` output (nodes without an address are left out).
pub fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            // ip:port@cport[,hostname]
            let addr = f[1].split('@').next()?.parse().ok()?;
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => {
                        let n = s.parse().ok()?;
                        Some((n, n))
                    }
                })
                .collect();
            Some(ClusterNode {
                id: f[0].to_string(),
                addr,
                flags: f[2].split(',').map(str::to_string).collect(),
                master_id: (f[3] != "-").then(|| f[3].to_string()),
                connected: f[7] == "connected",
                slots,
            })
        })
        .collect()
}

/// A node's role and place as every node should agree on it.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    addr: SocketAddr,
    master: bool,
    master_addr: Option<SocketAddr>,
    slots: Vec<(u16, u16)>,
    failed: bool,
}

fn summarize(view: &[ClusterNode]) -> Vec<Seen> {
    let mut seen: Vec<Seen> = view
        .iter()
        .map(|n| Seen {
            addr: n.addr,
            master: n.is_master(),
            master_addr: n
                .master_id
                .as_ref()
                .and_then(|id| view.iter().find(|m| &m.id == id))
                .map(|m| m.addr),
            slots: n.slots.clone(),
            failed: n.is_failed(),
        })
        .collect();
    seen.sort();
    seen
}

/// A Redis Cluster of `masters × (1 + replicas_per_master)` local nodes,
/// each a [`RedisServer`] in its own directory. SIGKILLed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// What `redis-cli --cluster create` printed.
    pub create_output: String,
}

impl RedisCluster {
    /// Starts the nodes, joins them with `redis-cli --cluster create` and
    /// waits until every node reports `cluster_state:ok` with all 16384
    /// slots assigned, all nodes agree on the layout, and every replica's
    /// link to its master is up.
    pub fn start(masters: usize, replicas_per_master: usize) -> RedisCluster {
        assert!(
            masters >= 3,
            "redis-cli --cluster create needs 3 masters or more"
        );
        let count = masters * (1 + replicas_per_master);
        let nodes: Vec<RedisServer> = (0..count)
            .map(|_| RedisServer::start_cluster_node())
            .collect();
        let mut cluster = RedisCluster {
            nodes,
            create_output: String::new(),
        };
        let out_path = cluster.nodes[0].dir().join("cluster-create.log");
        let out = std::fs::File::create(&out_path).expect("create the redis-cli log");
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for n in &cluster.nodes {
            cmd.arg(n.addr().to_string());
        }
        cmd.arg("--cluster-replicas")
            .arg(replicas_per_master.to_string())
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().expect("clone the log file")))
            .stderr(Stdio::from(out));
        let mut child = cmd.spawn().expect("spawn redis-cli --cluster create");
        let status = wait_child(&mut child, CREATE_TIMEOUT);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        cluster.create_output = std::fs::read_to_string(&out_path).unwrap_or_default();
        if !status.is_some_and(|s| s.success()) {
            panic!(
                "redis-cli --cluster create failed ({status:?}):\n{}\n{}",
                cluster.create_output,
                cluster.logs_tail(20)
            );
        }
        cluster.wait_stable();
        let masters_seen = cluster.masters().len();
        assert_eq!(
            masters_seen, masters,
            "expected {masters} masters:\n{}",
            cluster.create_output
        );
        cluster
    }

    /// Every node's server (to kill or restart one).
    pub fn servers(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The server listening on `addr`.
    pub fn node(&self, addr: SocketAddr) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.addr() == addr)
            .unwrap_or_else(|| panic!("{addr} is not a node of this cluster"))
    }

    pub fn node_mut(&mut self, addr: SocketAddr) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|n| n.addr() == addr)
            .unwrap_or_else(|| panic!("{addr} is not a node of this cluster"))
    }

    /// Every node's address, as started.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr()).collect()
    }

    /// `redis://127.0.0.1:P/` for every node.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    /// The seeds comma-separated, as `LUOT_REDIS_URL` takes a cluster.
    pub fn url_list(&self) -> String {
        self.seeds().join(",")
    }

    /// `redis+cluster://127.0.0.1:P1`, P1 the first node (a master when the
    /// cluster was created; any node serves as a discovery seed).
    pub fn cluster_url(&self) -> String {
        format!("redis+cluster://{}", self.nodes[0].addr())
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...` with every node.
    pub fn cluster_url_all(&self) -> String {
        let addrs: Vec<String> = self.addrs().iter().map(|a| a.to_string()).collect();
        format!("redis+cluster://{}", addrs.join(","))
    }

    /// The last `n` log lines of every node.
    pub fn logs_tail(&self, n: usize) -> String {
        self.nodes
            .iter()
            .map(|s| format!("--- node {} ---\n{}", s.addr(), s.log_tail(n)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `CLUSTER NODES` as seen by `addr`.
    pub fn view_of(&self, addr: SocketAddr) -> Result<Vec<ClusterNode>, String> {
        Ok(parse_cluster_nodes(&text_of(addr, &["CLUSTER", "NODES"])?))
    }

    /// `CLUSTER NODES` as seen by the first running node that answers.
    pub fn nodes(&self) -> Vec<ClusterNode> {
        let mut errors = Vec::new();
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            match self.view_of(n.addr()) {
                Ok(v) => return v,
                Err(e) => errors.push(e),
            }
        }
        panic!("no cluster node answered CLUSTER NODES: {errors:?}");
    }

    /// The addresses of the nodes `keep` selects, in the order the nodes
    /// were started (the first masters of `start` are the first nodes).
    fn select(&self, keep: impl Fn(&ClusterNode) -> bool) -> Vec<SocketAddr> {
        let view = self.nodes();
        self.addrs()
            .into_iter()
            .filter(|a| view.iter().any(|n| n.addr == *a && keep(n)))
            .collect()
    }

    /// Masters not flagged failed, in start order.
    pub fn masters(&self) -> Vec<SocketAddr> {
        self.select(|n| n.is_master() && !n.is_failed())
    }

    /// Replicas not flagged failed, in start order.
    pub fn replicas(&self) -> Vec<SocketAddr> {
        self.select(|n| n.is_replica() && !n.is_failed())
    }

    /// The replicas of `master`.
    pub fn replicas_of(&self, master: SocketAddr) -> Vec<SocketAddr> {
        let view = self.nodes();
        let Some(id) = view.iter().find(|n| n.addr == master).map(|n| n.id.clone()) else {
            return Vec::new();
        };
        view.iter()
            .filter(|n| n.is_replica() && n.master_id.as_ref() == Some(&id))
            .map(|n| n.addr)
            .collect()
    }

    /// The master of `replica`, if it is one.
    pub fn master_of(&self, replica: SocketAddr) -> Option<SocketAddr> {
        let view = self.nodes();
        let master_id = view.iter().find(|n| n.addr == replica)?.master_id.clone()?;
        view.iter().find(|n| n.id == master_id).map(|n| n.addr)
    }

    /// The master that serves `slot`.
    pub fn node_of_slot(&self, slot: u16) -> SocketAddr {
        let view = self.nodes();
        view.iter()
            .find(|n| n.is_master() && n.owns(slot))
            .map(|n| n.addr)
            .unwrap_or_else(|| panic!("slot {slot} is not assigned: {view:#?}"))
    }

    /// The hash slot of `key` (see [`slot_of`]).
    pub fn slot_of(key: impl AsRef<[u8]>) -> u16 {
        slot_of(key)
    }

    /// `CLUSTER MYID` of `addr`.
    pub fn id_of(&self, addr: SocketAddr) -> String {
        must(addr, &["CLUSTER", "MYID"])
            .text()
            .expect("CLUSTER MYID is a string")
    }

    /// The first element of `ROLE` (`master` or `slave`).
    pub fn role_of(addr: SocketAddr) -> Result<String, String> {
        let role = command(addr, &["ROLE"])?;
        role.array()
            .and_then(|a| a.first())
            .and_then(|r| r.text())
            .ok_or_else(|| format!("ROLE on {addr}: {role:?}"))
    }

    /// Whether every running node is in `cluster_state:ok` with all slots
    /// assigned, all running nodes show the same layout, and every running
    /// replica of a live master has its link up. `Err` says what is not.
    pub fn check_stable(&self) -> Result<(), String> {
        let mut reference: Option<(SocketAddr, Vec<Seen>)> = None;
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            let addr = n.addr();
            let info = text_of(addr, &["CLUSTER", "INFO"])?;
            if info_field(&info, "cluster_state") != Some("ok") {
                return Err(format!("{addr}: {:?}", info_field(&info, "cluster_state")));
            }
            let assigned = info_field(&info, "cluster_slots_assigned");
            if assigned != Some("16384") {
                return Err(format!("{addr}: cluster_slots_assigned {assigned:?}"));
            }
            let view = self.view_of(addr)?;
            let me = view
                .iter()
                .find(|v| v.is_myself())
                .ok_or_else(|| format!("{addr}: no myself line"))?;
            if me.is_replica() {
                let master_alive = me
                    .master_id
                    .as_ref()
                    .is_some_and(|id| view.iter().any(|m| &m.id == id && !m.is_failed()));
                let repl = text_of(addr, &["INFO", "replication"])?;
                let link = info_field(&repl, "master_link_status");
                if master_alive && link != Some("up") {
                    return Err(format!("{addr}: master_link_status {link:?}"));
                }
            }
            let seen = summarize(&view);
            match &reference {
                None => reference = Some((addr, seen)),
                Some((first, expected)) if *expected != seen => {
                    return Err(format!(
                        "{first} and {addr} disagree:\n{expected:?}\n{seen:?}"
                    ));
                }
                Some(_) => {}
            }
        }
        if reference.is_none() {
            return Err("no node is running".to_string());
        }
        Ok(())
    }

    /// Waits (30 s at most) for [`RedisCluster::check_stable`]; panics with
    /// the last reason and the nodes' logs otherwise.
    pub fn wait_stable(&self) {
        let mut last = String::new();
        let ok = wait_until(CLUSTER_TIMEOUT, || match self.check_stable() {
            Ok(()) => true,
            Err(e) => {
                last = e;
                false
            }
        });
        assert!(
            ok,
            "cluster not stable within {CLUSTER_TIMEOUT:?}: {last}\n{}",
            self.logs_tail(20)
        );
    }

    /// Sends `CLUSTER FAILOVER` to `replica`, waits until it reports role
    /// master, then until the whole cluster agrees (see `wait_stable`).
    pub fn failover(&self, replica: SocketAddr) {
        let role = Self::role_of(replica).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(role, "slave", "{replica} is not a replica");
        let reply = must(replica, &["CLUSTER", "FAILOVER"]);
        assert!(reply.is_ok(), "CLUSTER FAILOVER on {replica}: {reply:?}");
        let promoted = wait_until(CLUSTER_TIMEOUT, || {
            Self::role_of(replica).is_ok_and(|r| r == "master")
        });
        assert!(
            promoted,
            "{replica} not master within {CLUSTER_TIMEOUT:?} of CLUSTER FAILOVER\n{}",
            self.logs_tail(20)
        );
        self.wait_stable();
    }

    /// Moves `slot` (and its keys) from master `from` to master `to`: the
    /// IMPORTING/MIGRATING marks, `MIGRATE` of the keys in batches, then
    /// `SETSLOT NODE` on the target, the source and every other master, and
    /// a wait for the whole cluster to agree.
    /// Returns how many keys were moved.
    pub fn migrate_slot(&self, slot: u16, from: SocketAddr, to: SocketAddr) -> usize {
        assert_ne!(from, to, "migrating slot {slot} onto itself");
        let slot_s = slot.to_string();
        let src_id = self.id_of(from);
        let dst_id = self.id_of(to);
        let ok = |addr: SocketAddr, args: &[&str]| {
            let r = must(addr, args);
            assert!(r.is_ok(), "{args:?} on {addr}: {r:?}");
        };
        ok(to, &["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &src_id]);
        ok(from, &["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &dst_id]);
        let host = to.ip().to_string();
        let port = to.port().to_string();
        let mut moved = 0usize;
        for round in 0.. {
            assert!(round < 100_000, "slot {slot}: keys keep coming");
            let keys = must(from, &["CLUSTER", "GETKEYSINSLOT", &slot_s, "100"]);
            let keys: Vec<String> = keys
                .array()
                .unwrap_or_else(|| panic!("GETKEYSINSLOT: {keys:?}"))
                .iter()
                .filter_map(RespValue::text)
                .collect();
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["MIGRATE", &host, &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            let r = must(from, &args);
            assert!(
                r.is_ok() || r.text().as_deref() == Some("NOKEY"),
                "MIGRATE: {r:?}"
            );
            moved += keys.len();
        }
        ok(to, &["CLUSTER", "SETSLOT", &slot_s, "NODE", &dst_id]);
        ok(from, &["CLUSTER", "SETSLOT", &slot_s, "NODE", &dst_id]);
        for m in self.masters() {
            if m != from && m != to {
                ok(m, &["CLUSTER", "SETSLOT", &slot_s, "NODE", &dst_id]);
            }
        }
        let owned = wait_until(CLUSTER_TIMEOUT, || {
            self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                self.view_of(n.addr()).is_ok_and(|v| {
                    v.iter()
                        .any(|x| x.addr == to && x.is_master() && x.owns(slot))
                })
            })
        });
        assert!(owned, "not every node sees slot {slot} on {to}");
        self.wait_stable();
        moved
    }
}

// ---- the proxy that loses script replies ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    Open,
    /// A script call went to Redis; its reply is to be swallowed.
    Dropping,
    Closed,
}

/// One proxied connection: both sockets (clones, to shut them down from
/// anywhere) and its state.
struct ProxyConn {
    client: TcpStream,
    server: TcpStream,
    state: Mutex<ConnState>,
    changed: Condvar,
}

impl ProxyConn {
    fn state(&self) -> ConnState {
        *self.state.lock().unwrap()
    }

    fn set(&self, s: ConnState) {
        let mut st = self.state.lock().unwrap();
        if *st != ConnState::Closed {
            *st = s;
        }
        self.changed.notify_all();
    }

    /// Shuts both sockets down (the pumps' reads then end).
    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
        *self.state.lock().unwrap() = ConnState::Closed;
        self.changed.notify_all();
    }

    /// Waits (bounded) while a dropped reply is pending; returns the state.
    fn wait_resolved(&self, limit: Duration) -> ConnState {
        let st = self.state.lock().unwrap();
        let (st, _) = self
            .changed
            .wait_timeout_while(st, limit, |s| *s == ConnState::Dropping)
            .unwrap();
        *st
    }
}

struct ProxyShared {
    target: SocketAddr,
    armed: AtomicBool,
    down: AtomicBool,
    stop: AtomicBool,
    dropped: AtomicUsize,
    conns: Mutex<Vec<Arc<ProxyConn>>>,
}

impl ProxyShared {
    fn close_all(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.close();
        }
    }
}

/// Whether `bytes` hold a script call: a RESP bulk string `EVAL`,
/// `EVALSHA`, `EVAL_RO` or `EVALSHA_RO`, or an inline command starting with
/// one (case-insensitive).
fn is_script_call(bytes: &[u8]) -> bool {
    let upper = bytes.to_ascii_uppercase();
    let bulk = [
        &b"$4\r\nEVAL\r\n"[..],
        b"$7\r\nEVALSHA\r\n",
        b"$7\r\nEVAL_RO\r\n",
        b"$10\r\nEVALSHA_RO\r\n",
    ];
    let inline = upper.trim_ascii_start();
    bulk.iter()
        .any(|pat| upper.windows(pat.len()).any(|w| w == *pat))
        || inline.starts_with(b"EVAL ")
        || inline.starts_with(b"EVALSHA ")
}

/// A TCP proxy on 127.0.0.1 in front of a Redis: forwards bytes both ways,
/// and can swallow the reply to the next script call and reset the
/// connection (Redis applied the script, the client never hears of it), or
/// play an unreachable Redis.
pub struct DropReplyProxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
    acceptor: Option<JoinHandle<()>>,
}

impl DropReplyProxy {
    /// Starts a proxy in front of `target`.
    pub fn start(target: SocketAddr) -> DropReplyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy on 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking proxy listener");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(ProxyShared {
            target,
            armed: AtomicBool::new(false),
            down: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            dropped: AtomicUsize::new(0),
            conns: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || accept_loop(listener, shared))
        };
        DropReplyProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://127.0.0.1:P/` of the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// The Redis behind the proxy.
    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// Arms the one-shot: the next script call (`EVAL`/`EVALSHA`) on any
    /// connection goes to Redis, its reply is swallowed and the connection
    /// is shut down. A `-NOSCRIPT` reply is passed on and the shot stays
    /// armed (the script did not run), so a client's EVALSHA → SCRIPT LOAD /
    /// EVAL fallback loses the reply of the call that did run.
    pub fn arm_drop_next_script_reply(&self) {
        self.shared.armed.store(true, Ordering::SeqCst);
    }

    /// Whether the one-shot is still armed.
    pub fn is_armed(&self) -> bool {
        self.shared.armed.load(Ordering::SeqCst)
    }

    /// How many replies were swallowed so far.
    pub fn dropped(&self) -> usize {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Down: every open connection is shut down and new ones are accepted
    /// and closed at once. Up again: connections are proxied as before.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        if down {
            self.shared.close_all();
        }
    }

    /// Number of proxied connections still open.
    pub fn open_connections(&self) -> usize {
        self.shared
            .conns
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.state() != ConnState::Closed)
            .count()
    }
}

impl Drop for DropReplyProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.down.store(true, Ordering::SeqCst);
        self.shared.close_all();
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<ProxyShared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) => {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let _ = client.set_nonblocking(false);
        if shared.down.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&shared.target, CONNECT_TIMEOUT) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        ) else {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            continue;
        };
        let conn = Arc::new(ProxyConn {
            client,
            server,
            state: Mutex::new(ConnState::Open),
            changed: Condvar::new(),
        });
        {
            let mut conns = shared.conns.lock().unwrap();
            conns.retain(|c| c.state() != ConnState::Closed);
            conns.push(Arc::clone(&conn));
        }
        // set_down may have run between the check above and the push.
        if shared.down.load(Ordering::SeqCst) {
            conn.close();
            continue;
        }
        {
            let (conn, shared) = (Arc::clone(&conn), Arc::clone(&shared));
            thread::spawn(move || pump_up(c2, s2, &conn, &shared));
        }
        {
            let (conn, shared) = (Arc::clone(&conn), Arc::clone(&shared));
            thread::spawn(move || pump_down(s3, c3, &conn, &shared));
        }
    }
}

/// Client → Redis; spots the script call when armed.
fn pump_up(mut client: TcpStream, mut server: TcpStream, conn: &ProxyConn, shared: &ProxyShared) {
    let mut buf = vec![0u8; 16 * 1024];
    // The end of the previous read, so a command name split across reads is
    // still seen.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if conn.state() == ConnState::Closed {
            return;
        }
        let chunk = &buf[..n];
        let mut window = std::mem::take(&mut tail);
        window.extend_from_slice(chunk);
        let hit = is_script_call(&window) && shared.armed.swap(false, Ordering::SeqCst);
        if hit {
            // Before forwarding, so that the reply cannot overtake the mark.
            conn.set(ConnState::Dropping);
        } else {
            tail = window[window.len().saturating_sub(15)..].to_vec();
        }
        if server.write_all(chunk).is_err() {
            break;
        }
        if hit {
            match conn.wait_resolved(IO_TIMEOUT) {
                ConnState::Open => continue, // -NOSCRIPT, passed on
                ConnState::Closed => return,
                ConnState::Dropping => break, // Redis never answered
            }
        }
    }
    conn.close();
}

/// Redis → client; swallows the reply when a script call is pending.
fn pump_down(mut server: TcpStream, mut client: TcpStream, conn: &ProxyConn, shared: &ProxyShared) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        match conn.state() {
            ConnState::Closed => return,
            ConnState::Dropping if chunk.starts_with(b"-NOSCRIPT") => {
                // Re-armed before the client can see the error.
                shared.armed.store(true, Ordering::SeqCst);
                conn.set(ConnState::Open);
                if client.write_all(chunk).is_err() {
                    break;
                }
            }
            ConnState::Dropping => {
                shared.dropped.fetch_add(1, Ordering::SeqCst);
                conn.close();
                return;
            }
            ConnState::Open => {
                if client.write_all(chunk).is_err() {
                    break;
                }
            }
        }
    }
    conn.close();
}
