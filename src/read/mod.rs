//! The read path: the figures of a site or a page, as readers see them —
//! the last store reading plus this instance's unflushed hits.
//!
//! Site readings are refreshed by the flusher every interval; page readings
//! are fetched on demand, kept (a counted page's in its tally cell), rolled
//! forward by the flusher, and read again in the background once past
//! their time to live. Reads never write figures.
//!
//! [`breakdown`] reads and shapes breakdowns (where hits came from, on
//! what) for the owner's breakdown route and the export.
//!
//! Owns `Reader` and its constants. May use `site`, `count`, `store` (the
//! trait, through the store the app hands it; never a concrete backend)
//! and the bottom.
//!
//! This module spawns nothing: a request only queues a page to be read
//! again, and the one task that reads the queue ([`Reader::refresh_until`])
//! is spawned by `app` at start and stopped and awaited at shutdown.

pub mod breakdown;
pub mod titles;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Date;

use crate::count::ledger::{Counts, Figures, Stored};
use crate::count::tally::Kept;
use crate::metrics::{PageRead, PageReadCounters, ReadRoute, StoreReadCounters};
use crate::site::Site;
use crate::store::{AnyStore, PeriodKey, Record, Scope, Store};

/// How long a page reading is reused when other instances share the store.
/// This instance's own hits are always added on top, and the flusher rolls
/// kept readings forward over every batch it applies, so a reading stays
/// complete however old; the limit is how long other instances' hits on the
/// page may take to show.
pub const PAGE_READING_TTL: Duration = Duration::from_secs(3);
/// How long a page reading is reused when this instance is the store's only
/// writer ([`Store::sole_writer`]): nothing but its own batches changes
/// the store then, and an import forgets the site's readings. The limit
/// only bounds how long a reading wrong by a bug could stay wrong.
pub const SOLE_WRITER_READING_TTL: Duration = Duration::from_secs(60);
/// How long a page read may wait on the store before the answer goes out
/// stale.
pub const PAGE_READ_TIMEOUT: Duration = Duration::from_millis(500);

/// How long the refresher, once woken, waits for other refreshes to
/// gather, so that one store call reads many pages.
const REFRESH_GATHER: Duration = Duration::from_millis(10);
/// Most pages read again in one store call.
const REFRESH_CHUNK: usize = 256;

/// Reads figures for the HTTP layer.
#[derive(Clone)]
pub struct Reader {
    store: AnyStore,
    producer: Arc<str>,
    page_ttl: Duration,
    refreshes: Arc<Refreshes>,
    reads: Arc<PageReadCounters>,
    store_reads: Arc<StoreReadCounters>,
    /// Titles of pages listed by `/pages` ([`Reader::listing`]).
    titles: Arc<titles::TitleCache>,
}

/// Pages to read again in the background, gathered so that one store call
/// reads many (see [`Reader::refresh_page`]). Bounded by the pages kept:
/// each claims a refresh at most once per time to live.
#[derive(Default)]
struct Refreshes {
    queue: parking_lot::Mutex<Vec<Refresh>>,
    /// Wakes the refresher when the queue stops being empty (a wake with
    /// nobody waiting is kept for the refresher's next wait).
    queued: tokio::sync::Notify,
}

struct Refresh {
    site: Arc<Site>,
    page: Arc<str>,
    keys: [PeriodKey; 5],
    now_ms: i64,
}

impl Reader {
    pub fn new(store: AnyStore, producer: Arc<str>) -> Self {
        let page_ttl = if store.sole_writer() {
            SOLE_WRITER_READING_TTL
        } else {
            PAGE_READING_TTL
        };
        Reader {
            store,
            producer,
            page_ttl,
            refreshes: Arc::default(),
            reads: Arc::default(),
            store_reads: Arc::default(),
            titles: Arc::default(),
        }
    }

    /// Counts a store call made to answer `route`
    /// (`luot_store_reads_total`); the reader counts its own.
    pub fn count_store_read(&self, route: ReadRoute) {
        self.store_reads.record(route);
    }

    /// How long a page reading is reused ([`PAGE_READING_TTL`] or
    /// [`SOLE_WRITER_READING_TTL`]).
    pub fn page_ttl(&self) -> Duration {
        self.page_ttl
    }

    /// This instance's producer id (its watermark names it).
    pub fn producer(&self) -> &str {
        &self.producer
    }

