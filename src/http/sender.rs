//! Who sent a request, read from its head: [`sender`] (the client's
//! address behind trusted proxies, its User-Agent, DNT or GPC, Origin,
//! Referer and a trusted proxy's country header, found in one pass) and
//! [`header_str`] (one header as text).
//!
//! Reads headers only: what an address or a User-Agent means (a client to
//! limit, a bot, a visitor) is `ingest`'s to decide.

use std::net::SocketAddr;

use hyper::header::{self, HeaderMap, HeaderValue};
use ipnet::IpNet;

use super::State;
use crate::ingest::classify::ClientHints;
use crate::ingest::{self, Sender};

pub(super) fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Header names compared or looked up on every beacon, as constants: a
/// name given as a string is parsed at each use.
const X_FORWARDED_FOR: header::HeaderName = header::HeaderName::from_static("x-forwarded-for");
const SEC_GPC: header::HeaderName = header::HeaderName::from_static("sec-gpc");
const SEC_CH_UA: header::HeaderName = header::HeaderName::from_static("sec-ch-ua");
const SEC_CH_UA_MOBILE: header::HeaderName = header::HeaderName::from_static("sec-ch-ua-mobile");
const SEC_CH_UA_PLATFORM: header::HeaderName =
    header::HeaderName::from_static("sec-ch-ua-platform");

/// The country headers of Cloudflare and CloudFront, read only from a
/// trusted proxy (besides `server.country_header`, in `State`).
const CF_IPCOUNTRY: header::HeaderName = header::HeaderName::from_static("cf-ipcountry");
const CLOUDFRONT_VIEWER_COUNTRY: header::HeaderName =
    header::HeaderName::from_static("cloudfront-viewer-country");

/// Who sent a request: the client's address (behind trusted proxies, from
/// `X-Forwarded-For`), its User-Agent and Client Hints, DNT or GPC, Origin
/// and Referer, and — from a trusted proxy only, like `X-Forwarded-For` —
/// its country header (`server.country_header`, else `CF-IPCountry`, else
/// `CloudFront-Viewer-Country`; the country names are compared only then).
///
/// The fields are found in one pass over the head rather than looked up by
/// name one by one, which hashed each name (the six lookups took ~1,100
/// instructions a beacon; callgrind). Each takes its first value, as a
/// lookup does; `X-Forwarded-For` is looked up by name only when it comes
/// in several fields, to take them all in order.
pub(super) fn sender<'r>(state: &State, headers: &'r HeaderMap, peer: SocketAddr) -> Sender<'r> {
    read_sender(
        &state.trusted_proxies,
        state.country_header.as_ref(),
        headers,
        peer,
    )
}

