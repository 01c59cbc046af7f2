//! HTTP tests of the faces readers see, against the real binary: the
//! snippet (`/luot.js`), the widget, the badge and the busuanzi JSONP
//! interface. The same faces in a real browser are in `tests/browser.rs`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BROWSER_UA, Reply, Server};
use serde_json::{Value, json};

/// `demo` as in the built-in configuration, but carrying over an old
/// counter's total, next to a site that accepts one origin only.
const SITES: &str = r#"
[[sites]]
id = "demo"
timezone = "Asia/Ho_Chi_Minh"
origins = ["*"]
hosts = ["localhost", "127.0.0.1"]
initial_total = 9356660
language = "vi"

[[sites]]
id = "news"
timezone = "Europe/Paris"
origins = ["https://news.example"]
hosts = ["news.example"]
initial_total = 0
language = "en"
"#;

/// Only a site with a declared origin: no site allows every origin.
const STRICT_SITES: &str = r#"
[[sites]]
id = "news"
timezone = "Europe/Paris"
origins = ["https://news.example"]
initial_total = 0
"#;

fn hits(server: &Server, site: &str, page: &str, n: usize) {
    for i in 0..n {
        let r = server.hit_as(
            &json!({"site": site, "page": page, "vid": format!("v{i}")}),
            BROWSER_UA,
        );
        assert_eq!(r.status, 200, "hit {i}: {}", r.text());
    }
}

fn assert_json_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "body: {}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "an error is JSON, never reflected markup"
    );
    assert_eq!(reply.json()["error"], code, "{}", reply.text());
}

/// Waits until the site's unique visitors, all time, read back from the
/// store (refreshed every few seconds), are `n`.
fn wait_visitors(server: &Server, site: &str, n: u64) {
    let seen = server.wait_figures(site, Duration::from_secs(20), |f| {
        f["visitors"]["total"].as_u64() == Some(n)
    });
    if let Err(last) = seen {
        panic!("visitors.total never reached {n}: {last}");
    }
}

// ---- /luot.js ----

/// Gzips `bytes` with the system's gzip at its best compression.
fn gzipped_len(bytes: &[u8]) -> usize {
    let mut child = Command::new("gzip")
        .args(["-9", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run gzip (it is part of every Debian system)");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout.len()
}

#[test]
fn snippet_is_small_cacheable_and_revalidates_with_its_etag() {
    let server = Server::start();
    let r = server.get("/luot.js");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(r.header("cache-control"), Some("public, max-age=86400"));
    let etag = r.header("etag").expect("an ETag").to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let body = r.text();
    assert!(body.contains("data-site") && body.contains("sendBeacon"));
    let gz = gzipped_len(&r.body);
    assert!(
        gz < 3072,
        "luot.js is {gz} bytes gzipped; the budget is 3 KB"
    );
    eprintln!("luot.js: {} bytes, {gz} gzipped", r.body.len());

    let again = server.get("/luot.js");
    assert_eq!(again.header("etag"), Some(etag.as_str()), "stable ETag");

    let cached = server.get_with("/luot.js", &[("If-None-Match", &etag)]);
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
    assert_eq!(cached.header("etag"), Some(etag.as_str()));
    let weak = server.get_with(
        "/luot.js",
        &[("If-None-Match", &format!("\"x\", W/{etag}"))],
    );
    assert_eq!(weak.status, 304, "weak comparison, lists");
    let stale = server.get_with("/luot.js", &[("If-None-Match", "\"l-0000000000000000\"")]);
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, r.body);
}

#[test]
fn snippet_cors_answers_only_declared_origins() {
    let server = Server::start_with(STRICT_SITES, &[]);
    let ok = server.get_with("/luot.js", &[("Origin", "https://news.example")]);
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://news.example")
    );
    assert!(ok.header("vary").is_some_and(|v| v.contains("Origin")));
    let evil = server.get_with("/luot.js", &[("Origin", "https://evil.example")]);
    assert_eq!(evil.status, 200, "the script itself is public");
    assert_eq!(evil.header("access-control-allow-origin"), None);
    let none = server.get("/luot.js");
    assert_eq!(none.header("access-control-allow-origin"), None);

    // The beacon the snippet sends is held to the same origins.
    let beacon = json!({"site": "news", "page": "/a"}).to_string();
    let refused = server.post(
        "/hit",
        &[
            ("Content-Type", "text/plain"),
            ("Origin", "https://evil.example"),
        ],
        beacon.as_bytes(),
    );
    assert_eq!(refused.status, 403);
    let allowed = server.post(
        "/hit",
        &[
            ("Content-Type", "text/plain"),
            ("Origin", "https://news.example"),
        ],
        beacon.as_bytes(),
    );
    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://news.example")
    );
}

