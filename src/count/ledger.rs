//! The ledger of one site: what the store last said, and every hit this
//! instance has counted since that the store's answer does not include yet.
//! Readers combine the two; the flusher moves deltas through it.
//!
//! Invariant: a reader never sees a figure dip or double across a flush.
//! Pending deltas move from the tally into the ledger's `open` deltas, then
//! into a frozen batch, then into the store, and each step that moves them
//! runs under the ledger's write lock, which readers share; a batch leaves
//! memory only once a store reading whose watermark covers it is installed.
//! Nothing awaits or yields the core while holding the lock, and the hot
//! path never takes it.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::LazyLock;

use hashbrown::HashTable;
use jiff::civil::Date;
use parking_lot::{RwLock, RwLockReadGuard, RwLockUpgradableReadGuard, RwLockWriteGuard};
use serde::Serialize;

use crate::count::breakdown::DimDelta;
use crate::count::tally::{Delta, SiteTally};
use crate::period::{DayNumber, LocalDay, SiteCalendar, day_number, month_of, week_of};
use crate::store::{PeriodKey, Reading, Record, SiteBatch};

/// The figures of a site or a page, as the API and the widgets show them.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Figures {
    pub site: Arc<str>,
    pub page: Option<Arc<str>>,
    pub total: u64,
    pub today: u64,
    pub yesterday: u64,
    pub week: u64,
    pub month: u64,
    /// Distinct visitors in the online window (of the site or the page).
    pub online: Option<u64>,
    /// Site only: distinct visitors per period, as the store last said
    /// (`null` until it has been read).
    pub visitors: Option<Visitors>,
    /// Site only: the most hits in one local day and that day (`null` for
    /// a page, and before any hit).
    pub record: Option<Record>,
    /// True when the store could not be read and the figures are the last
    /// good ones plus this instance's own hits.
    pub stale: bool,
    /// When the figures were computed, in the site's time zone.
    pub as_of: Arc<str>,
}

/// Distinct visitors per period.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Visitors {
    pub today: u64,
    pub yesterday: u64,
    pub week: u64,
    pub month: u64,
    pub total: u64,
}

/// The period keys a reading at local day `day` asks for, in this order:
/// yesterday, today, this week, this month, total.
pub fn read_keys(day: Date, calendar: &SiteCalendar) -> [PeriodKey; 5] {
    [
        PeriodKey::Day(day.yesterday().unwrap_or(day)),
        PeriodKey::Day(day),
        PeriodKey::Week(week_of(day, calendar.week_start())),
        PeriodKey::Month(month_of(day)),
        PeriodKey::Total,
    ]
}

/// A store reading of one scope, with the keys it was taken for: the
/// values inline (one allocation for a cached reading, not two).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub keys: [PeriodKey; 5],
    /// `values[i]` is the stored value of `keys[i]`.
    pub values: [u64; 5],
    /// The highest batch of this instance the values include.
    pub watermark: u64,
}

impl Stored {
    /// The reading a store gave for `keys` (values it did not give are 0).
    pub fn new(keys: [PeriodKey; 5], reading: &Reading) -> Self {
        let mut values = [0; 5];
        for (v, r) in values.iter_mut().zip(&reading.values) {
            *v = *r;
        }
        Stored {
            keys,
            values,
            watermark: reading.watermark,
        }
    }

    /// A reading of nothing (a store never read, or a brand new site).
    pub fn empty(day: Date, calendar: &SiteCalendar) -> Self {
        Stored {
            keys: read_keys(day, calendar),
            values: [0; 5],
            watermark: 0,
        }
    }

    fn value(&self, key: PeriodKey) -> u64 {
        self.keys
            .iter()
            .position(|k| *k == key)
            .map_or(0, |i| self.values[i])
    }
}

/// Figures under construction: stored values plus deltas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub today: u64,
    pub yesterday: u64,
    pub week: u64,
    pub month: u64,
}

/// Computes counts at local day `today` from a store reading plus deltas.
struct Composer {
    today_n: DayNumber,
    /// Day numbers of the first day of this week and of this month: a
    /// delta up to today is in the week (month) when it is on or after it.
    week_n: DayNumber,
    month_n: DayNumber,
    counts: Counts,
}

impl Composer {
    fn new(today: &LocalDay, stored: &Stored) -> Self {
        let counts = Counts {
            total: stored.value(PeriodKey::Total),
            today: stored.value(PeriodKey::Day(today.date)),
            yesterday: today
                .yesterday
                .map(|y| stored.value(PeriodKey::Day(y)))
                .unwrap_or(0),
            week: stored.value(PeriodKey::Week(today.week)),
            month: stored.value(PeriodKey::Month(today.month)),
        };
        Composer {
            today_n: today.day_n,
            week_n: today.week_n,
            month_n: today.month_n,
            counts,
        }
    }

    fn add(&mut self, day: DayNumber, hits: u64) {
        let c = &mut self.counts;
        c.total += hits;
        if day == self.today_n {
            c.today += hits;
        } else if day + 1 == self.today_n {
            c.yesterday += hits;
        }
        if day > self.today_n {
            // A hit stamped after "now" (the reader's clock lags a
            // concurrent hit's by a moment): it belongs to no figure of
            // this reading but the total.
            return;
        }
        if day >= self.week_n {
            c.week += hits;
        }
        if day >= self.month_n {
            c.month += hits;
        }
    }
}

/// A batch on its way to the store, and the deltas it carries (for reads).
struct Frozen {
    batch: Arc<SiteBatch>,
    deltas: Deltas,
    /// The breakdown deltas in the batch (kept to rebuild a folded tail).
    dims: Vec<DimDelta>,
    acked: bool,
    /// Handed to the store at least once: from then on it never changes.
    sent: bool,
    /// In the write-ahead file (appended, or replayed from it).
    logged: bool,
}

