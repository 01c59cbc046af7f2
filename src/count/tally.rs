//! The in-memory pending deltas of one site: what the hot path increments and
//! what the flusher takes.
//!
//! Invariant: counting a hit on a known page takes no write lock, allocates
//! nothing and awaits nothing — one `DashMap` read lookup and two atomic
//! compare-and-swaps (the page's cell and the site's cell). The flusher takes
//! deltas by swapping each cell's slot to zero; it never holds ingest out.
//!
//! This module must not know about stores, batches or time zones: a hit
//! arrives with its local day number already fixed, and leaves as a
//! `(scope, day, hits)` delta. A page's cell also keeps the page's latest
//! store reading for readers (`Stored`, opaque here), so that answering a
//! beacon finds it with the lookup that counted the hit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use parking_lot::Mutex;

use crate::count::ledger::Stored;
use crate::period::DayNumber;

/// Bits of a slot holding the hit count; the rest hold the day number.
const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

fn pack(day: DayNumber, count: u64) -> u64 {
    (u64::from(day) << COUNT_BITS) | count
}

fn unpack(slot: u64) -> (DayNumber, u64) {
    ((slot >> COUNT_BITS) as DayNumber, slot & COUNT_MASK)
}

/// Pending hits of one counter per local day: two slots, chosen by the
/// day's parity, each packing `(day, count)` in one atomic word, so a flush
/// taken at local midnight still knows which day each hit belongs to (the
/// period is fixed when the hit arrives, not when it is flushed). 16 bytes,
/// lock-free; shared by the tally's cells and the breakdowns' counters.
#[derive(Debug, Default)]
pub struct DaySlots([AtomicU64; 2]);

impl DaySlots {
    /// Adds `n` hits on `day`. Returns a `(day, count)` that had to be moved
    /// out of the way: only when a slot still holds hits from two days ago,
    /// which happens only if the flusher has not run for a whole day.
    pub fn add(&self, day: DayNumber, n: u64) -> Option<(DayNumber, u64)> {
        let slot = &self.0[(day & 1) as usize];
        let mut current = slot.load(Ordering::Acquire);
        loop {
            let (held_day, count) = unpack(current);
            if count != 0 && held_day != day {
                // Evict the stale day; the caller hands it to a spill list.
                match slot.compare_exchange_weak(
                    current,
                    pack(day, n),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Some((held_day, count)),
                    Err(seen) => current = seen,
                }
                continue;
            }
            let next = pack(day, (count + n).min(COUNT_MASK));
            match slot.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return None,
                Err(seen) => current = seen,
            }
        }
    }

    /// Takes every pending `(day, hits)` out.
    pub fn take(&self, mut sink: impl FnMut(DayNumber, u64)) {
        for slot in &self.0 {
            let (day, count) = unpack(slot.swap(0, Ordering::AcqRel));
            if count != 0 {
                sink(day, count);
            }
        }
    }

    /// The pending hits, without taking them.
    pub fn peek(&self, mut sink: impl FnMut(DayNumber, u64)) {
        for slot in &self.0 {
            let (day, count) = unpack(slot.load(Ordering::Acquire));
            if count != 0 {
                sink(day, count);
            }
        }
    }

    /// Whether any hit is pending.
    pub fn holds_hits(&self) -> bool {
        self.0
            .iter()
            .any(|slot| unpack(slot.load(Ordering::Acquire)).1 != 0)
    }
}

/// Pending hits of one scope (a page, or the whole site), per local day
/// ([`DaySlots`]), with the page's latest reading.
///
/// A page's cell lives inline in the tally's map, next to its key (32 bytes,
/// no allocation of its own): the page's name is the map's key, and the
/// dirty list names cells by it.
#[derive(Debug, Default)]
pub struct Cell {
    slots: DaySlots,
    /// The page's latest store reading, for readers; the site's cell keeps
    /// none (the ledger holds the site's).
    reading: ArcSwapOption<Stored>,
    /// When `reading` was taken: Unix milliseconds, wrapped to 32 bits (ages
    /// are wrapping differences, and a reading is kept for seconds).
    /// Written after `reading`: a reader may pair a new reading with the
    /// previous time, which only makes it look older.
    read_ms: AtomicU32,
    /// [`DIRTY`], set when the cell has hits the flusher has not taken
    /// (the hit that sets it queues the cell in the tally's dirty list),
    /// and in the other bits the name of the last batch applied that
    /// carried the page's hits ([`name_of`]; 0: none known). Packed in one
    /// word so the cell stays 32 bytes (a test holds it).
    flags: AtomicU32,
}

