//! Breakdowns through the real binary: `GET /api/v1/sites/{site}/breakdown`
//! (every refusal and its code, the unknown site, the read token, the read
//! limit, JSON and CSV with hostile values), on both stores over imported
//! days, `luot export` → `luot import --from-export` into an empty store,
//! and beacons' own breakdowns as counting classifies them.
//!
//! Days with breakdowns are made by importing them through the admin
//! listener, as `luot import --from-export` does. "Today" is computed in
//! the site's zone (Asia/Ho_Chi_Minh); a run that straddles local midnight
//! may fail.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::redis::RedisServer;
use common::{BROWSER_UA, Reply, Server, encode, poll};
use jiff::civil::Date;
use jiff::{Span, Timestamp};
use serde_json::{Value, json};
use tempfile::TempDir;

/// Every request of a test comes from 127.0.0.1: no limit in the way.
const NO_LIMITS: &str = "[counting]\nrate_limit_per_second = 100000\nrate_limit_burst = 100000\n\
    read_rate_limit_per_second = 100000\nread_rate_limit_burst = 100000\n";

const ZONE: &str = "Asia/Ho_Chi_Minh";
const TOKEN: &str = "owner-read-token-0123456789";

/// How long a breakdown may take to show a flush (200 ms interval).
const SETTLE: Duration = Duration::from_secs(20);

/// A source value as clients may send it: a formula, a quote, a comma, a
/// backslash and non-ASCII text (at most 64 bytes, as counting keeps).
const HOSTILE: &str = "=HYPERLINK(\"http://x\",\"y\"),\\ tết";

fn today() -> Date {
    Timestamp::now().in_tz(ZONE).expect("the zone").date()
}

fn days_before(day: Date, n: i64) -> Date {
    day.checked_sub(Span::new().days(n)).unwrap()
}

fn breakdown(server: &Server, query: &str) -> Reply {
    server.get(&format!("/api/v1/sites/demo/breakdown?{query}"))
}

