//! The admin listener's data routes: `luot import` and `luot export` talk
//! to these, so they work while luot serves, whatever the store.
//!
//! An import is turned into one batch and handed to the flusher (the only
//! writer of the store). Its producer id is `import:<id>`, where the id
//! derives from the imported file's content, and its sequence is 1: the
//! store's watermark then refuses the same import a second time. Days'
//! breakdowns travel in the batch as breakdown counters; they are part of
//! the request the id hashes, so the same history with other breakdowns
//! is another import.
use std::hash::Hasher;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use jiff::Timestamp;
use jiff::civil::Date;
use serde::Serialize;
use tokio::sync::oneshot;

use super::history::{Point, series_points};
use super::{ApiError, Body, State, json, lookup};
use crate::config::Retention;
use crate::flush::import::{Breakdowns, Export, ExportDay, ImportJob, ImportRequest, PageTotal};
use crate::flush::{plus, week_end};
use crate::period::{month_of, week_of};
use crate::site::Site;
use crate::sketch::{Sketch, SketchUnion};
use crate::store::{
    Applied, BatchId, BreakdownIncrement, Dimension, Increment, Members, PeriodKey, Scope,
    SiteBatch, SketchKey, Store, ValueBounds, VisitorDelta,
};

/// Largest import body accepted (a few years of daily history and the
/// totals of many pages).
pub const MAX_IMPORT_BYTES: usize = 32 * 1024 * 1024;
/// Most synthetic visitors recorded for one imported day (beyond it the
/// HyperLogLog registers alone carry the count anyway).
const MAX_IMPORTED_VISITORS_PER_DAY: u64 = 5_000_000;
/// Largest count one import may carry (a total, a page's total, a day's
/// hits): 2^53, the largest integer every JSON reader (a browser's
/// `Number`) holds exactly. Far above any real counter, and low enough
/// that no sum of imports and hits wraps a 64-bit counter.
pub const MAX_IMPORTED_COUNT: u64 = 1 << 53;

/// Imports whose batch is being built: one at a time. Building one with
/// visitors hashes up to [`MAX_IMPORTED_VISITORS_PER_DAY`] stand-ins per
/// day (seconds of CPU for a large history), so it runs on tokio's
/// blocking pool, never on a worker that answers requests, and a second
/// import waits for the first rather than taking another core.
static IMPORTS_BUILDING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

