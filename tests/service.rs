//! Black-box tests of `luot serve`: the real binary, real sockets, the
//! contract of DESIGN §2, §5, §6 and §8.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Fate, HEALTHZ, Server, admitted, connect, encode, fate, int, metric_value, poll, read_response,
    send,
};
use serde_json::json;

/// A site that only accepts beacons from news.example, next to `demo`.
fn news_sites() -> String {
    common::demo_site(
        "\n[[sites]]\nid = \"news\"\ntimezone = \"Europe/Paris\"\n\
         origins = [\"https://news.example\"]\ninitial_total = 0\n",
    )
}

fn assert_error(reply: &common::Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "body: {}", reply.text());
    let body = reply.json();
    assert_eq!(body["error"], code, "body: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "an error carries a human message: {body}"
    );
}

#[test]
fn three_hundred_fifty_beacons_give_exact_figures_and_online() {
    let server = Server::start();
    // 330 beacons by POST from 40 visitors, written the ways pages send them.
    let post_pages = ["/p1", "https://host/p2?utm_source=x#top", "/p3/"];
    let mut expected = [0u64; 3];
    for i in 0..330usize {
        let which = i % 3;
        let page = if which == 1 && i % 2 == 1 {
            "/p2"
        } else {
            post_pages[which]
        };
        let vid = format!("visitor-{:02}", i % 40);
        let r = server.hit(&json!({"site": "demo", "page": page, "ref": "", "vid": vid}));
        assert_eq!(r.status, 200, "hit {i}: {}", r.text());
        expected[which] += 1;
    }
    // 20 pixel hits without a vid: same IP and User-Agent, one hashed visitor.
    let pixel_pages = ["/p1", "https://host/p2?utm_source=x#top", "/p3/"];
    for j in 0..20usize {
        let which = j % 3;
        let r = server.get(&format!(
            "/hit.gif?site=demo&page={}",
            encode(pixel_pages[which])
        ));
        assert_eq!(r.status, 200, "pixel {j}: {:?}", r.header("x-luot-error"));
        expected[which] += 1;
    }
    assert_eq!(expected.iter().sum::<u64>(), 350);

    let check = |when: &str| {
        let site = server.counters("demo", None);
        for key in ["total", "today", "week", "month"] {
            assert_eq!(int(&site, key), 350, "{when}: site {key} in {site}");
        }
        assert_eq!(int(&site, "yesterday"), 0, "{when}: {site}");
        assert_eq!(
            site["online"], 41,
            "{when}: 40 vids + 1 hashed visitor: {site}"
        );
        assert_eq!(site["site"], "demo");
        assert!(site["page"].is_null(), "{site}");
        for (which, path) in ["/p1", "/p2", "/p3"].iter().enumerate() {
            let page = server.counters("demo", Some(path));
            assert_eq!(page["page"], *path, "{page}");
            for key in ["total", "today", "week", "month"] {
                assert_eq!(
                    int(&page, key),
                    expected[which],
                    "{when}: page {path} {key} in {page}"
                );
            }
            assert_eq!(int(&page, "yesterday"), 0, "{when}: {page}");
            assert_eq!(
                page["online"], 41,
                "{when}: each page was read by the 40 vids + 1 hashed visitor: {page}"
            );
        }
    };
    // Readers see unflushed hits at once ...
    check("before the flush");
    // ... and the same figures once the store holds them.
    server.wait_flushed();
    check("after the flush");
    let site = server.counters("demo", None);
    assert_eq!(site["stale"], false, "{site}");
    let as_of = site["as_of"].as_str().expect("as_of is a string");
    assert!(
        as_of.ends_with("+07:00"),
        "as_of is RFC 3339 in the site's zone: {as_of}"
    );
}

