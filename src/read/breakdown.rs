//! Breakdowns as owners read them: where a site's (or a page's) hits came
//! from and on what, over some local days — the store's reading shaped
//! into a ranked list.
//!
//! A breakdown is as of the last flush: the store reads a scope's day hits
//! and its values' hits in one snapshot, so their difference is exactly
//! what was counted without dimensions ([`UNKNOWN`]). This instance's
//! unflushed hits are left out (a second at most, as for top lists):
//! adding them to `hits` alone would show them as `(unknown)`.
//!
//! [`shape`] is the pure part: it orders the values, derives `(unknown)`,
//! puts `(other)` last and applies the limit. Reads only; never counts.

use std::sync::Arc;

use jiff::civil::Date;

use super::Reader;
use crate::metrics::ReadRoute;
use crate::site::Site;
use crate::store::{BreakdownReading, Dimension, OTHER, Scope, Store, StoreError, UNKNOWN};

/// How many named values a breakdown lists when the caller does not say.
pub const DEFAULT_LIMIT: usize = 10;
/// The most named values one breakdown may list (a site keeps at most
/// `counting.max_values` a day, 1,000 by default).
pub const MAX_LIMIT: usize = 1_000;

/// A breakdown ready to answer: the period's hits and its values, largest
/// first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Breakdown {
    /// The scope's hits over the days: never less than the sum of all its
    /// values (`(unknown)` and `(other)` included), and equal to it.
    pub hits: u64,
    /// At most `limit` named values, by hits descending (ties by value),
    /// then [`UNKNOWN`] and [`OTHER`], in that order, each only when above
    /// zero.
    pub values: Vec<(String, u64)>,
}

/// Shapes a store reading into what owners see.
///
/// - A value's hits are summed if the store named it twice; values with no
///   hits are dropped.
/// - Named values are sorted by hits, largest first, ties by value
///   (byte order), and cut to `limit`. The cut never changes `hits`, so a
///   client finds what the list leaves out as `hits − sum(values)`.
/// - `(unknown)` — hits counted without dimensions (before they existed,
///   or imported as plain totals) — is `hits − sum(stored values)`. It is
///   not one of the dimension's values, so it follows them whatever its
///   size, and is listed only when above zero (a stored value that happens
///   to be spelled `(unknown)`, such as a campaign, joins it).
/// - `(other)` — hits beyond the counter's bound of distinct values — comes
///   last, only when above zero.
/// - `hits` is the reading's, or the values' sum if a store ever answered
///   more in values than in hits, so the list always adds up to it.
pub fn shape(reading: BreakdownReading, limit: usize) -> Breakdown {
    let BreakdownReading { hits, mut values } = reading;
    values.retain(|(_, n)| *n > 0);
    values.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut named: Vec<(String, u64)> = Vec::with_capacity(values.len());
    let (mut stored_unknown, mut other, mut sum) = (0u64, 0u64, 0u64);
    for (value, n) in values {
        sum = sum.saturating_add(n);
        if value == UNKNOWN {
            stored_unknown = stored_unknown.saturating_add(n);
        } else if value == OTHER {
            other = other.saturating_add(n);
        } else {
            match named.last_mut() {
                Some(last) if last.0 == value => last.1 = last.1.saturating_add(n),
                _ => named.push((value, n)),
            }
        }
    }
    let hits = hits.max(sum);
    let unknown = stored_unknown.saturating_add(hits - sum);
    named.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    named.truncate(limit);
    for (value, n) in [(UNKNOWN, unknown), (OTHER, other)] {
        if n > 0 {
            named.push((value.to_string(), n));
        }
    }
    Breakdown {
        hits,
        values: named,
    }
}

/// Every local day from `from` to `to`, both included (none when `from` is
/// after `to`); at most `max` of them, counted from `from`.
pub fn days_between(from: Date, to: Date, max: usize) -> Vec<Date> {
    let mut days = Vec::new();
    let mut day = from;
    while day <= to && days.len() < max {
        days.push(day);
        match day.tomorrow() {
            Ok(next) => day = next,
            Err(_) => break,
        }
    }
    days
}

