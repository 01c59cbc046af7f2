//! Ingest: reading a beacon out of a request, deciding who sent it and
//! whether it counts, and counting it.
//!
//! This module knows the request only as borrowed parts (body bytes, query
//! text, a few header values, the peer address); it knows nothing of hyper's
//! types, and it never awaits. Counting touches only memory: the site's tally
//! and online ring.
//!
//! Owns, in `beacon.rs`, `Beacon`, `parse_body` and `parse_query`; in
//! `sender.rs`, `client_ip` and `Sender`; here, `Ingest::count`,
//! `Verdict` and `IngestError`; and [`bots`] (the User-Agent
//! guard) and [`classify`] (a hit's dimensions: channel, source, campaign,
//! browser, system, device; pure, and not yet counted). May use `site`,
//! `count` and the bottom; never `store`, `read` or `flush`.

mod beacon;
pub mod bots;
pub mod classify;
mod sender;

pub use beacon::{Beacon, clean_title, parse_body, parse_query};
pub use sender::{Sender, canonical, client_ip};

use std::cell::RefCell;

use jiff::Timestamp;

use crate::count::breakdown::{HitValues, Pick};
use crate::count::tally::{Counted, PageEntry};
use crate::count::visitor::{Anonymous, Identity, VisitorParts};
use crate::ingest::bots::BotDetector;
use crate::ingest::classify::{Classifier, Country, Dimensions, Hit, NONE, Value};
use crate::metrics::{HitCounters, HitResult};
use crate::page::{PageError, normalize_into};
use crate::site::Site;

/// Why a beacon was refused. Each maps to one HTTP status in `http`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IngestError {
    #[error("the beacon is not a JSON object with string fields site, page, ref, vid: {0}")]
    Malformed(String),
    #[error("the beacon names no site")]
    MissingSite,
    #[error("no site `{0}` is declared here")]
    UnknownSite(String),
    #[error("the page is not usable: {0}")]
    BadPage(#[from] PageError),
    #[error("origin {0} may not send beacons for this site")]
    ForbiddenOrigin(String),
    #[error("too many hits from this address; slow down")]
    RateLimited,
}

impl IngestError {
    /// The metric result for a refused beacon.
    pub fn result(&self) -> HitResult {
        match self {
            IngestError::UnknownSite(_) => HitResult::UnknownSite,
            IngestError::ForbiddenOrigin(_) => HitResult::Forbidden,
            IngestError::RateLimited => HitResult::RateLimited,
            _ => HitResult::Invalid,
        }
    }
}

/// Longest site id echoed back in an error message.
const MAX_ECHO: usize = 64;

fn echo(text: &str) -> String {
    text.chars()
        .take(MAX_ECHO)
        .filter(|c| !c.is_control())
        .collect()
}

/// What happened to an accepted hit. Every verdict is answered the same
/// way (2xx); only `Counted` changes a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Counted(Counted),
    /// A crawler, headless browser, uptime checker or link previewer.
    Bot,
    /// The same visitor on the same page within the dedupe window.
    Duplicate,
    /// From one of the site's `ignore_addresses` (its own staff).
    Ignored,
}

thread_local! {
    /// The page normalisation buffer, reused so counting a known page does
    /// not allocate.
    static PAGE_BUF: RefCell<String> = RefCell::new(String::with_capacity(4096 + 8));
}

/// Everything ingest needs that outlives one request.
pub struct Ingest<'s> {
    pub identity: &'s Identity,
    pub counters: &'s HitCounters,
    pub bots: &'s BotDetector,
    pub classifier: &'s Classifier,
}