    /// The site's figures now. Never waits on the store.
    pub fn site_figures(&self, site: &Site, now: Timestamp) -> Figures {
        let calendar = site.calendar();
        let local = site.clock.local_day_at(now.as_second());
        let today = local.date;
        let ledger = site.ledger.read();
        let empty;
        let (stored, never_read) = match ledger.stored() {
            Some(s) => (s, false),
            None => {
                empty = Stored::empty(today, calendar);
                (&empty, true)
            }
        };
        let c = ledger.counts(&local, stored, None, &site.tally);
        let stale = ledger.stale() || never_read;
        drop(ledger);
        Figures {
            site: Arc::clone(&site.id),
            page: None,
            total: c.total.saturating_add(site.config.initial_total),
            today: c.today,
            yesterday: c.yesterday,
            week: c.week,
            month: c.month,
            online: Some(site.online_now(now)),
            visitors: site.shared_visitors.load_full().map(|v| (*v).clone()),
            record: record_now(
                site.shared_record.load().as_deref(),
                [
                    (local.date, c.today),
                    (yesterday_of(local.date), c.yesterday),
                ],
            ),
            stale,
            as_of: site.as_of(now),
        }
    }

    /// The figures of one (normalised) page now. May wait up to
    /// [`PAGE_READ_TIMEOUT`] on the store when no reading of the page is
    /// kept for today. A counted page's reading older than
    /// [`Reader::page_ttl`] is used while one caller reads the page again
    /// in the background (stale while revalidating: it already holds every
    /// hit of this instance, only other instances' recent hits may be
    /// missing); other pages' readings are read again in line.
    ///
    /// `kept` is the page's reading if the caller already holds it (the
    /// beacon answer finds it while counting the hit); otherwise the kept
    /// reading is looked up.
    pub async fn page_figures(
        &self,
        site: &Arc<Site>,
        page: &Arc<str>,
        now: Timestamp,
        mut kept: Option<Option<Kept>>,
        route: ReadRoute,
    ) -> Figures {
        let calendar = site.calendar();
        let local = site.clock.local_day_at(now.as_second());
        let today = local.date;
        let keys = site.read_keys(today);
        let now_ms = now.as_millisecond();
        let mut fresh_only = false;
        for _attempt in 0..3 {
            let cached = kept
                .take()
                .unwrap_or_else(|| site.cached_page(page, now_ms, self.page_ttl))
                .filter(|k| k.stored.keys == keys && !fresh_only);
            let (stored, stale) = match cached {
                Some(Kept { stored, refresh }) => {
                    if refresh {
                        self.refresh_page(site, page, keys, now_ms);
                    }
                    (stored, false)
                }
                // Boxed: the store's read future is large, and every
                // request's future would otherwise carry its size (and be
                // copied with it) for a read that only misses need.
                None => {
                    let read = self.read_page(site, page, keys, now_ms, fresh_only, route);
                    match Box::pin(read).await {
                        Some(s) => (s, false),
                        None => (Arc::new(Stored::empty(today, calendar)), true),
                    }
                }
            };
            let ledger = site.ledger.read();
            if !stale
                && !ledger.covers(stored.watermark)
                && !site.reading_complete(page, stored.watermark, ledger.next_seq())
            {
                // A batch this reading predates, with hits on the page, has
                // already left memory: read again rather than show a dip.
                fresh_only = true;
                continue;
            }
            let c = ledger.counts(&local, &stored, Some(page), &site.tally);
            let stale = stale || ledger.stale();
            drop(ledger);
            return page_figures(site, page, c, stale, now);
        }
        // The store keeps moving past every reading; answer with what this
        // instance knows, marked stale.
        let stored = Stored::empty(today, calendar);
        let ledger = site.ledger.read();
        let c = ledger.counts(&local, &stored, Some(page), &site.tally);
        drop(ledger);
        page_figures(site, page, c, true, now)
    }

    /// Queues `page` to be read again in the background, and wakes the
    /// refresher if the queue was empty (otherwise it is already woken, and
    /// will take this page with the others). Spawns nothing: a request must
    /// not leave work behind that shutdown does not know of.
    fn refresh_page(&self, site: &Arc<Site>, page: &Arc<str>, keys: [PeriodKey; 5], now_ms: i64) {
        let mut queue = self.refreshes.queue.lock();
        let was_empty = queue.is_empty();
        queue.push(Refresh {
            site: Arc::clone(site),
            page: Arc::clone(page),
            keys,
            now_ms,
        });
        drop(queue);
        if was_empty {
            self.refreshes.queued.notify_one();
        }
    }

