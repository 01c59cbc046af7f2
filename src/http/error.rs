//! Refusals and their statuses: [`ApiError`] (a status, a machine-readable
//! code and a sentence), its JSON answer ([`ApiError::response`], the one
//! place a refusal becomes an answer) and `From<IngestError>`, which
//! decides the status of every refused beacon.
//!
//! Knows nothing of routes or state: a handler picks the refusal, this
//! file how it is written.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;

use super::Body;
use crate::ingest::IngestError;

/// A refusal, with the status and machine-readable code it maps to.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(super) fn not_found() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    pub(super) fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not answer that method",
        )
    }

    /// A client over its read limit: the beacon limit's status and code.
    pub(crate) fn read_limited() -> Self {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many reads from this address; slow down",
        )
    }

    pub(super) fn body_too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body exceeds {limit} bytes"),
        )
    }

    /// The JSON error response: `{"error": code, "message": sentence}`.
    pub fn response(&self) -> Response<Body> {
        let body = serde_json::to_vec(&ErrorBody {
            error: self.code,
            message: &self.message,
        })
        .unwrap_or_default();
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        let (status, code) = match &e {
            IngestError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed"),
            IngestError::MissingSite => (StatusCode::BAD_REQUEST, "missing_site"),
            IngestError::BadPage(_) => (StatusCode::BAD_REQUEST, "bad_page"),
            IngestError::UnknownSite(_) => (StatusCode::NOT_FOUND, "unknown_site"),
            IngestError::ForbiddenOrigin(_) => (StatusCode::FORBIDDEN, "origin_not_allowed"),
            IngestError::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_errors_map_to_their_statuses() {
        let cases = [
            (IngestError::Malformed("x".into()), 400),
            (IngestError::MissingSite, 400),
            (IngestError::UnknownSite("x".into()), 404),
            (IngestError::ForbiddenOrigin("x".into()), 403),
            (IngestError::BadPage(crate::page::PageError::NotAPath), 400),
        ];
        for (e, status) in cases {
            assert_eq!(ApiError::from(e).status.as_u16(), status);
        }
    }
}
