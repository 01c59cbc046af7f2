//! `GET /api/v1/sites/{site}/online`: who reads the site now — its
//! `online` figure and the pages with the most readers ("Đang đọc"),
//! largest first, with the site's figure per minute over the last hour
//! for the dashboard's chart.
//!
//! Thin: the ranking is kept by `count::page_online` (ranked at flush
//! time, never by scanning pages per request), the hour by the site; this
//! file checks the request and writes the answer. Private sites need
//! their read token, like series, top and breakdown.

use hyper::header::HeaderMap;
use hyper::{Response, StatusCode};
use jiff::Timestamp;
use serde::Serialize;

use super::history::{authorize, param};
use super::{ApiError, Body, State, json, lookup};
use crate::count::page_online::RANKED;

/// Pages listed when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 10;

#[derive(Serialize)]
struct PageNow<'a> {
    page: &'a str,
    online: u64,
}

#[derive(Serialize)]
struct OnlineAnswer<'a> {
    site: &'a str,
    online: u64,
    pages: Vec<PageNow<'a>>,
    /// The site's `online` at each of the last 60 minutes, oldest first
    /// (`[unix minute × 60, online]`), as this instance noted it.
    hour: Vec<(i64, u64)>,
    as_of: &'a str,
}

/// Answers `GET /api/v1/sites/{site}/online[?limit=N]`.
///
/// # Errors
/// 404 for an undeclared site, 401 without the token of a private site,
/// 400 for a `limit` outside 1 to [`RANKED`].
pub fn serve(
    state: &State,
    id: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let site = lookup(state, id)?;
    authorize(&site, headers, query)?;
    let limit = match param(query, "limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=RANKED).contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_limit",
                    format!("`limit` must be 1 to {RANKED}"),
                )
            })?,
    };
    let now = Timestamp::now();
    let ranking = site.page_online.ranking();
    let secs = now.as_second();
    let pages = ranking
        .iter()
        .take(limit)
        .map(|r| PageNow {
            page: &r.page,
            // The ranking's order is the last sweep's; the figure is now's.
            online: site.page_online.count(&r.page, secs).max(r.online),
        })
        .collect();
    let as_of = site.as_of(now);
    let hour = site
        .online_history
        .points(secs)
        .into_iter()
        .map(|(m, n)| (m * 60, n))
        .collect();
    Ok(json(
        StatusCode::OK,
        &OnlineAnswer {
            site: &site.id,
            online: site.online_now(now),
            pages,
            hour,
            as_of: &as_of,
        },
    ))
}
