//! Store readings of pages the tally does not keep (read with `?page=` but
//! not counted here, or past `max_pages`), including readings of pages never
//! counted at all (all zeros: the negative cache), bounded and evicted a few
//! at a time.
//!
//! What this module owns: [`PageCache`], a map from page to its latest
//! reading with CLOCK eviction (a second chance for readings used since the
//! hand last passed them), and the rule that keeps its readings complete
//! over this instance's batches without touching every entry per batch.
//! Every operation is one short critical section of a mutex; nothing awaits
//! or paces while holding it.
//!
//! What it must not do: read the store, or know the tally or the ledger.
//! [`crate::site::Site`] decides what goes in and rolls it forward.
//!
//! # Completeness over batches
//!
//! A reading with watermark `w` holds every batch of this instance up to
//! `w`. The cache notes the batch the flusher is rolling forward
//! ([`PageCache::start_roll`]) and the last one it rolled over every entry
//! ([`PageCache::end_roll`]); a reading is taken in only if no batch after
//! its watermark has started rolling. From then on every later batch is
//! rolled over it ([`PageCache::roll_page`]: its hits added, or the entry
//! left when the batch does not carry the page), so a reading still in the
//! cache when batch `r` finished rolling holds every batch up to `r` that
//! carried the page: it is given out with watermark `max(w, r)`. A page
//! never counted thus answers zeros from the cache for its whole time to
//! live, however many batches of other pages leave memory meanwhile, and a
//! batch that counts it rolls the zeros forward.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::count::ledger::Stored;

/// Readings of pages the tally does not keep, per site.
pub struct PageCache {
    inner: parking_lot::Mutex<Inner>,
}

struct Inner {
    /// Each page's slot in `slots`.
    index: HashMap<Arc<str>, usize>,
    slots: Vec<Slot>,
    /// The CLOCK hand: the next slot looked at for eviction.
    hand: usize,
    capacity: usize,
    /// The latest batch whose roll forward has started (0: none).
    rolling: u64,
    /// The latest batch rolled forward over every entry (0: none).
    rolled: u64,
}

struct Slot {
    page: Arc<str>,
    stored: Arc<Stored>,
    /// When the reading was taken (Unix milliseconds).
    taken_ms: i64,
    /// Used since the hand last passed: spared once.
    referenced: bool,
}

impl PageCache {
    /// An empty cache of at most `capacity` readings (at least 1).
    pub fn new(capacity: usize) -> Self {
        PageCache {
            inner: parking_lot::Mutex::new(Inner {
                index: HashMap::new(),
                slots: Vec::new(),
                hand: 0,
                capacity: capacity.max(1),
                rolling: 0,
                rolled: 0,
            }),
        }
    }

    /// Readings kept.
    pub fn len(&self) -> usize {
        self.inner.lock().slots.len()
    }

    /// Whether no reading is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The reading of `page` if it is younger than `max_age` at `now_ms`,
    /// its watermark raised to the last batch rolled over the cache (see
    /// the module's documentation).
    pub fn get(&self, page: &str, now_ms: i64, max_age: Duration) -> Option<Arc<Stored>> {
        let mut inner = self.inner.lock();
        let rolled = inner.rolled;
        let i = *inner.index.get(page)?;
        let slot = &mut inner.slots[i];
        let age = now_ms.saturating_sub(slot.taken_ms);
        if !(0..max_age.as_millis() as i64).contains(&age) {
            return None;
        }
        slot.referenced = true;
        if slot.stored.watermark < rolled {
            let mut raised = (*slot.stored).clone();
            raised.watermark = rolled;
            slot.stored = Arc::new(raised);
        }
        Some(Arc::clone(&slot.stored))
    }

    /// Keeps a reading of `page` taken at `now_ms`, unless a batch after
    /// its watermark has started rolling (the reading may miss it and
    /// would not be rolled over it) or a later reading is kept. When full,
    /// evicts one reading: the first the hand finds unused since it last
    /// passed. Returns whether the reading was kept.
    pub fn insert(&self, page: &Arc<str>, stored: Arc<Stored>, now_ms: i64) -> bool {
        let mut inner = self.inner.lock();
        if stored.watermark < inner.rolling {
            return false;
        }
        if let Some(&i) = inner.index.get(&**page) {
            let slot = &mut inner.slots[i];
            if slot.stored.watermark > stored.watermark {
                return false;
            }
            slot.stored = stored;
            slot.taken_ms = now_ms;
            return true;
        }
        let slot = Slot {
            page: Arc::clone(page),
            stored,
            taken_ms: now_ms,
            referenced: false,
        };
        if inner.slots.len() < inner.capacity {
            let i = inner.slots.len();
            inner.slots.push(slot);
            inner.index.insert(Arc::clone(page), i);
            return true;
        }
        let i = inner.victim();
        let old = std::mem::replace(&mut inner.slots[i], slot);
        inner.index.remove(&old.page);
        inner.index.insert(Arc::clone(page), i);
        true
    }

    /// Notes that batch `seq` starts rolling forward: readings older than
    /// it are no longer taken in.
    pub fn start_roll(&self, seq: u64) {
        let mut inner = self.inner.lock();
        inner.rolling = inner.rolling.max(seq);
    }

    /// Rolls the reading of `page` forward with `roll` (given the reading:
    /// `None` to leave it, `Some(None)` to drop it, `Some(Some(next))` to
    /// replace it).
    pub fn roll_page(&self, page: &str, roll: impl FnOnce(&Stored) -> Option<Option<Stored>>) {
        let mut inner = self.inner.lock();
        let Some(&i) = inner.index.get(page) else {
            return;
        };
        match roll(&inner.slots[i].stored) {
            None => {}
            Some(Some(next)) => inner.slots[i].stored = Arc::new(next),
            Some(None) => inner.remove_at(i),
        }
    }

