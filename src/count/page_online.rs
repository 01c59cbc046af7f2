//! Readers of each page now: distinct visitors per page in the online
//! window, and the ranking of a site's pages by them ("Đang đọc").
//!
//! A page has state only while someone reads it: its entry is made by the
//! first hit of the window and dropped by [`PageOnline::sweep`] once the
//! window has passed without a hit. An entry is small: up to
//! [`EXACT_READERS`] `(visitor, minute)` pairs, counted exactly; a page
//! with more readers switches to a ring of per-minute HyperLogLogs of
//! [`SMALL_REGISTERS`] registers each (fixed size, ~6.5 % standard error,
//! exact in practice for a few dozen). Entries are capped per site; a page
//! beyond the cap is not tracked (counted in a metric), never new memory.
//!
//! The hot path is one map lookup (a shard read lock) and an insert into
//! the page's small structure under its own lock, which allocates nothing
//! for a page and visitor already seen this minute. New visitors are also
//! kept in a short pending list for a store that shares `online` across
//! instances (Redis), taken by the flusher.
//!
//! Knows nothing of stores, HTTP or the flusher.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use dashmap::DashMap;

use crate::store::PageReaders;

/// Readers of a page counted exactly before its sketch ring takes over.
pub const EXACT_READERS: usize = 64;

/// Registers of each minute's small HyperLogLog (p = 9: ~4.6 % standard
/// error, near exact with linear counting for the first hundreds).
pub const SMALL_REGISTERS: usize = 512;

/// Most new visitors of one page kept for the store between two flushes;
/// beyond them a page is busy enough that the store's count (shared with
/// other instances) is the local one's complement, not its source.
pub const MAX_PENDING: usize = 1024;

/// Pages kept in the ranking ("pages with the most readers now").
pub const RANKED: usize = 20;

/// One minute of a busy page's readers.
struct MinuteSketch {
    minute: i64,
    registers: [u8; SMALL_REGISTERS],
}

/// Low bits of an exact entry that hold its minute (mod 65,536 minutes,
/// 45 days: entries older than the window are pruned long before).
const MINUTE_BITS: u32 = 16;
const MINUTE_MASK: u64 = (1 << MINUTE_BITS) - 1;

/// An exact entry: the visitor's top 48 bits and the minute last seen.
fn pack(visitor: u64, minute: i64) -> u64 {
    (visitor & !MINUTE_MASK) | (minute as u64 & MINUTE_MASK)
}

/// Minutes from an entry's minute to `now` (wrapping).
fn age(entry: u64, now: i64) -> i64 {
    ((now as u64).wrapping_sub(entry) & MINUTE_MASK) as i64
}

/// The readers of one page in the window.
struct Readers {
    /// Packed `(visitor, minute last seen)`, at most [`EXACT_READERS`],
    /// while the page is counted exactly; grows by doubling (a new reader
    /// may allocate, one seen again never does).
    exact: Vec<u64>,
    /// Per-minute sketches once the page outgrew `exact`.
    ring: Option<Box<[MinuteSketch]>>,
    /// Last minute the page was read.
    last_minute: i64,
    /// Visitors new to a minute since the flusher last took them, with it.
    pending: Vec<(u64, i64)>,
    /// Readers across instances, as the store last said (`u64::MAX`: not
    /// read), and the minute it said so.
    shared: (u64, i64),
}

/// What inserting into [`Readers`] did.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Already seen this minute.
    Again,
    /// New to the minute.
    New,
    /// Outgrew the exact set and may not grow a ring (too many busy pages).
    Full,
}

impl Readers {
    fn new() -> Self {
        Readers {
            exact: Vec::new(),
            ring: None,
            last_minute: i64::MIN,
            pending: Vec::new(),
            shared: (u64::MAX, i64::MIN),
        }
    }