impl Ingest<'_> {
    /// Validates, classifies and counts one beacon for `site`: origin, rate
    /// limit, bot, page, repeat view. `on_page` sees the normalised page
    /// (borrowed from a reused buffer), the verdict and, when the hit was
    /// counted for the page, its tally entry (under the tally's shard
    /// guard: keep it short).
    ///
    /// # Errors
    /// An [`IngestError`] when the beacon is refused; nothing is counted or
    /// created then.
    pub fn count<R>(
        &self,
        site: &Site,
        beacon: &Beacon<'_>,
        sender: &Sender<'_>,
        now: Timestamp,
        on_page: impl FnOnce(&str, Verdict, Option<PageEntry<'_>>) -> R,
    ) -> Result<R, IngestError> {
        if let Some(origin) = sender.origin
            && !site.config.allows_origin(origin)
        {
            return Err(IngestError::ForbiddenOrigin(echo(origin)));
        }
        if !site.limiter.allow(sender.ip) {
            return Err(IngestError::RateLimited);
        }
        let raw_page = beacon.page.as_deref().or(sender.referer).unwrap_or("/");
        PAGE_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            normalize_into(raw_page, site.rules, &mut buf)?;
            // Own visits: after origin and rate limit (an ignored client
            // is refused like any other), before any bot or visitor work.
            if site.config.ignores(sender.ip) {
                self.counters.record(HitResult::Ignored);
                return Ok(on_page(&buf, Verdict::Ignored, None));
            }
            // One cache lookup gives the bot verdict and the browser,
            // system and device the breakdowns count.
            let (agent, bot) =
                self.classifier
                    .agent_and_bot(sender.user_agent, sender.hints, |ua| {
                        self.bots.matches_uncached(ua)
                    });
            if !site.counting.count_bots && bot {
                self.counters.record(HitResult::Bot);
                return Ok(on_page(&buf, Verdict::Bot, None));
            }
            let secs = now.as_second();
            let day = site.clock.day_at(secs);
            let parts = VisitorParts {
                vid: beacon.vid.as_deref(),
                ip: sender.ip,
                user_agent: sender.user_agent,
                no_track: sender.no_track && site.counting.respect_dnt,
            };
            let visitor = self.identity.visitor(&site.id, day, &parts);
            if let (Some(filter), Ok(v)) = (&site.dedupe, &visitor)
                && filter.check_and_insert(repeat_key(*v, &buf), now.as_millisecond().max(0) as u64)
            {
                self.counters.record(HitResult::Duplicate);
                return Ok(on_page(&buf, Verdict::Duplicate, None));
            }
            let title = beacon.title.as_deref().and_then(beacon::clean_title);
            let (counted, answer) = site.tally.count_then(&buf, day, |counted, entry| {
                // A page the tally keeps: its title under the tally's key.
                if let (Some(entry), Some(title)) = (&entry, &title) {
                    site.titles.note(entry.key, title);
                }
                (counted, on_page(&buf, Verdict::Counted(counted), entry))
            });
            if counted == Counted::SiteOnlyOverflow {
                site.metrics.overflow.increment(1);
            }
            // After the tally: the flusher takes breakdowns before the
            // tally, so a period's values never exceed its hits.
            let hit = Hit {
                page: raw_page,
                referrer: beacon.referrer.as_deref(),
                user_agent: sender.user_agent,
                hints: sender.hints,
            };
            let dims = self
                .classifier
                .classify_with(&hit, agent, &site.config.hosts);
            let kept = (counted == Counted::Page).then_some(buf.as_str());
            let country = classify::country(sender.country, sender.ip);
            let overflow = site.breakdown.count(&hit_values(&dims, country), kept, day);
            for dim in overflow.dimensions() {
                self.counters.breakdown_overflow[dim.index()].increment(1);
            }
            site.metrics.hits.increment(1);
            self.counters.record(HitResult::Counted);
            match visitor {
                Ok(visitor) => {
                    site.see_visitor(secs, visitor);
                    site.see_reader(&buf, secs, visitor);
                    if let Some(batcher) = &site.visitors {
                        batcher.record(secs, day, visitor);
                    }
                }
                Err(Anonymous::NoTrack) => self.counters.anonymous_no_track.increment(1),
                Err(Anonymous::NoSalt) => self.counters.anonymous_no_salt.increment(1),
            }
            Ok(answer)
        })
    }
}

