//! Black-box tests of honest counting (DESIGN §2): the real binary, real
//! sockets, and the questions a site owner asks of a counter — are bots left
//! out and people all in, is a script held to its rate limit, can a forged
//! `X-Forwarded-For` mint visitors or limiter state, is `DNT` respected, does
//! a refresh count once inside a dedupe window, are unique visitors right
//! within HyperLogLog error (alone and across two instances on one Redis),
//! do junk pages stay bounded in memory, and does a mixed stream add up to
//! what a careful human would count.
//!
//! Every server and Redis binds 127.0.0.1; every request loop is bounded in
//! count and in time.

mod common;

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{Reply, Server, encode, int, into_reply, is_2xx, poll, raw_post, rss_kib};
use serde_json::{Value, json};

/// How long unique-visitor figures may take (re-read from the store every
/// 5 s; generous for a loaded 2-core machine).
const VISITORS_WAIT: Duration = Duration::from_secs(20);
/// Bound on any bulk sending loop.
const LOAD_LIMIT: Duration = Duration::from_secs(40);

/// A desktop Chrome: what every test hit sends unless it says otherwise.
const BROWSER_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                          (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

/// No limit a single loopback client could reach.
const NO_LIMIT: &str = "rate_limit_per_second = 1000000\nrate_limit_burst = 1000000\n";

/// Real browsers and in-app browsers, desktop and mobile, as they were
/// seen in 2024 (Vietnamese audiences included: Cốc Cốc, Zalo, Facebook).
const REAL_BROWSERS: &[(&str, &str)] = &[
    (
        "Chrome/Windows",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    ),
    (
        "Chrome/macOS",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36",
    ),
    (
        "Chrome/Linux",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    ),
    (
        "Chrome/ChromeOS",
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    ),
    (
        "Chrome/Android",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    ),
    (
        "Chrome/iOS",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1",
    ),
    (
        "Firefox/Windows",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    ),
    (
        "Firefox/Linux",
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
    ),
    (
        "Firefox/Android",
        "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0",
    ),
    (
        "Firefox/iOS",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/125.0 Mobile/15E148 Safari/605.1.15",
    ),
    (
        "Safari/macOS",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
    ),
    (
        "Safari/iPhone",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
    ),
    (
        "Safari/iPad",
        "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
    ),
    (
        "Edge/Windows",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
    ),
    (
        "Edge/Android",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36 EdgA/124.0.2478.64",
    ),
    (
        "Opera/Windows",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 OPR/110.0.0.0",
    ),
    (
        "Samsung Internet",
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
    ),
    (
        "Cốc Cốc/Windows",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) coc_coc_browser/118.0.208 Chrome/112.0.0.0 Safari/537.36",
    ),
    (
        "Cốc Cốc/Android",
        "Mozilla/5.0 (Linux; Android 12; SM-A525F) AppleWebKit/537.36 (KHTML, like Gecko) coc_coc_browser/117.0.250 Mobile Chrome/111.0.0.0 Mobile Safari/537.36",
    ),
    (
        "Zalo in-app/Android",
        "Mozilla/5.0 (Linux; Android 13; SM-A536E Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.230 Mobile Safari/537.36 Zalo android/12100720 ZaloTheme/light ZaloLanguage/vi",
    ),
    (
        "Zalo in-app/iOS",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Zalo iOS/23.12.01 ZaloTheme/light ZaloLanguage/vi",
    ),
    (
        "Facebook in-app/iOS",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/459.0.0.37.107;FBBV/598045513;FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;FBSV/17.4;FBSS/3;FBID/phone;FBLC/vi_VN;FBOP/5;FBRV/600742364]",
    ),
    (
        "Facebook in-app/Android",
        "Mozilla/5.0 (Linux; Android 13; SM-A146P Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/461.0.0.41.106;]",
    ),
    (
        "Messenger in-app/iOS",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 16_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/MessengerForiOS;FBAV/455.0.0.33.109;FBBV/590016212;FBDV/iPhone12,1;FBMD/iPhone;FBSN/iOS;FBSV/16.7;FBSS/2;FBCR/;FBID/phone;FBLC/vi;FBOP/5]",
    ),
    (
        "Instagram in-app/iOS",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 329.0.3.29.108 (iPhone14,5; iOS 17_4; vi_VN; vi; scale=3.00; 1170x2532; 602512385)",
    ),
    (
        "Android WebView",
        "Mozilla/5.0 (Linux; Android 11; Redmi Note 8 Build/RKQ1.201004.002; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/123.0.6312.118 Mobile Safari/537.36",
    ),
];

/// Crawlers, headless browsers, tools, uptime checkers and link previewers
/// from luot's own extras (the list's samples come from its JSON).
const EXTRA_BOTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.6367.60 Safari/537.36",
    "curl/8.5.0",
    "python-requests/2.31.0",
    "Go-http-client/1.1",
    "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "WhatsApp/2.23.20.0 A",
    "TelegramBot (like TwitterBot)",
];

// ---- helpers ----

/// A `[[sites]]` table accepting any origin, with `extra` lines.
fn site(id: &str, extra: &str) -> String {
    format!(
        "[[sites]]\nid = \"{id}\"\ntimezone = \"Asia/Ho_Chi_Minh\"\norigins = [\"*\"]\n\
         initial_total = 0\n{extra}\n"
    )
}

fn hits_metric(server: &Server, result: &str) -> u64 {
    server.metric_or_zero(&format!("luot_hits_total{{result=\"{result}\"}}")) as u64
}

fn site_metric(server: &Server, name: &str, site: &str) -> f64 {
    server.metric_or_zero(&format!("{name}{{site=\"{site}\"}}"))
}

/// The site's unique visitors for `period`, if the store was read yet.
fn visitors(f: &Value, period: &str) -> Option<u64> {
    f["visitors"][period].as_u64()
}

/// `headers`, then a browser User-Agent unless they set one.
fn with_browser_ua<'a>(headers: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = headers.to_vec();
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
    {
        all.push(("User-Agent", BROWSER_UA));
    }
    all
}

