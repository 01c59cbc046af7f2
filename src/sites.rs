//! The declared sites, as a swappable snapshot, and each site's runtime
//! state: its calendar, its pending tally, its online ring, its ledger.
//!
//! Invariant: only declared sites have state. An attacker-chosen id finds
//! nothing here and creates nothing (no key, no memory). Lookups on the hot
//! path borrow the request's text; they never allocate.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption, Guard};
use dashmap::DashMap;

use crate::config::{Config, SiteConfig, SiteRules};
use crate::dedupe::DedupeFilter;
use crate::ledger::{Ledger, Stored, Visitors};
use crate::limit::{ClientLimiter, RateLimit};
use crate::metrics::SiteMetrics;
use crate::page::PageRules;
use crate::period::{DayClock, SiteCalendar};
use crate::tally::SiteTally;
use crate::visitor::{OnlineRing, VisitorBatcher};

/// Bits of each of the two dedupe filters (1 MiB of memory per site with a
/// dedupe window): about 210,000 distinct (visitor, page) pairs per window at
/// under 0.1 % false repeats.
const DEDUPE_BITS: usize = 1 << 22;

/// Most page readings kept per site; beyond it the cache starts over.
const PAGE_CACHE_MAX: usize = 50_000;

/// One declared site and everything this instance knows about it.
pub struct Site {
    pub id: Arc<str>,
    pub config: SiteConfig,
    pub clock: DayClock,
    pub rules: PageRules,
    /// The counting rules in force (global, overridden by the site's).
    pub counting: SiteRules,
    /// Per-client rate limit for this site.
    pub limiter: ClientLimiter,
    /// Repeat-view filter, when a dedupe window is set.
    pub dedupe: Option<DedupeFilter>,
    pub tally: SiteTally,
    pub online: OnlineRing,
    pub ledger: Ledger,
    /// Visitors to ship to the store's sketches (unique visitors; with
    /// Redis also `online` across instances).
    pub visitors: Option<VisitorBatcher>,
    /// Unique visitors per period as the store last said.
    pub shared_visitors: ArcSwapOption<Visitors>,
    /// Distinct visitors online across all instances, as the store last
    /// said (`u64::MAX` until it has).
    pub shared_online: AtomicU64,
    /// Distinct visitors online as this instance saw them, counted once per
    /// flush interval (a union of the window's sketches is not free, so
    /// readers do not each compute it).
    pub local_online: AtomicU64,
    /// Recent store readings of single pages (for `?page=` and the `POST
    /// /hit` answer), each with when it was taken.
    page_cache: DashMap<Arc<str>, (Stored, Instant)>,
    pub metrics: SiteMetrics,
}

impl Site {
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
        let limiter = ClientLimiter::new(RateLimit {
            per_second: counting.rate_limit_per_second,
            burst: counting.rate_limit_burst,
        });
        let dedupe = (!counting.dedupe_window.is_zero())
            .then(|| DedupeFilter::new(counting.dedupe_window, DEDUPE_BITS));
        Site {
            id: Arc::from(config.id.as_str()),
            config: config.clone(),
            clock: DayClock::new(calendar),
            rules: PageRules {
                keep_query: global.counting.keep_query,
                max_len: global.counting.max_page_length,
            },
            tally: SiteTally::new(counting.max_pages),
            counting,
            limiter,
            dedupe,
            online: OnlineRing::new(minutes),
            ledger: Ledger::new(first_seq),
            visitors: Some(VisitorBatcher::new()),
            shared_visitors: ArcSwapOption::empty(),
            shared_online: AtomicU64::new(u64::MAX),
            local_online: AtomicU64::new(0),
            page_cache: DashMap::new(),
            metrics: SiteMetrics::new(&config.id),
        }
    }

    /// Counts the visitors online now as this instance saw them (once per
    /// flush interval).
    pub fn recount_online(&self, unix_secs: i64) -> u64 {
        let n = self.online.count(unix_secs);
        self.local_online.store(n, Ordering::Release);
        n
    }

    /// Distinct visitors online (as of the last recount): what this
    /// instance saw, or what all instances saw according to the store,
    /// whichever is more.
    pub fn online_now(&self) -> u64 {
        let local = self.local_online.load(Ordering::Acquire);
        match self.shared_online.load(Ordering::Acquire) {
            u64::MAX => local,
            shared => shared.max(local),
        }
    }

    /// The site's calendar.
    pub fn calendar(&self) -> &SiteCalendar {
        self.clock.calendar()
    }

    /// A cached reading of `page` taken less than `max_age` ago.
    pub fn cached_page(&self, page: &str, max_age: std::time::Duration) -> Option<Stored> {
        let entry = self.page_cache.get(page)?;
        (entry.1.elapsed() < max_age).then(|| entry.0.clone())
    }

    /// Remembers a reading of `page`.
    pub fn cache_page(&self, page: Arc<str>, stored: Stored) {
        if self.page_cache.len() >= PAGE_CACHE_MAX {
            self.page_cache.clear();
        }
        self.page_cache.insert(page, (stored, Instant::now()));
    }
}

/// The sites of one configuration.
pub struct SiteTable {
    list: Vec<Arc<Site>>,
    by_id: HashMap<Box<str>, Arc<Site>>,
    by_host: HashMap<Box<str>, Arc<Site>>,
}

impl SiteTable {
    /// Builds the table; `first_seq` gives each new site's first sequence.
    pub fn new(config: &Config, first_seq: impl Fn(&SiteConfig) -> u64) -> Self {
        let list: Vec<Arc<Site>> = config
            .sites
            .iter()
            .map(|s| Arc::new(Site::new(s, config, first_seq(s))))
            .collect();
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
}

impl Sites {
    pub fn new(table: SiteTable) -> Self {
        Sites {
            table: ArcSwap::from_pointee(table),
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

    /// Replaces the table.
    pub fn swap(&self, table: SiteTable) {
        self.table.store(Arc::new(table));
    }
}