    /// Reads the queued pages again until `stop` resolves, then returns
    /// (dropping a round in progress: it only reads, and what it had not
    /// kept is claimed again a time to live on). `app` runs this as one
    /// long-lived task and awaits it at shutdown, after the servers, so
    /// that refreshes go on while connections drain.
    pub async fn refresh_until(&self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => return,
                () = self.refresh_round() => {}
            }
        }
    }

    /// Waits for a queued refresh, gathers others for [`REFRESH_GATHER`],
    /// and reads what was gathered.
    async fn refresh_round(&self) {
        self.refreshes.queued.notified().await;
        tokio::time::sleep(REFRESH_GATHER).await;
        let queued = std::mem::take(&mut *self.refreshes.queue.lock());
        if !queued.is_empty() {
            self.read_again(queued).await;
        }
    }

    /// Reads `queued` again, one store call per site, day and
    /// [`REFRESH_CHUNK`] pages, and keeps the readings. A call that fails
    /// or times out drops the rest of what was taken (the store is away:
    /// one wait per round, not one per chunk); those readings stay in use
    /// and are claimed again a time to live on.
    async fn read_again(&self, mut queued: Vec<Refresh>) {
        queued.sort_by_key(|r| Arc::as_ptr(&r.site) as usize);
        let same = |a: &Refresh, b: &Refresh| Arc::ptr_eq(&a.site, &b.site) && a.keys == b.keys;
        for group in queued.chunk_by(same) {
            for chunk in group.chunks(REFRESH_CHUNK) {
                let (site, keys) = (&chunk[0].site, chunk[0].keys);
                let pages: Vec<Arc<str>> = chunk.iter().map(|r| Arc::clone(&r.page)).collect();
                self.reads.record(PageRead::Refresh, pages.len() as u64);
                self.store_reads.record(ReadRoute::Refresh);
                let read = self
                    .store
                    .read_pages(&site.id, &pages, &keys, &self.producer);
                let Ok(Ok(readings)) = tokio::time::timeout(PAGE_READ_TIMEOUT, read).await else {
                    return;
                };
                for (r, reading) in chunk.iter().zip(&readings) {
                    let stored = Arc::new(Stored::new(keys, reading));
                    r.site.cache_page(&r.page, stored, r.now_ms);
                }
                // The embedded store reads in place: let requests in
                // between chunks.
                tokio::task::yield_now().await;
            }
        }
    }

    /// Reads `page` from the store and remembers the reading; `None` when
    /// the store failed or took longer than [`PAGE_READ_TIMEOUT`].
    async fn read_page(
        &self,
        site: &Site,
        page: &Arc<str>,
        keys: [PeriodKey; 5],
        now_ms: i64,
        behind: bool,
        route: ReadRoute,
    ) -> Option<Arc<Stored>> {
        let reason = if behind {
            PageRead::Behind
        } else {
            PageRead::First
        };
        self.reads.record(reason, 1);
        self.store_reads.record(route);
        let scope = Scope::Page(Arc::clone(page));
        let read = self.store.read(&site.id, &scope, &keys, &self.producer);
        let reading = tokio::time::timeout(PAGE_READ_TIMEOUT, read)
            .await
            .ok()?
            .ok()?;
        let stored = Arc::new(Stored::new(keys, &reading));
        site.cache_page(page, Arc::clone(&stored), now_ms);
        Some(stored)
    }
}

// ---- listing pages (issue 25 §3) ----

/// Most pages one listing reads ([`Reader::listing`]); the route refuses
/// more.
pub const MAX_LISTED: usize = 100;

/// One page of a listing, as [`Reader::listing`] gives it: the page's
/// figures without its name (the caller has it; no copy per page) and
/// its kept title.
pub struct Listed {
    pub counts: Counts,
    /// Distinct visitors on the page now, when page figures carry it.
    pub online: Option<u64>,
    pub title: Option<Arc<str>>,
    pub stale: bool,
}