fn ok_json(server: &Server, query: &str) -> Value {
    let r = breakdown(server, query);
    assert_eq!(r.status, 200, "breakdown?{query}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

/// The `values` of a breakdown answer as `(value, hits)`.
fn values(v: &Value) -> Vec<(String, u64)> {
    v["values"]
        .as_array()
        .unwrap_or_else(|| panic!("no values in {v}"))
        .iter()
        .map(|e| {
            let value = e["value"].as_str().unwrap_or_else(|| panic!("{e}"));
            (value.to_string(), e["hits"].as_u64().unwrap())
        })
        .collect()
}

fn owned(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(v, n)| (v.to_string(), *n)).collect()
}

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

/// Runs `luot <args> --admin <server's admin listener>`.
fn luot_raw(server: &Server, args: &[&str]) -> Output {
    let admin = server.admin.to_string();
    Command::new(env!("CARGO_BIN_EXE_luot"))
        .args(args)
        .args(["--admin", &admin])
        .env_remove("LUOT_CONFIG")
        .env_remove("LUOT_REDIS_URL")
        .env_remove("LUOT_ADMIN_LISTEN")
        .stdin(Stdio::null())
        .output()
        .expect("run the luot binary")
}

/// [`luot_raw`], which must succeed; its standard output.
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

// ---- refusals: every 400, the 404, the token, the read limit ----

#[test]
fn every_bad_parameter_is_a_400_naming_the_problem() {
    let server = Server::start_with(NO_LIMITS, &[]);
    let today = today();
    let long_ago = days_before(today, 400);
    let in_range = days_before(today, 10);
    let tomorrow = today.tomorrow().unwrap();
    let cases: Vec<(String, &str, &str)> = vec![
        ("".into(), "bad_by", "`by`"),
        ("by=".into(), "bad_by", "channel"),
        ("by=referrer".into(), "bad_by", "utm_campaign"),
        ("by=Channel".into(), "bad_by", "channel"),
        ("by=channel&period=total".into(), "bad_period", "`period`"),
        ("by=channel&period=1h".into(), "bad_period", "`period`"),
        ("by=channel&from=2026-02-30".into(), "bad_date", "`from`"),
        ("by=channel&to=today".into(), "bad_date", "`to`"),
        (
            format!("by=channel&from={today}&to={in_range}"),
            "bad_range",
            "after",
        ),
        (
            format!("by=channel&from={long_ago}&to={today}"),
            "bad_range",
            "days",
        ),
        (
            format!("by=channel&from={long_ago}&to={long_ago}"),
            "bad_range",
            "kept",
        ),
        (
            format!("by=channel&from={in_range}&to={tomorrow}"),
            "bad_range",
            "kept",
        ),
        (
            // Page days are kept 35 days by default.
            format!(
                "by=source&page=/a&from={}&to={today}",
                days_before(today, 35)
            ),
            "bad_range",
            "35 days",
        ),
        (
            format!("by=channel&period=week&from={in_range}"),
            "bad_period",
            "not both",
        ),
        ("by=channel&limit=0".into(), "bad_limit", "1 to 1000"),
        ("by=channel&limit=1001".into(), "bad_limit", "1 to 1000"),
        ("by=channel&limit=ten".into(), "bad_limit", "1 to 1000"),
        ("by=channel&format=xml".into(), "bad_format", "csv"),
        ("by=channel&page=javascript:alert(1)".into(), "bad_page", ""),
        ("by=channel&page=%2Fa%00".into(), "bad_page", "control"),
    ];
    for dimension in [
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "browser",
        "os",
        "device",
        "country",
    ] {
        let r = breakdown(&server, &format!("by={dimension}&page=/a"));
        assert_eq!(r.status, 400, "{dimension} with page=: {}", r.text());
        assert_eq!(r.json()["error"], "site_only_dimension");
        let message = r.json()["message"].as_str().unwrap().to_string();
        assert!(
            message.contains(dimension) && message.contains("channel or source"),
            "{message}"
        );
    }
    for (query, code, says) in &cases {
        let r = breakdown(&server, query);
        assert_eq!(r.status, 400, "breakdown?{query}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body = r.json();
        assert_eq!(body["error"], *code, "breakdown?{query}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "breakdown?{query}: {message}");
    }

    let r = server.get("/api/v1/sites/nope/breakdown?by=channel");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "unknown_site");
    // An unknown site is a 404 before its parameters are looked at.
    assert_eq!(
        server.get("/api/v1/sites/nope/breakdown?by=nope").status,
        404
    );
    let r = server.post("/api/v1/sites/demo/breakdown?by=channel", &[], b"");
    assert_eq!(r.status, 405);
}

const PRIVATE: &str = r#"
[[sites]]
id = "secret"
timezone = "Europe/Paris"
origins = ["*"]
initial_total = 0
public = false
read_token = "owner-read-token-0123456789"
"#;

#[test]
fn a_private_sites_breakdown_needs_its_read_token() {
    let server = Server::start_with(&format!("{NO_LIMITS}{PRIVATE}"), &[]);
    for query in ["by=channel", "by=channel&format=csv", "by=nope"] {
        let path = format!("/api/v1/sites/secret/breakdown?{query}");
        for (what, r) in [
            ("no token", server.get(&path)),
            (
                "wrong bearer",
                server.get_with(
                    &path,
                    &[("Authorization", "Bearer owner-read-token-0123456788")],
                ),
            ),
            ("wrong ?token=", server.get(&format!("{path}&token=nope"))),
        ] {
            assert_eq!(r.status, 401, "{path} with {what}: {}", r.text());
            assert_eq!(r.json()["error"], "unauthorized");
        }
    }
    let path = "/api/v1/sites/secret/breakdown?by=channel";
    let bearer = server.get_with(path, &[("Authorization", &format!("Bearer {TOKEN}"))]);
    assert_eq!(bearer.status, 200, "{}", bearer.text());
    assert_eq!(bearer.json()["site"], "secret");
    let query = server.get(&format!("{path}&format=csv&token={TOKEN}"));
    assert_eq!(query.status, 200, "{}", query.text());
    assert_eq!(query.text(), "value,hits\n");
    // With the token, bad parameters are still refused.
    let r = server.get(&format!(
        "/api/v1/sites/secret/breakdown?by=nope&token={TOKEN}"
    ));
    assert_eq!(r.status, 400);
}

#[test]
fn breakdowns_share_the_read_rate_limit() {
    let limits = "[counting]\nread_rate_limit_per_second = 1\nread_rate_limit_burst = 3\n";
    let server = Server::start_with(limits, &[]);
    let statuses: Vec<u16> = (0..6)
        .map(|_| breakdown(&server, "by=nope").status)
        .collect();
    assert_eq!(&statuses[..3], [400, 400, 400], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    let r = breakdown(&server, "by=channel");
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"], "rate_limited");
}

// ---- imported days read back, on both stores ----

/// One imported day: its date, hits, and sources with their hits.
type ImportedDay = (Date, u64, Vec<(&'static str, u64)>);

/// Three days of history with breakdowns, imported: what each holds.
struct Imported {
    today: Date,
    /// Oldest first.
    days: Vec<ImportedDay>,
}

impl Imported {
    fn new() -> Imported {
        let today = today();
        let days = vec![
            (
                days_before(today, 3),
                50,
                vec![("Google", 20), ("Facebook", 10), ("(other)", 5)],
            ),
            (
                days_before(today, 2),
                40,
                vec![("Google", 5), ("Zalo", 15), (HOSTILE, 15)],
            ),
            (
                days_before(today, 1),
                30,
                vec![("Zalo", 10), ("Facebook", 10), ("Báo Mới", 10)],
            ),
        ];
        Imported { today, days }
    }

    fn request(&self) -> Value {
        let history: Vec<Value> = self
            .days
            .iter()
            .map(|(date, hits, sources)| {
                let sources: serde_json::Map<String, Value> = sources
                    .iter()
                    .map(|(v, n)| (v.to_string(), json!(n)))
                    .collect();
                json!({
                    "date": date.to_string(),
                    "hits": hits,
                    "breakdown": {"source": sources, "device": {"mobile": hits}},
                })
            })
            .collect();
        json!({"site": "demo", "id": "b4ea4d0e00000000000000000000aaaa", "history": history})
    }

    fn range(&self) -> String {
        format!("from={}&to={}", self.days[0].0, self.days[2].0)
    }
}

fn imported_breakdowns_read_back(server: &Server) {
    let imported = Imported::new();
    let (status, answer) = post_import(server, &imported.request());
    assert_eq!(
        (status, answer["applied"].clone()),
        (200, json!(true)),
        "{answer}"
    );
    let range = imported.range();
    let all = ok_json(server, &format!("by=source&{range}"));
    assert_eq!(all["site"], "demo");
    assert_eq!(all["page"], Value::Null);
    assert_eq!(all["by"], "source");
    assert_eq!(all["from"], imported.days[0].0.to_string());
    assert_eq!(all["to"], imported.days[2].0.to_string());
    assert_eq!(all["hits"], 120);
    // Summed over the days; ties by value; the hits no value holds are
    // (unknown), before (other), last.
    assert_eq!(
        values(&all),
        owned(&[
            ("Google", 25),
            ("Zalo", 25),
            ("Facebook", 20),
            (HOSTILE, 15),
            ("Báo Mới", 10),
            ("(unknown)", 20),
            ("(other)", 5),
        ])
    );
    assert_eq!(
        values(&all).iter().map(|v| v.1).sum::<u64>(),
        120,
        "the values add up to hits"
    );

    // The limit cuts named values, never hits nor the catch-alls.
    let two = ok_json(server, &format!("by=source&{range}&limit=2"));
    assert_eq!(two["hits"], 120);
    assert_eq!(
        values(&two),
        owned(&[
            ("Google", 25),
            ("Zalo", 25),
            ("(unknown)", 20),
            ("(other)", 5)
        ])
    );

    // Named periods are local days: yesterday alone.
    let yesterday = ok_json(server, "by=source&period=yesterday");
    assert_eq!(yesterday["from"], imported.days[2].0.to_string());
    assert_eq!(yesterday["hits"], 30);
    assert_eq!(
        values(&yesterday),
        owned(&[("Báo Mới", 10), ("Facebook", 10), ("Zalo", 10)])
    );
    // Another dimension of the same days; one with nothing stored.
    let devices = ok_json(server, &format!("by=device&{range}"));
    assert_eq!(values(&devices), owned(&[("mobile", 120)]));
    let countries = ok_json(server, &format!("by=country&{range}"));
    assert_eq!(countries["hits"], 120);
    assert_eq!(values(&countries), owned(&[("(unknown)", 120)]));
    // Today: nothing counted yet.
    let today = ok_json(server, "by=source");
    assert_eq!(today["from"], imported.today.to_string());
    assert_eq!((today["hits"].as_u64(), values(&today)), (Some(0), vec![]));
    // A page never seen: zero, not 404; the page as beacons normalise it.
    let page = ok_json(
        server,
        &format!("by=channel&page={}", encode("/tin-tuc/?x=1#y")),
    );
    assert_eq!(page["page"], "/tin-tuc");
    assert_eq!((page["hits"].as_u64(), values(&page)), (Some(0), vec![]));

    // CSV: the same rows, each field safe for a spreadsheet.
    let r = breakdown(server, &format!("by=source&{range}&format=csv"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    assert_eq!(
        r.text(),
        "value,hits\nGoogle,25\nZalo,25\nFacebook,20\n\
         \"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\"),\\ tết\",15\n\
         Báo Mới,10\n(unknown),20\n(other),5\n"
    );
}

#[test]
fn imported_breakdowns_read_back_on_the_embedded_store() {
    imported_breakdowns_read_back(&Server::start_with(NO_LIMITS, &[]));
}

#[test]
fn imported_breakdowns_read_back_on_redis() {
    let redis = RedisServer::start();
    imported_breakdowns_read_back(&Server::start_with(
        NO_LIMITS,
        &[("LUOT_REDIS_URL", &redis.url())],
    ));
}

// ---- export → import into an empty store ----

/// Every dimension's breakdown of each imported day, of today, and of
/// them all.
fn every_breakdown(server: &Server, imported: &Imported) -> Vec<Value> {
    let mut ranges: Vec<String> = imported
        .days
        .iter()
        .map(|(d, _, _)| d)
        .chain([&imported.today])
        .map(|d| format!("from={d}&to={d}"))
        .collect();
    ranges.push(format!("from={}&to={}", imported.days[0].0, imported.today));
    let mut out = Vec::new();
    for range in &ranges {
        for by in [
            "channel",
            "source",
            "utm_source",
            "utm_medium",
            "utm_campaign",
            "browser",
            "os",
            "device",
            "country",
        ] {
            out.push(ok_json(server, &format!("by={by}&{range}&limit=1000")));
        }
    }
    out
}

/// Exports from a server started by `start`, imports into another one
/// started by `start` (an empty store), and compares every breakdown.
fn export_then_import_reproduces_the_breakdowns(start: &dyn Fn() -> Server) {
    let dir = TempDir::new().unwrap();
    let imported = Imported::new();
    let old = start();
    let (status, answer) = post_import(&old, &imported.request());
    assert_eq!(status, 200, "{answer}");
    // Today's hits, broken down as counted.
    for (i, referrer) in ["https://www.google.com/", "https://www.bing.com/", ""]
        .iter()
        .enumerate()
    {
        let mut beacon = json!({"site": "demo", "page": "/a", "vid": format!("v{i}")});
        if !referrer.is_empty() {
            beacon["ref"] = json!(referrer);
        }
        assert_eq!(old.hit_as(&beacon, BROWSER_UA).status, 200);
    }
    let counted = poll(SETTLE, || {
        let today = ok_json(&old, "by=channel");
        (values(&today) == owned(&[("search", 2), ("direct", 1)])).then_some(())
    });
    assert!(counted.is_some(), "{}", ok_json(&old, "by=channel"));
    let before = every_breakdown(&old, &imported);
    assert!(
        before.iter().any(|b| values(b).len() > 2),
        "something to carry: {before:?}"
    );

    let file = dir.path().join("export.json");
    let file = file.to_str().unwrap();
    luot(
        &old,
        &[
            "export", "--site", "demo", "--format", "json", "--output", file,
        ],
    );
    let export: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let day = |date: Date| {
        export["days"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["date"] == date.to_string())
            .unwrap_or_else(|| panic!("{date} is not in the export"))
            .clone()
    };
    let first = day(imported.days[0].0);
    assert_eq!(first["breakdown"]["source"]["Google"], 20);
    assert_eq!(first["breakdown"]["source"]["(other)"], 5);
    assert_eq!(first["breakdown"]["device"]["mobile"], 50);
    assert!(
        first["breakdown"]["source"].get("(unknown)").is_none(),
        "(unknown) is implied by the day's hits, never carried: {first}"
    );
    assert_eq!(
        day(imported.today)["breakdown"]["channel"],
        json!({"direct": 1, "search": 2})
    );
    assert_eq!(day(imported.today)["breakdown"]["source"]["Bing"], 1);
    let empty = day(days_before(imported.today, 20));
    assert_eq!(empty["hits"], 0);
    assert!(
        empty.get("breakdown").is_none(),
        "a day without hits carries no breakdown: {empty}"
    );
    // The breakdowns as a spreadsheet.
    let csv = luot(
        &old,
        &["export", "--site", "demo", "--format", "breakdowns-csv"],
    );
    let second = imported.days[1].0;
    assert!(csv.starts_with("date,dimension,value,hits\n"), "{csv}");
    assert!(
        csv.contains(&format!(
            "\n{second},source,\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\"),\\ tết\",15\n"
        )),
        "{csv}"
    );

    let new = start();
    let answer = luot(&new, &["import", "--site", "demo", "--from-export", file]);
    assert!(answer.contains("\"applied\":true"), "{answer}");
    let mut last = Vec::new();
    let same = poll(SETTLE, || {
        last = every_breakdown(&new, &imported);
        (last == before).then_some(())
    });
    assert!(
        same.is_some(),
        "the copy's breakdowns differ:\nold {before:#?}\nnew {last:#?}"
    );
    // The same export again changes nothing.
    let again = luot(&new, &["import", "--site", "demo", "--from-export", file]);
    assert!(again.contains("\"applied\":false"), "{again}");
    new.wait_flushes(2);
    assert_eq!(every_breakdown(&new, &imported), before);
}

#[test]
fn export_then_import_into_an_empty_store_reproduces_the_breakdowns() {
    export_then_import_reproduces_the_breakdowns(&|| Server::start_with(NO_LIMITS, &[]));
}

#[test]
fn export_then_import_into_an_empty_redis_reproduces_the_breakdowns() {
    // Each server its own Redis: the copy starts from an empty store.
    let redis = [RedisServer::start(), RedisServer::start()];
    let next = std::cell::Cell::new(0);
    export_then_import_reproduces_the_breakdowns(&|| {
        let url = redis[next.replace(next.get() + 1)].url();
        Server::start_with(NO_LIMITS, &[("LUOT_REDIS_URL", &url)])
    });
}

// ---- beacons' own breakdowns ----

#[test]
fn beacons_are_broken_down_by_where_they_came_from_and_on_what() {
    let server = Server::start_with(NO_LIMITS, &[]);
    let phone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 \
        (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    let beacons = [
        ("/a", "https://www.google.com/", BROWSER_UA),
        ("/a", "https://www.google.com.vn/", phone),
        ("/a", "https://l.facebook.com/", phone),
        ("/b", "", BROWSER_UA),
        (
            "/b?utm_source=newsletter&utm_medium=email&utm_campaign=tet",
            "",
            BROWSER_UA,
        ),
    ];
    for (i, (page, referrer, agent)) in beacons.iter().enumerate() {
        let mut beacon = json!({"site": "demo", "page": page, "vid": format!("v{i}")});
        if !referrer.is_empty() {
            beacon["ref"] = json!(referrer);
        }
        let r = server.hit_as(&beacon, agent);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut last = Value::Null;
    let counted = poll(SETTLE, || {
        last = ok_json(&server, "by=channel");
        (last["hits"] == 5).then_some(())
    });
    assert!(counted.is_some(), "never flushed: {last}");
    assert_eq!(
        values(&last),
        owned(&[("search", 2), ("direct", 1), ("email", 1), ("social", 1)])
    );
    let sources = ok_json(&server, "by=source");
    assert_eq!(
        values(&sources),
        owned(&[
            ("Google", 2),
            ("(direct)", 1),
            ("Facebook", 1),
            ("newsletter", 1)
        ])
    );
    let campaigns = ok_json(&server, "by=utm_campaign");
    assert_eq!(values(&campaigns), owned(&[("(none)", 4), ("tet", 1)]));
    let devices = ok_json(&server, "by=device");
    assert_eq!(values(&devices), owned(&[("desktop", 3), ("mobile", 2)]));
    let countries = ok_json(&server, "by=country");
    assert_eq!(values(&countries), owned(&[("ZZ", 5)]), "loopback");
    // A page's own: where /a's readers came from.
    let page = ok_json(&server, "by=source&page=/a");
    assert_eq!(page["hits"], 3);
    assert_eq!(values(&page), owned(&[("Google", 2), ("Facebook", 1)]));
    let week = ok_json(&server, "by=channel&period=week");
    assert_eq!(week["hits"], 5, "today is in this week");
}
