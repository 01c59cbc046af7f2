//! The owner's read routes: daily (or monthly) series and most-read pages,
//! and the access rule they share with the dashboard — public sites answer
//! anyone, others need the site's read token.
//!
//! Reads only. Series add this instance's unflushed hits to the store's
//! days, so an owner sees today's hits at once; the top list is as of the
//! last flush (a second at most).

use std::fmt::Write as _;

use hyper::header::{self, HeaderMap};
use hyper::{Response, StatusCode};
use jiff::Timestamp;
use jiff::civil::Date;
use serde::Serialize;

use super::{ApiError, Body, State, constant_time_eq, json, lookup};
use crate::period::{date_of_number, day_number, month_of};
use crate::site::Site;
use crate::store::{PeriodKey, Scope, SketchKey, Store, Window};

/// Longest daily series one request may ask for (the site days' default
/// retention).
pub const MAX_SERIES_DAYS: i64 = 400;
/// Longest monthly series.
pub const MAX_SERIES_MONTHS: i64 = 120;
/// Most pages one top list may hold.
pub const MAX_TOP: usize = crate::store::TOP_KEPT;
/// Store readings a series takes at most before it gives up on one that
/// covers this instance's pending days (each flush may need one more).
const SERIES_READ_ATTEMPTS: u32 = 5;

/// Refuses a non-public site's owner routes without its read token (as
/// `Authorization: Bearer …` or `?token=`), compared in constant time.
///
/// # Errors
/// 401 `unauthorized` without a valid token.
pub fn authorize(site: &Site, headers: &HeaderMap, query: Option<&str>) -> Result<(), ApiError> {
    if site.config.public {
        return Ok(());
    }
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let from_query = param(query, "token");
    let given = from_header.or(from_query);
    let ok = match (&site.config.read_token, given) {
        (Some(token), Some(given)) => constant_time_eq(token.as_bytes(), given.as_bytes()),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this site's history is private: send its read token as a bearer token",
        ))
    }
}

/// The first value of query parameter `name`.
pub fn param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn date_param(query: Option<&str>, name: &str) -> Result<Option<Date>, ApiError> {
    param(query, name)
        .map(|v| {
            v.parse::<Date>().map_err(|_| {
                bad(
                    "bad_date",
                    format!("`{name}` must be a date like 2026-11-27"),
                )
            })
        })
        .transpose()
}

/// One point of a series.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Point {
    /// `2026-11-27` for a day, `2026-11` for a month.
    pub date: String,
    pub hits: u64,
    /// Distinct visitors (site series only; `null` for a page or where the
    /// store keeps no such figure).
    pub visitors: Option<u64>,
}

#[derive(Serialize)]
struct SeriesAnswer<'a> {
    site: &'a str,
    page: Option<&'a str>,
    by: &'a str,
    from: String,
    to: String,
    points: Vec<Point>,
}

/// The series of a site or a page between two local dates.
///
/// # Errors
/// An [`ApiError`] for a bad range or an unreachable store.
pub async fn series_points(
    state: &State,
    site: &Site,
    page: Option<&str>,
    from: Date,
    to: Date,
    monthly: bool,
) -> Result<Vec<Point>, ApiError> {
    let periods = series_periods(from, to, monthly)?;
    let covered = read_covered(state, site, page, &periods, monthly).await?;
    Ok(join_pending(&periods, &covered))
}

/// The days (or months) from `from` to `to`, at most [`MAX_SERIES_DAYS`]
/// (or [`MAX_SERIES_MONTHS`]).
fn series_periods(from: Date, to: Date, monthly: bool) -> Result<Vec<PeriodKey>, ApiError> {
    let mut out = Vec::new();
    if monthly {
        let mut m = month_of(from);
        while m <= to && out.len() < MAX_SERIES_MONTHS as usize {
            out.push(PeriodKey::Month(m));
            m = m
                .checked_add(jiff::Span::new().months(1))
                .map_err(|_| bad("bad_range", "the range leaves the calendar"))?;
        }
    } else {
        let mut d = from;
        while d <= to && out.len() < MAX_SERIES_DAYS as usize {
            out.push(PeriodKey::Day(d));
            d = d
                .tomorrow()
                .map_err(|_| bad("bad_range", "the range leaves the calendar"))?;
        }
    }
    Ok(out)
}

