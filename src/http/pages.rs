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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header;
use hyper::{Request, Response, StatusCode};
use jiff::Timestamp;
use parking_lot::Mutex;

use super::answer::json_bytes_shared;
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

/// How long an answer is kept for the same question.
const ANSWER_TTL: Duration = Duration::from_secs(1);
/// Most answers kept; beyond it the oldest half is dropped.
const ANSWERS_KEPT: usize = 1_024;

/// Recent answers by site and query. A front page asks the same paths for
/// every reader who opens it, and answering 30 pages costs ~4× a single
/// page's figures (normalising each path, three lookups and its JSON), so
/// the same question within [`ANSWER_TTL`] gets the same bytes: listing
/// counts are at most a second old. An answer is only ever replaced by
/// one computed later, so a reader never sees a count go back.
#[derive(Default)]
pub struct ListingAnswers {
    kept: Mutex<HashMap<String, (Instant, Bytes), foldhash::fast::RandomState>>,
}

impl ListingAnswers {
    fn get(&self, key: &str, now: Instant) -> Option<Bytes> {
        let kept = self.kept.lock();
        let (at, body) = kept.get(key)?;
        (now.saturating_duration_since(*at) < ANSWER_TTL).then(|| body.clone())
    }

    fn put(&self, key: String, at: Instant, body: Bytes) {
        let mut kept = self.kept.lock();
        if kept.len() >= ANSWERS_KEPT {
            let mut ages: Vec<Instant> = kept.values().map(|(t, _)| *t).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            kept.retain(|_, (t, _)| *t > cut);
        }
        match kept.get(&key) {
            Some((held, _)) if *held >= at => {}
            _ => {
                kept.insert(key, (at, body));
            }
        }
    }
}

pub(super) async fn pages(
    state: &State,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let site = lookup(state, id)?;
    let query = req.uri().query();
    let origin = header_str(req.headers(), header::ORIGIN);
    let key = format!("{id}\0{}", query.unwrap_or_default());
    let asked = Instant::now();
    if let Some(body) = state.listing_answers.get(&key, asked) {
        let source_origin = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .find(|(k, _)| k == "__amp_source_origin")
            .map(|(_, v)| v.into_owned());
        let mut resp = json_bytes_shared(StatusCode::OK, body);
        allow_amp(&mut resp, &site, origin, source_origin.as_deref());
        return Ok(resp);
    }
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
    let body = Bytes::from(out);
    state.listing_answers.put(key, asked, body.clone());
    let mut resp = json_bytes_shared(StatusCode::OK, body);
    allow_amp(&mut resp, &site, origin, source_origin.as_deref());
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_kept_a_second_and_only_replaced_by_a_later_one() {
        let answers = ListingAnswers::default();
        let t0 = Instant::now();
        answers.put("demo\0path=/a".into(), t0, Bytes::from_static(b"one"));
        let got = |at| answers.get("demo\0path=/a", at);
        assert_eq!(
            got(t0 + Duration::from_millis(900)).as_deref(),
            Some(&b"one"[..])
        );
        assert_eq!(got(t0 + ANSWER_TTL), None, "a second old: asked again");
        // An answer computed before the kept one never replaces it.
        answers.put(
            "demo\0path=/a".into(),
            t0 - Duration::from_millis(5),
            Bytes::from_static(b"old"),
        );
        assert_eq!(got(t0).as_deref(), Some(&b"one"[..]));
        answers.put(
            "demo\0path=/a".into(),
            t0 + Duration::from_millis(5),
            Bytes::from_static(b"two"),
        );
        assert_eq!(
            got(t0 + Duration::from_millis(6)).as_deref(),
            Some(&b"two"[..])
        );
        assert_eq!(
            answers.get("other\0path=/a", t0),
            None,
            "keyed by site and query"
        );
    }

    #[test]
    fn the_kept_answers_stay_bounded() {
        let answers = ListingAnswers::default();
        let t0 = Instant::now();
        for i in 0..(ANSWERS_KEPT * 3) {
            let at = t0 + Duration::from_micros(i as u64);
            answers.put(format!("demo\0path=/p{i}"), at, Bytes::new());
        }
        assert!(answers.kept.lock().len() <= ANSWERS_KEPT);
    }
}