/// [`sender`] with the two settings it reads, for tests without a `State`.
fn read_sender<'r>(
    trusted_proxies: &[IpNet],
    country_header: Option<&header::HeaderName>,
    headers: &'r HeaderMap,
    peer: SocketAddr,
) -> Sender<'r> {
    let (mut user_agent, mut dnt, mut gpc, mut origin, mut referer) =
        (None, None, None, None, None);
    let (mut ch_ua, mut ch_mobile, mut ch_platform) = (None, None, None);
    // The first X-Forwarded-For field, and whether there are more (a proxy
    // chain may add its own): one field is taken from the pass, several
    // are looked up by name in order (~400 instructions a lookup).
    let (mut forwarded, mut forwarded_more) = (None, false);
    let peer_ip = ingest::canonical(peer.ip());
    let from_proxy = trusted_proxies.iter().any(|n| n.contains(&peer_ip));
    let (mut custom_country, mut cf_country, mut cloudfront_country) = (None, None, None);
    for (name, value) in headers {
        let slot = if *name == header::USER_AGENT {
            &mut user_agent
        } else if *name == X_FORWARDED_FOR {
            forwarded_more = forwarded.is_some();
            forwarded.get_or_insert(value);
            continue;
        } else if *name == header::ORIGIN {
            &mut origin
        } else if *name == header::REFERER {
            &mut referer
        } else if *name == header::DNT {
            &mut dnt
        } else if *name == SEC_GPC {
            &mut gpc
        } else if *name == SEC_CH_UA {
            &mut ch_ua
        } else if *name == SEC_CH_UA_MOBILE {
            &mut ch_mobile
        } else if *name == SEC_CH_UA_PLATFORM {
            &mut ch_platform
        } else if !from_proxy {
            continue;
        } else if *name == CF_IPCOUNTRY {
            &mut cf_country
        } else if *name == CLOUDFRONT_VIEWER_COUNTRY {
            &mut cloudfront_country
        } else if country_header == Some(name) {
            &mut custom_country
        } else {
            continue;
        };
        slot.get_or_insert(value);
    }
    let ip = if forwarded_more {
        let all = headers.get_all(X_FORWARDED_FOR);
        ingest::client_ip(
            peer_ip,
            all.iter().map(HeaderValue::as_bytes),
            trusted_proxies,
        )
    } else {
        let first = forwarded.map(HeaderValue::as_bytes);
        ingest::client_ip(peer_ip, first.into_iter(), trusted_proxies)
    };
    let flag = |value: Option<&HeaderValue>| value.is_some_and(|v| v.as_bytes() == b"1");
    let text = |value: Option<&'r HeaderValue>| value.and_then(|v| v.to_str().ok());
    Sender {
        ip,
        user_agent: user_agent.map_or(&b""[..], HeaderValue::as_bytes),
        no_track: flag(dnt) || flag(gpc),
        origin: text(origin).filter(|o| *o != "null"),
        referer: text(referer),
        hints: ClientHints {
            ua: ch_ua.map(HeaderValue::as_bytes),
            mobile: ch_mobile.map(HeaderValue::as_bytes),
            platform: ch_platform.map(HeaderValue::as_bytes),
        },
        country: text(custom_country.or(cf_country).or(cloudfront_country)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROXY: &str = "10.0.0.2:443";
    const CLIENT: &str = "203.0.113.9:5000";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for &(name, value) in pairs {
            map.append(name, HeaderValue::from_static(value));
        }
        map
    }

    fn country_of<'r>(
        map: &'r HeaderMap,
        peer: &str,
        custom: Option<&header::HeaderName>,
    ) -> Option<&'r str> {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        read_sender(&trusted, custom, map, peer.parse().unwrap()).country
    }

    #[test]
    fn a_trusted_proxy_country_header_is_carried() {
        let cf = headers(&[("cf-ipcountry", "VN")]);
        assert_eq!(country_of(&cf, PROXY, None), Some("VN"));
        let cloudfront = headers(&[("CloudFront-Viewer-Country", "jp")]);
        assert_eq!(country_of(&cloudfront, PROXY, None), Some("jp"));
        // CF-IPCountry over CloudFront-Viewer-Country, whatever the order.
        let both = headers(&[("cloudfront-viewer-country", "JP"), ("cf-ipcountry", "DE")]);
        assert_eq!(country_of(&both, PROXY, None), Some("DE"));
        assert_eq!(country_of(&headers(&[]), PROXY, None), None);
    }

    #[test]
    fn an_untrusted_peer_cannot_name_its_country() {
        for (name, value) in [
            ("cf-ipcountry", "VN"),
            ("cloudfront-viewer-country", "VN"),
            ("x-country", "VN"),
        ] {
            let map = headers(&[(name, value), ("x-forwarded-for", "8.8.8.8")]);
            let custom = header::HeaderName::from_static("x-country");
            assert_eq!(country_of(&map, CLIENT, Some(&custom)), None, "{name}");
        }
    }

    #[test]
    fn the_configured_country_header_is_read_and_wins() {
        let custom = header::HeaderName::from_static("x-country");
        let map = headers(&[("cf-ipcountry", "DE"), ("X-Country", "VN")]);
        assert_eq!(country_of(&map, PROXY, Some(&custom)), Some("VN"));
        // Not configured: an unknown header is nobody's country.
        let only = headers(&[("x-country", "VN")]);
        assert_eq!(country_of(&only, PROXY, None), None);
        assert_eq!(country_of(&only, PROXY, Some(&custom)), Some("VN"));
    }

    #[test]
    fn the_rest_of_the_sender_is_unchanged_by_a_country_header() {
        let map = headers(&[
            ("cf-ipcountry", "VN"),
            ("x-forwarded-for", "8.8.8.8"),
            ("user-agent", "ua"),
        ]);
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let s = read_sender(&trusted, None, &map, PROXY.parse().unwrap());
        assert_eq!(s.ip, "8.8.8.8".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(s.user_agent, b"ua");
        assert_eq!(s.country, Some("VN"));
    }
}
