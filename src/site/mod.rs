//! The declared sites, as a swappable snapshot, and each site's runtime
//! state: its calendar, its pending tally, its online ring, its ledger.
//!
//! Invariant: only declared sites have state. An attacker-chosen id finds
//! nothing here and creates nothing (no key, no memory). Lookups on the hot
//! path borrow the request's text; they never allocate.
//!
//! Owns `Site`, `SiteTable`, `Sites` and [`page_cache`] (readings of pages
//! the tally does not keep). May use `count` (the state a site holds),
//! `store` (key and batch types; it never calls a store) and the bottom.
//! Used by `ingest`, `read` and `flush`, which act on sites.

pub mod page_cache;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption, Guard};
use jiff::civil::Date;

use crate::config::{Config, Retention, SiteConfig, SiteRules};
use crate::count::breakdown::SiteBreakdown;
use crate::count::dedupe::DedupeFilter;
use crate::count::ledger::{Ledger, Stored, Visitors, read_keys};
use crate::count::limit::{ClientLimiter, RateLimit};
use crate::count::page_online::PageOnline;
use crate::count::tally::{Kept, SiteTally};
use crate::count::titles::PageTitles;
use crate::count::visitor::{OnlineRing, VisitorBatcher};
use crate::metrics::SiteMetrics;
use crate::page::PageRules;
use crate::period::{DayClock, SiteCalendar};
use crate::site::page_cache::PageCache;
use crate::store::{Increment, PeriodKey, Record, Scope, SiteBatch};

/// Bits of each of the two dedupe filters (1 MiB of memory per site with a
/// dedupe window): about 210,000 distinct (visitor, page) pairs per window at
/// under 0.1 % false repeats.
const DEDUPE_BITS: usize = 1 << 22;

/// Readers recount `online` at most this often under a stream of new
/// visitors (a union of the window's sketches is not free); a lone reader
/// sees their own visit at once.
const ONLINE_RECOUNT: std::time::Duration = std::time::Duration::from_millis(50);
/// Up to this many new visitors since the last count, a reader recounts at
/// once, while fewer than [`ONLINE_EAGER_BELOW`] are online.
const ONLINE_EAGER: u64 = 16;
/// From this many visitors online, readers recount only every
/// [`ONLINE_RECOUNT`]: one visitor more is then within the sketch's error,
/// and on a busy site new visitors trickle in all the time, so recounting
/// for each (a union of the window's HyperLogLog registers) cost 14 % of
/// the answering route's CPU (perf). Below it the sketches are exact sets
/// and cheap to unite.
const ONLINE_EAGER_BELOW: u64 = crate::sketch::EXACT_LIMIT as u64;

/// Page `(channel, source)` pairs kept in memory per page the tally may
/// keep, on average (with each page's own entry): beyond them, new pairs
/// are not kept and their hits read as `(unknown)` by source.
const PAIRS_PER_PAGE: usize = 4;

/// Most readings of pages the tally does not keep, per site; beyond it
/// the cache evicts one reading per new one ([`PageCache`]).
const PAGE_CACHE_MAX: usize = 50_000;

/// Minutes kept by [`OnlineHistory`]: the dashboard's last hour.
pub const ONLINE_HISTORY_MINUTES: usize = 60;

/// A site's `online` figure per minute (the most seen in the minute), the
/// last [`ONLINE_HISTORY_MINUTES`] minutes: a fixed 60 points per site.
#[derive(Default)]
pub struct OnlineHistory {
    points: parking_lot::Mutex<std::collections::VecDeque<(i64, u64)>>,
}

impl OnlineHistory {
    /// Notes `online` seen at `unix_secs`.
    pub fn note(&self, unix_secs: i64, online: u64) {
        let minute = unix_secs.div_euclid(60);
        let mut points = self.points.lock();
        match points.back_mut() {
            Some((m, n)) if *m == minute => *n = (*n).max(online),
            Some((m, _)) if *m > minute => {}
            _ => points.push_back((minute, online)),
        }
        while points
            .front()
            .is_some_and(|(m, _)| *m <= minute - ONLINE_HISTORY_MINUTES as i64)
        {
            points.pop_front();
        }
    }

    /// The points of the last hour up to `unix_secs`, oldest first, one
    /// per minute (a minute without a note reads 0).
    pub fn points(&self, unix_secs: i64) -> Vec<(i64, u64)> {
        let now = unix_secs.div_euclid(60);
        let first = now - ONLINE_HISTORY_MINUTES as i64 + 1;
        let points = self.points.lock();
        (first..=now)
            .map(|m| {
                let n = points.iter().find(|(pm, _)| *pm == m).map_or(0, |p| p.1);
                (m, n)
            })
            .collect()
    }
}

