//! Counting a page view allocates nothing.
//!
//! A counting global allocator watches the hot path of a quiet beacon —
//! from the request's parts (method, URI, headers, body bytes) through
//! parsing, classifying (origin, rate limit, bot, page, visitor) and the
//! atomic add on the pending delta, to the `204` answer — for a page, a
//! visitor and a client that luot already knows. hyper's own work (reading
//! the socket, writing the answer) is outside the measured span.
//!
//! The only allocations the hot path may ever make are once a minute (a new
//! visitor bucket) and once a day (a new day window); an attempt that
//! crosses a minute boundary is retried, and that is the only retry.
//!
//! Then the whole request through the server: `app::run` on a thread of
//! its own, a keep-alive client on another, and every allocation the
//! server's runtime threads make (hyper reading and writing, routing,
//! metrics, the handler) counted per request in steady state, for the quiet
//! beacon, `GET /hit.gif` and the answering `POST /hit`. The flusher and
//! the upkeep thread run on threads of their own and are not counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use hyper::{Method, StatusCode, Uri};
use luot::config::Config;
use luot::count::visitor::Identity;
use luot::http::{self, State};
use luot::ingest::bots::BotDetector;
use luot::metrics::{HitCounters, HttpMetrics};
use luot::period::day_number;
use luot::read::Reader;
use luot::site::{SiteTable, Sites};
use luot::store::{AnyStore, EmbeddedStore};

/// Counts allocations made by the thread that switched counting on.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
/// Allocations by the server's runtime threads while [`MEASURING`].
static SERVER_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static MEASURING: AtomicBool = AtomicBool::new(false);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Set on the threads of the in-process server's runtime.
    static SERVER_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Counts one allocation where it belongs.
fn note_allocation() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
    if SERVER_THREAD.with(Cell::get) && MEASURING.load(Ordering::Relaxed) {
        SERVER_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to the system allocator unchanged; the
// bookkeeping touches only an atomic and a const-initialised thread-local,
// neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded with the caller's arguments.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations_in<T>(f: impl FnOnce() -> T) -> (usize, T) {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (ALLOCATIONS.load(Ordering::SeqCst), out)
}