impl Reader {
    /// The breakdown of `site` (or one of its pages, normalised) by
    /// `dimension` over `days`, as of the last flush, shaped with
    /// [`shape`]. Counted as one store read of the breakdown route.
    ///
    /// # Errors
    /// The [`StoreError`] of a store that cannot answer.
    pub async fn breakdown(
        &self,
        site: &Site,
        page: Option<&str>,
        dimension: Dimension,
        days: &[Date],
        limit: usize,
    ) -> Result<Breakdown, StoreError> {
        let scope = page.map_or(Scope::Site, |p| Scope::Page(Arc::from(p)));
        self.count_store_read(ReadRoute::Breakdown);
        let reading = self
            .store
            .breakdown(&site.id, &scope, dimension, days)
            .await?;
        Ok(shape(reading, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(hits: u64, values: &[(&str, u64)]) -> BreakdownReading {
        BreakdownReading {
            hits,
            values: values.iter().map(|(v, n)| (v.to_string(), *n)).collect(),
        }
    }

    fn list(b: &Breakdown) -> Vec<(&str, u64)> {
        b.values.iter().map(|(v, n)| (v.as_str(), *n)).collect()
    }

    #[test]
    fn values_go_largest_first_with_ties_by_value() {
        let b = shape(
            reading(
                20,
                &[("zalo", 3), ("Google", 7), ("facebook", 7), ("bing", 3)],
            ),
            10,
        );
        assert_eq!(
            list(&b),
            [("Google", 7), ("facebook", 7), ("bing", 3), ("zalo", 3)]
        );
        assert_eq!(b.hits, 20);
    }

    #[test]
    fn unknown_is_the_hits_the_values_do_not_hold_and_other_is_last() {
        let b = shape(
            reading(100, &[("(other)", 50), ("search", 10), ("direct", 30)]),
            10,
        );
        // (unknown) follows the named values even when larger than some;
        // (other) is last even when it is the largest.
        assert_eq!(
            list(&b),
            [
                ("direct", 30),
                ("search", 10),
                ("(unknown)", 10),
                ("(other)", 50)
            ]
        );
        assert_eq!(b.values.iter().map(|v| v.1).sum::<u64>(), b.hits);
    }

    #[test]
    fn unknown_and_other_are_listed_only_above_zero() {
        let b = shape(reading(40, &[("direct", 30), ("search", 10)]), 10);
        assert_eq!(list(&b), [("direct", 30), ("search", 10)]);
        let b = shape(reading(0, &[]), 10);
        assert_eq!(b, Breakdown::default());
        let b = shape(reading(5, &[("(other)", 0)]), 10);
        assert_eq!(list(&b), [("(unknown)", 5)]);
    }

    #[test]
    fn hits_counted_before_dimensions_are_all_unknown() {
        let b = shape(reading(9_356_665, &[]), 10);
        assert_eq!(list(&b), [("(unknown)", 9_356_665)]);
        assert_eq!(b.hits, 9_356_665);
    }

    #[test]
    fn the_limit_cuts_named_values_never_hits_or_the_catch_alls() {
        let values: Vec<(String, u64)> = (1..=30).map(|i| (format!("v{i:02}"), i)).collect();
        let stored: u64 = values.iter().map(|v| v.1).sum();
        let b = shape(
            BreakdownReading {
                hits: stored + 100 + 7,
                values: values
                    .into_iter()
                    .chain([("(other)".to_string(), 7)])
                    .collect(),
            },
            3,
        );
        assert_eq!(
            list(&b),
            [
                ("v30", 30),
                ("v29", 29),
                ("v28", 28),
                ("(unknown)", 100),
                ("(other)", 7)
            ]
        );
        assert_eq!(b.hits, stored + 107, "the limit never cuts hits");
    }

    #[test]
    fn a_value_named_twice_or_spelled_unknown_is_listed_once() {
        let b = shape(
            reading(
                20,
                &[
                    ("(unknown)", 2),
                    ("a", 3),
                    ("b", 4),
                    ("a", 5),
                    ("(other)", 1),
                ],
            ),
            10,
        );
        // Stored values sum to 15: 5 counted without dimensions, 2 more
        // stored under the literal name.
        assert_eq!(
            list(&b),
            [("a", 8), ("b", 4), ("(unknown)", 7), ("(other)", 1)]
        );
    }

    #[test]
    fn values_above_hits_raise_hits_so_the_list_adds_up() {
        let b = shape(reading(5, &[("a", 4), ("b", 3)]), 10);
        assert_eq!(b.hits, 7);
        assert_eq!(list(&b), [("a", 4), ("b", 3)]);
    }

    #[test]
    fn days_between_counts_both_ends_and_stops_at_max() {
        let d = |m, day| Date::constant(2026, m, day);
        assert_eq!(
            days_between(d(11, 29), d(12, 2), 10),
            [d(11, 29), d(11, 30), d(12, 1), d(12, 2)]
        );
        assert_eq!(days_between(d(12, 2), d(12, 2), 10), [d(12, 2)]);
        assert!(days_between(d(12, 3), d(12, 2), 10).is_empty());
        assert_eq!(days_between(d(12, 1), d(12, 31), 2).len(), 2);
    }
}
