//! The repeat-view filter (DESIGN §2, optional `dedupe_window`, default
//! off): repeats of the same visitor on the same page inside the window count
//! once. Knows nothing of visitors, pages, sites or HTTP: the caller hashes
//! visitor + page into one 64-bit key and asks [`DedupeFilter::check_and_insert`]
//! whether that key was already seen.
//!
//! # Design
//!
//! Two Bloom filters of equal size, allocated once, used as a ring. Time is
//! cut into windows (epochs) of `window` milliseconds counted from the unix
//! epoch (or whatever origin the caller's milliseconds have); the filter of
//! the current epoch takes inserts, and the filter of the previous epoch is
//! only read. A key counts as seen when it is in either. When the caller's
//! clock passes into the next epoch, the previous epoch's filter — whose keys
//! are now two windows old — is cleared and becomes the current one.
//!
//! Consequences, all deliberate:
//!
//! - **Retention**: a key first seen at `t` is a repeat until the end of the
//!   epoch after `t`'s, i.e. for more than `window` and at most `2 × window`
//!   (exactly `window` plus whatever remained of `t`'s window). Later views
//!   do not extend it: the counted view opens the window.
//! - **Constant memory**: 2 × `bits` / 8 bytes, whatever the traffic and
//!   however many rotations; nothing is ever allocated after
//!   [`DedupeFilter::new`], not even on rotation.
//! - **Lock-free hot path**: one atomic load of the epoch, `k` = 8 relaxed
//!   loads per filter (stopping at the first clear bit), and up to 8
//!   `fetch_or`s to insert a new key. No lock, no await, no allocation;
//!   only at a window's boundary may a hit wait for another thread's
//!   rotation (below).
//! - **Rotation** clears one filter (bits / 64 relaxed stores: ~0.1 ms for a
//!   1 MiB filter). [`DedupeFilter::rotate_if_due`] does it; the flusher (or
//!   any periodic task) should call it at least once a second so that the
//!   cost normally lands off the hot path. [`DedupeFilter::check_and_insert`]
//!   also calls it, so that correctness never depends on that task: if it is
//!   late, the first hit past the boundary rotates. An atomic flag elects one
//!   rotator; other threads whose clock has passed the boundary wait for it
//!   (one clear), so none inserts into a filter being cleared; threads whose
//!   clock has not carry on with the old epoch.
//! - **False positives** (a new view taken for a repeat, i.e. lost): below
//!   0.03 % in theory with both filters holding [`capacity_for`] keys, which
//!   is the worst moment (end of a window); less earlier in a window. Above
//!   capacity the rate climbs smoothly, so capacity should be sized for the
//!   busiest window with room to spare. False negatives do not happen except
//!   in the races below.
//! - **Races**, all benign and confined to rotation instants: a thread that
//!   read the epoch just before a rotation may miss a repeat whose key sits
//!   in the filter being cleared (it was expiring anyway), or insert into the
//!   filter that just became the previous one (the key is then remembered for
//!   one window less); two threads inserting the same new key at the same
//!   instant may both see it as new.
//!
//! Time is the caller's `now_ms: u64` (unix milliseconds, or any monotonic
//! millisecond count): tests control it, and the hot path reuses the clock
//! reading it already has. Time going backwards is tolerated (no rotation
//! happens until the clock passes the next boundary again).

#![forbid(unsafe_code)]

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Smallest filter size in bits (8 KiB per filter): below this the fixed
/// costs dominate and capacity is too small to be useful.
pub const MIN_BITS: usize = 1 << 16;

/// Number of probes per key. With [`BITS_PER_KEY`] bits per key, one filter
/// at capacity answers a new key wrongly with probability
/// `(1 - e^(-8/20))^8 ≈ 0.014 %`, so both together stay below 0.03 %.
const PROBES: u64 = 8;

/// Bits of one filter per distinct key per window at capacity; see
/// [`capacity_for`].
const BITS_PER_KEY: usize = 20;

/// The filter size actually used for a requested `bits`: a power of two (so
/// that a probe is a mask, not a division), at least [`MIN_BITS`].
fn round_bits(bits: usize) -> usize {
    bits.max(MIN_BITS)
        .checked_next_power_of_two()
        .unwrap_or(1 << (usize::BITS - 1))
}

/// Capacity guidance: the number of distinct keys per window for a 0.1 %
/// false-positive rate at `bits` (rounded as [`DedupeFilter::new`] rounds it).
///
/// This is `bits / 20`, which keeps the theoretical rate at about 0.03 % even
/// at the worst moment (both filters full), so that the 0.1 % promise holds
/// with margin in practice; the configuration can use it to pick `bits` from
/// the expected number of distinct views per window.
pub fn capacity_for(bits: usize) -> usize {
    round_bits(bits) / BITS_PER_KEY
}