/// The bit of a cell's flags set while it has untaken hits.
const DIRTY: u32 = 1 << 31;
/// The bits of a cell's flags naming the last batch applied with the
/// page's hits (see [`name_of`]).
const ROLLED_BITS: u32 = DIRTY - 1;
/// Names of batches repeat after this many sequences.
const NAMES: u64 = ROLLED_BITS as u64;

/// How a cell names batch `seq` in its 31 bits: 1 to 2^31 - 1, so that 0
/// means none.
fn name_of(seq: u64) -> u32 {
    (seq % NAMES) as u32 + 1
}

/// The batch a cell's `name` stands for, given `latest`, a sequence at
/// least as late as it: the latest sequence at or below `latest` with that
/// name. `None` when the cell names none. A name older than 2^31 - 1
/// batches comes out later than it was, which only makes a reading look
/// behind.
fn widen(name: u32, latest: u64) -> Option<u64> {
    if name == 0 {
        return None;
    }
    let back = (u64::from(name_of(latest)) + NAMES - u64::from(name)) % NAMES;
    latest.checked_sub(back)
}

/// Unix milliseconds wrapped to the 32 bits a cell keeps.
fn wrap_ms(unix_ms: i64) -> u32 {
    unix_ms as u32
}

impl Cell {
    /// Adds `n` hits on `day` (see [`DaySlots::add`]).
    fn add(&self, day: DayNumber, n: u64) -> Option<(DayNumber, u64)> {
        self.slots.add(day, n)
    }

    /// Marks the cell dirty; true when this call did (the caller queues it).
    fn mark_dirty(&self) -> bool {
        self.flags.load(Ordering::Acquire) & DIRTY == 0
            && self.flags.fetch_or(DIRTY, Ordering::AcqRel) & DIRTY == 0
    }

    /// Records that batch `seq`, carrying the page's hits, was applied;
    /// returns the name the cell held before (see [`widen`]).
    fn mark_rolled(&self, seq: u64) -> u32 {
        let name = name_of(seq);
        let before = self
            .flags
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| {
                Some((f & DIRTY) | name)
            })
            .unwrap_or_else(|f| f);
        before & ROLLED_BITS
    }

    /// Takes every pending `(day, hits)` out of the cell.
    fn take(&self, sink: impl FnMut(DayNumber, u64)) {
        self.flags.fetch_and(!DIRTY, Ordering::AcqRel);
        self.slots.take(sink);
    }

    /// The pending hits, without taking them (for reads).
    fn peek(&self, sink: impl FnMut(DayNumber, u64)) {
        self.slots.peek(sink);
    }

    /// The reading kept in the cell, if any. When it was taken `max_age`
    /// or more before `now_ms` (Unix milliseconds), one caller is told to
    /// refresh it: that caller restamps it, so the others go on using it
    /// until the refresh lands.
    fn reading(&self, now_ms: i64, max_age: Duration) -> Option<Kept> {
        let stored = self.reading.load_full()?;
        let then = self.read_ms.load(Ordering::Acquire);
        let now = wrap_ms(now_ms);
        let refresh = u128::from(now.wrapping_sub(then)) >= max_age.as_millis()
            && self
                .read_ms
                .compare_exchange(then, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        Some(Kept { stored, refresh })
    }

    /// Keeps `stored` unless the kept reading is of the same periods and
    /// further along this instance's batches: a read that was in flight
    /// while a batch was applied and rolled into the kept reading would
    /// otherwise put back a reading that misses the batch (and is then read
    /// again in line). The kept one is refreshed again a time to live on.
    fn remember(&self, stored: Arc<Stored>, now_ms: i64) {
        let ahead = |kept: &Stored| kept.keys == stored.keys && kept.watermark > stored.watermark;
        let previous = self.reading.rcu(|current| match current {
            Some(kept) if ahead(kept) => Some(Arc::clone(kept)),
            _ => Some(Arc::clone(&stored)),
        });
        if !previous.as_deref().is_some_and(ahead) {
            self.read_ms.store(wrap_ms(now_ms), Ordering::Release);
        }
    }

    /// Replaces the kept reading with `next(reading)` (`None`: forget it),
    /// unless a reader replaced it meanwhile; keeps its time.
    fn update_reading(&self, next: impl FnOnce(&Arc<Stored>) -> Option<Option<Arc<Stored>>>) {
        let current = self.reading.load_full();
        if let Some(stored) = &current
            && let Some(new) = next(stored)
        {
            self.reading.compare_and_swap(&current, new);
        }
    }
}

