//! The answers routes share: [`json`] and [`json_bytes`] (a JSON body,
//! never stored by a cache), [`csv`] and [`document`] (a rendered page or image with
//! its type, caching and content security policy).
//!
//! Builds a response from what a handler already has; reads no state and
//! refuses nothing (refusals are [`super::ApiError`]'s).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;

use super::Body;

pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let mut body = Vec::with_capacity(128);
    if serde_json::to_writer(&mut body, value).is_err() {
        body.clear();
    }
    json_bytes(status, body)
}

/// A CSV table (`text/csv`, UTF-8), never stored by a cache.
pub(super) fn csv(text: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A JSON answer from bytes already written.
pub(super) fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    json_bytes_shared(status, Bytes::from(body))
}

/// [`json_bytes`] of a body that is shared (kept for other answers).
pub(super) fn json_bytes_shared(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A rendered document (the dashboard, the widget, the badge): its type,
/// caching and content security policy, and never sniffed or sent a
/// referrer from.
pub(super) fn document(
    body: String,
    content_type: &'static str,
    cache_control: &'static str,
    csp: &'static str,
) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}
