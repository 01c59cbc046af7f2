//! The beacon routes: `POST /hit` ([`post_hit`]; a quiet beacon is
//! answered `204` by [`quiet_beacon`], the hot path, any other with the
//! site's and the page's figures), `GET /hit.gif` ([`hit_gif`], answered
//! with [`PIXEL_GIF`]) and [`count_beacon`], through which every beacon is
//! counted, busuanzi's included.
//!
//! Counting is `ingest`'s: these handlers read the request, lend its parts
//! to `Ingest::count` and write the answer. A quiet beacon never awaits
//! once its body is read, and for a known page, visitor and client
//! allocates nothing (`tests/alloc.rs` counts).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use jiff::Timestamp;

use super::answer::json_bytes;
use super::body::{MAX_DISCARD, read_body};
use super::cors::allow_origin;
use super::faces::figures;
use super::sender::sender;
use super::{ApiError, Body, State};
use crate::count::tally::Kept;
use crate::ingest::{self, Beacon, Ingest, IngestError, Sender};
use crate::metrics;
use crate::site::Site;

/// A transparent 1×1 GIF.
pub const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

pub(super) async fn post_hit(
    state: &State,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let quiet = is_quiet(req.uri());
    let (parts, body) = req.into_parts();
    let limit = state.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_DISCARD as u64) {
        // Too large even to drain: answer now; the connection closes.
        state.counters.record(metrics::HitResult::Invalid);
        return Err(ApiError::body_too_large(limit));
    }
    let bytes = read_body(body, limit)
        .await
        .inspect_err(|_| state.counters.record(metrics::HitResult::Invalid))?;
    if quiet {
        return quiet_beacon(state, &parts.headers, &bytes, peer);
    }
    // Boxed: its future (a page read) is large, and would otherwise make
    // every request's future large, quiet ones included.
    Box::pin(answer_beacon(state, &parts.headers, &bytes, peer)).await
}

/// Counts a beacon and answers with the site's and the page's figures.
async fn answer_beacon(
    state: &State,
    headers: &HeaderMap,
    body: &[u8],
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let beacon = ingest::parse_body(body).inspect_err(|e| state.counters.record(e.result()))?;
    let sender = sender(state, headers, peer);
    let now = Timestamp::now();
    let (site, page) = count_beacon(state, &beacon, &sender, now, false)?;
    let mut resp = match page {
        None => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        // `json_bytes` marks it `no-store`.
        Some(CountedPage { name, kept }) => {
            let page_figures = state
                .reader
                .page_figures(&site, &name, now, kept, metrics::ReadRoute::Hit)
                .await;
            let site_figures = state.reader.site_figures(&site, now);
            json_bytes(
                StatusCode::OK,
                figures::beacon_answer(&site_figures, &page_figures),
            )
        }
    };
    allow_origin(&mut resp, &site, sender.origin);
    Ok(resp)
}

/// Whether a `/hit` query asks for a quiet answer (`quiet=1`).
///
/// A query without `%` or `+` decodes to itself, so its pairs are compared
/// as they are; any other query goes through the form decoder. The
/// decoder's `Cow` pairs cost ~650 instructions per beacon against ~60.
pub fn is_quiet(uri: &hyper::Uri) -> bool {
    uri.query().is_some_and(query_is_quiet)
}

fn query_is_quiet(query: &str) -> bool {
    let q = query.as_bytes();
    if q.iter().any(|&b| b == b'%' || b == b'+') {
        return form_urlencoded::parse(q).any(|(k, v)| k == "quiet" && v == "1");
    }
    q.split(|&b| b == b'&').any(|pair| pair == b"quiet=1")
}