#[derive(Serialize)]
struct ImportAnswer {
    /// False when this import had been applied before (nothing changed).
    applied: bool,
    /// Days older than their retention (ignored, as late hits are).
    late: u64,
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// Refuses a count above [`MAX_IMPORTED_COUNT`]; `what` names it.
fn bounded(count: u64, what: impl FnOnce() -> String) -> Result<u64, ApiError> {
    if count > MAX_IMPORTED_COUNT {
        return Err(bad(
            "count_too_large",
            format!("{} is {count}: at most 2^53 ({MAX_IMPORTED_COUNT})", what()),
        ));
    }
    Ok(count)
}

/// Builds the batch of an import.
///
/// # Errors
/// 400 when a page or a number is unusable (a count above
/// [`MAX_IMPORTED_COUNT`] included).
pub fn import_batch(
    site: &Site,
    request: &ImportRequest,
    retention: &Retention,
) -> Result<SiteBatch, ApiError> {
    let mut increments = total_increments(site, request)?;
    let mut visitors = Vec::new();
    let mut breakdowns = Vec::new();
    let mut seen_days = std::collections::BTreeSet::new();
    for day in &request.history {
        if !seen_days.insert(day.date) {
            return Err(bad(
                "duplicate_date",
                format!("{} appears twice in the history", day.date),
            ));
        }
        let hits = bounded(day.hits, || format!("the hits of {}", day.date))?;
        push_day_increments(&mut increments, site, day.date, hits, retention);
        push_breakdowns(&mut breakdowns, site, day, retention)?;
        if let Some(n) = day.visitors.filter(|n| *n > 0) {
            visitors.push(stand_in_visitors(
                site,
                &request.id,
                day.date,
                n,
                retention,
            )?);
        }
    }
    // One run per scope, as the stores expect.
    let merged = Increment::into_order(increments);
    // By scope (the site's only), dimension, day, value: each once, since
    // dates and each day's values are.
    breakdowns.sort_by(|a: &BreakdownIncrement, b| {
        (a.dimension, a.day, &a.value).cmp(&(b.dimension, b.day, &b.value))
    });
    Ok(SiteBatch {
        site: site.id.clone(),
        id: BatchId {
            producer: format!("import:{}", request.id).into(),
            seq: 1,
        },
        increments: merged,
        visitors,
        breakdowns,
        bounds: ValueBounds {
            site: site.counting.max_values,
            page: site.counting.max_page_values,
        },
        titles: import_titles(site, request),
        minute: None,
    })
}

/// The titles an import carries (an export's), cleaned as a beacon's
/// are, each page once; pages that do not normalise are refused with
/// their totals.
fn import_titles(
    site: &Site,
    request: &ImportRequest,
) -> Vec<(std::sync::Arc<str>, std::sync::Arc<str>)> {
    let mut titles: Vec<(std::sync::Arc<str>, std::sync::Arc<str>)> = Vec::new();
    for p in &request.pages {
        let (Some(raw), Ok(page)) = (&p.title, crate::page::normalize(&p.page, site.rules)) else {
            continue;
        };
        if let Some(title) = crate::ingest::clean_title(raw) {
            titles.retain(|(kept, _)| **kept != *page);
            titles.push((page.into(), title.as_ref().into()));
        }
    }
    titles
}

/// Adds one history day's breakdowns (the site's; an export carries no
/// page's days) as counters of that day, expiring with the day's figure.
///
/// # Errors
/// 400 `bad_breakdown` for an unknown dimension, an empty value or one
/// longer than counting keeps (`MAX_VALUE_BYTES`), or a dimension whose
/// values add up to more than the day's hits.
fn push_breakdowns(
    breakdowns: &mut Vec<BreakdownIncrement>,
    site: &Site,
    day: &crate::flush::import::Day,
    retention: &Retention,
) -> Result<(), ApiError> {
    if day.breakdown.is_empty() {
        return Ok(());
    }
    let expires_at = Some(plus(
        site.calendar().day_bounds(day.date).1,
        retention.site_days,
    ));
    for (name, values) in &day.breakdown {
        let dimension = Dimension::from_name(name).ok_or_else(|| {
            bad(
                "bad_breakdown",
                format!("{}: `{name}` is not a dimension", day.date),
            )
        })?;
        let mut sum = 0u64;
        for (value, &hits) in values {
            if value.is_empty() || value.len() > crate::ingest::classify::MAX_VALUE_BYTES {
                return Err(bad(
                    "bad_breakdown",
                    format!(
                        "{} {name}: a value is 1 to {} bytes, not {:?}",
                        day.date,
                        crate::ingest::classify::MAX_VALUE_BYTES,
                        value
                    ),
                ));
            }
            sum = sum.saturating_add(hits);
            if hits > 0 {
                breakdowns.push(BreakdownIncrement {
                    scope: Scope::Site,
                    dimension,
                    day: day.date,
                    value: value.as_str().into(),
                    hits,
                    expires_at,
                });
            }
        }
        if sum > day.hits {
            return Err(bad(
                "bad_breakdown",
                format!(
                    "{} {name}: the values add up to {sum}, more than the day's {} hits",
                    day.date, day.hits
                ),
            ));
        }
    }
    Ok(())
}

/// The all-time increments of an import: the site's starting total and
/// each page's, pages normalised as beacons are.
fn total_increments(site: &Site, request: &ImportRequest) -> Result<Vec<Increment>, ApiError> {
    let mut increments = Vec::new();
    if let Some(total) = request.total {
        let total = bounded(total, || "`total`".into())?;
        increments.push(Increment {
            scope: Scope::Site,
            period: PeriodKey::Total,
            hits: total,
            expires_at: None,
        });
    }
    for p in &request.pages {
        let page = crate::page::normalize(&p.page, site.rules)
            .map_err(|e| bad("bad_page", format!("page {:?}: {e}", p.page)))?;
        let total = bounded(p.total, || format!("the total of page {:?}", p.page))?;
        increments.push(Increment {
            scope: Scope::Page(page.into()),
            period: PeriodKey::Total,
            hits: total,
            expires_at: None,
        });
    }
    Ok(increments)
}

/// Adds one history day's hits to the site's day, week and month, each
/// expiring as the flusher's own increments of that period do.
fn push_day_increments(
    increments: &mut Vec<Increment>,
    site: &Site,
    date: Date,
    hits: u64,
    retention: &Retention,
) {
    let calendar = site.calendar();
    let week = week_of(date, calendar.week_start());
    let day_end = calendar.day_bounds(date).1;
    for (period, expires_at) in [
        (
            PeriodKey::Day(date),
            Some(plus(day_end, retention.site_days)),
        ),
        (
            PeriodKey::Week(week),
            Some(plus(week_end(week, calendar), retention.weeks)),
        ),
        (PeriodKey::Month(month_of(date)), None),
    ] {
        increments.push(Increment {
            scope: Scope::Site,
            period,
            hits,
            expires_at,
        });
    }
}

/// The day's and the all-time visitor sketches of `n` visitors on `date`.
/// History has counts, not visitors: stand-ins that no real visitor can
/// equal (hashed from the import's id, the date and a counter) make the
/// day's sketch count `n`.
///
/// # Errors
/// 400 above [`MAX_IMPORTED_VISITORS_PER_DAY`].
fn stand_in_visitors(
    site: &Site,
    import_id: &str,
    date: Date,
    n: u64,
    retention: &Retention,
) -> Result<VisitorDelta, ApiError> {
    if n > MAX_IMPORTED_VISITORS_PER_DAY {
        return Err(bad(
            "too_many_visitors",
            format!("at most {MAX_IMPORTED_VISITORS_PER_DAY} visitors a day"),
        ));
    }
    let sketch = Sketch::new();
    for i in 0..n {
        let mut h = siphasher::sip::SipHasher13::new_with_keys(0x7669_7369, 0x746f_7273);
        h.write(import_id.as_bytes());
        h.write(date.to_string().as_bytes());
        h.write_u64(i);
        sketch.insert(h.finish());
    }
    let mut union = SketchUnion::new();
    union.add(&sketch);
    let members = match union.exact_members() {
        Some(m) => Members::Exact(m.collect()),
        None => Members::Registers(union.registers().to_vec()),
    };
    let day_end = site.calendar().day_bounds(date).1;
    Ok(VisitorDelta {
        keys: vec![
            (
                SketchKey::Day(date),
                Some(plus(day_end, retention.site_days)),
            ),
            (SketchKey::All, None),
        ],
        members,
    })
}

/// `POST /admin/v1/import`.
///
/// # Errors
/// 400 malformed, 404 unknown site, 413 too large, 503 store unavailable.
pub async fn import(state: &State, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let Some(queue) = &state.imports else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "imports are not accepted yet",
        ));
    };
    let body = http_body_util::Limited::new(req.into_body(), MAX_IMPORT_BYTES)
        .collect()
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("an import is at most {MAX_IMPORT_BYTES} bytes"),
            )
        })?
        .to_bytes();
    let request: ImportRequest = serde_json::from_slice(&body)
        .map_err(|e| bad("malformed", format!("not an import request: {e}")))?;
    if !(16..=64).contains(&request.id.len()) || !request.id.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(bad("bad_id", "`id` must be 16 to 64 hex digits"));
    }
    let site = lookup(state, &request.site)?;
    let building = IMPORTS_BUILDING
        .acquire()
        .await
        .map_err(|_| unavailable("imports are closed"))?;
    // `[retention]` as last (re)loaded, like the flusher's.
    let retention = state.sites.load().retention.clone();
    let batch = tokio::task::spawn_blocking(move || import_batch(&site, &request, &retention))
        .await
        .map_err(|_| unavailable("building the import failed"))??;
    drop(building);
    let (reply, answer) = oneshot::channel();
    queue
        .send(ImportJob { batch, reply })
        .await
        .map_err(|_| unavailable("the flusher has stopped"))?;
    let applied = answer
        .await
        .map_err(|_| unavailable("the flusher has stopped"))?
        .map_err(|e| unavailable(&format!("the store did not take the import: {e}")))?;
    let (applied, late) = match applied {
        Applied::Fresh { late } => (true, late),
        Applied::Duplicate => (false, 0),
    };
    Ok(json(StatusCode::OK, &ImportAnswer { applied, late }))
}

