//! `GET /api/v1/sites/{site}/counters`: a site's figures, or with `?page=`
//! a page's, as JSON, with CORS for the origins the site allows and AMP's
//! CORS protocol for `amp-list` (`__amp_source_origin`, an AMP cache's
//! `Origin`; `amp=1` wraps the figures as `{"items":[…]}`).
//!
//! Reads through `read` and never counts; the read limit is checked by the
//! router before this handler runs.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header;
use hyper::{Request, Response, StatusCode};
use jiff::Timestamp;

use super::answer::json_bytes;
use super::cors::allow_amp;
use super::faces::figures;
use super::sender::header_str;
use super::{ApiError, Body, State, lookup};
use crate::ingest::IngestError;
use crate::metrics;

pub(super) async fn counters(
    state: &State,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let site = lookup(state, id)?;
    let origin = header_str(req.headers(), header::ORIGIN);
    // The first of each; anything else in the query is ignored.
    let (mut page, mut source_origin, mut amp) = (None, None, false);
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes()) {
        match &*k {
            "page" if page.is_none() => page = Some(v.into_owned()),
            "__amp_source_origin" if source_origin.is_none() => {
                source_origin = Some(v.into_owned());
            }
            "amp" => amp |= v == "1",
            _ => {}
        }
    }
    let now = Timestamp::now();
    let figures = match page {
        None => state.reader.site_figures(&site, now),
        Some(raw) => {
            let page: Arc<str> = crate::page::normalize(&raw, site.rules)
                .map_err(|e| ApiError::from(IngestError::BadPage(e)))?
                .into();
            state
                .reader
                .page_figures(&site, &page, now, None, metrics::ReadRoute::Counters)
                .await
        }
    };
    let body = if amp {
        // amp-list renders the array under `items`.
        let mut out = b"{\"items\":[".to_vec();
        out.extend_from_slice(&figures::to_vec(&figures));
        out.extend_from_slice(b"]}");
        out
    } else {
        figures::to_vec(&figures)
    };
    let mut resp = json_bytes(StatusCode::OK, body);
    allow_amp(&mut resp, &site, origin, source_origin.as_deref());
    Ok(resp)
}