/// One declared site and everything this instance knows about it.
pub struct Site {
    pub id: Arc<str>,
    pub config: SiteConfig,
    pub clock: DayClock,
    pub rules: PageRules,
    /// The counting rules in force (global, overridden by the site's).
    pub counting: SiteRules,
    /// Per-client rate limit of this site's beacons.
    pub limiter: Arc<ClientLimiter>,
    /// Per-client rate limit of this site's reads (a bucket of its own).
    pub read_limiter: Arc<ClientLimiter>,
    /// Repeat-view filter, when a dedupe window is set.
    pub dedupe: Option<Arc<DedupeFilter>>,
    // The counting state is shared (`Arc`) so that a configuration reload
    // hands it to the site's new snapshot: a hit counted through the old
    // snapshot lands in the same tally.
    pub tally: Arc<SiteTally>,
    /// The hits' dimensions, counted beside the tally.
    pub breakdown: Arc<SiteBreakdown>,
    /// The pages' last titles, for the next flush.
    pub titles: Arc<PageTitles>,
    pub online: Arc<OnlineRing>,
    /// Each page's readers in the online window, and the ranking of pages
    /// by them ("Đang đọc").
    pub page_online: Arc<PageOnline>,
    /// The site's `online` per minute over the last hour, for the
    /// dashboard's chart (noted by the flusher).
    pub online_history: Arc<OnlineHistory>,
    pub ledger: Arc<Ledger>,
    /// Visitors to ship to the store's sketches (unique visitors; with
    /// Redis also `online` across instances).
    pub visitors: Option<Arc<VisitorBatcher>>,
    /// Unique visitors per period as the store last said.
    pub shared_visitors: ArcSwapOption<Visitors>,
    /// The site's record day as the store last said (issue 25 §7).
    pub shared_record: ArcSwapOption<Record>,
    /// Distinct visitors online across all instances, as the store last
    /// said (`u64::MAX` until it has).
    pub shared_online: AtomicU64,
    /// Distinct visitors online as this instance saw them, with the
    /// generation (see `online_gen`) the count includes: counted once per
    /// flush interval and by readers when behind (a union of the window's
    /// sketches is not free, so readers do not each compute it). A count
    /// replaces the stored one only if its generation is not older, so a
    /// slow recount never overwrites a newer one.
    local_online: parking_lot::Mutex<(u64, u64)>,
    /// Bumped by each hit that may have added a visitor; a reader recounts
    /// when it moved since the last count, so a reader sees their own
    /// visit. Under a stream of new visitors, recounts are spaced by
    /// [`ONLINE_RECOUNT`].
    online_gen: AtomicU64,
    /// When `online` was last recounted (Unix milliseconds).
    online_counted_ms: AtomicU64,
    /// `as_of` of the current second, formatted once per second rather
    /// than at every answer.
    as_of: ArcSwap<(i64, Arc<str>)>,
    /// Recent store readings of pages the tally does not keep (read with
    /// `?page=` but not counted here, or past `max_pages`; zeros for a page
    /// never counted), bounded. A counted page's reading is kept in its
    /// tally cell, found by the lookup that counts the hit. Shared with the
    /// site's next snapshot, like the ledger: it notes which batches it was
    /// rolled over.
    page_cache: Arc<PageCache>,
    /// The period keys of a reading taken today (see [`read_keys`]),
    /// computed once per local day rather than at every answer.
    read_keys: ArcSwap<(Date, [PeriodKey; 5])>,
    /// Top lists answered in the last [`TOP_LIST_TTL_MS`], so that a
    /// most-read box on every page view reads the store about once a
    /// flush interval rather than once a view. Opaque here: named by the
    /// reader's key (period and limit), at most [`TOP_LISTS_KEPT`].
    pub top_lists: parking_lot::Mutex<Vec<TopList>>,
    pub metrics: SiteMetrics,
}

/// How long a kept top list is answered (Unix milliseconds of age).
pub const TOP_LIST_TTL_MS: i64 = 1_000;
/// Most top lists a site keeps (distinct periods and limits).
pub const TOP_LISTS_KEPT: usize = 32;

/// A top list's entries as kept: `(page, title, hits)`.
pub type TopEntries = Arc<[(String, Option<String>, u64)]>;

/// A top list as kept: its key, when it was read (Unix milliseconds),
/// and its entries.
pub type TopList = (Box<str>, i64, TopEntries);

impl Site {
    /// The top list kept under `key` if it is younger than
    /// [`TOP_LIST_TTL_MS`] at `now_ms`.
    pub fn kept_top_list(&self, key: &str, now_ms: i64) -> Option<TopEntries> {
        self.top_lists
            .lock()
            .iter()
            .find(|(k, at, _)| &**k == key && now_ms.saturating_sub(*at) < TOP_LIST_TTL_MS)
            .map(|(_, _, list)| Arc::clone(list))
    }

    /// Keeps `list` under `key`, read at `now_ms`, replacing the one kept
    /// under that key and the oldest beyond [`TOP_LISTS_KEPT`].
    pub fn keep_top_list(&self, key: &str, now_ms: i64, list: TopEntries) {
        let mut lists = self.top_lists.lock();
        lists.retain(|(k, _, _)| &**k != key);
        if lists.len() >= TOP_LISTS_KEPT
            && let Some(oldest) = (0..lists.len()).min_by_key(|&i| lists[i].1)
        {
            lists.swap_remove(oldest);
        }
        lists.push((key.into(), now_ms, list));
    }

