//! `GET /api/v1/sites/{site}/breakdown`: where a site's (or a page's) hits
//! came from and on what, over a period of local days, as JSON or CSV.
//!
//! Thin: this file checks the request (site, token, parameters) and writes
//! the answer; the reading and its shaping (order, `(unknown)`, `(other)`,
//! limit) are `read::breakdown`'s. Everything that can be refused is
//! refused before the store is asked.

use std::fmt::Write as _;

use hyper::header::HeaderMap;
use hyper::{Response, StatusCode};
use jiff::Timestamp;
use jiff::civil::Date;
use serde::Serialize;

use super::history::{MAX_SERIES_DAYS, authorize, param};
use super::{ApiError, Body, State, json, lookup};
use crate::flush::import::csv_cell;
use crate::period::{month_of, week_of};
use crate::read::breakdown::{DEFAULT_LIMIT, MAX_LIMIT, days_between};
use crate::store::Dimension;

/// The longest range one request may ask for, in days (also bounded by
/// the retention of the days asked).
pub const MAX_BREAKDOWN_DAYS: i64 = MAX_SERIES_DAYS;

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

#[derive(Serialize)]
struct Value<'a> {
    value: &'a str,
    hits: u64,
}

#[derive(Serialize)]
struct BreakdownAnswer<'a> {
    site: &'a str,
    page: Option<&'a str>,
    by: &'static str,
    from: String,
    to: String,
    hits: u64,
    values: Vec<Value<'a>>,
}

