//! `GET /api/v1/sites/{site}/pages?path=…&path=…`: the figures and titles
//! of many pages of a site at once, for a listing page's view counts (one
//! request fills every `data-luot-views` element of a front page).
//!
//! Public like the counters route, with its CORS (AMP's protocol
//! included, `amp=1` wraps the pages as `{"items":[…]}`): a private
//! site's too, since luot.js on its front page cannot send a token and
//! the figures are shown there anyway (its history needs the token).
//! Reads through
//! `read` ([`Reader::listing`](crate::read::Reader::listing)) and never
//! counts; the read limit is checked by the router before this handler
//! runs.

use hyper::body::Incoming;
use hyper::header;
use hyper::{Request, Response, StatusCode};
use jiff::Timestamp;

use super::answer::json_bytes;
use super::cors::allow_amp;
use super::faces::figures;
use super::sender::header_str;
use super::{ApiError, Body, State, lookup};
use crate::count::ledger::Counts;
use crate::ingest::IngestError;
use crate::read::MAX_LISTED;

/// Which figure `period=` names; each entry then carries it as `hits`.
#[derive(Clone, Copy)]
enum Period {
    Total,
    Today,
    Yesterday,
    Week,
    Month,
}

impl Period {
    fn parse(s: &str) -> Option<Period> {
        Some(match s {
            "total" => Period::Total,
            "today" => Period::Today,
            "yesterday" => Period::Yesterday,
            "week" => Period::Week,
            "month" => Period::Month,
            _ => return None,
        })
    }

    fn of(self, c: &Counts) -> u64 {
        match self {
            Period::Total => c.total,
            Period::Today => c.today,
            Period::Yesterday => c.yesterday,
            Period::Week => c.week,
            Period::Month => c.month,
        }
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

pub(super) async fn pages(
    state: &State,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let site = lookup(state, id)?;
    let query = req.uri().query();
    let origin = header_str(req.headers(), header::ORIGIN);
    // Every path normalised into one buffer (one allocation for them all),
    // each remembered by where it ends.
    let (mut names, mut ends) = (String::new(), Vec::new());
    let mut one = String::with_capacity(site.rules.max_len + 4);
    let (mut period, mut source_origin, mut amp) = (None, None, false);
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*k {
            "path" => {
                if ends.len() == MAX_LISTED {
                    return Err(bad(
                        "too_many_paths",
                        format!("at most {MAX_LISTED} paths a request"),
                    ));
                }
                crate::page::normalize_into(&v, site.rules, &mut one)
                    .map_err(|e| ApiError::from(IngestError::BadPage(e)))?;
                names.push_str(&one);
                ends.push(names.len());
            }
            "period" if period.is_none() => {
                period = Some(Period::parse(&v).ok_or_else(|| {
                    bad(
                        "bad_period",
                        "period must be total, today, yesterday, week or month",
                    )
                })?);
            }
            "__amp_source_origin" if source_origin.is_none() => {
                source_origin = Some(v.into_owned());
            }
            "amp" => amp |= v == "1",
            _ => {}
        }
    }
    if ends.is_empty() {
        return Err(bad("missing_path", "give at least one path=…"));
    }
    let list: Vec<&str> = ends
        .iter()
        .scan(0, |start, &end| {
            let page = &names[*start..end];
            *start = end;
            Some(page)
        })
        .collect();
    let now = Timestamp::now();
    let listed = state.reader.listing(&site, &list, now).await;
    let as_of = site.as_of(now);
    // A page's figures are about 130 bytes with a headline-long path.
    let mut out = Vec::with_capacity(96 + list.len() * 192);
    if amp {
        out.extend_from_slice(b"{\"items\":[");
    } else {
        out.extend_from_slice(b"{\"site\":");
        figures::string(&mut out, &site.id);
        out.extend_from_slice(b",\"as_of\":");
        figures::string(&mut out, &as_of);
        out.extend_from_slice(b",\"pages\":[");
    }
    for (i, (page, l)) in list.iter().zip(&listed).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let hits = period.map(|p| p.of(&l.counts));
        figures::write_listed(&mut out, page, l, hits);
    }
    out.extend_from_slice(b"]}");
    let mut resp = json_bytes(StatusCode::OK, out);
    allow_amp(&mut resp, &site, origin, source_origin.as_deref());
    Ok(resp)
}