/// `POST /hit` (with `?quiet=1` when `quiet`) of `beacon` through `agent`.
/// `headers` come first; a browser User-Agent is added unless they set one.
fn post_hit(
    agent: &ureq::Agent,
    server: &Server,
    quiet: bool,
    beacon: &Value,
    headers: &[(&str, &str)],
) -> Reply {
    let path = if quiet { "/hit?quiet=1" } else { "/hit" };
    let mut req = agent
        .post(server.url(path))
        .header("Content-Type", "text/plain;charset=UTF-8");
    for (k, v) in with_browser_ua(headers) {
        req = req.header(k, v);
    }
    into_reply(req.send(beacon.to_string().as_bytes()), path)
}

/// `GET /hit.gif?…` through `agent`, with a browser User-Agent unless set.
fn pixel(agent: &ureq::Agent, server: &Server, query: &str, headers: &[(&str, &str)]) -> Reply {
    let path = format!("/hit.gif?{query}");
    let mut req = agent.get(server.url(&path));
    for (k, v) in with_browser_ua(headers) {
        req = req.header(k, v);
    }
    into_reply(req.call(), &path)
}

/// `POST /hit?quiet=1` over a raw socket with exactly the header lines
/// `extra_head` (each ending in CRLF): the only way to send no User-Agent
/// at all. Returns the status.
fn raw_hit(server: &Server, beacon: &Value, extra_head: &str) -> u16 {
    let body = beacon.to_string().into_bytes();
    raw_post(
        server.public,
        "/hit?quiet=1",
        "text/plain",
        extra_head,
        body,
        false,
    )
    .expect("an answer")
    .status
}

/// Runs `job(agent, i)` for every `i` in `0..n` on `threads` threads, each
/// with its own keep-alive agent; returns how many answers had each status.
/// Panics when the whole run takes longer than [`LOAD_LIMIT`].
fn in_parallel(
    threads: usize,
    n: usize,
    job: impl Fn(&ureq::Agent, usize) -> u16 + Sync,
) -> BTreeMap<u16, u64> {
    let start = Instant::now();
    let job = &job;
    let parts: Vec<BTreeMap<u16, u64>> = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let agent = common::agent();
                    let mut seen = BTreeMap::new();
                    for i in (t..n).step_by(threads) {
                        assert!(
                            start.elapsed() < LOAD_LIMIT,
                            "sending {n} hits took more than {LOAD_LIMIT:?}"
                        );
                        *seen.entry(job(&agent, i)).or_insert(0u64) += 1;
                    }
                    seen
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a sender thread panicked"))
            .collect()
    });
    let mut all = BTreeMap::new();
    for part in parts {
        for (status, count) in part {
            *all.entry(status).or_insert(0) += count;
        }
    }
    all
}

/// Prints the tail of a server's log when the test fails, so that a
/// server that died is seen for what it is.
struct LogOnPanic<'a>(&'a Server);

impl Drop for LogOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            let log = self.0.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "---- luot (pid {}) log, last lines ----\n{}",
                self.0.pid(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

/// A bound on a sending loop's time: `check` panics once it has passed.
struct Deadline {
    start: Instant,
    limit: Duration,
}

impl Deadline {
    fn new() -> Deadline {
        Deadline {
            start: Instant::now(),
            limit: LOAD_LIMIT,
        }
    }

    fn check(&self, what: &str) {
        assert!(
            self.start.elapsed() < self.limit,
            "{what}: still sending after {:?}",
            self.limit
        );
    }
}

/// Relative error of `seen` against `truth`.
fn rel_err(seen: u64, truth: u64) -> f64 {
    (seen as f64 - truth as f64).abs() / truth as f64
}

/// User-Agents sampled from the crawler-user-agents list luot embeds:
/// one instance from each of `n` entries spread evenly over the list
/// (printable ASCII, at most 512 bytes, so that it is a valid header and
/// its whole text is what the detector sees).
fn sampled_crawlers(n: usize) -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/ingest/bots/crawler-user-agents.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let list: Vec<Value> = serde_json::from_str(&text).expect("the list is JSON");
    let usable = |ua: &&str| {
        !ua.trim().is_empty() && ua.len() <= 512 && ua.bytes().all(|b| (0x20..0x7f).contains(&b))
    };
    let with_instances: Vec<Vec<String>> = list
        .iter()
        .filter_map(|e| e["instances"].as_array())
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter(usable)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|a| !a.is_empty())
        .collect();
    assert!(
        with_instances.len() >= n,
        "only {} entries have usable instances",
        with_instances.len()
    );
    (0..n)
        .map(|k| {
            let entry = &with_instances[k * with_instances.len() / n];
            // Vary which instance of the entry is taken.
            entry[k % entry.len()].clone()
        })
        .collect()
}

// ---- 1 ----

