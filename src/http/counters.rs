//! `GET /api/v1/sites/{site}/counters`: a site's figures, or with `?page=`
//! a page's, as JSON, with CORS for the origins the site allows.
//!
//! Reads through `read` and never counts; the read limit is checked by the
//! router before this handler runs.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header;
use hyper::{Request, Response, StatusCode};
use jiff::Timestamp;

use super::answer::json_bytes;
use super::cors::allow_origin;
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
    let page = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "page")
            .map(|(_, v)| v.into_owned())
    });
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
    let mut resp = json_bytes(StatusCode::OK, figures::to_vec(&figures));
    allow_origin(&mut resp, &site, origin);
    Ok(resp)
}