    /// Records `visitor` at `minute`; `may_grow` tells whether the page may
    /// take a sketch ring if it outgrows its exact set.
    fn insert(&mut self, minute: i64, visitor: u64, window: i64, may_grow: bool) -> Seen {
        let seen = |fresh: bool| if fresh { Seen::New } else { Seen::Again };
        self.last_minute = self.last_minute.max(minute);
        if let Some(ring) = &mut self.ring {
            return seen(ring_insert(ring, minute, visitor));
        }
        let packed = pack(visitor, minute);
        for entry in &mut self.exact {
            if *entry & !MINUTE_MASK == visitor & !MINUTE_MASK {
                // Seen before: at this minute, or earlier (then moved on).
                let fresh = age(*entry, minute) > 0 && age(*entry, minute) < (1 << 15);
                if fresh {
                    *entry = packed;
                }
                return seen(fresh);
            }
        }
        if self.exact.len() < EXACT_READERS {
            self.exact.push(packed);
            return Seen::New;
        }
        // A slot whose reader left the window.
        if let Some(entry) = self.exact.iter_mut().find(|e| age(**e, minute) > window) {
            *entry = packed;
            return Seen::New;
        }
        if !may_grow {
            return Seen::Full;
        }
        // Outgrown: move the exact readers into a ring of sketches (the
        // entries' 48 bits are enough to place and rank them).
        let slots = (window + 2) as usize;
        let mut ring: Box<[MinuteSketch]> = (0..slots)
            .map(|_| MinuteSketch {
                minute: i64::MIN,
                registers: [0; SMALL_REGISTERS],
            })
            .collect();
        for &e in &self.exact {
            ring_insert(&mut ring, minute - age(e, minute), e | MINUTE_MASK);
        }
        self.exact = Vec::new();
        let fresh = ring_insert(&mut ring, minute, visitor | MINUTE_MASK);
        self.ring = Some(ring);
        seen(fresh)
    }

    /// Distinct readers from `window` minutes before `now` up to `now`.
    fn count(&self, now: i64, window: i64) -> u64 {
        match &self.ring {
            None => self
                .exact
                .iter()
                .filter(|e| age(**e, now) <= window)
                .count() as u64,
            Some(ring) => {
                let live = |m: i64| m <= now && m >= now - window;
                let mut merged = [0u8; SMALL_REGISTERS];
                let mut any = false;
                for s in ring.iter().filter(|s| live(s.minute)) {
                    any = true;
                    for (m, r) in merged.iter_mut().zip(s.registers.iter()) {
                        *m = (*m).max(*r);
                    }
                }
                if any { estimate(&merged) } else { 0 }
            }
        }
    }

    /// Forgets the readers that left the window.
    fn prune(&mut self, now: i64, window: i64) {
        self.exact.retain(|e| age(*e, now) <= window);
        if self.exact.capacity() > 2 * self.exact.len().max(4) {
            self.exact.shrink_to_fit();
        }
    }
}

/// Adds `visitor` to the ring's sketch of `minute`; whether a register
/// moved. The register is chosen by the hash's bits 16.. (the low 16 may
/// be a packed minute), the rank counted over the top 39.
fn ring_insert(ring: &mut [MinuteSketch], minute: i64, visitor: u64) -> bool {
    let slot = &mut ring[minute.rem_euclid(ring.len() as i64) as usize];
    if slot.minute < minute {
        slot.minute = minute;
        slot.registers = [0; SMALL_REGISTERS];
    }
    let index = ((visitor >> MINUTE_BITS) & (SMALL_REGISTERS as u64 - 1)) as usize;
    // The remaining 39 bits, with a stop bit so the rank is at most 40.
    let rank = ((visitor >> (MINUTE_BITS + 9)) | (1 << 39)).trailing_zeros() as u8 + 1;
    if slot.registers[index] < rank {
        slot.registers[index] = rank;
        true
    } else {
        false
    }
}

/// The HyperLogLog estimate of `registers`, with linear counting while
/// registers are empty (the usual small-range correction).
fn estimate(registers: &[u8; SMALL_REGISTERS]) -> u64 {
    let m = SMALL_REGISTERS as f64;
    let mut sum = 0.0;
    let mut zeros = 0u32;
    for &r in registers {
        sum += 2f64.powi(-i32::from(r));
        if r == 0 {
            zeros += 1;
        }
    }
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let raw = alpha * m * m / sum;
    let e = if raw <= 2.5 * m && zeros > 0 {
        m * (m / f64::from(zeros)).ln()
    } else {
        raw
    };
    e.round() as u64
}

/// A page and its readers now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    pub page: Arc<str>,
    pub online: u64,
}

