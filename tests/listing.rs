//! Issue 25's listing pages and record day, through the real binary on
//! both stores: `GET /api/v1/sites/{site}/pages` (order, normalisation,
//! titles, every refusal, zeros without a store read, CORS and AMP, the
//! read limit, a private site's token) and the site's `record` (raised by
//! today's hits and by an imported history).
//!
//! "Today" is the site's local day (Asia/Ho_Chi_Minh); a run that
//! straddles local midnight may fail.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::redis::RedisServer;
use common::{BROWSER_UA, Reply, Server, poll};
use jiff::civil::Date;
use jiff::{Span, Timestamp};
use serde_json::{Value, json};

/// Every request of a test comes from 127.0.0.1: no rate limit in the way.
const NO_LIMITS: &str = "[counting]\nrate_limit_per_second = 100000\nrate_limit_burst = 100000\n\
     read_rate_limit_per_second = 100000\nread_rate_limit_burst = 100000\n";
const ZONE: &str = "Asia/Ho_Chi_Minh";
const SETTLE: Duration = Duration::from_secs(20);

fn today() -> Date {
    Timestamp::now().in_tz(ZONE).expect("the zone").date()
}

fn hit(server: &Server, page: &str) {
    let r = server.hit_as(&json!({"site": "demo", "page": page}), BROWSER_UA);
    assert_eq!(r.status, 200, "hit {page}: {}", r.text());
}

fn pages(server: &Server, query: &str) -> Reply {
    server.get(&format!("/api/v1/sites/demo/pages?{query}"))
}

