//! The in-memory pending breakdowns of one site: for each counted hit, one
//! value in each [`Dimension`] for the site, and its `(channel, source)`
//! pair for the page. What the hot path increments beside the tally and
//! what the flusher takes into the same batch.
//!
//! Invariant: counting a hit whose values are already known takes no write
//! lock and allocates nothing — for each dimension one atomic add on a
//! fixed slot (values the caller names by a small index: channels,
//! browsers, systems, devices, countries, `(none)`) or one `DashMap` read
//! lookup (text from the request: a referrer's host, a campaign), and one
//! lookup for the page's pair, keyed in a reused buffer.
//!
//! Bounded: per dimension and local day at most `max_values` distinct open
//! values are admitted, per page and day at most `max_page_values` pairs;
//! beyond them a hit counts as [`OTHER`] and the caller is told (the
//! overflow metric). The maps forget values idle for two days at flush,
//! and the pages' pairs are capped as a whole ([`SiteBreakdown::new`]):
//! memory never grows with hits. The store bounds values again on its side
//! (several instances admit values independently).
//!
//! Knows nothing of how values are found (`ingest::classify` does that) or
//! of batches: a value leaves as a `(scope, dimension, day, value, hits)`
//! [`DimDelta`].

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::count::tally::DaySlots;
use crate::period::DayNumber;
use crate::store::{Dimension, OTHER};

/// Fixed slots of each dimension, by [`Dimension::index`]: channels,
/// named sources (none: sources are open text), the three campaign
/// dimensions' `(none)`, browsers, systems, devices and the 26 × 26
/// two-letter country codes. A caller's index must stay below its
/// dimension's count (a larger one counts as [`OTHER`]).
pub const FIXED_SLOTS: [usize; 9] = [8, 0, 1, 1, 1, 32, 16, 4, 26 * 26];

/// The separator inside a page pair's key: `page \x1f channel \x1f source`.
/// Neither pages nor values hold control characters.
const SEP: char = '\x1f';

/// The value a hit takes in one dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick<'a> {
    /// A value the caller knows by a small index (below the dimension's
    /// [`FIXED_SLOTS`]) and a static name.
    Fixed(u16, &'static str),
    /// Text from the request, already in stored form and bounded.
    Open(&'a str),
}

impl Pick<'_> {
    /// The value as text.
    pub fn as_str(&self) -> &str {
        match self {
            Pick::Fixed(_, name) => name,
            Pick::Open(text) => text,
        }
    }
}

/// One counted hit's value in every dimension, by [`Dimension::index`].
#[derive(Clone, Copy, Debug)]
pub struct HitValues<'a> {
    pub by: [Pick<'a>; 9],
}

/// One pending breakdown delta taken by the flusher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DimDelta {
    /// The page, or `None` for the site.
    pub page: Option<Arc<str>>,
    pub dimension: Dimension,
    pub day: DayNumber,
    pub value: Arc<str>,
    pub hits: u64,
}

/// A fixed slot: its pending hits and its value's name (set by the first
/// hit, so the flusher hands out a shared name without allocating).
#[derive(Debug, Default)]
struct Fixed {
    slots: DaySlots,
    name: OnceLock<Arc<str>>,
}

/// An open value's (or a page pair's) pending hits and the last day it was
/// admitted on.
#[derive(Debug, Default)]
struct Open {
    slots: DaySlots,
    /// `day << 1 | admitted`: whether the value was admitted on `day`
    /// (then it counts as itself, else as [`OTHER`]), decided once a day.
    verdict: AtomicU64,
    /// Set while it holds hits the flusher has not taken (page pairs only:
    /// they are found through the dirty list).
    dirty: AtomicBool,
}

/// How many values were admitted on one day: `day << 32 | count`.
#[derive(Debug, Default)]
struct Admitted(AtomicU64);

impl Admitted {
    /// Admits one more value on `day` if fewer than `max` were.
    fn admit(&self, day: DayNumber, max: u32) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let (held, n) = ((word >> 32) as DayNumber, word as u32);
                let n = if held == day { n } else { 0 };
                (n < max).then_some((u64::from(day) << 32) | u64::from(n + 1))
            })
            .is_ok()
    }
}