/// SplitMix64's finalizer: spreads the caller's key over all 64 bits, so that
/// a weak or structured caller hash still probes uniformly.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The probe sequence of one key (double hashing): bit `i` is
/// `(h1 + i × h2) mod bits`, with `h2` odd so that the 8 probes are distinct
/// in a power-of-two filter.
#[derive(Clone, Copy)]
struct Probes {
    h1: u64,
    h2: u64,
}

impl Probes {
    fn new(key: u64) -> Self {
        let h1 = mix64(key);
        let h2 = mix64(h1 ^ 0x9e37_79b9_7f4a_7c15) | 1;
        Probes { h1, h2 }
    }

    /// The `i`-th bit index, already reduced by `mask` (bits − 1).
    fn bit(self, i: u64, mask: u64) -> u64 {
        self.h1.wrapping_add(i.wrapping_mul(self.h2)) & mask
    }
}

/// One Bloom filter: `bits` bits in atomic 64-bit words.
struct Bloom {
    words: Box<[AtomicU64]>,
    mask: u64,
}

impl Bloom {
    fn new(bits: usize) -> Self {
        Bloom {
            words: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            mask: bits as u64 - 1,
        }
    }

    /// All probe bits set? Stops at the first clear bit, so a new key
    /// usually costs one or two loads.
    fn contains(&self, p: Probes) -> bool {
        (0..PROBES).all(|i| {
            let bit = p.bit(i, self.mask);
            self.words[(bit >> 6) as usize].load(Ordering::Relaxed) & (1 << (bit & 63)) != 0
        })
    }

    /// Sets the probe bits; true when all of them were already set (another
    /// thread inserted the same key meanwhile).
    fn insert(&self, p: Probes) -> bool {
        let mut all_set = true;
        for i in 0..PROBES {
            let bit = p.bit(i, self.mask);
            let flag = 1 << (bit & 63);
            let word = &self.words[(bit >> 6) as usize];
            // Skip the write when the bit is set: keeps popular cache lines
            // shared between cores instead of bouncing them.
            if word.load(Ordering::Relaxed) & flag == 0 {
                all_set &= word.fetch_or(flag, Ordering::Relaxed) & flag != 0;
            }
        }
        all_set
    }

    fn clear(&self) {
        for word in self.words.iter() {
            word.store(0, Ordering::Relaxed);
        }
    }
}

/// Two rotating Bloom filters of `bits` bits each (lock-free `AtomicU64`
/// words, 8 probes from one 64-bit input hash via double hashing).
///
/// A key counts as seen when it is in the current or the previous filter; the
/// oldest filter is cleared and becomes the current one every `window`, so a
/// key is remembered for between `window` and `2 × window`, memory is
/// constant (2 × bits / 8 bytes), and false positives (a real new view taken
/// for a repeat) stay below 0.1 % at [`capacity_for`]`(bits)` distinct keys
/// per window. See the module documentation for the design and its races.
pub struct DedupeFilter {
    /// The ring: the current epoch's filter is `filters[epoch % 2]`.
    filters: [Bloom; 2],
    /// The epoch (`now_ms / window_ms`) the current filter belongs to.
    epoch: AtomicU64,
    /// Elects the one thread that rotates.
    rotating: AtomicBool,
    /// Window length in milliseconds, at least 1.
    window_ms: u64,
}

impl fmt::Debug for DedupeFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DedupeFilter")
            .field("window_ms", &self.window_ms)
            .field("bits", &(self.filters[0].mask + 1))
            .field("epoch", &self.epoch.load(Ordering::Relaxed))
            .finish()
    }
}

/// Clears the rotation flag when the rotator is done, even if it unwinds.
struct RotationClaim<'a>(&'a AtomicBool);

impl Drop for RotationClaim<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl DedupeFilter {
    /// A filter remembering keys for `window` to `2 × window`, with two
    /// filters of `bits` bits each (rounded up to a power of two, at least
    /// [`MIN_BITS`]); size `bits` with [`capacity_for`]. A `window` under one
    /// millisecond is taken as one millisecond.
    ///
    /// This is the only allocation the filter ever makes.
    pub fn new(window: Duration, bits: usize) -> Self {
        let bits = round_bits(bits);
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        DedupeFilter {
            filters: [Bloom::new(bits), Bloom::new(bits)],
            epoch: AtomicU64::new(0),
            rotating: AtomicBool::new(false),
            window_ms,
        }
    }

