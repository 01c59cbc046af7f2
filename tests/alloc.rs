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

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use hyper::{Method, StatusCode, Uri};
use luot::bots::BotDetector;
use luot::config::Config;
use luot::http::{self, State};
use luot::metrics::{HitCounters, HttpMetrics};
use luot::period::day_number;
use luot::read::Reader;
use luot::sites::{SiteTable, Sites};
use luot::store::{AnyStore, EmbeddedStore};
use luot::visitor::Identity;

/// Counts allocations made by the thread that switched counting on.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every method forwards to the system allocator unchanged; the
// bookkeeping touches only an atomic and a const-initialised thread-local,
// neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
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
        trusted_proxies: Vec::new(),
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
        br#"{"site":"demo","page":"https://demo.example/news/a?utm_source=fb#top","ref":"https://www.google.com/","vid":"k3J9x_Qa-7"}"#,
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
    for _ in 0..3 {
        assert_eq!(hit().status(), StatusCode::NO_CONTENT);
        site.tally.take(&mut taken);
    }
    assert_eq!(hit().status(), StatusCode::NO_CONTENT);
    site.tally.take(&mut taken);
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
}

#[test]
fn the_counting_allocator_sees_allocations() {
    // The measurement above would be worthless if the counter could not
    // see anything: prove it counts.
    let (n, v) = allocations_in(|| vec![1u8; 64]);
    assert!(n >= 1, "{n}");
    drop(v);
}
