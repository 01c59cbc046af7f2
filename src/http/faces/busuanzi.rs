//! `GET /busuanzi?jsonpCallback=NAME`: the JSONP interface of busuanzi
//! (不蒜子), so that blog themes embedding its client can point it at luot.
//!
//! busuanzi names no site: the site is the one whose `hosts` holds the
//! `Referer`'s host, and the page is the `Referer`'s path (`/` when the
//! browser sends only its origin, as the default referrer policy does for
//! a cross-origin script). The hit goes through the same path as a beacon
//! ([`count_beacon`]), so origins, rate limits and bots apply unchanged.
//!
//! The callback name is the only request text echoed into the script, and
//! it is restricted to identifier characters, so the endpoint cannot be
//! turned into a script-injection gadget.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use jiff::Timestamp;

use super::text::query_param;
use super::{ApiError, Body, State, count_beacon, header_str, sender};
use crate::ingest::Beacon;
use crate::page::{MAX_HOST_LEN, host_of};

/// The longest callback name accepted.
const MAX_CALLBACK: usize = 64;

/// Whether `name` is a safe JavaScript identifier:
/// `^[A-Za-z_$][A-Za-z0-9_$]{0,63}$`.
pub fn is_callback(name: &str) -> bool {
    let mut bytes = name.bytes();
    let Some(first) = bytes.next() else {
        return false;
    };
    name.len() <= MAX_CALLBACK
        && (first.is_ascii_alphabetic() || first == b'_' || first == b'$')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
}

/// The three figures a busuanzi client shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// The site's unique visitors, all time.
    pub site_uv: u64,
    /// The page's total.
    pub page_pv: u64,
    /// The site's total.
    pub site_pv: u64,
}

/// The JSONP body, byte for byte what busuanzi's server sends.
pub fn jsonp(callback: &str, a: Answer) -> String {
    format!(
        "try{{{callback}({{\"site_uv\":{},\"page_pv\":{},\"version\":2.4,\"site_pv\":{}}});}}catch(e){{}}",
        a.site_uv, a.page_pv, a.site_pv
    )
}

fn script(callback: &str, answer: Answer, error: Option<&'static str>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(jsonp(callback, answer))));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/javascript"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(code) = error {
        h.insert("x-luot-error", HeaderValue::from_static(code));
    }
    resp
}

/// Answers `GET /busuanzi`.
///
/// A request whose `Referer` names no declared host is answered with zeros
/// and status 200 — a busuanzi client runs only a script that loaded — and
/// the reason in `X-Luot-Error` (`no_referer` or `unknown_host`).
///
/// # Errors
/// 400 when `jsonpCallback` is missing or not an identifier; the beacon
/// path's refusals (403, 429…) as JSON.
pub async fn serve(
    state: &State,
    headers: &HeaderMap,
    query: Option<&str>,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let callback = query_param(query, "jsonpCallback")
        .filter(|c| is_callback(c))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_callback",
                "`jsonpCallback` must be an identifier: a letter, `_` or `$`, then up to 63 letters, digits, `_` or `$`",
            )
        })?;
    let Some(referer) = header_str(headers, header::REFERER) else {
        return Ok(script(&callback, Answer::default(), Some("no_referer")));
    };
    let mut host = String::with_capacity(MAX_HOST_LEN);
    let Some(host) = host_of(referer, &mut host) else {
        return Ok(script(&callback, Answer::default(), Some("no_referer")));
    };
    let Some(site) = state.sites.load().by_host(host).cloned() else {
        return Ok(script(&callback, Answer::default(), Some("unknown_host")));
    };
    let sender = sender(state, headers, peer);
    // The answer reads figures: the read limit applies before the hit.
    if !site.read_limiter.allow(sender.ip) {
        return Err(ApiError::read_limited());
    }
    let id = Arc::clone(&site.id);
    let beacon = Beacon {
        site: Some(Cow::Borrowed(&id)),
        page: Some(Cow::Borrowed(referer)),
        referrer: None,
        vid: None,
        title: None,
    };
    let now = Timestamp::now();
    let (site, page) = count_beacon(state, &beacon, &sender, now, false)?;
    let site_figures = state.reader.site_figures(&site, now);
    let page_pv = match page {
        Some(page) => {
            let figures = state.reader.page_figures(
                &site,
                &page.name,
                now,
                page.kept,
                crate::metrics::ReadRoute::Busuanzi,
            );
            figures.await.total
        }
        None => 0,
    };
    let answer = Answer {
        site_uv: site_figures.visitors.map_or(0, |v| v.total),
        page_pv,
        site_pv: site_figures.total,
    };
    Ok(script(&callback, answer, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_are_identifiers_only() {
        for ok in [
            "BusuanziCallback_1099511627775",
            "_",
            "$",
            "a$b_9",
            &"x".repeat(64),
        ] {
            assert!(is_callback(ok), "{ok}");
        }
        for bad in [
            "",
            "9a",
            "alert(1)//",
            "a.b",
            "a b",
            "a;b",
            "ä",
            "a\u{2028}",
            &"x".repeat(65),
        ] {
            assert!(!is_callback(bad), "{bad}");
        }
    }

    #[test]
    fn the_answer_is_busuanzi_byte_for_byte() {
        let a = Answer {
            site_uv: 3,
            page_pv: 2,
            site_pv: 9_356_665,
        };
        assert_eq!(
            jsonp("BusuanziCallback_42", a),
            r#"try{BusuanziCallback_42({"site_uv":3,"page_pv":2,"version":2.4,"site_pv":9356665});}catch(e){}"#
        );
    }
}
