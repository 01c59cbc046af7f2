//! The store: where flushed figures live. One interface ([`Store`]), one
//! implementation per backend, each in its own file, all passing the same
//! [`conformance`] suite.
//!
//! A store knows nothing of HTTP, of the hot path or of time zones: it is
//! handed batches whose period keys and expiry instants were decided by the
//! flusher, applies each atomically and at most once, and answers reads of
//! named period keys together with the producer's watermark.
//!
//! What differs between backends is a method of the trait (for example
//! [`Store::sole_writer`], which sets how long readers keep a page
//! reading). [`AnyStore`] dispatches to the configured backend; only this
//! module and `app` construct it or match on its variants, and nothing else
//! names a backend. Redis's Lua scripts are files under `store/lua/`,
//! compiled in with `include_str!`.
//!
//! May use only the bottom: `period`, `sketch`, `metrics`, `background`.

pub mod conformance;
pub mod embedded;
pub mod redis;

use std::cmp::Ordering;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Date;

pub use embedded::EmbeddedStore;
pub use redis::RedisStore;

/// Whose figure an increment or a read is about: the whole site, or one page.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Site,
    Page(Arc<str>),
}

impl Scope {
    /// The page path, or the empty string for the site (never a valid page,
    /// since pages start with `/`).
    pub fn as_key(&self) -> &str {
        match self {
            Scope::Site => "",
            Scope::Page(p) => p,
        }
    }
}

/// A counter's period. Weeks are named by their first day, months by their
/// first day, so no week-numbering convention leaks into storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeriodKey {
    Day(Date),
    Week(Date),
    Month(Date),
    Total,
}

impl fmt::Display for PeriodKey {
    /// The storage name: `d:2026-11-27`, `w:2026-11-23`, `m:2026-11`, `t`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeriodKey::Day(d) => write!(f, "d:{d}"),
            PeriodKey::Week(d) => write!(f, "w:{d}"),
            PeriodKey::Month(d) => write!(f, "m:{:04}-{:02}", d.year(), d.month()),
            PeriodKey::Total => f.write_str("t"),
        }
    }
}

/// One counter increase inside a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Increment {
    pub scope: Scope,
    pub period: PeriodKey,
    pub hits: u64,
    /// When the counter may be forgotten (its retention), or `None` for
    /// forever. An increment whose instant has passed when it is applied is
    /// *late*: it is not applied (the period's figure is gone) and is counted.
    pub expires_at: Option<Timestamp>,
}

impl Increment {
    /// Whether `increments` are in the order batches are built in: by
    /// scope, then period, each pair once. The Redis store relies on it (a
    /// page at most once per key it writes).
    pub fn in_order(increments: &[Increment]) -> bool {
        increments.windows(2).all(|w| {
            let scope = match (&w[0].scope, &w[1].scope) {
                // A batch's increments of one scope share its name.
                (Scope::Page(a), Scope::Page(b)) if Arc::ptr_eq(a, b) => Ordering::Equal,
                (a, b) => a.cmp(b),
            };
            scope.then(w[0].period.cmp(&w[1].period)) == Ordering::Less
        })
    }

    /// `increments` put in that order, the hits of a repeated scope and
    /// period summed (the first one's expiry kept).
    pub fn into_order(mut increments: Vec<Increment>) -> Vec<Increment> {
        increments.sort_by(|a, b| (&a.scope, a.period).cmp(&(&b.scope, b.period)));
        let mut merged: Vec<Increment> = Vec::with_capacity(increments.len());
        for inc in increments {
            match merged.last_mut() {
                Some(last) if last.scope == inc.scope && last.period == inc.period => {
                    last.hits = last.hits.saturating_add(inc.hits);
                }
                _ => merged.push(inc),
            }
        }
        merged
    }
}

/// The identity of a batch: a producer (one luot process, stable across
/// restarts) and its per-site sequence number. A store applies a batch only
/// if `seq` is above the producer's watermark for the site, and advances the
/// watermark in the same atomic step (exactly once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchId {
    pub producer: Arc<str>,
    pub seq: u64,
}

