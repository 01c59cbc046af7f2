//! What owners see, through the real binary: the history API (series and
//! top pages) on both stores across a simulated month, the `public` flag
//! and the read token, `luot import` (twice = once, even a month apart;
//! starting totals) and `luot export` → `luot import --from-export` into
//! an empty store, and the dashboard in headless Chromium (screenshots in
//! `target/test-artifacts/`).
//!
//! The month is simulated by importing daily history through the admin
//! listener, as an owner moving from an old counter would; today's hits
//! are real beacons. "Today" is computed in the site's zone
//! (Asia/Ho_Chi_Minh); a run that straddles local midnight may fail.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::chromium::{Launch, text_of};
use common::redis::RedisServer;
use common::{BROWSER_UA, Reply, Server, encode, poll};
use jiff::civil::Date;
use jiff::{Span, Timestamp};
use serde_json::{Value, json};
use tempfile::TempDir;

/// Every request of a test comes from 127.0.0.1: no rate limit in the way.
const NO_LIMITS: &str = "[counting]\nrate_limit_per_second = 100000\nrate_limit_burst = 100000\n";

const ZONE: &str = "Asia/Ho_Chi_Minh";
const TOKEN: &str = "owner-read-token-0123456789";

/// How long a figure may take to show a flush (200 ms interval).
const SETTLE: Duration = Duration::from_secs(20);

/// Today's pages and their hits, most read first.
const TODAY: [(&str, u64); 3] = [("/tin-tuc/bao-moi", 5), ("/gioi-thieu", 3), ("/lien-he", 1)];
const TODAY_HITS: u64 = 9;
/// A page whose path holds markup (as much as survives normalisation).
const HOSTILE: &str = "/x\"><img src=x onerror=alert(1)>&amp;";

fn today() -> Date {
    Timestamp::now().in_tz(ZONE).expect("the zone").date()
}

fn days_before(day: Date, n: i64) -> Date {
    day.checked_sub(Span::new().days(n)).unwrap()
}

/// A month (and a bit) of an old counter's daily history, up to yesterday.
struct History {
    today: Date,
    /// (date, hits, visitors), oldest first.
    days: Vec<(Date, u64, u64)>,
}

impl History {
    fn new(n: i64) -> History {
        let today = today();
        let days = (1..=n)
            .rev()
            .map(|i| {
                let hits = 40 + (i as u64 * 37) % 90;
                (days_before(today, i), hits, hits / 2 + 1)
            })
            .collect();
        History { today, days }
    }

    fn csv(&self) -> String {
        let mut out = String::from("date,hits,visitors\n");
        for (d, h, v) in &self.days {
            out.push_str(&format!("{d},{h},{v}\n"));
        }
        out
    }

    fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("history.csv");
        std::fs::write(&path, self.csv()).unwrap();
        path
    }

    fn on(&self, day: Date) -> Option<(u64, u64)> {
        self.days
            .iter()
            .find(|(d, _, _)| *d == day)
            .map(|(_, h, v)| (*h, *v))
    }

    /// Imported hits on days from `from` on.
    fn since(&self, from: Date) -> u64 {
        self.days
            .iter()
            .filter(|(d, _, _)| *d >= from)
            .map(|(_, h, _)| h)
            .sum()
    }

    fn week_start(&self) -> Date {
        let back = self.today.weekday().to_monday_zero_offset();
        days_before(self.today, i64::from(back))
    }

    fn month_start(&self) -> Date {
        self.today.first_of_month()
    }
}

// ---- the luot command line ----