    /// Notes that batch `seq` has been rolled over every reading.
    pub fn end_roll(&self, seq: u64) {
        let mut inner = self.inner.lock();
        inner.rolled = inner.rolled.max(seq);
        inner.rolling = inner.rolling.max(seq);
    }

    /// Forgets every reading (the store changed other than by this
    /// instance's batches).
    pub fn clear(&self) {
        let mut inner = self.inner.lock();
        inner.index.clear();
        inner.slots.clear();
        inner.hand = 0;
    }
}

impl Inner {
    /// The slot to evict: CLOCK, sparing each used slot once. Ends within
    /// two turns of the hand.
    fn victim(&mut self) -> usize {
        loop {
            let i = self.hand % self.slots.len();
            self.hand = i + 1;
            let slot = &mut self.slots[i];
            if !slot.referenced {
                return i;
            }
            slot.referenced = false;
        }
    }

    fn remove_at(&mut self, i: usize) {
        let old = self.slots.swap_remove(i);
        self.index.remove(&old.page);
        if let Some(moved) = self.slots.get(i) {
            self.index.insert(Arc::clone(&moved.page), i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PeriodKey;

    fn reading(values: [u64; 5], watermark: u64) -> Arc<Stored> {
        Arc::new(Stored {
            keys: [PeriodKey::Total; 5],
            values,
            watermark,
        })
    }

    const TTL: Duration = Duration::from_secs(3);

    #[test]
    fn a_full_cache_evicts_one_unused_reading_at_a_time() {
        let cache = PageCache::new(100);
        for i in 0..100 {
            assert!(cache.insert(&Arc::from(format!("/p{i}")), reading([0; 5], 1), 0));
        }
        // Every tenth page is read: each is spared by the hand.
        for i in (0..100).step_by(10) {
            assert!(cache.get(&format!("/p{i}"), 1, TTL).is_some());
        }
        for i in 0..50 {
            cache.insert(&Arc::from(format!("/new{i}")), reading([0; 5], 1), 2);
            assert_eq!(cache.len(), 100, "bounded, never emptied");
        }
        for i in (0..100).step_by(10) {
            assert!(
                cache.get(&format!("/p{i}"), 3, TTL).is_some(),
                "/p{i} was used, so kept"
            );
        }
        let kept_old = (0..100)
            .filter(|i| cache.get(&format!("/p{i}"), 3, TTL).is_some())
            .count();
        assert_eq!(kept_old, 50, "one reading evicted per insert");
        for i in 0..50 {
            assert!(cache.get(&format!("/new{i}"), 3, TTL).is_some());
        }
    }

    #[test]
    fn readings_older_than_their_time_to_live_are_not_given() {
        let cache = PageCache::new(4);
        cache.insert(&Arc::from("/a"), reading([0; 5], 1), 1_000);
        assert!(cache.get("/a", 3_999, TTL).is_some());
        assert!(cache.get("/a", 4_000, TTL).is_none());
        assert!(cache.get("/a", 999, TTL).is_none(), "from the future");
    }

    #[test]
    fn a_reading_holds_batches_rolled_since_that_did_not_carry_its_page() {
        let cache = PageCache::new(4);
        cache.insert(&Arc::from("/never"), reading([0; 5], 5), 0);
        for seq in 6..=9 {
            cache.start_roll(seq);
            cache.roll_page("/other", |_| panic!("not kept"));
            cache.end_roll(seq);
        }
        let got = cache.get("/never", 1, TTL).unwrap();
        assert_eq!((got.values, got.watermark), ([0; 5], 9));
        // A batch that counts it rolls it forward.
        cache.start_roll(10);
        cache.roll_page("/never", |s| {
            let mut next = s.clone();
            next.values = [1; 5];
            next.watermark = 10;
            Some(Some(next))
        });
        let mid = cache.get("/never", 1, TTL).unwrap();
        assert_eq!((mid.values, mid.watermark), ([1; 5], 10));
        cache.end_roll(10);
        cache.roll_page("/never", |_| Some(None));
        assert!(cache.get("/never", 1, TTL).is_none(), "dropped");
    }

    #[test]
    fn a_reading_older_than_a_batch_being_rolled_is_not_taken_in() {
        let cache = PageCache::new(4);
        cache.start_roll(7);
        assert!(
            !cache.insert(&Arc::from("/a"), reading([0; 5], 6), 0),
            "it may miss batch 7 and would not be rolled over it"
        );
        assert!(cache.insert(&Arc::from("/a"), reading([0; 5], 7), 0));
        // While batch 7 rolls, a reading at 7 is given as it is.
        assert_eq!(cache.get("/a", 0, TTL).unwrap().watermark, 7);
        assert!(
            !cache.insert(&Arc::from("/a"), reading([0; 5], 6), 0),
            "never replaced by an older reading"
        );
    }

    #[test]
    fn removing_keeps_the_index_right() {
        let cache = PageCache::new(8);
        for p in ["/a", "/b", "/c"] {
            cache.insert(&Arc::from(p), reading([1; 5], 1), 0);
        }
        cache.roll_page("/a", |_| Some(None));
        assert!(cache.get("/a", 0, TTL).is_none());
        assert_eq!(cache.get("/c", 0, TTL).unwrap().values, [1; 5]);
        assert_eq!(cache.get("/b", 0, TTL).unwrap().values, [1; 5]);
        assert_eq!(cache.len(), 2);
        cache.clear();
        assert!(cache.is_empty());
    }
}