fn state(dir: &std::path::Path) -> State {
    let config = Config::from_toml_str("").expect("default config");
    let store = AnyStore::Embedded(EmbeddedStore::open(dir).expect("store"));
    let sites = Arc::new(Sites::new(SiteTable::new(&config, |_| 1)));
    let identity = Arc::new(Identity::new(&[7; 32]));
    let today = {
        let table = sites.load();
        let demo = table.get("demo").expect("demo site");
        day_number(demo.calendar().day_of(jiff::Timestamp::now()))
    };
    identity.install_salts(&[(today - 1, [1; 32]), (today, [2; 32]), (today + 1, [3; 32])]);
    State {
        sites,
        identity,
        store: store.clone(),
        reader: Reader::new(store, Arc::from("test")),
        counters: HitCounters::new(),
        http_metrics: HttpMetrics::new(),
        bots: BotDetector::new().expect("bot list"),
        classifier: luot::ingest::classify::Classifier::new().expect("source list"),
        listing_answers: Default::default(),
        trusted_proxies: Vec::new(),
        country_header: None,
        max_body_bytes: 8192,
        max_header_bytes: 8192,
        max_headers: 64,
        metrics_token: None,
        imports: None,
        prometheus: luot::metrics::install(),
        ready: AtomicBool::new(true),
    }
}

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                      (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

#[test]
fn a_quiet_beacon_for_a_known_page_and_visitor_allocates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let method = Method::POST;
    let uri: Uri = "/hit?quiet=1".parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(USER_AGENT, HeaderValue::from_static(CHROME));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain;charset=UTF-8"),
    );
    let body = Bytes::from_static(
        // A snippet's beacon, with the title every view of the page repeats.
        r#"{"site":"demo","page":"https://demo.example/news/a?utm_source=fb#top","ref":"https://www.google.com/","vid":"k3J9x_Qa-7","title":"Tin nóng hôm nay"}"#
            .as_bytes(),
    );
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let site = Arc::clone(state.sites.load().get("demo").unwrap());

    let hit = || {
        assert_eq!(method, Method::POST);
        assert!(http::is_quiet(&uri));
        http::quiet_beacon(&state, &headers, &body, peer).expect("counted")
    };
    // Warm up: the page, the client's limiter state, the bot verdict cache,
    // this thread's page buffer, and two flushes so both halves of the
    // tally's dirty list have their capacity.
    let mut taken = Vec::new();
    let mut dims = Vec::new();
    let today = site.clock.day_at(jiff::Timestamp::now().as_second());
    for _ in 0..3 {
        assert_eq!(hit().status(), StatusCode::NO_CONTENT);
        site.tally.take(&mut taken);
        site.breakdown.take(today, &mut dims);
    }
    assert_eq!(hit().status(), StatusCode::NO_CONTENT);
    site.tally.take(&mut taken);
    site.breakdown.take(today, &mut dims);
    // Classified and counted in every dimension: the referrer is Google's,
    // the campaign's source `fb`.
    let value_hits = |dimension: &str, value: &str| -> u64 {
        dims.iter()
            .filter(|d| d.page.is_none() && d.dimension.as_str() == dimension && &*d.value == value)
            .map(|d| d.hits)
            .sum()
    };
    assert_eq!(value_hits("source", "Google"), 4, "{dims:?}");
    assert_eq!(value_hits("utm_source", "fb"), 4, "{dims:?}");
    assert_eq!(value_hits("browser", "Chrome"), 4, "{dims:?}");
    let counted_before: u64 = taken
        .iter()
        .filter(|d| d.page.is_none())
        .map(|d| d.hits)
        .sum();
    assert_eq!(counted_before, 4, "the warm-up hits were counted");

    for attempt in 0..3 {
        let minute = jiff::Timestamp::now().as_second() / 60;
        // The first hit after a flush (queues the page as dirty) and a
        // second one (the plainest case).
        let (first, r1) = allocations_in(hit);
        let (second, r2) = allocations_in(hit);
        let crossed = jiff::Timestamp::now().as_second() / 60 != minute;
        if crossed && attempt < 2 {
            continue;
        }
        assert_eq!(r1.status(), StatusCode::NO_CONTENT);
        assert_eq!(r2.status(), StatusCode::NO_CONTENT);
        assert!(r1.headers().is_empty(), "no header without an Origin");
        assert_eq!(first, 0, "allocations counting the first hit after a flush");
        assert_eq!(second, 0, "allocations counting a repeat hit");
        break;
    }
    let mut after = Vec::new();
    site.tally.take(&mut after);
    let counted: u64 = after
        .iter()
        .filter(|d| d.page.is_none())
        .map(|d| d.hits)
        .sum();
    assert!(counted >= 2, "the measured hits were counted ({counted})");
    assert!(
        after.iter().any(|d| d.page.as_deref() == Some("/news/a")),
        "counted on the normalised page"
    );
    // The measured hits also reached the page's readers now.
    assert_eq!(
        site.page_online
            .count("/news/a", jiff::Timestamp::now().as_second()),
        1,
        "the page's online counts its one reader"
    );
}

