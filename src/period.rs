//! Site-local calendar: which local day, week and month a hit belongs to.
//! Pure functions plus a lock-free cache of the current day for the hot path;
//! no I/O, knows nothing of HTTP or stores.

use std::sync::Arc;

use arc_swap::ArcSwap;
use jiff::{
    SignedDuration, Span, Timestamp,
    civil::{Date, DateTime, Weekday},
    fmt::temporal::DateTimePrinter,
    tz::TimeZone,
};

/// The Unix epoch as a civil date, the origin of [`DayNumber`].
const EPOCH: Date = Date::constant(1970, 1, 1);

/// Seconds in a civil day, which is always 24 hours when counting dates.
const SECONDS_PER_DAY: i64 = 86_400;

/// Prints RFC 3339 with an offset and no fractional seconds.
const RFC3339: DateTimePrinter = DateTimePrinter::new().precision(Some(0));

/// First day of a week.
///
/// Sites disagree on when a week begins, so weekly totals are keyed by the
/// configured first day. It deserialises from lowercase names ("monday" …
/// "sunday") so that configuration files read naturally, and defaults to
/// Monday as in ISO 8601.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WeekStart {
    /// Weeks start on Monday, as in ISO 8601 and most of the world.
    #[default]
    Monday,
    /// Weeks start on Tuesday.
    Tuesday,
    /// Weeks start on Wednesday.
    Wednesday,
    /// Weeks start on Thursday.
    Thursday,
    /// Weeks start on Friday.
    Friday,
    /// Weeks start on Saturday, as in parts of the Middle East.
    Saturday,
    /// Weeks start on Sunday, as in the Americas.
    Sunday,
}

impl WeekStart {
    /// The jiff weekday of this week start, so that calendar arithmetic can be
    /// left to jiff.
    pub const fn weekday(self) -> Weekday {
        match self {
            WeekStart::Monday => Weekday::Monday,
            WeekStart::Tuesday => Weekday::Tuesday,
            WeekStart::Wednesday => Weekday::Wednesday,
            WeekStart::Thursday => Weekday::Thursday,
            WeekStart::Friday => Weekday::Friday,
            WeekStart::Saturday => Weekday::Saturday,
            WeekStart::Sunday => Weekday::Sunday,
        }
    }
}

/// The first day of the week that contains `day`.
///
/// Weekly totals are keyed by this date, so every day of a week must map to
/// the same key. The result may fall in the previous month or year (for
/// example, with Monday weeks 2021-01-01 belongs to the week of 2020-12-28).
/// Near [`Date::MIN`] the result saturates at `Date::MIN`.
pub fn week_of(day: Date, start: WeekStart) -> Date {
    let back = day.weekday().since(start.weekday());
    day.saturating_sub(Span::new().days(back))
}

/// The first day of the month that contains `day`.
///
/// Monthly totals are keyed by this date.
pub fn month_of(day: Date) -> Date {
    day.first_of_month()
}

/// Compact day number used in hot-path atomics: days since 1970-01-01.
///
/// A `u32` fits in an atomic next to other counters and compares in one
/// instruction. Dates before 1970 are out of range: no hit is ever recorded
/// then, so they saturate to day 0 rather than being representable.
pub type DayNumber = u32;

/// The number of days from 1970-01-01 to `day`.
///
/// This is the key the hot path uses for "today". Dates before 1970 are out of
/// range and saturate to 0.
pub fn day_number(day: Date) -> DayNumber {
    let days = day
        .duration_since(EPOCH)
        .as_secs()
        .div_euclid(SECONDS_PER_DAY);
    // Only dates before the epoch fail the conversion: the latest date jiff
    // can represent is about 2.9 million days after it.
    DayNumber::try_from(days).unwrap_or(0)
}

/// The date that [`day_number`] maps to `n`; its inverse.
///
/// The hot path stores only day numbers, and this turns them back into dates
/// when totals are flushed or reported. Numbers past [`Date::MAX`] (year 9999)
/// saturate to `Date::MAX`.
pub fn date_of_number(n: DayNumber) -> Date {
    EPOCH.saturating_add(SignedDuration::from_secs(i64::from(n) * SECONDS_PER_DAY))
}

/// The instant `unix_secs` seconds after the epoch, saturating at the range
/// jiff supports so that no input can make the calendar fail.
fn timestamp_from_secs(unix_secs: i64) -> Timestamp {
    match Timestamp::from_second(unix_secs) {
        Ok(at) => at,
        Err(_) if unix_secs < 0 => Timestamp::MIN,
        Err(_) => Timestamp::MAX,
    }
}

