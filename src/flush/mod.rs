//! The flusher: every `flush_interval`, for each site, moves the pending
//! deltas into the ledger, freezes them into a batch with a sequence number,
//! applies the batch to the store and refreshes the site's reading.
//!
//! Invariant: only this module writes to a store. A site has at most one
//! batch in flight; an unacknowledged batch is retried unchanged (the
//! store's watermark makes a retry that finds it applied a no-op), and new
//! deltas merge into the next one meanwhile, so memory grows with distinct
//! keys, never with hits, while the store is down.
//!
//! Owns `Flusher`, `Backoff`, [`wal`] (the write-ahead file) and [`import`]
//! (the import and export wire types and the flusher's import queue). May
//! use `site`, `count`, `store` and the bottom; never `http`, `ingest` or
//! `read`.

pub mod import;
pub mod wal;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};

use crate::config::Retention;
use crate::count::breakdown::DimDelta;
use crate::count::ledger::{Stored, Visitors, read_keys};
use crate::count::page_online::{RANKED, Reading};
use crate::count::tally::Delta;
use crate::flush::wal::Wal;
use crate::metrics::FlushMetrics;
use crate::period::{SiteCalendar, date_of_number, month_of, week_of};
use crate::site::{Site, Sites};
use crate::sketch::{HLL_REGISTERS, SketchUnion};
use crate::store::{
    Applied, BatchId, BreakdownIncrement, Increment, Members, PeriodKey, Scope, SiteBatch,
    SketchKey, Store, StoreError, ValueBounds, VisitorDelta,
};

/// Shortest pause after a store error.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause after repeated store errors.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Exponential backoff with full jitter between [`BACKOFF_MIN`] and
/// [`BACKOFF_MAX`].
#[derive(Debug, Clone)]
pub struct Backoff {
    failures: u32,
    until: Option<Instant>,
}

impl Backoff {
    pub fn new() -> Self {
        Backoff {
            failures: 0,
            until: None,
        }
    }

    /// Whether an attempt may be made now.
    pub fn ready(&self, now: Instant) -> bool {
        self.until.is_none_or(|t| now >= t)
    }

    /// Records a failure and returns the pause before the next attempt.
    pub fn fail(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ceiling = BACKOFF_MIN
            .saturating_mul(1u32 << self.failures.min(16))
            .min(BACKOFF_MAX);
        let span = ceiling.saturating_sub(BACKOFF_MIN).as_millis() as u64;
        let pause = BACKOFF_MIN + Duration::from_millis(jitter(span));
        self.until = Some(now + pause);
        pause
    }

    /// Records a success.
    pub fn succeed(&mut self) {
        self.failures = 0;
        self.until = None;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

fn jitter(span_ms: u64) -> u64 {
    if span_ms == 0 {
        return 0;
    }
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return span_ms / 2;
    }
    u64::from_le_bytes(bytes) % (span_ms + 1)
}

/// Expands day deltas into the counters they change: each day's hits go to
/// its day, its week, its month and the total, for the site or the page.
/// Retention decides each counter's expiry.
pub fn build_batch(
    site: &Arc<str>,
    producer: &Arc<str>,
    seq: u64,
    (deltas, dims): (&[Delta], &[DimDelta]),
    calendar: &SiteCalendar,
    retention: &Retention,
) -> SiteBatch {
    // Deltas grouped by scope, so each scope is expanded on its own with a
    // handful of periods and increments come out sorted by scope. The
    // ledger hands them over sorted; anything else is sorted here.
    let unsorted;
    let deltas = if deltas.is_sorted_by(|a, b| a.page <= b.page) {
        deltas
    } else {
        unsorted = {
            let mut v = deltas.to_vec();
            v.sort_by(|a, b| a.page.cmp(&b.page));
            v
        };
        &unsorted[..]
    };
    // Day bounds need the time zone database: work them out once per day.
    let mut days: Vec<(u32, DayInfo)> = Vec::new();
    // Four counters per scope and day (day, week, month, total); a scope
    // with more than one day shares its week, month and total.
    let mut increments = Vec::with_capacity(deltas.len() * 4);
    let mut periods: Vec<(PeriodKey, u64, Option<Timestamp>)> = Vec::with_capacity(8);
    for run in deltas.chunk_by(|a, b| a.page == b.page) {
        let scope = run[0].page.clone().map_or(Scope::Site, Scope::Page);
        let day_keep = match scope {
            Scope::Site => retention.site_days,
            Scope::Page(_) => retention.page_days,
        };
        periods.clear();
        for d in run {
            let info = match days.iter().find(|(n, _)| *n == d.day) {
                Some((_, info)) => *info,
                None => {
                    let info = DayInfo::of(d.day, calendar);
                    days.push((d.day, info));
                    info
                }
            };
            for (period, expires_at) in [
                (PeriodKey::Day(info.day), Some(plus(info.day_end, day_keep))),
                (
                    PeriodKey::Week(info.week),
                    Some(plus(info.week_end, retention.weeks)),
                ),
                (PeriodKey::Month(info.month), None),
                (PeriodKey::Total, None),
            ] {
                match periods.iter_mut().find(|p| p.0 == period) {
                    Some(p) => p.1 += d.hits,
                    None => periods.push((period, d.hits, expires_at)),
                }
            }
        }
        periods.sort_by_key(|p| p.0);
        increments.extend(periods.iter().map(|&(period, hits, expires_at)| Increment {
            scope: scope.clone(),
            period,
            hits,
            expires_at,
        }));
        crate::background::pace();
    }
    SiteBatch {
        site: Arc::clone(site),
        id: BatchId {
            producer: Arc::clone(producer),
            seq,
        },
        increments,
        visitors: Vec::new(),
        breakdowns: breakdown_increments(dims, calendar, retention),
        bounds: Default::default(),
        titles: Vec::new(),
        minute: None,
    }
}

/// Takes a site's counted hits and breakdowns into its ledger. The
/// breakdowns are taken first, outside the lock (taking them paces): a hit
/// counts in the tally before its breakdown, so every breakdown taken has
/// its hit taken too, and a period's values never exceed its hits.
fn take_counts(site: &Site) {
    let today = site.clock.day_at(Timestamp::now().as_second());
    let mut dims = Vec::new();
    site.breakdown.take(today, &mut dims);
    let mut titles = Vec::new();
    site.titles.take(&mut titles);
    let mut ledger = site.ledger.write();
    ledger.take_from(&site.tally);
    ledger.add_dims(&mut dims);
    ledger.add_titles(&mut titles);
}

/// How a site's batches are built: [`build_batch`] with the site's value
/// bounds, stamped with the minute it is built in (the rolling windows
/// count its page hits there).
fn builder<'a>(
    site: &'a Site,
    producer: &'a Arc<str>,
    retention: &'a Retention,
) -> impl FnOnce(u64, &[Delta], &[DimDelta]) -> SiteBatch + 'a {
    move |seq, deltas, dims| {
        let mut batch = build_batch(
            &site.id,
            producer,
            seq,
            (deltas, dims),
            site.calendar(),
            retention,
        );
        batch.bounds = ValueBounds {
            site: site.counting.max_values,
            page: site.counting.max_page_values,
        };
        batch.minute = Some(Timestamp::now().as_second().div_euclid(60));
        batch
    }
}