    /// Records `key` (a 64-bit hash of visitor + page, computed by the
    /// caller) seen at `now_ms` (unix milliseconds, or any monotonic
    /// millisecond count used consistently). Returns true when it was
    /// already seen within the window (the hit is a repeat and should not be
    /// counted).
    ///
    /// Lock-free and allocation-free. When `now_ms` has crossed into a new
    /// window and no periodic [`DedupeFilter::rotate_if_due`] has rotated
    /// yet, this call rotates first (clearing one filter).
    pub fn check_and_insert(&self, key: u64, now_ms: u64) -> bool {
        self.catch_up(now_ms);
        let epoch = self.epoch.load(Ordering::Acquire);
        let current = &self.filters[(epoch & 1) as usize];
        let previous = &self.filters[(!epoch & 1) as usize];
        let probes = Probes::new(key);
        if current.contains(probes) || previous.contains(probes) {
            return true;
        }
        current.insert(probes)
    }

    /// Brings the epoch up to `now_ms`'s window: rotates, or waits while
    /// another thread rotates. Never inserting with an epoch older than its
    /// own clock's keeps a thread from inserting into a filter being
    /// cleared: a rotation after two idle windows (or the first one) clears
    /// both, and would wipe such keys. The wait happens only at a window's
    /// boundary and lasts one clear (~0.1 ms per MiB of filter).
    fn catch_up(&self, now_ms: u64) {
        while now_ms
            >= self
                .epoch
                .load(Ordering::Acquire)
                .saturating_add(1)
                .saturating_mul(self.window_ms)
        {
            if self.rotate_if_due(now_ms) {
                return;
            }
            // Another thread is rotating (or just did: the loop ends).
            std::thread::yield_now();
        }
    }

    /// Moves to the window of `now_ms` if it has begun: clears the filter
    /// holding keys two windows old (both filters after a gap of two windows
    /// or more) and makes it current. Returns true when this call rotated.
    ///
    /// Meant for the flusher or another periodic task (at least once a
    /// second), so that the clearing cost stays off the hot path; calling it
    /// when nothing is due costs one atomic load and a multiplication. If
    /// another thread is rotating, returns false at once instead of waiting.
    pub fn rotate_if_due(&self, now_ms: u64) -> bool {
        let epoch = self.epoch.load(Ordering::Acquire);
        if now_ms < epoch.saturating_add(1).saturating_mul(self.window_ms) {
            return false;
        }
        if self
            .rotating
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let _claim = RotationClaim(&self.rotating);
        let epoch = self.epoch.load(Ordering::Acquire);
        let now_epoch = now_ms / self.window_ms;
        if now_epoch <= epoch {
            return false;
        }
        // The new current filter is the old previous one: its keys are two
        // windows old. After a longer gap the old current one is stale too.
        self.filters[(now_epoch & 1) as usize].clear();
        if now_epoch - epoch >= 2 {
            self.filters[(!now_epoch & 1) as usize].clear();
        }
        // Publish only after clearing, so that no insert into the new epoch
        // can be wiped by the clearing.
        self.epoch.store(now_epoch, Ordering::Release);
        true
    }

    /// Bytes held by the filters (2 × bits / 8), constant for the life of
    /// the filter; for the memory metric and capacity planning.
    pub fn memory_bytes(&self) -> usize {
        self.filters
            .iter()
            .map(|f| f.words.len() * std::mem::size_of::<AtomicU64>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;
    use std::thread;

    const SEC: Duration = Duration::from_secs(1);

    /// A deterministic stream of distinct keys (SplitMix64 is a bijection of
    /// its counter).
    fn keys(seed: u64, n: usize) -> impl Iterator<Item = u64> {
        (0..n as u64).map(move |i| mix64(seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15))))
    }

    /// Is `key` seen, without inserting it (test-only view).
    fn seen(f: &DedupeFilter, key: u64) -> bool {
        let epoch = f.epoch.load(Ordering::Acquire);
        let p = Probes::new(key);
        f.filters[(epoch & 1) as usize].contains(p) || f.filters[(!epoch & 1) as usize].contains(p)
    }

    #[test]
    fn sizes_round_up() {
        assert_eq!(DedupeFilter::new(SEC, 0).memory_bytes(), 2 * MIN_BITS / 8);
        assert_eq!(
            DedupeFilter::new(SEC, (1 << 20) + 1).memory_bytes(),
            2 * (1 << 21) / 8
        );
        assert_eq!(capacity_for(1 << 20), (1 << 20) / 20);
        assert_eq!(capacity_for(1), MIN_BITS / 20);
        assert!(round_bits(usize::MAX).is_power_of_two());
    }

