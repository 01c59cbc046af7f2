//! The newsroom's own visits and its AMP pages, against the real binary
//! over real HTTP: `ignore_addresses` (answered, not counted,
//! `luot_hits_total{result="ignored"}`), the `/ignore/{site}` page, the
//! pixel an `amp-analytics` configuration sends, and the figures route as
//! `amp-list` reads it (AMP's CORS protocol). The ignore flow in a browser
//! is in `tests/browser.rs`.
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

// ---- AMP ----

/// An AMP client id as `${clientId(luot_vid)}` gives it from a cache:
/// `amp-` and base64url characters, 90 in all (over the snippet's 64).
const AMP_VID: &str =
    "amp-JmrTAWHz6-fvfXI3gVX1JyTU9ndaadPrPM3VItG8jHZt_Slz7u8ve-Efaa56o1JJxQ9aKv0_Qw3UoPLE4xlAb3";

#[test]
fn the_amp_analytics_pixel_counts_its_canonical_page_once_per_view() {
    assert_eq!(AMP_VID.len(), 90);
    let server = start();
    // What the README's amp-analytics request sends: the canonical path
    // and the referrer URL-encoded, an empty referrer as `ref=`.
    let query = format!("site=open&page=%2Ftin-tuc%2Fbai-a&ref=&vid={AMP_VID}");
    let r = gif_from(&server, &query, "203.0.113.10");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/gif"));
    assert_eq!(r.header("x-luot-error"), None);
    server.wait_flushes(2);
    assert_eq!(
        server.total("open", Some("/tin-tuc/bai-a")),
        1,
        "counted once"
    );
    assert_eq!(server.total("open", None), 1);

    // The same reader on another network (address and browser string
    // changed): still one visitor, which only the client id can tell.
    let r = server.get_with(
        &format!("/hit.gif?site=open&page=%2Ftin-tuc%2Fbai-b&ref=https%3A%2F%2Fwww.google.com%2F&vid={AMP_VID}"),
        &[
            ("User-Agent", "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/131.0 Mobile Safari/537.36"),
            ("X-Forwarded-For", "192.0.2.77"),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-luot-error"), None);
    let seen = poll(Duration::from_secs(15), || {
        let f = server.counters("open", None);
        (f["total"] == 2 && f["online"] == 1).then_some(())
    });
    assert!(
        seen.is_some(),
        "two views by one AMP reader: {}",
        server.counters("open", None)
    );
    assert_eq!(hits_metric(&server, "counted"), 2.0);
}

/// `GET` of the figures as the AMP runtime fetches them for `amp-list`.
fn amp_fetch(server: &Server, site: &str, query: &str, headers: &[(&str, &str)]) -> Reply {
    let r = server.get_with(&format!("/api/v1/sites/{site}/counters?{query}"), headers);
    assert_eq!(r.status, 200, "{query}: {}", r.text());
    r
}

const CACHE: &str = "https://news-example.cdn.ampproject.org";
const SOURCE: &str = "__amp_source_origin=https%3A%2F%2Fnews.example";

#[test]
fn amp_list_reads_the_figures_from_an_amp_cache() {
    let server = start();
    let r = hit_from(
        &server,
        "/hit?quiet=1",
        "203.0.113.1",
        &json!({"site": "news", "page": "/a"}),
        &[],
    );
    assert_eq!(r.status, 204);
    server.wait_flushes(2);

    // An older runtime, on Google's cache: the source origin in the query.
    let r = amp_fetch(
        &server,
        "news",
        &format!("page=%2Fa&amp=1&{SOURCE}"),
        &[("Origin", CACHE)],
    );
    assert_eq!(r.header("access-control-allow-origin"), Some(CACHE));
    assert_eq!(
        r.header("amp-access-control-allow-source-origin"),
        Some("https://news.example")
    );
    assert!(
        r.header("access-control-expose-headers")
            .is_some_and(|h| h.eq_ignore_ascii_case("AMP-Access-Control-Allow-Source-Origin")),
        "{:?}",
        r.headers
    );
    let body = r.json();
    let items = body["items"]
        .as_array()
        .expect("amp=1 answers {\"items\": [...]}");
    assert_eq!(items.len(), 1, "{body}");
    assert_eq!(items[0]["page"], "/a");
    assert_eq!(int(&items[0], "total"), 1);

    // The same page on the site's own origin: no Origin header, the
    // runtime's AMP-Same-Origin instead.
    let r = amp_fetch(&server, "news", SOURCE, &[("AMP-Same-Origin", "true")]);
    assert_eq!(
        r.header("amp-access-control-allow-source-origin"),
        Some("https://news.example")
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(
        int(&r.json(), "total"),
        1,
        "no amp=1: the figures as they are"
    );

    // A newer runtime sends no source origin: the site's own cache origin
    // is allowed, another site's is not.
    let r = amp_fetch(&server, "news", "amp=1", &[("Origin", CACHE)]);
    assert_eq!(r.header("access-control-allow-origin"), Some(CACHE));
    assert_eq!(r.header("amp-access-control-allow-source-origin"), None);
    let other = "https://evil-example.cdn.ampproject.org";
    let r = amp_fetch(&server, "news", "amp=1", &[("Origin", other)]);
    assert_eq!(r.header("access-control-allow-origin"), None);

    // Refused: a source origin the site does not declare, or a requester
    // that is neither an AMP cache nor an allowed origin. Neither header.
    for (query, origin) in [
        ("__amp_source_origin=https%3A%2F%2Fevil.example", CACHE),
        (SOURCE, "https://evil.example"),
        (
            "__amp_source_origin=https%3A%2F%2Fevil.example",
            "https://evil.example",
        ),
    ] {
        let r = amp_fetch(&server, "news", query, &[("Origin", origin)]);
        assert_eq!(
            r.header("access-control-allow-origin"),
            None,
            "{query} from {origin}"
        );
        assert_eq!(
            r.header("amp-access-control-allow-source-origin"),
            None,
            "{query} from {origin}"
        );
        assert_eq!(r.json()["site"], "news", "still answered");
    }

    // A site open to every origin takes any source origin.
    let r = amp_fetch(
        &server,
        "open",
        "__amp_source_origin=https%3A%2F%2Fblog.example&amp=1",
        &[("Origin", "https://blog-example.cdn.ampproject.org")],
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://blog-example.cdn.ampproject.org")
    );
    assert_eq!(
        r.header("amp-access-control-allow-source-origin"),
        Some("https://blog.example")
    );
}