/// What [`PageOnline::sweep`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Pages with readers in the window, after the sweep.
    pub pages: usize,
    /// Pages dropped because their window passed.
    pub dropped: usize,
}

/// foldhash (keyed per process), as the tally's and breakdowns' maps:
/// hashing the page is most of a lookup, and the map is bounded, so a
/// collision flood could only slow a bounded map.
type Pages = DashMap<Arc<str>, parking_lot::Mutex<Readers>, foldhash::fast::RandomState>;

/// The readers of each of a site's pages in the online window.
pub struct PageOnline {
    window: i64,
    max_pages: usize,
    pages: Pages,
    /// Entries in `pages` (kept beside the map so the cap check takes no
    /// shard locks).
    len: AtomicUsize,
    /// Pages with a sketch ring (more than [`EXACT_READERS`] readers).
    busy: AtomicUsize,
    /// Most pages with a sketch ring: a tenth of the pages (at least 16).
    max_busy: usize,
    /// Hits not tracked because a cap was reached (pages, or busy pages).
    refused: AtomicU64,
    /// The pages with the most readers, largest first, as of the last sweep.
    ranking: ArcSwap<Vec<Reading>>,
    /// Pages other instances rank that this one does not track, with their
    /// readers across instances and the minute the store said so (a store
    /// that shares: Redis); at most a few dozen.
    remote: ArcSwap<(i64, Vec<Reading>)>,
}

impl PageOnline {
    /// Pages' readers over a window of `window_minutes` (at least 1), at
    /// most `max_pages` pages at once.
    pub fn new(window_minutes: u32, max_pages: usize) -> Self {
        PageOnline {
            window: i64::from(window_minutes.max(1)),
            max_pages,
            pages: Pages::with_hasher(foldhash::fast::RandomState::default()),
            len: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            max_busy: (max_pages / 10).max(16),
            refused: AtomicU64::new(0),
            ranking: ArcSwap::from_pointee(Vec::new()),
            remote: ArcSwap::from_pointee((i64::MIN, Vec::new())),
        }
    }

    /// The window, in minutes.
    pub fn window_minutes(&self) -> i64 {
        self.window
    }