/// Everything one flush changes for one site, applied all or nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteBatch {
    pub site: Arc<str>,
    pub id: BatchId,
    pub increments: Vec<Increment>,
    /// Visitors seen, for the distinct counts. Unions are idempotent, so
    /// these need no exactly-once care; the write-ahead file does not keep
    /// them (a replayed batch may lack them: a visitor then counts again at
    /// their next hit).
    pub visitors: Vec<VisitorDelta>,
    /// The breakdown counters this batch increases (where readers came
    /// from, on what), applied with the increments, all or nothing, and
    /// exactly once with them. Sorted by scope, dimension, day and value,
    /// each once.
    pub breakdowns: Vec<BreakdownIncrement>,
    /// How many distinct values a breakdown counter may hold; a store puts
    /// a value beyond them in [`OTHER`].
    pub bounds: ValueBounds,
    /// Page titles seen in this batch's interval, the last one per page,
    /// each page once: a store keeps the last title of each page (like the
    /// page's total, without expiry), replacing the one it had.
    pub titles: Vec<(Arc<str>, Arc<str>)>,
    /// The Unix minute the flush that froze this batch ran, to which the
    /// rolling windows ([`Window`]) attribute its page hits; `None` for a
    /// batch that is not reading happening now (an import of history).
    pub minute: Option<i64>,
}

/// A rolling window of "most read", ending now: the page hits of the
/// batches applied in its buckets ([`Window::bucket_secs`] wide, the last
/// [`Window::buckets`] of them, the current one included). A batch's hits
/// fall in the bucket of its [`SiteBatch::minute`], so a window is exact
/// to one flush interval at its leading edge and to one bucket at its
/// trailing edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    /// The last hour, in minute buckets.
    Hour,
    /// The last 24 hours, in hour buckets.
    Day,
}

impl Window {
    /// Every window, in storage order.
    pub const ALL: [Window; 2] = [Window::Hour, Window::Day];

    /// The name in storage and in the API (`period=1h`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "1h",
            Window::Day => "24h",
        }
    }

    /// The window called `name`, if any.
    pub fn from_name(name: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.as_str() == name)
    }

    /// How wide one bucket is, in seconds.
    pub const fn bucket_secs(self) -> i64 {
        match self {
            Window::Hour => 60,
            Window::Day => 3_600,
        }
    }

    /// How many buckets the window holds.
    pub const fn buckets(self) -> i64 {
        match self {
            Window::Hour => 60,
            Window::Day => 24,
        }
    }

    /// The bucket Unix minute `minute` falls in.
    pub const fn bucket_of(self, minute: i64) -> i64 {
        (minute * 60).div_euclid(self.bucket_secs())
    }
}

/// A breakdown dimension: one question about a hit, with exactly one
/// answer (a value) per counted hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    Channel,
    Source,
    UtmSource,
    UtmMedium,
    UtmCampaign,
    Browser,
    Os,
    Device,
    Country,
}

impl Dimension {
    /// Every dimension, in storage order.
    pub const ALL: [Dimension; 9] = [
        Dimension::Channel,
        Dimension::Source,
        Dimension::UtmSource,
        Dimension::UtmMedium,
        Dimension::UtmCampaign,
        Dimension::Browser,
        Dimension::Os,
        Dimension::Device,
        Dimension::Country,
    ];

    /// The name in storage, the API (`by=`) and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Dimension::Channel => "channel",
            Dimension::Source => "source",
            Dimension::UtmSource => "utm_source",
            Dimension::UtmMedium => "utm_medium",
            Dimension::UtmCampaign => "utm_campaign",
            Dimension::Browser => "browser",
            Dimension::Os => "os",
            Dimension::Device => "device",
            Dimension::Country => "country",
        }
    }

    /// The dimension called `name`, if any.
    pub fn from_name(name: &str) -> Option<Dimension> {
        Dimension::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// Whether pages keep this dimension too (an editor asks where one
    /// article's readers came from); the rest are kept for the site only.
    pub const fn per_page(self) -> bool {
        matches!(self, Dimension::Channel | Dimension::Source)
    }

    /// The position in [`Dimension::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// The value a hit takes when its counter already holds as many distinct
/// values as [`ValueBounds`] allow.
pub const OTHER: &str = "(other)";
/// The value of hits counted without dimensions (before they existed, or
/// imported as plain totals): never stored, the difference between a
/// period's hits and the sum of its stored values.
pub const UNKNOWN: &str = "(unknown)";

/// How many distinct values one breakdown counter (a dimension on one
/// local day) may hold, for the site and for each page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueBounds {
    pub site: u32,
    pub page: u32,
}