/// What counting a hit's values ran into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overflow {
    /// Bit [`Dimension::index`] set: that dimension's value counted as
    /// [`OTHER`] for the site; bit 9: the page's pair did.
    pub bits: u16,
}

impl Overflow {
    /// The bit of the page's pair.
    pub const PAGE: u16 = 1 << 9;

    /// The dimensions that overflowed (the page's pair as `source`).
    pub fn dimensions(self) -> impl Iterator<Item = Dimension> {
        Dimension::ALL
            .into_iter()
            .filter(move |d| self.bits & (1 << d.index()) != 0)
            .chain((self.bits & Self::PAGE != 0).then_some(Dimension::Source))
    }
}

thread_local! {
    /// A page pair's key, built here so a known pair is found without
    /// allocating.
    static PAIR_KEY: RefCell<String> = RefCell::new(String::with_capacity(1024));
}

/// foldhash (keyed per process): hashing a value or a pair's key is most
/// of a lookup, and SipHash took a few times as long on these short keys.
/// Every map is bounded (values per day, pairs in all), so a collision
/// flood could only slow a bounded map.
type Hasher = foldhash::fast::RandomState;

/// Open values or page pairs and their counters.
type Values = DashMap<Arc<str>, Open, Hasher>;

/// The shared name of [`OTHER`].
static OTHER_NAME: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(OTHER));

/// The pending breakdowns of one site.
pub struct SiteBreakdown {
    /// Every dimension's fixed slots, one after another.
    fixed: Box<[Fixed]>,
    /// Where each dimension's fixed slots start in `fixed`.
    starts: [usize; 9],
    /// Open values per dimension (used by those whose values are text).
    open: [Values; 9],
    /// Values admitted per dimension today.
    admitted: [Admitted; 9],
    /// Hits counted as [`OTHER`] per dimension, for the site.
    other: [DaySlots; 9],
    /// Page pairs, keyed `page \x1f channel \x1f source`; a page's entry
    /// keyed by the page alone (no separator) keeps, in its `verdict`, the
    /// pairs admitted for it today ([`Admitted`]'s layout).
    pages: Values,
    /// Entries in `pages`, at most `max_pairs`.
    pair_count: AtomicUsize,
    max_pairs: usize,
    /// Page pairs with untaken hits.
    dirty: Mutex<Vec<Arc<str>>>,
    /// The other half of `dirty`, swapped in at each take so the hot path
    /// pushes into a list that already has its capacity.
    spare: Mutex<Vec<Arc<str>>>,
    /// Hits moved out of a slot the flusher had not emptied for a day.
    spill: Mutex<Vec<DimDelta>>,
    max_values: AtomicU32,
    max_page_values: AtomicU32,
    /// The day idle page pairs were last forgotten on.
    pruned: AtomicU32,
}