/// Deltas sorted by scope (the site first, then pages in order) and day,
/// one per (scope, day), with a hash index from each page to its run. The
/// flusher builds a batch from the list as it is; a reader finds one page's
/// deltas with one hash probe and one string comparison.
///
/// A sorted vector rather than a map of per-page lists: 32 bytes per
/// (scope, day) plus about 10 for the index, where a hash map entry and its
/// list cost some 140; the ledger holds two of these (open and frozen),
/// each as large as the pages touched in a flush interval. (A binary search instead of the index
/// cost 1.7 µs per page read over five sets of 10,000 pages — cache misses
/// on the way down — against 0.3 µs; `cargo bench --bench hot_path`.)
#[derive(Debug, Default)]
pub struct Deltas {
    list: Vec<Delta>,
    /// `(start, len)` in `list` of each page's run, by [`scope_hash`].
    index: HashTable<(u32, u32)>,
}

/// The hash of a page in every [`Deltas`] index: one process-wide keyed
/// hasher, so a reader hashes a page once for all the sets it searches.
fn scope_hash(page: &str) -> u64 {
    static HASHER: LazyLock<RandomState> = LazyLock::new(RandomState::new);
    HASHER.hash_one(page)
}

/// Deltas sorted at once when taken in (see [`Deltas::settle`]).
const SORT_CHUNK: usize = 1024;

/// The order of [`Deltas`]: by scope (`None`, the site, first), then day.
fn by_scope_and_day(a: &Delta, b: &Delta) -> std::cmp::Ordering {
    (a.page.as_deref(), a.day).cmp(&(b.page.as_deref(), b.day))
}

impl Deltas {
    /// Restores the order after deltas were pushed past the first `sorted`
    /// (which are in order), adding up those of the same scope and day.
    fn settle(&mut self, sorted: usize) {
        self.settle_in(sorted, SORT_CHUNK);
    }

    /// [`Deltas::settle`] with the new deltas sorted `chunk` at a time.
    fn settle_in(&mut self, sorted: usize, chunk: usize) {
        let v = &mut self.list;
        // The new deltas sorted a chunk at a time, each well under the
        // flusher's pacing step (sorting 10,000 pages' deltas at once held
        // the core 0.8 ms), then the sorted runs merged by the stable sort,
        // which finds them: a few passes of comparisons instead of a sort.
        for part in v[sorted..].chunks_mut(chunk) {
            part.sort_unstable_by(by_scope_and_day);
            crate::background::pace();
        }
        if (sorted > 0 && sorted < v.len()) || v.len() - sorted > chunk {
            v.sort_by(by_scope_and_day);
        }
        v.dedup_by(|later, kept| {
            let same = later.page == kept.page && later.day == kept.day;
            if same {
                kept.hits += later.hits;
            }
            same
        });
        self.reindex();
    }

    /// Rebuilds the index from the (sorted) list.
    fn reindex(&mut self) {
        self.index.clear();
        let list = &self.list;
        let rehash = |&(i, _): &(u32, u32)| list[i as usize].page.as_deref().map_or(0, scope_hash);
        // Room for every run at once: growing instead rehashed each page
        // (a SipHash of its name) at every doubling, under the ledger's
        // write lock (18 % of taking 10,000 pages' hits in, perf).
        self.index.reserve(list.len(), rehash);
        let mut start = 0;
        while start < list.len() {
            let page = list[start].page.as_deref();
            let len = list[start..]
                .iter()
                .take_while(|d| d.page.as_deref() == page)
                .count();
            if let Some(p) = page {
                let entry = (start as u32, len as u32);
                self.index.insert_unique(scope_hash(p), entry, rehash);
            }
            start += len;
            crate::background::pace();
        }
    }

    /// The deltas of one scope, by day; `hash` is [`scope_hash`] of the
    /// page (unused for the site).
    fn of(&self, page: Option<&str>, hash: u64) -> &[Delta] {
        let Some(page) = page else {
            let len = self.list.iter().take_while(|d| d.page.is_none()).count();
            return &self.list[..len];
        };
        let found = self.index.find(hash, |&(i, _)| {
            self.list[i as usize].page.as_deref() == Some(page)
        });
        match found {
            Some(&(start, len)) => &self.list[start as usize..(start + len) as usize],
            None => &[],
        }
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Adds every delta of `other`.
    fn merge(&mut self, other: Deltas) {
        let sorted = self.list.len();
        self.list.extend(other.list);
        self.settle(sorted);
    }

    /// Distinct (scope, day) keys.
    fn len(&self) -> usize {
        self.list.len()
    }

    /// Splits off the deltas from `at` on (both halves stay sorted).
    fn split_off(&mut self, at: usize) -> Deltas {
        let mut tail = Deltas {
            list: self.list.split_off(at),
            index: HashTable::new(),
        };
        tail.reindex();
        self.reindex();
        tail
    }

    /// Gives back the room left over from growing: these deltas will not
    /// grow again.
    fn freeze(mut self) -> Self {
        self.list.shrink_to_fit();
        self.index
            .shrink_to_fit(|&(i, _)| self.list[i as usize].page.as_deref().map_or(0, scope_hash));
        self
    }

    fn as_slice(&self) -> &[Delta] {
        &self.list
    }
}

struct State {
    /// The site's figures as the store last answered, with this producer's
    /// watermark.
    stored: Option<Stored>,
    /// Whether the last attempt to read the store failed.
    stale: bool,
    /// Deltas taken from the tally, not yet in a batch.
    open: Deltas,
    /// Breakdown deltas taken from the site's breakdowns, not yet in a
    /// batch (summed when a batch is built).
    open_dims: Vec<DimDelta>,
    /// Page titles changed since the last batch, oldest first (a page
    /// may repeat: the last one wins, see [`with_titles`]).
    open_titles: Vec<(Arc<str>, Arc<str>)>,
    /// Frozen batches in sequence order. Only the first is ever sent, so a
    /// site's batches reach the store strictly in order; more than one
    /// exists only after a replay or a shutdown that froze what remained.
    frozen: VecDeque<Frozen>,
    /// Every batch with a sequence at or below this has left memory, so a
    /// reading older than it would miss hits.
    dropped_through: u64,
    /// The next batch's sequence number.
    next_seq: u64,
}

/// The ledger of one site.
pub struct Ledger {
    state: RwLock<State>,
}

/// Read access for composing figures.
pub struct LedgerRead<'l> {
    state: RwLockReadGuard<'l, State>,
}