/// A store reading of a series and what this instance adds to it.
struct Covered {
    reading: crate::store::Reading,
    /// Each period's visitors, when the store keeps them.
    visitors: Vec<Option<u64>>,
    /// This instance's hits by day that the reading does not include.
    pending: Vec<(crate::period::DayNumber, u64)>,
}

/// A 503 for a store that could not answer.
fn store_unavailable(e: crate::store::StoreError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        format!("the store cannot answer: {}", e.kind()),
    )
}

/// Reads `periods` from the store, and this instance's pending days that
/// the reading does not include, read again (at most
/// [`SERIES_READ_ATTEMPTS`] times) until the ledger covers the reading.
///
/// As for figures (`Reader::page_figures`): the store's reading and this
/// instance's pending days must cover the same batches. A flush that lets
/// a batch go between the two (the reading taken before the batch was
/// applied, the ledger looked at after the batch left memory) would drop
/// the batch's hits from the series: read the store again.
async fn read_covered(
    state: &State,
    site: &Site,
    page: Option<&str>,
    periods: &[PeriodKey],
    monthly: bool,
) -> Result<Covered, ApiError> {
    let mut attempts = 0;
    loop {
        let (reading, visitors) = read_series(state, site, page, periods, monthly).await?;
        let ledger = site.ledger.read();
        if ledger.covers(reading.watermark) {
            let pending = ledger.pending_days(page, reading.watermark, &site.tally);
            return Ok(Covered {
                reading,
                visitors,
                pending,
            });
        }
        drop(ledger);
        attempts += 1;
        if attempts == SERIES_READ_ATTEMPTS {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store kept moving past every reading: try again",
            ));
        }
    }
}

/// One store reading of `periods`, with each day's visitors for a site's
/// daily series (`None` otherwise).
async fn read_series(
    state: &State,
    site: &Site,
    page: Option<&str>,
    periods: &[PeriodKey],
    monthly: bool,
) -> Result<(crate::store::Reading, Vec<Option<u64>>), ApiError> {
    let producer = state.reader.producer();
    match page {
        None if !monthly => {
            let groups: Vec<Vec<SketchKey>> = periods
                .iter()
                .map(|p| match p {
                    PeriodKey::Day(d) => vec![SketchKey::Day(*d)],
                    _ => Vec::new(),
                })
                .collect();
            state
                .store
                .read_site(&site.id, periods, producer, &groups)
                .await
                .map_err(store_unavailable)
        }
        _ => {
            let scope = page.map_or(Scope::Site, |p| Scope::Page(p.into()));
            let reading = state
                .store
                .read(&site.id, &scope, periods, producer)
                .await
                .map_err(store_unavailable)?;
            Ok((reading, vec![None; periods.len()]))
        }
    }
}

/// The series' points: each period's stored hits plus this instance's
/// pending hits of the days it holds.
fn join_pending(periods: &[PeriodKey], covered: &Covered) -> Vec<Point> {
    let Covered {
        reading,
        visitors,
        pending,
    } = covered;
    let mut points = Vec::with_capacity(periods.len());
    for (i, period) in periods.iter().enumerate() {
        let stored = reading.values.get(i).copied().unwrap_or(0);
        let (date, extra) = match period {
            PeriodKey::Day(d) => {
                let n = day_number(*d);
                let extra: u64 = pending.iter().filter(|p| p.0 == n).map(|p| p.1).sum();
                (d.to_string(), extra)
            }
            PeriodKey::Month(m) => {
                let extra: u64 = pending
                    .iter()
                    .filter(|p| month_of(date_of_number(p.0)) == *m)
                    .map(|p| p.1)
                    .sum();
                (format!("{:04}-{:02}", m.year(), m.month()), extra)
            }
            _ => continue,
        };
        points.push(Point {
            date,
            hits: stored + extra,
            visitors: visitors.get(i).copied().flatten(),
        });
    }
    points
}

