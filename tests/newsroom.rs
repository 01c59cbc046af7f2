//! The newsroom's own visits, against the real binary over real HTTP:
//! `ignore_addresses` (answered, not counted,
//! `luot_hits_total{result="ignored"}`) and the `/ignore/{site}` page. The
//! ignore flow in a browser is in `tests/browser.rs`.
//!
//! The servers trust 127.0.0.1 as a proxy, so each request chooses its
//! client address with `X-Forwarded-For`; nothing leaves loopback.

mod common;

use std::time::Duration;

use common::{BROWSER_UA, Reply, Server, int, poll};
use serde_json::{Value, json};

/// `news` leaves out its office (`198.51.100.0/24`) and one IPv6 range;
/// `open` accepts any origin.
const SITES: &str = r#"
[[sites]]
id = "news"
timezone = "Asia/Ho_Chi_Minh"
origins = ["https://news.example"]
initial_total = 0
language = "vi"
ignore_addresses = ["198.51.100.0/24", "2001:db8::/32"]

[[sites]]
id = "open"
timezone = "UTC"
origins = ["*"]
initial_total = 0
language = "en"
"#;

fn start() -> Server {
    Server::start_with(SITES, &[("LUOT_TRUSTED_PROXIES", "127.0.0.1")])
}

/// `POST /hit` of `beacon` from client address `client`, with more headers.
fn hit_from(
    server: &Server,
    path: &str,
    client: &str,
    beacon: &Value,
    more: &[(&str, &str)],
) -> Reply {
    let mut headers = vec![
        ("Content-Type", "text/plain;charset=UTF-8"),
        ("User-Agent", BROWSER_UA),
        ("X-Forwarded-For", client),
    ];
    headers.extend_from_slice(more);
    server.post(path, &headers, beacon.to_string().as_bytes())
}

fn gif_from(server: &Server, query: &str, client: &str) -> Reply {
    server.get_with(
        &format!("/hit.gif?{query}"),
        &[("User-Agent", BROWSER_UA), ("X-Forwarded-For", client)],
    )
}

fn hits_metric(server: &Server, result: &str) -> f64 {
    let series = format!("luot_hits_total{{result=\"{result}\"}}");
    server
        .metric(&series)
        .unwrap_or_else(|| panic!("{series} is not exported"))
}

// ---- own visits left out ----

#[test]
fn ignored_addresses_are_answered_as_usual_but_not_counted() {
    let server = start();
    assert_eq!(
        hits_metric(&server, "ignored"),
        0.0,
        "the series exists from the start"
    );
    let beacon = json!({"site": "news", "page": "/tin-tuc/bai-a", "vid": "editor1"});

    // From the office, three ways: each answered as any hit is.
    let r = hit_from(&server, "/hit", "198.51.100.7", &beacon, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert_eq!(answer["page"]["page"], "/tin-tuc/bai-a", "{answer}");
    assert_eq!(int(&answer["site"], "total"), 0, "{answer}");
    let r = hit_from(&server, "/hit?quiet=1", "198.51.100.200", &beacon, &[]);
    assert_eq!(r.status, 204, "{}", r.text());
    let r = hit_from(&server, "/hit?quiet=1", "2001:db8:5::1", &beacon, &[]);
    assert_eq!(r.status, 204, "{}", r.text());
    let r = gif_from(&server, "site=news&page=/tin-tuc/bai-a", "198.51.100.8");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/gif"));
    assert_eq!(r.header("x-luot-error"), None);
    assert_eq!(hits_metric(&server, "ignored"), 4.0);

    // The origin check comes first: the office is refused like anyone.
    let r = hit_from(
        &server,
        "/hit?quiet=1",
        "198.51.100.7",
        &beacon,
        &[("Origin", "https://evil.example")],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(hits_metric(&server, "ignored"), 4.0);
    assert_eq!(hits_metric(&server, "forbidden"), 1.0);

    // A reader next door is counted; the office, on another site, too.
    let r = hit_from(&server, "/hit?quiet=1", "198.52.100.7", &beacon, &[]);
    assert_eq!(r.status, 204);
    let r = hit_from(
        &server,
        "/hit?quiet=1",
        "198.51.100.7",
        &json!({"site": "open", "page": "/x"}),
        &[],
    );
    assert_eq!(r.status, 204);
    assert_eq!(hits_metric(&server, "counted"), 2.0);
    assert_eq!(hits_metric(&server, "ignored"), 4.0);

    // Flushed and read back: one view of the page, one visitor.
    server.wait_flushes(2);
    let site = server.counters("news", None);
    assert_eq!(int(&site, "total"), 1, "{site}");
    assert_eq!(server.total("news", Some("/tin-tuc/bai-a")), 1);
    assert_eq!(server.total("open", None), 1);
    let online = poll(Duration::from_secs(10), || {
        let f = server.counters("news", None);
        (f["online"] == 1).then_some(())
    });
    assert!(
        online.is_some(),
        "online is not 1: {}",
        server.counters("news", None)
    );
}

#[test]
fn the_ignore_page_links_to_the_sites_own_origin() {
    let server = start();
    let r = server.get("/ignore/news");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(
        r.header("content-security-policy")
            .is_some_and(|c| c.contains("frame-ancestors 'none'")),
        "{:?}",
        r.headers
    );
    let html = r.text();
    for text in [
        "<html lang=\"vi\">",
        "Không tính trình duyệt này",
        "Tính lại trình duyệt này",
        "href=\"https://news.example/#luot-ignore=on\"",
        "href=\"https://news.example/#luot-ignore=off\"",
    ] {
        assert!(html.contains(text), "{text} missing:\n{html}");
    }
    let en = server.get("/ignore/news?lang=en").text();
    assert!(en.contains("Leave out this browser") && en.contains("<html lang=\"en\">"));
    // `*` is no address to link to: the field builds the links instead.
    let open = server.get("/ignore/open").text();
    assert!(open.contains("Leave out this browser") && !open.contains("#luot-ignore=on\""));

    let r = server.get("/ignore/nope");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "unknown_site");
    let r = server.get("/ignore/news?lang=fr");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "bad_parameter");
}
