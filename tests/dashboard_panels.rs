//! The dashboard's "Đang đọc" (reading now) and breakdown panels in headless
//! Chromium, fed by real beacons: a Facebook referrer shows "Facebook"
//! under sources and "social" as its channel, a campaign's UTM values, the
//! device, browser, system and country (names in vi and en), the first top
//! page's own sources, and the pages read now with the hour's chart.
//! Values from clients stay text. Screenshots in vi and en, desktop and
//! phone widths, go where the other screenshot tests put theirs
//! (`target/test-artifacts/`).

mod common;

use std::time::Duration;

use common::chromium::Launch;
use common::{Server, demo_site, poll};
use serde_json::{Value, json};

/// Every request of a test comes from 127.0.0.1: no limit in the way. The
/// loopback peer is a trusted proxy so that its `CF-IPCountry` is believed.
const CONFIG: &str = "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
    [counting]\nrate_limit_per_second = 100000\nrate_limit_burst = 100000\n\
    read_rate_limit_per_second = 100000\nread_rate_limit_burst = 100000\n";

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 \
    (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
    (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";

/// A campaign name with markup in it: it must stay text.
const HOSTILE_CAMPAIGN: &str = "<img src=x onerror=alert(1)>";

fn beacon(server: &Server, page: &str, referrer: &str, vid: &str, ua: &str, country: &str) {
    let body = json!({"site": "demo", "page": page, "ref": referrer, "vid": vid}).to_string();
    let r = server.post(
        "/hit",
        &[
            ("Content-Type", "text/plain;charset=UTF-8"),
            ("User-Agent", ua),
            ("CF-IPCountry", country),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The markup inside the element with `id`, up to `</{tag}>`.
fn inside<'d>(dom: &'d str, id: &str, tag: &str) -> &'d str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id}"));
    let end = at + dom[at..].find(&format!("</{tag}>")).unwrap();
    &dom[at..end]
}

fn browser(url: &str) -> Launch<'_> {
    Launch {
        lang: None,
        ..Launch::new(url)
    }
}

#[test]
fn the_panels_show_what_real_beacons_sent_in_vietnamese_and_english() {
    let server = Server::start_with(&format!("{CONFIG}{}", demo_site("")), &[]);
    // /tin/a: two readers, from Facebook on a phone in Germany and from
    // Google on a desktop in Vietnam; /tin/b: one, from a newsletter.
    beacon(
        &server,
        "https://news.example/tin/a",
        "https://l.facebook.com/",
        "reader-1",
        IPHONE,
        "DE",
    );
    beacon(
        &server,
        "https://news.example/tin/a",
        "https://www.google.com/",
        "reader-2",
        WINDOWS,
        "VN",
    );
    let campaign = format!(
        "https://news.example/tin/b?utm_source=newsletter&utm_medium=email&utm_campaign={}",
        common::encode(HOSTILE_CAMPAIGN)
    );
    beacon(&server, &campaign, "", "reader-3", WINDOWS, "VN");

    // Wait until the store holds the breakdowns the panels read.
    let mut last = Value::Null;
    let ready = poll(Duration::from_secs(20), || {
        last = server
            .get("/api/v1/sites/demo/breakdown?by=source&period=today")
            .json();
        let facebook = last["values"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["value"] == "Facebook"));
        let ranked = server.get("/api/v1/sites/demo/online").json()["pages"]
            .as_array()
            .is_some_and(|p| p.len() == 2);
        (facebook && ranked).then_some(())
    });
    assert!(ready.is_some(), "breakdowns never showed Facebook: {last}");

    for (lang, names) in [
        (
            "vi",
            [
                "Đang đọc",
                "Nguồn truy cập",
                "Mạng xã hội",
                "Điện thoại",
                "Đức",
                "Việt Nam",
            ],
        ),
        (
            "en",
            [
                "Reading now",
                "Traffic sources",
                "Social",
                "Mobile",
                "Germany",
                "Vietnam",
            ],
        ),
    ] {
        let url = server.url(&format!("/dashboard/demo?lang={lang}"));
        let dom = browser(&url).dump_dom();
        for name in names {
            assert!(dom.contains(name), "{lang}: {name:?} missing");
        }
        let sources = inside(&dom, "bd-source", "ol");
        assert!(sources.contains(">Facebook</span>"), "{lang}: {sources}");
        assert!(sources.contains(">Google</span>"), "{lang}: {sources}");
        let channels = inside(&dom, "bd-channel", "ol");
        assert!(channels.contains(names[2]), "{lang}: {channels}");
        let utm = inside(&dom, "bd-utm_source", "ol");
        assert!(utm.contains(">newsletter</span>"), "{lang}: {utm}");
        assert!(
            inside(&dom, "bd-utm_medium", "ol").contains(">email</span>"),
            "{lang}"
        );
        let campaigns = inside(&dom, "bd-utm_campaign", "ol");
        assert!(
            campaigns.contains(">&lt;img src=x onerror=alert(1)&gt;</span>"),
            "{lang}: the campaign as text: {campaigns}"
        );
        assert!(!dom.contains("<img"), "{lang}: a campaign became markup");
        assert!(inside(&dom, "bd-device", "ol").contains(names[3]), "{lang}");
        assert!(
            inside(&dom, "bd-browser", "ol").contains(">Chrome</span>"),
            "{lang}"
        );
        assert!(
            inside(&dom, "bd-os", "ol").contains(">Windows</span>"),
            "{lang}"
        );
        let countries = inside(&dom, "bd-country", "ol");
        assert!(
            countries.contains(names[4]) && countries.contains(names[5]),
            "{lang}: {countries}"
        );
        // The most-read page's own sources, opened for the reader.
        assert!(
            inside(&dom, "bd-pages", "ol").contains(">/tin/a</button>"),
            "{lang}"
        );
        let page_sources = inside(&dom, "bd-page-sources", "ol");
        assert!(
            page_sources.contains(">Facebook</span>") && page_sources.contains(">Google</span>"),
            "{lang}: {page_sources}"
        );
        // Reading now: /tin/a by 2, /tin/b by 1, and the hour's 60 minutes.
        let now = inside(&dom, "now-pages", "ol");
        let a = now.find(">/tin/a</span>").expect("/tin/a read now");
        let b = now.find(">/tin/b</span>").expect("/tin/b read now");
        assert!(a < b, "{lang}: ranked by readers: {now}");
        assert!(now[a..b].contains("class=\"n\">2<"), "{lang}: {now}");
        assert!(
            inside(&dom, "chart-online", "svg").contains("data-points=\"60\""),
            "{lang}"
        );
    }

    for (lang, width, height, name) in [
        ("vi", 1100, 2600, "dashboard-panels-vi.png"),
        ("en", 1100, 2600, "dashboard-panels-en.png"),
        ("vi", 390, 3000, "dashboard-panels-vi-phone.png"),
        ("en", 390, 3000, "dashboard-panels-en-phone.png"),
    ] {
        let url = server.url(&format!("/dashboard/demo?lang={lang}"));
        let shot = browser(&url).screenshot(name, width, height);
        eprintln!("screenshot: {}", shot.display());
    }
}