/// What the flusher does with the ledger, under its write lock. Pacing
/// is suspended while it lives ([`crate::background::Unpaced`]): readers
/// wait for this lock, so it is never held across a yield.
pub struct LedgerWrite<'l> {
    state: RwLockWriteGuard<'l, State>,
    _unpaced: crate::background::Unpaced,
}

impl Ledger {
    /// An empty ledger whose first batch will carry `first_seq`.
    pub fn new(first_seq: u64) -> Self {
        Ledger {
            state: RwLock::new(State {
                stored: None,
                stale: false,
                open: Deltas::default(),
                open_dims: Vec::new(),
                open_titles: Vec::new(),
                frozen: VecDeque::new(),
                dropped_through: 0,
                next_seq: first_seq.max(1),
            }),
        }
    }

    /// Takes the read lock (shared with other readers, exclusive of the
    /// flusher's short write sections).
    pub fn read(&self) -> LedgerRead<'_> {
        LedgerRead {
            state: self.state.read(),
        }
    }

    /// Takes the write lock, for the flusher.
    pub fn write(&self) -> LedgerWrite<'_> {
        LedgerWrite {
            state: self.state.write(),
            _unpaced: crate::background::Unpaced::new(),
        }
    }

    /// Queues a batch recovered from the write-ahead file, to be sent before
    /// anything new. Its deltas are sorted before the write lock is taken.
    pub fn adopt(&self, batch: SiteBatch) {
        let deltas = adopted_deltas(&batch);
        let dims = adopted_dims(&batch);
        self.write().adopt_with(batch, deltas, dims);
    }

    /// The batch to send: the frozen one if it is not acknowledged yet
    /// (retried unchanged), else a new one of at most `max_keys` open deltas
    /// (the first, in scope order; the rest stay open) built by `build`
    /// (given the sequence number and the deltas). `None` when there is
    /// nothing to send, or when an acknowledged batch waits for a reading
    /// that covers it. `also_when_empty` freezes a batch even without open
    /// deltas (it carries visitors only).
    ///
    /// The batch is built under an upgradable read lock, which readers
    /// share and which keeps every writer out, so the deltas stay as read;
    /// the write lock is taken only to move them (measured: building 10,000
    /// keys' batch held answers up for 1–4 ms once a second).
    pub fn next_batch(
        &self,
        also_when_empty: bool,
        max_keys: usize,
        build: impl FnOnce(u64, &[Delta], &[DimDelta]) -> SiteBatch,
    ) -> Option<ToSend> {
        let state = self.state.upgradable_read();
        if state.frozen.iter().any(|f| !f.acked) {
            let _unpaced = crate::background::Unpaced::new();
            let mut state = RwLockUpgradableReadGuard::upgrade(state);
            let f = state.frozen.iter_mut().find(|f| !f.acked)?;
            let fresh = !f.logged;
            f.logged = true;
            f.sent = true;
            return Some(ToSend {
                batch: Arc::clone(&f.batch),
                fresh,
            });
        }
        if !state.frozen.is_empty()
            || (state.open.is_empty()
                && state.open_dims.is_empty()
                && state.open_titles.is_empty()
                && !also_when_empty)
        {
            return None;
        }
        let n = state.open.len().min(max_keys.max(1));
        let n_dims = state.open_dims.len().min(max_keys.max(1));
        let batch = Arc::new(with_titles(
            build(
                state.next_seq,
                &state.open.as_slice()[..n],
                &state.open_dims[..n_dims],
            ),
            &[],
            &state.open_titles,
        ));
        let mut write = LedgerWrite {
            state: RwLockUpgradableReadGuard::upgrade(state),
            _unpaced: crate::background::Unpaced::new(),
        };
        write.freeze_built(n, n_dims, Arc::clone(&batch));
        if let Some(f) = write.state.frozen.back_mut() {
            f.logged = true;
            f.sent = true;
        }
        Some(ToSend { batch, fresh: true })
    }
}

impl LedgerRead<'_> {
    /// The site's stored reading, if the store was ever read.
    pub fn stored(&self) -> Option<&Stored> {
        self.state.stored.as_ref()
    }

    /// Distinct (scope, day) keys taken from the tally and not yet in a
    /// batch.
    pub fn open_keys(&self) -> usize {
        self.state.open.len() + self.state.open_dims.len()
    }

    /// Whether the last store read failed.
    pub fn stale(&self) -> bool {
        self.state.stale
    }

    /// The next batch's sequence: later than every batch frozen so far.
    pub fn next_seq(&self) -> u64 {
        self.state.next_seq
    }

    /// Whether a reading with `watermark` can be combined with what the
    /// ledger holds without missing a batch.
    pub fn covers(&self, watermark: u64) -> bool {
        watermark >= self.state.dropped_through
    }

    /// This instance's hits on `page` (or the site) per local day that a
    /// store reading with `watermark` does not include, for daily series.
    pub fn pending_days(
        &self,
        page: Option<&str>,
        watermark: u64,
        tally: &SiteTally,
    ) -> Vec<(DayNumber, u64)> {
        let hash = page.map_or(0, scope_hash);
        let mut days: Vec<(DayNumber, u64)> = Vec::new();
        let mut add = |day: DayNumber, hits: u64| match days.iter_mut().find(|d| d.0 == day) {
            Some(d) => d.1 += hits,
            None => days.push((day, hits)),
        };
        let frozen = self
            .state
            .frozen
            .iter()
            .map(|f| (f.batch.id.seq, &f.deltas));
        for (seq, deltas) in frozen {
            if seq > watermark {
                for d in deltas.of(page, hash) {
                    add(d.day, d.hits);
                }
            }
        }
        for d in self.state.open.of(page, hash) {
            add(d.day, d.hits);
        }
        tally.peek(page, &mut add);
        tally.peek_spill(|d| {
            if d.page.as_deref() == page {
                add(d.day, d.hits)
            }
        });
        days
    }

    /// Counts of `page` (or the site, `None`) at local day `today`: the
    /// stored reading plus every delta of this instance it does not include.
    pub fn counts(
        &self,
        today: &LocalDay,
        stored: &Stored,
        page: Option<&str>,
        tally: &SiteTally,
    ) -> Counts {
        let mut c = Composer::new(today, stored);
        let hash = page.map_or(0, scope_hash);
        let wanted = |p: &Option<Arc<str>>| p.as_deref() == page;
        let frozen = self
            .state
            .frozen
            .iter()
            .map(|f| (f.batch.id.seq, &f.deltas));
        for (seq, deltas) in frozen {
            if seq > stored.watermark {
                for d in deltas.of(page, hash) {
                    c.add(d.day, d.hits);
                }
            }
        }
        for d in self.state.open.of(page, hash) {
            c.add(d.day, d.hits);
        }
        tally.peek(page, |day, n| c.add(day, n));
        tally.peek_spill(|d| {
            if wanted(&d.page) {
                c.add(d.day, d.hits)
            }
        });
        c.counts
    }
}