// ---- /widget/{site} ----

#[test]
fn widget_shows_the_vietnamese_box_with_the_padded_total() {
    let server = Server::start();
    hits(&server, "demo", "/a", 12);
    let r = server.get("/widget/demo");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(
        r.header("x-frame-options"),
        None,
        "the widget is for iframes"
    );
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert!(
        !csp.contains("frame-ancestors"),
        "any site may frame it: {csp}"
    );
    let html = r.text();
    for text in [
        "<html lang=\"vi\"",
        "Lượt Truy Cập",
        "Hôm nay:",
        "Hôm qua:",
        "Tuần này:",
        "Tháng này:",
        "Đang trực tuyến:",
        "aria-label=\"00000012\"",
        "<span>0</span><span>0</span><span>0</span><span>0</span><span>0</span><span>0</span><span>1</span><span>2</span>",
        "data-k=\"today\">12<",
        "data-k=\"week\">12<",
        "data-k=\"month\">12<",
        "data-k=\"yesterday\">0<",
        "data-k=\"online\">12<",
        "../api/v1/sites/demo/counters",
    ] {
        assert!(
            html.contains(text),
            "{text:?} missing from the widget:\n{html}"
        );
    }
    // Self-contained: nothing is loaded from anywhere.
    assert!(!html.contains(" src=") && !html.contains("<link"), "{html}");

    let padded = server.get("/widget/demo?pad=10").text();
    assert!(padded.contains("aria-label=\"0000000012\""), "{padded}");
    let dark = server.get("/widget/demo?theme=dark").text();
    assert!(dark.contains("class=\"dark\""));
}

#[test]
fn widget_speaks_english_on_request_and_by_site_language() {
    let server = Server::start_with(SITES, &[]);
    hits(&server, "demo", "/a", 5);
    let en = server.get("/widget/demo?lang=en").text();
    for text in [
        "<html lang=\"en\"",
        ">Visits<",
        "Today:",
        "Yesterday:",
        "This week:",
        "This month:",
        "Online now:",
        "aria-label=\"09356665\"",
    ] {
        assert!(en.contains(text), "{text:?} missing:\n{en}");
    }
    assert!(!en.contains("Hôm nay"));
    // `news` is configured in English; `?lang=vi` overrides it.
    let news = server.get("/widget/news").text();
    assert!(news.contains("Online now:"), "{news}");
    let news_vi = server.get("/widget/news?lang=vi").text();
    assert!(news_vi.contains("Đang trực tuyến:"), "{news_vi}");
}

#[test]
fn widget_refuses_unknown_sites_and_bad_options_without_echoing_them() {
    let server = Server::start();
    assert_json_error(&server.get("/widget/nope"), 404, "unknown_site");
    let hostile = server.get("/widget/%3Cscript%3Ealert(1)%3C%2Fscript%3E");
    assert_json_error(&hostile, 404, "unknown_site");
    assert!(!hostile.text().contains("<script"), "{}", hostile.text());
    for query in ["pad=0", "pad=13", "pad=x", "lang=fr", "theme=%3Cscript%3E"] {
        let r = server.get(&format!("/widget/demo?{query}"));
        assert_json_error(&r, 400, "bad_parameter");
        assert!(!r.text().contains("<script"), "{query}: {}", r.text());
    }
}

// ---- /badge/{site}.svg ----