impl Default for ValueBounds {
    fn default() -> Self {
        ValueBounds {
            site: 1_000,
            page: 50,
        }
    }
}

/// One breakdown counter increase inside a batch: `hits` more for `value`
/// of `dimension` on local day `day`, for the site or one page (only
/// [`Dimension::per_page`] ones).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakdownIncrement {
    pub scope: Scope,
    pub dimension: Dimension,
    pub day: Date,
    pub value: Arc<str>,
    pub hits: u64,
    /// As [`Increment::expires_at`]: the day counter's retention (site or
    /// page days). Past it the increment is skipped, as the day's
    /// increment is.
    pub expires_at: Option<Timestamp>,
}

impl BreakdownIncrement {
    fn order_key(&self) -> (&Scope, Dimension, Date, &str) {
        (&self.scope, self.dimension, self.day, &self.value)
    }

    /// Whether `breakdowns` are in the order a batch carries them (by
    /// scope, dimension, day and value, each once): the stores apply a
    /// counter's increments as one run.
    pub fn in_order(breakdowns: &[BreakdownIncrement]) -> bool {
        breakdowns
            .windows(2)
            .all(|w| w[0].order_key() < w[1].order_key())
    }

    /// `breakdowns` put in that order, the hits of a repeated counter and
    /// value summed (the first one's expiry kept).
    pub fn into_order(mut breakdowns: Vec<BreakdownIncrement>) -> Vec<BreakdownIncrement> {
        breakdowns.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        let mut merged: Vec<BreakdownIncrement> = Vec::with_capacity(breakdowns.len());
        for b in breakdowns {
            match merged.last_mut() {
                Some(last) if last.order_key() == b.order_key() => {
                    last.hits = last.hits.saturating_add(b.hits);
                }
                _ => merged.push(b),
            }
        }
        merged
    }
}

/// A breakdown as read: the scope's hits over the asked days and the
/// stored values' hits summed over them, read in one snapshot, so
/// `hits - sum(values)` is what was counted without dimensions
/// ([`UNKNOWN`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BreakdownReading {
    pub hits: u64,
    /// Each value once, in no particular order.
    pub values: Vec<(String, u64)>,
}

/// A distinct-count sketch kept by a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SketchKey {
    /// Visitors seen in one minute (Unix minute), for `online`.
    Minute(i64),
    /// Visitors of one local day.
    Day(Date),
    /// Visitors ever.
    All,
}

impl fmt::Display for SketchKey {
    /// The storage name: `o:29496000`, `d:2026-11-27`, `t`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SketchKey::Minute(m) => write!(f, "o:{m}"),
            SketchKey::Day(d) => write!(f, "d:{d}"),
            SketchKey::All => f.write_str("t"),
        }
    }
}

/// A page's readers to share: the page and its `(visitor, Unix minute)`
/// pairs new since the last flush.
pub type PageReaders = (Arc<str>, Vec<(u64, i64)>);

/// The visitors one batch adds to some sketches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VisitorDelta {
    /// Each sketch to add to, with when it may be forgotten.
    pub keys: Vec<(SketchKey, Option<Timestamp>)>,
    pub members: Members,
}

/// Visitors as a store receives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Members {
    /// The visitor ids themselves (few).
    Exact(Vec<u64>),
    /// HyperLogLog registers (many), in Redis's layout and hashing.
    Registers(Vec<u8>),
}

/// What applying a batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Applied now; `late` increments were skipped because their period had
    /// already expired (their hits still reached the total).
    Fresh { late: u64 },
    /// Refused: the watermark shows it was applied before.
    Duplicate,
}

/// The answer to a read: the values of the asked period keys, in order, and
/// the asking producer's watermark for the site, read in the same snapshot so
/// the caller knows exactly which of its batches the values include.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    pub values: Vec<u64>,
    pub watermark: u64,
    /// The site's record day as the store keeps it, read in the same
    /// snapshot: filled by reads of [`Scope::Site`] (and so by
    /// [`Store::read_site`]), `None` for a page or before any hit.
    pub record: Option<Record>,
}

// ---- record day (issue 25 §7) ----