impl Reader {
    /// The figures and titles of `pages` (normalised, at most
    /// [`MAX_LISTED`]) of a site now, in order. Kept readings answer
    /// without the store (a page never seen included: its zeros are kept
    /// like any reading); the pages without one are read together, in one
    /// store call, and kept. Titles come from the store once per reading's
    /// time to live, and only for pages with hits (a page never counted
    /// has no title to read).
    ///
    /// Allocates per page only for what it must keep: a page read from
    /// the store (its name, for the cache) and a title read.
    pub async fn listing(&self, site: &Arc<Site>, pages: &[&str], now: Timestamp) -> Vec<Listed> {
        let local = site.clock.local_day_at(now.as_second());
        let today = local.date;
        let keys = site.read_keys(today);
        let now_ms = now.as_millisecond();
        let mut stored: Vec<Option<Arc<Stored>>> = pages
            .iter()
            .map(|page| {
                let kept = site
                    .cached_page(page, now_ms, self.page_ttl)
                    .filter(|k| k.stored.keys == keys)?;
                if kept.refresh {
                    self.refresh_page(site, &Arc::from(*page), keys, now_ms);
                }
                Some(kept.stored)
            })
            .collect();
        let missing: Vec<Arc<str>> = pages
            .iter()
            .zip(&stored)
            .filter(|(_, s)| s.is_none())
            .map(|(page, _)| Arc::from(*page))
            .collect();
        let mut failed = false;
        if !missing.is_empty() {
            self.reads.record(PageRead::First, missing.len() as u64);
            self.store_reads.record(ReadRoute::Pages);
            let read = self
                .store
                .read_pages(&site.id, &missing, &keys, &self.producer);
            match tokio::time::timeout(PAGE_READ_TIMEOUT, Box::pin(read)).await {
                Ok(Ok(readings)) if readings.len() == missing.len() => {
                    let mut read = missing.iter().zip(&readings);
                    for slot in stored.iter_mut().filter(|s| s.is_none()) {
                        let (page, reading) = read.next().expect("one reading a page");
                        let s = Arc::new(Stored::new(keys, reading));
                        site.cache_page(page, Arc::clone(&s), now_ms);
                        *slot = Some(s);
                    }
                }
                _ => failed = true,
            }
        }
        let mut listed = Vec::with_capacity(pages.len());
        let mut behind = Vec::new();
        {
            let ledger = site.ledger.read();
            for (i, (page, s)) in pages.iter().zip(&stored).enumerate() {
                let (counts, stale) = match s {
                    Some(s)
                        if !ledger.covers(s.watermark)
                            && !site.reading_complete(page, s.watermark, ledger.next_seq()) =>
                    {
                        // Rare: a batch this reading predates has left
                        // memory; read the page alone, below.
                        behind.push(i);
                        (Counts::default(), true)
                    }
                    Some(s) => (
                        ledger.counts(&local, s, Some(page), &site.tally),
                        ledger.stale(),
                    ),
                    None => {
                        let empty = Stored::empty(today, site.calendar());
                        (ledger.counts(&local, &empty, Some(page), &site.tally), true)
                    }
                };
                listed.push(Listed {
                    counts,
                    online: Some(site.page_online_now(page, now)),
                    title: None,
                    stale: stale || (failed && s.is_none()),
                });
            }
        }
        for i in behind {
            let page: Arc<str> = Arc::from(pages[i]);
            let f = self
                .page_figures(site, &page, now, None, ReadRoute::Pages)
                .await;
            listed[i].counts = Counts {
                total: f.total,
                today: f.today,
                yesterday: f.yesterday,
                week: f.week,
                month: f.month,
            };
            listed[i].online = f.online;
            listed[i].stale = f.stale;
        }
        self.list_titles(site, pages, &mut listed, now_ms).await;
        listed
    }

    /// Fills the titles of `listed`: remembered ones, else one store call
    /// for the pages with hits (a page never counted has none). A failed
    /// read leaves them `None`, not remembered.
    async fn list_titles(
        &self,
        site: &Arc<Site>,
        pages: &[&str],
        listed: &mut [Listed],
        now_ms: i64,
    ) {
        let ttl_ms = self.page_ttl.as_millis() as i64;
        let kept = self.titles.get(&site.id, pages, now_ms, ttl_ms);
        let mut wanted: Vec<usize> = Vec::new();
        for (i, title) in kept.into_iter().enumerate() {
            match title {
                Some(t) => listed[i].title = t,
                None if listed[i].counts.total > 0 => wanted.push(i),
                None => {}
            }
        }
        if wanted.is_empty() {
            return;
        }
        let names: Vec<Arc<str>> = wanted.iter().map(|&i| Arc::from(pages[i])).collect();
        self.store_reads.record(ReadRoute::Pages);
        let read = self.store.titles(&site.id, &names);
        let Ok(Ok(titles)) = tokio::time::timeout(PAGE_READ_TIMEOUT, Box::pin(read)).await else {
            return;
        };
        let mut remembered = Vec::with_capacity(names.len());
        for ((&i, name), title) in wanted.iter().zip(names).zip(titles) {
            let title: Option<Arc<str>> = title.map(Arc::from);
            listed[i].title.clone_from(&title);
            remembered.push((name, title));
        }
        self.titles.put(&site.id, remembered, now_ms, ttl_ms);
    }
}