/// Checks that `text` is one well-formed XML element: tags balance,
/// attribute values are quoted, and every `&` starts a known entity.
fn assert_well_formed_xml(text: &str) {
    fn entity_len(s: &str) -> Option<usize> {
        for e in ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"] {
            if s.starts_with(e) {
                return Some(e.len());
            }
        }
        let rest = s.strip_prefix("&#")?;
        let end = rest.find(';')?;
        let num = &rest[..end];
        let ok = match num.strip_prefix('x') {
            Some(hex) => !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()),
            None => !num.is_empty() && num.chars().all(|c| c.is_ascii_digit()),
        };
        ok.then_some(end + 3)
    }
    let fail =
        |at: usize, why: &str| -> ! { panic!("not well-formed XML at byte {at} ({why}):\n{text}") };
    let mut stack: Vec<&str> = Vec::new();
    let mut roots = 0;
    let mut i = 0;
    let bytes = text.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b'&' => i += entity_len(&text[i..]).unwrap_or_else(|| fail(i, "bare &")),
            b'<' => {
                let close = text[i..]
                    .find('>')
                    .unwrap_or_else(|| fail(i, "unclosed tag"))
                    + i;
                let tag = &text[i + 1..close];
                if let Some(name) = tag.strip_prefix('/') {
                    if stack.pop() != Some(name.trim()) {
                        fail(i, "mismatched end tag");
                    }
                } else {
                    let self_closing = tag.ends_with('/');
                    let tag = tag.trim_end_matches('/');
                    let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
                    let name = &tag[..name_end];
                    if name.is_empty()
                        || !name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_:.".contains(c))
                    {
                        fail(i, "bad element name");
                    }
                    // Attributes: name="value" pairs, values without < and
                    // with entities only.
                    let mut attrs = tag[name_end..].trim();
                    while !attrs.is_empty() {
                        let eq = attrs.find('=').unwrap_or_else(|| fail(i, "attribute"));
                        let quote = attrs[eq + 1..].chars().next();
                        if quote != Some('"') && quote != Some('\'') {
                            fail(i, "unquoted attribute");
                        }
                        let q = quote.unwrap();
                        let value_start = eq + 2;
                        let value_end = attrs[value_start..]
                            .find(q)
                            .unwrap_or_else(|| fail(i, "unterminated attribute"))
                            + value_start;
                        let value = &attrs[value_start..value_end];
                        if value.contains('<') {
                            fail(i, "< in an attribute");
                        }
                        let mut j = 0;
                        while let Some(amp) = value[j..].find('&') {
                            let at = j + amp;
                            j = at + entity_len(&value[at..]).unwrap_or_else(|| fail(i, "bare &"));
                        }
                        attrs = attrs[value_end + 1..].trim_start();
                    }
                    if stack.is_empty() {
                        roots += 1;
                    }
                    if !self_closing {
                        stack.push(name);
                    }
                }
                i = close + 1;
            }
            b'>' if stack.is_empty() => fail(i, "text outside the root"),
            _ => i += 1,
        }
    }
    assert!(stack.is_empty(), "unclosed elements {stack:?}:\n{text}");
    assert_eq!(roots, 1, "one root element:\n{text}");
}

#[test]
fn the_xml_check_catches_broken_markup() {
    assert_well_formed_xml("<svg a=\"1\"><t>x &amp; y</t><r/></svg>");
    for broken in [
        "<svg><t>x & y</t></svg>",
        "<svg><t>x</svg>",
        "<svg a=1></svg>",
        "<svg a=\"<\"></svg>",
        "<svg></svg><svg></svg>",
    ] {
        let caught = std::panic::catch_unwind(|| assert_well_formed_xml(broken));
        assert!(caught.is_err(), "{broken} passed");
    }
}

fn svg_text_values(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let start = t.find('>')? + 1;
            let end = t.find("</text>")?;
            Some(t[start..end].to_string())
        })
        .collect()
}

#[test]
fn badge_is_valid_svg_with_the_grouped_total() {
    let server = Server::start_with(SITES, &[]);
    hits(&server, "demo", "/a", 3);
    hits(&server, "demo", "/b", 2);
    let r = server.get("/badge/demo.svg");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("image/svg+xml"));
    assert!(
        r.header("cache-control")
            .is_some_and(|c| c.contains("max-age=60")),
        "{:?}",
        r.header("cache-control")
    );
    let svg = r.text();
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert_well_formed_xml(svg.trim_end());
    let texts = svg_text_values(&svg);
    assert!(texts.contains(&"visits".to_string()), "{texts:?}");
    assert!(texts.contains(&"9,356,665".to_string()), "{texts:?}");
    assert!(svg.contains("<title>visits: 9,356,665</title>"));

    let page = server.get("/badge/demo.svg?page=/a&period=today").text();
    assert_well_formed_xml(page.trim_end());
    let texts = svg_text_values(&page);
    assert!(texts.contains(&"visits today".to_string()), "{texts:?}");
    assert!(texts.contains(&"3".to_string()), "{texts:?}");
    // A page's readers now: /b was read by two of the three visitors.
    let page_online = server.get("/badge/demo.svg?page=/b&period=online");
    assert_eq!(page_online.status, 200, "{}", page_online.text());
    let texts = svg_text_values(&page_online.text());
    assert!(
        texts.contains(&"2".to_string()),
        "2 readers of /b: {texts:?}"
    );
    let online = server.get("/badge/demo.svg?period=online").text();
    let texts = svg_text_values(&online);
    assert!(texts.contains(&"online".to_string()), "{texts:?}");
    assert!(
        texts.contains(&"3".to_string()),
        "3 distinct vids: {texts:?}"
    );

    let wide = server
        .get("/badge/demo.svg?label=a%20rather%20longer%20label")
        .text();
    let width = |svg: &str| -> f64 {
        let start = svg.find("width=\"").unwrap() + 7;
        let end = start + svg[start..].find('"').unwrap();
        svg[start..end].parse().unwrap()
    };
    assert!(
        width(&wide) > width(&svg) + 50.0,
        "the width follows the text"
    );

    let colored = server.get("/badge/demo.svg?color=e05d44").text();
    assert!(colored.contains("fill=\"#e05d44\""));
    let named = server.get("/badge/demo.svg?color=green").text();
    assert!(named.contains("fill=\"#97ca00\""));
}