    /// The runtime state of a declared site; its first batch carries
    /// `first_seq`.
    ///
    /// # Panics
    /// If the time zone is unknown; [`Config::validate`] rules that out.
    pub fn new(config: &SiteConfig, global: &Config, first_seq: u64) -> Self {
        let tz = jiff::tz::TimeZone::get(&config.timezone).expect("validated time zone");
        let calendar = SiteCalendar::new(tz, config.week_start);
        let minutes = (global.counting.online_window.as_secs() / 60).max(1) as u32;
        let counting = config.rules(&global.counting);
        let max_pages = counting.max_pages;
        let limiter = ClientLimiter::new(RateLimit {
            per_second: counting.rate_limit_per_second,
            burst: counting.rate_limit_burst,
        });
        let read_limiter = ClientLimiter::new(RateLimit {
            per_second: counting.read_rate_limit_per_second,
            burst: counting.read_rate_limit_burst,
        });
        let dedupe = (!counting.dedupe_window.is_zero())
            .then(|| Arc::new(DedupeFilter::new(counting.dedupe_window, DEDUPE_BITS)));
        Site {
            id: Arc::from(config.id.as_str()),
            config: config.clone(),
            clock: DayClock::new(calendar),
            rules: PageRules {
                keep_query: global.counting.keep_query,
                max_len: global.counting.max_page_length,
            },
            tally: Arc::new(SiteTally::new(counting.max_pages)),
            breakdown: Arc::new(SiteBreakdown::new(
                counting.max_values,
                counting.max_page_values,
                counting.max_pages.saturating_mul(PAIRS_PER_PAGE),
            )),
            titles: Arc::new(PageTitles::new()),
            counting,
            limiter: Arc::new(limiter),
            read_limiter: Arc::new(read_limiter),
            dedupe,
            online: Arc::new(OnlineRing::new(minutes)),
            page_online: Arc::new(PageOnline::new(minutes, max_pages)),
            online_history: Arc::new(OnlineHistory::default()),
            ledger: Arc::new(Ledger::new(first_seq)),
            visitors: Some(Arc::new(VisitorBatcher::new())),
            shared_visitors: ArcSwapOption::empty(),
            shared_record: ArcSwapOption::empty(),
            shared_online: AtomicU64::new(u64::MAX),
            local_online: parking_lot::Mutex::new((0, 0)),
            online_gen: AtomicU64::new(0),
            online_counted_ms: AtomicU64::new(0),
            page_cache: Arc::new(PageCache::new(PAGE_CACHE_MAX)),
            read_keys: ArcSwap::from_pointee((Date::MIN, [PeriodKey::Total; 5])),
            top_lists: parking_lot::Mutex::new(Vec::new()),
            as_of: ArcSwap::from_pointee((i64::MIN, Arc::from(""))),
            metrics: SiteMetrics::new(&config.id),
        }
    }

    /// Counts the visitors online now as this instance saw them (once per
    /// flush interval).
    pub fn recount_online(&self, now: jiff::Timestamp) -> u64 {
        let generation = self.online_gen.load(Ordering::Acquire);
        let n = self.online.count(now.as_second());
        {
            let mut counted = self.local_online.lock();
            if generation >= counted.0 {
                *counted = (generation, n);
            }
        }
        self.online_counted_ms
            .store(now.as_millisecond().max(0) as u64, Ordering::Release);
        n
    }