#[test]
fn known_bot_user_agents_are_answered_but_not_counted() {
    // `demo` has the default (count_bots = false); `all` counts bots, to
    // show that the rule, not a dead counter, keeps demo at zero.
    let config = format!("{}{}", site("demo", ""), site("all", "count_bots = true"));
    let server = Server::start_with(&config, &[]);
    let _log_server = LogOnPanic(&server);
    let agent = common::agent();
    let mut bots: Vec<String> = sampled_crawlers(40);
    bots.extend(EXTRA_BOTS.iter().map(|s| (*s).to_owned()));
    let mut sent = 0u64;
    let deadline = Deadline::new();
    for (k, ua) in bots.iter().enumerate() {
        deadline.check("bot hits");
        let headers = [("User-Agent", ua.as_str())];
        for id in ["demo", "all"] {
            // A page of its own each time: a crawler's scan must not
            // create pages either.
            let vid = format!("bot-{k}");
            let page = format!("/bots/{k}");
            // Every third one by pixel, the others by beacon (answered in
            // full, with figures).
            let (status, what) = if k % 3 == 2 {
                let r = pixel(
                    &agent,
                    &server,
                    &format!("site={id}&page={}&vid={vid}", encode(&page)),
                    &headers,
                );
                assert_eq!(r.header("content-type"), Some("image/gif"), "{ua}");
                (r.status, "pixel")
            } else {
                let r = post_hit(
                    &agent,
                    &server,
                    false,
                    &json!({"site": id, "page": page, "vid": vid}),
                    &headers,
                );
                if r.status == 200 {
                    let body = r.json();
                    assert!(body["site"]["total"].is_u64(), "{ua}: {body}");
                }
                (r.status, "beacon")
            };
            assert_eq!(
                status, 200,
                "{what} from bot {ua:?} to {id} answered {status}"
            );
        }
        sent += 1;
    }
    // An empty, a whitespace-only and a missing User-Agent: bots too.
    for (k, head) in ["User-Agent: \r\n", "User-Agent:    \r\n", ""]
        .iter()
        .enumerate()
    {
        for id in ["demo", "all"] {
            let beacon = json!({"site": id, "page": "/bots/empty", "vid": format!("empty-{k}")});
            let status = raw_hit(&server, &beacon, head);
            assert_eq!(
                status, 204,
                "{id}: beacon with head {head:?} answered {status}"
            );
        }
        sent += 1;
    }
    assert!(sent >= 30 + 3, "only {sent} bot hits");

    server.wait_flushed();
    let site = server.counters("demo", None);
    assert_eq!(int(&site, "total"), 0, "bots were counted: {site}");
    assert_eq!(site["online"], 0, "bots are not online: {site}");
    let page = server.counters("demo", Some("/bots/0"));
    assert_eq!(int(&page, "total"), 0, "{page}");
    assert_eq!(
        site_metric(&server, "luot_site_pages", "demo"),
        0.0,
        "bot hits created pages"
    );
    assert_eq!(hits_metric(&server, "bot"), sent, "luot_hits_total{{bot}}");
    let all = server.counters("all", None);
    assert_eq!(
        int(&all, "total"),
        sent,
        "count_bots = true counts them: {all}"
    );
    assert_eq!(hits_metric(&server, "counted"), sent);

    // The same site counts a person.
    let r = post_hit(
        &agent,
        &server,
        true,
        &json!({"site": "demo", "page": "/bots/0", "vid": "a-person"}),
        &[],
    );
    assert_eq!(r.status, 204);
    let site = server.counters("demo", None);
    assert_eq!(int(&site, "total"), 1, "{site}");
    assert_eq!(site["online"], 1, "{site}");
    println!("{sent} bot hits answered 2xx, none counted on demo, all counted on `all`");
}

// ---- 2 ----

#[test]
fn real_browser_user_agents_are_all_counted() {
    assert!(REAL_BROWSERS.len() >= 20);
    let server = Server::start();
    let _log_server = LogOnPanic(&server);
    let agent = common::agent();
    let mut refused = Vec::new();
    let deadline = Deadline::new();
    for (k, (name, ua)) in REAL_BROWSERS.iter().enumerate() {
        deadline.check("browser hits");
        let headers = [("User-Agent", *ua)];
        // With a vid by beacon, and without (IP + UA hash) by pixel.
        let r = post_hit(
            &agent,
            &server,
            false,
            &json!({"site": "demo", "page": format!("/b/{k}"), "vid": format!("human-{k}")}),
            &headers,
        );
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let p = pixel(
            &agent,
            &server,
            &format!("site=demo&page={}", encode(&format!("/b/{k}"))),
            &headers,
        );
        assert_eq!(
            p.status,
            200,
            "{name}: pixel {:?}",
            p.header("x-luot-error")
        );
        let page = server.counters("demo", Some(&format!("/b/{k}")));
        if int(&page, "total") != 2 {
            refused.push(format!("{name} ({ua}): page total {}", page["total"]));
        }
    }
    assert!(
        refused.is_empty(),
        "browsers not counted (taken for bots?):\n{}",
        refused.join("\n")
    );
    let n = REAL_BROWSERS.len() as u64;
    server.wait_flushed();
    let site = server.counters("demo", None);
    assert_eq!(int(&site, "total"), 2 * n, "{site}");
    assert_eq!(
        site["online"],
        2 * n,
        "{n} vids and {n} hashed visitors (one per UA): {site}"
    );
    assert_eq!(hits_metric(&server, "bot"), 0);
    assert_eq!(hits_metric(&server, "counted"), 2 * n);
    let v = server.wait_figures("demo", VISITORS_WAIT, |f| {
        visitors(f, "today") == Some(2 * n)
    });
    assert!(v.is_ok(), "visitors today never {}: {:?}", 2 * n, v);
}

// ---- 3 ----

