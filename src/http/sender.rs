//! Who sent a request, read from its head: [`sender`] (the client's
//! address behind trusted proxies, its User-Agent, DNT or GPC, Origin and
//! Referer, found in one pass) and [`header_str`] (one header as text).
//!
//! Reads headers only: what an address or a User-Agent means (a client to
//! limit, a bot, a visitor) is `ingest`'s to decide.

use std::net::SocketAddr;

use hyper::header::{self, HeaderMap, HeaderValue};

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

/// Who sent a request: the client's address (behind trusted proxies, from
/// `X-Forwarded-For`), its User-Agent and Client Hints, DNT or GPC, Origin
/// and Referer.
///
/// The fields are found in one pass over the head rather than looked up by
/// name one by one, which hashed each name (the six lookups took ~1,100
/// instructions a beacon; callgrind). Each takes its first value, as a
/// lookup does; `X-Forwarded-For` is looked up by name only when it comes
/// in several fields, to take them all in order.
pub(super) fn sender<'r>(state: &State, headers: &'r HeaderMap, peer: SocketAddr) -> Sender<'r> {
    let (mut user_agent, mut dnt, mut gpc, mut origin, mut referer) =
        (None, None, None, None, None);
    let (mut ch_ua, mut ch_mobile, mut ch_platform) = (None, None, None);
    // The first X-Forwarded-For field, and whether there are more (a proxy
    // chain may add its own): one field is taken from the pass, several
    // are looked up by name in order (~400 instructions a lookup).
    let (mut forwarded, mut forwarded_more) = (None, false);
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
        } else {
            continue;
        };
        slot.get_or_insert(value);
    }
    let peer_ip = ingest::canonical(peer.ip());
    let ip = if forwarded_more {
        let all = headers.get_all(X_FORWARDED_FOR);
        ingest::client_ip(
            peer_ip,
            all.iter().map(HeaderValue::as_bytes),
            &state.trusted_proxies,
        )
    } else {
        let first = forwarded.map(HeaderValue::as_bytes);
        ingest::client_ip(peer_ip, first.into_iter(), &state.trusted_proxies)
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
    }
}