    #[test]
    fn repeat_within_window_not_after_two_windows() {
        let f = DedupeFilter::new(SEC, 1 << 16);
        let t = 1_700_000_000_000; // unix millis, start of a window
        assert!(!f.check_and_insert(42, t));
        assert!(f.check_and_insert(42, t + 1));
        assert!(f.check_and_insert(42, t + 999));
        assert!(f.check_and_insert(42, t + 1_000)); // next window: previous
        assert!(f.check_and_insert(42, t + 1_999));
        assert!(!f.check_and_insert(42, t + 2_000)); // 2 × window: new again
        assert!(f.check_and_insert(42, t + 2_001));
        // Other keys are unaffected.
        assert!(!f.check_and_insert(43, t + 2_001));
    }

    #[test]
    fn key_seen_at_end_of_window_survives_rotation() {
        let f = DedupeFilter::new(SEC, 1 << 16);
        let t = 1_700_000_000_999; // last millisecond of a window
        assert!(!f.check_and_insert(7, t));
        assert!(f.check_and_insert(7, t + 1)); // right after the rotation
        assert!(f.check_and_insert(7, t + 1_000)); // still `window` later
        assert!(!f.check_and_insert(7, t + 1_001)); // gone after 1 s + 1 ms
    }

    #[test]
    fn long_gap_forgets_everything() {
        let f = DedupeFilter::new(SEC, 1 << 16);
        for k in 0..100 {
            f.check_and_insert(k, 10_500);
        }
        assert!(f.check_and_insert(5, 11_000));
        // Three windows later: both filters were cleared.
        assert!((0..100).all(|k| !f.check_and_insert(k, 14_000)));
    }

    #[test]
    fn explicit_rotation_and_clock_going_back() {
        let f = DedupeFilter::new(SEC, 1 << 16);
        assert!(f.rotate_if_due(5_000));
        assert!(!f.rotate_if_due(5_999));
        assert!(!f.check_and_insert(1, 5_999));
        assert!(f.rotate_if_due(6_000));
        assert!(!f.rotate_if_due(6_500));
        // A clock going back neither rotates nor forgets.
        assert!(f.check_and_insert(1, 4_000));
        assert!(!f.rotate_if_due(4_000));
        assert!(f.check_and_insert(1, 6_999));
    }

    #[test]
    fn false_positive_rate_at_capacity() {
        let bits = 1 << 21;
        let cap = capacity_for(bits);
        assert!(cap >= 100_000);
        let f = DedupeFilter::new(SEC, bits);
        // Window 0 fills the filter that becomes the previous one.
        for k in keys(1, cap) {
            f.check_and_insert(k, 500);
        }
        // Window 1: `cap` distinct new keys; any repeat is a false positive.
        let during = keys(2, cap)
            .filter(|&k| f.check_and_insert(k, 1_500))
            .count();
        // End of window 1, both filters full: the worst moment.
        let probes = 100_000;
        let worst = keys(3, probes).filter(|&k| seen(&f, k)).count();
        let during_rate = during as f64 / cap as f64;
        let worst_rate = worst as f64 / probes as f64;
        println!(
            "capacity {cap}: false positives {during} during a full window ({:.4} %), \
             {worst} of {probes} at its end ({:.4} %)",
            during_rate * 100.0,
            worst_rate * 100.0
        );
        assert!(during_rate < 0.001);
        assert!(worst_rate < 0.001);
    }