/// `GET /api/v1/sites/{site}/series?from=&to=[&page=][&by=month][&format=csv]`.
///
/// # Errors
/// 404 unknown site, 401 private without token, 400 bad parameters.
pub async fn series(
    state: &State,
    id: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let site = lookup(state, id)?;
    authorize(&site, headers, query)?;
    let monthly = match param(query, "by").as_deref() {
        None | Some("day") => false,
        Some("month") => true,
        Some(_) => return Err(bad("bad_by", "`by` must be day or month")),
    };
    let today = site.calendar().day_of(Timestamp::now());
    let to = date_param(query, "to")?.unwrap_or(today);
    let default_from = if monthly {
        to.checked_sub(jiff::Span::new().months(11))
            .map(month_of)
            .unwrap_or(to)
    } else {
        to.checked_sub(jiff::Span::new().days(29)).unwrap_or(to)
    };
    let from = date_param(query, "from")?.unwrap_or(default_from);
    if from > to {
        return Err(bad("bad_range", "`from` is after `to`"));
    }
    let span_days = (to - from).get_days() as i64 + 1;
    let too_long = if monthly {
        span_days > MAX_SERIES_MONTHS * 31
    } else {
        span_days > MAX_SERIES_DAYS
    };
    if too_long {
        return Err(bad(
            "bad_range",
            format!("at most {MAX_SERIES_DAYS} days or {MAX_SERIES_MONTHS} months per request"),
        ));
    }
    let page = match param(query, "page") {
        None => None,
        Some(raw) => Some(
            crate::page::normalize(&raw, site.rules)
                .map_err(|e| ApiError::from(crate::ingest::IngestError::BadPage(e)))?,
        ),
    };
    state
        .reader
        .count_store_read(crate::metrics::ReadRoute::Series);
    let points = series_points(state, &site, page.as_deref(), from, to, monthly).await?;
    if param(query, "format").as_deref() == Some("csv") {
        let mut csv = String::from("date,hits,visitors\n");
        for p in &points {
            let visitors = p.visitors.map(|v| v.to_string()).unwrap_or_default();
            let _ = writeln!(csv, "{},{},{}", p.date, p.hits, visitors);
        }
        return Ok(crate::http::answer::csv(csv));
    }
    Ok(json(
        StatusCode::OK,
        &SeriesAnswer {
            site: &site.id,
            page: page.as_deref(),
            by: if monthly { "month" } else { "day" },
            from: from.to_string(),
            to: to.to_string(),
            points,
        },
    ))
}

/// One entry of a most-read list. The title is the page's last one as
/// sent (`null` when none was seen): shown as text, never as markup.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct TopPage {
    pub page: String,
    pub title: Option<String>,
    pub hits: u64,
}

#[derive(Serialize)]
struct TopAnswer<'a> {
    site: &'a str,
    period: &'a str,
    pages: Vec<TopPage>,
}

/// What a top list ranks: a stored period, or a rolling window ending now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopPeriod {
    Key(PeriodKey),
    Window(Window),
}

/// The period a top list's `period=` names: `1h`, `24h` (rolling), or
/// one of [`period_named`]'s.
///
/// # Errors
/// 400 for an unknown name.
pub fn top_period_named(name: &str, today: Date, site: &Site) -> Result<TopPeriod, ApiError> {
    if let Some(window) = Window::from_name(name) {
        return Ok(TopPeriod::Window(window));
    }
    period_named(name, today, site)
        .map(TopPeriod::Key)
        .map_err(|_| {
            bad(
                "bad_period",
                "`period` must be 1h, 24h, today, yesterday, week, month or total",
            )
        })
}