/// Runs `luot <args> --admin <server's admin listener>`; panics unless it
/// succeeds. Returns its standard output.
fn luot(server: &Server, args: &[&str]) -> String {
    let out = luot_raw(server, args);
    assert!(
        out.status.success(),
        "luot {args:?} failed ({:?}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn luot_raw(server: &Server, args: &[&str]) -> Output {
    let admin = server.admin.to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_luot"));
    cmd.args(args)
        .args(["--admin", &admin])
        .env_remove("LUOT_CONFIG")
        .env_remove("LUOT_REDIS_URL")
        .env_remove("LUOT_ADMIN_LISTEN")
        .stdin(Stdio::null());
    cmd.output().expect("run the luot binary")
}

/// `luot import …`'s answer as JSON.
fn import(server: &Server, args: &[&str]) -> Value {
    let mut all = vec!["import", "--site", "demo"];
    all.extend_from_slice(args);
    let out = luot(server, &all);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

// ---- HTTP helpers ----

fn hit(server: &Server, site: &str, page: &str, vid: &str) {
    let r = server.hit_as(&json!({"site": site, "page": page, "vid": vid}), BROWSER_UA);
    assert_eq!(r.status, 200, "hit {page}: {}", r.text());
}

/// Today's pages, each hit by distinct visitors.
fn send_today(server: &Server, site: &str) {
    for (page, n) in TODAY {
        for i in 0..n {
            hit(
                server,
                site,
                page,
                &format!("reader-{page}-{i}").replace('/', "_"),
            );
        }
    }
}

fn get_ok(server: &Server, path: &str) -> Reply {
    let r = server.get(path);
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r
}

fn int(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Polls the site's figures until `check` holds; panics with the last ones.
fn wait_figures(server: &Server, site: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    server
        .wait_figures(site, SETTLE, check)
        .unwrap_or_else(|last| panic!("{what}: figures never settled; last {last:#}"))
}

/// A page list `[(page, hits)]` of a top answer.
fn pages(v: &Value) -> Vec<(String, u64)> {
    v["pages"]
        .as_array()
        .unwrap_or_else(|| panic!("no pages in {v}"))
        .iter()
        .map(|p| (p["page"].as_str().unwrap().to_string(), int(&p["hits"])))
        .collect()
}

fn owned(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(p, n)| (p.to_string(), *n)).collect()
}

/// Polls `/top` until it answers `expected` (it is as of the last flush).
fn wait_top(server: &Server, query: &str, expected: &[(String, u64)]) {
    let path = format!("/api/v1/sites/demo/top?{query}");
    let mut last = Vec::new();
    let ok = poll(SETTLE, || {
        last = pages(&get_ok(server, &path).json());
        (last == expected).then_some(())
    });
    assert!(
        ok.is_some(),
        "top?{query}: expected {expected:?}, last {last:?}"
    );
}

/// Runs `scenario` on a server with [`NO_LIMITS`] on the embedded store.
fn on_embedded(scenario: fn(&Server)) {
    scenario(&Server::start_with(NO_LIMITS, &[]));
}

/// Runs `scenario` on a server with [`NO_LIMITS`] on a fresh Redis.
fn on_redis(scenario: fn(&Server)) {
    let redis = RedisServer::start();
    scenario(&Server::start_with(
        NO_LIMITS,
        &[("LUOT_REDIS_URL", &redis.url())],
    ));
}

/// Unique visitors read back from a sketch: exact for small sets, within
/// HyperLogLog error otherwise.
fn about(got: u64, want: u64) -> bool {
    got.abs_diff(want) <= want / 50 + 1
}

// ---- series and top across a month, on both stores ----

fn series_and_top_across_a_month(server: &Server) {
    let dir = TempDir::new().unwrap();
    let month = History::new(45);
    let today = month.today;
    let yesterday = days_before(today, 1);
    let csv = month.write(dir.path());
    let answer = import(
        server,
        &[
            "--total",
            "100000",
            "--page-total",
            "/luu-tru=50",
            "--history",
            csv.to_str().unwrap(),
        ],
    );
    assert_eq!(answer["applied"], true, "{answer}");
    assert_eq!(answer["late"], 0, "{answer}");
    send_today(server, "demo");

    // The six figures agree with the imported days and today's hits.
    let week = month.since(month.week_start()) + TODAY_HITS;
    let month_hits = month.since(month.month_start()) + TODAY_HITS;
    let (y_hits, y_visitors) = month.on(yesterday).unwrap();
    let f = wait_figures(server, "demo", "after the import and today's hits", |f| {
        f["total"] == 100_000 + TODAY_HITS
            && f["today"] == TODAY_HITS
            && f["yesterday"] == y_hits
            && f["week"] == week
            && f["month"] == month_hits
            && f["visitors"]["today"] == TODAY_HITS
    });
    assert!(about(int(&f["visitors"]["yesterday"]), y_visitors), "{f:#}");

    // Daily series: the last 30 days by default, today last.
    let mut last = Value::Null;
    let series = poll(SETTLE, || {
        last = get_ok(server, "/api/v1/sites/demo/series").json();
        let points = last["points"].as_array()?;
        (points.last()?["visitors"] == TODAY_HITS).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("today's visitors never in the series: {last:#}"));
    assert_eq!(series["site"], "demo");
    assert_eq!(series["by"], "day");
    assert_eq!(series["page"], Value::Null);
    assert_eq!(series["to"], today.to_string());
    assert_eq!(series["from"], days_before(today, 29).to_string());
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 30);
    for (i, p) in points.iter().enumerate() {
        let day = days_before(today, 29 - i as i64);
        assert_eq!(p["date"], day.to_string());
        if day == today {
            assert_eq!(p["hits"], TODAY_HITS);
            assert_eq!(p["visitors"], TODAY_HITS);
        } else {
            let (h, v) = month.on(day).unwrap();
            assert_eq!(p["hits"], h, "{day}");
            assert!(about(int(&p["visitors"]), v), "{day}: {p} vs {v}");
        }
    }

    // An explicit range, older than 30 days, and its CSV.
    let from = days_before(today, 45);
    let to = days_before(today, 40);
    let path = format!("/api/v1/sites/demo/series?from={from}&to={to}");
    let older = get_ok(server, &path).json();
    let older = older["points"].as_array().unwrap();
    assert_eq!(older.len(), 6);
    assert_eq!(older[0]["hits"], month.on(from).unwrap().0);
    let csv = get_ok(server, &format!("{path}&format=csv"));
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let text = csv.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "date,hits,visitors");
    assert_eq!(lines.len(), 7, "{text}");
    for line in &lines[1..] {
        let fields: Vec<&str> = line.split(',').collect();
        let day: Date = fields[0].parse().unwrap();
        let (h, v) = month.on(day).unwrap();
        assert_eq!(fields[1], h.to_string(), "{line}");
        assert!(about(fields[2].parse().unwrap(), v), "{line}");
    }
    let today_csv = get_ok(
        server,
        &format!("/api/v1/sites/demo/series?from={today}&to={today}&format=csv"),
    )
    .text();
    assert_eq!(
        today_csv,
        format!("date,hits,visitors\n{today},{TODAY_HITS},{TODAY_HITS}\n")
    );

    // By month: twelve months, each the sum of its days.
    let monthly = get_ok(server, "/api/v1/sites/demo/series?by=month").json();
    assert_eq!(monthly["by"], "month");
    let months = monthly["points"].as_array().unwrap();
    assert_eq!(months.len(), 12, "{monthly}");
    let mut by_month: BTreeMap<String, u64> = BTreeMap::new();
    for (d, h, _) in &month.days {
        *by_month
            .entry(format!("{:04}-{:02}", d.year(), d.month()))
            .or_default() += h;
    }
    *by_month
        .entry(format!("{:04}-{:02}", today.year(), today.month()))
        .or_default() += TODAY_HITS;
    for p in months {
        let key = p["date"].as_str().unwrap();
        assert_eq!(
            int(&p["hits"]),
            by_month.get(key).copied().unwrap_or(0),
            "{key}"
        );
    }
    assert_eq!(
        months.last().unwrap()["date"],
        format!("{:04}-{:02}", today.year(), today.month())
    );
    assert_eq!(int(&months.last().unwrap()["hits"]), month_hits);

    // One page's series: hits only.
    let page = TODAY[0].0;
    let from = days_before(today, 2);
    let path = format!(
        "/api/v1/sites/demo/series?page={}&from={from}&to={today}",
        encode(page)
    );
    let ps = get_ok(server, &path).json();
    assert_eq!(ps["page"], page);
    let hits: Vec<u64> = ps["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| int(&p["hits"]))
        .collect();
    assert_eq!(hits, [0, 0, TODAY[0].1]);
    assert!(
        ps["points"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["visitors"].is_null())
    );
    assert_eq!(
        get_ok(server, &format!("{path}&format=csv")).text(),
        format!(
            "date,hits,visitors\n{},0,\n{},0,\n{today},{},\n",
            from,
            days_before(today, 1),
            TODAY[0].1
        )
    );

    // Most read: today, this week and this month are today's pages; the
    // imported page total leads all time; yesterday has no pages.
    let today_pages = owned(&TODAY);
    wait_top(server, "period=today", &today_pages);
    wait_top(server, "period=today&limit=2", &today_pages[..2]);
    wait_top(server, "period=week", &today_pages);
    wait_top(server, "period=month&limit=1", &today_pages[..1]);
    let mut total_pages = vec![("/luu-tru".to_string(), 50)];
    total_pages.extend(today_pages.iter().cloned());
    wait_top(server, "period=total", &total_pages);
    wait_top(server, "period=yesterday", &[]);
    let default = get_ok(server, "/api/v1/sites/demo/top").json();
    assert_eq!(default["period"], "today");

    // Refusals.
    for bad in [
        "/api/v1/sites/demo/top?period=decade",
        "/api/v1/sites/demo/top?limit=0",
        "/api/v1/sites/demo/top?limit=101",
        "/api/v1/sites/demo/series?from=2026-02-01&to=2026-01-01",
        "/api/v1/sites/demo/series?from=yesterday",
        "/api/v1/sites/demo/series?by=week",
        "/api/v1/sites/demo/series?from=2020-01-01&to=2026-01-01",
    ] {
        let r = server.get(bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.json()["error"].is_string());
    }
    let r = server.get("/api/v1/sites/nope/series");
    assert_eq!(r.status, 404);
}

#[test]
fn series_and_top_across_a_month_on_the_embedded_store() {
    on_embedded(series_and_top_across_a_month);
}

#[test]
fn series_and_top_across_a_month_on_redis() {
    on_redis(series_and_top_across_a_month);
}

// ---- the public flag and the read token ----

const PRIVATE: &str = r#"
[[sites]]
id = "demo"
timezone = "Asia/Ho_Chi_Minh"
origins = ["*"]
initial_total = 0

[[sites]]
id = "secret"
timezone = "Europe/Paris"
origins = ["*"]
initial_total = 0
language = "en"
public = false
read_token = "owner-read-token-0123456789"
"#;

#[test]
fn a_private_site_needs_its_token_for_history_and_dashboard_not_for_figures() {
    let server = Server::start_with(&format!("{NO_LIMITS}{PRIVATE}"), &[]);
    hit(&server, "secret", "/hidden", "v1");
    let owner_routes = [
        "/api/v1/sites/secret/series",
        "/api/v1/sites/secret/series?by=month&format=csv",
        "/api/v1/sites/secret/top?period=today",
        "/dashboard/secret",
        "/dashboard/secret?lang=vi",
    ];
    let join = |path: &str, extra: &str| {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{path}{sep}{extra}")
    };
    for path in owner_routes {
        for (what, r) in [
            ("no token", server.get(path)),
            (
                "wrong bearer",
                server.get_with(
                    path,
                    &[("Authorization", "Bearer owner-read-token-0123456788")],
                ),
            ),
            (
                "short bearer",
                server.get_with(path, &[("Authorization", "Bearer owner")]),
            ),
            (
                "not a bearer",
                server.get_with(path, &[("Authorization", &format!("Basic {TOKEN}"))]),
            ),
            ("wrong ?token=", server.get(&join(path, "token=nope"))),
        ] {
            assert_eq!(r.status, 401, "{path} with {what}: {}", r.text());
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(r.json()["error"], "unauthorized", "{path} with {what}");
        }
        let bearer = server.get_with(path, &[("Authorization", &format!("Bearer {TOKEN}"))]);
        assert_eq!(bearer.status, 200, "{path} with the bearer token");
        let query = server.get(&join(path, &format!("token={TOKEN}")));
        assert_eq!(query.status, 200, "{path} with ?token=");
    }

    // The figures stay public: the widget shows them anyway.
    assert_eq!(server.counters("secret", None)["total"], 1);
    assert_eq!(
        get_ok(&server, "/api/v1/sites/secret/counters?page=/hidden").json()["total"],
        1
    );

    // The dashboard hands a typed-in token to its own requests (and its
    // language links), never one that came as a header.
    let page = server.get(&format!("/dashboard/secret?token={TOKEN}"));
    let html = page.text();
    assert!(html.contains(&format!("data-token=\"{TOKEN}\"")), "{html}");
    assert!(html.contains(&format!("href=\"?lang=vi&amp;token={TOKEN}\"")));
    assert!(html.contains("<html lang=\"en\">"), "the site's language");
    assert_eq!(page.header("cache-control"), Some("private, no-cache"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    let by_header = server
        .get_with(
            "/dashboard/secret",
            &[("Authorization", &format!("Bearer {TOKEN}"))],
        )
        .text();
    assert!(!by_header.contains(TOKEN));

    // A public site's dashboard needs nothing and carries no token.
    let public = server.get("/dashboard/demo?token=whatever");
    assert_eq!(public.status, 200);
    assert_eq!(public.header("cache-control"), Some("no-cache"));
    assert!(
        public
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(!public.text().contains("data-token=\""));
    assert_eq!(
        get_ok(&server, "/api/v1/sites/demo/series").json()["site"],
        "demo"
    );

    // Unknown site and unknown language.
    let r = server.get("/dashboard/nope");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "unknown_site");
    let r = server.get("/dashboard/demo?lang=fr");
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].is_string());
    let r = server.post("/dashboard/demo", &[], b"");
    assert_eq!(r.status, 405);
}

// ---- import twice = import once; starting totals ----

fn import_twice_is_import_once(server: &Server) {
    let dir = TempDir::new().unwrap();
    let month = History::new(10);
    let csv = month.write(dir.path());
    let csv = csv.to_str().unwrap();
    let yesterday = days_before(month.today, 1);
    let args = [
        "--total",
        "9356660",
        "--page-total",
        "/old-post=1200",
        "--page-total",
        "https://example.vn/gioi-thieu/?utm=x=30",
        "--history",
        csv,
    ];
    let first = import(server, &args);
    assert_eq!(first["applied"], true, "{first}");
    let settled = |f: &Value| {
        f["total"] == 9_356_660
            && f["yesterday"] == month.on(yesterday).unwrap().0
            && f["today"] == 0
            && f["month"] == month.since(month.month_start())
    };
    let before = wait_figures(server, "demo", "after the first import", settled);
    assert_eq!(server.counters("demo", Some("/old-post"))["total"], 1200);
    assert_eq!(
        server.counters("demo", Some("/gioi-thieu"))["total"],
        30,
        "a page given as a URL is normalised"
    );
    let series = get_ok(server, "/api/v1/sites/demo/series").json();

    // The same import again: refused by the watermark, nothing changes.
    let second = import(server, &args);
    assert_eq!(second["applied"], false, "{second}");
    // A whole flush pass later: nothing of the refused import shows.
    server.wait_flushes(2);
    let after = server.counters("demo", None);
    for key in ["total", "today", "yesterday", "week", "month"] {
        assert_eq!(after[key], before[key], "{key}");
    }
    assert_eq!(server.counters("demo", Some("/old-post"))["total"], 1200);
    assert_eq!(
        get_ok(server, "/api/v1/sites/demo/series").json()["points"],
        series["points"]
    );

    // Different content is a different import: a starting total on top.
    let third = import(server, &["--total", "5"]);
    assert_eq!(third["applied"], true, "{third}");
    wait_figures(server, "demo", "after a second starting total", |f| {
        f["total"] == 9_356_665
    });
    assert_eq!(import(server, &["--total", "5"])["applied"], false);

    // Nothing to import, a bad line, an unknown site: refused, nothing done.
    let out = luot_raw(server, &["import", "--site", "demo"]);
    assert!(!out.status.success());
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "2026-01-01,12\n2026-01-02,many\n").unwrap();
    let out = luot_raw(
        server,
        &[
            "import",
            "--site",
            "demo",
            "--history",
            bad.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.csv:2"), "{err}");
    let out = luot_raw(server, &["import", "--site", "nope", "--total", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    server.wait_flushes(2);
    assert_eq!(server.counters("demo", None)["total"], 9_356_665);
}

#[test]
fn import_twice_is_import_once_on_the_embedded_store() {
    on_embedded(import_twice_is_import_once);
}

#[test]
fn import_twice_is_import_once_on_redis() {
    on_redis(import_twice_is_import_once);
}

/// The same import, run again long after the first (its producer's
/// last-seen time in Redis set 31 days back, then a flush of this
/// instance's own batch, when a Redis that pruned idle producers would
/// forget it), is still refused and counts nothing.
#[test]
fn import_repeated_after_a_month_idle_is_refused_on_redis() {
    let redis = RedisServer::start();
    let server = Server::start_with(NO_LIMITS, &[("LUOT_REDIS_URL", &redis.url())]);
    let stored_total = || {
        redis
            .must(&["GET", "luot:{demo}:h:t"])
            .text()
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let first = import(&server, &["--total", "7000"]);
    assert_eq!(first["applied"], true, "{first}");
    assert_eq!(stored_total(), 7000);

    let month_ago = (Timestamp::now().as_second() - 31 * 86_400).to_string();
    let seen = redis.must(&["HKEYS", "luot:{demo}:wmt"]);
    let producers: Vec<String> = seen
        .array()
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.text())
        .collect();
    assert!(
        producers.iter().any(|p| p.starts_with("import:")),
        "{producers:?}"
    );
    for producer in &producers {
        redis.must(&["HSET", "luot:{demo}:wmt", producer, &month_ago]);
    }
    // A beacon, flushed: a batch of this instance's own reaches Redis.
    hit(&server, "demo", "/after-a-month", "reader-month");
    let flushed = poll(SETTLE, || (stored_total() == 7001).then_some(()));
    assert!(flushed.is_some(), "the beacon never reached Redis");

    let again = import(&server, &["--total", "7000"]);
    assert_eq!(again["applied"], false, "{again}");
    assert_eq!(stored_total(), 7001);
    wait_figures(&server, "demo", "after the repeated import", |f| {
        f["total"] == 7001
    });
}

// ---- an imported count is at most 2^53 ----

/// `POST /admin/v1/import` of `body` as `luot import` sends it.
fn post_import(server: &Server, body: &Value) -> (u16, Value) {
    let mut resp = common::agent()
        .post(server.admin_url("/admin/v1/import"))
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())
        .expect("the admin listener answers");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("a body");
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, json)
}

#[test]
fn an_imported_count_above_2_pow_53_is_refused_with_a_400() {
    let server = Server::start_with(NO_LIMITS, &[]);
    let over = (1u64 << 53) + 1;
    let yesterday = days_before(today(), 1).to_string();
    let refused = [
        json!({"site": "demo", "id": "00000000000000a1", "total": over}),
        json!({"site": "demo", "id": "00000000000000a2", "total": u64::MAX}),
        json!({"site": "demo", "id": "00000000000000a3",
               "pages": [{"page": "/a", "total": over}]}),
        json!({"site": "demo", "id": "00000000000000a4",
               "history": [{"date": yesterday, "hits": over}]}),
    ];
    for body in &refused {
        let (status, answer) = post_import(&server, body);
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], "count_too_large", "{body}: {answer}");
        assert!(
            answer["message"].as_str().unwrap_or("").contains("2^53"),
            "the message says the bound: {answer}"
        );
    }
    // The bound itself is accepted, and it is all that was counted.
    let at = json!({"site": "demo", "id": "00000000000000b1", "total": 1u64 << 53});
    let (status, answer) = post_import(&server, &at);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"], true, "{answer}");
    wait_figures(&server, "demo", "after the import at the bound", |f| {
        f["total"] == 1u64 << 53
    });
    assert_eq!(server.counters("demo", Some("/a"))["total"], 0);
}

// ---- a large import leaves the request threads alone ----

/// Imports at once, each with this many days of 5,000,000 visitors (the
/// most a day may hold): seconds of hashing each in a debug build.
const HEAVY_IMPORTS: u64 = 2;
const HEAVY_DAYS: i64 = 1;
/// The slowest a beacon may answer while they are built.
const BEACON_BOUND: Duration = Duration::from_millis(1500);

#[test]
fn beacons_are_answered_while_an_import_with_millions_of_visitors_is_built() {
    let server = std::sync::Arc::new(Server::start_with(NO_LIMITS, &[]));
    let imports: Vec<_> = (0..HEAVY_IMPORTS)
        .map(|i| {
            let server = server.clone();
            thread::spawn(move || {
                let history: Vec<Value> = (1..=HEAVY_DAYS)
                    .map(|n| {
                        json!({"date": days_before(today(), n).to_string(),
                               "hits": 1, "visitors": 5_000_000})
                    })
                    .collect();
                let body = json!({"site": "demo", "id": format!("{:016x}", 0xc0 + i),
                                  "history": history});
                let started = Instant::now();
                let (status, answer) = post_import(&server, &body);
                assert_eq!(status, 200, "import {i}: {answer}");
                started.elapsed()
            })
        })
        .collect();
    // Beacons from the moment the imports are under way until they end
    // (at most 2,000 of them, about every 20 ms).
    thread::sleep(Duration::from_millis(200));
    let mut slowest = Duration::ZERO;
    let mut sent = 0u64;
    while imports.iter().any(|t| !t.is_finished()) && sent < 2_000 {
        let started = Instant::now();
        hit(&server, "demo", "/during", &format!("v{sent}"));
        slowest = slowest.max(started.elapsed());
        sent += 1;
        thread::sleep(Duration::from_millis(20));
    }
    let took: Vec<Duration> = imports
        .into_iter()
        .map(|t| t.join().expect("an import thread"))
        .collect();
    assert!(
        sent >= 5,
        "the imports ended before beacons could race them: {took:?}"
    );
    assert!(
        slowest < BEACON_BOUND,
        "a beacon waited {slowest:?} while imports were built ({took:?}, {sent} beacons)"
    );
    eprintln!("imports took {took:?}; slowest beacon {slowest:?} of {sent}");
    assert_eq!(server.counters("demo", Some("/during"))["total"], sent);
}

// ---- an import shows on pages whose readings are kept ----

/// A page answered before an import keeps its store reading (on the
/// embedded store for up to a minute, as nothing else writes the store);
/// the import must show on it at once, not when the reading expires.
fn import_shows_on_kept_page_readings(server: &Server) {
    let answer = server.hit_as(
        &json!({"site": "demo", "page": "/kept", "vid": "v1"}),
        BROWSER_UA,
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["page"]["total"], 1, "{}", answer.text());
    // The reading is kept, and rolled forward over the hit's batch, which
    // a whole flush pass has sent.
    server.wait_flushes(2);
    assert_eq!(server.counters("demo", Some("/kept"))["total"], 1);

    let imported = import(server, &["--page-total", "/kept=500"]);
    assert_eq!(imported["applied"], true, "{imported}");
    let mut last = Value::Null;
    poll(SETTLE, || {
        last = server.counters("demo", Some("/kept"));
        (last["total"] == 501).then_some(())
    })
    .unwrap_or_else(|| panic!("the import never showed on the page: {last:#}"));
    let answer = server.hit_as(
        &json!({"site": "demo", "page": "/kept", "vid": "v2"}),
        BROWSER_UA,
    );
    assert_eq!(answer.json()["page"]["total"], 502, "{}", answer.text());
}

#[test]
fn import_shows_on_kept_page_readings_on_the_embedded_store() {
    on_embedded(import_shows_on_kept_page_readings);
}

#[test]
fn import_shows_on_kept_page_readings_on_redis() {
    on_redis(import_shows_on_kept_page_readings);
}

// ---- export → import into an empty store ----

/// `demo` carrying an `initial_total` (configuration, not store: the export
/// notes it and the import leaves it out).
const CARRIED: &str = r#"
[[sites]]
id = "demo"
timezone = "Asia/Ho_Chi_Minh"
origins = ["*"]
initial_total = 777
language = "vi"
"#;

#[test]
fn export_then_import_into_an_empty_store_reproduces_the_figures() {
    let config = format!("{NO_LIMITS}{CARRIED}");
    let dir = TempDir::new().unwrap();
    let month = History::new(40);
    let csv = month.write(dir.path());
    let old = Server::start_with(&config, &[]);
    import(
        &old,
        &[
            "--total",
            "5000",
            "--page-total",
            "/luu-tru=70",
            "--history",
            csv.to_str().unwrap(),
        ],
    );
    send_today(&old, "demo");
    let figures = wait_figures(&old, "demo", "the old instance", |f| {
        f["today"] == TODAY_HITS && f["total"] == 777 + 5000 + TODAY_HITS
    });
    wait_top(&old, "period=total&limit=100", &{
        let mut v = vec![("/luu-tru".to_string(), 70)];
        v.extend(owned(&TODAY));
        v
    });

    let file = dir.path().join("export.json");
    let out = luot(
        &old,
        &[
            "export",
            "--site",
            "demo",
            "--format",
            "json",
            "--output",
            file.to_str().unwrap(),
        ],
    );
    assert!(out.trim().is_empty(), "{out}");
    let export: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(export["site"], "demo");
    assert_eq!(export["total"], figures["total"]);
    assert_eq!(export["initial_total"], 777);
    let days = export["days"].as_array().unwrap();
    assert_eq!(days.len(), 400, "site days kept 400 days by default");
    assert_eq!(days.last().unwrap()["date"], month.today.to_string());
    assert_eq!(days.last().unwrap()["hits"], TODAY_HITS);
    // The spreadsheet forms.
    let series_csv = luot(&old, &["export", "--site", "demo", "--format", "csv"]);
    let yesterday = days_before(month.today, 1);
    let (yh, _) = month.on(yesterday).unwrap();
    assert!(series_csv.starts_with("date,hits,visitors\n"));
    assert!(
        series_csv.contains(&format!("\n{yesterday},{yh},")),
        "{series_csv}"
    );
    let pages_csv = luot(&old, &["export", "--site", "demo", "--format", "pages-csv"]);
    assert!(
        pages_csv.starts_with("page,total,title\n/luu-tru,70,\n/tin-tuc/bao-moi,5,\n"),
        "{pages_csv}"
    );

    // A second luot, same configuration, empty data directory.
    let new = Server::start_with(&config, &[]);
    assert_eq!(new.counters("demo", None)["total"], 777);
    let answer = luot(
        &new,
        &[
            "import",
            "--site",
            "demo",
            "--from-export",
            file.to_str().unwrap(),
        ],
    );
    assert!(answer.contains("\"applied\":true"), "{answer}");
    let copy = wait_figures(&new, "demo", "the new instance", |f| {
        f["total"] == figures["total"]
    });
    for key in ["total", "today", "yesterday", "week", "month"] {
        assert_eq!(copy[key], figures[key], "{key}");
    }
    for (key, v) in figures["visitors"].as_object().unwrap() {
        if key == "total" {
            continue; // all time is a union of stand-ins: checked loosely
        }
        let got = copy["visitors"][key].as_u64().unwrap_or(0);
        assert!(about(got, int(v)), "visitors.{key}: {got} vs {v}");
    }
    for page in ["/luu-tru", TODAY[0].0, TODAY[1].0, TODAY[2].0] {
        assert_eq!(
            new.counters("demo", Some(page))["total"],
            old.counters("demo", Some(page))["total"],
            "{page}"
        );
    }
    let old_series = get_ok(&old, "/api/v1/sites/demo/series").json();
    let new_series = get_ok(&new, "/api/v1/sites/demo/series").json();
    let hits = |s: &Value| -> Vec<u64> {
        s["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| int(&p["hits"]))
            .collect()
    };
    assert_eq!(hits(&new_series), hits(&old_series));
    assert_eq!(
        get_ok(&new, "/api/v1/sites/demo/series?by=month").json()["points"],
        get_ok(&old, "/api/v1/sites/demo/series?by=month").json()["points"]
    );
    // Importing the same export again changes nothing.
    let again = luot(
        &new,
        &[
            "import",
            "--site",
            "demo",
            "--from-export",
            file.to_str().unwrap(),
        ],
    );
    assert!(again.contains("\"applied\":false"), "{again}");
}

// ---- the dashboard in a real browser ----

/// Chromium on `url` as a desktop browser with its default language.
fn browser(url: &str) -> Launch<'_> {
    Launch {
        lang: None,
        ..Launch::new(url)
    }
}

fn dump_dom(url: &str) -> String {
    browser(url).dump_dom()
}

/// Saves a screenshot as `target/test-artifacts/<name>`.
fn screenshot(url: &str, name: &str, width: u32, height: u32) -> PathBuf {
    browser(url).screenshot(name, width, height)
}

/// The markup inside the element with `id`, up to `</{tag}>`.
fn inside<'d>(dom: &'d str, id: &str, tag: &str) -> &'d str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id}"));
    let end = at + dom[at..].find(&format!("</{tag}>")).unwrap();
    &dom[at..end]
}