#[test]
fn badge_escapes_a_hostile_label_and_ignores_a_hostile_colour() {
    let server = Server::start();
    let label = "<script>alert(1)</script>\"&'";
    let r = server.get(&format!(
        "/badge/demo.svg?label={}&color={}",
        common::encode(label),
        common::encode("red\"/><script>alert(2)</script>")
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let svg = r.text();
    assert_well_formed_xml(svg.trim_end());
    assert!(!svg.contains("<script"), "{svg}");
    assert!(
        svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&amp;&#39;"),
        "{svg}"
    );
    assert!(svg.contains("fill=\"#007ec6\""), "default colour: {svg}");
    assert!(
        r.header("content-security-policy")
            .is_some_and(|c| c.contains("default-src 'none'")),
        "an SVG opened as a page runs nothing"
    );

    let long = "x".repeat(41);
    assert_json_error(
        &server.get(&format!("/badge/demo.svg?label={long}")),
        400,
        "bad_parameter",
    );
    assert_eq!(
        server
            .get(&format!("/badge/demo.svg?label={}", "é".repeat(40)))
            .status,
        200,
        "40 characters, not bytes"
    );
    assert_json_error(
        &server.get("/badge/demo.svg?period=forever"),
        400,
        "bad_parameter",
    );
    assert_json_error(&server.get("/badge/nope.svg"), 404, "unknown_site");
}

// ---- /busuanzi ----

/// Parses busuanzi's exact JSONP answer for `callback`; panics on any
/// other shape.
fn parse_jsonp(body: &str, callback: &str) -> (u64, u64, u64) {
    let inner = body
        .strip_prefix(&format!("try{{{callback}("))
        .and_then(|b| b.strip_suffix(");}catch(e){}"))
        .unwrap_or_else(|| panic!("not busuanzi's JSONP shape: {body}"));
    let keys: Vec<&str> = inner
        .trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .map(|kv| kv.split(':').next().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["\"site_uv\"", "\"page_pv\"", "\"version\"", "\"site_pv\""],
        "busuanzi's key order: {body}"
    );
    let v: Value = serde_json::from_str(inner).unwrap();
    assert_eq!(v["version"].as_f64(), Some(2.4), "{body}");
    (
        v["site_uv"].as_u64().unwrap(),
        v["page_pv"].as_u64().unwrap(),
        v["site_pv"].as_u64().unwrap(),
    )
}

fn busuanzi(server: &Server, callback: &str, referer: Option<&str>, ua: &str) -> Reply {
    let mut headers = vec![("User-Agent", ua)];
    if let Some(r) = referer {
        headers.push(("Referer", r));
    }
    server.get_with(
        &format!("/busuanzi?jsonpCallback={}", common::encode(callback)),
        &headers,
    )
}

#[test]
fn busuanzi_answers_its_exact_jsonp_and_counts_the_referer_page() {
    let server = Server::start_with(SITES, &[]);
    hits(&server, "demo", "/other", 3);
    wait_visitors(&server, "demo", 3);
    let uv_before = 3;

    let referer = "http://LocalHost:4000/posts/hello-world/?utm_source=x#top";
    let r = busuanzi(
        &server,
        "BusuanziCallback_1234567890",
        Some(referer),
        BROWSER_UA,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/javascript"));
    assert_eq!(r.header("x-luot-error"), None);
    let body = r.text();
    assert_eq!(
        body,
        format!(
            "try{{BusuanziCallback_1234567890({{\"site_uv\":{uv_before},\"page_pv\":1,\"version\":2.4,\"site_pv\":9356664}});}}catch(e){{}}"
        ),
        "busuanzi's answer, byte for byte"
    );
    let (_, page_pv, site_pv) = parse_jsonp(
        &busuanzi(&server, "cb", Some(referer), BROWSER_UA).text(),
        "cb",
    );
    assert_eq!((page_pv, site_pv), (2, 9_356_665));
    assert_eq!(server.total("demo", Some("/posts/hello-world")), 2);

    // Only an origin (the default referrer policy, cross-origin): the root.
    let (_, root_pv, _) = parse_jsonp(
        &busuanzi(&server, "cb", Some("http://127.0.0.1:4000"), BROWSER_UA).text(),
        "cb",
    );
    assert_eq!(root_pv, 1);
    assert_eq!(server.total("demo", Some("/")), 1);

    // Another declared host maps to its own site.
    let (_, _, news_pv) = parse_jsonp(
        &busuanzi(&server, "cb", Some("https://news.example/a"), BROWSER_UA).text(),
        "cb",
    );
    assert_eq!(news_pv, 1);
    assert_eq!(server.total("news", Some("/a")), 1);

    // Once flushed and read back, the hashed visitor has joined the unique
    // visitors.
    wait_visitors(&server, "demo", uv_before + 1);
    let (uv, _, _) = parse_jsonp(
        &busuanzi(&server, "cb", Some(referer), BROWSER_UA).text(),
        "cb",
    );
    assert_eq!(uv, uv_before + 1);
}

#[test]
fn busuanzi_goes_through_the_beacon_rules() {
    let server = Server::start();
    let bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    let r = busuanzi(&server, "cb", Some("http://localhost/x"), bot);
    assert_eq!(r.status, 200, "a bot is answered like anyone");
    let (_, page_pv, site_pv) = parse_jsonp(&r.text(), "cb");
    assert_eq!((page_pv, site_pv), (0, 0), "and not counted");
    assert_eq!(
        server.metric("luot_hits_total{result=\"bot\"}"),
        Some(1.0),
        "counted as a bot"
    );
    assert_eq!(server.total("demo", None), 0);
}

#[test]
fn busuanzi_rejects_a_malicious_callback_and_counts_nothing() {
    let server = Server::start();
    for callback in [
        "alert(1)//",
        "a.b",
        "x;alert(1)",
        "1abc",
        "",
        "\u{2028}x",
        &"x".repeat(65),
    ] {
        let r = busuanzi(&server, callback, Some("http://localhost/x"), BROWSER_UA);
        assert_json_error(&r, 400, "bad_callback");
        assert!(!r.text().contains("alert"), "{}", r.text());
    }
    let missing = server.get_with("/busuanzi", &[("Referer", "http://localhost/x")]);
    assert_json_error(&missing, 400, "bad_callback");
    assert_eq!(server.total("demo", None), 0, "nothing counted");
}

#[test]
fn busuanzi_without_a_known_referer_answers_zeros() {
    let server = Server::start();
    let zeros = r#"try{cb({"site_uv":0,"page_pv":0,"version":2.4,"site_pv":0});}catch(e){}"#;
    let none = busuanzi(&server, "cb", None, BROWSER_UA);
    assert_eq!(none.status, 200);
    assert_eq!(none.text(), zeros);
    assert_eq!(none.header("x-luot-error"), Some("no_referer"));
    let path_only = busuanzi(&server, "cb", Some("/just/a/path"), BROWSER_UA);
    assert_eq!(path_only.header("x-luot-error"), Some("no_referer"));
    let unknown = busuanzi(&server, "cb", Some("https://unknown.example/a"), BROWSER_UA);
    assert_eq!(unknown.status, 200);
    assert_eq!(unknown.text(), zeros);
    assert_eq!(unknown.header("x-luot-error"), Some("unknown_host"));
    assert_eq!(server.total("demo", None), 0);
    // HEAD would count without a body to show for it; only GET is served.
    let head = common::agent()
        .head(server.url("/busuanzi?jsonpCallback=cb"))
        .call()
        .unwrap();
    assert_eq!(head.status().as_u16(), 405);
}
