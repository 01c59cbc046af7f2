//! `GET /luot.js`: the embed snippet, compiled into the binary.
//!
//! The script itself lives in `assets/luot.js` (hand-written, no build
//! step, no dependency). It is served with a long cache lifetime and an
//! `ETag` derived from its bytes, so a new release is picked up within a
//! day and a revalidation costs a 304. This module must not count anything:
//! the snippet's beacon goes to `POST /hit` like any other.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

use super::{Body, State, header_str};

/// The snippet's source.
pub const SCRIPT: &str = include_str!("assets/luot.js");

/// The snippet's entity tag: a 64-bit FNV-1a hash of its bytes, computed at
/// compile time, so it changes exactly when the script does.
pub const ETAG: &str = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const BYTES: [u8; 20] = {
        let hash = fnv1a(SCRIPT.as_bytes());
        // A strong tag: `"l-` + 16 hex digits + `"`.
        let mut tag = [0u8; 20];
        tag[0] = b'"';
        tag[1] = b'l';
        tag[2] = b'-';
        let mut i = 0;
        while i < 16 {
            tag[3 + i] = HEX[((hash >> (60 - 4 * i)) & 0xf) as usize];
            i += 1;
        }
        tag[19] = b'"';
        tag
    };
    match std::str::from_utf8(&BYTES) {
        Ok(s) => s,
        Err(_) => panic!("the ETag is ASCII"),
    }
};

/// How long browsers and CDNs may reuse the snippet without asking.
const CACHE_CONTROL: &str = "public, max-age=86400";

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// Whether an `If-None-Match` header names the current tag (or `*`).
/// Weak comparison, as RFC 9110 asks for `If-None-Match`.
fn matches(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.trim_start_matches("W/") == ETAG)
}

/// Answers `GET /luot.js`: the script, or 304 when the client's copy is
/// current. CORS headers only for an `Origin` some declared site allows.
pub fn serve(state: &State, headers: &HeaderMap) -> Response<Body> {
    let fresh = matches(headers);
    let mut resp = if fresh {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(Full::new(Bytes::from_static(SCRIPT.as_bytes())))
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    h.insert(header::ETAG, HeaderValue::from_static(ETAG));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = header_str(headers, header::ORIGIN)
        && state
            .sites
            .load()
            .iter()
            .any(|s| s.config.allows_origin(origin))
        && let Ok(v) = HeaderValue::from_str(origin)
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_is_a_quoted_hash_of_the_script() {
        assert_eq!(ETAG.len(), 20);
        assert!(ETAG.starts_with("\"l-") && ETAG.ends_with('"'));
        assert_eq!(&ETAG[3..19], format!("{:016x}", fnv1a(SCRIPT.as_bytes())));
    }

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
            matches(&h)
        };
        assert!(with(ETAG));
        assert!(with(&format!("\"x\", W/{ETAG}")));
        assert!(with("*"));
        assert!(!with("\"l-0000000000000000\""));
        assert!(!matches(&HeaderMap::new()));
    }

    #[test]
    fn the_script_has_no_dependency_and_posts_text_plain() {
        assert!(!SCRIPT.contains("import "));
        assert!(
            !SCRIPT.contains("Content-Type"),
            "a custom header forces a preflight"
        );
        assert!(SCRIPT.contains("keepalive: true"));
        assert!(SCRIPT.contains("sendBeacon"));
    }
}