/// The batches a reading let go ([`LedgerWrite::install`]), to free once
/// the ledger's lock is released: dropping it frees them at once;
/// [`Released::free`] frees them a piece at a time on the flusher's thread.
pub struct Released(Vec<Frozen>);

impl Released {
    /// Frees the batches' deltas and increments, yielding the core between
    /// pieces ([`crate::background::pace`]): at once, a 10,000-page batch
    /// held it 0.6 ms, under the ledger's lock then.
    pub fn free(self) {
        for frozen in self.0 {
            let Frozen { batch, deltas, .. } = frozen;
            free_paced(deltas.list);
            if let Ok(SiteBatch { increments, .. }) = Arc::try_unwrap(batch) {
                free_paced(increments);
            }
        }
    }
}

/// Drops `items` a few dozen at a time between [`crate::background::pace`]s.
fn free_paced<T>(items: Vec<T>) {
    for (i, item) in items.into_iter().enumerate() {
        drop(item);
        if i % 64 == 63 {
            crate::background::pace();
        }
    }
}

/// The deltas of a batch recovered from the write-ahead file: its day
/// increments (for reads), sorted and indexed (paced: no lock is held).
fn adopted_deltas(batch: &SiteBatch) -> Deltas {
    let mut deltas = Deltas::default();
    for inc in &batch.increments {
        if let PeriodKey::Day(day) = inc.period {
            let page = match &inc.scope {
                crate::store::Scope::Site => None,
                crate::store::Scope::Page(p) => Some(Arc::clone(p)),
            };
            deltas.list.push(Delta {
                page,
                day: day_number(day),
                hits: inc.hits,
            });
        }
    }
    deltas.settle(0);
    deltas.freeze()
}

/// The breakdown deltas of a batch recovered from the write-ahead file.
fn adopted_dims(batch: &SiteBatch) -> Vec<DimDelta> {
    batch
        .breakdowns
        .iter()
        .map(|b| DimDelta {
            page: match &b.scope {
                crate::store::Scope::Site => None,
                crate::store::Scope::Page(p) => Some(Arc::clone(p)),
            },
            dimension: b.dimension,
            day: day_number(b.day),
            value: Arc::clone(&b.value),
            hits: b.hits,
        })
        .collect()
}

/// `batch` carrying the titles of `older` (a folded tail's) and `newer`
/// (open ones, oldest first): each page once, with its last title.
fn with_titles(
    mut batch: SiteBatch,
    older: &[(Arc<str>, Arc<str>)],
    newer: &[(Arc<str>, Arc<str>)],
) -> SiteBatch {
    if older.is_empty() && newer.is_empty() {
        return batch;
    }
    let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let all: Vec<&(Arc<str>, Arc<str>)> = older.iter().chain(newer).collect();
    for (i, (page, _)) in all.iter().enumerate() {
        last.insert(page, i);
    }
    batch.titles = all
        .iter()
        .enumerate()
        .filter(|(i, (page, _))| last.get(&**page) == Some(i))
        .map(|(_, t)| (*t).clone())
        .collect();
    batch
}

/// What the flusher should send next.
pub struct ToSend {
    pub batch: Arc<SiteBatch>,
    /// True when the batch was frozen just now (it must reach the
    /// write-ahead file before it is sent); false for a retry.
    pub fresh: bool,
}