/// Counts a beacon sent with `?quiet=1`, from the request's headers and body
/// bytes to the `204` answer.
///
/// This is the hot path of a page view; it allocates nothing once the page,
/// the visitor and the client are known (a test with a counting allocator
/// holds it to that). The answer carries no header unless the browser sent
/// an `Origin` that needs CORS headers.
///
/// # Errors
/// An [`ApiError`] when the beacon is refused.
pub fn quiet_beacon(
    state: &State,
    headers: &HeaderMap,
    body: &[u8],
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let beacon = ingest::parse_body(body).inspect_err(|e| state.counters.record(e.result()))?;
    let sender = sender(state, headers, peer);
    let (site, _) = count_beacon(state, &beacon, &sender, Timestamp::now(), true)?;
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    if sender.origin.is_some() {
        allow_origin(&mut resp, &site, sender.origin);
    }
    Ok(resp)
}

/// The page a beacon was counted on, for its answer.
pub(super) struct CountedPage {
    /// The normalised page; the tally's own name for it when it keeps it.
    pub(super) name: Arc<str>,
    /// The page's kept store reading when the tally keeps the page (`None`:
    /// look it up).
    pub(super) kept: Option<Option<Kept>>,
}

/// Counts a beacon; returns the site and, unless `quiet`, the normalised
/// page (to read its figures for the answer).
pub(super) fn count_beacon(
    state: &State,
    beacon: &Beacon<'_>,
    sender: &Sender<'_>,
    now: Timestamp,
    quiet: bool,
) -> Result<(Arc<Site>, Option<CountedPage>), ApiError> {
    let outcome = (|| {
        let id = ingest::site_id(beacon)?;
        let table = state.sites.load();
        let site = table.get(id).ok_or_else(|| ingest::unknown_site(id))?;
        let ingest = Ingest {
            identity: &state.identity,
            counters: &state.counters,
            bots: &state.bots,
            classifier: &state.classifier,
        };
        let page = ingest.count(site, beacon, sender, now, |page, _, entry| {
            (!quiet).then(|| match entry {
                Some(entry) => CountedPage {
                    name: Arc::clone(entry.key),
                    kept: Some(entry.reading(now.as_millisecond(), state.reader.page_ttl())),
                },
                None => CountedPage {
                    name: Arc::from(page),
                    kept: None,
                },
            })
        })?;
        Ok::<_, IngestError>((Arc::clone(site), page))
    })();
    outcome.map_err(|e| {
        state.counters.record(e.result());
        ApiError::from(e)
    })
}

pub(super) fn hit_gif(state: &State, req: &Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let beacon = ingest::parse_query(req.uri().query().unwrap_or_default());
    let sender = sender(state, req.headers(), peer);
    let result = count_beacon(state, &beacon, &sender, Timestamp::now(), true);
    let mut resp = Response::new(Full::new(Bytes::from_static(PIXEL_GIF)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache, must-revalidate, max-age=0"),
    );
    if let Err(e) = result {
        *resp.status_mut() = e.status;
        resp.headers_mut()
            .insert("x-luot-error", HeaderValue::from_static(e.code));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decoded_quiet(query: &str) -> bool {
        form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "quiet" && v == "1")
    }

    #[test]
    fn quiet_is_read_from_plain_and_encoded_queries() {
        for (query, quiet) in [
            ("quiet=1", true),
            ("a=b&quiet=1", true),
            ("quiet=1&quiet=0", true),
            ("quiet=0", false),
            ("quiet=10", false),
            ("quiet", false),
            ("xquiet=1", false),
            ("quiet=%31", true),
            ("qu%69et=1", true),
            ("quiet=1+", false),
            ("", false),
        ] {
            assert_eq!(query_is_quiet(query), quiet, "{query:?}");
        }
    }

    proptest! {
        /// The plain-query shortcut decides as the form decoder does.
        #[test]
        fn quiet_shortcut_agrees_with_the_decoder(
            query in "((quiet|qu%69et|q|a)(=(1|0|%31|1\\+|))?&?){0,4}",
        ) {
            prop_assert_eq!(query_is_quiet(&query), decoded_quiet(&query));
        }
    }

    #[test]
    fn pixel_is_a_gif() {
        assert!(PIXEL_GIF.starts_with(b"GIF89a"));
        assert_eq!(PIXEL_GIF.last(), Some(&0x3b));
    }
}
