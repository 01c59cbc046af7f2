//! The reader faces in a real browser: Debian's headless Chromium, driven
//! from its command line (`--dump-dom`, `--screenshot`), against the real
//! `luot` binary and test pages from `tests/web/` served by a tiny HTTP
//! server on another loopback origin, as a real site would be.
//!
//! Chromium is launched with a desktop browser's User-Agent: headless
//! Chromium announces itself as `HeadlessChrome` and is rightly not
//! counted (one test checks that too). Screenshots go to
//! `target/test-artifacts/`.
//!
//! Without Chromium these tests fail and say how to get it: `bash
//! tests/run.sh` installs it (as root, from Debian packages).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::chromium::{Launch, text_of};
use common::{BROWSER_UA, Server, poll};
use serde_json::{Value, json};

/// `demo` carrying over an old total, so digit grouping shows.
const DEMO_1234560: &str = r#"
[[sites]]
id = "demo"
timezone = "Asia/Ho_Chi_Minh"
origins = ["*"]
hosts = ["localhost", "127.0.0.1"]
initial_total = 1234560
language = "vi"
"#;

/// The beacons a test page recorded (one JSON body per line in `#sent`).
fn beacons(dom: &str) -> Vec<Value> {
    text_of(dom, "sent")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

// ---- the test site ----

/// A tiny HTTP/1.1 server for test pages: fixed routes, one thread per
/// connection, `Connection: close`. It stands for the site that embeds
/// luot, on an origin of its own.
struct PageServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Every request's target, in order.
    requests: Arc<Mutex<Vec<String>>>,
}

