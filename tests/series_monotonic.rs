//! A daily series never dips across a flush: through the real binary, with
//! a short flush interval, beacons go in from one thread while another
//! reads `/series` (the site's and a page's) again and again; today's point
//! never goes down between two reads, and ends at every hit answered.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{BROWSER_UA, Server};
use serde_json::{Value, json};

const NO_LIMITS: &str = "[counting]\nrate_limit_per_second = 100000\nrate_limit_burst = 100000\nread_rate_limit_per_second = 100000\nread_rate_limit_burst = 100000\n";
/// How long the beacons and the reads go on.
const RUN: Duration = Duration::from_secs(8);
/// Most beacons sent (the run stops at whichever bound comes first).
const MAX_BEACONS: u64 = 20_000;

/// Today's hits in a series answer (its last point).
fn today_of(series: &Value) -> u64 {
    let points = series["points"]
        .as_array()
        .unwrap_or_else(|| panic!("no points: {series}"));
    points
        .last()
        .and_then(|p| p["hits"].as_u64())
        .unwrap_or_else(|| panic!("no hits in the last point: {series}"))
}

#[test]
fn a_daily_series_never_dips_across_a_flush() {
    // Flushes every 25 ms: many flushes land between a series' store read
    // and its look at this instance's pending days.
    let server = Arc::new(Server::start_with(
        NO_LIMITS,
        &[("LUOT_FLUSH_INTERVAL", "25ms")],
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let sender = {
        let (server, stop, answered) = (server.clone(), stop.clone(), answered.clone());
        thread::spawn(move || {
            let started = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < RUN && n < MAX_BEACONS {
                let beacon = json!({"site": "demo", "page": "/p", "vid": format!("v{}", n % 50)});
                let r = server.hit_as(&beacon, BROWSER_UA);
                assert!((200..300).contains(&r.status), "beacon {n}: {}", r.text());
                n += 1;
                answered.store(n, Ordering::Release);
            }
        })
    };
    let mut last = [0u64; 2];
    let mut reads = 0u64;
    let started = Instant::now();
    let paths = [
        "/api/v1/sites/demo/series",
        "/api/v1/sites/demo/series?page=/p",
    ];
    let mut dip = None;
    while started.elapsed() < RUN + Duration::from_secs(1) && !sender.is_finished() {
        for (i, path) in paths.iter().enumerate() {
            let r = server.get(path);
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            let now = today_of(&r.json());
            if now < last[i] {
                dip = Some((path, last[i], now, reads));
            }
            last[i] = now;
            reads += 1;
        }
        if dip.is_some() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    sender.join().expect("the beacon thread");
    assert!(
        dip.is_none(),
        "today's point dipped: {dip:?} (after {reads} reads)"
    );
    assert!(reads > 100, "too few reads to mean anything: {reads}");
    // Nothing lost or doubled either: both series end at every hit.
    let sent = answered.load(Ordering::Acquire);
    for path in paths {
        let got = today_of(&server.get(path).json());
        assert_eq!(got, sent, "{path} after {sent} answered beacons");
    }
}