type PageRef<'a> = dashmap::mapref::one::Ref<'a, Arc<str>, Cell>;

impl<'a> PageEntry<'a> {
    fn of(entry: &'a PageRef<'_>) -> Self {
        PageEntry {
            key: entry.key(),
            cell: entry.value(),
        }
    }
}

/// A page's kept store reading.
#[derive(Clone, Debug)]
pub struct Kept {
    pub stored: Arc<Stored>,
    /// True when the reading outlived its time to live and this caller was
    /// chosen to read the page again (meanwhile everyone uses this one).
    pub refresh: bool,
}

/// A counted page's entry in the tally, lent to the caller of
/// [`SiteTally::count_then`] while the map's shard guard is held.
pub struct PageEntry<'a> {
    /// The page's name as the tally keeps it (clone it rather than
    /// allocate another).
    pub key: &'a Arc<str>,
    cell: &'a Cell,
}

impl PageEntry<'_> {
    /// The page's kept store reading (see [`Kept`]); `max_age` is its time
    /// to live at `now_ms` (Unix milliseconds).
    pub fn reading(&self, now_ms: i64, max_age: Duration) -> Option<Kept> {
        self.cell.reading(now_ms, max_age)
    }
}

/// One pending delta taken by the flusher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta {
    /// `None` for the site-level figures.
    pub page: Option<Arc<str>>,
    pub day: DayNumber,
    pub hits: u64,
}

/// What happened to a hit in the tally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    /// Counted for the site and the page.
    Page,
    /// The site already keeps `max_pages` pages: counted for the site only.
    SiteOnlyOverflow,
}

/// The pending deltas of one site.
pub struct SiteTally {
    pages: DashMap<Arc<str>, Cell>,
    page_count: AtomicUsize,
    /// Changed by a configuration reload.
    max_pages: AtomicUsize,
    site: Cell,
    /// Cells with untaken hits, by page (`None`: the site's cell). Pushed by
    /// the first hit on a cell after a flush, swapped out whole by the
    /// flusher.
    dirty: Mutex<Vec<Option<Arc<str>>>>,
    /// The flusher's side of the dirty list: swapped with `dirty` at each
    /// take and drained, so both keep their capacity and a hit never has to
    /// grow the list in the steady state.
    spare: Mutex<Vec<Option<Arc<str>>>>,
    /// Deltas evicted from a slot by a later day (see [`Cell::add`]).
    spill: Mutex<Vec<Delta>>,
    /// The last batch that may carry hits of a page whose cell did not
    /// exist when it was applied (batches replayed from the write-ahead
    /// file; any other batch's pages come from cells, which are never
    /// removed): a cell that names no batch assumes this one. 0: none.
    adopted_through: AtomicU64,
}

impl SiteTally {
    /// An empty tally that keeps at most `max_pages` distinct pages.
    pub fn new(max_pages: usize) -> Self {
        SiteTally {
            pages: DashMap::new(),
            page_count: AtomicUsize::new(0),
            max_pages: AtomicUsize::new(max_pages),
            site: Cell::default(),
            dirty: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
            spill: Mutex::new(Vec::new()),
            adopted_through: AtomicU64::new(0),
        }
    }

    /// Notes that batch `seq`, which may carry hits of pages this tally
    /// has no cell for, will be applied (see [`SiteTally::rolled`]).
    pub fn note_adopted(&self, seq: u64) {
        self.adopted_through.fetch_max(seq, Ordering::AcqRel);
    }

    /// The batch a cell's `name` stands for, given `latest` (see
    /// [`widen`]); a cell that names none stands for the adopted batches.
    fn last_rolled(&self, name: u32, latest: u64) -> u64 {
        widen(name, latest).unwrap_or_else(|| self.adopted_through.load(Ordering::Acquire))
    }

    /// Counts one hit on `page` on local day `day`.
    ///
    /// For a page already known this is lock-free for writers (a shard read
    /// lock inside `DashMap`) and allocation-free, except when the cell is the
    /// first touched since the last flush and the dirty list must grow past
    /// its previous capacity.
    pub fn count(&self, page: &str, day: DayNumber) -> Counted {
        self.count_then(page, day, |counted, _| counted)
    }