type Routes = HashMap<String, (&'static str, Vec<u8>)>;

impl PageServer {
    fn start(routes: Routes) -> PageServer {
        PageServer::start_on(
            TcpListener::bind("127.0.0.1:0").expect("bind the page server"),
            routes,
        )
    }

    /// Serves `routes` on `listener`, bound by a test that must know the
    /// site's origin before it starts luot.
    fn start_on(listener: TcpListener, routes: Routes) -> PageServer {
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let routes = Arc::new(routes);
        {
            let stop = Arc::clone(&stop);
            let requests = Arc::clone(&requests);
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let routes = Arc::clone(&routes);
                            let requests = Arc::clone(&requests);
                            thread::spawn(move || serve_page(stream, &routes, &requests));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        PageServer {
            addr,
            stop,
            requests,
        }
    }

    /// The URL of `path` on host `host` (`localhost` or `127.0.0.1`).
    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.addr.port())
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_page(mut stream: TcpStream, routes: &Routes, requests: &Mutex<Vec<String>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let path = target.split('?').next().unwrap_or("/").to_string();
    requests.lock().unwrap().push(target);
    let (status, content_type, body) = match routes.get(&path) {
        Some((ct, body)) => ("200 OK", *ct, body.as_slice()),
        None => ("404 Not Found", "text/plain", &b"not found"[..]),
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

/// `tests/web/<file>` with `{{LUOT}}` replaced by the luot server's origin.
fn web_page(file: &str, luot: &Server) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/web")
        .join(file);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.replace("{{LUOT}}", &format!("http://{}", luot.public))
        .into_bytes()
}

fn routes(entries: Vec<(&str, &'static str, Vec<u8>)>) -> Routes {
    entries
        .into_iter()
        .map(|(path, ct, body)| (path.to_string(), (ct, body)))
        .collect()
}

const HTML: &str = "text/html; charset=utf-8";

fn total(server: &Server, page: Option<&str>) -> u64 {
    let read =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.total("demo", page)));
    read.unwrap_or_else(|_| panic!("luot did not answer; its log:\n{}", server.log()))
}

fn hits(server: &Server, page: &str, n: usize) {
    for i in 0..n {
        let r = server.hit_as(
            &json!({"site": "demo", "page": page, "vid": format!("reader-{i}")}),
            BROWSER_UA,
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

// ---- the tests ----

#[test]
fn snippet_counts_one_view_per_load_and_fills_the_footer() {
    let luot = Server::start_with(DEMO_1234560, &[]);
    hits(&luot, "/elsewhere", 4);
    let site = PageServer::start(routes(vec![(
        "/snippet.html",
        HTML,
        web_page("snippet.html", &luot),
    )]));
    let url = site.url("localhost", "/snippet.html");

    // First view.
    let dom = Launch::new(&url).dump_dom();
    let sent = beacons(&dom);
    assert_eq!(sent.len(), 1, "one beacon per page view: {sent:?}");
    assert_eq!(sent[0]["site"], "demo");
    assert_eq!(sent[0]["page"], url.as_str());
    assert_eq!(sent[0]["ref"], "");
    let vid = sent[0]["vid"].as_str().expect("a visitor id without DNT");
    assert!(
        vid.len() == 24 && vid.bytes().all(|b| b.is_ascii_hexdigit()),
        "{vid}"
    );
    assert_eq!(
        text_of(&dom, "total-pad"),
        "01234565",
        "padded, no grouping"
    );
    assert_eq!(text_of(&dom, "total"), "1.234.565", "grouped for lang=vi");
    assert_eq!(text_of(&dom, "today"), "5");
    assert_eq!(text_of(&dom, "week"), "5");
    assert_eq!(text_of(&dom, "month"), "5");
    assert_eq!(text_of(&dom, "yesterday"), "0");
    assert_eq!(text_of(&dom, "online"), "5", "4 readers + this browser");
    assert_eq!(text_of(&dom, "page-total"), "1");
    assert_eq!(text_of(&dom, "page-today"), "1");
    assert_eq!(
        text_of(&dom, "page-online"),
        "1",
        "this browser reads the page now"
    );
    assert_eq!(total(&luot, None), 1_234_565);
    assert_eq!(total(&luot, Some("/snippet.html")), 1);

    // Second view: one more, on the server and on the page.
    let dom = Launch::new(&url).dump_dom();
    assert_eq!(beacons(&dom).len(), 1);
    assert_eq!(text_of(&dom, "total-pad"), "01234566");
    assert_eq!(text_of(&dom, "page-total"), "2");
    assert_eq!(total(&luot, None), 1_234_566);

    // Headless Chromium as itself is a bot: answered, shown, not counted.
    let mut headless = Launch::new(&url);
    headless.user_agent = None;
    let dom = headless.dump_dom();
    assert_eq!(text_of(&dom, "total-pad"), "01234566");
    assert_eq!(
        total(&luot, None),
        1_234_566,
        "HeadlessChrome is not counted"
    );
    assert_eq!(luot.metric("luot_hits_total{result=\"bot\"}"), Some(1.0));

    // The script came from luot, the page from the site: two origins.
    assert!(
        site.requests()
            .iter()
            .all(|target| !target.contains("luot.js"))
    );
    Launch::new(&url).screenshot("snippet-page.png", 480, 420);
}

#[test]
fn snippet_sends_no_visitor_id_under_do_not_track() {
    let luot = Server::start();
    let site = PageServer::start(routes(vec![(
        "/snippet.html",
        HTML,
        web_page("snippet.html", &luot),
    )]));
    let url = site.url("127.0.0.1", "/snippet.html");
    let mut launch = Launch::new(&url);
    launch.do_not_track = true;
    let dom = launch.dump_dom();
    assert_eq!(text_of(&dom, "dnt"), "1", "the browser's DNT setting is on");
    let sent = beacons(&dom);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].get("vid").is_none(), "no id under DNT: {}", sent[0]);
    // Counted, without any identity.
    assert_eq!(text_of(&dom, "total-pad"), "00000001");
    assert_eq!(text_of(&dom, "online"), "0");
    assert_eq!(total(&luot, None), 1);
    assert_eq!(
        luot.metric("luot_anonymous_hits_total{reason=\"no_track\"}"),
        Some(1.0)
    );
}

#[test]
fn single_page_app_navigation_sends_a_beacon_per_new_path() {
    let luot = Server::start();
    let site = PageServer::start(routes(vec![(
        "/spa.html",
        HTML,
        web_page("spa.html", &luot),
    )]));
    let first = site.url("127.0.0.1", "/spa.html");
    let mut launch = Launch::new(&first);
    launch.budget_ms = 10_000;
    let dom = launch.dump_dom();
    assert_eq!(
        text_of(&dom, "steps").trim(),
        "push replace push-query back"
    );
    let sent = beacons(&dom);
    let pages: Vec<&str> = sent.iter().map(|b| b["page"].as_str().unwrap()).collect();
    let second = site.url("127.0.0.1", "/spa/second");
    assert_eq!(
        pages,
        [first.as_str(), second.as_str(), first.as_str()],
        "a beacon for each new path, none for a new hash or query"
    );
    assert_eq!(
        sent[1]["ref"],
        first.as_str(),
        "the previous URL is the referrer"
    );
    assert_eq!(sent[0]["vid"], sent[1]["vid"], "one visitor");
    assert_eq!(total(&luot, None), 3);
    assert_eq!(total(&luot, Some("/spa.html")), 2);
    assert_eq!(total(&luot, Some("/spa/second")), 1);
    assert_eq!(text_of(&dom, "total"), "3");
    assert_eq!(text_of(&dom, "page-total"), "2");
}

#[test]
fn widget_renders_the_vietnamese_box_and_refreshes_it() {
    let luot = Server::start();
    hits(&luot, "/a", 7);

    // The widget itself, straight from luot.
    let url = luot.url("/widget/demo");
    let dom = Launch::new(&url).dump_dom();
    for text in [
        "Lượt Truy Cập",
        "Hôm nay:",
        "Hôm qua:",
        "Tuần này:",
        "Tháng này:",
        "Đang trực tuyến:",
        "aria-label=\"00000007\"",
    ] {
        assert!(
            dom.contains(text),
            "{text:?} missing from the rendered widget"
        );
    }
    let shot = Launch::new(&url).screenshot("widget-vi.png", 320, 190);
    eprintln!("screenshot: {}", shot.display());
    let en = luot.url("/widget/demo?lang=en&theme=dark");
    Launch::new(&en).screenshot("widget-en-dark.png", 320, 190);

    // In iframes on a site's page, with badges.
    let site = PageServer::start(routes(vec![(
        "/faces.html",
        HTML,
        web_page("faces.html", &luot),
    )]));
    let host = site.url("localhost", "/faces.html");
    let dom = Launch::new(&host).dump_dom();
    let size = text_of(&dom, "badge-size");
    let (w, h) = size
        .split_once('x')
        .unwrap_or_else(|| panic!("the badge did not load as an image: {size}"));
    assert!(w.parse::<u32>().unwrap() > 50, "{size}");
    assert_eq!(h, "20", "{size}");
    Launch::new(&host).screenshot("faces.png", 680, 300);

    // The 30 s refresh: the same page, served where its relative counters
    // URL answers figures of our choosing.
    let widget_html = luot.get("/widget/demo").body;
    let fake = json!({
        "site": "demo", "page": null, "total": 424242, "today": 1234, "yesterday": 808,
        "week": 2042, "month": 5000, "online": 77, "visitors": null, "stale": false,
        "as_of": "2026-11-27T21:00:00+07:00"
    });
    let fake_site = PageServer::start(routes(vec![
        ("/widget/demo", HTML, widget_html),
        (
            "/api/v1/sites/demo/counters",
            "application/json",
            fake.to_string().into_bytes(),
        ),
    ]));
    let copy = fake_site.url("127.0.0.1", "/widget/demo");
    let before = Launch::new(&copy).dump_dom();
    assert!(before.contains("aria-label=\"00000007\""), "no refresh yet");
    let mut later = Launch::new(&copy);
    later.budget_ms = 35_000;
    let after = later.dump_dom();
    assert!(after.contains("aria-label=\"00424242\""), "{after}");
    assert!(after.contains("data-k=\"today\">1.234<"), "{after}");
    assert!(after.contains("data-k=\"online\">77<"), "{after}");
    assert!(
        fake_site
            .requests()
            .iter()
            .any(|t| t == "/api/v1/sites/demo/counters"),
        "the widget asked for fresh figures"
    );
}

#[test]
fn an_unmodified_busuanzi_client_fills_its_three_figures() {
    let luot = Server::start();
    hits(&luot, "/about", 2);
    let seen = poll(Duration::from_secs(20), || {
        (luot.counters("demo", None)["visitors"]["total"] == 2).then_some(())
    });
    assert!(seen.is_some(), "visitors never read back");

    let client = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/vendor/busuanzi.pure.js"),
    )
    .unwrap();
    assert!(client.contains("//busuanzi.ibruce.info/busuanzi?jsonpCallback=BusuanziCallback"));
    // What self-hosters do: point the client at their own server.
    let client = client.replace("//busuanzi.ibruce.info", &format!("//{}", luot.public));
    let site = PageServer::start(routes(vec![
        (
            "/posts/hello-world/",
            HTML,
            web_page("busuanzi.html", &luot),
        ),
        (
            "/vendor/busuanzi.pure.js",
            "application/javascript",
            client.into_bytes(),
        ),
    ]));
    let url = site.url("localhost", "/posts/hello-world/");
    let started = Instant::now();
    let dom = Launch::new(&url).dump_dom();
    assert_eq!(text_of(&dom, "busuanzi_value_site_pv"), "3");
    assert_eq!(text_of(&dom, "busuanzi_value_page_pv"), "1");
    let uv: u64 = text_of(&dom, "busuanzi_value_site_uv").parse().unwrap();
    assert!(
        (2..=3).contains(&uv),
        "site_uv {uv}: all-time visitors as last read"
    );
    for container in ["site_pv", "site_uv", "page_pv"] {
        let marker = format!("id=\"busuanzi_container_{container}\" style=\"display: inline;\"");
        assert!(dom.contains(&marker), "{marker} missing:\n{dom}");
    }
    // Counted on the Referer's site and path.
    assert_eq!(total(&luot, None), 3);
    assert_eq!(total(&luot, Some("/posts/hello-world")), 1);
    eprintln!("busuanzi page filled in {:?}", started.elapsed());
    Launch::new(&url).screenshot("busuanzi.png", 900, 260);
}

#[test]
fn the_ignore_links_stop_the_snippets_beacons_and_undo_brings_them_back() {
    // The site's origin is declared, so luot's /ignore page links to it.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page server");
    let origin = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let config = format!(
        "[[sites]]\nid = \"demo\"\ntimezone = \"Asia/Ho_Chi_Minh\"\norigins = [\"{origin}\"]\n\
         initial_total = 0\nlanguage = \"en\"\n"
    );
    let luot = Server::start_with(&config, &[]);

    // The links an editor follows, as luot's page gives them.
    let page = luot.get("/ignore/demo").text();
    let link = |state: &str| {
        let href = format!("{origin}/#luot-ignore={state}");
        assert!(
            page.contains(&format!("href=\"{href}\"")),
            "{href} missing:\n{page}"
        );
        href
    };
    let (on, off) = (link("on"), link("off"));
    let flow = String::from_utf8(web_page("ignore-flow.html", &luot))
        .unwrap()
        .replace("{{ON}}", &on)
        .replace("{{OFF}}", &off);
    let site = PageServer::start_on(
        listener,
        routes(vec![
            ("/", HTML, web_page("snippet.html", &luot)),
            ("/flow.html", HTML, flow.into_bytes()),
        ]),
    );
    let flow_url = format!("{origin}/flow.html");
    let mut launch = Launch::new(&flow_url);
    launch.budget_ms = 20_000;
    let dom = launch.dump_dom();
    assert_eq!(text_of(&dom, "done"), "done", "{dom}");
    // Beacons each view sent, and the flag after it: none while left out,
    // one a view again once undone.
    assert_eq!(
        text_of(&dom, "log"),
        "on=0:1 again=0:1 off=1:null after=1:null",
        "{dom}"
    );
    // What luot received: the two views after the undo, nothing else.
    let received = poll(Duration::from_secs(20), || {
        let all: f64 = [
            "counted",
            "bot",
            "ignored",
            "forbidden",
            "invalid",
            "rate_limited",
        ]
        .iter()
        .map(|r| luot.metric_or_zero(&format!("luot_hits_total{{result=\"{r}\"}}")))
        .sum();
        (all == 2.0 && total(&luot, None) == 2).then_some(())
    });
    assert!(
        received.is_some(),
        "expected exactly 2 beacons counted; figures {}, metrics:\n{}",
        luot.counters("demo", None),
        luot.metrics()
    );
    assert_eq!(total(&luot, Some("/")), 2);
    Launch::new(&luot.url("/ignore/demo")).screenshot("ignore-en.png", 640, 560);
    // Four views of the site's page; a fragment never reaches a server.
    assert_eq!(site.requests().iter().filter(|t| *t == "/").count(), 4);
}

#[test]
fn a_most_read_list_shows_links_with_titles_as_text() {
    let luot = Server::start_with(DEMO_1234560, &[]);
    for (page, title, n) in [
        ("/tin-tuc/a", Some("<b>x</b>"), 4),
        ("/tin-tuc/b", Some("Bài B"), 3),
        ("/tin-tuc/c", None, 2),
    ] {
        for i in 0..n {
            let mut beacon = json!({"site": "demo", "page": page, "vid": format!("r{i}")});
            if let Some(title) = title {
                beacon["title"] = json!(title);
            }
            assert_eq!(luot.hit_as(&beacon, BROWSER_UA).status, 200);
        }
    }
    // The list is as of the last flush.
    let listed = poll(Duration::from_secs(20), || {
        let top = luot.get("/api/v1/sites/demo/top?period=24h&limit=3").json();
        (top["pages"][2]["page"] == "/tin-tuc/c" && top["pages"][0]["title"] == "<b>x</b>")
            .then_some(())
    });
    assert!(listed.is_some(), "the three pages never ranked");
    let site = PageServer::start(routes(vec![(
        "/most-read.html",
        HTML,
        web_page("most-read.html", &luot),
    )]));
    let url = site.url("localhost", "/most-read.html");
    let dom = Launch::new(&url).dump_dom();
    let top = dom
        .split("<ol id=\"top\"")
        .nth(1)
        .and_then(|rest| rest.split("</ol>").next())
        .unwrap_or_else(|| panic!("no list in {dom}"));
    assert!(
        top.contains(
            "<li><a href=\"/tin-tuc/a\">&lt;b&gt;x&lt;/b&gt;</a></li>\
             <li><a href=\"/tin-tuc/b\">Bài B</a></li>\
             <li><a href=\"/tin-tuc/c\">/tin-tuc/c</a></li>"
        ),
        "the list, titles as text: {top}"
    );
    assert!(!dom.contains("<b>x</b>"), "a title is never markup");
    assert!(
        dom.contains(
            "<li><a href=\"/tin-tuc/a\">&lt;b&gt;x&lt;/b&gt;</a> 4</li>\
             <li><a href=\"/tin-tuc/b\">Bài B</a> 3</li></ol>"
        ),
        "hits when asked: {dom}"
    );
    // The page's own beacon carried its title.
    let sent = text_of(&dom, "sent");
    assert!(sent.contains("\"title\":\"Trang chủ\""), "{sent}");
    Launch::new(&url).screenshot("most-read.png", 480, 360);
}

// ---- listing pages and the record day (issue 25 §3, §7) ----

/// A front page with 50 headlines, each with its view count, and the
/// site's record day in the footer.
fn front_page(luot: &Server) -> Vec<u8> {
    let mut items = String::new();
    for i in 0..50 {
        let extra = match i {
            0 => " data-luot-pad=\"4\"",
            1 => " data-luot-period=\"today\"",
            _ => "",
        };
        items.push_str(&format!(
            "<li><a href=\"/tin-tuc/bai-{i}\">Bài {i}</a> \
             <span id=\"v{i}\" data-luot-views=\"/tin-tuc/bai-{i}\"{extra}>–</span></li>\n"
        ));
    }
    format!(
        "<!doctype html><html lang=\"vi\"><head><meta charset=\"utf-8\"><title>Trang chủ</title>\
         <script async src=\"http://{}/luot.js\" data-site=\"demo\"></script></head><body>\
         <h1>Tin mới</h1><ol>{items}</ol>\
         <footer>Ngày cao nhất: <span id=\"record\" data-luot=\"record\">–</span> \
         (<span id=\"record-date\" data-luot=\"record\" data-luot-record=\"date\">–</span>)</footer>\
         </body></html>",
        luot.public
    )
    .into_bytes()
}

/// `luot_http_requests_total{route=…}` summed over statuses.
fn route_requests(luot: &Server, route: &str) -> f64 {
    let prefix = format!("luot_http_requests_total{{route=\"{route}\",");
    luot.metrics()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_front_page_of_50_headlines_fills_50_counts_from_one_request() {
    let luot = Server::start_with(DEMO_1234560, &[]);
    // Headline i was read i % 4 times; 0 means never seen.
    for i in 0..50 {
        hits(&luot, &format!("/tin-tuc/bai-{i}"), i % 4);
    }
    luot.wait_flushed();
    let site = PageServer::start(routes(vec![("/", HTML, front_page(&luot))]));
    let url = site.url("localhost", "/");
    let before = route_requests(&luot, "pages");
    let dom = Launch::new(&url).dump_dom();
    assert_eq!(
        route_requests(&luot, "pages") - before,
        1.0,
        "one /pages request for the 50 headlines"
    );
    for i in 2..50 {
        assert_eq!(text_of(&dom, &format!("v{i}")), (i % 4).to_string(), "v{i}");
    }
    assert_eq!(text_of(&dom, "v0"), "0000", "padded");
    assert_eq!(text_of(&dom, "v1"), "1", "today's");
    // The front page's own view is today's 74th hit: the best day so far.
    let hits_today: usize = (0..50).map(|i| i % 4).sum::<usize>() + 1;
    assert_eq!(text_of(&dom, "record"), hits_today.to_string());
    let today = jiff::Timestamp::now()
        .in_tz("Asia/Ho_Chi_Minh")
        .unwrap()
        .date()
        .to_string();
    assert_eq!(text_of(&dom, "record-date"), today);
    Launch::new(&url).screenshot("front-page-views.png", 480, 900);
}