/// A hit's dimensions as the breakdowns count them: values luot names
/// by a fixed slot, request text as open values.
fn hit_values<'a>(dims: &'a Dimensions<'_>, country: Country) -> HitValues<'a> {
    let index = |i: usize| u16::try_from(i).unwrap_or(u16::MAX);
    let utm = |value: &'a Value<'_>| match value {
        Value::Known(NONE) => Pick::Fixed(0, NONE),
        other => Pick::Open(other.as_str()),
    };
    let source = match &dims.source {
        Value::Known(name) => Pick::Open(name),
        other => Pick::Open(other.as_str()),
    };
    HitValues {
        by: [
            Pick::Fixed(index(dims.channel as usize), dims.channel.as_str()),
            source,
            utm(&dims.utm_source),
            utm(&dims.utm_medium),
            utm(&dims.utm_campaign),
            Pick::Fixed(index(dims.browser as usize), dims.browser.as_str()),
            Pick::Fixed(index(dims.os as usize), dims.os.as_str()),
            Pick::Fixed(index(dims.device as usize), dims.device.as_str()),
            Pick::Fixed(country.index(), country.as_str()),
        ],
    }
}

/// The dedupe key of a visitor on a page.
fn repeat_key(visitor: u64, page: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    visitor.hash(&mut h);
    page.hash(&mut h);
    h.finish()
}

/// Resolves the beacon's site among the declared ones.
///
/// # Errors
/// [`IngestError::MissingSite`] or [`IngestError::UnknownSite`].
pub fn site_id<'b>(beacon: &'b Beacon<'_>) -> Result<&'b str, IngestError> {
    match beacon.site.as_deref() {
        None | Some("") => Err(IngestError::MissingSite),
        Some(id) => Ok(id),
    }
}