#[test]
fn a_hit_answer_includes_itself_and_figures_never_dip_or_double_across_flushes() {
    const INITIAL: u64 = 500;
    let config = format!(
        r#"
[[sites]]
id = "live"
timezone = "Asia/Ho_Chi_Minh"
origins = ["*"]
initial_total = {INITIAL}
# One loopback client sends and reads as fast as it can here: not what the
# limits are for.
rate_limit_per_second = 1000000
rate_limit_burst = 1000000
read_rate_limit_per_second = 1000000
read_rate_limit_burst = 1000000
"#
    );
    let server = Arc::new(Server::start_with(&config, &[]));
    let started = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let run_for = Duration::from_secs(3);
    let max_hits_per_writer = 5_000;

    // What each writer and reader thread holds.
    let handles = || {
        (
            Arc::clone(&server),
            Arc::clone(&started),
            Arc::clone(&acked),
            Arc::clone(&stop),
        )
    };

    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (server, started, acked, stop) = handles();
            thread::spawn(move || {
                let mut sent = 0;
                while !stop.load(Ordering::SeqCst) && sent < max_hits_per_writer {
                    let before = acked.load(Ordering::SeqCst);
                    started.fetch_add(1, Ordering::SeqCst);
                    let r = server.hit(&json!({
                        "site": "live", "page": "/live", "vid": format!("w{w}-{}", sent % 10)
                    }));
                    assert_eq!(r.status, 200, "{}", r.text());
                    let after = started.load(Ordering::SeqCst);
                    acked.fetch_add(1, Ordering::SeqCst);
                    sent += 1;
                    let answer = r.json();
                    for (scope, extra) in [("site", INITIAL), ("page", 0)] {
                        let total = int(&answer[scope], "total");
                        assert!(
                            total > before + extra,
                            "the answer's {scope} total {total} misses the hit itself \
                             ({before} acknowledged before it was sent)"
                        );
                        assert!(
                            total <= after + extra,
                            "the answer's {scope} total {total} exceeds the {after} hits sent"
                        );
                    }
                }
                sent
            })
        })
        .collect();

    let readers: Vec<_> = [None, Some("/live")]
        .into_iter()
        .map(|page| {
            let (server, started, acked, stop) = handles();
            thread::spawn(move || {
                let extra = if page.is_none() { INITIAL } else { 0 };
                let mut last = 0;
                let mut reads = 0u32;
                while !stop.load(Ordering::SeqCst) && reads < 20_000 {
                    let floor = acked.load(Ordering::SeqCst);
                    let figures = server.counters("live", page);
                    let ceiling = started.load(Ordering::SeqCst);
                    let total = int(&figures, "total");
                    let scope = page.unwrap_or("site");
                    assert!(
                        total >= last,
                        "{scope} total dipped from {last} to {total}: {figures}"
                    );
                    assert!(
                        total >= floor + extra,
                        "{scope} total {total} misses acknowledged hits ({floor}): {figures}"
                    );
                    assert!(
                        total <= ceiling + extra,
                        "{scope} total {total} exceeds the {ceiling} hits sent: {figures}"
                    );
                    assert_eq!(
                        int(&figures, "today"),
                        total - extra,
                        "{scope} today follows the total: {figures}"
                    );
                    last = total;
                    reads += 1;
                }
                reads
            })
        })
        .collect();

    thread::sleep(run_for);
    stop.store(true, Ordering::SeqCst);
    let sent: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let reads: Vec<u32> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    assert_eq!(sent, acked.load(Ordering::SeqCst));
    assert!(sent > 20, "too few hits to span several flushes: {sent}");
    assert!(reads.iter().all(|&n| n > 5), "too few reads: {reads:?}");

    let site = server.counters("live", None);
    assert_eq!(int(&site, "total"), sent + INITIAL, "{site}");
    server.wait_flushed();
    let site = server.counters("live", None);
    assert_eq!(
        int(&site, "total"),
        sent + INITIAL,
        "after the flush: {site}"
    );
    assert_eq!(int(&site, "today"), sent, "{site}");
    let page = server.counters("live", Some("/live"));
    assert_eq!(int(&page, "total"), sent, "after the flush: {page}");
    assert_eq!(
        server.metric(r#"luot_hits_total{result="counted"}"#),
        Some(sent as f64)
    );
}

