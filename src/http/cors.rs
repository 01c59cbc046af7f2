//! CORS: [`allow_origin`] (an answer's `Access-Control-Allow-Origin` when
//! the site allows the request's `Origin`) and [`preflight`] (`OPTIONS` on
//! `/hit` and on a site's counters).
//!
//! Which origins a site allows is its configuration's to say; this file
//! only writes the headers.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::sender::header_str;
use super::{ApiError, Body, State};
use crate::site::Site;

/// Adds CORS headers for `origin` when the site allows it.
pub(super) fn allow_origin(resp: &mut Response<Body>, site: &Site, origin: Option<&str>) {
    let h = resp.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin
        && site.config.allows_origin(origin)
        && let Ok(v) = HeaderValue::from_str(origin)
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
}

pub(super) fn preflight(
    state: &State,
    req: &Request<Incoming>,
    site_param: Option<String>,
) -> Result<Response<Body>, ApiError> {
    let origin = header_str(req.headers(), header::ORIGIN);
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    // A preflight does not say which site a beacon is for; allow an origin
    // that some declared site allows (the beacon itself is checked again).
    let allowed = origin.filter(|o| match &site_param {
        Some(id) => state
            .sites
            .load()
            .get(id)
            .is_some_and(|s| s.config.allows_origin(o)),
        None => state.sites.load().iter().any(|s| s.config.allows_origin(o)),
    });
    let h = resp.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(v) = allowed.and_then(|o| HeaderValue::from_str(o).ok()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
    }
    Ok(resp)
}