#[test]
fn one_client_sending_a_thousand_per_second_is_limited() {
    const RATE: f64 = 50.0;
    const BURST: f64 = 100.0;
    let config = site("demo", "rate_limit_per_second = 50\nrate_limit_burst = 100");
    let server = Server::start_with(&config, &[]);
    let _log_server = LogOnPanic(&server);
    let agent = common::agent();
    // Opens the keep-alive connection (a read costs no budget).
    assert_eq!(
        agent
            .get(server.url("/api/v1/sites/demo/counters"))
            .call()
            .map(|mut r| {
                let _ = r.body_mut().read_to_vec();
                r.status().as_u16()
            })
            .expect("counters"),
        200
    );

    let mut ok = 0u64;
    let mut limited = 0u64;
    let mut other = Vec::new();
    let mut sent = 0u64;
    let start = Instant::now();
    for i in 0..1000u64 {
        if start.elapsed() >= Duration::from_secs(2) {
            break;
        }
        sent += 1;
        if i % 10 == 9 {
            let r = pixel(
                &agent,
                &server,
                &format!("site=demo&page=%2Fflood&vid=v{i}"),
                &[],
            );
            match r.status {
                200 => ok += 1,
                429 => {
                    assert_eq!(r.header("x-luot-error"), Some("rate_limited"));
                    assert_eq!(r.header("content-type"), Some("image/gif"));
                    limited += 1;
                }
                s => other.push(s),
            }
        } else {
            let r = post_hit(
                &agent,
                &server,
                true,
                &json!({"site": "demo", "page": "/flood", "vid": format!("v{i}")}),
                &[],
            );
            match r.status {
                204 => ok += 1,
                429 => {
                    if limited < 3 {
                        assert_eq!(r.json()["error"], "rate_limited", "{}", r.text());
                    }
                    limited += 1;
                }
                s => other.push(s),
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert!(other.is_empty(), "unexpected statuses {other:?}");
    assert_eq!(ok + limited, sent);
    let expected = BURST + RATE * elapsed;
    println!(
        "sent {sent} in {elapsed:.3} s ({:.0}/s): {ok} accepted, {limited} limited; \
         GCRA allows {expected:.1}",
        sent as f64 / elapsed
    );
    assert!(limited > 0, "no 429 among {sent} hits in {elapsed:.2} s");
    assert!(
        (ok as f64) >= BURST && (ok as f64 - expected).abs() <= 5.0 + 0.1 * RATE * elapsed,
        "accepted {ok}, expected about {expected:.1} (burst {BURST} + {RATE}/s × {elapsed:.3} s)"
    );

    server.wait_flushed();
    let site = server.counters("demo", None);
    assert_eq!(
        int(&site, "total"),
        ok,
        "counted must equal accepted: {site}"
    );
    assert_eq!(hits_metric(&server, "counted"), ok);
    assert_eq!(hits_metric(&server, "rate_limited"), limited);
    // Every hit carried its own vid: a refused hit leaves no visitor.
    assert_eq!(site["online"], ok, "{site}");

    // The limiter holds this one client, and forgets it once its budget is
    // full again (2 s at 50/s for a burst of 100) and a prune (every 5 s)
    // has run.
    let quiet_since = Instant::now();
    let gauge = || site_metric(&server, "luot_rate_limiter_clients", "demo");
    let held = gauge();
    assert!(held <= 1.0, "one client, {held} limiter entries");
    let pruned = poll(Duration::from_secs(12), || (gauge() == 0.0).then_some(()));
    assert!(
        pruned.is_some(),
        "the limiter still holds {} clients {:?} after the last hit",
        gauge(),
        quiet_since.elapsed()
    );
    println!(
        "limiter: {held} client(s) after the flood, 0 after {:.1} s",
        quiet_since.elapsed().as_secs_f64()
    );
}

// ---- 4 ----

#[test]
fn rotating_spoofed_forwarded_for_from_an_untrusted_peer_creates_no_limiter_state() {
    // `demo`: one hit keeps a client's state for a second (1/s), so spoofed
    // keys, were they used, would still be there when the gauge is read;
    // 127.0.0.1's 500 hits keep its own state for minutes.
    // `tight`: a burst of 50, to show rotation does not escape the limit.
    let config = format!(
        "{}{}",
        site("demo", "rate_limit_per_second = 1\nrate_limit_burst = 1000"),
        site("tight", "rate_limit_per_second = 1\nrate_limit_burst = 50")
    );
    let server = Server::start_with(&config, &[]);
    let _log_server = LogOnPanic(&server);
    let agent = common::agent();
    let forged = |i: u64| -> String {
        match i % 4 {
            0 => format!("203.0.{}.{}", i / 250, i % 250 + 1),
            1 => format!("198.51.100.{}, 10.{}.0.1", i % 250 + 1, i % 200),
            2 => format!("2001:db8:{i:x}::1"),
            _ => format!("6.6.{}.{}", i / 250, i % 250),
        }
    };
    let deadline = Deadline::new();
    for i in 0..500u64 {
        deadline.check("spoofed hits");
        let xff = forged(i);
        let r = post_hit(
            &agent,
            &server,
            true,
            &json!({"site": "demo", "page": format!("/p{}", i % 5)}),
            &[("X-Forwarded-For", xff.as_str())],
        );
        assert_eq!(r.status, 204, "hit {i} with XFF {xff}: {}", r.text());
    }
    // The limiter gauge, several times over a second (updated every flush).
    let mut gauge_max = 0.0f64;
    for _ in 0..6 {
        gauge_max = gauge_max.max(site_metric(&server, "luot_rate_limiter_clients", "demo"));
        thread::sleep(Duration::from_millis(200));
    }
    let mut tight_ok = 0u64;
    let mut tight_limited = 0u64;
    let start = Instant::now();
    let deadline = Deadline::new();
    for i in 0..100u64 {
        deadline.check("tight hits");
        let xff = forged(1000 + i);
        let r = post_hit(
            &agent,
            &server,
            true,
            &json!({"site": "tight", "page": "/t"}),
            &[("X-Forwarded-For", xff.as_str())],
        );
        match r.status {
            204 => tight_ok += 1,
            429 => tight_limited += 1,
            s => panic!("tight hit {i}: {s} {}", r.text()),
        }
    }
    let tight_secs = start.elapsed().as_secs_f64();
    server.wait_flushed();
    let tight_gauge = site_metric(&server, "luot_rate_limiter_clients", "tight");
    let site_fig = server.counters("demo", None);
    println!(
        "limiter clients demo max {gauge_max}, tight {tight_gauge}; tight accepted \
         {tight_ok} limited {tight_limited} in {tight_secs:.2} s; demo {site_fig}"
    );
    assert!(
        gauge_max <= 1.0,
        "spoofed X-Forwarded-For created limiter state: {gauge_max} clients"
    );
    assert!(tight_gauge <= 1.0, "tight: {tight_gauge} clients");
    assert_eq!(int(&site_fig, "total"), 500, "{site_fig}");
    assert_eq!(
        site_fig["online"], 1,
        "one peer, one UA, no vid: one hashed visitor, whatever the header says"
    );
    assert!(
        tight_ok >= 50 && (tight_ok as f64) <= 51.0 + tight_secs,
        "rotating the header escaped the limit: {tight_ok} of 100 accepted"
    );
    assert_eq!(hits_metric(&server, "rate_limited"), tight_limited);
    let v = server.wait_figures("demo", VISITORS_WAIT, |f| visitors(f, "today") == Some(1));
    assert!(v.is_ok(), "visitors today never 1: {v:?}");
}

// ---- 5 ----

#[test]
fn a_trusted_proxy_forwarded_for_is_honoured() {
    // 1/s with a burst of 10: ten hits keep a client's state for ten
    // seconds (so the gauge can be read before a prune), the eleventh is
    // refused.
    let config = site("demo", "rate_limit_per_second = 1\nrate_limit_burst = 10");
    let server = Server::start_with(&config, &[("LUOT_TRUSTED_PROXIES", "127.0.0.1")]);
    let _log_server = LogOnPanic(&server);
    let agent = common::agent();
    let clients: Vec<String> = (101..=125)
        .map(|i| format!("198.51.100.{i}"))
        .chain((101..=125).map(|i| format!("203.0.113.{i}")))
        .collect();
    assert_eq!(clients.len(), 50);
    let hit = |xff: &str, page: &str| -> u16 {
        post_hit(
            &agent,
            &server,
            true,
            &json!({"site": "demo", "page": page}),
            &[("X-Forwarded-For", xff)],
        )
        .status
    };
    let mut counted = 0u64;
    let mut eleventh_refused = 0u64;
    let deadline = Deadline::new();
    for addr in &clients {
        deadline.check("forwarded hits");
        let start = Instant::now();
        for j in 0..10 {
            let status = hit(addr, &format!("/p{j}"));
            assert_eq!(status, 204, "{addr}: hit {j} of its burst of 10: {status}");
            counted += 1;
        }
        let status = hit(addr, "/p10");
        match status {
            429 => eleventh_refused += 1,
            204 if start.elapsed() > Duration::from_millis(900) => counted += 1,
            s => panic!("{addr}: the 11th hit within a second answered {s}, not 429"),
        }
    }
    let mut last = (Value::Null, 0.0);
    let seen = poll(Duration::from_secs(4), || {
        let f = server.counters("demo", None);
        let gauge = site_metric(&server, "luot_rate_limiter_clients", "demo");
        let ok = f["online"] == 50 && gauge == 50.0;
        last = (f, gauge);
        ok.then_some(())
    });
    assert!(
        seen.is_some(),
        "expected 50 online and 50 limiter clients; last figures {} gauge {}",
        last.0,
        last.1
    );
    println!(
        "50 forwarded clients: online 50, limiter 50, {eleventh_refused} eleventh hits refused"
    );

    // "6.6.6.6, 198.51.100.7" through 127.0.0.1: the client is 198.51.100.7.
    for j in 0..10 {
        let status = hit("6.6.6.6, 198.51.100.7", &format!("/chain{j}"));
        assert_eq!(status, 204, "chain hit {j}");
        counted += 1;
    }
    let start = Instant::now();
    let same = hit("198.51.100.7", "/chain-more");
    let other = hit("6.6.6.6", "/chain-more");
    counted += u64::from(other == 204);
    if start.elapsed() < Duration::from_millis(900) {
        assert_eq!(
            same, 429,
            "198.51.100.7 used its burst through the chain: it is the client"
        );
    }
    assert_eq!(other, 204, "6.6.6.6 is another client, with a full burst");
    let mut online = 52u64;

    // Two header lines (two proxies' worth): the last line's hop is the
    // client, with a budget of its own.
    let two_lines = |page: &str| {
        post_hit(
            &agent,
            &server,
            true,
            &json!({"site": "demo", "page": page}),
            &[
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Forwarded-For", "198.51.100.8"),
            ],
        )
        .status
    };
    let start = Instant::now();
    for j in 0..10 {
        let status = two_lines(&format!("/lines{j}"));
        assert_eq!(
            status, 204,
            "two header lines, hit {j}: 198.51.100.8's burst"
        );
        counted += 1;
    }
    online += 1;
    let status = hit("198.51.100.8", "/lines-more");
    if start.elapsed() < Duration::from_millis(900) {
        assert_eq!(status, 429, "198.51.100.8 used its burst through two lines");
    } else if status == 204 {
        counted += 1;
    }

    // IPv6 clients are limited per /64, and are distinct visitors.
    let start = Instant::now();
    for j in 0..10 {
        let status = hit("2001:db8:1:2::1", &format!("/v6/{j}"));
        assert_eq!(status, 204, "2001:db8:1:2::1 hit {j}");
        counted += 1;
    }
    online += 1;
    let neighbour = hit("2001:db8:1:2::ffff", "/v6/more");
    let next_net = hit("2001:db8:1:3::1", "/v6/more");
    if start.elapsed() < Duration::from_millis(900) {
        assert_eq!(neighbour, 429, "the same /64 shares one budget");
    } else if neighbour == 204 {
        counted += 1;
        online += 1;
    }
    assert_eq!(next_net, 204, "another /64 has its own budget");
    counted += 1;
    online += 1;

    let f = server
        .wait_figures("demo", Duration::from_secs(4), |f| f["online"] == online)
        .unwrap_or_else(|f| panic!("expected {online} online: {f}"));
    server.wait_flushed();
    let f2 = server.counters("demo", None);
    assert_eq!(int(&f2, "total"), counted, "{f} {f2}");
}

// ---- 6 ----

#[test]
fn do_not_track_is_counted_without_identity() {
    let config = format!(
        "{}{}",
        site("demo", ""),
        site("open", "respect_dnt = false")
    );
    let server = Server::start_with(&config, &[]);
    let _log_server = LogOnPanic(&server);
    let agent = common::agent();
    let deadline = Deadline::new();
    for id in ["demo", "open"] {
        deadline.check("DNT hits");
        for k in 0..10 {
            for (header, prefix) in [("DNT", "dnt"), ("Sec-GPC", "gpc")] {
                let r = post_hit(
                    &agent,
                    &server,
                    true,
                    &json!({"site": id, "page": "/private", "vid": format!("{prefix}-{k}")}),
                    &[(header, "1")],
                );
                assert_eq!(r.status, 204, "{id} {header}: {}", r.text());
            }
        }
        for k in 0..5 {
            // DNT: 0 is no objection; a plain beacon neither.
            let r = post_hit(
                &agent,
                &server,
                true,
                &json!({"site": id, "page": "/private", "vid": format!("dnt0-{k}")}),
                &[("DNT", "0")],
            );
            assert_eq!(r.status, 204);
            let r = post_hit(
                &agent,
                &server,
                true,
                &json!({"site": id, "page": "/private", "vid": format!("plain-{k}")}),
                &[],
            );
            assert_eq!(r.status, 204);
        }
        for k in 0..3 {
            // A pixel with DNT and no vid: no IP + UA hash either.
            let ua = format!("{BROWSER_UA} dnt-pixel/{k}");
            let r = pixel(
                &agent,
                &server,
                &format!("site={id}&page=%2Fprivate"),
                &[("DNT", "1"), ("User-Agent", ua.as_str())],
            );
            assert_eq!(r.status, 200);
        }
    }
    server.wait_flushed();
    for (id, online) in [("demo", 10u64), ("open", 33u64)] {
        let f = server
            .wait_figures(id, VISITORS_WAIT, |f| {
                visitors(f, "today").is_some()
                    && visitors(f, "today") == visitors(f, "total")
                    && visitors(f, "today") == Some(online)
            })
            .unwrap_or_else(|f| panic!("{id}: visitors today/total never {online}: {f}"));
        assert_eq!(int(&f, "total"), 33, "{id}: every hit counts: {f}");
        assert_eq!(f["online"], online, "{id}: {f}");
        println!("{id}: {f}");
    }
    assert_eq!(
        server.metric_or_zero("luot_anonymous_hits_total{reason=\"no_track\"}") as u64,
        23,
        "demo's 20 DNT/GPC beacons and 3 DNT pixels are anonymous; open's are not"
    );
}

// ---- 7 ----

#[test]
fn dedupe_window_counts_a_refresh_once() {
    let config = format!(
        "{}{}",
        site("demo", "dedupe_window = \"30m\""),
        site("plain", "")
    );
    let server = Server::start_with(&config, &[]);
    let _log_server = LogOnPanic(&server);
    let agent = common::agent();
    for id in ["demo", "plain"] {
        let hit = |page: &str, vid: Option<&str>| {
            let mut beacon = json!({"site": id, "page": page});
            if let Some(vid) = vid {
                beacon["vid"] = json!(vid);
            }
            let r = post_hit(&agent, &server, true, &beacon, &[]);
            assert_eq!(r.status, 204, "{id} {page} {vid:?}: {}", r.text());
        };
        for _ in 0..5 {
            hit("/a", Some("v1")); // one reader refreshing
        }
        hit("/b", Some("v1")); // the same reader, another page
        hit("/a", Some("v2")); // another reader
        for _ in 0..3 {
            hit("/a?utm=x", None); // a hashed reader refreshing (query dropped)
        }
    }
    server.wait_flushed();
    let demo = server.counters("demo", None);
    let plain = server.counters("plain", None);
    println!("demo {demo}\nplain {plain}");
    assert_eq!(int(&demo, "total"), 4, "refreshes counted: {demo}");
    assert_eq!(int(&server.counters("demo", Some("/a")), "total"), 3);
    assert_eq!(int(&server.counters("demo", Some("/b")), "total"), 1);
    assert_eq!(demo["online"], 3, "{demo}");
    assert_eq!(int(&plain, "total"), 10, "no window: every load: {plain}");
    assert_eq!(int(&server.counters("plain", Some("/a")), "total"), 9);
    assert_eq!(plain["online"], 3, "{plain}");
    assert_eq!(hits_metric(&server, "duplicate"), 4 + 2);
    assert_eq!(hits_metric(&server, "counted"), 14);
}

// ---- 8 ----

#[test]
fn ten_thousand_distinct_visitors_give_visitors_today_within_two_percent() {
    const N: usize = 10_000;
    let server = Server::start_with(&site("demo", NO_LIMIT), &[]);
    let _log_server = LogOnPanic(&server);
    let start = Instant::now();
    let statuses = in_parallel(4, N, |agent, i| {
        post_hit(
            agent,
            &server,
            true,
            &json!({"site": "demo", "page": format!("/p{}", i % 20), "vid": format!("reader-{i}")}),
            &[],
        )
        .status
    });
    let send_secs = start.elapsed().as_secs_f64();
    assert_eq!(statuses, BTreeMap::from([(204, N as u64)]), "statuses");
    server.wait_flushed();
    let settled = server.wait_figures("demo", VISITORS_WAIT, |f| {
        int(f, "total") == N as u64
            && visitors(f, "today").is_some_and(|v| rel_err(v, N as u64) <= 0.02)
            && visitors(f, "total").is_some_and(|v| rel_err(v, N as u64) <= 0.02)
    });
    let f = settled.unwrap_or_else(|f| panic!("figures never within 2 % of {N}: {f}"));
    // One more refresh (every 5 s): the figure must have settled, not be
    // passing through the band on its way up.
    thread::sleep(Duration::from_millis(5_500));
    let g = server.counters("demo", None);
    let today = visitors(&g, "today").expect("visitors");
    let total = visitors(&g, "total").expect("visitors");
    let online = int(&g, "online");
    println!(
        "{N} vids sent in {send_secs:.1} s; visitors today {today} ({:+.2} %), total {total} \
         ({:+.2} %), online {online} ({:+.2} %); earlier reading {}",
        (today as f64 / N as f64 - 1.0) * 100.0,
        (total as f64 / N as f64 - 1.0) * 100.0,
        (online as f64 / N as f64 - 1.0) * 100.0,
        f["visitors"]
    );
    assert_eq!(int(&g, "total"), N as u64);
    assert!(rel_err(today, N as u64) <= 0.02, "today {today}");
    assert!(rel_err(total, N as u64) <= 0.02, "total {total}");
    assert!(rel_err(online, N as u64) <= 0.02, "online {online}");
}

// ---- 9 ----

#[test]
fn unique_counts_are_equal_across_two_instances_sharing_redis() {
    const N: usize = 3_000;
    const BOTH: usize = 500;
    let redis = RedisServer::start();
    let config = site("demo", NO_LIMIT);
    let env = [("LUOT_REDIS_URL", redis.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Server::start_with(&config, &env);
    let _log_a = LogOnPanic(&a);
    let b = Server::start_with(&config, &env);
    let _log_b = LogOnPanic(&b);
    // vid i goes to A when i < N/2, else to B; the first BOTH to both.
    let mut plan: Vec<(usize, usize)> = (0..N).map(|i| (usize::from(i >= N / 2), i)).collect();
    plan.extend((0..BOTH).map(|i| (1, i)));
    let servers = [&a, &b];
    let start = Instant::now();
    let statuses = in_parallel(4, plan.len(), |agent, k| {
        let (which, i) = plan[k];
        post_hit(
            agent,
            servers[which],
            true,
            &json!({"site": "demo", "page": format!("/p{}", i % 7), "vid": format!("u-{i}")}),
            &[],
        )
        .status
    });
    let send_secs = start.elapsed().as_secs_f64();
    let hits = (N + BOTH) as u64;
    assert_eq!(statuses, BTreeMap::from([(204, hits)]));
    let mut readings = Vec::new();
    for (name, s) in [("A", &a), ("B", &b)] {
        let f = s
            .wait_figures("demo", VISITORS_WAIT, |f| {
                int(f, "total") == hits
                    && f["stale"] == false
                    && visitors(f, "today").is_some_and(|v| rel_err(v, N as u64) <= 0.02)
            })
            .unwrap_or_else(|f| {
                panic!("instance {name}: never total {hits} and ~{N} visitors: {f}")
            });
        readings.push(f);
    }
    // Then both must agree (each re-reads the shared sketches every 5 s).
    let mut last = (Value::Null, Value::Null);
    let agreed = poll(Duration::from_secs(15), || {
        let (fa, fb) = (a.counters("demo", None), b.counters("demo", None));
        let ok = fa["visitors"] == fb["visitors"] && fa["online"] == fb["online"];
        last = (fa.clone(), fb.clone());
        ok.then_some((fa, fb))
    });
    let (fa, fb) = agreed.unwrap_or_else(|| {
        panic!(
            "A and B never agreed on visitors and online:\nA {}\nB {}",
            last.0, last.1
        )
    });
    let today = visitors(&fa, "today").expect("visitors");
    let online = int(&fa, "online");
    println!(
        "{hits} hits in {send_secs:.1} s; A {}, B {}: visitors today {today} ({:+.2} %), \
         online {online} ({:+.2} %)",
        fa["visitors"],
        fb["visitors"],
        (today as f64 / N as f64 - 1.0) * 100.0,
        (online as f64 / N as f64 - 1.0) * 100.0
    );
    assert!(rel_err(today, N as u64) <= 0.02, "today {today}");
    assert!(rel_err(online, N as u64) <= 0.02, "online {online}");
    assert_eq!(int(&fa, "total"), hits);
    assert_eq!(int(&fb, "total"), hits);
}

// ---- 10 ----

#[test]
fn junk_pages_beyond_max_pages_keep_memory_bounded() {
    const MAX: u64 = 1_000;
    const FIRST: usize = 2_000;
    const N: usize = 20_000;
    let config = site("demo", &format!("max_pages = {MAX}\n{NO_LIMIT}"));
    let server = Server::start_with(&config, &[]);
    let _log_server = LogOnPanic(&server);
    // Long junk paths (a scanner's), distinct each time; every 10th asks
    // for the page's figures (the answer reads them).
    let junk = |i: usize| format!("/wp-admin/{i:06}/{}", "x".repeat(200));
    let send = |agent: &ureq::Agent, i: usize| {
        post_hit(
            agent,
            &server,
            !i.is_multiple_of(10),
            &json!({"site": "demo", "page": junk(i), "vid": format!("s{}", i % 100)}),
            &[],
        )
        .status
    };
    // The first pages in order, so that the kept ones are known.
    let agent = common::agent();
    let deadline = Deadline::new();
    for i in 0..FIRST {
        deadline.check("junk pages");
        let status = send(&agent, i);
        assert!(is_2xx(status), "junk {i}: {status}");
    }
    server.wait_flushed();
    let rss_first = rss_kib(server.pid());
    let start = Instant::now();
    let statuses = in_parallel(4, N - FIRST, |agent, k| send(agent, FIRST + k));
    let send_secs = start.elapsed().as_secs_f64();
    assert!(statuses.keys().all(|s| is_2xx(*s)), "statuses {statuses:?}");
    assert_eq!(statuses.values().sum::<u64>(), (N - FIRST) as u64);
    server.wait_flushed();
    let rss_last = rss_kib(server.pid());
    let pages = site_metric(&server, "luot_site_pages", "demo");
    let overflow = site_metric(&server, "luot_page_overflow_total", "demo");
    let f = server.counters("demo", None);
    println!(
        "{} junk pages in {send_secs:.1} s; RSS {rss_first} KiB after {FIRST}, \
         {rss_last} KiB after {N} ({:+} KiB); pages {pages}, overflow {overflow}; {f}",
        N - FIRST,
        rss_last as i64 - rss_first as i64
    );
    assert_eq!(pages, MAX as f64, "luot_site_pages");
    assert_eq!(
        overflow,
        (N as u64 - MAX) as f64,
        "luot_page_overflow_total"
    );
    assert_eq!(int(&f, "total"), N as u64, "{f}");
    assert!(
        rss_last < rss_first + 30 * 1024,
        "RSS grew from {rss_first} to {rss_last} KiB over {} junk pages",
        N - FIRST
    );
    // A kept page has its figure; an overflowed one has none (200, zeros).
    let kept = server.counters("demo", Some(&junk(1)));
    assert_eq!(int(&kept, "total"), 1, "{kept}");
    let dropped = server.counters("demo", Some(&junk(N - 1)));
    assert_eq!(int(&dropped, "total"), 0, "{dropped}");
}

// ---- 11 ----

#[test]
fn a_mixed_stream_is_counted_as_a_careful_human_would() {
    // Behind one trusted proxy (127.0.0.1): browsers, bots, a reloading
    // script over its limit, and a client forging X-Forwarded-For hops in
    // front of the one the proxy appends.
    let config = site(
        "demo",
        "dedupe_window = \"30m\"\nrate_limit_per_second = 20\nrate_limit_burst = 40",
    );
    let server = Server::start_with(&config, &[("LUOT_TRUSTED_PROXIES", "127.0.0.1")]);
    let _log_server = LogOnPanic(&server);

    #[derive(Clone)]
    struct Event {
        xff: String,
        ua: String,
        vid: Option<String>,
        page: String,
    }
    let mut events: Vec<Event> = Vec::new();
    // 40 people, 30 with a vid, 10 without (IP + UA hash); each reads 3
    // pages and refreshes the second twice: 3 views each.
    const PEOPLE: usize = 40;
    for p in 0..PEOPLE {
        let ua = REAL_BROWSERS[p % REAL_BROWSERS.len()].1.to_owned();
        let vid = (p < 30).then(|| format!("person-{p}"));
        let xff = format!("203.0.113.{}", p + 1);
        for page in ["/home", "/news/1", "/news/1", "/news/1", "/about"] {
            events.push(Event {
                xff: xff.clone(),
                ua: ua.clone(),
                vid: vid.clone(),
                page: format!("{page}?from={p}"),
            });
        }
    }
    // 20 crawlers, two pages each: nothing.
    let crawlers = sampled_crawlers(20);
    for (k, ua) in crawlers.iter().enumerate() {
        for page in ["/home", "/robots-like"] {
            events.push(Event {
                xff: format!("192.0.2.{}", k + 1),
                ua: ua.clone(),
                vid: Some(format!("crawler-{k}")),
                page: page.to_owned(),
            });
        }
    }
    // One client forging the left hops, 20 distinct pages, no vid: 20
    // views by one visitor (198.51.100.99, appended by the proxy).
    for k in 0..20 {
        events.push(Event {
            xff: format!("10.9.{k}.1, 6.6.{k}.6, 198.51.100.99"),
            ua: BROWSER_UA.to_owned(),
            vid: None,
            page: format!("/spoof/{k}"),
        });
    }
    // A deterministic shuffle (LCG).
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for i in (1..events.len()).rev() {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        events.swap(i, (seed >> 33) as usize % (i + 1));
    }

    // The abuser reloads one page as fast as it can while the others read.
    let (abuser_ok, abuser_limited, abuser_secs, others) = thread::scope(|s| {
        let abuser = s.spawn(|| {
            let agent = common::agent();
            let (mut ok, mut limited) = (0u64, 0u64);
            let start = Instant::now();
            for _ in 0..600 {
                if start.elapsed() > Duration::from_millis(1500) {
                    break;
                }
                let r = post_hit(
                    &agent,
                    &server,
                    true,
                    &json!({"site": "demo", "page": "/hot", "vid": "script"}),
                    &[("X-Forwarded-For", "198.51.100.66")],
                );
                match r.status {
                    204 => ok += 1,
                    429 => limited += 1,
                    s => panic!("abuser: {s} {}", r.text()),
                }
            }
            (ok, limited, start.elapsed().as_secs_f64())
        });
        let agent = common::agent();
        let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
        let deadline = Deadline::new();
        for e in &events {
            deadline.check("the mixed stream");
            let mut beacon = json!({"site": "demo", "page": e.page});
            if let Some(vid) = &e.vid {
                beacon["vid"] = json!(vid);
            }
            let r = post_hit(
                &agent,
                &server,
                true,
                &beacon,
                &[
                    ("X-Forwarded-For", e.xff.as_str()),
                    ("User-Agent", e.ua.as_str()),
                ],
            );
            *statuses.entry(r.status).or_insert(0) += 1;
        }
        let (ok, limited, secs) = abuser.join().expect("abuser thread");
        (ok, limited, secs, statuses)
    });
    assert_eq!(
        others,
        BTreeMap::from([(204, events.len() as u64)]),
        "people, crawlers and the forger stay within their own limits"
    );
    assert!(abuser_limited > 0, "the script was never limited");
    assert!(
        (abuser_ok as f64) <= 40.0 + 20.0 * abuser_secs + 2.0,
        "the script got {abuser_ok} hits in {abuser_secs:.2} s past a 20/s, 40 burst limit"
    );

    // What a careful human counts: each person's 3 distinct page views, the
    // forger's 20 views, the script's one view; nothing from crawlers.
    let views = (PEOPLE * 3 + 20 + 1) as u64;
    let people = (PEOPLE + 1 + 1) as u64;
    server.wait_flushed();
    let f = server
        .wait_figures("demo", VISITORS_WAIT, |f| {
            visitors(f, "today").is_some_and(|v| v.abs_diff(people) <= 1)
        })
        .unwrap_or_else(|f| panic!("visitors today never {people} (± 1): {f}"));
    println!(
        "abuser {abuser_ok} accepted, {abuser_limited} limited in {abuser_secs:.2} s; \
         expected {views} views by {people} visitors; got {f}"
    );
    assert_eq!(int(&f, "total"), views, "{f}");
    assert_eq!(
        int(&server.counters("demo", Some("/news/1")), "total"),
        PEOPLE as u64
    );
    assert_eq!(
        int(&server.counters("demo", Some("/robots-like")), "total"),
        0
    );
    assert_eq!(int(&server.counters("demo", Some("/hot")), "total"), 1);
    let today = visitors(&f, "today").expect("visitors");
    assert!(
        today.abs_diff(people) <= 1,
        "visitors today {today}, expected {people}"
    );
    assert!(
        int(&f, "online").abs_diff(people) <= 1,
        "online {}, expected {people}",
        f["online"]
    );
    assert_eq!(hits_metric(&server, "bot"), (crawlers.len() * 2) as u64);
    assert_eq!(hits_metric(&server, "rate_limited"), abuser_limited);
    assert_eq!(
        hits_metric(&server, "duplicate"),
        PEOPLE as u64 * 2 + (abuser_ok - 1)
    );
    assert_eq!(hits_metric(&server, "counted"), views);
}

// ---- 12 ----

#[test]
fn malformed_vids_fall_back_to_the_one_hashed_visitor() {
    let server = Server::start();
    let _log_server = LogOnPanic(&server);
    let agent = common::agent();
    let long = "a".repeat(65);
    let bad = [
        "",
        long.as_str(),
        "has space",
        "dot.ted",
        "slash/ed",
        "ti\u{1ebf}ng-vi\u{1ec7}t",
        "<script>",
        "a+b",
        "semi;colon",
        "%41",
    ];
    for (k, vid) in bad.iter().enumerate() {
        for round in 0..3 {
            let r = post_hit(
                &agent,
                &server,
                true,
                &json!({"site": "demo", "page": format!("/m/{k}/{round}"), "vid": vid}),
                &[],
            );
            assert_eq!(r.status, 204, "vid {vid:?}: {}", r.text());
        }
    }
    // The longest valid vid is one more visitor.
    let longest = "Z".repeat(64);
    let r = post_hit(
        &agent,
        &server,
        true,
        &json!({"site": "demo", "page": "/m/ok", "vid": longest}),
        &[],
    );
    assert_eq!(r.status, 204);
    let hits = (bad.len() * 3 + 1) as u64;
    let f = server
        .wait_figures("demo", VISITORS_WAIT, |f| visitors(f, "today") == Some(2))
        .unwrap_or_else(|f| {
            panic!(
                "{} malformed vids + 1 valid: visitors never 2: {f}",
                bad.len()
            )
        });
    assert_eq!(int(&f, "total"), hits, "{f}");
    assert_eq!(
        f["online"], 2,
        "malformed vids are ignored: one hashed visitor, plus one valid vid: {f}"
    );
}