#[test]
fn refused_beacons_get_their_error_codes_and_count_nothing() {
    let server = Server::start_with(&news_sites(), &[]);
    let counted = || server.metric(r#"luot_hits_total{result="counted"}"#);
    let counted_before = counted();

    let r = server.hit(&json!({"site": "no-such-site", "page": "/a"}));
    assert_error(&r, 404, "unknown_site");

    let r = server.get("/hit.gif?site=no-such-site&page=/a");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-luot-error"), Some("unknown_site"));
    assert!(r.body.starts_with(b"GIF8"), "the pixel keeps its GIF body");

    let r = server.post(
        "/hit",
        &[("Content-Type", "text/plain")],
        br#"{"site": "demo", "page": "#,
    );
    assert_error(&r, 400, "malformed");

    let big = format!(
        r#"{{"site":"demo","page":"/big","ref":"{}"}}"#,
        "x".repeat(200 * 1024)
    );
    // Sent raw: the server may answer before reading the body, and close.
    for chunked in [false, true] {
        common::raw_post(
            server.public,
            "/hit",
            "application/json",
            "",
            big.clone().into_bytes(),
            chunked,
        )
        .unwrap_or_else(|| panic!("no answer to a 200 KB body (chunked: {chunked})"))
        .assert_error(&format!("chunked: {chunked}"), 413, "body_too_large");
    }
    // An ordinary client that writes the whole body before reading gets the
    // JSON 413 too (the server drains what it refuses, up to 1 MiB).
    let r = server.post("/hit", &[("Content-Type", "text/plain")], big.as_bytes());
    assert_error(&r, 413, "body_too_large");

    let r = server.post(
        "/hit",
        &[
            ("Content-Type", "text/plain"),
            ("Origin", "https://evil.example"),
        ],
        json!({"site": "news", "page": "/a"}).to_string().as_bytes(),
    );
    assert_error(&r, 403, "origin_not_allowed");

    let r = server.get("/no/such/route");
    assert_eq!(r.status, 404);
    assert_eq!(
        server.metric(r#"luot_hits_total{result="invalid"}"#),
        Some(4.0),
        "malformed + three oversized bodies"
    );

    // Attacker-chosen ids create nothing, anywhere.
    let ids: Vec<String> = (0..50).map(|i| format!("attacker-zq{i:04}")).collect();
    for id in &ids {
        let r = server.hit(&json!({"site": id, "page": "/x"}));
        assert_error(&r, 404, "unknown_site");
    }

    assert_eq!(counted(), counted_before, "refusals were counted");
    assert_eq!(
        server.metric(r#"luot_hits_total{result="unknown_site"}"#),
        Some(52.0)
    );
    assert_eq!(
        server.metric(r#"luot_hits_total{result="forbidden"}"#),
        Some(1.0)
    );
    for site in ["demo", "news"] {
        let f = server.counters(site, None);
        assert_eq!(int(&f, "total"), 0, "{f}");
        assert_eq!(f["online"], 0, "{f}");
    }
    for page in ["/a", "/big"] {
        assert_eq!(int(&server.counters("demo", Some(page)), "total"), 0);
        assert_eq!(int(&server.counters("news", Some(page)), "total"), 0);
    }

    server.wait_flushed();
    let metrics = server.metrics();
    for id in ids.iter().chain([&"no-such-site".to_string()]) {
        let r = server.get(&format!("/api/v1/sites/{id}/counters"));
        assert_error(&r, 404, "unknown_site");
        assert!(!metrics.contains(id.as_str()), "{id} appears in /metrics");
    }
    // Nor in the store: no file of the data directory holds the ids.
    let mut files = vec![server.data_dir().to_path_buf()];
    let mut scanned = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                files.push(entry.unwrap().path());
            }
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        scanned += 1;
        assert!(
            !bytes
                .windows(b"attacker-zq".len())
                .any(|w| w == b"attacker-zq"),
            "{} holds an unknown site id",
            path.display()
        );
    }
    assert!(scanned > 0, "the data directory is empty");

    // The allowed origin is counted and may read the answer.
    let r = server.post(
        "/hit",
        &[
            ("Content-Type", "text/plain"),
            ("Origin", "https://news.example"),
        ],
        json!({"site": "news", "page": "/a"}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://news.example")
    );
    assert_eq!(int(&r.json()["site"], "total"), 1);
    assert_eq!(counted(), Some(counted_before.unwrap_or(0.0) + 1.0));
}

#[test]
fn text_plain_and_application_json_beacons_both_count_and_quiet_gives_204() {
    let server = Server::start();
    let beacon = json!({"site": "demo", "page": "/a", "ref": "", "vid": "abc"}).to_string();

    let r = server.post("/hit", &[("Content-Type", "text/plain")], beacon.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(int(&r.json()["site"], "total"), 1);

    let r = server.post(
        "/hit",
        &[("Content-Type", "application/json")],
        beacon.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert_eq!(int(&answer["site"], "total"), 2, "{answer}");
    assert_eq!(int(&answer["page"], "total"), 2, "{answer}");
    assert_eq!(answer["site"]["site"], "demo");
    assert!(answer["site"]["page"].is_null());
    assert_eq!(answer["page"]["page"], "/a");
    assert!(
        r.header("cache-control")
            .is_some_and(|v| v.contains("no-store")),
        "{:?}",
        r.headers
    );

    let r = server.post(
        "/hit?quiet=1",
        &[("Content-Type", "text/plain")],
        beacon.as_bytes(),
    );
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());

    assert_eq!(int(&server.counters("demo", None), "total"), 3);
    assert_eq!(int(&server.counters("demo", Some("/a")), "total"), 3);
    assert_eq!(
        server.metric(r#"luot_hits_total{result="counted"}"#),
        Some(3.0)
    );
}

#[test]
fn a_full_page_url_is_counted_as_its_path_without_query_fragment_or_trailing_slash() {
    let server = Server::start();
    let r = server.hit(&json!({"site": "demo", "page": "https://x/a/?utm_source=fb#top"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["page"]["page"], "/a");
    server.hit(&json!({"site": "demo", "page": "/a"}));
    server.hit(&json!({"site": "demo", "page": "/a/"}));
    let page = server.counters("demo", Some("/a"));
    assert_eq!(int(&page, "total"), 3, "{page}");
    let root = server.counters("demo", Some("/"));
    assert_eq!(int(&root, "total"), 0, "a page never seen has zero: {root}");
}

#[test]
fn initial_total_is_added_to_the_site_total_only() {
    let config = r#"
[[sites]]
id = "old"
timezone = "Asia/Ho_Chi_Minh"
origins = ["*"]
initial_total = 9356665
"#;
    let server = Server::start_with(config, &[]);
    let site = server.counters("old", None);
    assert_eq!(int(&site, "total"), 9_356_665, "{site}");
    assert_eq!(int(&site, "today"), 0, "{site}");
    for _ in 0..3 {
        let r = server.hit(&json!({"site": "old", "page": "/"}));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    server.wait_flushed();
    let site = server.counters("old", None);
    assert_eq!(int(&site, "total"), 9_356_668, "{site}");
    for key in ["today", "week", "month"] {
        assert_eq!(int(&site, key), 3, "{key} in {site}");
    }
    let page = server.counters("old", Some("/"));
    assert_eq!(
        int(&page, "total"),
        3,
        "a page's total has no carry-over: {page}"
    );
    // The built-in `demo` is replaced by the declared sites.
    assert_eq!(server.get("/api/v1/sites/demo/counters").status, 404);
}

#[test]
fn figures_survive_a_sigterm_restart_on_the_same_data_dir() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut first = Server::start_in(dir.path(), "", &[]);
    for i in 0..25 {
        let page = if i % 2 == 0 { "/even" } else { "/odd" };
        let r = first.hit(&json!({"site": "demo", "page": page, "vid": format!("v{i}")}));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // No wait for a flush: SIGTERM must flush what is pending.
    let status = first.terminate();
    assert!(status.success(), "exit status {status:?}:\n{}", first.log());
    drop(first);

    let second = Server::start_in(dir.path(), "", &[]);
    let site = second.counters("demo", None);
    assert_eq!(int(&site, "total"), 25, "{site}");
    assert_eq!(int(&site, "today"), 25, "{site}");
    assert_eq!(int(&second.counters("demo", Some("/even")), "total"), 13);
    assert_eq!(int(&second.counters("demo", Some("/odd")), "total"), 12);
    // And it keeps counting from there.
    let r = second.hit(&json!({"site": "demo", "page": "/even"}));
    assert_eq!(int(&r.json()["site"], "total"), 26);
    assert_eq!(int(&r.json()["page"], "total"), 14);
}

/// An idle keep-alive connection does not hold a stopping server until its
/// idle timeout or the grace period: it is closed, and the server exits.
#[test]
fn sigterm_closes_idle_keep_alive_connections_at_once() {
    let mut server = Server::start_with(
        "[server]\nshutdown_grace = \"60s\"\n[limits]\nidle_timeout = \"60s\"\n",
        &[],
    );
    let mut held = admitted(server.public, Duration::from_secs(20));
    let began = Instant::now();
    let status = server.terminate();
    assert!(
        status.success(),
        "exit status {status:?}:\n{}",
        server.log()
    );
    let took = began.elapsed();
    assert!(took < Duration::from_secs(20), "exited after {took:?}");
    assert_eq!(fate(&mut held), Fate::Closed, "the held connection");
}

#[test]
fn a_second_process_on_a_locked_data_dir_exits_non_zero() {
    let server = Server::start();
    let (status, stderr) = common::run_expecting_exit(server.data_dir(), Duration::from_secs(30));
    assert!(!status.success(), "second process exited {status:?}");
    assert!(stderr.contains("in use"), "stderr: {stderr}");
    // The first one is unharmed.
    assert_eq!(server.get("/healthz").status, 200);
    let r = server.hit(&json!({"site": "demo", "page": "/"}));
    assert_eq!(r.status, 200);
}

#[test]
fn metrics_on_the_admin_listener_report_hits_requests_flushes_and_build_info() {
    let server = Server::start();
    for i in 0..7 {
        let r = server.hit(&json!({"site": "demo", "page": format!("/m{i}")}));
        assert_eq!(r.status, 200);
    }
    for _ in 0..2 {
        server.hit(&json!({"site": "nope", "page": "/"}));
    }
    server.get("/hit.gif?site=demo&page=/pixel");
    server.wait_flushed();
    let text = server.metrics();
    let value = |series: &str| {
        metric_value(&text, series).unwrap_or_else(|| panic!("{series} missing:\n{text}"))
    };
    assert_eq!(value(r#"luot_hits_total{result="counted"}"#), 8.0);
    assert_eq!(value(r#"luot_hits_total{result="unknown_site"}"#), 2.0);
    assert_eq!(
        value(r#"luot_http_requests_total{route="hit",status="200"}"#),
        7.0
    );
    assert_eq!(
        value(r#"luot_http_requests_total{route="hit",status="404"}"#),
        2.0
    );
    assert_eq!(
        value(r#"luot_http_requests_total{route="hit_gif",status="200"}"#),
        1.0
    );
    // Every applied batch is timed, and applying one takes some time, less
    // than the largest bucket.
    let batches = value("luot_flush_duration_seconds_count");
    assert!(batches >= 1.0, "{text}");
    assert_eq!(
        value(r#"luot_flush_duration_seconds_bucket{le="+Inf"}"#),
        batches
    );
    let seconds = value("luot_flush_duration_seconds_sum");
    assert!(
        seconds > 0.0 && seconds < batches * 10.0,
        "{batches} batches took {seconds} s:\n{text}"
    );
    // The batches carried the eight pages, each once, with four increments
    // each (day, week, month, total), and the site's four in every batch
    // that carried hits (a batch of visitors only carries none).
    assert_eq!(value("luot_flush_batch_keys_count"), batches);
    let keys = value("luot_flush_batch_keys_sum");
    assert!(
        keys >= 36.0 && keys <= 32.0 + 4.0 * batches && (keys - 32.0) % 4.0 == 0.0,
        "{keys} increments in {batches} batches:\n{text}"
    );
    assert!(value("luot_flush_passes_total") >= 1.0, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("luot_build_info{") && l.ends_with(" 1")),
        "{text}"
    );
    assert!(text.contains(r#"store="embedded""#), "{text}");
    assert!(text.contains("# TYPE luot_hits_total counter"), "{text}");
    // Every metric sample is luot's own.
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        assert!(line.starts_with("luot_"), "foreign metric: {line}");
    }
    // Metrics live on the admin listener only.
    assert_eq!(server.get("/metrics").status, 404);
}

#[test]
fn healthz_and_readyz_answer_200() {
    let server = Server::start();
    assert_eq!(server.get("/healthz").status, 200);
    let r = server.get("/readyz");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(server.admin_get("/healthz").status, 200);
}

#[test]
fn do_not_track_hits_count_but_add_no_online_visitor() {
    let server = Server::start();
    for header in ["DNT", "Sec-GPC"] {
        let r = server.post(
            "/hit",
            &[("Content-Type", "text/plain"), (header, "1")],
            json!({"site": "demo", "page": "/private"})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let site = server.counters("demo", None);
    assert_eq!(int(&site, "total"), 2, "{site}");
    assert_eq!(site["online"], 0, "{site}");
    // A vid outside the allowed alphabet falls back to the hashed visitor:
    // two such hits from one client are one visitor.
    for vid in ["not a vid!", "x".repeat(65).as_str()] {
        server.hit(&json!({"site": "demo", "page": "/", "vid": vid}));
    }
    let site = server.counters("demo", None);
    assert_eq!(int(&site, "total"), 4, "{site}");
    assert_eq!(site["online"], 1, "{site}");
}

#[test]
fn the_pixel_answers_a_no_store_gif_and_names_errors_in_a_header() {
    let server = Server::start();
    let r = server.get("/hit.gif?site=demo&page=/from-img&vid=pix");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/gif"));
    assert!(
        r.header("cache-control")
            .is_some_and(|v| v.contains("no-store")),
        "{:?}",
        r.headers
    );
    assert!(r.body.starts_with(b"GIF89a") && r.body.len() < 100);
    assert!(r.header("x-luot-error").is_none());
    assert_eq!(int(&server.counters("demo", Some("/from-img")), "total"), 1);

    let r = server.get("/hit.gif?site=elsewhere&page=/from-img");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-luot-error"), Some("unknown_site"));
    assert_eq!(r.header("content-type"), Some("image/gif"));
    assert!(
        r.header("cache-control")
            .is_some_and(|v| v.contains("no-store"))
    );
    assert!(r.body.starts_with(b"GIF89a"));
    assert_eq!(int(&server.counters("demo", None), "total"), 1);
}

// ---- HTTP limits ----

#[test]
fn a_stalled_partial_header_is_disconnected_after_the_header_timeout() {
    let server = Server::start_with("[limits]\nheader_read_timeout = \"1s\"\n", &[]);
    let mut s = connect(server.public, Duration::from_secs(10));
    let began = Instant::now();
    send(
        &mut s,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
    )
    .unwrap();
    // The server may answer (e.g. 408) before closing; read to the end.
    let mut outcome = fate(&mut s);
    let mut rounds = 0;
    while let Fate::Data(_) = outcome {
        rounds += 1;
        assert!(rounds < 100 && began.elapsed() < Duration::from_secs(10));
        outcome = fate(&mut s);
    }
    let waited = began.elapsed();
    assert_eq!(outcome, Fate::Closed, "still open after {waited:?}");
    assert!(
        waited >= Duration::from_millis(800),
        "closed too early: {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "closed late: {waited:?}");
}

/// DESIGN §6: the request timeout bounds a request whose body stalls: the
/// client gets a 408 with the JSON error body.
#[test]
fn a_stalled_body_gets_408_after_the_request_timeout() {
    let server = Server::start_with(
        "[limits]\nrequest_timeout = \"1s\"\nidle_timeout = \"60s\"\n",
        &[],
    );
    let mut s = connect(server.public, Duration::from_secs(10));
    let began = Instant::now();
    send(
        &mut s,
        b"POST /hit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"site\":",
    )
    .unwrap();
    read_response(&mut s)
        .expect("an answer to the stalled body")
        .assert_error("a stalled body", 408, "request_timeout");
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(10),
        "answered after {waited:?}"
    );
    // Other requests are still answered.
    assert_eq!(server.get("/healthz").status, 200);
}

#[test]
fn a_nine_kilobyte_header_gets_431() {
    let server = Server::start();
    let mut s = connect(server.public, Duration::from_secs(10));
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9 * 1024)
    );
    // The server may close while we still write; what it answered counts.
    let _ = send(&mut s, request.as_bytes());
    read_response(&mut s)
        .expect("an answer before the close")
        .assert_error("a 9 KB header", 431, "headers_too_large");
    // A normal request still works.
    assert_eq!(server.get("/healthz").status, 200);
}

#[test]
fn a_third_connection_over_a_cap_of_two_gets_503_overloaded() {
    let server = Server::start_with("[limits]\nmax_connections = 2\n", &[]);
    // Two keep-alive connections, each proven accepted by an answer.
    let mut held: Vec<_> = (0..2)
        .map(|_| admitted(server.public, Duration::from_secs(10)))
        .collect();
    let mut third = connect(server.public, Duration::from_secs(10));
    let _ = send(&mut third, HEALTHZ);
    read_response(&mut third)
        .expect("a 503 before the close")
        .assert_error("the third connection", 503, "overloaded");
    assert_eq!(
        fate(&mut third),
        Fate::Closed,
        "the refused socket is closed"
    );

    // The held connections still work; once one closes, a new one is let in.
    send(&mut held[0], HEALTHZ).unwrap();
    assert_eq!(read_response(&mut held[0]).expect("answer").status, 200);
    drop(held.pop());
    let let_in = poll(Duration::from_secs(10), || {
        let mut s = connect(server.public, Duration::from_secs(10));
        send(&mut s, HEALTHZ).ok()?;
        (read_response(&mut s)?.status == 200).then_some(())
    });
    assert!(let_in.is_some(), "no connection admitted after one closed");
    let refused = metric_value(&server.metrics(), "luot_http_connections_refused_total");
    assert!(refused.is_some_and(|n| n >= 1.0), "{refused:?}");
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = Server::start_with("[limits]\nidle_timeout = \"2s\"\n", &[]);
    let mut s = admitted(server.public, Duration::from_secs(10));
    let idle_since = Instant::now();
    // Not before ~1 s ...
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    assert_eq!(fate(&mut s), Fate::Open, "closed before 1 s of idleness");
    // ... but well within 10 s.
    s.set_read_timeout(Some(Duration::from_secs(9))).unwrap();
    assert_eq!(fate(&mut s), Fate::Closed, "still open after 10 s idle");
    let idle = idle_since.elapsed();
    assert!(
        idle >= Duration::from_millis(1500) && idle < Duration::from_secs(10),
        "closed after {idle:?}"
    );
}

#[test]
fn more_than_sixty_four_header_fields_get_431() {
    let server = Server::start();
    let fields = |n: usize| -> String {
        let extra: String = (0..n).map(|i| format!("X-Field-{i}: v\r\n")).collect();
        format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n")
    };
    let mut s = connect(server.public, Duration::from_secs(10));
    send(&mut s, fields(60).as_bytes()).unwrap();
    assert_eq!(
        read_response(&mut s).expect("answer").status,
        200,
        "61 fields"
    );
    let mut s = connect(server.public, Duration::from_secs(10));
    let _ = send(&mut s, fields(70).as_bytes());
    read_response(&mut s)
        .expect("an answer before the close")
        .assert_error("71 fields", 431, "headers_too_large");
}

/// DESIGN §6: the header read timeout protects against slowloris, also
/// against a client that connects and sends nothing at all.
#[test]
fn a_silent_new_connection_is_closed_after_the_header_timeout() {
    let server = Server::start_with(
        "[limits]\nheader_read_timeout = \"1s\"\nidle_timeout = \"60s\"\n",
        &[],
    );
    let mut s = connect(server.public, Duration::from_secs(10));
    let began = Instant::now();
    assert_eq!(
        fate(&mut s),
        Fate::Closed,
        "a connection that sent nothing was still open after {:?}",
        began.elapsed()
    );
}

#[test]
fn a_pages_kept_reading_outlives_batches_without_its_hits() {
    // Every answer with figures needs the page's store reading; once kept,
    // a batch that carried only other pages' hits (or none) must not send
    // the next answer back to the store.
    let server = Server::start();
    let reads = |reason: &str| {
        server.metric_or_zero(&format!("luot_page_reads_total{{reason=\"{reason}\"}}"))
    };
    let answer = |page: &str| {
        let r = server.hit(&json!({"site": "demo", "page": page}));
        assert_eq!(r.status, 200, "{}", r.text());
        int(&r.json()["page"], "total")
    };
    let first = reads("first");
    assert_eq!(answer("/kept"), 1);
    assert_eq!(
        reads("first"),
        first + 1.0,
        "the first answer read the page"
    );
    server.wait_flushed();
    let (first, behind) = (reads("first"), reads("behind"));
    // Batches with only /other's hits leave memory, several flushes' worth.
    for _ in 0..5 {
        answer("/other");
        server.wait_flushed();
    }
    assert_eq!(
        reads("first") + reads("behind"),
        first + behind + 1.0,
        "/other read once"
    );
    assert_eq!(answer("/kept"), 2, "exact without the store");
    assert_eq!(
        reads("behind"),
        behind,
        "the kept reading was still complete"
    );
    assert_eq!(reads("first"), first + 1.0, "and still kept");
    server.wait_flushed();
    assert_eq!(server.total("demo", Some("/kept")), 2);
}