    /// Records a visitor seen now, for `online`.
    pub fn see_visitor(&self, unix_secs: i64, visitor: u64) {
        if self.online.insert(unix_secs, visitor) {
            self.online_gen.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Records a visitor reading `page` now, for the page's `online`.
    pub fn see_reader(&self, page: &str, unix_secs: i64, visitor: u64) {
        self.page_online.insert(page, unix_secs, visitor);
    }

    /// Distinct visitors reading `page` now (this instance's, or all
    /// instances' as the store last said, whichever is more).
    pub fn page_online_now(&self, page: &str, now: jiff::Timestamp) -> u64 {
        self.page_online.count(page, now.as_second())
    }

    /// Distinct visitors online (as of the last recount): what this
    /// instance saw, or what all instances saw according to the store,
    /// whichever is more.
    pub fn online_now(&self, now: jiff::Timestamp) -> u64 {
        let (counted_gen, counted) = *self.local_online.lock();
        let behind = self
            .online_gen
            .load(Ordering::Acquire)
            .saturating_sub(counted_gen);
        if behind > 0 {
            let last = self.online_counted_ms.load(Ordering::Acquire);
            let now_ms = now.as_millisecond().max(0) as u64;
            // A few new visitors on a small site: count them now (a reader
            // sees their own visit). Else at most every ONLINE_RECOUNT.
            if (behind <= ONLINE_EAGER && counted < ONLINE_EAGER_BELOW)
                || now_ms.saturating_sub(last) >= ONLINE_RECOUNT.as_millis() as u64
            {
                self.recount_online(now);
            }
        }
        let local = self.local_online.lock().1;
        match self.shared_online.load(Ordering::Acquire) {
            u64::MAX => local,
            shared => shared.max(local),
        }
    }

    /// This site under a new configuration (a reload), keeping everything
    /// it has counted: the tally, the ledger, the visitor buckets, and the
    /// online ring, rate-limit state and dedupe filter where their settings
    /// did not change.
    pub fn reconfigured(&self, config: &SiteConfig, global: &Config) -> Site {
        let mut fresh = Site::new(config, global, 1);
        fresh.tally = Arc::clone(&self.tally);
        fresh.tally.set_max_pages(fresh.counting.max_pages);
        fresh.breakdown = Arc::clone(&self.breakdown);
        fresh
            .breakdown
            .set_bounds(fresh.counting.max_values, fresh.counting.max_page_values);
        fresh.ledger = Arc::clone(&self.ledger);
        fresh.titles = Arc::clone(&self.titles);
        fresh.page_cache = Arc::clone(&self.page_cache);
        fresh.online_history = Arc::clone(&self.online_history);
        fresh.visitors = self.visitors.clone();
        if fresh.counting.rate_limit_per_second == self.counting.rate_limit_per_second
            && fresh.counting.rate_limit_burst == self.counting.rate_limit_burst
        {
            fresh.limiter = Arc::clone(&self.limiter);
        }
        if fresh.counting.read_rate_limit_per_second == self.counting.read_rate_limit_per_second
            && fresh.counting.read_rate_limit_burst == self.counting.read_rate_limit_burst
        {
            fresh.read_limiter = Arc::clone(&self.read_limiter);
        }
        if fresh.counting.dedupe_window == self.counting.dedupe_window {
            fresh.dedupe = self.dedupe.clone();
        }
        if global.counting.online_window.as_secs() / 60 == self.online_minutes() {
            fresh.online = Arc::clone(&self.online);
            fresh.page_online = Arc::clone(&self.page_online);
        }
        fresh
            .shared_visitors
            .store(self.shared_visitors.load_full());
        fresh.shared_record.store(self.shared_record.load_full());
        fresh.shared_online.store(
            self.shared_online.load(Ordering::Acquire),
            Ordering::Release,
        );
        *fresh.local_online.lock() = *self.local_online.lock();
        fresh
            .online_gen
            .store(self.online_gen.load(Ordering::Acquire), Ordering::Release);
        fresh
    }

    fn online_minutes(&self) -> u64 {
        self.online.window_minutes()
    }

    /// `at` in the site's zone, RFC 3339, whole seconds (cached per second).
    pub fn as_of(&self, at: jiff::Timestamp) -> Arc<str> {
        let second = at.as_second();
        let cached = self.as_of.load();
        if cached.0 == second {
            return Arc::clone(&cached.1);
        }
        let text: Arc<str> = Arc::from(self.calendar().rfc3339(at));
        self.as_of.store(Arc::new((second, Arc::clone(&text))));
        text
    }

    /// The period keys of a reading taken on local day `today`.
    pub fn read_keys(&self, today: Date) -> [PeriodKey; 5] {
        let cached = self.read_keys.load();
        if cached.0 == today {
            return cached.1;
        }
        let keys = read_keys(today, self.calendar());
        self.read_keys.store(Arc::new((today, keys)));
        keys
    }

    /// The site's calendar.
    pub fn calendar(&self) -> &SiteCalendar {
        self.clock.calendar()
    }

    /// The kept reading of `page` (`max_age` is its time to live at
    /// `now_ms`, Unix milliseconds). A counted page's reading outliving it
    /// is still given, with one caller told to refresh it (see [`Kept`]);
    /// other pages' readings are given only while younger.
    pub fn cached_page(&self, page: &str, now_ms: i64, max_age: Duration) -> Option<Kept> {
        if let Some(kept) = self.tally.reading(page, now_ms, max_age) {
            return kept;
        }
        let stored = self.page_cache.get(page, now_ms, max_age)?;
        Some(Kept {
            stored,
            refresh: false,
        })
    }

    /// Rolls the cached page readings forward over `batch`, which the store
    /// has just applied, so they stay complete once the ledger lets the
    /// batch go: a reading that includes every earlier batch of this
    /// instance that carried the page's hits gets the batch's increments of
    /// the periods it holds added, exactly as the store added them, and
    /// watermark `seq`. A reading that may miss one is dropped (read again
    /// when next needed); one already past `seq` is left. Counted pages
    /// remember the batch (see [`SiteTally::roll_reading`]), so a reading
    /// stays complete over batches that did not touch its page; the few
    /// readings of pages the tally does not keep must be at `seq - 1`.
    /// Costs a map lookup per page in the batch.
    pub fn roll_forward(&self, batch: &SiteBatch) {
        let seq = batch.id.seq;
        self.page_cache.start_roll(seq);
        let uncounted = !self.page_cache.is_empty();
        // A batch's increments come grouped by scope (`build_batch`).
        for run in batch.increments.chunk_by(|a, b| a.scope == b.scope) {
            let Scope::Page(page) = &run[0].scope else {
                continue;
            };
            self.tally.roll_reading(page, seq, |stored, before| {
                rolled(stored, seq, before, run).map(|s| s.map(Arc::new))
            });
            if uncounted {
                // Complete: see `PageCache` (taken in before any later
                // batch started rolling, rolled over every one since).
                self.page_cache.roll_page(page, |stored| {
                    rolled(stored, seq, Some(stored.watermark), run)
                });
            }
            crate::background::pace();
        }
        self.page_cache.end_roll(seq);
    }

    /// Whether a kept reading of `page` with `watermark` holds every hit of
    /// this instance's batches up to `latest` (the ledger's next sequence,
    /// read under its lock, after which batches leave memory): true when
    /// no batch applied after `watermark` carried the page's hits.
    ///
    /// Batches this instance replays from the write-ahead file are noted
    /// ([`Site::adopt`]): they may carry hits of pages not counted since.
    pub fn reading_complete(&self, page: &str, watermark: u64, latest: u64) -> bool {
        self.tally
            .rolled(page, latest)
            .is_some_and(|last| watermark >= last)
    }

    /// Queues a batch recovered from the write-ahead file (see
    /// [`Ledger::adopt`](crate::count::ledger::Ledger::adopt)).
    pub fn adopt(&self, batch: SiteBatch) {
        self.tally.note_adopted(batch.id.seq);
        self.ledger.adopt(batch);
    }

    /// Forgets every kept page reading (after the store changed other than
    /// by this instance's batches: an import). Walks the site's pages.
    pub fn forget_page_readings(&self) {
        self.tally.forget_readings();
        self.page_cache.clear();
    }

    /// Keeps a reading of `page` taken at `now_ms` (Unix milliseconds).
    pub fn cache_page(&self, page: &Arc<str>, stored: Arc<Stored>, now_ms: i64) {
        if self.tally.remember(page, Arc::clone(&stored), now_ms) {
            return;
        }
        self.page_cache.insert(page, stored, now_ms);
    }
}

/// `stored` rolled forward over the increments `run` of one page in batch
/// `seq` (see [`Site::roll_forward`]): `None` to leave it (already past
/// `seq`), `Some(None)` to forget it (it may miss a batch before `seq`).
/// `before` is the last batch before `seq` that carried the page's hits,
/// when known: a reading that includes it includes every batch before
/// `seq` that touched the page.
fn rolled(
    stored: &Stored,
    seq: u64,
    before: Option<u64>,
    run: &[Increment],
) -> Option<Option<Stored>> {
    if stored.watermark >= seq {
        return None;
    }
    let complete = stored.watermark + 1 == seq || before.is_some_and(|b| stored.watermark >= b);
    if !complete {
        return Some(None);
    }
    let mut next = stored.clone();
    for inc in run {
        if let Some(i) = next.keys.iter().position(|k| *k == inc.period) {
            next.values[i] += inc.hits;
        }
    }
    next.watermark = seq;
    Some(Some(next))
}

/// The sites of one configuration, with the global settings that a reload
/// changes along with them.
pub struct SiteTable {
    list: Vec<Arc<Site>>,
    by_id: HashMap<Box<str>, Arc<Site>>,
    by_host: HashMap<Box<str>, Arc<Site>>,
    /// `[retention]` as this table's configuration sets it: the flusher and
    /// imports date expiries by it, so a reload applies to the next batch.
    pub retention: Retention,
    /// `[counting] online_window`: how long the flusher keeps per-minute
    /// visitor sketches and how far back it reads `online`.
    pub online_window: Duration,
}

impl SiteTable {
    /// Builds the table; `first_seq` gives each new site's first sequence.
    pub fn new(config: &Config, first_seq: impl Fn(&SiteConfig) -> u64) -> Self {
        SiteTable::from_sites(
            config,
            config
                .sites
                .iter()
                .map(|s| Arc::new(Site::new(s, config, first_seq(s))))
                .collect(),
        )
    }

    fn from_sites(config: &Config, list: Vec<Arc<Site>>) -> Self {
        let by_id = list
            .iter()
            .map(|s| (Box::from(s.config.id.as_str()), Arc::clone(s)))
            .collect();
        let mut by_host = HashMap::new();
        for site in &list {
            for host in &site.config.hosts {
                by_host
                    .entry(host.to_ascii_lowercase().into_boxed_str())
                    .or_insert_with(|| Arc::clone(site));
            }
        }
        SiteTable {
            list,
            by_id,
            by_host,
            retention: config.retention.clone(),
            online_window: config.counting.online_window,
        }
    }

    /// The declared site `id`, if any.
    pub fn get(&self, id: &str) -> Option<&Arc<Site>> {
        self.by_id.get(id)
    }

    /// The site whose `hosts` holds `host` (lowercase).
    pub fn by_host(&self, host: &str) -> Option<&Arc<Site>> {
        self.by_host.get(host)
    }

    /// Every declared site.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Site>> {
        self.list.iter()
    }
}

/// The current site table, swappable as a whole (configuration reload).
pub struct Sites {
    table: ArcSwap<SiteTable>,
    retired: parking_lot::Mutex<Vec<Arc<Site>>>,
}

impl Sites {
    pub fn new(table: SiteTable) -> Self {
        Sites {
            table: ArcSwap::from_pointee(table),
            retired: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// The current table; cheap, lock-free, allocation-free.
    pub fn load(&self) -> Guard<Arc<SiteTable>> {
        self.table.load()
    }

    /// The current table as an owned handle, for long-running tasks.
    pub fn snapshot(&self) -> Arc<SiteTable> {
        self.table.load_full()
    }

    /// Replaces the table. Sites that the new table no longer holds are
    /// kept aside until the flusher has sent what they counted.
    pub fn swap(&self, table: SiteTable) {
        let old = self.table.swap(Arc::new(table));
        let now = self.table.load();
        let mut retired = self.retired.lock();
        for site in old.iter() {
            if now.get(&site.id).is_none() {
                retired.push(Arc::clone(site));
            }
        }
    }

    /// Sites removed by a reload that may still hold unflushed hits.
    pub fn retired(&self) -> Vec<Arc<Site>> {
        self.retired.lock().clone()
    }

    /// Forgets a retired site once everything it counted is flushed.
    pub fn forget_retired(&self, id: &str) {
        self.retired.lock().retain(|s| &*s.id != id);
    }

    /// Builds the table for a new configuration, carrying over the state of
    /// sites that stay (see [`Site::reconfigured`]); new sites start with
    /// `first_seq`.
    pub fn rebuilt(&self, config: &Config, first_seq: impl Fn(&SiteConfig) -> u64) -> SiteTable {
        let old = self.snapshot();
        let mut retired = self.retired.lock();
        SiteTable::from_sites(
            config,
            config
                .sites
                .iter()
                .map(|s| {
                    // A site removed and declared again before its last hits
                    // were sent comes back with its state: one ledger per
                    // site, or its batches' sequences would clash.
                    let revived = retired
                        .iter()
                        .position(|r| *r.id == *s.id)
                        .map(|i| retired.remove(i));
                    match old.get(&s.id).cloned().or(revived) {
                        Some(existing) => Arc::new(existing.reconfigured(s, config)),
                        None => Arc::new(Site::new(s, config, first_seq(s))),
                    }
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BatchId, Increment};

    fn site() -> Site {
        let config = Config::from_toml_str("").unwrap();
        Site::new(&config.sites[0], &config, 1)
    }

    #[test]
    fn a_top_list_is_kept_a_second_under_its_key_and_the_kept_are_bounded() {
        let site = site();
        let list: TopEntries = Arc::from(vec![("/a".to_string(), Some("A".to_string()), 3)]);
        site.keep_top_list("24h/5", 10_000, Arc::clone(&list));
        assert_eq!(site.kept_top_list("24h/5", 10_999).as_deref(), Some(&*list));
        assert!(
            site.kept_top_list("24h/5", 11_000).is_none(),
            "a second old"
        );
        assert!(site.kept_top_list("1h/5", 10_000).is_none(), "another key");
        for i in 0..TOP_LISTS_KEPT + 5 {
            site.keep_top_list(&format!("k{i}"), 20_000 + i as i64, Arc::clone(&list));
        }
        assert_eq!(site.top_lists.lock().len(), TOP_LISTS_KEPT);
        assert!(
            site.kept_top_list("k0", 20_100).is_none(),
            "the oldest went"
        );
        assert!(
            site.kept_top_list(&format!("k{}", TOP_LISTS_KEPT + 4), 20_100)
                .is_some()
        );
    }

    fn reading(site: &Site, today: Date, values: [u64; 5], watermark: u64) -> Arc<Stored> {
        Arc::new(Stored {
            keys: site.read_keys(today),
            values,
            watermark,
        })
    }

    fn batch(seq: u64, increments: Vec<Increment>) -> SiteBatch {
        SiteBatch {
            site: Arc::from("demo"),
            id: BatchId {
                producer: Arc::from("p"),
                seq,
            },
            increments,
            visitors: Vec::new(),
            breakdowns: Vec::new(),
            bounds: Default::default(),
            titles: Vec::new(),
            minute: None,
        }
    }

    fn inc(page: &str, period: PeriodKey, hits: u64) -> Increment {
        Increment {
            scope: Scope::Page(Arc::from(page)),
            period,
            hits,
            expires_at: None,
        }
    }

    /// Kept readings are rolled forward the same way whether they live in
    /// the pages' tally cells (`counted`) or in the cache of pages the tally
    /// does not keep.
    fn roll_forward_case(counted: bool) {
        let site = site();
        let today = Date::constant(2026, 11, 27);
        let keys = site.read_keys(today);
        let now_ms = 1_800_000_000_000;
        let pages = ["/next", "/ahead", "/behind", "/uncached"];
        if counted {
            for page in pages {
                site.tally.count(page, 1);
            }
        }
        // Batch 6 carried /behind's hits (a counted page's cell notes it).
        site.roll_forward(&batch(6, vec![inc("/behind", keys[1], 1)]));
        // keys: yesterday, today, week, month, total.
        for (page, watermark) in [("/next", 6), ("/ahead", 7), ("/behind", 5)] {
            let kept = reading(&site, today, [1, 2, 3, 4, 5], watermark);
            site.cache_page(&Arc::from(page), kept, now_ms);
        }
        assert_eq!(
            site.page_cache.is_empty(),
            counted,
            "where readings are kept"
        );
        let mut incs = Vec::new();
        for page in pages {
            incs.extend([
                inc(page, keys[1], 10),
                inc(page, keys[2], 10),
                inc(page, keys[3], 10),
                inc(page, PeriodKey::Total, 10),
                // A period the reading does not hold changes nothing.
                inc(page, PeriodKey::Day(today.tomorrow().unwrap()), 100),
            ]);
        }
        site.roll_forward(&batch(7, incs));
        let ttl = std::time::Duration::from_secs(60);
        let next = site.cached_page("/next", now_ms + 1_000, ttl).unwrap();
        assert_eq!(next.stored.values, [1, 12, 13, 14, 15]);
        assert_eq!(next.stored.watermark, 7);
        assert!(!next.refresh, "young");
        let ahead = site.cached_page("/ahead", now_ms, ttl).unwrap();
        assert_eq!(ahead.stored.values, [1, 2, 3, 4, 5], "already had it");
        assert!(
            site.cached_page("/behind", now_ms, ttl).is_none(),
            "a reading that missed an earlier batch is dropped"
        );
        assert!(site.cached_page("/uncached", now_ms, ttl).is_none());
        let old = now_ms + 60_000;
        if counted {
            // Used while one caller, and one only, reads the page again.
            let first = site.cached_page("/next", old, ttl).unwrap();
            assert!(first.refresh, "the first caller past the age refreshes");
            assert_eq!(first.stored.values, [1, 12, 13, 14, 15]);
            let second = site.cached_page("/next", old + 1, ttl).unwrap();
            assert!(!second.refresh, "the refresh is claimed once");
            let after = site.cached_page("/next", old + 60_000, ttl).unwrap();
            assert!(after.refresh, "claimed again once that claim is as old");
        } else {
            assert!(
                site.cached_page("/next", old, ttl).is_none(),
                "an uncounted page's reading older than its time to live is not used"
            );
        }
    }

    #[test]
    fn kept_page_readings_roll_forward_over_the_next_batch_only() {
        roll_forward_case(true);
    }

    #[test]
    fn a_counted_pages_reading_stays_complete_over_batches_without_its_hits() {
        let site = site();
        let today = Date::constant(2026, 11, 27);
        let keys = site.read_keys(today);
        let now_ms = 1_800_000_000_000;
        let ttl = std::time::Duration::from_secs(60);
        for page in ["/quiet", "/busy", "/new"] {
            site.tally.count(page, 1);
        }
        let busy = |seq| batch(seq, vec![inc("/busy", keys[1], 1)]);
        // Batch 7 carries /quiet's hits; the cell remembers it.
        site.roll_forward(&batch(7, vec![inc("/quiet", keys[1], 3)]));
        // A reading of /quiet taken at watermark 7, then batches 8 to 10
        // (others' hits, one carrying none at all) leave memory.
        site.cache_page(
            &Arc::from("/quiet"),
            reading(&site, today, [0, 3, 3, 3, 3], 7),
            now_ms,
        );
        site.roll_forward(&busy(8));
        site.roll_forward(&batch(9, Vec::new()));
        site.roll_forward(&busy(10));
        assert!(
            site.reading_complete("/quiet", 7, 11),
            "no batch after 7 carried /quiet's hits"
        );
        let kept = site.cached_page("/quiet", now_ms, ttl).unwrap();
        assert_eq!(kept.stored.watermark, 7, "not rolled: nothing to add");
        // Batch 11 carries /quiet's hits again: the reading includes every
        // batch before it that did, so it is rolled forward, not dropped.
        site.roll_forward(&batch(11, vec![inc("/quiet", keys[1], 2)]));
        let kept = site.cached_page("/quiet", now_ms, ttl).unwrap();
        assert_eq!(
            (kept.stored.values[1], kept.stored.watermark),
            (5, 11),
            "rolled over batch 11"
        );
        // A reading taken before batch 11 (watermark 10) misses it.
        assert!(!site.reading_complete("/quiet", 10, 12));
        assert!(site.reading_complete("/quiet", 11, 12));
        // A page whose cell knows no batch of its hits has had none, unless
        // a batch replayed from the write-ahead file may carry them.
        assert!(site.reading_complete("/new", 0, 12));
        site.tally.note_adopted(9);
        assert!(!site.reading_complete("/new", 8, 12));
        assert!(site.reading_complete("/new", 9, 12));
        assert!(!site.reading_complete("/uncounted", 10, 12));
        // A reading that missed a batch with the page's hits is dropped at
        // the page's next batch, as before.
        site.cache_page(
            &Arc::from("/busy"),
            reading(&site, today, [0, 1, 1, 1, 1], 8),
            now_ms,
        );
        site.roll_forward(&busy(12));
        assert!(
            site.cached_page("/busy", now_ms, ttl).is_none(),
            "missed batch 10"
        );
    }

    #[test]
    fn a_cells_batch_name_widens_to_the_latest_sequence_with_it() {
        use crate::count::tally::SiteTally;
        let t = SiteTally::new(4);
        t.count("/a", 1);
        let base = 1_764_000_000_000_000u64; // sequences start at the clock in µs
        assert_eq!(t.rolled("/a", base), Some(0), "no batch yet");
        // `before` is given to a kept reading.
        let reading = crate::store::Reading {
            values: vec![0; 5],
            watermark: 0,
            record: None,
        };
        t.remember(
            "/a",
            Arc::new(Stored::new([PeriodKey::Total; 5], &reading)),
            0,
        );
        let mut before = None;
        t.roll_reading("/a", base + 5, |_, b| {
            before = Some(b);
            None
        });
        assert_eq!(before, Some(Some(0)), "only the cell's first batch");
        assert_eq!(t.rolled("/a", base + 9), Some(base + 5));
        assert_eq!(t.rolled("/a", base + 5), Some(base + 5));
        t.roll_reading("/a", base + 7, |_, b| {
            before = Some(b);
            None
        });
        assert_eq!(before, Some(Some(base + 5)));
        t.roll_reading("/a", base + 7, |_, b| {
            before = Some(b);
            None
        });
        assert_eq!(before, Some(None), "a repeat assumes nothing");
        // A name comes round after 2^31 - 1 batches, and comes out later
        // than it was: a reading then only looks behind.
        let names = (1u64 << 31) - 1;
        let far = base + 7 + names + 3;
        assert_eq!(t.rolled("/a", far), Some(base + 7 + names));
        // Whatever the sequence, a name is never 0 (none).
        for seq in [0, names - 1, names, 2 * names] {
            t.roll_reading("/a", seq, |_, _| None);
            assert_eq!(t.rolled("/a", seq + 2), Some(seq));
        }
        assert_eq!(t.rolled("/b", base), None, "not kept");
    }

    /// A flood of reads of pages never counted fills the cache of other
    /// pages' readings: it evicts a few at a time and keeps the ones in
    /// use, rather than starting over.
    #[test]
    fn a_full_page_cache_keeps_the_readings_in_use() {
        let site = site();
        let today = Date::constant(2026, 11, 27);
        let now_ms = 1_800_000_000_000;
        let ttl = std::time::Duration::from_secs(60);
        let popular: Arc<str> = Arc::from("/popular");
        site.cache_page(&popular, reading(&site, today, [1, 2, 3, 4, 5], 1), now_ms);
        for i in 0..PAGE_CACHE_MAX + 1_000 {
            assert!(
                site.cached_page("/popular", now_ms, ttl).is_some(),
                "at {i}"
            );
            let page: Arc<str> = Arc::from(format!("/random/{i}"));
            site.cache_page(&page, reading(&site, today, [0; 5], 1), now_ms);
        }
        assert!(site.cached_page("/popular", now_ms, ttl).is_some());
        assert!(
            site.cached_page(&format!("/random/{PAGE_CACHE_MAX}"), now_ms, ttl)
                .is_some()
        );
        assert_eq!(site.page_cache.len(), PAGE_CACHE_MAX);
    }

    /// A page never counted answers zeros from the cache for the reading's
    /// time to live, over batches of other pages that leave memory
    /// meanwhile (its watermark follows them), and a batch that counts
    /// it rolls the zeros forward.
    #[test]
    fn a_never_counted_pages_zeros_stay_usable_over_other_pages_batches() {
        let site = site();
        let today = Date::constant(2026, 11, 27);
        let keys = site.read_keys(today);
        let now_ms = 1_800_000_000_000;
        let ttl = std::time::Duration::from_secs(3);
        site.cache_page(
            &Arc::from("/never"),
            reading(&site, today, [0; 5], 5),
            now_ms,
        );
        for seq in 6..=8 {
            site.roll_forward(&batch(seq, vec![inc("/other", keys[1], 1)]));
        }
        let kept = site.cached_page("/never", now_ms + 1, ttl).unwrap();
        assert_eq!(
            (kept.stored.values, kept.stored.watermark),
            ([0; 5], 8),
            "holds batches 6 to 8, which did not carry it"
        );
        site.roll_forward(&batch(9, vec![inc("/never", keys[1], 2)]));
        let kept = site.cached_page("/never", now_ms + 2, ttl).unwrap();
        assert_eq!(
            (kept.stored.values[1], kept.stored.watermark),
            (2, 9),
            "rolled forward over the batch that counted it"
        );
        assert!(
            site.cached_page("/never", now_ms + 3_000, ttl).is_none(),
            "lives no longer than a page reading"
        );
    }

    #[test]
    fn cached_page_readings_roll_forward_over_the_next_batch_only() {
        roll_forward_case(false);
    }

    #[test]
    fn the_online_history_keeps_the_most_per_minute_for_an_hour() {
        let h = OnlineHistory::default();
        let t0 = 1_800_000_000; // a minute boundary
        h.note(t0, 3);
        h.note(t0 + 10, 5);
        h.note(t0 + 20, 4);
        h.note(t0 + 120, 7);
        let points = h.points(t0 + 120);
        assert_eq!(points.len(), ONLINE_HISTORY_MINUTES);
        let m = t0 / 60;
        assert_eq!(points[59], (m + 2, 7));
        assert_eq!(points[58], (m + 1, 0), "a minute without a note reads 0");
        assert_eq!(points[57], (m, 5), "the most seen in the minute");
        // An hour on, the first minutes are gone, and so is their memory.
        h.note(t0 + 3600 + 60, 1);
        let points = h.points(t0 + 3600 + 60);
        assert!(points.iter().all(|p| p.0 > m));
        assert_eq!(h.points.lock().len(), 2);
    }
}