/// The breakdown deltas as a batch's increments: summed per scope,
/// dimension, day and value, in that order, each expiring with its day
/// counter (site or page retention).
fn breakdown_increments(
    dims: &[DimDelta],
    calendar: &SiteCalendar,
    retention: &Retention,
) -> Vec<BreakdownIncrement> {
    let mut sorted: Vec<&DimDelta> = dims.iter().collect();
    sorted.sort_unstable_by(|a, b| {
        (a.page.as_deref(), a.dimension, a.day, &*a.value).cmp(&(
            b.page.as_deref(),
            b.dimension,
            b.day,
            &*b.value,
        ))
    });
    let mut days: Vec<(u32, (jiff::civil::Date, Timestamp))> = Vec::new();
    let mut out: Vec<BreakdownIncrement> = Vec::with_capacity(sorted.len());
    for (i, d) in sorted.into_iter().enumerate() {
        if let Some(last) = out.last_mut()
            && last.scope.as_key() == d.page.as_deref().unwrap_or("")
            && last.dimension == d.dimension
            && last.day == date_of_number(d.day)
            && *last.value == *d.value
        {
            last.hits = last.hits.saturating_add(d.hits);
            continue;
        }
        let (day, day_end) = match days.iter().find(|(n, _)| *n == d.day) {
            Some((_, info)) => *info,
            None => {
                let day = date_of_number(d.day);
                let info = (day, calendar.day_bounds(day).1);
                days.push((d.day, info));
                info
            }
        };
        let (scope, keep) = match &d.page {
            None => (Scope::Site, retention.site_days),
            Some(p) => (Scope::Page(Arc::clone(p)), retention.page_days),
        };
        out.push(BreakdownIncrement {
            scope,
            dimension: d.dimension,
            day,
            value: Arc::clone(&d.value),
            hits: d.hits,
            expires_at: Some(plus(day_end, keep)),
        });
        if i % 256 == 255 {
            crate::background::pace();
        }
    }
    out
}

/// What a batch needs to know about one local day.
#[derive(Clone, Copy)]
struct DayInfo {
    day: jiff::civil::Date,
    day_end: Timestamp,
    week: jiff::civil::Date,
    week_end: Timestamp,
    month: jiff::civil::Date,
}

impl DayInfo {
    fn of(n: u32, calendar: &SiteCalendar) -> Self {
        let day = date_of_number(n);
        let week = week_of(day, calendar.week_start());
        let last = week.checked_add(jiff::Span::new().days(6)).unwrap_or(week);
        DayInfo {
            day,
            day_end: calendar.day_bounds(day).1,
            week,
            week_end: calendar.day_bounds(last).1,
            month: month_of(day),
        }
    }
}

/// The instant the week starting on `week` ends, in the site's zone.
pub fn week_end(week: jiff::civil::Date, calendar: &SiteCalendar) -> Timestamp {
    let last = week.checked_add(jiff::Span::new().days(6)).unwrap_or(week);
    calendar.day_bounds(last).1
}