/// The `limit` most-read pages of `site` in `period` with their titles:
/// two store reads (the kept ranking, then the listed pages' titles; a
/// title this instance saw but has not flushed yet stands in for none),
/// or the same list answered less than a second ago
/// ([`Site::kept_top_list`]): a most-read box on every page view would
/// otherwise read the store at every view.
///
/// # Errors
/// 503 when the store cannot answer.
pub async fn top_pages(
    state: &State,
    site: &Site,
    period: TopPeriod,
    limit: usize,
) -> Result<Vec<TopPage>, ApiError> {
    let key = format!("{period:?}/{limit}");
    let now_ms = Timestamp::now().as_millisecond();
    let list = match site.kept_top_list(&key, now_ms) {
        Some(list) => list,
        None => {
            let list: crate::site::TopEntries = read_top_pages(state, site, period, limit)
                .await?
                .into_iter()
                .map(|p| (p.page, p.title, p.hits))
                .collect();
            site.keep_top_list(&key, now_ms, std::sync::Arc::clone(&list));
            list
        }
    };
    Ok(list
        .iter()
        .map(|(page, title, hits)| TopPage {
            page: page.clone(),
            title: title.clone(),
            hits: *hits,
        })
        .collect())
}

/// [`top_pages`] from the store.
async fn read_top_pages(
    state: &State,
    site: &Site,
    period: TopPeriod,
    limit: usize,
) -> Result<Vec<TopPage>, ApiError> {
    state
        .reader
        .count_store_read(crate::metrics::ReadRoute::Top);
    let unavailable = |e: crate::store::StoreError| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("the store cannot answer: {}", e.kind()),
        )
    };
    let ranked = match period {
        TopPeriod::Key(key) => state.store.top(&site.id, key, limit).await,
        TopPeriod::Window(window) => {
            let minute = Timestamp::now().as_second().div_euclid(60);
            state
                .store
                .top_window(&site.id, window, minute, limit)
                .await
        }
    }
    .map_err(unavailable)?;
    let pages: Vec<std::sync::Arc<str>> = ranked
        .iter()
        .map(|(page, _)| std::sync::Arc::from(page.as_str()))
        .collect();
    let titles = if pages.is_empty() {
        Vec::new()
    } else {
        state
            .store
            .titles(&site.id, &pages)
            .await
            .map_err(unavailable)?
    };
    Ok(ranked
        .into_iter()
        .enumerate()
        .map(|(i, (page, hits))| {
            let title = titles
                .get(i)
                .cloned()
                .flatten()
                .or_else(|| site.titles.get(&page).map(|t| t.to_string()));
            TopPage { page, title, hits }
        })
        .collect())
}

/// The period key a `period=` name means at local day `today`.
///
/// # Errors
/// 400 for an unknown name.
pub fn period_named(name: &str, today: Date, site: &Site) -> Result<PeriodKey, ApiError> {
    Ok(match name {
        "today" => PeriodKey::Day(today),
        "yesterday" => PeriodKey::Day(today.yesterday().unwrap_or(today)),
        "week" => PeriodKey::Week(crate::period::week_of(today, site.calendar().week_start())),
        "month" => PeriodKey::Month(month_of(today)),
        "total" => PeriodKey::Total,
        _ => {
            return Err(bad(
                "bad_period",
                "`period` must be today, yesterday, week, month or total",
            ));
        }
    })
}

/// `GET /api/v1/sites/{site}/top?period=1h|24h|today|…&limit=10`.
///
/// # Errors
/// 404 unknown site, 401 private without token, 400 bad parameters.
pub async fn top(
    state: &State,
    id: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let site = lookup(state, id)?;
    authorize(&site, headers, query)?;
    let name = param(query, "period").unwrap_or_else(|| "today".into());
    let today = site.calendar().day_of(Timestamp::now());
    let period = top_period_named(&name, today, &site)?;
    let limit = match param(query, "limit") {
        None => 10,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_TOP).contains(n))
            .ok_or_else(|| bad("bad_limit", format!("`limit` must be 1 to {MAX_TOP}")))?,
    };
    let pages = top_pages(state, &site, period, limit).await?;
    let mut resp = json(
        StatusCode::OK,
        &TopAnswer {
            site: &site.id,
            period: &name,
            pages,
        },
    );
    // Readable by the site's own pages: luot.js fills most-read lists.
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    crate::http::cors::allow_origin(&mut resp, &site, origin);
    Ok(resp)
}