fn grouped(n: u64, separator: char) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(separator);
        }
        out.push(d);
    }
    out
}

#[test]
fn the_dashboard_in_a_browser_shows_the_figures_charts_and_top_pages() {
    let started = Instant::now();
    let config = format!("{NO_LIMITS}{CARRIED}");
    let server = Server::start_with(&config, &[]);
    let dir = TempDir::new().unwrap();
    let month = History::new(400);
    let csv = month.write(dir.path());
    let answer = import(
        &server,
        &["--total", "1234560", "--history", csv.to_str().unwrap()],
    );
    assert_eq!(answer["applied"], true, "{answer}");
    send_today(&server, "demo");
    // A page path with markup in it must stay text.
    for vid in ["evil-1", "evil-2"] {
        hit(&server, "demo", HOSTILE, vid);
    }
    let today_hits = TODAY_HITS + 2;
    let total = 777 + 1_234_560 + today_hits;
    let figures = wait_figures(&server, "demo", "before the browser", |f| {
        f["total"] == total && f["visitors"]["today"] == today_hits
    });
    let hostile = get_ok(&server, "/api/v1/sites/demo/top?period=today&limit=3").json()["pages"][2]
        ["page"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut expected = owned(&TODAY[..2]);
    expected.push((hostile.clone(), 2));
    expected.push((TODAY[2].0.to_string(), 1));
    wait_top(&server, "period=today", &expected);

    for (lang, sep, labels) in [
        (
            "vi",
            '.',
            [
                "Thống kê truy cập",
                "Tổng lượt truy cập",
                "Hôm nay",
                "Hôm qua",
                "Tuần này",
                "Tháng này",
                "Đang trực tuyến",
                "Đọc nhiều nhất · Hôm nay",
                "Đọc nhiều nhất · Tuần này",
                "30 ngày qua",
            ],
        ),
        (
            "en",
            ',',
            [
                "Visitor statistics",
                "Total visits",
                "Today",
                "Yesterday",
                "This week",
                "This month",
                "Online now",
                "Most read · Today",
                "Most read · This week",
                "Last 30 days",
            ],
        ),
    ] {
        let url = server.url(&format!("/dashboard/demo?lang={lang}"));
        let dom = dump_dom(&url);
        for label in labels {
            assert!(dom.contains(label), "{lang}: {label:?} missing");
        }
        for key in ["total", "today", "yesterday", "week", "month", "online"] {
            assert_eq!(
                text_of(&dom, &format!("fig-{key}")),
                grouped(int(&figures[key]), sep),
                "{lang}: {key}"
            );
        }
        assert_eq!(text_of(&dom, "vis-today"), today_hits.to_string(), "{lang}");
        // The charts, drawn by the page's script as inline SVG.
        let days = inside(&dom, "chart-days", "svg");
        assert_eq!(days.matches("<rect class=\"bar").count(), 30, "{days}");
        assert_eq!(days.matches("<circle class=\"pt\"").count(), 30);
        assert!(days.contains(&format!(
            "data-date=\"{}\" data-hits=\"{}\"",
            month.today, today_hits
        )));
        let yesterday = days_before(month.today, 1);
        assert!(days.contains(&format!(
            "data-date=\"{yesterday}\" data-hits=\"{}\"",
            month.on(yesterday).unwrap().0
        )));
        let months = inside(&dom, "chart-months", "svg");
        assert_eq!(months.matches("<rect class=\"bar").count(), 12);
        assert!(months.contains(&format!(
            "data-hits=\"{}\"",
            month.since(month.month_start()) + today_hits
        )));
        // The most-read lists, in order, the hostile path as text.
        let top = inside(&dom, "top-today", "ol");
        let mut at = 0;
        for (page, hits) in TODAY {
            let found = top[at..]
                .find(&format!(">{page}</span>"))
                .unwrap_or_else(|| panic!("{lang}: {page} missing or out of order in {top}"));
            at += found;
            assert!(top[at..].contains(&format!("class=\"n\">{hits}<")));
        }
        let shown = hostile
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(
            top.contains(&format!(">{shown}</span>")),
            "{hostile} in {top}"
        );
        assert!(!dom.contains("<img"), "a page path became markup");
        assert!(inside(&dom, "top-week", "ol").contains(TODAY[0].0));
    }

    let vi = screenshot(
        &server.url("/dashboard/demo"),
        "dashboard-vi.png",
        1100,
        1300,
    );
    let en = screenshot(
        &server.url("/dashboard/demo?lang=en"),
        "dashboard-en.png",
        390,
        2000,
    );
    eprintln!(
        "screenshots: {} {} ({:?})",
        vi.display(),
        en.display(),
        started.elapsed()
    );
}

// ---- titles and rolling most-read lists, on both stores ----

/// The `(page, title)` pairs of a top answer (`None`: `null`).
fn titles(v: &Value) -> Vec<(String, Option<String>)> {
    v["pages"]
        .as_array()
        .unwrap_or_else(|| panic!("no pages in {v}"))
        .iter()
        .map(|p| {
            assert!(p.get("title").is_some(), "every entry has a title: {p}");
            (
                p["page"].as_str().unwrap().to_string(),
                p["title"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn titled(server: &Server, page: &str, title: Option<&str>, vid: &str) {
    let mut beacon = json!({"site": "demo", "page": page, "vid": vid});
    if let Some(title) = title {
        beacon["title"] = json!(title);
    }
    let r = server.hit_as(&beacon, BROWSER_UA);
    assert_eq!(r.status, 200, "hit {page}: {}", r.text());
}

fn titles_and_rolling_top(server: &Server) {
    for i in 0..3 {
        titled(server, "/a", Some("Tin A"), &format!("a{i}"));
    }
    // The last title seen wins; one without a title changes nothing.
    titled(server, "/a", Some("  Tin A mới\u{7}  "), "a3");
    titled(server, "/a", None, "a4");
    titled(server, "/b", Some("<b>x</b>"), "b0");
    titled(server, "/c", None, "c0");
    titled(server, "/c", Some("   "), "c1");
    let gif = server.get("/hit.gif?site=demo&page=/d&title=Pixel%20D");
    assert_eq!(gif.status, 200);
    let expected = owned(&[("/a", 5), ("/c", 2), ("/b", 1), ("/d", 1)]);
    wait_top(server, "period=1h", &expected);
    wait_top(server, "period=24h", &expected);
    wait_top(server, "period=today", &expected);
    wait_top(server, "period=24h&limit=2", &expected[..2]);
    let want = vec![
        ("/a".to_string(), Some("Tin A mới".to_string())),
        ("/c".to_string(), None),
        ("/b".to_string(), Some("<b>x</b>".to_string())),
        ("/d".to_string(), Some("Pixel D".to_string())),
    ];
    for period in ["1h", "24h", "today", "total"] {
        let path = format!("/api/v1/sites/demo/top?period={period}");
        let mut last = Vec::new();
        let ok = poll(SETTLE, || {
            last = titles(&get_ok(server, &path).json());
            (last == want).then_some(())
        });
        assert!(ok.is_some(), "{period}: titles {last:?}");
    }
    // Listing pages' counts carry the same titles.
    let mut last = Value::Null;
    let listed = poll(SETTLE, || {
        last = get_ok(server, "/api/v1/sites/demo/pages?path=/a&path=/b&path=/c").json();
        (last["pages"][0]["title"] == "Tin A mới"
            && last["pages"][1]["title"] == "<b>x</b>"
            && last["pages"][2]["title"] == Value::Null)
            .then_some(())
    });
    assert!(listed.is_some(), "/pages titles: {last}");
    // Readable by the site's pages (CORS), for luot.js's lists.
    let r = server.get_with(
        "/api/v1/sites/demo/top?period=24h",
        &[("Origin", "https://news.example")],
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://news.example")
    );
    // The iframe box: titles as text.
    let html = get_ok(server, "/widget/demo/top?period=24h&limit=5&lang=vi").text();
    assert!(html.contains("Đọc nhiều nhất · 24 giờ qua"), "{html}");
    assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"), "{html}");
    assert!(!html.contains("<b>x</b>"), "{html}");
    assert!(html.contains(">Tin A mới<"), "{html}");
    for bad in [
        "/api/v1/sites/demo/top?period=2h",
        "/widget/demo/top?limit=21",
        "/widget/demo/top?lang=fr",
    ] {
        assert_eq!(server.get(bad).status, 400, "{bad}");
    }
    assert_eq!(server.get("/widget/nope/top").status, 404);
    // Exports carry titles, and an import of one keeps them.
    let csv = luot(
        server,
        &["export", "--site", "demo", "--format", "pages-csv"],
    );
    assert!(csv.starts_with("page,total,title\n"), "{csv}");
    assert!(csv.contains("\n/a,5,Tin A mới\n"), "{csv}");
    assert!(csv.contains("\n/b,1,<b>x</b>\n"), "{csv}");
    assert!(csv.contains("\n/c,2,\n"), "{csv}");
    let json = luot(server, &["export", "--site", "demo"]);
    let export: Value = serde_json::from_str(json.trim()).unwrap();
    let b = export["pages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["page"] == "/b")
        .cloned()
        .unwrap_or_else(|| panic!("{export}"));
    assert_eq!(b["title"], "<b>x</b>");
}

#[test]
fn titles_and_rolling_top_lists_on_the_embedded_store() {
    on_embedded(titles_and_rolling_top);
}

#[test]
fn titles_and_rolling_top_lists_on_redis() {
    on_redis(titles_and_rolling_top);
}