/// `at` plus a retention, saturating.
pub fn plus(at: Timestamp, keep: Duration) -> Timestamp {
    let keep = SignedDuration::try_from(keep).unwrap_or(SignedDuration::MAX);
    at.checked_add(keep).unwrap_or(Timestamp::MAX)
}

/// How often unique-visitor figures are re-read (a month is a union of up
/// to 31 day sketches: cheap, but not free at every flush).
pub const VISITOR_REFRESH: Duration = Duration::from_secs(5);

/// Most (scope, day) keys in one batch: bounds what a flush holds in memory
/// (a batch keeps four increments per key, ~220 bytes) whatever the number
/// of pages touched in an interval.
pub const MAX_BATCH_KEYS: usize = 16_384;

/// Most batches one site sends in one pass; what is left waits for the
/// next pass (the open deltas are bounded by the site's pages).
const MAX_BATCHES_PER_PASS: usize = 32;

/// Most pages whose readers across instances are read back a pass (one
/// `PFCOUNT` each, pipelined): the ranked pages and the newly read come
/// first, so the ranking and the pages being read now stay shared.
const PAGE_ONLINE_READS: usize = 512;

/// The sketch groups whose union counts give today's, yesterday's, this
/// week's, this month's and all-time unique visitors at local day `today`.
pub fn visitor_groups(today: jiff::civil::Date, calendar: &SiteCalendar) -> [Vec<SketchKey>; 5] {
    let days_from = |first: jiff::civil::Date| -> Vec<SketchKey> {
        let mut days = Vec::new();
        let mut d = first;
        while d <= today && days.len() < 32 {
            days.push(SketchKey::Day(d));
            match d.tomorrow() {
                Ok(next) => d = next,
                Err(_) => break,
            }
        }
        days
    };
    [
        vec![SketchKey::Day(today)],
        today
            .yesterday()
            .map(|y| vec![SketchKey::Day(y)])
            .unwrap_or_default(),
        days_from(week_of(today, calendar.week_start())),
        days_from(month_of(today)),
        vec![SketchKey::All],
    ]
}

/// Flushes every site's pending deltas to the store.
pub struct Flusher<S> {
    store: S,
    sites: Arc<Sites>,
    producer: Arc<str>,
    /// `[retention]` of the site table this pass started from (a reload
    /// swaps the table; [`Flusher::adopt_settings`] follows it).
    retention: Retention,
    /// The online window, for the expiry of per-minute sketches and for
    /// reading `online` from the store; from the table, like `retention`.
    online_window: Duration,
    /// The write-ahead file, for stores across a network.
    wal: Option<Arc<Mutex<Wal>>>,
    metrics: FlushMetrics,
    backoff: BTreeMap<Arc<str>, Backoff>,
    /// Visitors taken from each site, merged per sketch until a batch
    /// carries them (bounded by sketches, not by visitors).
    visitors: BTreeMap<Arc<str>, BTreeMap<SketchKey, SketchUnion>>,
    /// When each site's unique-visitor figures were last read.
    visitors_read: BTreeMap<Arc<str>, Instant>,
    /// Per site, the pages other instances ranked by readers now (from a
    /// store that shares rankings), counted across instances next pass.
    ranked_elsewhere: BTreeMap<Arc<str>, Vec<Arc<str>>>,
}

/// What one pass over the sites left behind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassOutcome {
    /// Sites that still hold deltas or an unacknowledged batch.
    pub pending_sites: usize,
    /// Store errors met in this pass.
    pub errors: usize,
}

impl<S: Store> Flusher<S> {
    pub fn new(store: S, sites: Arc<Sites>, producer: Arc<str>, wal: Option<Wal>) -> Self {
        let (retention, online_window) = {
            let table = sites.load();
            (table.retention.clone(), table.online_window)
        };
        Flusher {
            store,
            sites,
            producer,
            retention,
            online_window,
            wal: wal.map(|w| Arc::new(Mutex::new(w))),
            metrics: FlushMetrics::new(),
            backoff: BTreeMap::new(),
            visitors: BTreeMap::new(),
            visitors_read: BTreeMap::new(),
            ranked_elsewhere: BTreeMap::new(),
        }
    }

    /// One pass: for each site, take, freeze, apply, re-read.
    pub async fn pass(&mut self) -> PassOutcome {
        self.adopt_settings();
        let mut outcome = PassOutcome::default();
        let mut pending_keys = 0;
        for site in self.all_sites() {
            // Judged before its hits are taken: a site that a reload
            // removes while it is flushed may count hits after the take
            // (requests see the old table until the swap), and those must
            // wait for the next pass rather than go with the site.
            let retired = !self
                .sites
                .load()
                .get(&site.id)
                .is_some_and(|s| Arc::ptr_eq(&s.ledger, &site.ledger));
            let reached = self.flush_site(&site).await.is_ok();
            if !reached {
                outcome.errors += 1;
            }
            // With the store away (or backing off), readers are counted
            // here only: waiting on it again would slow the pass, and a
            // pass's length is what a crash may lose.
            let share = reached && self.backoff_for(&site).ready(Instant::now());
            self.share_page_online(&site, share).await;
            let w = site.ledger.write();
            let idle = w.is_idle();
            if !idle {
                outcome.pending_sites += 1;
            }
            pending_keys += w.pending_keys();
            drop(w);
            site.metrics.pages.set(site.tally.page_count() as f64);
            if idle && retired && !site.tally.holds_hits() {
                // A site a reload removed: everything it counted is sent.
                self.sites.forget_retired(&site.id);
            }
        }
        self.metrics.pending_keys.set(pending_keys as f64);
        if let Some(wal) = &self.wal {
            self.metrics.wal_bytes.set(wal.lock().size_bytes() as f64);
        }
        self.metrics.passes.increment(1);
        outcome
    }