/// A site's calendar: its time zone and its week start.
///
/// A hit is counted on the day, week and month it happened in where the site's
/// visitors live, not in UTC, so every period computation goes through this.
#[derive(Clone, Debug)]
pub struct SiteCalendar {
    tz: TimeZone,
    week_start: WeekStart,
}

impl SiteCalendar {
    /// A calendar for a site in time zone `tz` whose weeks begin on
    /// `week_start`.
    pub fn new(tz: TimeZone, week_start: WeekStart) -> Self {
        Self { tz, week_start }
    }

    /// The site's time zone, for callers that need to render local times.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// The site's first day of the week, for callers that label weeks.
    pub fn week_start(&self) -> WeekStart {
        self.week_start
    }

    /// The local civil date of an instant.
    ///
    /// This decides which daily total a hit at `at` is added to.
    pub fn day_of(&self, at: Timestamp) -> Date {
        self.tz.to_datetime(at).date()
    }

    /// The instants at which local `day` starts (inclusive) and the next day
    /// starts (exclusive).
    ///
    /// The hot path caches these bounds so that it only consults the time zone
    /// once a day. The bounds are DST-aware: a day may last 23 or 25 hours, and
    /// where midnight itself is skipped by a DST jump (for example
    /// America/Santiago) the day starts at the first instant that exists, as
    /// jiff's `Zoned::start_of_day` does. A date that a zone skipped entirely
    /// (Pacific/Kiritimati's 1994-12-31) gets empty bounds, and no instant
    /// maps to it. Bounds beyond jiff's range saturate at `Timestamp::MIN` or
    /// `Timestamp::MAX`.
    pub fn day_bounds(&self, day: Date) -> (Timestamp, Timestamp) {
        let start = self.start_of(day);
        let end = match day.tomorrow() {
            Ok(next) => self.start_of(next),
            Err(_) => Timestamp::MAX,
        };
        (start, end)
    }

    /// The first instant of local `day`.
    ///
    /// Compatible disambiguation is what `start_of_day` uses: in a gap it takes
    /// the instant after the gap and in a fold the first occurrence.
    fn start_of(&self, day: Date) -> Timestamp {
        match self.tz.to_timestamp(DateTime::from(day)) {
            Ok(at) => at,
            // Only the ends of jiff's range fail, where the offset pushes
            // local midnight outside the representable instants.
            Err(_) if day.year() < 0 => Timestamp::MIN,
            Err(_) => Timestamp::MAX,
        }
    }

    /// Whether every instant in `[start, end)` has the local date `day`.
    ///
    /// Usually true of [`SiteCalendar::day_bounds`], but not where a fold
    /// straddles local midnight: America/St_Johns turned its clocks back at
    /// 00:01 until 2011, so the first minute of a day was followed by another
    /// hour of the day before. Local time only runs backwards at transitions,
    /// so checking both ends of every stretch between transitions suffices.
    fn is_all_one_day(&self, day: Date, start: Timestamp, end: Timestamp) -> bool {
        let on_day = |at: Timestamp| self.day_of(at) == day;
        let just_before = |at: Timestamp| at.checked_sub(SignedDuration::from_nanos(1));
        start < end
            && on_day(start)
            && just_before(end).is_ok_and(on_day)
            && self
                .tz
                .following(start)
                .map(|transition| transition.timestamp())
                .take_while(|&at| at < end)
                .all(|at| on_day(at) && just_before(at).is_ok_and(on_day))
    }

    /// The periods a local day belongs to.
    ///
    /// A hit increments one total per period, and this names them all at once.
    pub fn periods(&self, day: Date) -> Periods {
        Periods {
            day,
            week: week_of(day, self.week_start),
            month: month_of(day),
        }
    }

    /// The local date-time of `at` formatted RFC 3339 with offset, in whole
    /// seconds, e.g. "2026-11-27T21:00:00+07:00".
    ///
    /// Reports show times as the site owner sees them, while the offset keeps
    /// the string unambiguous. Fractional seconds are truncated. Offsets with
    /// seconds (only local mean time before about 1900) are rounded to the
    /// minute, because RFC 3339 has no seconds in offsets.
    pub fn rfc3339(&self, at: Timestamp) -> String {
        RFC3339.timestamp_with_offset_to_string(&at, self.tz.to_offset(at))
    }
}