/// A site's best day: the most hits counted on one local day, and that
/// day. Stores keep it beside the site's counters and raise it inside a
/// batch's atomic apply, from the day counters the batch increased (an
/// imported history's days included), so it never falls and a repeated
/// batch, refused by the watermark, changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Record {
    pub hits: u64,
    /// The local day, `YYYY-MM-DD` in JSON.
    pub date: Date,
}

impl Record {
    /// Whether `self` replaces `kept` as the record: more hits, or as
    /// many on an earlier day (a tie keeps the earlier date, the first day
    /// that reached the figure, whatever order the days were counted in).
    pub fn beats(&self, kept: Option<&Record>) -> bool {
        match kept {
            None => self.hits > 0,
            Some(k) => self.hits > k.hits || (self.hits == k.hits && self.date < k.date),
        }
    }
}

// ---- end record day ----

/// Why a store operation failed. Retriable or not is decided in one place,
/// [`StoreError::is_retriable`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store timed out")]
    Timeout,
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    #[error("store refused the request: {0}")]
    Refused(String),
}

impl StoreError {
    /// Whether trying the same operation again may succeed. A batch whose
    /// outcome is unknown is always retried unchanged; the watermark makes
    /// that safe.
    pub fn is_retriable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout)
    }

    /// A short, fixed label for metrics (never the error text).
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Timeout => "timeout",
            StoreError::Corrupt(_) => "corrupt",
            StoreError::Refused(_) => "refused",
        }
    }
}

/// Most pages [`Store::top`] lists (the top route's largest `limit`).
pub const TOP_KEPT: usize = 100;

