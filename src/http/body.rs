//! A request within its size limits: [`head_too_large`] (the head against
//! `max_header_bytes` and `max_headers`, as sent) and [`read_body`] (a body
//! of at most `max_body_bytes`; up to [`MAX_DISCARD`] bytes of a larger one
//! are read and dropped so that its sender sees the 413).
//!
//! Measures and reads only; what a body says is `ingest`'s to parse.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::{ApiError, State};

/// Whether the request head exceeds the configured limits.
pub(super) fn head_too_large(state: &State, req: &Request<Incoming>) -> bool {
    let headers = req.headers();
    if headers.len() > state.max_headers {
        return true;
    }
    // Request line plus "name: value\r\n" per field, as sent.
    let uri = req.uri();
    let target = uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + 3);
    let line = req.method().as_str().len() + target + 12;
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    line + fields > state.max_header_bytes
}

/// Most body bytes read and thrown away to answer an oversized beacon
/// cleanly: clients that write the whole body before reading the answer
/// would otherwise see a reset instead of the 413.
pub(super) const MAX_DISCARD: usize = 1 << 20;

/// Reads a body of at most `limit` bytes.
///
/// # Errors
/// 413 when the body is larger (after reading and discarding up to
/// [`MAX_DISCARD`] bytes of it), 400 when it cannot be read.
pub(super) async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    let mut body = body;
    // A beacon arrives in one frame: keep hyper's buffer as it is, and copy
    // only when a body comes in pieces.
    let mut first: Option<Bytes> = None;
    let mut kept = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                "the request body could not be read",
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen <= limit {
            if first.is_none() && kept.is_empty() {
                first = Some(data);
            } else {
                if let Some(f) = first.take() {
                    kept.extend_from_slice(&f);
                }
                kept.extend_from_slice(&data);
            }
        } else if seen > MAX_DISCARD {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::body_too_large(limit));
    }
    Ok(first.unwrap_or_else(|| kept.freeze()))
}