// ---- end listing pages ----

// ---- record day (issue 25 §7) ----

/// The site's record day as readers see it: the store's, raised by today's
/// or yesterday's figures when this instance's unflushed hits already take
/// them past it (so the record is never below today's figure between a
/// flush and the next refresh). Ties keep the earlier date, as in the
/// stores.
fn record_now(stored: Option<&Record>, days: [(Date, u64); 2]) -> Option<Record> {
    let mut best = stored.copied();
    for (date, hits) in days {
        let candidate = Record { hits, date };
        if candidate.beats(best.as_ref()) {
            best = Some(candidate);
        }
    }
    best
}

fn yesterday_of(day: Date) -> Date {
    day.yesterday().unwrap_or(day)
}

// ---- end record day ----

fn page_figures(site: &Site, page: &Arc<str>, c: Counts, stale: bool, now: Timestamp) -> Figures {
    Figures {
        site: Arc::clone(&site.id),
        page: Some(Arc::clone(page)),
        total: c.total,
        today: c.today,
        yesterday: c.yesterday,
        week: c.week,
        month: c.month,
        online: Some(site.page_online_now(page, now)),
        visitors: None,
        record: None,
        stale,
        as_of: site.as_of(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::EmbeddedStore;

    fn reader(dir: &tempfile::TempDir) -> Reader {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        Reader::new(AnyStore::Embedded(store), Arc::from("p"))
    }

    fn site() -> Arc<Site> {
        let config = Config::from_toml_str("").unwrap();
        Arc::new(Site::new(&config.sites[0], &config, 1))
    }

    /// Outside a runtime `tokio::spawn` panics: a refresh that spawned its
    /// own task would fail here.
    #[test]
    fn the_record_now_is_the_stores_raised_by_today_or_yesterday() {
        let d = |n| jiff::civil::date(2026, 11, n);
        let kept = Record {
            hits: 10,
            date: d(20),
        };
        let r = |hits, date| Some(Record { hits, date });
        assert_eq!(record_now(None, [(d(27), 0), (d(26), 0)]), None);
        assert_eq!(record_now(None, [(d(27), 3), (d(26), 0)]), r(3, d(27)));
        assert_eq!(
            record_now(Some(&kept), [(d(27), 9), (d(26), 10)]),
            r(10, d(20)),
            "ties keep the earlier day"
        );
        assert_eq!(
            record_now(Some(&kept), [(d(27), 12), (d(26), 11)]),
            r(12, d(27))
        );
        assert_eq!(
            record_now(Some(&kept), [(d(27), 1), (d(26), 11)]),
            r(11, d(26))
        );
    }

    #[test]
    fn queuing_a_refresh_spawns_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let reader = reader(&dir);
        let site = site();
        let keys = site.read_keys(jiff::civil::date(2024, 5, 1));
        for page in ["/a", "/b"] {
            reader.refresh_page(&site, &Arc::from(page), keys, 0);
        }
        assert_eq!(reader.refreshes.queue.lock().len(), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_refresher_keeps_queued_readings_and_ends_when_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let reader = reader(&dir);
        let site = site();
        let now = Timestamp::now();
        let today = site.clock.local_day_at(now.as_second()).date;
        let keys = site.read_keys(today);
        let page: Arc<str> = Arc::from("/a");
        let now_ms = now.as_millisecond();
        assert!(site.cached_page(&page, now_ms, reader.page_ttl()).is_none());

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let refresher = {
            let reader = reader.clone();
            tokio::spawn(async move {
                reader
                    .refresh_until(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            })
        };
        reader.refresh_page(&site, &page, keys, now_ms);
        let kept = async {
            while site.cached_page(&page, now_ms, reader.page_ttl()).is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), kept)
            .await
            .expect("the refresher keeps the queued page's reading");
        assert!(reader.refreshes.queue.lock().is_empty());

        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), refresher)
            .await
            .expect("the refresher ends when stopped")
            .unwrap();
    }
}