    /// Counts one hit like [`SiteTally::count`], then calls `then` with the
    /// outcome and the page's entry (`None` when the site is full), under
    /// the map's shard read guard: `then` must be short and must not touch
    /// this tally's pages.
    pub fn count_then<R>(
        &self,
        page: &str,
        day: DayNumber,
        then: impl FnOnce(Counted, Option<PageEntry<'_>>) -> R,
    ) -> R {
        self.add_to(None, &self.site, day, 1);
        if let Some(entry) = self.pages.get(page) {
            // Counted under the shard's read guard.
            self.add_to(Some(entry.key()), entry.value(), day, 1);
            return then(Counted::Page, Some(PageEntry::of(&entry)));
        }
        match self.insert_page(page, day) {
            Some(entry) => then(Counted::Page, Some(PageEntry::of(&entry))),
            None => then(Counted::SiteOnlyOverflow, None),
        }
    }

    fn add_to(&self, page: Option<&Arc<str>>, cell: &Cell, day: DayNumber, n: u64) {
        if let Some((old_day, hits)) = cell.add(day, n) {
            self.spill.lock().push(Delta {
                page: page.cloned(),
                day: old_day,
                hits,
            });
        }
        if cell.mark_dirty() {
            self.dirty.lock().push(page.cloned());
        }
    }

    /// Creates the cell of a new page with its first hit, unless the site
    /// is full; `None` when the hit could not be counted for the page.
    fn insert_page(&self, page: &str, day: DayNumber) -> Option<PageRef<'_>> {
        // Reserve a place first so concurrent inserts never exceed the cap.
        let reserved = self
            .page_count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_pages.load(Ordering::Relaxed)).then_some(n + 1)
            })
            .is_ok();
        if !reserved {
            // A concurrent insert of this very page may have won; use it.
            let entry = self.pages.get(page)?;
            self.add_to(Some(entry.key()), entry.value(), day, 1);
            return Some(entry);
        }
        let entry = match self.pages.entry(Arc::from(page)) {
            dashmap::Entry::Occupied(e) => {
                // Another thread created it meanwhile: give the place back.
                self.page_count.fetch_sub(1, Ordering::AcqRel);
                e.into_ref()
            }
            dashmap::Entry::Vacant(v) => v.insert(Cell::default()),
        }
        .downgrade();
        self.add_to(Some(entry.key()), entry.value(), day, 1);
        Some(entry)
    }

    /// Whether any hit counted here is still to be taken. Every hit adds to
    /// the site's cell first, then queues the cells it made dirty, so a
    /// hit under way shows in one or the other.
    pub fn holds_hits(&self) -> bool {
        self.site.slots.holds_hits()
            || !self.dirty.lock().is_empty()
            || !self.spill.lock().is_empty()
    }

    /// Sets the most pages kept (pages already kept stay).
    pub fn set_max_pages(&self, max_pages: usize) {
        self.max_pages.store(max_pages, Ordering::Relaxed);
    }

    /// Number of distinct pages kept.
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// Takes every pending delta (site-level and per page), leaving the cells
    /// at zero. Cost grows with the cells touched since the last take, not
    /// with hits.
    pub fn take(&self, out: &mut Vec<Delta>) {
        // The spare list is taken out of its lock, not worked on under it:
        // nothing here is held across a pace.
        let mut spare = std::mem::take(&mut *self.spare.lock());
        std::mem::swap(&mut spare, &mut *self.dirty.lock());
        for page in spare.drain(..) {
            let mut sink = |day, hits| {
                out.push(Delta {
                    page: page.clone(),
                    day,
                    hits,
                })
            };
            match &page {
                None => self.site.take(&mut sink),
                // Pages are never removed, so a dirty page is in the map.
                Some(p) => {
                    if let Some(cell) = self.pages.get(p) {
                        cell.take(&mut sink);
                    }
                }
            }
            // Between pages, with no shard guard held (the flusher takes
            // under the ledger's write lock, where this does nothing).
            crate::background::pace();
        }
        *self.spare.lock() = spare;
        out.append(&mut self.spill.lock());
    }

    /// The pending hits of `page` (or the site, `None`), without taking
    /// them (for reads).
    pub fn peek(&self, page: Option<&str>, sink: impl FnMut(DayNumber, u64)) {
        match page {
            None => self.site.peek(sink),
            Some(p) => {
                if let Some(cell) = self.pages.get(p) {
                    cell.peek(sink);
                }
            }
        }
    }

    /// The store reading kept for `page` (see [`Kept`]; `max_age` is its
    /// time to live at `now_ms`, Unix milliseconds): `None` when the tally
    /// does not keep the page, `Some(None)` when it keeps no reading.
    pub fn reading(&self, page: &str, now_ms: i64, max_age: Duration) -> Option<Option<Kept>> {
        let entry = self.pages.get(page)?;
        Some(entry.value().reading(now_ms, max_age))
    }

    /// Keeps `stored`, taken at `now_ms` (Unix milliseconds), as `page`'s
    /// reading; false when the tally does not keep the page.
    pub fn remember(&self, page: &str, stored: Arc<Stored>, now_ms: i64) -> bool {
        match self.pages.get(page) {
            Some(entry) => {
                entry.value().remember(stored, now_ms);
                true
            }
            None => false,
        }
    }

    /// Records that batch `seq`, which carried `page`'s hits, was applied,
    /// and replaces the page's kept reading with `next(reading, before)`
    /// (`Some(None)` forgets it, `None` leaves it) unless a reader replaced
    /// it meanwhile. `before` is the last batch before `seq` that carried
    /// the page's hits (0: none, or `None` when unsure): a reading that
    /// includes it includes every batch before `seq` that touched the page.
    ///
    /// The flusher calls this for every batch it applies, in sequence
    /// order and before the ledger lets the batch go, so that
    /// [`SiteTally::rolled`] read after that names it.
    pub fn roll_reading(
        &self,
        page: &str,
        seq: u64,
        next: impl FnOnce(&Arc<Stored>, Option<u64>) -> Option<Option<Arc<Stored>>>,
    ) {
        if let Some(entry) = self.pages.get(page) {
            let cell = entry.value();
            let name = cell.mark_rolled(seq);
            // A repeat of `seq` (or a name come round again) assumes nothing.
            let before = Some(self.last_rolled(name, seq)).filter(|&b| b < seq);
            cell.update_reading(|stored| next(stored, before));
        }
    }

    /// The last batch applied that carried `page`'s hits (0: none), given
    /// `latest`, a sequence at least as late as any batch applied (see
    /// [`SiteTally::roll_reading`]); `None` when the tally does not keep
    /// the page.
    pub fn rolled(&self, page: &str, latest: u64) -> Option<u64> {
        let entry = self.pages.get(page)?;
        let name = entry.value().flags.load(Ordering::Acquire) & ROLLED_BITS;
        Some(self.last_rolled(name, latest))
    }

    /// Forgets every page's kept reading (walks the pages).
    pub fn forget_readings(&self) {
        for entry in self.pages.iter() {
            entry.value().reading.store(None);
        }
    }

    /// Pending spilled deltas, for reads (rarely non-empty).
    pub fn peek_spill(&self, mut sink: impl FnMut(&Delta)) {
        for d in self.spill.lock().iter() {
            sink(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn sum(deltas: &[Delta]) -> BTreeMap<(Option<String>, DayNumber), u64> {
        let mut m = BTreeMap::new();
        for d in deltas {
            *m.entry((d.page.as_deref().map(String::from), d.day))
                .or_default() += d.hits;
        }
        m
    }

    fn stored(total: u64, watermark: u64) -> Arc<Stored> {
        Arc::new(Stored {
            keys: [crate::store::PeriodKey::Total; 5],
            values: [total; 5],
            watermark,
        })
    }

    #[test]
    fn a_kept_reading_is_not_replaced_by_one_behind_it() {
        let t = SiteTally::new(10);
        t.count("/a", 1);
        let ttl = Duration::from_secs(3);
        assert!(t.remember("/a", stored(5, 7), 1_000));
        // A read that was in flight while batch 8 was rolled into the kept
        // reading comes back with watermark 7: the kept one stays.
        t.roll_reading("/a", 8, |s, _| Some(Some(stored(s.values[0] + 1, 8))));
        assert!(t.remember("/a", stored(5, 7), 2_000));
        let kept = t.reading("/a", 2_000, ttl).unwrap().unwrap();
        assert_eq!((kept.stored.values[0], kept.stored.watermark), (6, 8));
        assert!(!kept.refresh, "1 s old");
        // Its time was not renewed by the refused reading: due at 4,000.
        assert!(t.reading("/a", 4_000, ttl).unwrap().unwrap().refresh);
        // One as far along, or further, replaces it.
        assert!(t.remember("/a", stored(9, 8), 5_000));
        assert_eq!(
            t.reading("/a", 5_000, ttl).unwrap().unwrap().stored.values[0],
            9
        );
        assert!(
            !t.remember("/unknown", stored(1, 1), 5_000),
            "not kept by the tally"
        );
    }

    #[test]
    fn a_cell_stays_32_bytes() {
        // It lives inline in the page map: a byte more is 8 per page.
        assert_eq!(std::mem::size_of::<Cell>(), 32);
    }

    #[test]
    fn counts_site_and_page_per_day() {
        let t = SiteTally::new(10);
        t.count("/a", 100);
        t.count("/a", 100);
        t.count("/b", 101);
        let mut out = Vec::new();
        t.take(&mut out);
        let m = sum(&out);
        assert_eq!(m[&(None, 100)], 2);
        assert_eq!(m[&(None, 101)], 1);
        assert_eq!(m[&(Some("/a".into()), 100)], 2);
        assert_eq!(m[&(Some("/b".into()), 101)], 1);
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn holds_hits_until_they_are_taken() {
        let t = SiteTally::new(10);
        assert!(!t.holds_hits());
        t.count("/a", 5);
        assert!(t.holds_hits());
        let mut out = Vec::new();
        t.take(&mut out);
        assert!(!t.holds_hits(), "{out:?}");
        // A page's hit whose site half was already taken still shows.
        let entry = t.pages.get("/a").unwrap();
        t.add_to(Some(entry.key()), entry.value(), 5, 1);
        drop(entry);
        assert!(t.holds_hits());
    }

    #[test]
    fn take_leaves_nothing_behind() {
        let t = SiteTally::new(10);
        t.count("/a", 5);
        let mut out = Vec::new();
        t.take(&mut out);
        let mut again = Vec::new();
        t.take(&mut again);
        assert!(again.is_empty(), "{again:?}");
        t.count("/a", 5);
        t.take(&mut again);
        assert_eq!(sum(&again)[&(Some("/a".into()), 5)], 1);
    }

    #[test]
    fn pages_beyond_the_cap_count_for_the_site_only() {
        let t = SiteTally::new(2);
        assert_eq!(t.count("/a", 1), Counted::Page);
        assert_eq!(t.count("/b", 1), Counted::Page);
        assert_eq!(t.count("/c", 1), Counted::SiteOnlyOverflow);
        assert_eq!(t.count("/a", 1), Counted::Page);
        assert_eq!(t.page_count(), 2);
        let mut out = Vec::new();
        t.take(&mut out);
        let m = sum(&out);
        assert_eq!(m[&(None, 1)], 4);
        assert!(!m.contains_key(&(Some("/c".into()), 1)));
    }

    #[test]
    fn a_slot_left_untaken_for_two_days_spills_instead_of_mixing_days() {
        let t = SiteTally::new(10);
        t.count("/a", 10);
        t.count("/a", 12); // same parity as day 10
        let mut out = Vec::new();
        t.take(&mut out);
        let m = sum(&out);
        assert_eq!(m[&(Some("/a".into()), 10)], 1);
        assert_eq!(m[&(Some("/a".into()), 12)], 1);
        assert_eq!(m[&(None, 10)], 1);
        assert_eq!(m[&(None, 12)], 1);
    }

    #[test]
    fn concurrent_hits_and_takes_lose_nothing_and_count_nothing_twice() {
        let t = Arc::new(SiteTally::new(1000));
        let per_thread = 20_000u64;
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    for j in 0..per_thread {
                        let page = format!("/p{}", (j + i) % 17);
                        t.count(&page, 7 + (j % 2) as DayNumber);
                    }
                })
            })
            .collect();
        let mut taken = Vec::new();
        while !threads.iter().all(|h| h.is_finished()) {
            t.take(&mut taken);
        }
        for h in threads {
            h.join().unwrap();
        }
        t.take(&mut taken);
        let site: u64 = taken
            .iter()
            .filter(|d| d.page.is_none())
            .map(|d| d.hits)
            .sum();
        let pages: u64 = taken
            .iter()
            .filter(|d| d.page.is_some())
            .map(|d| d.hits)
            .sum();
        assert_eq!(site, 4 * per_thread);
        assert_eq!(pages, 4 * per_thread);
    }

    #[test]
    fn peek_sees_pending_without_taking() {
        let t = SiteTally::new(10);
        t.count("/a", 3);
        let mut seen = 0;
        t.peek(None, |_, n| seen += n);
        assert_eq!(seen, 1);
        let mut out = Vec::new();
        t.take(&mut out);
        assert_eq!(out.len(), 2);
    }
}