impl LedgerWrite<'_> {
    /// Moves every pending delta from the tally into the open deltas.
    /// Returns how many distinct keys are now open.
    /// Adds breakdown deltas taken from the site's breakdowns (outside the
    /// lock: taking them paces).
    pub fn add_dims(&mut self, dims: &mut Vec<DimDelta>) {
        self.state.open_dims.append(dims);
    }

    /// Adds page titles taken from the site's titles (changed ones, in
    /// the order they were taken): the next batch carries them.
    pub fn add_titles(&mut self, titles: &mut Vec<(Arc<str>, Arc<str>)>) {
        self.state.open_titles.append(titles);
    }

    pub fn take_from(&mut self, tally: &SiteTally) -> usize {
        let open = &mut self.state.open;
        let sorted = open.len();
        tally.take(&mut open.list);
        open.settle(sorted);
        open.len()
    }

    /// Freezes the open deltas into a new batch queued behind any frozen
    /// ones (at shutdown, so the write-ahead file keeps them). `None` when
    /// nothing is open, unless `also_when_empty`.
    pub fn freeze(
        &mut self,
        also_when_empty: bool,
        build: impl FnOnce(u64, &[Delta], &[DimDelta]) -> SiteBatch,
    ) -> Option<Arc<SiteBatch>> {
        if self.state.open.is_empty()
            && self.state.open_dims.is_empty()
            && self.state.open_titles.is_empty()
            && !also_when_empty
        {
            return None;
        }
        let n = self.state.open.len();
        let n_dims = self.state.open_dims.len();
        let batch = Arc::new(with_titles(
            build(
                self.state.next_seq,
                self.state.open.as_slice(),
                &self.state.open_dims,
            ),
            &[],
            &self.state.open_titles,
        ));
        self.freeze_built(n, n_dims, Arc::clone(&batch));
        Some(batch)
    }

    /// Freezes the first `n` open deltas and `n_dims` breakdown deltas
    /// with `batch`, built from them under the next sequence number.
    fn freeze_built(&mut self, n: usize, n_dims: usize, batch: Arc<SiteBatch>) {
        let mut deltas = std::mem::take(&mut self.state.open);
        if deltas.len() > n {
            self.state.open = deltas.split_off(n);
        }
        let mut dims = std::mem::take(&mut self.state.open_dims);
        if dims.len() > n_dims {
            self.state.open_dims = dims.split_off(n_dims);
        }
        // Every open title went into the batch.
        self.state.open_titles.clear();
        self.state.next_seq += 1;
        self.state.frozen.push_back(Frozen {
            batch,
            deltas: deltas.freeze(),
            dims,
            acked: false,
            sent: false,
            logged: false,
        });
    }

    /// While a batch is in flight and unanswered (the store is away), folds
    /// the open deltas into one unsent tail batch — the same sequence each
    /// time, rebuilt — and returns it so the caller writes it ahead again
    /// (the write-ahead file keeps the latest record of a sequence). A crash
    /// during an outage then loses at most one flush interval, and memory
    /// stays bounded by keys. `None` when nothing is in flight or open.
    pub fn fold_open(
        &mut self,
        build: impl FnOnce(u64, &[Delta], &[DimDelta]) -> SiteBatch,
    ) -> Option<Arc<SiteBatch>> {
        let in_flight = self.state.frozen.iter().any(|f| f.sent && !f.acked);
        if !in_flight
            || (self.state.open.is_empty()
                && self.state.open_dims.is_empty()
                && self.state.open_titles.is_empty())
        {
            return None;
        }
        let open = std::mem::take(&mut self.state.open);
        let mut open_dims = std::mem::take(&mut self.state.open_dims);
        let titles = std::mem::take(&mut self.state.open_titles);
        match self.state.frozen.back_mut() {
            Some(tail) if !tail.sent => {
                tail.deltas.merge(open);
                tail.dims.append(&mut open_dims);
                let batch = Arc::new(with_titles(
                    build(tail.batch.id.seq, tail.deltas.as_slice(), &tail.dims),
                    &tail.batch.titles,
                    &titles,
                ));
                tail.batch = Arc::clone(&batch);
                tail.logged = true;
                Some(batch)
            }
            _ => {
                self.state.open = open;
                self.state.open_dims = open_dims;
                self.state.open_titles = titles;
                let batch = self.freeze(false, build)?;
                if let Some(f) = self.state.frozen.back_mut() {
                    f.logged = true;
                }
                Some(batch)
            }
        }
    }

    /// Queues `batch` (recovered from the write-ahead file) with its
    /// `deltas` ([`adopted_deltas`]) behind the frozen batches.
    fn adopt_with(&mut self, batch: SiteBatch, deltas: Deltas, dims: Vec<DimDelta>) {
        self.state.next_seq = self.state.next_seq.max(batch.id.seq + 1);
        self.state.frozen.push_back(Frozen {
            batch: Arc::new(batch),
            deltas,
            dims,
            acked: false,
            sent: false,
            logged: true,
        });
    }

    /// Records that the store acknowledged batch `seq` (applied now, or
    /// found applied before).
    pub fn acknowledge(&mut self, seq: u64) {
        if let Some(f) = self.state.frozen.iter_mut().find(|f| f.batch.id.seq == seq) {
            f.acked = true;
        }
    }

    /// Installs a fresh store reading of the site. A batch leaves memory
    /// as soon as the reading's watermark covers it; from then on a reading
    /// older than the batch no longer [`covers`](LedgerRead::covers) (page
    /// readings are rolled forward over each applied batch instead, see
    /// `Site::roll_forward`).
    pub fn install(&mut self, stored: Stored) -> Released {
        let mark = stored.watermark;
        let mut released = Vec::new();
        while let Some(f) = self.state.frozen.front()
            && f.acked
            && mark >= f.batch.id.seq
        {
            if let Some(f) = self.state.frozen.pop_front() {
                self.state.dropped_through = self.state.dropped_through.max(f.batch.id.seq);
                released.push(f);
            }
        }
        self.state.stored = Some(stored);
        self.state.stale = false;
        Released(released)
    }

    /// Records that reading the store failed; readers say `stale`.
    pub fn mark_stale(&mut self) {
        self.state.stale = true;
    }

    /// Whether anything is still to be flushed.
    pub fn is_idle(&self) -> bool {
        self.state.open.is_empty()
            && self.state.open_dims.is_empty()
            && self.state.open_titles.is_empty()
            && self.state.frozen.is_empty()
    }

    /// Number of keys waiting: open deltas plus the frozen batch's.
    pub fn pending_keys(&self) -> usize {
        self.state.open.len()
            + self.state.open_dims.len()
            + self
                .state
                .frozen
                .iter()
                .map(|f| f.deltas.len() + f.dims.len())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::WeekStart;
    use crate::store::{BatchId, Increment, Scope};

    fn cal() -> SiteCalendar {
        SiteCalendar::new(
            jiff::tz::TimeZone::get("Asia/Ho_Chi_Minh").unwrap(),
            WeekStart::Monday,
        )
    }

    fn build(seq: u64, deltas: &[Delta], _: &[DimDelta]) -> SiteBatch {
        SiteBatch {
            site: Arc::from("demo"),
            id: BatchId {
                producer: Arc::from("p"),
                seq,
            },
            increments: deltas
                .iter()
                .map(|d| Increment {
                    scope: d.page.clone().map_or(Scope::Site, Scope::Page),
                    period: PeriodKey::Total,
                    hits: d.hits,
                    expires_at: None,
                })
                .collect(),
            visitors: Vec::new(),
            breakdowns: Vec::new(),
            bounds: Default::default(),
            titles: Vec::new(),
            minute: None,
        }
    }

    fn stored_total(today: Date, total: u64, watermark: u64) -> Stored {
        let mut s = Stored::empty(today, &cal());
        s.values[4] = total;
        s.watermark = watermark;
        s
    }

    #[test]
    fn figures_never_dip_or_double_through_a_whole_flush() {
        let cal = cal();
        let today = Date::constant(2026, 11, 27);
        let d = day_number(today);
        let tally = SiteTally::new(10);
        let ledger = Ledger::new(1);
        ledger.write().install(stored_total(today, 100, 0));
        let total = |l: &Ledger| {
            let r = l.read();
            let s = r.stored().unwrap().clone();
            r.counts(&LocalDay::of(&cal, today), &s, None, &tally).total
        };
        for _ in 0..5 {
            tally.count("/a", d);
        }
        assert_eq!(total(&ledger), 105);
        ledger.write().take_from(&tally);
        assert_eq!(total(&ledger), 105, "after take");
        let send = ledger.next_batch(false, usize::MAX, build).unwrap();
        assert_eq!(total(&ledger), 105, "after freeze");
        tally.count("/a", d);
        assert_eq!(
            total(&ledger),
            106,
            "a new hit while the batch is in flight"
        );
        ledger.write().acknowledge(send.batch.id.seq);
        assert_eq!(total(&ledger), 106, "after ack, before the store is read");
        // A stale reading (before the batch) keeps the batch in memory.
        let kept = ledger.write().install(stored_total(today, 100, 0));
        assert_eq!(kept.0.len(), 0);
        assert_eq!(total(&ledger), 106);
        // The reading that includes the batch releases it, handed back to
        // be freed outside the lock; then only this test holds it.
        let released = ledger
            .write()
            .install(stored_total(today, 105, send.batch.id.seq));
        assert_eq!(released.0.len(), 1);
        assert_eq!(total(&ledger), 106, "after the covering reading");
        released.free();
        assert_eq!(Arc::strong_count(&send.batch), 1);
        // An older reading (a page read before the flush) can no longer be
        // completed: readers must read again (or hold a reading rolled
        // forward over the batch).
        assert!(!ledger.read().covers(0));
        assert!(ledger.read().covers(send.batch.id.seq));
        assert!(
            ledger.next_batch(false, usize::MAX, build).is_none(),
            "the new hit is still in the tally"
        );
    }

    #[test]
    fn open_deltas_leave_in_batches_of_at_most_max_keys_without_dip_or_double() {
        let cal = cal();
        let today = Date::constant(2026, 11, 27);
        let d = day_number(today);
        let tally = SiteTally::new(100);
        let ledger = Ledger::new(1);
        ledger.write().install(stored_total(today, 0, 0));
        let pages: Vec<String> = (0..10).map(|i| format!("/p{i}")).collect();
        for p in &pages {
            tally.count(p, d);
        }
        // The site plus ten pages: eleven keys, in batches of four.
        assert_eq!(ledger.write().take_from(&tally), 11);
        let mut keys_sent = 0;
        let mut seen = Vec::new();
        // What the store holds: the scopes of applied batches, and the
        // last applied sequence.
        let mut stored_scopes: Vec<Scope> = Vec::new();
        let mut mark = 0;
        for round in 0..3 {
            let send = ledger.next_batch(false, 4, build).unwrap();
            let keys = send.batch.increments.len();
            assert_eq!(keys, if round < 2 { 4 } else { 3 }, "round {round}");
            seen.extend(send.batch.increments.iter().map(|i| i.scope.clone()));
            keys_sent += send.batch.increments.len();
            // Every page reads 1 and the site 10 throughout, whether its
            // hit is in the store, the frozen batch or the open deltas.
            let reading = |scope: Scope, stored_scopes: &[Scope], mark: u64| {
                let in_store = match scope {
                    Scope::Site if stored_scopes.contains(&Scope::Site) => 10,
                    s if stored_scopes.contains(&s) => 1,
                    _ => 0,
                };
                stored_total(today, in_store, mark)
            };
            {
                let r = ledger.read();
                assert!(r.covers(mark));
                let site = reading(Scope::Site, &stored_scopes, mark);
                assert_eq!(
                    r.counts(&LocalDay::of(&cal, today), &site, None, &tally)
                        .total,
                    10
                );
                for p in &pages {
                    let page = reading(Scope::Page(Arc::from(p.as_str())), &stored_scopes, mark);
                    let got = r
                        .counts(&LocalDay::of(&cal, today), &page, Some(p), &tally)
                        .total;
                    assert_eq!(got, 1, "{p} in round {round}");
                }
            }
            ledger.write().acknowledge(send.batch.id.seq);
            assert!(
                ledger.next_batch(false, 4, build).is_none(),
                "the next batch waits for a covering reading"
            );
            stored_scopes.extend(send.batch.increments.iter().map(|i| i.scope.clone()));
            mark = send.batch.id.seq;
            ledger
                .write()
                .install(reading(Scope::Site, &stored_scopes, mark));
            let r = ledger.read();
            let s = r.stored().unwrap().clone();
            assert_eq!(
                r.counts(&LocalDay::of(&cal, today), &s, None, &tally).total,
                10
            );
        }
        assert_eq!(keys_sent, 11);
        assert_eq!(ledger.read().open_keys(), 0);
        seen.sort_by(|a, b| a.as_key().cmp(b.as_key()));
        seen.dedup();
        assert_eq!(seen.len(), 11, "every key sent exactly once");
    }

    /// A batch whose breakdowns are the dimension deltas' hits, by value.
    fn build_dims(seq: u64, deltas: &[Delta], dims: &[DimDelta]) -> SiteBatch {
        let mut batch = build(seq, deltas, dims);
        batch.breakdowns = dims
            .iter()
            .map(|d| crate::store::BreakdownIncrement {
                scope: Scope::Site,
                dimension: d.dimension,
                day: Date::constant(2026, 11, 27),
                value: Arc::clone(&d.value),
                hits: d.hits,
                expires_at: None,
            })
            .collect();
        batch
    }

    fn dim(value: &str, hits: u64) -> DimDelta {
        DimDelta {
            page: None,
            dimension: crate::store::Dimension::Source,
            day: 1,
            value: Arc::from(value),
            hits,
        }
    }

    #[test]
    fn titles_ride_in_exactly_one_batch_through_folds_and_retries() {
        let ledger = Ledger::new(1);
        let t = |p: &str, x: &str| (Arc::<str>::from(p), Arc::<str>::from(x));
        let shown = |b: &SiteBatch| {
            let mut v: Vec<(String, String)> = b
                .titles
                .iter()
                .map(|(p, x)| (p.to_string(), x.to_string()))
                .collect();
            v.sort();
            v
        };
        let pair = |p: &str, x: &str| (p.to_string(), x.to_string());
        ledger
            .write()
            .add_titles(&mut vec![t("/a", "A1"), t("/b", "B"), t("/a", "A2")]);
        assert!(!ledger.write().is_idle());
        let first = ledger.next_batch(false, usize::MAX, build).unwrap();
        assert_eq!(
            shown(&first.batch),
            vec![pair("/a", "A2"), pair("/b", "B")],
            "titles alone make a batch, each page once with its last title"
        );
        // Unanswered: later titles fold into one tail, the last one kept.
        ledger.write().add_titles(&mut vec![t("/a", "A3")]);
        ledger.write().fold_open(build).expect("a tail");
        ledger.write().add_titles(&mut vec![t("/c", "C")]);
        ledger.write().fold_open(build).expect("a tail");
        let again = ledger.next_batch(false, usize::MAX, build).unwrap();
        assert_eq!(again.batch, first.batch, "the retry is unchanged");
        ledger.write().acknowledge(first.batch.id.seq);
        let tail = ledger.next_batch(false, usize::MAX, build).unwrap();
        assert_eq!(shown(&tail.batch), vec![pair("/a", "A3"), pair("/c", "C")]);
        ledger.write().acknowledge(tail.batch.id.seq);
        assert!(ledger.next_batch(false, usize::MAX, build).is_none());
    }

    #[test]
    fn breakdowns_ride_in_exactly_one_batch_through_folds_and_retries() {
        let ledger = Ledger::new(1);
        ledger.write().add_dims(&mut vec![dim("Zalo", 2)]);
        assert!(!ledger.write().is_idle());
        let first = ledger.next_batch(false, usize::MAX, build_dims).unwrap();
        assert_eq!(
            first.batch.breakdowns.len(),
            1,
            "dimensions alone make a batch"
        );
        // Unanswered: what arrives is folded into one tail, again and again.
        for _ in 0..3 {
            ledger.write().add_dims(&mut vec![dim("Google", 1)]);
            ledger.write().fold_open(build_dims).expect("a tail");
        }
        let again = ledger.next_batch(false, usize::MAX, build_dims).unwrap();
        assert_eq!(again.batch, first.batch, "the retry is unchanged");
        ledger.write().acknowledge(first.batch.id.seq);
        let tail = ledger.next_batch(false, usize::MAX, build_dims).unwrap();
        let hits: u64 = tail.batch.breakdowns.iter().map(|b| b.hits).sum();
        assert_eq!(hits, 3, "the three folded deltas, once each");
        assert_eq!(ledger.read().open_keys(), 0);
    }

    #[test]
    fn while_a_batch_is_unanswered_new_hits_fold_into_one_unsent_tail() {
        let today = Date::constant(2026, 11, 27);
        let d = day_number(today);
        let tally = SiteTally::new(10);
        let ledger = Ledger::new(1);
        tally.count("/a", d);
        ledger.write().take_from(&tally);
        let first = ledger.next_batch(false, usize::MAX, build).unwrap();
        assert!(first.fresh);
        // Nothing in flight yet for fold: the first batch is sent now.
        for _ in 0..3 {
            tally.count("/b", d);
            ledger.write().take_from(&tally);
            let tail = ledger
                .write()
                .fold_open(build)
                .expect("a tail to write ahead");
            assert_eq!(
                tail.id.seq,
                first.batch.id.seq + 1,
                "one tail, one sequence"
            );
        }
        let tail_hits: u64 = ledger
            .write()
            .fold_open(build)
            .map_or(0, |b| b.increments.len() as u64);
        assert_eq!(tail_hits, 0, "nothing open, nothing folded");
        // The retry resends the first batch unchanged, then the tail goes.
        let again = ledger.next_batch(false, usize::MAX, build).unwrap();
        assert_eq!(again.batch, first.batch);
        assert!(!again.fresh);
        ledger.write().acknowledge(first.batch.id.seq);
        let next = ledger.next_batch(false, usize::MAX, build).unwrap();
        assert_eq!(next.batch.id.seq, first.batch.id.seq + 1);
        assert!(!next.fresh, "already in the write-ahead file");
        let hits: u64 = next.batch.increments.iter().map(|i| i.hits).sum();
        assert_eq!(hits, 6, "three /b hits and three site hits");
    }

    #[test]
    fn an_unacknowledged_batch_is_resent_unchanged() {
        let today = Date::constant(2026, 11, 27);
        let tally = SiteTally::new(10);
        let ledger = Ledger::new(7);
        tally.count("/a", day_number(today));
        ledger.write().take_from(&tally);
        let first = ledger.next_batch(false, usize::MAX, build).unwrap().batch;
        tally.count("/b", day_number(today));
        ledger.write().take_from(&tally);
        let again = ledger.next_batch(false, usize::MAX, build).unwrap().batch;
        assert_eq!(first, again);
        assert_eq!(first.id.seq, 7);
        ledger.write().acknowledge(7);
        ledger.write().install(stored_total(today, 2, 7));
        let next = ledger.next_batch(false, usize::MAX, build).unwrap().batch;
        assert_eq!(next.id.seq, 8);
    }

    #[test]
    fn deltas_land_in_the_right_figures_across_midnight_and_month_end() {
        let cal = cal();
        // Sunday 2026-11-29 → Monday 2026-11-30 → Tuesday 2026-12-01.
        let tally = SiteTally::new(10);
        let ledger = Ledger::new(1);
        let sun = Date::constant(2026, 11, 29);
        let mon = Date::constant(2026, 11, 30);
        let tue = Date::constant(2026, 12, 1);
        tally.count("/a", day_number(sun));
        tally.count("/a", day_number(mon));
        tally.count("/a", day_number(mon));
        tally.count("/a", day_number(tue));
        let stored = Stored::empty(tue, &cal);
        let c = ledger
            .read()
            .counts(&LocalDay::of(&cal, tue), &stored, Some("/a"), &tally);
        assert_eq!(
            c,
            Counts {
                total: 4,
                today: 1,
                yesterday: 2,
                week: 3,
                month: 1
            }
        );
    }

    #[test]
    fn a_reading_taken_at_yesterday_shifts_into_yesterday() {
        let cal = cal();
        let mon = Date::constant(2026, 11, 23);
        let tue = Date::constant(2026, 11, 24);
        let mut stored = Stored::empty(mon, &cal);
        stored.values = [1, 10, 30, 50, 99];
        let tally = SiteTally::new(10);
        let c = Ledger::new(1)
            .read()
            .counts(&LocalDay::of(&cal, tue), &stored, None, &tally);
        assert_eq!(
            c,
            Counts {
                total: 99,
                today: 0,
                yesterday: 10,
                week: 30,
                month: 50
            }
        );
    }

    /// A batch builder that paces per delta, as `flush::build_batch` does.
    fn build_paced(seq: u64, deltas: &[Delta], dims: &[DimDelta]) -> SiteBatch {
        for _ in deltas {
            crate::background::pace();
        }
        build(seq, deltas, dims)
    }

    #[test]
    fn the_flusher_never_yields_while_holding_the_ledgers_write_lock() {
        let today = Date::constant(2026, 11, 27);
        let d = day_number(today);
        let ledger = Arc::new(Ledger::new(1));
        let tally = Arc::new(SiteTally::new(100_000));
        let pages: Vec<String> = (0..5_000).map(|i| format!("/p{i}")).collect();
        let count_all = |tally: &SiteTally| {
            for p in &pages {
                tally.count(p, d);
            }
        };
        let (yields, held) = std::thread::scope(|s| {
            s.spawn(|| {
                crate::background::background_priority();
                let yields = Arc::new(std::sync::atomic::AtomicU64::new(0));
                let held = Arc::new(std::sync::atomic::AtomicU64::new(0));
                let (l, y, h) = (Arc::clone(&ledger), Arc::clone(&yields), Arc::clone(&held));
                crate::background::ON_YIELD.set(Some(Box::new(move || {
                    y.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // A reader would wait here: the lock is held across
                    // the yield.
                    if l.state.try_read().is_none() {
                        h.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                })));
                // A whole pass: take, build and send, acknowledge, install.
                count_all(&tally);
                ledger.write().take_from(&tally);
                let first = ledger.next_batch(false, usize::MAX, build_paced).unwrap();
                // The store is away: new hits fold into an unsent tail.
                count_all(&tally);
                ledger.write().take_from(&tally);
                ledger.write().fold_open(build_paced);
                count_all(&tally);
                ledger.write().take_from(&tally);
                ledger.write().fold_open(build_paced);
                ledger.write().acknowledge(first.batch.id.seq);
                let released = ledger
                    .write()
                    .install(stored_total(today, 0, first.batch.id.seq));
                released.free();
                // Shutdown: what remains is frozen.
                count_all(&tally);
                ledger.write().take_from(&tally);
                ledger.write().freeze(false, build_paced);
                crate::background::ON_YIELD.set(None);
                (
                    yields.load(std::sync::atomic::Ordering::Relaxed),
                    held.load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .join()
            .unwrap()
        });
        assert!(yields > 0, "the pass never yielded: the test shows nothing");
        assert_eq!(held, 0, "{held} of {yields} yields held the write lock");
    }

    fn arb_deltas() -> impl proptest::strategy::Strategy<Value = Vec<Delta>> {
        use proptest::prelude::*;
        proptest::collection::vec((0u8..4, 0u32..3, 1u64..100), 0..40).prop_map(|v| {
            v.into_iter()
                .map(|(p, day, hits)| Delta {
                    page: (p > 0).then(|| Arc::from(format!("/p{p}"))),
                    day,
                    hits,
                })
                .collect()
        })
    }

    proptest::proptest! {
        #[test]
        fn deltas_add_up_per_scope_and_day_however_they_arrive(
            first in arb_deltas(),
            second in arb_deltas(),
            third in arb_deltas(),
            chunk in 1usize..50,
        ) {
            use std::collections::BTreeMap;
            let mut want: BTreeMap<(Option<String>, DayNumber), u64> = BTreeMap::new();
            for d in first.iter().chain(&second).chain(&third) {
                *want.entry((d.page.as_deref().map(String::from), d.day)).or_default() += d.hits;
            }
            // As the flusher builds them: taken from the tally twice, then
            // folded into a tail.
            // New deltas sorted `chunk` at a time (a flush sorts 1,024 at
            // a time; any size must give the same sets).
            let strictly_ordered =
                |d: &Deltas| d.list.is_sorted_by(|a, b| by_scope_and_day(a, b).is_lt());
            let mut open = Deltas::default();
            open.list.extend(first);
            open.settle_in(0, chunk);
            proptest::prop_assert!(strictly_ordered(&open));
            let sorted = open.len();
            open.list.extend(second);
            open.settle_in(sorted, chunk);
            proptest::prop_assert!(strictly_ordered(&open));
            let mut tail = Deltas::default();
            tail.list.extend(third);
            tail.settle(0);
            open.merge(tail);
            let open = open.freeze();
            let got: Vec<_> = open
                .as_slice()
                .iter()
                .map(|d| ((d.page.as_deref().map(String::from), d.day), d.hits))
                .collect();
            proptest::prop_assert_eq!(got, want.clone().into_iter().collect::<Vec<_>>());
            for page in [None, Some("/p1"), Some("/p2"), Some("/p3"), Some("/p9")] {
                let of: Vec<_> = open.of(page, page.map_or(0, scope_hash)).iter().map(|d| (d.day, d.hits)).collect();
                let expected: Vec<_> = want
                    .iter()
                    .filter(|((p, _), _)| p.as_deref() == page)
                    .map(|((_, day), hits)| (*day, *hits))
                    .collect();
                proptest::prop_assert_eq!(of, expected);
            }
        }
    }
}