fn store_reads(server: &Server) -> f64 {
    server.metric_or_zero(r#"luot_store_reads_total{route="pages"}"#)
}

/// (page, total) of each entry, in order.
fn totals(body: &Value) -> Vec<(String, u64)> {
    body["pages"]
        .as_array()
        .unwrap_or_else(|| panic!("no pages: {body}"))
        .iter()
        .map(|p| {
            (
                p["page"].as_str().unwrap().to_string(),
                p["total"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn on_embedded(scenario: fn(&Server)) {
    scenario(&Server::start_with(NO_LIMITS, &[]));
}

fn on_redis(scenario: fn(&Server)) {
    let redis = RedisServer::start();
    scenario(&Server::start_with(
        NO_LIMITS,
        &[("LUOT_REDIS_URL", &redis.url())],
    ));
}

// ---- /pages: order, normalisation, figures ----

fn pages_answer_in_the_asked_order(server: &Server) {
    for _ in 0..3 {
        hit(server, "/tin-tuc/bai-a");
    }
    hit(server, "/tin-tuc/bai-b");
    server.wait_flushed();
    let query = "path=/tin-tuc/bai-b&path=/chua-ai-doc\
                 &path=https://example.vn/tin-tuc/bai-a/%3Fx%3D1\
                 &path=/tin-tuc/bai-a%3Futm_source%3Dx%23top&period=today";
    let mut last = Value::Null;
    let ok = poll(SETTLE, || {
        let r = pages(server, query);
        assert_eq!(r.status, 200, "{}", r.text());
        last = r.json();
        (totals(&last)
            == [
                ("/tin-tuc/bai-b".to_string(), 1),
                ("/chua-ai-doc".to_string(), 0),
                ("/tin-tuc/bai-a".to_string(), 3),
                ("/tin-tuc/bai-a".to_string(), 3),
            ])
        .then_some(())
    });
    assert!(ok.is_some(), "pages in order, normalised: {last}");
    assert_eq!(last["site"], "demo");
    assert!(last["as_of"].is_string(), "{last}");
    let first = &last["pages"][0];
    // The page figures' shape, with the title and the asked period.
    for key in [
        "page",
        "title",
        "total",
        "today",
        "yesterday",
        "week",
        "month",
        "online",
        "stale",
    ] {
        assert!(first.get(key).is_some(), "entry lacks {key}: {first}");
    }
    assert_eq!(first["title"], Value::Null, "no title was sent");
    assert!(
        first["online"].is_u64(),
        "a listed page says its readers now: {first}"
    );
    assert_eq!(first["today"], 1);
    assert_eq!(first["hits"], 1, "period=today gives today as hits");
    assert_eq!(last["pages"][2]["hits"], 3);
    assert_eq!(last["pages"][1]["stale"], false);
    // The counters route agrees, page by page.
    assert_eq!(server.counters("demo", Some("/tin-tuc/bai-a"))["total"], 3);
}

#[test]
fn pages_answer_in_the_asked_order_normalised_on_embedded() {
    on_embedded(pages_answer_in_the_asked_order);
}

#[test]
fn pages_answer_in_the_asked_order_normalised_on_redis() {
    on_redis(pages_answer_in_the_asked_order);
}

// ---- /pages: never-seen pages cost one store read, then none ----

fn never_seen_pages_are_read_once(server: &Server) {
    hit(server, "/seen");
    server.wait_flushed();
    let query: String = (0..100)
        .map(|i| format!("path=/never-{i}"))
        .collect::<Vec<_>>()
        .join("&");
    let before = store_reads(server);
    let r = pages(server, &query);
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["pages"].as_array().unwrap().len(), 100);
    assert!(totals(&body).iter().all(|(_, t)| *t == 0), "{body}");
    assert_eq!(
        store_reads(server) - before,
        1.0,
        "100 never-seen pages: one store round trip"
    );
    for i in 0..3 {
        // Another query each time: the same one is answered from the
        // kept answer, which would prove nothing about the readings.
        let r = pages(server, &format!("{query}&again={i}"));
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        store_reads(server) - before,
        1.0,
        "asked again: answered from the kept zeros"
    );
}

#[test]
fn never_seen_pages_cost_one_store_read_then_none_on_embedded() {
    on_embedded(never_seen_pages_are_read_once);
}

#[test]
fn never_seen_pages_cost_one_store_read_then_none_on_redis() {
    on_redis(never_seen_pages_are_read_once);
}

// ---- /pages: refusals ----

#[test]
fn every_malformed_pages_request_is_a_400_with_its_code() {
    let server = Server::start_with(NO_LIMITS, &[]);
    let many: String = (0..101)
        .map(|i| format!("path=/p{i}"))
        .collect::<Vec<_>>()
        .join("&");
    let hundred: String = (0..100)
        .map(|i| format!("path=/p{i}"))
        .collect::<Vec<_>>()
        .join("&");
    for (query, code) in [
        ("", "missing_path"),
        ("period=today", "missing_path"),
        (many.as_str(), "too_many_paths"),
        ("path=/a&period=decade", "bad_period"),
        ("path=/a%00b", "bad_page"),
    ] {
        let r = pages(&server, query);
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        assert_eq!(r.json()["error"], code, "{query}");
        assert!(r.json()["message"].is_string());
    }
    assert_eq!(pages(&server, &hundred).status, 200, "100 paths are fine");
    let r = server.get("/api/v1/sites/nope/pages?path=/a");
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn a_private_sites_pages_are_public_like_its_figures_and_reads_are_limited() {
    let token = "listing-token-0123456789abcdef";
    let config = format!(
        "[counting]\nread_rate_limit_per_second = 1\nread_rate_limit_burst = 3\n\
         [[sites]]\nid = \"hidden\"\ntimezone = \"{ZONE}\"\norigins = [\"*\"]\n\
         initial_total = 0\npublic = false\nread_token = \"{token}\"\n"
    );
    let server = Server::start_with(&config, &[]);
    let url = "/api/v1/sites/hidden/pages?path=/a";
    // luot.js on the front page cannot send a token; the series can't be
    // read without it.
    let ok = server.get(url);
    assert_eq!(ok.status, 200, "{}", ok.text());
    let series = server.get("/api/v1/sites/hidden/series?from=2026-01-01&to=2026-01-02");
    assert_eq!(series.status, 401, "{}", series.text());
    // Three reads were the burst; the next is over the read limit.
    let r = server.get(&format!("{url}&token={token}"));
    let limited = (0..5).any(|_| server.get(&format!("{url}&token={token}")).status == 429);
    assert!(
        r.status == 429 || limited,
        "the read limit holds for /pages"
    );
}

// ---- /pages: CORS and AMP ----

#[test]
fn pages_speak_cors_and_amp_like_the_counters_route() {
    let config = "[[sites]]\nid = \"news\"\ntimezone = \"Asia/Ho_Chi_Minh\"\n\
                  origins = [\"https://news.example\"]\ninitial_total = 0\n";
    let server = Server::start_with(&format!("{NO_LIMITS}{config}"), &[]);
    let url = "/api/v1/sites/news/pages?path=/a&path=/b";
    let own = server.get_with(url, &[("Origin", "https://news.example")]);
    assert_eq!(own.status, 200);
    assert_eq!(
        own.header("access-control-allow-origin"),
        Some("https://news.example")
    );
    let other = server.get_with(url, &[("Origin", "https://evil.example")]);
    assert_eq!(other.status, 200);
    assert_eq!(other.header("access-control-allow-origin"), None);
    // What the AMP runtime sends from its cache for amp-list.
    let cache = "https://news-example.cdn.ampproject.org";
    let amp = server.get_with(
        &format!("{url}&amp=1&__amp_source_origin=https%3A%2F%2Fnews.example"),
        &[("Origin", cache)],
    );
    assert_eq!(amp.status, 200, "{}", amp.text());
    assert_eq!(amp.header("access-control-allow-origin"), Some(cache));
    assert_eq!(
        amp.header("amp-access-control-allow-source-origin"),
        Some("https://news.example")
    );
    let items = amp.json();
    assert_eq!(items["items"].as_array().map(Vec::len), Some(2), "{items}");
    assert_eq!(items["items"][1]["page"], "/b");
    let foreign = server.get_with(
        &format!("{url}&__amp_source_origin=https%3A%2F%2Fevil.example"),
        &[("Origin", cache)],
    );
    assert_eq!(
        foreign.header("amp-access-control-allow-source-origin"),
        None
    );
    assert_eq!(foreign.header("access-control-allow-origin"), None);
    let pre = common::into_reply(
        common::agent()
            .options(server.url(url))
            .header("Origin", "https://news.example")
            .header("Access-Control-Request-Method", "GET")
            .call(),
        "preflight",
    );
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://news.example")
    );
}

// ---- record day ----

fn record_of(server: &Server) -> Value {
    server.counters("demo", None)["record"].clone()
}

fn luot_import(server: &Server, csv: &std::path::Path) -> Value {
    let admin = server.admin.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_luot"))
        .args(["import", "--site", "demo", "--history"])
        .arg(csv)
        .args(["--admin", &admin])
        .env_remove("LUOT_CONFIG")
        .env_remove("LUOT_REDIS_URL")
        .env_remove("LUOT_ADMIN_LISTEN")
        .stdin(Stdio::null())
        .output()
        .expect("run luot import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("import answers JSON")
}

fn the_record_day_follows_hits_and_imports(server: &Server) {
    assert_eq!(record_of(server), Value::Null, "no hit, no record");
    let page_record = server.counters("demo", Some("/a"))["record"].clone();
    assert_eq!(page_record, Value::Null, "a page has no record");
    for _ in 0..4 {
        hit(server, "/a");
    }
    // Before and after the flush: today's 4 hits are the record.
    let day = today().to_string();
    assert_eq!(record_of(server), json!({"hits": 4, "date": day}));
    server.wait_flushed();
    assert_eq!(record_of(server), json!({"hits": 4, "date": day}));

    // An old counter's history with a better day, imported.
    let best = today().checked_sub(Span::new().days(3)).unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    let csv = dir.path().join("history.csv");
    let before = today().checked_sub(Span::new().days(4)).unwrap();
    std::fs::write(
        &csv,
        format!("date,hits,visitors\n{before},900,10\n{best},4321,20\n"),
    )
    .unwrap();
    assert_eq!(luot_import(server, &csv)["applied"], true);
    let want = json!({"hits": 4321, "date": best.to_string()});
    let mut last = Value::Null;
    let ok = poll(SETTLE, || {
        last = record_of(server);
        (last == want).then_some(())
    });
    assert!(ok.is_some(), "the import raised the record: {last}");
    // The same import again changes nothing; more hits today stay below.
    assert_eq!(luot_import(server, &csv)["applied"], false);
    hit(server, "/a");
    server.wait_flushed();
    assert_eq!(record_of(server), want);
}

#[test]
fn the_record_day_follows_hits_and_imports_on_embedded() {
    on_embedded(the_record_day_follows_hits_and_imports);
}

#[test]
fn the_record_day_follows_hits_and_imports_on_redis() {
    on_redis(the_record_day_follows_hits_and_imports);
}