/// Classifying a hit (issue 24's dimensions) allocates nothing, for known
/// values and unknown ones alike, on a User-Agent cache miss or hit.
#[test]
fn classifying_a_hit_allocates_nothing() {
    use luot::ingest::classify::{Classifier, ClientHints, Hit};
    let classifier = Classifier::new().expect("shipped sources");
    let site = ["news.example"];
    let hits = [
        Hit {
            page: "/a?utm_source=fb",
            referrer: Some("https://l.facebook.com/l.php?u=x"),
            user_agent: b"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
            hints: ClientHints {
                ua: Some(br#""Chromium";v="131", "Google Chrome";v="131""#),
                mobile: Some(b"?1"),
                platform: Some(br#""Android""#),
            },
        },
        Hit {
            page: "/a?utm_source=Partner&utm_medium=E%2DMail&utm_campaign=T%E1%BA%BFt+2027",
            referrer: Some("https://WWW.Unknown-Site.example/path?q=1"),
            user_agent: b"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Zalo iOS/638 ZaloTheme/light ZaloLanguage/vn",
            hints: ClientHints::default(),
        },
        Hit {
            page: "/a",
            referrer: Some("android-app://com.google.android.googlequicksearchbox/"),
            user_agent: b"something unknown/1.0",
            hints: ClientHints::default(),
        },
    ];
    for hit in &hits {
        // The first call misses the User-Agent cache, the second hits it.
        for round in ["miss", "hit"] {
            let (n, d) = allocations_in(|| classifier.classify(hit, &site));
            assert_eq!(n, 0, "{round}: {hit:?} -> {d:?}");
        }
    }
}

/// Finding a hit's country allocates nothing: from a trusted proxy's
/// header, from the registry data for IPv4 and IPv6, for special ranges.
#[test]
fn finding_a_country_allocates_nothing() {
    use luot::ingest::classify::country;
    for (header, ip) in [
        (Some("vn"), "8.8.8.8"),
        (Some("XX"), "8.8.8.8"),
        (Some("garbage"), "14.160.0.1"),
        (None, "8.8.8.8"),
        (None, "2402:800::1"),
        (None, "::ffff:193.99.144.80"),
        (None, "10.0.0.1"),
        (None, "2001:db8::1"),
    ] {
        let ip = ip.parse().expect("an address");
        let (n, c) = allocations_in(|| country(header, ip));
        assert_eq!(n, 0, "{header:?} {ip} -> {c}");
    }
}

#[test]
fn the_counting_allocator_sees_allocations() {
    // The measurement above would be worthless if the counter could not
    // see anything: prove it counts.
    let (n, v) = allocations_in(|| vec![1u8; 64]);
    assert!(n >= 1, "{n}");
    drop(v);
}

// ---- the whole request, through the server ----

/// Most allocations per request, in steady state, that a whole request may
/// make through the server. luot's own part of a quiet beacon allocates
/// nothing (the test above); what remains is hyper 1's HTTP/1 connection,
/// which allocates for every request: the buffer the head is split off
/// into, the request's `HeaderMap` (two), the body channel, the write
/// buffer; and the latency histogram, which takes a new block of samples
/// now and then (~0.02 a request). Measured when these bounds were set
/// (debug build, loopback): quiet beacon 5.02, `GET /hit.gif` 5.02 (no
/// body channel; one percent-decoded page, the answer's two-part
/// `HeaderMap`), answering `POST /hit` 8.02 (the JSON answer's body and
/// headers). Each bound is just above, so one more allocation per request
/// anywhere on the path fails.
const QUIET_BOUND: f64 = 5.1;
const GIF_BOUND: f64 = 5.1;
const ANSWER_BOUND: f64 = 8.1;

/// The in-process server: its public address, and what stops it.
struct InProcess {
    public: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    /// Runs `app::run` on a current-thread runtime whose threads (the one
    /// that drives it and its blocking pool) are marked as the server's.
    fn start(dir: &std::path::Path) -> InProcess {
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             data_dir = {:?}\nflush_interval = \"200ms\"\n\
             [counting]\nrate_limit_per_second = 1000000\nrate_limit_burst = 1000000\n",
            dir.display().to_string()
        );
        let config = Config::from_toml_str(&toml).expect("the test's config");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (bound_tx, bound_rx) = mpsc::channel();
        let bound_tx = Mutex::new(Some(bound_tx));
        let thread = std::thread::spawn(move || {
            SERVER_THREAD.with(|c| c.set(true));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_start(|| SERVER_THREAD.with(|c| c.set(true)))
                .build()
                .expect("a runtime");
            let stopped = runtime.block_on(luot::app::run(
                config,
                async {
                    let _ = stop_rx.await;
                },
                move |bound| {
                    if let Some(tx) = bound_tx.lock().unwrap().take() {
                        let _ = tx.send(bound.public);
                    }
                },
            ));
            stopped.expect("the server ran");
        });
        let public = bound_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server listens within 60 s");
        InProcess {
            public,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes `request` and reads one whole answer (head and a
/// `Content-Length` body) off a keep-alive connection; returns the status.
fn exchange(s: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> u16 {
    s.write_all(request).expect("send the request");
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).expect("read the answer");
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).expect("read the body");
        assert!(n > 0, "the server closed the connection mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    status
}

/// Allocations per request the server's threads make answering `request`
/// over one keep-alive connection, after a warm-up of at least a second
/// (several flushes, so the tally's dirty lists have their capacity). A
/// measurement that crosses a minute boundary (a new visitor bucket) is
/// taken again, at most twice.
fn allocations_per_request(server: &InProcess, request: &[u8], status: u16) -> f64 {
    const MEASURED: usize = 2_000;
    let mut s = TcpStream::connect_timeout(&server.public, Duration::from_secs(5))
        .expect("connect to the server");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = Vec::with_capacity(16 * 1024);
    let warm = std::time::Instant::now();
    for i in 0..100_000 {
        assert_eq!(exchange(&mut s, request, &mut buf), status, "warm-up");
        if i >= 200 && warm.elapsed() >= Duration::from_millis(1200) {
            break;
        }
    }
    let mut per_request = f64::NAN;
    for attempt in 0..3 {
        let minute = jiff::Timestamp::now().as_second() / 60;
        SERVER_ALLOCATIONS.store(0, Ordering::SeqCst);
        MEASURING.store(true, Ordering::SeqCst);
        for _ in 0..MEASURED {
            assert_eq!(exchange(&mut s, request, &mut buf), status);
        }
        MEASURING.store(false, Ordering::SeqCst);
        per_request = SERVER_ALLOCATIONS.load(Ordering::SeqCst) as f64 / MEASURED as f64;
        let crossed = jiff::Timestamp::now().as_second() / 60 != minute;
        if !(crossed && attempt < 2) {
            break;
        }
    }
    per_request
}

/// A request with the beacon body a snippet sends.
fn beacon_request(target: &str) -> Vec<u8> {
    let body = r#"{"site":"demo","page":"https://demo.example/news/a?utm_source=fb#top","ref":"https://www.google.com/","vid":"k3J9x_Qa-7"}"#;
    format!(
        "POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {CHROME}\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn whole_beacon_requests_through_the_server_allocate_within_their_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(dir.path());
    let quiet = allocations_per_request(&server, &beacon_request("/hit?quiet=1"), 204);
    let gif_request = format!(
        "GET /hit.gif?site=demo&page=%2Fnews%2Fb&vid=k3J9x_Qa-7 HTTP/1.1\r\n\
         Host: 127.0.0.1\r\nUser-Agent: {CHROME}\r\n\r\n"
    );
    let gif = allocations_per_request(&server, gif_request.as_bytes(), 200);
    let answer = allocations_per_request(&server, &beacon_request("/hit"), 200);
    eprintln!(
        "allocations per request through the server: quiet beacon {quiet:.3}, \
         GET /hit.gif {gif:.3}, answering POST /hit {answer:.3}"
    );
    assert!(
        quiet <= QUIET_BOUND,
        "a quiet beacon allocates {quiet:.3} times per request (bound {QUIET_BOUND})"
    );
    assert!(
        gif <= GIF_BOUND,
        "GET /hit.gif allocates {gif:.3} times per request (bound {GIF_BOUND})"
    );
    assert!(
        answer <= ANSWER_BOUND,
        "an answering beacon allocates {answer:.3} times per request (bound {ANSWER_BOUND})"
    );
}