/// The error for an id that names no declared site.
pub fn unknown_site(id: &str) -> IngestError {
    IngestError::UnknownSite(echo(id))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::net::IpAddr;

    use ipnet::IpNet;

    use super::beacon::parse_plain;
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|s| crate::config::parse_net(s).unwrap())
            .collect()
    }

    #[test]
    fn json_and_text_plain_bodies_parse_the_same() {
        let b =
            parse_body(br#"{"site":"demo","page":"/a","ref":"https://x/","vid":"abc","extra":1}"#)
                .unwrap();
        assert_eq!(b.site.as_deref(), Some("demo"));
        assert_eq!(b.page.as_deref(), Some("/a"));
        assert_eq!(b.referrer.as_deref(), Some("https://x/"));
        assert_eq!(b.vid.as_deref(), Some("abc"));
    }

    #[test]
    fn plain_strings_are_borrowed_and_null_is_absent() {
        let body = br#"{"site":"demo","page":"/a","vid":null}"#;
        let b = parse_body(body).unwrap();
        assert!(matches!(b.site, Some(Cow::Borrowed("demo"))));
        assert!(matches!(b.page, Some(Cow::Borrowed("/a"))));
        assert_eq!(b.vid, None);
        assert_eq!(b.referrer, None);
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let b = parse_body(br#"{"site":"demo","page":"/tin-t\u1ee9c"}"#).unwrap();
        assert_eq!(b.page.as_deref(), Some("/tin-tức"));
    }

    #[test]
    fn bodies_read_as_text_or_as_bytes_parse_alike() {
        // Not UTF-8 only in a field a beacon ignores: read as bytes, as
        // before the text path existed.
        let b = parse_body(b"{\"site\":\"demo\",\"x\":\"\xff\"}").unwrap();
        assert_eq!(b.site.as_deref(), Some("demo"));
        for body in [
            &br#"{"site":"demo","page":"/a","vid":"v"}"#[..],
            br#"{"site":"d\u00e9mo","page":"/\ud83d\ude00"}"#,
            "{\"site\":\"démo\",\"page\":\"/tin-tức\"}".as_bytes(),
        ] {
            let text = parse_body(body).unwrap();
            let bytes: Beacon<'_> = serde_json::from_slice(body).unwrap();
            assert_eq!(text.site, bytes.site, "{body:?}");
            assert_eq!(text.page, bytes.page, "{body:?}");
            assert_eq!(text.vid, bytes.vid, "{body:?}");
        }
    }

    /// What serde alone makes of `text`: the reference for [`parse_plain`].
    fn by_serde(text: &str) -> Option<Beacon<'_>> {
        serde_json::from_str(text).ok()
    }

    #[test]
    fn the_plain_reader_takes_a_snippets_beacon() {
        let body = r#"{"site":"demo","page":"https://news.example/a?utm_source=fb#top","ref":"https://www.google.com/","vid":"v1"}"#;
        let plain = parse_plain(body).expect("a snippet's beacon is plain");
        assert!(matches!(plain.site, Some(Cow::Borrowed("demo"))));
        assert_eq!(Some(plain), by_serde(body));
    }

    #[test]
    fn the_plain_reader_gives_what_serde_gives_or_leaves_it_to_serde() {
        let taken = [
            "{}",
            "  { }  ",
            r#"{"site":"demo"}"#,
            r#"{ "site" : "demo" , "page" : "/a" }"#,
            r#"{"site":null,"page":"/a","vid":null,"ref":null}"#,
            r#"{"site":"d","other":"x","other":"y","ref":"r"}"#,
            r#"{"site":"démo","page":"/tin-tức","vid":""}"#,
            r#"{"Site":"x","site ":"y","si":"z"}"#,
            "{\"site\":\"a\u{7f}b\"}",
        ];
        for body in taken {
            let plain = parse_plain(body);
            assert!(plain.is_some(), "{body:?} should be read plainly");
            assert_eq!(plain, by_serde(body), "{body:?}");
        }
        // Escapes, other values and errors go to serde, which decodes,
        // ignores or refuses them.
        let left = [
            r#"{"site":"d\u00e9mo"}"#,
            r#"{"site":"a\"b"}"#,
            r#"{"si\u0074e":"demo"}"#,
            r#"{"site":"demo","extra":1}"#,
            r#"{"site":"demo","extra":{"a":[1,2]}}"#,
            r#"{"site":"demo","extra":true}"#,
            r#"{"site":"demo","site":"other"}"#,
            r#"{"site":null,"site":"other"}"#,
            r#"{"site":5}"#,
            r#"{"site":nullx}"#,
            r#"{"site":"demo",}"#,
            r#"{"site":"demo"} x"#,
            r#"{"site":"demo""#,
            r#"{"site" "demo"}"#,
            r#"{site:"demo"}"#,
            "{\"site\":\"a\tb\"}",
            "{\"site\":\"demo\"}\u{0c}",
            // Line breaks are fine JSON, but a printer's: serde reads them.
            " \t\r\n{ } \n",
            "{\n  \"site\": \"demo\"\n}",
            "{",
            "",
        ];
        for body in left {
            assert_eq!(parse_plain(body), None, "{body:?} should be left to serde");
        }
    }

    proptest::proptest! {
        /// Bodies put together from the pieces a beacon is made of, right
        /// and wrong: whenever the plain reader takes one, serde reads the
        /// same beacon, and `parse_body` answers what serde answers.
        #[test]
        fn the_plain_reader_never_disagrees_with_serde(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                "{", "}", ",", ":", " ", "\n", "\t", "null", "nul", "1", "[]", "true",
                "\"site\"", "\"page\"", "\"ref\"", "\"vid\"", "\"other\"",
                "\"demo\"", "\"/a?b=c#d\"", "\"\"", "\"tức\"", "\"\\u0041\"",
                "\"a\\\"b\"", "\"\t\"", "\"", "\\", "x",
            ]), 0..24),
            object in proptest::bool::ANY,
        ) {
            let mut body: String = pieces.concat();
            if object {
                body = format!("{{{body}}}");
            }
            if let Some(plain) = parse_plain(&body) {
                proptest::prop_assert_eq!(Some(plain), by_serde(&body), "{:?}", body);
            }
            let ours = parse_body(body.as_bytes()).ok();
            let serde = if body.trim_ascii_start().starts_with('{') { by_serde(&body) } else { None };
            proptest::prop_assert_eq!(ours, serde, "{:?}", body);
        }

        /// Objects of members, mostly well formed: the plain reader takes
        /// most of them, and serde reads each the same.
        #[test]
        fn the_plain_reader_reads_objects_as_serde_does(
            members in proptest::collection::vec((
                proptest::sample::select(vec!["site", "page", "ref", "vid", "other", "Site", "si\\u0074e"]),
                proptest::sample::select(vec![
                    "\"demo\"", "null", "\"\"", "\"/tin-tức?x=1#y\"", "\"a\\\"b\"", "1",
                    "\"\u{7f}\"", "\"\u{1}\"", "{}", "nullx",
                ]),
                proptest::sample::select(vec!["", " ", "\n\t", "\r "]),
            ), 0..6),
        ) {
            let body = format!(
                "{{{}}}",
                members
                    .iter()
                    .map(|(key, value, ws)| format!("{ws}\"{key}\"{ws}:{ws}{value}{ws}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            if let Some(plain) = parse_plain(&body) {
                proptest::prop_assert_eq!(Some(plain), by_serde(&body), "{:?}", body);
            }
            proptest::prop_assert_eq!(parse_body(body.as_bytes()).ok(), by_serde(&body), "{:?}", body);
        }
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for body in [&b""[..], b"{", b"[]", b"{\"site\":5}", b"null", b"\xff\xfe"] {
            assert!(
                matches!(parse_body(body), Err(IngestError::Malformed(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn query_parameters_are_decoded_first_wins() {
        let b = parse_query("site=demo&page=%2Fa%3Fx%3D1&vid=v1&site=other&junk=1");
        assert_eq!(b.site.as_deref(), Some("demo"));
        assert_eq!(b.page.as_deref(), Some("/a?x=1"));
        assert_eq!(b.vid.as_deref(), Some("v1"));
        assert_eq!(b.referrer, None);
    }

    #[test]
    fn untrusted_peer_header_is_ignored() {
        let peer = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
        let ip = client_ip(peer, [&b"1.2.3.4"[..]].into_iter(), &nets(&["127.0.0.1"]));
        assert_eq!(ip, peer);
    }

    #[test]
    fn trusted_proxy_gives_rightmost_untrusted_hop() {
        let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let trusted = nets(&["127.0.0.1", "10.0.0.0/8"]);
        let ip = client_ip(
            peer,
            [&b"6.6.6.6, 198.51.100.7"[..], b"10.1.1.1"].into_iter(),
            &trusted,
        );
        assert_eq!(ip, "198.51.100.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn all_trusted_hops_give_the_leftmost_and_garbage_stops_the_walk() {
        let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let trusted = nets(&["127.0.0.0/8", "10.0.0.0/8"]);
        let ip = client_ip(peer, [&b"10.0.0.2, 10.0.0.3"[..]].into_iter(), &trusted);
        assert_eq!(ip, "10.0.0.2".parse::<IpAddr>().unwrap());
        let ip = client_ip(peer, [&b"garbage, 10.0.0.3"[..]].into_iter(), &trusted);
        assert_eq!(ip, "10.0.0.3".parse::<IpAddr>().unwrap());
        let ip = client_ip(peer, [&b"[2001:db8::1]:443"[..]].into_iter(), &trusted);
        assert_eq!(ip, "2001:db8::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn mapped_ipv6_is_its_ipv4() {
        let v6 = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(canonical(v6), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let plain = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(canonical(plain), plain);
    }

    #[test]
    fn echo_bounds_and_cleans_attacker_text() {
        let long = "x".repeat(1000);
        assert_eq!(echo(&long).len(), MAX_ECHO);
        assert_eq!(echo("a\nb"), "ab");
    }
}