    #[test]
    fn concurrent_inserts_are_seen_by_all() {
        let f = Arc::new(DedupeFilter::new(SEC, 1 << 22));
        let now = 1_700_000_000_000;
        let per_thread = 50_000;
        let writers: Vec<_> = (0..4u64)
            .map(|t| {
                let f = Arc::clone(&f);
                thread::spawn(move || {
                    // Each thread also repeats the others' keys, racing them.
                    for k in keys(t, per_thread).chain(keys((t + 1) % 4, 1_000)) {
                        f.check_and_insert(k, now);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer panicked");
        }
        let readers: Vec<_> = (0..4u64)
            .map(|_| {
                let f = Arc::clone(&f);
                thread::spawn(move || {
                    (0..4u64).all(|t| keys(t, per_thread).all(|k| f.check_and_insert(k, now + 1)))
                })
            })
            .collect();
        for r in readers {
            assert!(r.join().expect("reader panicked"));
        }
    }

    #[test]
    fn concurrent_rotation_never_panics() {
        let f = Arc::new(DedupeFilter::new(Duration::from_millis(10), 1 << 16));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let f = Arc::clone(&f);
                thread::spawn(move || {
                    for (i, k) in keys(t, 20_000).enumerate() {
                        f.check_and_insert(k, i as u64 / 10);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread panicked");
        }
        assert!(!f.rotating.load(Ordering::Relaxed));
    }

    /// A rotation that clears both filters (the first one, or after two
    /// idle windows) must not wipe keys other threads insert meanwhile with
    /// a clock already in the new window: they wait for it instead of
    /// inserting into the filter being cleared. (Found as a refresh counted
    /// twice in a service test.)
    #[test]
    fn keys_inserted_during_a_clearing_rotation_are_kept() {
        for round in 0..300u64 {
            let f = Arc::new(DedupeFilter::new(SEC, 1 << 14));
            // Epoch 0 until the first rotation, which clears both filters.
            let now = 5_000 + round % 1_000;
            let barrier = Arc::new(std::sync::Barrier::new(3));
            let inserters: Vec<_> = (0..2u64)
                .map(|t| {
                    let (f, barrier) = (Arc::clone(&f), Arc::clone(&barrier));
                    thread::spawn(move || {
                        barrier.wait();
                        for k in keys(round * 10 + t, 64) {
                            f.check_and_insert(k, now);
                        }
                    })
                })
                .collect();
            barrier.wait();
            f.rotate_if_due(now);
            for t in inserters {
                t.join().unwrap();
            }
            for t in 0..2u64 {
                for k in keys(round * 10 + t, 64) {
                    assert!(
                        seen(&f, k),
                        "round {round}: a key inserted during the rotation was wiped"
                    );
                }
            }
        }
    }

    #[test]
    fn memory_is_constant_across_rotations() {
        let f = DedupeFilter::new(Duration::from_millis(100), 1 << 18);
        let before = f.memory_bytes();
        assert_eq!(before, 2 * (1 << 18) / 8);
        let mut now = 0;
        for round in 0..1_000u64 {
            for k in keys(round, 100) {
                f.check_and_insert(k, now);
            }
            now += 100;
            assert!(f.rotate_if_due(now));
        }
        assert_eq!(f.memory_bytes(), before);
        // Old rounds are gone: only the last two windows are remembered.
        assert!(keys(0, 100).all(|k| !seen(&f, k)));
    }

    /// Micro-benchmark of the hot path. Run with
    /// `cargo test --release -- --ignored --nocapture check_and_insert_bench`.
    #[test]
    #[ignore = "timing; run in release mode"]
    fn check_and_insert_bench() {
        let bits = 1 << 23; // 1 MiB per filter, capacity ~419k keys
        let f = DedupeFilter::new(SEC, bits);
        let now = 1_700_000_000_000;
        let n = capacity_for(bits);
        let start = std::time::Instant::now();
        for k in keys(9, n) {
            f.check_and_insert(std::hint::black_box(k), now);
        }
        let new_ns = start.elapsed().as_nanos() as f64 / n as f64;
        let start = std::time::Instant::now();
        for k in keys(9, n) {
            f.check_and_insert(std::hint::black_box(k), now + 1);
        }
        let repeat_ns = start.elapsed().as_nanos() as f64 / n as f64;
        let start = std::time::Instant::now();
        for i in 0..1_000 {
            f.rotate_if_due(now + 1_000 * (i + 1));
        }
        let rotate_us = start.elapsed().as_micros() as f64 / 1_000.0;
        println!(
            "check_and_insert: {new_ns:.1} ns/op new key, {repeat_ns:.1} ns/op repeat; \
             rotation of a 1 MiB filter {rotate_us:.1} us"
        );
    }

    proptest! {
        #[test]
        fn retention_is_between_one_and_two_windows(
            window in 1u64..10_000,
            start in 0u64..1_000_000_000,
            key in any::<u64>(),
            frac in 0.0f64..1.0,
        ) {
            let f = DedupeFilter::new(Duration::from_millis(window), 0);
            prop_assert!(!f.check_and_insert(key, start));
            // Anything less than one window later is a repeat.
            let within = start + ((window - 1) as f64 * frac) as u64;
            prop_assert!(f.check_and_insert(key, within));
            prop_assert!(f.check_and_insert(key, start + window - 1));
            // Two windows later it is new again.
            prop_assert!(!f.check_and_insert(key, start + 2 * window));
        }
    }
}