    /// Records `visitor` reading `page` at `unix_secs`. Returns `false`
    /// when the page could not be tracked (the cap is reached).
    pub fn insert(&self, page: &str, unix_secs: i64, visitor: u64) -> bool {
        let minute = unix_secs.div_euclid(60);
        if let Some(entry) = self.pages.get(page) {
            self.record(&mut entry.lock(), minute, visitor);
            return true;
        }
        if self.len.load(Ordering::Relaxed) >= self.max_pages {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let entry = self.pages.entry(Arc::from(page)).or_insert_with(|| {
            self.len.fetch_add(1, Ordering::Relaxed);
            parking_lot::Mutex::new(Readers::new())
        });
        self.record(&mut entry.lock(), minute, visitor);
        true
    }

    fn record(&self, readers: &mut Readers, minute: i64, visitor: u64) {
        let had_ring = readers.ring.is_some();
        let may_grow = self.busy.load(Ordering::Relaxed) < self.max_busy;
        match readers.insert(minute, visitor, self.window, may_grow) {
            Seen::Again => {}
            Seen::New => {
                if !had_ring && readers.ring.is_some() {
                    self.busy.fetch_add(1, Ordering::Relaxed);
                }
                if readers.pending.len() < MAX_PENDING {
                    readers.pending.push((visitor, minute));
                }
            }
            Seen::Full => {
                self.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Distinct readers of `page` now, as this instance saw them or as the
    /// store last said across instances, whichever is more.
    pub fn count(&self, page: &str, unix_secs: i64) -> u64 {
        let now = unix_secs.div_euclid(60);
        let Some(entry) = self.pages.get(page) else {
            let remote = self.remote.load();
            if remote.0 < now - 1 {
                return 0;
            }
            return remote
                .1
                .iter()
                .find(|r| &*r.page == page)
                .map_or(0, |r| r.online);
        };
        let readers = entry.lock();
        let local = readers.count(now, self.window);
        match readers.shared {
            (u64::MAX, _) => local,
            // The store's word holds for the minute it was read in and the next.
            (shared, at) if at >= now - 1 => shared.max(local),
            _ => local,
        }
    }

    /// Pages tracked now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no page is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hits on pages refused by the cap since the last call.
    pub fn take_refused(&self) -> u64 {
        self.refused.swap(0, Ordering::Relaxed)
    }

    /// The visitors new to a minute of each page since the last call, for
    /// a store that shares them across instances.
    pub fn take_pending(&self) -> Vec<PageReaders> {
        let mut out = Vec::new();
        for entry in self.pages.iter() {
            let mut readers = entry.value().lock();
            if !readers.pending.is_empty() {
                out.push((
                    Arc::clone(entry.key()),
                    std::mem::take(&mut readers.pending),
                ));
            }
        }
        out
    }

    /// Notes the readers the store counted for `page` across instances
    /// at `unix_secs`.
    pub fn set_shared(&self, page: &str, unix_secs: i64, online: u64) {
        if let Some(entry) = self.pages.get(page) {
            entry.lock().shared = (online, unix_secs.div_euclid(60));
        }
    }

    /// Notes the readers across instances of pages this instance does not
    /// track (other instances rank them), as the store said at
    /// `unix_secs`: they join the ranking at the next sweep and answer
    /// [`PageOnline::count`] for the minute.
    pub fn set_remote(&self, unix_secs: i64, readings: Vec<Reading>) {
        let readings = readings
            .into_iter()
            .filter(|r| !self.pages.contains_key(&*r.page))
            .take(RANKED)
            .collect();
        self.remote
            .store(Arc::new((unix_secs.div_euclid(60), readings)));
    }

    /// Whether `page` is tracked here.
    pub fn tracks(&self, page: &str) -> bool {
        self.pages.contains_key(page)
    }

    /// Drops the pages whose window passed and ranks the others, keeping
    /// the [`RANKED`] with the most readers. One pass over the tracked
    /// pages (at most the cap), at flush time, never on the hot path.
    pub fn sweep(&self, unix_secs: i64) -> Swept {
        let now = unix_secs.div_euclid(60);
        let window = self.window;
        let mut dropped = 0;
        let mut rings_dropped = 0;
        let mut top: Vec<Reading> = Vec::with_capacity(RANKED + 1);
        self.pages.retain(|page, readers| {
            let readers = readers.get_mut();
            if readers.last_minute < now - window {
                dropped += 1;
                rings_dropped += usize::from(readers.ring.is_some());
                return false;
            }
            readers.prune(now, window);
            let online = match readers.shared {
                (u64::MAX, _) => readers.count(now, window),
                (shared, at) if at >= now - 1 => shared.max(readers.count(now, window)),
                _ => readers.count(now, window),
            };
            if online > 0 && (top.len() < RANKED || top.last().is_some_and(|r| r.online < online)) {
                let at = top.partition_point(|r| {
                    r.online > online || (r.online == online && *r.page <= **page)
                });
                top.insert(
                    at,
                    Reading {
                        page: Arc::clone(page),
                        online,
                    },
                );
                top.truncate(RANKED);
            }
            true
        });
        self.len.fetch_sub(dropped, Ordering::Relaxed);
        self.busy.fetch_sub(rings_dropped, Ordering::Relaxed);
        // Pages only other instances read, as the store last counted them.
        let remote = self.remote.load();
        if remote.0 >= now - 1 {
            for r in &remote.1 {
                if r.online > 0 && !top.iter().any(|t| t.page == r.page) {
                    top.push(r.clone());
                }
            }
            top.sort_by(|a, b| b.online.cmp(&a.online).then_with(|| a.page.cmp(&b.page)));
            top.truncate(RANKED);
        }
        self.ranking.store(Arc::new(top));
        Swept {
            pages: self.len(),
            dropped,
        }
    }

    /// The pages with the most readers as of the last sweep, largest
    /// first (ties by page), at most [`RANKED`].
    pub fn ranking(&self) -> Arc<Vec<Reading>> {
        self.ranking.load_full()
    }

    /// Pages whose ranking the store should confirm across instances:
    /// the ranked ones and those with new readers are the only candidates.
    pub fn pages(&self) -> Vec<Arc<str>> {
        self.pages.iter().map(|e| Arc::clone(e.key())).collect()
    }
}

/// Bytes one tracked page holds with `readers` distinct readers in the
/// window: its map entry (key pointer, lock, state), 8 bytes a reader
/// while exact (the vector doubles, so up to twice that), or the sketch
/// ring of a busy page; the key's text and the pending list (emptied
/// every flush) come on top.
pub fn entry_bytes(window_minutes: u32, readers: usize) -> usize {
    let base = std::mem::size_of::<(Arc<str>, parking_lot::Mutex<Readers>)>();
    if readers <= EXACT_READERS {
        base + 8 * readers.next_power_of_two()
    } else {
        base + (window_minutes as usize + 2) * std::mem::size_of::<MinuteSketch>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000; // a minute boundary

    fn hash(i: u64) -> u64 {
        // Well-mixed like a visitor hash (SplitMix64).
        let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn counts_distinct_readers_per_page() {
        let p = PageOnline::new(5, 100);
        p.insert("/a", T0, hash(1));
        p.insert("/a", T0 + 10, hash(2));
        p.insert("/a", T0 + 20, hash(1));
        p.insert("/b", T0 + 30, hash(1));
        assert_eq!(p.count("/a", T0 + 30), 2);
        assert_eq!(p.count("/b", T0 + 30), 1);
        assert_eq!(p.count("/never", T0 + 30), 0);
    }

    #[test]
    fn readers_leave_with_the_window_and_pages_are_dropped() {
        let p = PageOnline::new(5, 100);
        p.insert("/a", T0, hash(1));
        p.insert("/a", T0 + 3 * 60, hash(2));
        assert_eq!(p.count("/a", T0 + 5 * 60), 2);
        // Six minutes on, the first reader has left, the second not.
        assert_eq!(p.count("/a", T0 + 6 * 60), 1);
        assert_eq!(
            p.sweep(T0 + 6 * 60),
            Swept {
                pages: 1,
                dropped: 0
            }
        );
        assert_eq!(p.count("/a", T0 + 9 * 60), 0);
        assert_eq!(
            p.sweep(T0 + 9 * 60),
            Swept {
                pages: 0,
                dropped: 1
            }
        );
        assert!(p.is_empty());
    }

    #[test]
    fn a_reader_seen_again_stays_in_the_window() {
        let p = PageOnline::new(2, 100);
        for m in 0..10 {
            p.insert("/a", T0 + m * 60, hash(7));
        }
        assert_eq!(p.count("/a", T0 + 9 * 60), 1);
    }

    #[test]
    fn a_busy_page_switches_to_sketches_and_stays_close() {
        let p = PageOnline::new(5, 100);
        for i in 0..EXACT_READERS as u64 {
            p.insert("/hot", T0, hash(i));
        }
        assert_eq!(p.count("/hot", T0), EXACT_READERS as u64);
        for i in 0..100 {
            p.insert("/hot", T0 + 60, hash(i));
        }
        let n = p.count("/hot", T0 + 60);
        assert!((95..=105).contains(&n), "100 readers counted as {n}");
        let mut many = 0;
        for i in 0..2000 {
            many += u64::from(p.insert("/hot", T0 + 120, hash(i)));
        }
        assert_eq!(many, 2000);
        let n = p.count("/hot", T0 + 120);
        assert!((1700..=2300).contains(&n), "2000 readers counted as {n}");
        // The sketch minutes leave the window too.
        assert_eq!(p.count("/hot", T0 + 20 * 60), 0);
    }

    #[test]
    fn the_cap_bounds_the_pages_tracked() {
        let p = PageOnline::new(5, 3);
        for i in 0..10 {
            p.insert(&format!("/p{i}"), T0, hash(i));
        }
        assert_eq!(p.len(), 3);
        assert_eq!(p.take_refused(), 7);
        assert_eq!(p.count("/p9", T0), 0);
        // A tracked page still counts.
        p.insert("/p0", T0, hash(99));
        assert_eq!(p.count("/p0", T0), 2);
        // Once the window passes, room is made again.
        p.sweep(T0 + 10 * 60);
        assert!(p.insert("/p9", T0 + 10 * 60, hash(1)));
    }

    #[test]
    fn the_ranking_keeps_the_most_read_pages() {
        let p = PageOnline::new(5, 1000);
        for page in 0..30u64 {
            for v in 0..=page {
                p.insert(&format!("/p{page:02}"), T0, hash(v * 100 + page));
            }
        }
        p.sweep(T0 + 30);
        let ranking = p.ranking();
        assert_eq!(ranking.len(), RANKED);
        assert_eq!(&*ranking[0].page, "/p29");
        assert!(ranking.windows(2).all(|w| w[0].online >= w[1].online));
        assert_eq!(&*ranking[RANKED - 1].page, "/p10");
    }

    #[test]
    fn pages_ranked_elsewhere_join_the_ranking_for_a_while() {
        let p = PageOnline::new(5, 100);
        p.insert("/a", T0, hash(1));
        p.set_remote(
            T0,
            vec![
                Reading {
                    page: Arc::from("/elsewhere"),
                    online: 3,
                },
                // A page tracked here keeps its own count.
                Reading {
                    page: Arc::from("/a"),
                    online: 9,
                },
            ],
        );
        assert_eq!(p.count("/elsewhere", T0 + 10), 3);
        assert_eq!(p.count("/a", T0 + 10), 1);
        p.sweep(T0 + 10);
        let pages: Vec<(String, u64)> = p
            .ranking()
            .iter()
            .map(|r| (r.page.to_string(), r.online))
            .collect();
        assert_eq!(pages, vec![("/elsewhere".into(), 3), ("/a".into(), 1)]);
        // The store's word is old two minutes on.
        assert_eq!(p.count("/elsewhere", T0 + 150), 0);
        p.sweep(T0 + 150);
        assert_eq!(p.ranking().len(), 1);
    }

    #[test]
    fn new_visitors_are_pending_once_per_minute() {
        let p = PageOnline::new(5, 100);
        p.insert("/a", T0, hash(1));
        p.insert("/a", T0 + 5, hash(1));
        p.insert("/a", T0 + 6, hash(2));
        p.insert("/a", T0 + 61, hash(1));
        let pending = p.take_pending();
        assert_eq!(pending.len(), 1);
        let m = T0 / 60;
        assert_eq!(
            pending[0].1,
            vec![(hash(1), m), (hash(2), m), (hash(1), m + 1)]
        );
        assert!(p.take_pending().is_empty());
    }

    #[test]
    fn the_store_count_is_used_when_higher() {
        let p = PageOnline::new(5, 100);
        p.insert("/a", T0, hash(1));
        p.set_shared("/a", T0, 3);
        assert_eq!(p.count("/a", T0 + 10), 3);
        // An old word from the store no longer holds.
        assert_eq!(p.count("/a", T0 + 3 * 60), 1);
    }

    #[test]
    fn an_entry_is_small() {
        let one = entry_bytes(5, 1);
        let exact = entry_bytes(5, EXACT_READERS);
        let busy = entry_bytes(5, 1000);
        eprintln!("page entry: 1 reader {one} B, 64 readers {exact} B, busy {busy} B");
        assert!(one <= 128, "a page with one reader holds {one} bytes");
        assert!(exact <= 700, "a page with 64 readers holds {exact} bytes");
        assert!(busy <= 3800, "a busy page holds {busy} bytes");
    }

    #[test]
    fn busy_pages_are_capped_too() {
        // 160 pages allowed, 16 of them busy.
        let p = PageOnline::new(5, 160);
        for page in 0..20u64 {
            for v in 0..=EXACT_READERS as u64 {
                p.insert(&format!("/p{page}"), T0, hash(v + 1000 * page));
            }
        }
        assert_eq!(p.busy.load(Ordering::Relaxed), 16);
        // The four pages refused a ring keep their exact readers.
        assert_eq!(p.take_refused(), 4);
        assert_eq!(p.count("/p19", T0), EXACT_READERS as u64);
        p.sweep(T0 + 10 * 60);
        assert_eq!(p.busy.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn sixty_four_readers_are_counted_exactly() {
        let p = PageOnline::new(5, 100);
        for v in 0..EXACT_READERS as u64 {
            p.insert("/a", T0 + v as i64, hash(v));
            p.insert("/a", T0 + 60 + v as i64, hash(v));
        }
        assert_eq!(p.count("/a", T0 + 120), EXACT_READERS as u64);
    }
}