impl std::fmt::Debug for SiteBreakdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteBreakdown")
            .field("pairs", &self.pair_count.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SiteBreakdown {
    /// Empty breakdowns admitting `max_values` values per dimension and day,
    /// `max_page_values` pairs per page and day, and at most `max_pairs`
    /// page pairs in all (beyond it a new page's pairs are not kept: its
    /// hits read as `(unknown)` by source).
    pub fn new(max_values: u32, max_page_values: u32, max_pairs: usize) -> Self {
        let mut starts = [0; 9];
        let mut at = 0;
        for (i, n) in FIXED_SLOTS.iter().enumerate() {
            starts[i] = at;
            at += n;
        }
        SiteBreakdown {
            fixed: (0..at).map(|_| Fixed::default()).collect(),
            starts,
            open: std::array::from_fn(|_| Values::with_hasher(Hasher::default())),
            admitted: std::array::from_fn(|_| Admitted::default()),
            other: std::array::from_fn(|_| DaySlots::default()),
            pages: Values::with_hasher(Hasher::default()),
            pair_count: AtomicUsize::new(0),
            max_pairs,
            dirty: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
            spill: Mutex::new(Vec::new()),
            max_values: AtomicU32::new(max_values),
            max_page_values: AtomicU32::new(max_page_values),
            pruned: AtomicU32::new(0),
        }
    }

    /// Applies new bounds (a configuration reload).
    pub fn set_bounds(&self, max_values: u32, max_page_values: u32) {
        self.max_values.store(max_values, Ordering::Relaxed);
        self.max_page_values
            .store(max_page_values, Ordering::Relaxed);
    }

    /// Counts one hit with `values` on `day`, for the site and, when
    /// `page` is kept, for the page's `(channel, source)` pair.
    pub fn count(&self, values: &HitValues<'_>, page: Option<&str>, day: DayNumber) -> Overflow {
        let mut overflow = Overflow::default();
        for dim in Dimension::ALL {
            if !self.count_site(dim, values.by[dim.index()], day) {
                overflow.bits |= 1 << dim.index();
            }
        }
        if let Some(page) = page {
            let channel = values.by[Dimension::Channel.index()].as_str();
            let source = values.by[Dimension::Source.index()].as_str();
            if !self.count_pair(page, channel, source, day) {
                overflow.bits |= Overflow::PAGE;
            }
        }
        overflow
    }

    /// Counts one site-level value; false when it counted as [`OTHER`].
    fn count_site(&self, dim: Dimension, pick: Pick<'_>, day: DayNumber) -> bool {
        let d = dim.index();
        match pick {
            Pick::Fixed(index, name) if usize::from(index) < FIXED_SLOTS[d] => {
                let slot = &self.fixed[self.starts[d] + usize::from(index)];
                slot.name.get_or_init(|| Arc::from(name));
                self.spill_from(&slot.slots, day, || (None, dim, slot.name.get().cloned()));
                true
            }
            Pick::Fixed(..) => {
                self.add_other(dim, day);
                false
            }
            Pick::Open(text) => {
                if let Some(entry) = self.open[d].get(text) {
                    if Self::verdict(&entry, day, &self.admitted[d], self.max_values()) {
                        let key = entry.key();
                        self.spill_from(&entry.slots, day, || (None, dim, Some(Arc::clone(key))));
                        return true;
                    }
                    drop(entry);
                    self.add_other(dim, day);
                    return false;
                }
                self.admit_open(dim, text, day)
            }
        }
    }

    /// A value not yet in the map: kept when admitted today, else
    /// [`OTHER`].
    fn admit_open(&self, dim: Dimension, text: &str, day: DayNumber) -> bool {
        let d = dim.index();
        if !self.admitted[d].admit(day, self.max_values()) {
            self.add_other(dim, day);
            return false;
        }
        let entry = self.open[d]
            .entry(Arc::from(text))
            .or_insert_with(|| Open {
                verdict: AtomicU64::new(u64::from(day) << 1 | 1),
                ..Open::default()
            })
            .downgrade();
        let key = entry.key();
        self.spill_from(&entry.slots, day, || (None, dim, Some(Arc::clone(key))));
        true
    }

    /// Whether `entry` counts as itself on `day`: decided by its first hit
    /// of the day, which takes one of the day's admissions.
    fn verdict(entry: &Open, day: DayNumber, admitted: &Admitted, max: u32) -> bool {
        let word = entry.verdict.load(Ordering::Acquire);
        if (word >> 1) as DayNumber == day {
            return word & 1 == 1;
        }
        let ok = admitted.admit(day, max);
        let next = u64::from(day) << 1 | u64::from(ok);
        match entry
            .verdict
            .compare_exchange(word, next, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => ok,
            // Another hit decided first; its verdict holds (an admission
            // taken here is lost for the day: the bound only gets tighter).
            Err(seen) => seen & 1 == 1,
        }
    }

    fn add_other(&self, dim: Dimension, day: DayNumber) {
        self.spill_from(&self.other[dim.index()], day, || {
            (None, dim, Some(Arc::clone(&OTHER_NAME)))
        });
    }

    /// Adds a hit to `slots`, handing a day it had to move out of the way
    /// to the spill list under the name `who` gives.
    fn spill_from(
        &self,
        slots: &DaySlots,
        day: DayNumber,
        who: impl FnOnce() -> (Option<Arc<str>>, Dimension, Option<Arc<str>>),
    ) {
        if let Some((old_day, hits)) = slots.add(day, 1) {
            let (page, dimension, value) = who();
            self.spill.lock().push(DimDelta {
                page,
                dimension,
                day: old_day,
                value: value.unwrap_or_else(|| Arc::clone(&OTHER_NAME)),
                hits,
            });
        }
    }

    fn max_values(&self) -> u32 {
        self.max_values.load(Ordering::Relaxed)
    }

    /// Counts a hit for `page`'s `(channel, source)` pair; false when it
    /// counted as `(channel, (other))`, or was not kept at all (the pairs'
    /// cap).
    fn count_pair(&self, page: &str, channel: &str, source: &str, day: DayNumber) -> bool {
        PAIR_KEY.with(|key| {
            let mut key = key.borrow_mut();
            key.clear();
            key.push_str(page);
            key.push(SEP);
            key.push_str(channel);
            key.push(SEP);
            let pair_start = key.len();
            key.push_str(source);
            // No map lock is held while admitting: that may insert the
            // page's own entry, and a write under a read guard of the same
            // shard would deadlock.
            let known = self.pages.get(key.as_str()).map(|entry| {
                let word = entry.verdict.load(Ordering::Acquire);
                if (word >> 1) as DayNumber == day {
                    if word & 1 == 1 {
                        self.add_pair(&entry, day);
                        return Some(true);
                    }
                    return Some(false);
                }
                None
            });
            match known {
                Some(Some(true)) => return true,
                Some(Some(false)) => {}
                Some(None) => {
                    let ok = self.admit_pair(page, day);
                    if let Some(entry) = self.pages.get(key.as_str()) {
                        let next = u64::from(day) << 1 | u64::from(ok);
                        let word = entry.verdict.load(Ordering::Acquire);
                        // Whoever decided first for the day wins.
                        let ok = if (word >> 1) as DayNumber == day {
                            word & 1 == 1
                        } else {
                            entry.verdict.store(next, Ordering::Release);
                            ok
                        };
                        if ok {
                            self.add_pair(&entry, day);
                            return true;
                        }
                    }
                }
                None => {
                    if self.admit_pair(page, day) {
                        return self.insert_pair(&key, day);
                    }
                }
            }
            key.truncate(pair_start);
            key.push_str(OTHER);
            match self.pages.get(key.as_str()) {
                Some(entry) => self.add_pair(&entry, day),
                None => {
                    self.insert_pair(&key, day);
                }
            }
            false
        })
    }

    /// Takes one of `page`'s admissions for `day`.
    fn admit_pair(&self, page: &str, day: DayNumber) -> bool {
        let max = self.max_page_values.load(Ordering::Relaxed);
        // The page's own entry keeps its admissions in `verdict`, laid
        // out as [`Admitted`]'s word.
        let admit = |entry: &Open| {
            entry
                .verdict
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                    let (held, n) = ((word >> 32) as DayNumber, word as u32);
                    let n = if held == day { n } else { 0 };
                    (n < max).then_some((u64::from(day) << 32) | u64::from(n + 1))
                })
                .is_ok()
        };
        if let Some(entry) = self.pages.get(page) {
            return admit(&entry);
        }
        if !self.reserve_pair() {
            return false;
        }
        let entry = match self.pages.entry(Arc::from(page)) {
            dashmap::Entry::Occupied(e) => {
                self.pair_count.fetch_sub(1, Ordering::AcqRel);
                e.into_ref()
            }
            dashmap::Entry::Vacant(v) => v.insert(Open::default()),
        }
        .downgrade();
        admit(&entry)
    }

    /// Takes room for one more entry in `pages`.
    fn reserve_pair(&self) -> bool {
        self.pair_count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_pairs).then_some(n + 1)
            })
            .is_ok()
    }

    /// Adds the hit to a new pair keyed `key`; false when the cap left no
    /// room for it.
    fn insert_pair(&self, key: &str, day: DayNumber) -> bool {
        if !self.reserve_pair() {
            return false;
        }
        let entry = match self.pages.entry(Arc::from(key)) {
            dashmap::Entry::Occupied(e) => {
                self.pair_count.fetch_sub(1, Ordering::AcqRel);
                e.into_ref()
            }
            dashmap::Entry::Vacant(v) => v.insert(Open {
                verdict: AtomicU64::new(u64::from(day) << 1 | 1),
                ..Open::default()
            }),
        }
        .downgrade();
        self.add_pair(&entry, day);
        true
    }

    fn add_pair(&self, entry: &PairRef<'_>, day: DayNumber) {
        if let Some((old_day, hits)) = entry.slots.add(day, 1) {
            let mut spill = self.spill.lock();
            push_pair(&mut spill, entry.key(), old_day, hits);
        }
        if !entry.dirty.load(Ordering::Acquire) && !entry.dirty.swap(true, Ordering::AcqRel) {
            self.dirty.lock().push(Arc::clone(entry.key()));
        }
    }

    /// Takes every pending delta, and forgets values and pairs that held no
    /// hit since the day before `today` (the pairs on the first take of
    /// each day: that is a scan of them all).
    pub fn take(&self, today: DayNumber, out: &mut Vec<DimDelta>) {
        if self.pruned.swap(today, Ordering::AcqRel) != today {
            self.prune_pages(today);
        }
        for dim in Dimension::ALL {
            let d = dim.index();
            let start = self.starts[d];
            for slot in &self.fixed[start..start + FIXED_SLOTS[d]] {
                if let Some(name) = slot.name.get() {
                    slot.slots.take(|day, hits| {
                        out.push(delta(None, dim, day, name, hits));
                    });
                }
            }
            self.other[d].take(|day, hits| out.push(delta(None, dim, day, &OTHER_NAME, hits)));
            self.open[d].retain(|value, entry| {
                entry
                    .slots
                    .take(|day, hits| out.push(delta(None, dim, day, value, hits)));
                (entry.verdict.load(Ordering::Acquire) >> 1) as DayNumber + 1 >= today
            });
            crate::background::pace();
        }
        let mut dirty = std::mem::take(&mut *self.spare.lock());
        std::mem::swap(&mut dirty, &mut *self.dirty.lock());
        for (i, key) in dirty.drain(..).enumerate() {
            if let Some(entry) = self.pages.get(&key) {
                entry.dirty.store(false, Ordering::Release);
                entry
                    .slots
                    .take(|day, hits| push_pair(out, entry.key(), day, hits));
            }
            if i % 256 == 255 {
                crate::background::pace();
            }
        }
        *self.spare.lock() = dirty;
        out.append(&mut self.spill.lock());
    }

    /// Forgets page pairs (and pages' admissions) idle since the day before
    /// `today`: a scan of every pair, so the flusher calls it once a day.
    fn prune_pages(&self, today: DayNumber) {
        let mut removed = 0;
        self.pages.retain(|key, entry| {
            let word = entry.verdict.load(Ordering::Acquire);
            // A page's own entry keeps `day << 32 | n`, a pair's `day << 1 | ok`.
            let day = if key.contains(SEP) {
                (word >> 1) as DayNumber
            } else {
                (word >> 32) as DayNumber
            };
            let keep = day + 1 >= today || entry.dirty.load(Ordering::Acquire);
            if !keep {
                removed += 1;
            }
            keep
        });
        self.pair_count.fetch_sub(removed, Ordering::AcqRel);
    }

    /// Whether any hit is pending.
    pub fn holds_hits(&self) -> bool {
        self.fixed.iter().any(|f| f.slots.holds_hits())
            || self.other.iter().any(DaySlots::holds_hits)
            || self
                .open
                .iter()
                .any(|m| m.iter().any(|e| e.slots.holds_hits()))
            || !self.dirty.lock().is_empty()
            || !self.spill.lock().is_empty()
    }

    /// Entries kept: open values and page pairs (for memory accounting).
    pub fn len(&self) -> usize {
        self.open.iter().map(Values::len).sum::<usize>() + self.pages.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

type PairRef<'a> = dashmap::mapref::one::Ref<'a, Arc<str>, Open>;

fn delta(
    page: Option<Arc<str>>,
    dimension: Dimension,
    day: DayNumber,
    value: &Arc<str>,
    hits: u64,
) -> DimDelta {
    DimDelta {
        page,
        dimension,
        day,
        value: Arc::clone(value),
        hits,
    }
}

/// Splits a pair's key into its page's channel and source deltas.
fn push_pair(out: &mut Vec<DimDelta>, key: &str, day: DayNumber, hits: u64) {
    let mut parts = key.rsplitn(3, SEP);
    let (Some(source), Some(channel), Some(page)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let page: Arc<str> = Arc::from(page);
    for (dimension, value) in [(Dimension::Channel, channel), (Dimension::Source, source)] {
        out.push(DimDelta {
            page: Some(Arc::clone(&page)),
            dimension,
            day,
            value: Arc::from(value),
            hits,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn values<'a>(source: &'a str, country: u16) -> HitValues<'a> {
        let mut by = [Pick::Fixed(0, "(none)"); 9];
        by[Dimension::Channel.index()] = Pick::Fixed(3, "social");
        by[Dimension::Source.index()] = Pick::Open(source);
        by[Dimension::Browser.index()] = Pick::Fixed(1, "Chrome");
        by[Dimension::Os.index()] = Pick::Fixed(0, "Android");
        by[Dimension::Device.index()] = Pick::Fixed(0, "mobile");
        by[Dimension::Country.index()] = Pick::Fixed(country, "VN");
        HitValues { by }
    }

    type Sums = BTreeMap<(Option<String>, &'static str, DayNumber, String), u64>;

    fn sums(deltas: &[DimDelta]) -> Sums {
        let mut m = BTreeMap::new();
        for d in deltas {
            *m.entry((
                d.page.as_deref().map(String::from),
                d.dimension.as_str(),
                d.day,
                d.value.to_string(),
            ))
            .or_default() += d.hits;
        }
        m
    }

    fn site(m: &Sums, dim: Dimension, day: DayNumber, value: &str) -> u64 {
        m.get(&(None, dim.as_str(), day, value.to_string()))
            .copied()
            .unwrap_or(0)
    }

    #[test]
    fn every_dimension_sums_to_the_hits() {
        let b = SiteBreakdown::new(1000, 50, 1000);
        for i in 0..30 {
            let source = ["facebook", "google", "zalo"][i % 3];
            b.count(&values(source, 21 * 26 + 13), Some("/a"), 7);
        }
        let mut out = Vec::new();
        b.take(7, &mut out);
        let m = sums(&out);
        for dim in Dimension::ALL {
            let total: u64 = m
                .iter()
                .filter(|(k, _)| k.0.is_none() && k.1 == dim.as_str())
                .map(|(_, v)| v)
                .sum();
            assert_eq!(total, 30, "{dim:?}");
        }
        assert_eq!(site(&m, Dimension::Source, 7, "zalo"), 10);
        assert_eq!(site(&m, Dimension::Country, 7, "VN"), 30);
        let page_source: u64 = m
            .iter()
            .filter(|(k, _)| k.0.as_deref() == Some("/a") && k.1 == "source")
            .map(|(_, v)| v)
            .sum();
        assert_eq!(page_source, 30);
        assert!(!b.holds_hits());
    }

    #[test]
    fn values_beyond_the_bound_count_as_other() {
        let b = SiteBreakdown::new(2, 1, 1000);
        for source in ["a.vn", "b.vn", "c.vn", "a.vn", "d.vn"] {
            b.count(&values(source, 0), Some("/p"), 3);
        }
        let mut out = Vec::new();
        b.take(3, &mut out);
        let m = sums(&out);
        assert_eq!(site(&m, Dimension::Source, 3, "a.vn"), 2);
        assert_eq!(site(&m, Dimension::Source, 3, "b.vn"), 1);
        assert_eq!(site(&m, Dimension::Source, 3, OTHER), 2, "c.vn and d.vn");
        let page = |v: &str| {
            m.get(&(Some("/p".into()), "source", 3, v.to_string()))
                .copied()
                .unwrap_or(0)
        };
        assert_eq!((page("a.vn"), page(OTHER)), (2, 3));
        // A new day admits anew.
        b.count(&values("c.vn", 0), Some("/p"), 4);
        let mut out = Vec::new();
        b.take(4, &mut out);
        assert_eq!(site(&sums(&out), Dimension::Source, 4, "c.vn"), 1);
    }

    #[test]
    fn an_out_of_range_index_counts_as_other() {
        let b = SiteBreakdown::new(10, 10, 10);
        let over = b.count(&values("x", 26 * 26), None, 1);
        assert_eq!(over.dimensions().collect::<Vec<_>>(), [Dimension::Country]);
        let mut out = Vec::new();
        b.take(1, &mut out);
        assert_eq!(site(&sums(&out), Dimension::Country, 1, OTHER), 1);
    }

    #[test]
    fn idle_values_and_pairs_are_forgotten() {
        let b = SiteBreakdown::new(10, 10, 100);
        b.count(&values("old.vn", 0), Some("/old"), 1);
        let mut out = Vec::new();
        b.take(1, &mut out);
        assert!(!b.is_empty());
        b.take(5, &mut out);
        assert_eq!(b.len(), 0, "{b:?}");
        assert_eq!(b.pair_count.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_pairs_cap_holds() {
        let b = SiteBreakdown::new(1000, 50, 4);
        for i in 0..10 {
            b.count(&values("s.vn", 0), Some(&format!("/p{i}")), 1);
        }
        assert!(b.pages.len() <= 4, "{}", b.pages.len());
    }

    proptest::proptest! {
        /// Whatever the values, bounds and days, and however takes are
        /// interleaved, each dimension's values sum to the hits counted,
        /// for the site, and the page's channel and source to the page's.
        #[test]
        fn every_dimension_sums_to_the_hits_whatever_the_bounds(
            hits in proptest::collection::vec((0u8..12, 0u16..700, 0u8..3, 1u32..4, proptest::bool::ANY), 1..300),
            max_values in 1u32..6,
            max_page_values in 1u32..4,
            max_pairs in 1usize..20,
        ) {
            let b = SiteBreakdown::new(max_values, max_page_values, max_pairs);
            let mut out = Vec::new();
            let mut counted: BTreeMap<(bool, DayNumber), u64> = BTreeMap::new();
            for (i, &(source, country, page, day, take)) in hits.iter().enumerate() {
                let source = format!("s{source}.vn");
                let page = format!("/p{page}");
                b.count(&values(&source, country), Some(&page), day);
                *counted.entry((false, day)).or_default() += 1;
                if take && i % 7 == 0 {
                    b.take(day, &mut out);
                }
            }
            b.take(4, &mut out);
            let m = sums(&out);
            for dim in Dimension::ALL {
                for (&(_, day), &n) in counted.iter() {
                    let total: u64 = m
                        .iter()
                        .filter(|(k, _)| k.0.is_none() && k.1 == dim.as_str() && k.2 == day)
                        .map(|(_, v)| v)
                        .sum();
                    proptest::prop_assert_eq!(total, n, "{:?} on day {}", dim, day);
                }
            }
            // Pages: the pairs' cap may leave a page's hits out (read as
            // unknown), never count one twice or split channel and source.
            let page_sum = |dim: &str| -> u64 {
                m.iter().filter(|(k, _)| k.0.is_some() && k.1 == dim).map(|(_, v)| v).sum()
            };
            proptest::prop_assert_eq!(page_sum("channel"), page_sum("source"));
            proptest::prop_assert!(page_sum("source") <= hits.len() as u64);
            proptest::prop_assert!(b.pages.len() <= max_pairs);
        }
    }

    #[test]
    fn a_day_left_in_a_slot_is_spilled_not_lost() {
        let b = SiteBreakdown::new(10, 10, 10);
        b.count(&values("s.vn", 0), Some("/p"), 1);
        b.count(&values("s.vn", 0), Some("/p"), 3);
        let mut out = Vec::new();
        b.take(3, &mut out);
        let m = sums(&out);
        assert_eq!(site(&m, Dimension::Source, 1, "s.vn"), 1);
        assert_eq!(site(&m, Dimension::Source, 3, "s.vn"), 1);
        assert_eq!(site(&m, Dimension::Browser, 1, "Chrome"), 1);
    }
}