/// The dimension `by=` names.
fn dimension(query: Option<&str>) -> Result<Dimension, ApiError> {
    let names = || {
        Dimension::ALL
            .iter()
            .map(|d| d.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match param(query, "by") {
        None => Err(bad(
            "bad_by",
            format!("`by` is required: one of {}", names()),
        )),
        Some(name) => Dimension::from_name(&name)
            .ok_or_else(|| bad("bad_by", format!("`by` must be one of {}", names()))),
    }
}

/// The first and last local day asked: `period=` (default `today`), or
/// `from=`/`to=` (`to` defaults to today, `from` to `to`). A named period
/// starts no earlier than `oldest`, the oldest day kept; an explicit range
/// must lie within `oldest..=today` and span at most
/// [`MAX_BREAKDOWN_DAYS`].
fn range(
    query: Option<&str>,
    today: Date,
    oldest: Date,
    week_start: crate::period::WeekStart,
    keep: i64,
) -> Result<(Date, Date), ApiError> {
    let date = |name: &str| -> Result<Option<Date>, ApiError> {
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
    };
    let (from, to) = (date("from")?, date("to")?);
    let period = param(query, "period");
    if from.is_none() && to.is_none() {
        let (from, to) = match period.as_deref().unwrap_or("today") {
            "today" => (today, today),
            "yesterday" => {
                let d = today.yesterday().unwrap_or(today);
                (d, d)
            }
            "week" => (week_of(today, week_start), today),
            "month" => (month_of(today), today),
            _ => {
                return Err(bad(
                    "bad_period",
                    "`period` must be today, yesterday, week or month",
                ));
            }
        };
        return Ok((from.max(oldest), to));
    }
    if period.is_some() {
        return Err(bad(
            "bad_period",
            "give either `period` or `from` and `to`, not both",
        ));
    }
    let to = to.unwrap_or(today);
    let from = from.unwrap_or(to);
    if from > to {
        return Err(bad("bad_range", "`from` is after `to`"));
    }
    if (to - from).get_days() as i64 >= MAX_BREAKDOWN_DAYS {
        return Err(bad(
            "bad_range",
            format!("at most {MAX_BREAKDOWN_DAYS} days per request"),
        ));
    }
    if from < oldest || to > today {
        return Err(bad(
            "bad_range",
            format!(
                "days are kept from {oldest} to today ({today}), {keep} days: \
                 ask for days within them"
            ),
        ));
    }
    Ok((from, to))
}

/// `GET /api/v1/sites/{site}/breakdown?by=…&period=…|from=&to=[&page=]
/// [&limit=][&format=csv]`.
///
/// # Errors
/// 404 unknown site, 401 private without token, 400 bad parameters (each
/// with its own code: `bad_by`, `bad_period`, `bad_date`, `bad_range`,
/// `bad_limit`, `bad_format`, `bad_page`, `site_only_dimension`), 503 when
/// the store cannot answer.
pub async fn serve(
    state: &State,
    id: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let site = lookup(state, id)?;
    authorize(&site, headers, query)?;
    let by = dimension(query)?;
    let csv = match param(query, "format").as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(bad("bad_format", "`format` must be json or csv")),
    };
    let limit = match param(query, "limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| bad("bad_limit", format!("`limit` must be 1 to {MAX_LIMIT}")))?,
    };
    let page = match param(query, "page") {
        None => None,
        Some(raw) => {
            if !by.per_page() {
                return Err(bad(
                    "site_only_dimension",
                    format!(
                        "`by={}` is kept for the whole site only: with `page=`, \
                         ask for channel or source",
                        by.as_str()
                    ),
                ));
            }
            Some(
                crate::page::normalize(&raw, site.rules)
                    .map_err(|e| ApiError::from(crate::ingest::IngestError::BadPage(e)))?,
            )
        }
    };
    let retention = state.sites.load().retention.clone();
    let kept = if page.is_some() {
        retention.page_days
    } else {
        retention.site_days
    };
    let keep = (kept.as_secs() / 86_400).max(1) as i64;
    let today = site.calendar().day_of(Timestamp::now());
    let oldest = today
        .checked_sub(jiff::Span::new().days(keep - 1))
        .unwrap_or(Date::MIN);
    let (from, to) = range(query, today, oldest, site.calendar().week_start(), keep)?;
    let days = days_between(from, to, MAX_BREAKDOWN_DAYS as usize);
    let breakdown = state
        .reader
        .breakdown(&site, page.as_deref(), by, &days, limit)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("the store cannot answer: {}", e.kind()),
            )
        })?;
    if csv {
        let mut text = String::from("value,hits\n");
        for (value, hits) in &breakdown.values {
            let _ = writeln!(text, "{},{hits}", csv_cell(value));
        }
        return Ok(crate::http::answer::csv(text));
    }
    Ok(json(
        StatusCode::OK,
        &BreakdownAnswer {
            site: &site.id,
            page: page.as_deref(),
            by: by.as_str(),
            from: from.to_string(),
            to: to.to_string(),
            hits: breakdown.hits,
            values: breakdown
                .values
                .iter()
                .map(|(value, hits)| Value { value, hits: *hits })
                .collect(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::WeekStart;

    const TODAY: Date = Date::constant(2026, 12, 3); // a Thursday
    const OLDEST: Date = Date::constant(2025, 11, 29);

    fn range_of(query: &str) -> Result<(Date, Date), String> {
        range(Some(query), TODAY, OLDEST, WeekStart::Monday, 370).map_err(|e| e.code.to_string())
    }

    #[test]
    fn named_periods_are_local_days_up_to_today() {
        let d = |m, day| Date::constant(2026, m, day);
        assert_eq!(range_of(""), Ok((TODAY, TODAY)));
        assert_eq!(range_of("period=today"), Ok((TODAY, TODAY)));
        assert_eq!(range_of("period=yesterday"), Ok((d(12, 2), d(12, 2))));
        assert_eq!(range_of("period=week"), Ok((d(11, 30), TODAY)));
        assert_eq!(range_of("period=month"), Ok((d(12, 1), TODAY)));
        assert_eq!(range_of("period=total").unwrap_err(), "bad_period");
    }

    #[test]
    fn a_named_period_starts_no_earlier_than_the_oldest_day_kept() {
        let oldest = Date::constant(2026, 12, 2);
        let r = range(Some("period=month"), TODAY, oldest, WeekStart::Monday, 2);
        assert_eq!(r.ok(), Some((oldest, TODAY)));
    }

    #[test]
    fn explicit_ranges_are_checked() {
        let d = |y, m, day| Date::constant(y, m, day);
        assert_eq!(
            range_of("from=2026-11-01&to=2026-11-30"),
            Ok((d(2026, 11, 1), d(2026, 11, 30)))
        );
        assert_eq!(
            range_of("to=2026-11-30"),
            Ok((d(2026, 11, 30), d(2026, 11, 30)))
        );
        assert_eq!(range_of("from=2026-11-30"), Ok((d(2026, 11, 30), TODAY)));
        assert_eq!(range_of("from=2025-11-29"), Ok((OLDEST, TODAY)));
        for (query, code) in [
            ("from=2026-11-31", "bad_date"),
            ("to=yesterday", "bad_date"),
            ("from=2026-11-02&to=2026-11-01", "bad_range"),
            ("from=2025-11-28&to=2025-12-01", "bad_range"),
            ("from=2026-12-01&to=2026-12-04", "bad_range"),
            ("from=2026-11-01&period=week", "bad_period"),
        ] {
            assert_eq!(range_of(query).unwrap_err(), code, "{query}");
        }
        // Longer than a request may ask, though kept.
        let r = range(
            Some("from=2025-01-01&to=2026-02-05"),
            TODAY,
            Date::constant(2024, 1, 1),
            WeekStart::Monday,
            1000,
        );
        assert_eq!(r.map_err(|e| e.code.to_string()).unwrap_err(), "bad_range");
    }

    #[test]
    fn by_names_a_dimension() {
        assert_eq!(
            dimension(Some("by=utm_campaign")).ok(),
            Some(Dimension::UtmCampaign)
        );
        for query in ["", "by=", "by=Channel", "by=referrer"] {
            let e = dimension(Some(query)).unwrap_err();
            assert_eq!(e.code, "bad_by", "{query}");
            assert!(e.message.contains("utm_source"), "{}", e.message);
        }
    }
}