/// The periods a local day belongs to: the keys of the daily, weekly and
/// monthly totals a hit on that day increments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Periods {
    /// The local day itself.
    pub day: Date,
    /// The first day of the week that contains `day`.
    pub week: Date,
    /// The first day of the month that contains `day`.
    pub month: Date,
}

/// A local day with what composing figures needs of it: its week and
/// month, and the day numbers a delta is compared with. [`DayClock`]
/// computes it once a day; at each answer, the calendar arithmetic took
/// ~700 instructions (callgrind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalDay {
    pub date: Date,
    /// `None` on the first day jiff can represent.
    pub yesterday: Option<Date>,
    pub week: Date,
    pub month: Date,
    pub day_n: DayNumber,
    pub week_n: DayNumber,
    pub month_n: DayNumber,
}

impl LocalDay {
    /// `date` in `calendar`, with its periods ([`SiteCalendar::periods`]).
    pub fn of(calendar: &SiteCalendar, date: Date) -> Self {
        let Periods {
            day: _,
            week,
            month,
        } = calendar.periods(date);
        LocalDay {
            date,
            yesterday: date.yesterday().ok(),
            week,
            month,
            day_n: day_number(date),
            week_n: day_number(week),
            month_n: day_number(month),
        }
    }
}

/// A half-open range of Unix seconds `[start_secs, end_secs)` that is all one
/// local day.
#[derive(Debug)]
struct Window {
    start_secs: i64,
    end_secs: i64,
    local: LocalDay,
}

impl Window {
    /// Whether `unix_secs` falls in this window.
    #[inline]
    fn contains(&self, unix_secs: i64) -> bool {
        self.start_secs <= unix_secs && unix_secs < self.end_secs
    }
}

/// Lock-free cache of the current local day of one site, for the hot path:
/// a hit asks "which day is it now?" millions of times a second, and the answer
/// changes once a day.
#[derive(Debug)]
pub struct DayClock {
    calendar: SiteCalendar,
    window: ArcSwap<Window>,
}

impl DayClock {
    /// A clock for `calendar` with an empty cache; the first call to
    /// [`DayClock::day_at`] fills it.
    pub fn new(calendar: SiteCalendar) -> Self {
        // The empty window contains no instant, and any real window starts
        // later, so the first lookup always replaces it.
        let empty = Window {
            start_secs: i64::MIN,
            end_secs: i64::MIN,
            local: LocalDay::of(&calendar, EPOCH),
        };
        Self {
            calendar,
            window: ArcSwap::from_pointee(empty),
        }
    }

    /// The calendar this clock caches, for the slower per-hit work such as
    /// computing week and month.
    pub fn calendar(&self) -> &SiteCalendar {
        &self.calendar
    }

    /// The local day number at `unix_secs` (seconds since the epoch).
    ///
    /// Fast path: one atomic load and two comparisons, with no allocation, when
    /// `unix_secs` falls in the cached window. Otherwise the window is
    /// recomputed with [`SiteCalendar::day_bounds`] and stored, which
    /// allocates about once a day. The answer is correct for any `unix_secs`,
    /// including times in the past or future, but the cache is only replaced
    /// by a later window, so a stray old timestamp does not thrash it.
    #[inline]
    pub fn day_at(&self, unix_secs: i64) -> DayNumber {
        self.local_day_at(unix_secs).day_n
    }

    /// The local day at `unix_secs`, with its week and month: the same
    /// cache as [`DayClock::day_at`].
    #[inline]
    pub fn local_day_at(&self, unix_secs: i64) -> LocalDay {
        let window = self.window.load();
        if window.contains(unix_secs) {
            return window.local;
        }
        self.refresh(unix_secs)
    }