    /// Takes `[retention]` and the online window from the current site
    /// table, so that a reload's values apply from the next pass on.
    fn adopt_settings(&mut self) {
        let table = self.sites.load();
        if table.retention != self.retention || table.online_window != self.online_window {
            tracing::info!(
                retention = ?table.retention,
                online_window = ?table.online_window,
                "the flusher takes the reloaded retention and online window"
            );
            self.retention = table.retention.clone();
            self.online_window = table.online_window;
        }
    }

    /// The sites to flush: the current ones and those a reload removed
    /// that may still hold hits.
    fn all_sites(&self) -> Vec<Arc<Site>> {
        let mut sites: Vec<Arc<Site>> = self.sites.snapshot().iter().cloned().collect();
        sites.extend(self.sites.retired());
        sites
    }

    /// Pages' readers (`online` per page): sends this pass's new readers
    /// to a store that shares them, reads back the counts across instances
    /// of the pages this instance tracks (at most [`PAGE_ONLINE_READS`] a
    /// pass, ranked pages first), drops the pages whose window passed,
    /// ranks the rest and notes the site's `online` for the dashboard's
    /// hour chart. A store error only leaves the local counts in use.
    async fn share_page_online(&mut self, site: &Arc<Site>, share: bool) {
        let pages = &site.page_online;
        let now = Timestamp::now();
        let secs = now.as_second();
        let minute = secs.div_euclid(60);
        let pending = pages.take_pending();
        let window = self.online_window;
        let elsewhere = self.ranked_elsewhere.remove(&site.id).unwrap_or_default();
        let shared = async {
            self.store
                .add_page_readers(&site.id, &pending, window + Duration::from_secs(120))
                .await?;
            let mut asked: Vec<Arc<str>> = elsewhere.clone();
            asked.extend(pages.ranking().iter().map(|r| Arc::clone(&r.page)));
            asked.extend(pending.iter().map(|(p, _)| Arc::clone(p)));
            asked.extend(pages.pages());
            let mut seen = std::collections::HashSet::new();
            asked.retain(|p| seen.insert(Arc::clone(p)));
            asked.truncate(PAGE_ONLINE_READS);
            let first = minute - pages.window_minutes();
            let Some(counts) = self
                .store
                .page_readers(&site.id, &asked, first, minute)
                .await?
            else {
                return Ok::<_, StoreError>(None);
            };
            let mut remote = Vec::new();
            for (page, n) in asked.iter().zip(counts) {
                if pages.tracks(page) {
                    pages.set_shared(page, secs, n);
                } else {
                    remote.push(Reading {
                        page: Arc::clone(page),
                        online: n,
                    });
                }
            }
            pages.set_remote(secs, remote);
            Ok(Some(()))
        };
        let shares = match if share { shared.await } else { Ok(None) } {
            Ok(shares) => shares.is_some(),
            Err(e) => {
                tracing::debug!(site = %site.id, error = %e, "pages' readers not shared this pass");
                false
            }
        };
        let swept = pages.sweep(secs);
        if shares {
            // This instance's ranking joins the others'; the pages they
            // rank are counted across instances at the next pass.
            let ranked: Vec<(Arc<str>, u64)> = pages
                .ranking()
                .iter()
                .map(|r| (Arc::clone(&r.page), r.online))
                .collect();
            match self
                .store
                .share_ranking(&site.id, minute, &ranked, RANKED)
                .await
            {
                Ok(Some(others)) => {
                    let others = others.into_iter().map(Arc::from).collect();
                    self.ranked_elsewhere.insert(Arc::clone(&site.id), others);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(site = %site.id, error = %e, "pages' ranking not shared this pass");
                }
            }
        }
        site.metrics.online_pages.set(swept.pages as f64);
        site.metrics
            .online_pages_refused
            .increment(pages.take_refused());
        site.online_history.note(secs, site.online_now(now));
    }

    /// Moves the visitors a site has seen into the per-sketch unions.
    fn gather_visitors(&mut self, site: &Site) {
        let Some(batcher) = &site.visitors else {
            return;
        };
        let buckets = batcher.take();
        let unions = self.visitors.entry(Arc::clone(&site.id)).or_default();
        for bucket in &buckets {
            let day = date_of_number(bucket.day);
            for key in [
                SketchKey::Minute(bucket.minute),
                SketchKey::Day(day),
                SketchKey::All,
            ] {
                unions.entry(key).or_default().add(&bucket.sketch);
            }
        }
        // Minutes that have left the online window are of no use any more.
        let now_minute = Timestamp::now().as_second().div_euclid(60);
        let window = (self.online_window.as_secs() / 60) as i64 + 1;
        unions.retain(|k, _| !matches!(k, SketchKey::Minute(m) if *m < now_minute - window));
    }