fn unavailable(message: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        message,
    )
}

/// `GET /admin/v1/sites/{site}/export?from=&to=`: the daily series (up to
/// the site-day retention) with each day's breakdowns by every dimension
/// (the site's: an export carries no page's days, so a page's breakdowns
/// would have no hits to add up to), and every page's total. Breakdowns
/// are as of the last flush; a day's hits unflushed meanwhile read back as
/// `(unknown)` once imported.
///
/// # Errors
/// 404 unknown site, 400 bad dates, 503 store unavailable.
pub async fn export(
    state: &State,
    id: &str,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let site = lookup(state, id)?;
    let now = Timestamp::now();
    let today = site.calendar().day_of(now);
    let date = |name: &str| -> Result<Option<Date>, ApiError> {
        super::history::param(query, name)
            .map(|v| {
                v.parse::<Date>()
                    .map_err(|_| bad("bad_date", format!("bad `{name}`")))
            })
            .transpose()
    };
    let to = date("to")?.unwrap_or(today);
    let keep = (state.sites.load().retention.site_days.as_secs() / 86_400).clamp(1, 400) as i64;
    let from = date("from")?.unwrap_or_else(|| {
        to.checked_sub(jiff::Span::new().days(keep - 1))
            .unwrap_or(to)
    });
    if from > to || (to - from).get_days() as i64 >= super::history::MAX_SERIES_DAYS {
        return Err(bad("bad_range", "at most 400 days, from before to"));
    }
    // The breakdowns are read between two readings of the series, and each
    // day's hits are the second's: a store's counters only grow, so a day
    // then holds at least its values' hits even while hits keep arriving
    // (an import refuses a day whose values exceed its hits).
    let first: Vec<Point> = series_points(state, &site, None, from, to, false).await?;
    let mut breakdowns = Vec::with_capacity(first.len());
    for point in &first {
        breakdowns.push(match point.date.parse::<Date>() {
            Ok(day) if point.hits > 0 => day_breakdowns(state, &site, day).await?,
            _ => Breakdowns::new(),
        });
    }
    let points: Vec<Point> = series_points(state, &site, None, from, to, false).await?;
    for (point, breakdown) in points.iter().zip(&mut breakdowns) {
        // Unless the day expired between the readings: then it has none.
        breakdown.retain(|_, values| values.values().sum::<u64>() <= point.hits);
    }
    let pages = state
        .store
        .top(&site.id, PeriodKey::Total, usize::MAX)
        .await
        .map_err(|e| unavailable(&e.to_string()))?;
    let listed: Vec<std::sync::Arc<str>> = pages.iter().map(|(p, _)| p.as_str().into()).collect();
    let titles = if listed.is_empty() {
        Vec::new()
    } else {
        state
            .store
            .titles(&site.id, &listed)
            .await
            .map_err(|e| unavailable(&e.to_string()))?
    };
    let figures = state.reader.site_figures(&site, now);
    let export = Export {
        site: site.id.to_string(),
        exported_at: site.calendar().rfc3339(now),
        total: figures.total,
        initial_total: site.config.initial_total,
        from,
        to,
        days: points
            .into_iter()
            .zip(breakdowns)
            .filter_map(|(p, breakdown)| {
                Some(ExportDay {
                    date: p.date.parse().ok()?,
                    hits: p.hits,
                    visitors: p.visitors,
                    breakdown,
                })
            })
            .collect(),
        pages: pages
            .into_iter()
            .zip(titles.into_iter().chain(std::iter::repeat(None)))
            .map(|((page, total), title)| PageTotal { page, total, title })
            .collect(),
    };
    let body = serde_json::to_vec(&export).unwrap_or_default();
    let mut resp = Response::new(Body::new(Bytes::from(body)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// A day's stored breakdowns of the site by every dimension (values with
/// hits only; `(other)` among them, `(unknown)` never, since the day's
/// hits imply it). As of the last flush.
///
/// # Errors
/// 503 when the store cannot answer.
async fn day_breakdowns(state: &State, site: &Site, day: Date) -> Result<Breakdowns, ApiError> {
    let mut out = Breakdowns::new();
    for dimension in Dimension::ALL {
        let reading = state
            .store
            .breakdown(&site.id, &Scope::Site, dimension, &[day])
            .await
            .map_err(|e| unavailable(&e.to_string()))?;
        let values: std::collections::BTreeMap<String, u64> =
            reading.values.into_iter().filter(|(_, n)| *n > 0).collect();
        if !values.is_empty() {
            out.insert(dimension.as_str().to_string(), values);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::flush::import::Day;

    fn site(extra: &str) -> Site {
        let config = Config::from_toml_str(&format!(
            "[counting]\nmax_values = 7\nmax_page_values = 3\n{extra}"
        ))
        .unwrap();
        Site::new(&config.sites[0], &config, 1)
    }

    fn day(d: i8, hits: u64, breakdown: &[(&str, &[(&str, u64)])]) -> Day {
        Day {
            date: Date::constant(2026, 11, d),
            hits,
            visitors: None,
            breakdown: breakdown
                .iter()
                .map(|(dim, values)| {
                    let values = values.iter().map(|(v, n)| (v.to_string(), *n));
                    (dim.to_string(), values.collect())
                })
                .collect(),
        }
    }

    fn request(history: Vec<Day>) -> ImportRequest {
        ImportRequest {
            site: "demo".into(),
            id: "0123456789abcdef".into(),
            history,
            ..ImportRequest::default()
        }
    }

    #[test]
    fn an_imported_days_breakdowns_become_sorted_counters_of_that_day() {
        let site = site("");
        let retention = Retention::default();
        let batch = import_batch(
            &site,
            &request(vec![
                day(2, 10, &[("source", &[("Zalo", 4), ("Google", 5)])]),
                day(
                    1,
                    8,
                    &[
                        ("source", &[("Google", 6), ("(other)", 1), ("nil", 0)]),
                        ("channel", &[("search", 6)]),
                    ],
                ),
            ]),
            &retention,
        )
        .unwrap();
        let got: Vec<(Dimension, i8, &str, u64)> = batch
            .breakdowns
            .iter()
            .map(|b| (b.dimension, b.day.day(), &*b.value, b.hits))
            .collect();
        assert_eq!(
            got,
            [
                (Dimension::Channel, 1, "search", 6),
                (Dimension::Source, 1, "(other)", 1),
                (Dimension::Source, 1, "Google", 6),
                (Dimension::Source, 2, "Google", 5),
                (Dimension::Source, 2, "Zalo", 4),
            ],
            "by dimension, day and value; no zero"
        );
        assert!(batch.breakdowns.iter().all(|b| b.scope == Scope::Site));
        // They expire with the day's own counter.
        let day_expiry = |d: i8| {
            batch
                .increments
                .iter()
                .find(|i| i.period == PeriodKey::Day(Date::constant(2026, 11, d)))
                .and_then(|i| i.expires_at)
        };
        for b in &batch.breakdowns {
            assert_eq!(b.expires_at, day_expiry(b.day.day()));
            assert!(b.expires_at.is_some());
        }
        assert_eq!(batch.bounds, ValueBounds { site: 7, page: 3 });
    }

    #[test]
    fn a_sites_own_value_bounds_travel_with_its_import() {
        let site = site(
            "[[sites]]\nid = \"demo\"\ntimezone = \"UTC\"\norigins = [\"*\"]\n\
             initial_total = 0\nmax_values = 20\nmax_page_values = 4\n",
        );
        let batch = import_batch(&site, &request(vec![day(1, 1, &[])]), &Retention::default());
        assert_eq!(batch.unwrap().bounds, ValueBounds { site: 20, page: 4 });
    }

    #[test]
    fn bad_breakdowns_are_refused_naming_the_day() {
        let long = "x".repeat(crate::ingest::classify::MAX_VALUE_BYTES + 1);
        for bad_day in [
            day(3, 5, &[("referrer", &[("a", 1)])]),
            day(3, 5, &[("channel", &[("", 1)])]),
            day(3, 5, &[("channel", &[(&long, 1)])]),
            day(3, 5, &[("channel", &[("search", 4), ("social", 2)])]),
        ] {
            let e = import_batch(&site(""), &request(vec![bad_day]), &Retention::default())
                .unwrap_err();
            assert_eq!(e.code, "bad_breakdown");
            assert!(e.message.starts_with("2026-11-03"), "{}", e.message);
        }
    }

    #[test]
    fn an_import_without_breakdowns_has_none() {
        let batch = import_batch(
            &site(""),
            &request(vec![day(1, 5, &[])]),
            &Retention::default(),
        )
        .unwrap();
        assert!(batch.breakdowns.is_empty());
    }
}