    /// The slow path of [`DayClock::local_day_at`]: compute the window
    /// around `unix_secs` and cache it if it is later than the cached one.
    #[cold]
    fn refresh(&self, unix_secs: i64) -> LocalDay {
        let day = self.calendar.day_of(timestamp_from_secs(unix_secs));
        let (start, end) = self.calendar.day_bounds(day);
        let fresh = Window {
            start_secs: start.as_second(),
            end_secs: end.as_second(),
            local: LocalDay::of(&self.calendar, day),
        };
        // Outside jiff's range, or where a fold straddles local midnight, the
        // window may not contain the instant or may contain instants of another
        // local date; the answer is still right, but such a window must not be
        // cached.
        if !fresh.contains(unix_secs) || !self.calendar.is_all_one_day(day, start, end) {
            return fresh.local;
        }
        let answer = fresh.local;
        let fresh = Arc::new(fresh);
        let mut current = self.window.load_full();
        // Another thread may store a window between our load and our store;
        // compare-and-swap keeps the latest window whoever wins.
        while fresh.start_secs > current.start_secs {
            let previous = self.window.compare_and_swap(&current, Arc::clone(&fresh));
            if Arc::ptr_eq(&previous, &current) {
                break;
            }
            current = arc_swap::Guard::into_inner(previous);
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::{ToSpan, civil::date};
    use proptest::prelude::*;

    /// The zones the property tests range over: no DST, classic DST in both
    /// hemispheres, a half-hour DST shift, and a zone that skipped a whole day.
    const ZONES: [&str; 6] = [
        "UTC",
        "Europe/Berlin",
        "Asia/Ho_Chi_Minh",
        "America/New_York",
        "Australia/Lord_Howe",
        "Pacific/Kiritimati",
    ];

    const WEEK_STARTS: [WeekStart; 7] = [
        WeekStart::Monday,
        WeekStart::Tuesday,
        WeekStart::Wednesday,
        WeekStart::Thursday,
        WeekStart::Friday,
        WeekStart::Saturday,
        WeekStart::Sunday,
    ];

    /// 1971-01-01T00:00:00Z.
    const MIN_SECS: i64 = 31_536_000;
    /// 2199-12-31T23:59:59Z.
    const MAX_SECS: i64 = 7_258_118_399;

    fn calendar(zone: &str) -> SiteCalendar {
        SiteCalendar::new(TimeZone::get(zone).unwrap(), WeekStart::Monday)
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn hours(start: Timestamp, end: Timestamp) -> f64 {
        end.duration_since(start).as_secs_f64() / 3600.0
    }

    #[test]
    fn week_start_deserialises_from_lowercase_names_and_defaults_to_monday() {
        let names = [
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
            "sunday",
        ];
        for (name, want) in names.iter().zip(WEEK_STARTS) {
            let got: WeekStart = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(got, want);
            assert_eq!(serde_json::to_string(&want).unwrap(), format!("\"{name}\""));
        }
        assert!(serde_json::from_str::<WeekStart>("\"Monday\"").is_err());
        assert_eq!(WeekStart::default(), WeekStart::Monday);
    }

    #[test]
    fn month_of_maps_month_ends_to_the_first_of_the_month() {
        assert_eq!(month_of(date(2026, 1, 31)), date(2026, 1, 1));
        assert_eq!(month_of(date(2026, 4, 30)), date(2026, 4, 1));
        assert_eq!(month_of(date(2026, 12, 31)), date(2026, 12, 1));
        assert_eq!(month_of(date(2026, 5, 1)), date(2026, 5, 1));
    }

    #[test]
    fn leap_day_2024_belongs_to_february_and_its_week() {
        let leap = date(2024, 2, 29);
        assert_eq!(month_of(leap), date(2024, 2, 1));
        // 2024-02-29 was a Thursday.
        assert_eq!(week_of(leap, WeekStart::Monday), date(2024, 2, 26));
        assert_eq!(week_of(leap, WeekStart::Sunday), date(2024, 2, 25));
        assert_eq!(
            week_of(date(2024, 3, 3), WeekStart::Monday),
            date(2024, 2, 26)
        );
        let cal = calendar("UTC");
        assert_eq!(
            cal.periods(leap),
            Periods {
                day: leap,
                week: date(2024, 2, 26),
                month: date(2024, 2, 1),
            }
        );
    }

    #[test]
    fn february_2023_has_no_29th() {
        assert!(Date::new(2023, 2, 29).is_err());
        assert_eq!(date(2023, 2, 28).tomorrow().unwrap(), date(2023, 3, 1));
    }

    #[test]
    fn monday_weeks_across_year_ends_match_iso_weeks() {
        // For each year end, the Monday starting the week of 29 December and
        // the Monday after it; every date from 29 December to 4 January maps
        // to one of the two.
        let year_ends = [
            (date(2020, 12, 28), date(2021, 1, 4)),
            (date(2021, 12, 27), date(2022, 1, 3)),
            // 2024-12-29 is a Sunday, so it still belongs to the week of the 23rd.
            (date(2024, 12, 23), date(2024, 12, 30)),
            (date(2026, 12, 28), date(2027, 1, 4)),
        ];
        for (monday, next_monday) in year_ends {
            assert_eq!(monday.weekday(), Weekday::Monday);
            assert_eq!(next_monday, monday + 7.days());
            let first = date(monday.year(), 12, 29);
            for offset in 0..7 {
                let day = first + offset.days();
                let want = if day < next_monday {
                    monday
                } else {
                    next_monday
                };
                assert_eq!(week_of(day, WeekStart::Monday), want, "{day}");
                // Cross-check with jiff's ISO 8601 week dates, whose weeks
                // start on Monday.
                let iso = day.iso_week_date();
                let iso_monday =
                    jiff::civil::ISOWeekDate::new(iso.year(), iso.week(), Weekday::Monday)
                        .unwrap()
                        .date();
                assert_eq!(want, iso_monday, "{day}");
            }
        }
        assert_eq!(
            week_of(date(2021, 1, 1), WeekStart::Monday),
            date(2020, 12, 28)
        );
        assert_eq!(
            week_of(date(2025, 1, 1), WeekStart::Monday),
            date(2024, 12, 30)
        );
        assert_eq!(
            week_of(date(2027, 1, 4), WeekStart::Monday),
            date(2027, 1, 4)
        );
        assert_eq!(
            week_of(date(2022, 1, 2), WeekStart::Monday),
            date(2021, 12, 27)
        );
        assert_eq!(
            week_of(date(2022, 1, 3), WeekStart::Monday),
            date(2022, 1, 3)
        );
    }

    #[test]
    fn sunday_weeks_across_year_ends_start_on_the_previous_sunday() {
        // 2020-12-27, 2021-12-26, 2024-12-29 and 2026-12-27 are Sundays.
        let cases = [
            (date(2020, 12, 29), date(2020, 12, 27)),
            (date(2021, 1, 1), date(2020, 12, 27)),
            (date(2021, 1, 3), date(2021, 1, 3)),
            (date(2022, 1, 1), date(2021, 12, 26)),
            (date(2022, 1, 2), date(2022, 1, 2)),
            (date(2024, 12, 29), date(2024, 12, 29)),
            (date(2025, 1, 4), date(2024, 12, 29)),
            (date(2027, 1, 2), date(2026, 12, 27)),
            (date(2027, 1, 3), date(2027, 1, 3)),
        ];
        for (day, want) in cases {
            assert_eq!(want.weekday(), Weekday::Sunday);
            assert_eq!(week_of(day, WeekStart::Sunday), want, "{day}");
        }
    }

    #[test]
    fn berlin_spring_forward_day_lasts_23_hours() {
        let cal = calendar("Europe/Berlin");
        let (start, end) = cal.day_bounds(date(2026, 3, 29));
        assert_eq!(start, ts("2026-03-28T23:00:00Z"));
        assert_eq!(end, ts("2026-03-29T22:00:00Z"));
        assert_eq!(hours(start, end), 23.0);
    }

    #[test]
    fn berlin_fall_back_day_lasts_25_hours() {
        let cal = calendar("Europe/Berlin");
        let (start, end) = cal.day_bounds(date(2026, 10, 25));
        assert_eq!(start, ts("2026-10-24T22:00:00Z"));
        assert_eq!(end, ts("2026-10-25T23:00:00Z"));
        assert_eq!(hours(start, end), 25.0);
    }

    #[test]
    fn berlin_day_of_flips_at_local_midnight_around_dst_changes() {
        let cal = calendar("Europe/Berlin");
        // Local midnight before the spring change is still at +01:00.
        assert_eq!(cal.day_of(ts("2026-03-28T22:59:59Z")), date(2026, 3, 28));
        assert_eq!(cal.day_of(ts("2026-03-28T23:00:00Z")), date(2026, 3, 29));
        // Local midnight after the spring change is at +02:00.
        assert_eq!(cal.day_of(ts("2026-03-29T21:59:59Z")), date(2026, 3, 29));
        assert_eq!(cal.day_of(ts("2026-03-29T22:00:00Z")), date(2026, 3, 30));
        // Local midnight before the autumn change is still at +02:00.
        assert_eq!(cal.day_of(ts("2026-10-24T21:59:59Z")), date(2026, 10, 24));
        assert_eq!(cal.day_of(ts("2026-10-24T22:00:00Z")), date(2026, 10, 25));
        // Local midnight after the autumn change is at +01:00.
        assert_eq!(cal.day_of(ts("2026-10-25T22:59:59Z")), date(2026, 10, 25));
        assert_eq!(cal.day_of(ts("2026-10-25T23:00:00Z")), date(2026, 10, 26));
    }

    #[test]
    fn berlin_2330_utc_on_march_28_is_already_march_29() {
        let cal = calendar("Europe/Berlin");
        assert_eq!(cal.day_of(ts("2026-03-28T23:30:00Z")), date(2026, 3, 29));
        assert_eq!(
            cal.rfc3339(ts("2026-03-28T23:30:00Z")),
            "2026-03-29T00:30:00+01:00"
        );
    }

    #[test]
    fn ho_chi_minh_day_flips_at_17_utc() {
        let cal = calendar("Asia/Ho_Chi_Minh");
        assert_eq!(cal.day_of(ts("2026-11-27T16:59:59Z")), date(2026, 11, 27));
        assert_eq!(cal.day_of(ts("2026-11-27T17:00:00Z")), date(2026, 11, 28));
        let (start, end) = cal.day_bounds(date(2026, 11, 28));
        assert_eq!(start, ts("2026-11-27T17:00:00Z"));
        assert_eq!(end, ts("2026-11-28T17:00:00Z"));
    }

    #[test]
    fn skipped_midnight_day_starts_at_first_existing_instant() {
        // Chile springs forward at midnight: 2026-09-06T00:00 does not exist
        // in America/Santiago, and the day starts at 01:00 -03:00.
        let cal = calendar("America/Santiago");
        let day = date(2026, 9, 6);
        let (start, end) = cal.day_bounds(day);
        let zoned_start = day
            .to_zoned(cal.time_zone().clone())
            .unwrap()
            .start_of_day()
            .unwrap();
        assert_eq!(start, zoned_start.timestamp());
        assert_eq!(cal.rfc3339(start), "2026-09-06T01:00:00-03:00");
        assert_eq!(cal.day_of(start), day);
        assert_eq!(cal.day_of(start - 1.second()), date(2026, 9, 5));
        assert_eq!(hours(start, end), 23.0);
        // The day before still lasts 24 hours: it ends where the gap starts.
        let (prev_start, prev_end) = cal.day_bounds(date(2026, 9, 5));
        assert_eq!(prev_end, start);
        assert_eq!(hours(prev_start, prev_end), 24.0);
    }

    #[test]
    fn kiritimati_skipped_day_has_empty_bounds_and_no_instants() {
        // Kiribati moved across the date line, so 1994-12-31 never happened
        // on Kiritimati.
        let cal = calendar("Pacific/Kiritimati");
        let (start, end) = cal.day_bounds(date(1994, 12, 31));
        assert_eq!(start, end);
        let (_, end_of_30th) = cal.day_bounds(date(1994, 12, 30));
        assert_eq!(end_of_30th, start);
        assert_eq!(cal.day_of(start - 1.second()), date(1994, 12, 30));
        assert_eq!(cal.day_of(start), date(1995, 1, 1));
    }

    #[test]
    fn day_clock_agrees_with_day_of_across_a_midnight() {
        let clock = DayClock::new(calendar("Asia/Ho_Chi_Minh"));
        let midnight = ts("2026-11-27T17:00:00Z").as_second();
        for secs in (midnight - 3_600..midnight + 3_600).step_by(61) {
            let want = day_number(
                clock
                    .calendar()
                    .day_of(Timestamp::from_second(secs).unwrap()),
            );
            assert_eq!(clock.day_at(secs), want, "{secs}");
        }
        assert_eq!(clock.day_at(midnight - 1), day_number(date(2026, 11, 27)));
        assert_eq!(clock.day_at(midnight), day_number(date(2026, 11, 28)));
    }

    #[test]
    fn day_clock_answers_old_timestamp_after_new_one_without_replacing_cache() {
        let clock = DayClock::new(calendar("Europe/Berlin"));
        let new = ts("2026-10-25T12:00:00Z").as_second();
        let old = ts("2026-03-29T12:00:00Z").as_second();
        assert_eq!(clock.day_at(new), day_number(date(2026, 10, 25)));
        let cached = clock.window.load_full();
        assert_eq!(clock.day_at(old), day_number(date(2026, 3, 29)));
        assert!(Arc::ptr_eq(&cached, &clock.window.load_full()));
        assert_eq!(clock.day_at(new + 1), day_number(date(2026, 10, 25)));
        // A later day does replace the cache.
        let later = ts("2026-10-26T12:00:00Z").as_second();
        assert_eq!(clock.day_at(later), day_number(date(2026, 10, 26)));
        assert!(!Arc::ptr_eq(&cached, &clock.window.load_full()));
    }

    #[test]
    fn day_clock_follows_day_of_through_a_fold_that_straddles_midnight() {
        // On 2010-11-07 at 00:01 NDT (-02:30), America/St_Johns turned its
        // clocks back to 23:01 NST (-03:30) on 6 November, so local dates ran
        // 6 Nov, 7 Nov for one minute, 6 Nov for another hour, then 7 Nov.
        let cal = calendar("America/St_Johns");
        assert_eq!(cal.day_of(ts("2010-11-07T02:30:30Z")), date(2010, 11, 7));
        assert_eq!(cal.day_of(ts("2010-11-07T02:45:00Z")), date(2010, 11, 6));
        assert_eq!(
            cal.day_bounds(date(2010, 11, 7)).0,
            ts("2010-11-07T02:30:00Z")
        );
        let clock = DayClock::new(cal.clone());
        let first = ts("2010-11-07T00:00:00Z").as_second();
        let last = ts("2010-11-07T06:00:00Z").as_second();
        // Start inside the one-minute first pass, then sweep forwards and
        // backwards across the fold.
        let sweep = std::iter::once(first + 9_030)
            .chain((first..last).step_by(30))
            .chain((first..last).rev().step_by(30));
        for secs in sweep {
            let want = day_number(cal.day_of(Timestamp::from_second(secs).unwrap()));
            assert_eq!(clock.day_at(secs), want, "{secs}");
        }
    }

    #[test]
    fn day_clock_saturates_for_instants_outside_jiffs_range() {
        let clock = DayClock::new(calendar("UTC"));
        assert_eq!(clock.day_at(i64::MIN), 0);
        assert_eq!(clock.day_at(-1), 0);
        // jiff's latest instant is 9999-12-30T22:00:00Z, so that it is a valid
        // civil time at every offset.
        assert_eq!(clock.day_at(i64::MAX), day_number(date(9999, 12, 30)));
        assert_eq!(clock.day_at(0), 0);
        assert_eq!(clock.day_at(SECONDS_PER_DAY), 1);
    }

    #[test]
    fn rfc3339_formats_local_time_with_offset_in_whole_seconds() {
        let hcm = calendar("Asia/Ho_Chi_Minh");
        assert_eq!(
            hcm.rfc3339(ts("2026-11-27T14:00:00Z")),
            "2026-11-27T21:00:00+07:00"
        );
        assert_eq!(
            hcm.rfc3339(ts("2026-11-27T14:00:00.987654321Z")),
            "2026-11-27T21:00:00+07:00"
        );
        assert_eq!(
            calendar("UTC").rfc3339(ts("2026-01-02T03:04:05Z")),
            "2026-01-02T03:04:05+00:00"
        );
        assert_eq!(
            calendar("America/New_York").rfc3339(ts("2026-07-04T12:00:00Z")),
            "2026-07-04T08:00:00-04:00"
        );
        assert_eq!(
            calendar("Australia/Lord_Howe").rfc3339(ts("2026-01-01T00:00:00Z")),
            "2026-01-01T11:00:00+11:00"
        );
        assert_eq!(
            calendar("Australia/Lord_Howe").rfc3339(ts("2026-07-01T00:00:00Z")),
            "2026-07-01T10:30:00+10:30"
        );
    }

    #[test]
    fn day_number_counts_days_from_1970() {
        assert_eq!(day_number(date(1970, 1, 1)), 0);
        assert_eq!(day_number(date(1970, 1, 2)), 1);
        assert_eq!(day_number(date(2000, 3, 1)), 11_017);
        assert_eq!(date_of_number(0), date(1970, 1, 1));
        assert_eq!(date_of_number(11_017), date(2000, 3, 1));
    }

    #[test]
    fn day_number_round_trips_every_date_from_1970_to_2200() {
        let mut day = date(1970, 1, 1);
        let mut n = 0;
        while day <= date(2200, 12, 31) {
            assert_eq!(day_number(day), n);
            assert_eq!(date_of_number(n), day);
            day = day.tomorrow().unwrap();
            n += 1;
        }
    }

    #[test]
    fn out_of_range_day_numbers_saturate() {
        assert_eq!(day_number(date(1969, 12, 31)), 0);
        assert_eq!(day_number(Date::MIN), 0);
        assert_eq!(date_of_number(day_number(Date::MAX)), Date::MAX);
        assert_eq!(date_of_number(DayNumber::MAX), Date::MAX);
    }

    fn instant() -> impl Strategy<Value = Timestamp> {
        (MIN_SECS..=MAX_SECS, 0..1_000_000_000i32)
            .prop_map(|(secs, nanos)| Timestamp::new(secs, nanos).unwrap())
    }

    fn zone() -> impl Strategy<Value = SiteCalendar> {
        (0..ZONES.len(), 0..WEEK_STARTS.len())
            .prop_map(|(z, w)| SiteCalendar::new(TimeZone::get(ZONES[z]).unwrap(), WEEK_STARTS[w]))
    }

    fn day() -> impl Strategy<Value = Date> {
        (day_number(date(1971, 1, 1))..=day_number(date(2199, 12, 31))).prop_map(date_of_number)
    }

    proptest! {
        #[test]
        fn day_bounds_of_day_of_contains_the_instant(cal in zone(), at in instant()) {
            let day = cal.day_of(at);
            let (start, end) = cal.day_bounds(day);
            prop_assert!(start <= at && at < end, "{at} not in [{start}, {end}) of {day}");
            prop_assert_eq!(cal.day_of(start), day);
            prop_assert_eq!(cal.day_of(end - 1.nanosecond()), day);
        }

        #[test]
        fn consecutive_day_bounds_tile(cal in zone(), at in instant()) {
            let day = cal.day_of(at);
            let (_, end) = cal.day_bounds(day);
            let (next_start, next_end) = cal.day_bounds(day.tomorrow().unwrap());
            prop_assert_eq!(end, next_start);
            prop_assert!(next_start <= next_end);
            let (prev_start, prev_end) = cal.day_bounds(day.yesterday().unwrap());
            prop_assert_eq!(prev_end, cal.day_bounds(day).0);
            prop_assert!(prev_start <= prev_end);
        }

        #[test]
        fn days_last_between_22_and_26_hours(cal in zone(), at in instant()) {
            let (start, end) = cal.day_bounds(cal.day_of(at));
            let length = hours(start, end);
            prop_assert!((22.0..=26.0).contains(&length), "{length} hours");
        }

        #[test]
        fn week_of_is_the_requested_weekday_within_the_last_seven_days(
            d in day(),
            w in 0..WEEK_STARTS.len(),
        ) {
            let start = WEEK_STARTS[w];
            let week = week_of(d, start);
            prop_assert!(week <= d);
            prop_assert!(day_number(d) - day_number(week) < 7);
            prop_assert_eq!(week.weekday(), start.weekday());
        }

        #[test]
        fn month_of_is_day_one_of_the_same_month(d in day()) {
            let month = month_of(d);
            prop_assert!(month <= d);
            prop_assert_eq!((month.year(), month.month(), month.day()), (d.year(), d.month(), 1));
        }

        #[test]
        fn day_number_round_trips(d in day()) {
            prop_assert_eq!(date_of_number(day_number(d)), d);
        }

        #[test]
        fn periods_agree_with_week_of_and_month_of(cal in zone(), at in instant()) {
            let day = cal.day_of(at);
            let periods = cal.periods(day);
            prop_assert_eq!(periods.day, day);
            prop_assert_eq!(periods.week, week_of(day, cal.week_start()));
            prop_assert_eq!(periods.month, month_of(day));
        }

        #[test]
        fn day_clock_matches_day_of_and_its_week_and_month_for_any_sequence_of_instants(
            cal in zone(),
            base in MIN_SECS + 4 * SECONDS_PER_DAY..=MAX_SECS - 4 * SECONDS_PER_DAY,
            steps in prop::collection::vec(
                prop_oneof![
                    -4 * SECONDS_PER_DAY..=4 * SECONDS_PER_DAY,
                    -3_600i64..=3_600,
                    MIN_SECS - MAX_SECS..=MAX_SECS - MIN_SECS,
                ],
                1..64,
            ),
        ) {
            let clock = DayClock::new(cal.clone());
            let mut secs = base;
            for step in steps {
                secs = (secs + step).clamp(MIN_SECS, MAX_SECS);
                let date = cal.day_of(Timestamp::from_second(secs).unwrap());
                prop_assert_eq!(clock.day_at(secs), day_number(date), "at {}", secs);
                prop_assert_eq!(
                    clock.local_day_at(secs),
                    LocalDay::of(&cal, date),
                    "at {}", secs
                );
            }
        }
    }
}