    /// The visitor deltas for a site's next batch, emptying the unions.
    fn visitor_deltas(&mut self, site: &Site) -> Vec<VisitorDelta> {
        let Some(unions) = self.visitors.get_mut(&site.id) else {
            return Vec::new();
        };
        let window = self.online_window;
        let keep_days = self.retention.site_days;
        let calendar = site.calendar();
        std::mem::take(unions)
            .into_iter()
            .map(|(key, union)| {
                let expires = match key {
                    SketchKey::Minute(m) => {
                        let end = Timestamp::from_second((m + 1) * 60).unwrap_or(Timestamp::MAX);
                        Some(plus(end, window + Duration::from_secs(120)))
                    }
                    SketchKey::Day(d) => Some(plus(calendar.day_bounds(d).1, keep_days)),
                    SketchKey::All => None,
                };
                let members = match union.exact_members() {
                    Some(m) => Members::Exact(m.collect()),
                    None => Members::Registers(union.registers().to_vec()),
                };
                VisitorDelta {
                    keys: vec![(key, expires)],
                    members,
                }
            })
            .collect()
    }

    /// Takes the site's counted hits into its ledger and its visitors
    /// into the pass's unions. While the store is away (a batch is still
    /// unanswered) the deltas that arrived since are folded into one
    /// unsent batch and kept in the write-ahead file too.
    async fn take_site(&mut self, site: &Arc<Site>) {
        take_counts(site);
        self.gather_visitors(site);
        if self.wal.is_some() {
            let folded =
                site.ledger
                    .write()
                    .fold_open(builder(site, &self.producer, &self.retention));
            if let Some(batch) = folded {
                self.log_ahead(&batch).await;
            }
        }
    }

    /// Sends one batch to the store. Applied (or refused as a duplicate):
    /// records it, rolls the site's kept readings forward over it and
    /// acknowledges it. Failed: marks the site stale and backs off; the
    /// batch stays first in the ledger's queue, to be sent again unchanged.
    async fn send_batch(
        &mut self,
        site: &Arc<Site>,
        batch: &Arc<SiteBatch>,
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        match self.store.apply_shared(Arc::clone(batch)).await {
            Ok(applied) => {
                self.metrics
                    .duration
                    .record(started.elapsed().as_secs_f64());
                self.metrics
                    .batch_keys
                    .record(batch.increments.len() as f64);
                match applied {
                    Applied::Fresh { late } => self.metrics.late.increment(late),
                    Applied::Duplicate => self.metrics.duplicates.increment(1),
                }
                // Before the ledger lets the batch go (at the next
                // site reading), so a cached page reading never misses it.
                site.roll_forward(batch);
                site.ledger.write().acknowledge(batch.id.seq);
                self.checkpoint(&site.id, batch.id.seq);
            }
            Err(e) => {
                self.metrics.store_error("apply", e.kind());
                self.metrics.retries.increment(1);
                let pause = self.backoff_for(site).fail(Instant::now());
                tracing::warn!(site = %site.id, error = %e, retry_in = ?pause, "flush failed; batch kept for retry");
                site.ledger.write().mark_stale();
                return Err(e);
            }
        }
        Ok(())
    }

    /// One site's part of a pass: take what it counted, send what is
    /// ready (at most [`MAX_BATCHES_PER_PASS`] batches, each read back
    /// before the next), and read the site again.
    async fn flush_site(&mut self, site: &Arc<Site>) -> Result<(), StoreError> {
        let now = Instant::now();
        self.take_site(site).await;
        if !self.backoff_for(site).ready(now) {
            return Ok(());
        }
        let visitors = self.visitor_deltas(site);
        // Visitors travel even without hits to carry them, or the last
        // interval's visitors would wait for the site's next hit. They ride
        // in the pass's first batch.
        let mut unused_visitors = (!visitors.is_empty()).then_some(visitors);
        // A batch carries at most MAX_BATCH_KEYS keys, so the memory a
        // flush holds (four increments per key) is bounded whatever the
        // pages touched; what is left is sent in further batches of the
        // same pass, each once the last one is applied and read back.
        for _ in 0..MAX_BATCHES_PER_PASS {
            let to_send = {
                let build = builder(site, &self.producer, &self.retention);
                let visitors = &mut unused_visitors;
                let has_visitors = visitors.is_some();
                site.ledger
                    .next_batch(has_visitors, MAX_BATCH_KEYS, |seq, deltas, dims| {
                        let mut batch = build(seq, deltas, dims);
                        batch.visitors = visitors.take().unwrap_or_default();
                        batch
                    })
            };
            if let Some(left) = unused_visitors.take() {
                self.requeue_visitors(site, left);
            }
            let Some(send) = to_send else {
                break;
            };
            if send.fresh {
                self.log_ahead(&send.batch).await;
            }
            self.send_batch(site, &send.batch).await?;
            if site.ledger.read().open_keys() == 0 {
                break;
            }
            // The next batch waits for a reading that covers this one.
            self.refresh_site(site).await?;
        }
        self.refresh_site(site).await
    }