/// The store interface every backend implements.
pub trait Store: Send + Sync + 'static {
    /// Applies a batch atomically and at most once (see [`BatchId`]).
    ///
    /// # Errors
    /// A [`StoreError`]; after a timeout the batch may or may not have been
    /// applied, and the caller retries it unchanged.
    fn apply(&self, batch: &SiteBatch) -> impl Future<Output = Result<Applied, StoreError>> + Send;

    /// [`Store::apply`] for a caller that shares the batch (the flusher
    /// keeps it until the store's reading covers it): a backend that applies
    /// it on another thread takes the batch along rather than a copy, which
    /// for a flush of 100,000 pages would be some 20 MB of increments.
    ///
    /// # Errors
    /// As [`Store::apply`].
    fn apply_shared(
        &self,
        batch: Arc<SiteBatch>,
    ) -> impl Future<Output = Result<Applied, StoreError>> + Send {
        async move { self.apply(&batch).await }
    }

    /// Reads the given period keys of one scope of a site, and `producer`'s
    /// watermark for that site, in one consistent snapshot. Missing keys read
    /// as zero.
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot answer.
    fn read(
        &self,
        site: &str,
        scope: &Scope,
        periods: &[PeriodKey],
        producer: &str,
    ) -> impl Future<Output = Result<Reading, StoreError>> + Send;

    /// [`Store::read`] of several pages of a site for the same periods, in
    /// the order given; each reading is a consistent snapshot with its
    /// watermark. A store may answer in one round trip.
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot answer.
    fn read_pages(
        &self,
        site: &str,
        pages: &[Arc<str>],
        periods: &[PeriodKey],
        producer: &str,
    ) -> impl Future<Output = Result<Vec<Reading>, StoreError>> + Send {
        async move {
            let mut readings = Vec::with_capacity(pages.len());
            for page in pages {
                let scope = Scope::Page(Arc::clone(page));
                readings.push(self.read(site, &scope, periods, producer).await?);
            }
            Ok(readings)
        }
    }

    /// Returns the secret called `name`, creating it from `candidate` if it
    /// does not exist yet (first writer wins, so all instances agree).
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot answer.
    fn secret(
        &self,
        name: &str,
        candidate: [u8; 32],
    ) -> impl Future<Output = Result<[u8; 32], StoreError>> + Send;

    /// The number of distinct visitors in the union of `keys` of a site, or
    /// `None` when this store does not keep such sketches (the caller then
    /// uses what this instance saw).
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot answer.
    fn distinct(
        &self,
        site: &str,
        keys: &[SketchKey],
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// Succeeds when the store answers (readiness).
    ///
    /// # Errors
    /// A [`StoreError`] when it does not.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Adds the readers of pages, per Unix minute (`(visitor, minute)`), to
    /// the store's page-minute sketches, which expire `keep` after their
    /// minute ends: a page's `online` shared across instances. A set union,
    /// so sending it twice changes nothing and it needs no watermark. A
    /// store that does not share (embedded: one instance) keeps nothing.
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot answer.
    fn add_page_readers(
        &self,
        site: &str,
        readers: &[PageReaders],
        keep: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = (site, readers, keep);
        async { Ok(()) }
    }

    /// Distinct readers of each of `pages` over the Unix minutes
    /// `first..=last`, across instances, in order; `None` from a store that
    /// does not share them.
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot answer.
    fn page_readers(
        &self,
        site: &str,
        pages: &[Arc<str>],
        first: i64,
        last: i64,
    ) -> impl Future<Output = Result<Option<Vec<u64>>, StoreError>> + Send {
        let _ = (site, pages, first, last);
        async { Ok(None) }
    }

    /// Shares this instance's ranking of pages by readers now (`(page,
    /// readers)`, largest first) for Unix `minute`, and answers the pages
    /// any instance ranked in this minute or the last, at most `limit`, for
    /// a store that shares them; `None` from one that does not.
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot answer.
    fn share_ranking(
        &self,
        site: &str,
        minute: i64,
        ranked: &[(Arc<str>, u64)],
        limit: usize,
    ) -> impl Future<Output = Result<Option<Vec<String>>, StoreError>> + Send {
        let _ = (site, minute, ranked, limit);
        async { Ok(None) }
    }

    /// True when this instance is the store's only writer: then nothing but
    /// this instance's batches changes the store, so a page reading rolled
    /// forward over them stays exact and readers may keep it longer. False
    /// unless a store knows it: a shared store's readings must stay short.
    fn sole_writer(&self) -> bool {
        false
    }

    /// The `limit` most-read pages of a site in `period`, most read first
    /// (ties by page), at most [`TOP_KEPT`]. Pages whose counter for the
    /// period has expired are not listed. Costs O(`limit` · log pages) or
    /// less, never a scan of the site's pages.
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot answer.
    fn top(
        &self,
        site: &str,
        period: PeriodKey,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(String, u64)>, StoreError>> + Send;

    /// The `limit` most-read pages of a site in the rolling `window`
    /// ending in Unix minute `minute` (the caller's clock, so tests can
    /// move it), most read first, at most [`TOP_KEPT`]. Answers from a
    /// ranking kept at each apply; only a site with no batch in the last
    /// two buckets is summed from its buckets (few, as the site is quiet).
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot answer.
    fn top_window(
        &self,
        site: &str,
        window: Window,
        minute: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(String, u64)>, StoreError>> + Send;

    /// The breakdown of `scope` by `dimension` over the local `days` (at
    /// most a retention's worth), with the scope's day hits over the same
    /// days, in one snapshot. Days whose counters expired read as nothing.
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot answer.
    fn breakdown(
        &self,
        site: &str,
        scope: &Scope,
        dimension: Dimension,
        days: &[Date],
    ) -> impl Future<Output = Result<BreakdownReading, StoreError>> + Send {
        let _ = (site, scope, dimension, days);
        async { Err(StoreError::Refused("breakdowns are not kept yet".into())) }
    }

    /// The kept title of each of `pages` of a site, in order (`None`: no
    /// title was ever seen).
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot answer.
    fn titles(
        &self,
        site: &str,
        pages: &[Arc<str>],
    ) -> impl Future<Output = Result<Vec<Option<String>>, StoreError>> + Send {
        let _ = site;
        let none = vec![None; pages.len()];
        async move { Ok(none) }
    }

    /// A site's refresh: [`Store::read`] of the site scope and
    /// [`Store::distinct`] of each group of sketches (online minutes, the
    /// days of this week…), which a store may answer in one round trip.
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot answer.
    fn read_site(
        &self,
        site: &str,
        periods: &[PeriodKey],
        producer: &str,
        groups: &[Vec<SketchKey>],
    ) -> impl Future<Output = Result<(Reading, Vec<Option<u64>>), StoreError>> + Send {
        async move {
            let reading = self.read(site, &Scope::Site, periods, producer).await?;
            let mut counts = Vec::with_capacity(groups.len());
            for group in groups {
                counts.push(self.distinct(site, group).await?);
            }
            Ok((reading, counts))
        }
    }
}

/// The configured store, whichever it is. An enum rather than a trait
/// object because the trait's methods are `async`.
#[derive(Clone)]
pub enum AnyStore {
    Embedded(EmbeddedStore),
    Redis(RedisStore),
}

impl Store for AnyStore {
    async fn apply(&self, batch: &SiteBatch) -> Result<Applied, StoreError> {
        match self {
            AnyStore::Embedded(s) => s.apply(batch).await,
            AnyStore::Redis(s) => s.apply(batch).await,
        }
    }

    async fn apply_shared(&self, batch: Arc<SiteBatch>) -> Result<Applied, StoreError> {
        match self {
            AnyStore::Embedded(s) => s.apply_shared(batch).await,
            AnyStore::Redis(s) => s.apply_shared(batch).await,
        }
    }

    async fn read(
        &self,
        site: &str,
        scope: &Scope,
        periods: &[PeriodKey],
        producer: &str,
    ) -> Result<Reading, StoreError> {
        match self {
            AnyStore::Embedded(s) => s.read(site, scope, periods, producer).await,
            AnyStore::Redis(s) => s.read(site, scope, periods, producer).await,
        }
    }

    async fn read_pages(
        &self,
        site: &str,
        pages: &[Arc<str>],
        periods: &[PeriodKey],
        producer: &str,
    ) -> Result<Vec<Reading>, StoreError> {
        match self {
            AnyStore::Embedded(s) => s.read_pages(site, pages, periods, producer).await,
            AnyStore::Redis(s) => s.read_pages(site, pages, periods, producer).await,
        }
    }

    async fn secret(&self, name: &str, candidate: [u8; 32]) -> Result<[u8; 32], StoreError> {
        match self {
            AnyStore::Embedded(s) => s.secret(name, candidate).await,
            AnyStore::Redis(s) => s.secret(name, candidate).await,
        }
    }

    async fn distinct(&self, site: &str, keys: &[SketchKey]) -> Result<Option<u64>, StoreError> {
        match self {
            AnyStore::Embedded(s) => s.distinct(site, keys).await,
            AnyStore::Redis(s) => s.distinct(site, keys).await,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match self {
            AnyStore::Embedded(s) => s.ping().await,
            AnyStore::Redis(s) => s.ping().await,
        }
    }

    async fn add_page_readers(
        &self,
        site: &str,
        readers: &[PageReaders],
        keep: Duration,
    ) -> Result<(), StoreError> {
        match self {
            AnyStore::Embedded(s) => s.add_page_readers(site, readers, keep).await,
            AnyStore::Redis(s) => s.add_page_readers(site, readers, keep).await,
        }
    }

    async fn page_readers(
        &self,
        site: &str,
        pages: &[Arc<str>],
        first: i64,
        last: i64,
    ) -> Result<Option<Vec<u64>>, StoreError> {
        match self {
            AnyStore::Embedded(s) => s.page_readers(site, pages, first, last).await,
            AnyStore::Redis(s) => s.page_readers(site, pages, first, last).await,
        }
    }

    async fn share_ranking(
        &self,
        site: &str,
        minute: i64,
        ranked: &[(Arc<str>, u64)],
        limit: usize,
    ) -> Result<Option<Vec<String>>, StoreError> {
        match self {
            AnyStore::Embedded(s) => s.share_ranking(site, minute, ranked, limit).await,
            AnyStore::Redis(s) => s.share_ranking(site, minute, ranked, limit).await,
        }
    }

    fn sole_writer(&self) -> bool {
        match self {
            AnyStore::Embedded(s) => s.sole_writer(),
            AnyStore::Redis(s) => s.sole_writer(),
        }
    }

    async fn top(
        &self,
        site: &str,
        period: PeriodKey,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        match self {
            AnyStore::Embedded(s) => s.top(site, period, limit).await,
            AnyStore::Redis(s) => s.top(site, period, limit).await,
        }
    }

    async fn top_window(
        &self,
        site: &str,
        window: Window,
        minute: i64,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        match self {
            AnyStore::Embedded(s) => s.top_window(site, window, minute, limit).await,
            AnyStore::Redis(s) => s.top_window(site, window, minute, limit).await,
        }
    }

    async fn breakdown(
        &self,
        site: &str,
        scope: &Scope,
        dimension: Dimension,
        days: &[Date],
    ) -> Result<BreakdownReading, StoreError> {
        match self {
            AnyStore::Embedded(s) => s.breakdown(site, scope, dimension, days).await,
            AnyStore::Redis(s) => s.breakdown(site, scope, dimension, days).await,
        }
    }

    async fn titles(
        &self,
        site: &str,
        pages: &[Arc<str>],
    ) -> Result<Vec<Option<String>>, StoreError> {
        match self {
            AnyStore::Embedded(s) => s.titles(site, pages).await,
            AnyStore::Redis(s) => s.titles(site, pages).await,
        }
    }

    async fn read_site(
        &self,
        site: &str,
        periods: &[PeriodKey],
        producer: &str,
        groups: &[Vec<SketchKey>],
    ) -> Result<(Reading, Vec<Option<u64>>), StoreError> {
        match self {
            AnyStore::Embedded(s) => s.read_site(site, periods, producer, groups).await,
            AnyStore::Redis(s) => s.read_site(site, periods, producer, groups).await,
        }
    }
}

impl AnyStore {
    /// A fixed label naming the backend, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AnyStore::Embedded(_) => "embedded",
            AnyStore::Redis(s) if s.is_cluster() => "redis-cluster",
            AnyStore::Redis(_) => "redis",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_store_error_kind_is_a_label_the_metrics_register() {
        for e in [
            StoreError::Unavailable(String::new()),
            StoreError::Timeout,
            StoreError::Corrupt(String::new()),
            StoreError::Refused(String::new()),
        ] {
            assert!(
                crate::metrics::STORE_ERROR_KINDS.contains(&e.kind()),
                "{} is not in metrics::STORE_ERROR_KINDS",
                e.kind()
            );
        }
    }

    #[test]
    fn period_keys_have_stable_storage_names() {
        let d = Date::constant(2026, 11, 27);
        assert_eq!(PeriodKey::Day(d).to_string(), "d:2026-11-27");
        assert_eq!(
            PeriodKey::Week(Date::constant(2026, 11, 23)).to_string(),
            "w:2026-11-23"
        );
        assert_eq!(
            PeriodKey::Month(Date::constant(2026, 11, 1)).to_string(),
            "m:2026-11"
        );
        assert_eq!(PeriodKey::Total.to_string(), "t");
    }

    #[test]
    fn dimension_names_are_the_overflow_metric_labels() {
        let names = Dimension::ALL.map(Dimension::as_str);
        assert_eq!(names, crate::metrics::DIMENSIONS);
        for (i, d) in Dimension::ALL.into_iter().enumerate() {
            assert_eq!((d.index(), Dimension::from_name(d.as_str())), (i, Some(d)));
        }
    }

    #[test]
    fn breakdowns_are_put_in_order_and_merged() {
        let day = Date::constant(2026, 11, 27);
        let b = |scope: Scope, dimension, value: &str, hits| BreakdownIncrement {
            scope,
            dimension,
            day,
            value: Arc::from(value),
            hits,
            expires_at: None,
        };
        let page = || Scope::Page(Arc::from("/a"));
        let mixed = vec![
            b(page(), Dimension::Channel, "direct", 1),
            b(Scope::Site, Dimension::Source, "Google", 2),
            b(Scope::Site, Dimension::Channel, "search", 3),
            b(Scope::Site, Dimension::Source, "Google", 4),
        ];
        assert!(!BreakdownIncrement::in_order(&mixed));
        let ordered = BreakdownIncrement::into_order(mixed);
        assert!(BreakdownIncrement::in_order(&ordered));
        let shape: Vec<(Scope, Dimension, &str, u64)> = ordered
            .iter()
            .map(|b| (b.scope.clone(), b.dimension, &*b.value, b.hits))
            .collect();
        assert_eq!(
            shape,
            vec![
                (Scope::Site, Dimension::Channel, "search", 3),
                (Scope::Site, Dimension::Source, "Google", 6),
                (page(), Dimension::Channel, "direct", 1),
            ]
        );
    }

    #[test]
    fn only_unknown_outcomes_are_retriable() {
        assert!(StoreError::Timeout.is_retriable());
        assert!(StoreError::Unavailable("down".into()).is_retriable());
        assert!(!StoreError::Corrupt("bad".into()).is_retriable());
        assert!(!StoreError::Refused("no".into()).is_retriable());
    }
}