    /// Puts visitor deltas that found no batch back into the unions.
    fn requeue_visitors(&mut self, site: &Site, deltas: Vec<VisitorDelta>) {
        let unions = self.visitors.entry(Arc::clone(&site.id)).or_default();
        for delta in deltas {
            let union = match &delta.members {
                Members::Exact(m) => SketchUnion::from_parts(&[0u8; HLL_REGISTERS], Some(m)),
                Members::Registers(r) => SketchUnion::from_parts(r, None),
            };
            let Ok(union) = union else { continue };
            for (key, _) in delta.keys {
                unions.entry(key).or_default().add_union(&union);
            }
        }
    }

    /// Appends a newly frozen batch to the write-ahead file, durably, before
    /// it is sent. A failure is logged and counted; the batch is still sent
    /// (only a crash before it is applied could then lose it).
    async fn log_ahead(&self, batch: &Arc<SiteBatch>) {
        let Some(wal) = &self.wal else { return };
        let wal = Arc::clone(wal);
        let batch = Arc::clone(batch);
        let result = tokio::task::spawn_blocking(move || wal.lock().append(&batch)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.metrics.wal_errors.increment(1);
                tracing::error!(error = %e, "write-ahead append failed; sending the batch anyway");
            }
            Err(e) => {
                self.metrics.wal_errors.increment(1);
                tracing::error!(error = %e, "write-ahead append task failed");
            }
        }
    }

    /// Records in the write-ahead file that a batch was acknowledged.
    fn checkpoint(&self, site: &str, seq: u64) {
        let Some(wal) = &self.wal else { return };
        if let Err(e) = wal.lock().ack(site, seq) {
            self.metrics.wal_errors.increment(1);
            tracing::warn!(error = %e, "write-ahead checkpoint failed; the batch may be replayed (and refused) at the next start");
        }
    }

    fn backoff_for(&mut self, site: &Arc<Site>) -> &mut Backoff {
        self.backoff.entry(Arc::clone(&site.id)).or_default()
    }

    /// Reads the site's figures (and, where the store keeps them, the
    /// visitors online across instances) and installs them.
    async fn refresh_site(&mut self, site: &Arc<Site>) -> Result<(), StoreError> {
        let now = Timestamp::now();
        let today = site.calendar().day_of(now);
        let keys = read_keys(today, site.calendar());
        let minute = now.as_second().div_euclid(60);
        let window = (self.online_window.as_secs() / 60) as i64;
        let mut groups: Vec<Vec<SketchKey>> =
            vec![(minute - window..=minute).map(SketchKey::Minute).collect()];
        let visitors_due = self
            .visitors_read
            .get(&site.id)
            .is_none_or(|t| t.elapsed() >= VISITOR_REFRESH);
        if visitors_due {
            groups.extend(visitor_groups(today, site.calendar()));
        }
        let result = self
            .store
            .read_site(&site.id, &keys, &self.producer, &groups)
            .await
            .map(|(reading, counts)| {
                if let Some(Some(online)) = counts.first() {
                    site.shared_online.store(*online, Ordering::Release);
                }
                if let [_, today, yesterday, week, month, total] = counts[..]
                    && let (Some(today), Some(yesterday), Some(week), Some(month), Some(total)) =
                        (today, yesterday, week, month, total)
                {
                    site.shared_visitors.store(Some(Arc::new(Visitors {
                        today,
                        yesterday,
                        week,
                        month,
                        total,
                    })));
                    self.visitors_read
                        .insert(Arc::clone(&site.id), Instant::now());
                }
                reading
            });
        match result {
            Ok(reading) => {
                // Record day: replaced only when it changed (an allocation
                // a change, not a refresh).
                if site.shared_record.load().as_deref() != reading.record.as_ref() {
                    site.shared_record.store(reading.record.map(Arc::new));
                }
                self.metrics.store_up.set(1.0);
                self.backoff_for(site).succeed();
                let released = site.ledger.write().install(Stored::new(keys, &reading));
                released.free();
                Ok(())
            }
            Err(e) => {
                self.metrics.store_error("read", e.kind());
                let pause = self.backoff_for(site).fail(Instant::now());
                tracing::warn!(site = %site.id, error = %e, retry_in = ?pause, "reading the store failed; serving stale figures");
                site.ledger.write().mark_stale();
                Err(e)
            }
        }
    }

    /// Applies an import (a batch built by the admin route) and answers.
    pub async fn apply_import(&mut self, job: crate::flush::import::ImportJob) {
        let result = self.store.apply(&job.batch).await;
        match &result {
            Ok(Applied::Fresh { late }) => {
                self.metrics.late.increment(*late);
                // Kept page readings do not include the import (it is not
                // one of this instance's batches): read them again.
                if let Some(site) = self.sites.load().get(&job.batch.site) {
                    site.forget_page_readings();
                }
                tracing::info!(site = %job.batch.site, producer = %job.batch.id.producer, "import applied");
            }
            Ok(Applied::Duplicate) => {
                self.metrics.duplicates.increment(1);
                tracing::info!(site = %job.batch.site, producer = %job.batch.id.producer, "import refused: applied before");
            }
            Err(e) => self.metrics.store_error("import", e.kind()),
        }
        let _ = job.reply.send(result);
    }

    /// Flushes until nothing is pending or `deadline` passes. Returns true
    /// when everything reached the store. When time runs out, what remains
    /// is frozen into the write-ahead file (if there is one), so the next
    /// start sends it.
    pub async fn drain(&mut self, deadline: Instant) -> bool {
        // Connections are drained, so no hit can touch the visitor buckets
        // any more: hand them all over now (the batcher is one call late).
        for site in self.all_sites().iter() {
            self.gather_visitors(site);
            self.gather_visitors(site);
        }
        loop {
            for b in self.backoff.values_mut() {
                // At shutdown, try again at once rather than sleep out a
                // long backoff.
                b.until = b.until.map(|t| t.min(Instant::now() + BACKOFF_MIN));
            }
            let outcome = tokio::time::timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.pass(),
            )
            .await
            .unwrap_or(PassOutcome {
                pending_sites: 1,
                errors: 1,
            });
            if outcome.pending_sites == 0 {
                return true;
            }
            if Instant::now() + BACKOFF_MIN >= deadline {
                self.freeze_remaining().await;
                return false;
            }
            tokio::time::sleep(BACKOFF_MIN).await;
        }
    }

    /// Freezes every site's open deltas into batches kept in the
    /// write-ahead file.
    async fn freeze_remaining(&mut self) {
        if self.wal.is_none() {
            return;
        }
        for site in self.all_sites().iter() {
            take_counts(site);
            let frozen = site
                .ledger
                .write()
                .freeze(false, builder(site, &self.producer, &self.retention));
            if let Some(batch) = frozen {
                self.log_ahead(&batch).await;
                tracing::info!(site = %site.id, seq = batch.id.seq, "kept unsent hits in the write-ahead file for the next start");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::{WeekStart, day_number};
    use crate::store::Dimension;
    use jiff::civil::Date;

    fn calendar() -> SiteCalendar {
        SiteCalendar::new(
            jiff::tz::TimeZone::get("Asia/Ho_Chi_Minh").unwrap(),
            WeekStart::Monday,
        )
    }

    fn value(batch: &SiteBatch, scope: &Scope, period: PeriodKey) -> Option<u64> {
        batch
            .increments
            .iter()
            .find(|i| &i.scope == scope && i.period == period)
            .map(|i| i.hits)
    }

    #[test]
    fn week_month_and_total_are_derived_from_day_deltas() {
        let sun = Date::constant(2026, 11, 29);
        let mon = Date::constant(2026, 11, 30);
        let page: Arc<str> = Arc::from("/a");
        let deltas = vec![
            Delta {
                page: None,
                day: day_number(sun),
                hits: 3,
            },
            Delta {
                page: None,
                day: day_number(mon),
                hits: 4,
            },
            Delta {
                page: Some(Arc::clone(&page)),
                day: day_number(mon),
                hits: 4,
            },
        ];
        let b = build_batch(
            &Arc::from("demo"),
            &Arc::from("p"),
            9,
            (&deltas, &[]),
            &calendar(),
            &Retention::default(),
        );
        assert_eq!(b.id.seq, 9);
        let site = Scope::Site;
        assert_eq!(value(&b, &site, PeriodKey::Day(sun)), Some(3));
        assert_eq!(value(&b, &site, PeriodKey::Day(mon)), Some(4));
        assert_eq!(
            value(&b, &site, PeriodKey::Week(Date::constant(2026, 11, 23))),
            Some(3)
        );
        assert_eq!(value(&b, &site, PeriodKey::Week(mon)), Some(4));
        assert_eq!(
            value(&b, &site, PeriodKey::Month(Date::constant(2026, 11, 1))),
            Some(7)
        );
        assert_eq!(value(&b, &site, PeriodKey::Total), Some(7));
        let p = Scope::Page(page);
        assert_eq!(value(&b, &p, PeriodKey::Total), Some(4));
        assert_eq!(value(&b, &p, PeriodKey::Day(sun)), None);
        // Built in the order the Redis store takes as it is.
        assert!(Increment::in_order(&b.increments));
        let mut backwards = b.increments.clone();
        backwards.reverse();
        assert!(!Increment::in_order(&backwards));
        assert_eq!(Increment::into_order(backwards), b.increments);
    }

    #[test]
    fn breakdowns_are_summed_sorted_and_expire_with_their_day() {
        let day = Date::constant(2026, 11, 27);
        let n = day_number(day);
        let page: Arc<str> = Arc::from("/a");
        let dim = |page: Option<&Arc<str>>, dimension, value: &str, hits| DimDelta {
            page: page.cloned(),
            dimension,
            day: n,
            value: Arc::from(value),
            hits,
        };
        let dims = vec![
            dim(Some(&page), Dimension::Source, "Zalo", 1),
            dim(None, Dimension::Source, "Zalo", 2),
            dim(None, Dimension::Channel, "social", 3),
            dim(None, Dimension::Source, "Zalo", 5),
            dim(None, Dimension::Source, "Google", 1),
        ];
        let retention = Retention::default();
        let b = build_batch(
            &Arc::from("demo"),
            &Arc::from("p"),
            1,
            (&[], &dims),
            &calendar(),
            &retention,
        );
        let got: Vec<(&str, &str, &str, u64)> = b
            .breakdowns
            .iter()
            .map(|i| (i.scope.as_key(), i.dimension.as_str(), &*i.value, i.hits))
            .collect();
        assert_eq!(
            got,
            [
                ("", "channel", "social", 3),
                ("", "source", "Google", 1),
                ("", "source", "Zalo", 7),
                ("/a", "source", "Zalo", 1),
            ]
        );
        let end = calendar().day_bounds(day).1;
        assert_eq!(
            b.breakdowns[0].expires_at,
            Some(plus(end, retention.site_days))
        );
        assert_eq!(
            b.breakdowns[3].expires_at,
            Some(plus(end, retention.page_days))
        );
    }

    #[test]
    fn retention_sets_expiry_per_level_and_never_for_month_and_total() {
        let day = Date::constant(2026, 11, 27);
        let deltas = vec![
            Delta {
                page: None,
                day: day_number(day),
                hits: 1,
            },
            Delta {
                page: Some(Arc::from("/a")),
                day: day_number(day),
                hits: 1,
            },
        ];
        let b = build_batch(
            &Arc::from("demo"),
            &Arc::from("p"),
            1,
            (&deltas, &[]),
            &calendar(),
            &Retention::default(),
        );
        let end_of_day = calendar().day_bounds(day).1;
        for inc in &b.increments {
            let expected = match (&inc.scope, inc.period) {
                (Scope::Site, PeriodKey::Day(_)) => {
                    Some(plus(end_of_day, Duration::from_secs(400 * 86_400)))
                }
                (Scope::Page(_), PeriodKey::Day(_)) => {
                    Some(plus(end_of_day, Duration::from_secs(35 * 86_400)))
                }
                (_, PeriodKey::Month(_) | PeriodKey::Total) => None,
                (_, PeriodKey::Week(_)) => inc.expires_at,
            };
            assert_eq!(inc.expires_at, expected, "{inc:?}");
        }
        assert!(
            b.increments
                .iter()
                .any(|i| matches!(i.period, PeriodKey::Week(_)) && i.expires_at.is_some())
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_within_bounds() {
        let mut b = Backoff::new();
        let now = Instant::now();
        assert!(b.ready(now));
        for _ in 0..20 {
            let pause = b.fail(now);
            assert!(pause >= BACKOFF_MIN && pause <= BACKOFF_MAX, "{pause:?}");
            assert!(!b.ready(now));
        }
        b.succeed();
        assert!(b.ready(now));
    }

    /// A pass that finds more keys than one batch holds sends them all, in
    /// several batches, each applied exactly once: every page and the site
    /// read back exactly what was counted.
    #[tokio::test(flavor = "current_thread")]
    async fn a_pass_sends_more_keys_than_one_batch_holds_in_several_batches() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            crate::config::Config::from_toml_str("[counting]\nmax_pages = 50000\n").unwrap();
        let sites = Arc::new(Sites::new(crate::site::SiteTable::new(&config, |_| 1)));
        let store = crate::store::embedded::EmbeddedStore::open(dir.path()).unwrap();
        let mut flusher = Flusher::new(store.clone(), Arc::clone(&sites), Arc::from("p"), None);
        let site = Arc::clone(sites.load().get("demo").unwrap());
        let today = site.calendar().day_of(Timestamp::now());
        let day = day_number(today);
        let pages = MAX_BATCH_KEYS * 2 + 100;
        for i in 0..pages {
            // Page i gets 1 + i % 3 hits.
            for _ in 0..=(i % 3) {
                site.tally.count(&format!("/p{i}"), day);
            }
        }
        let outcome = flusher.pass().await;
        assert_eq!(outcome.errors, 0);
        assert_eq!(site.ledger.read().open_keys(), 0, "all sent in one pass");
        let keys = read_keys(today, site.calendar());
        let hits: u64 = (0..pages).map(|i| 1 + (i % 3) as u64).sum();
        let reading = store.read("demo", &Scope::Site, &keys, "p").await.unwrap();
        assert_eq!(reading.values[4], hits, "site total");
        assert_eq!(reading.watermark, 3, "three batches");
        for i in [0, 1, 2, MAX_BATCH_KEYS - 1, MAX_BATCH_KEYS, pages - 1] {
            let page = Scope::Page(Arc::from(format!("/p{i}").as_str()));
            let r = store.read("demo", &page, &keys, "p").await.unwrap();
            assert_eq!(r.values[4], 1 + (i % 3) as u64, "/p{i}");
        }
    }
}
