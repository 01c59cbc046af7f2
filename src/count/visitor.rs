//! Visitor identity without cookies, and the sketches that count distinct
//! visitors (`online`).
//!
//! A visitor is the `vid` the snippet keeps in `localStorage` when it is well
//! formed, otherwise a keyed hash of a daily salt + site + client IP +
//! User-Agent (Plausible's scheme). Raw IPs and User-Agents enter this module
//! only to be hashed: they are never stored, logged or returned.
//!
//! Every later feature that needs "who" (online, unique visitors, dedupe)
//! asks this module; none derives an identity itself.

use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use siphasher::sip::SipHasher13;

use crate::period::DayNumber;
use crate::sketch::{Sketch, SketchUnion};

/// Longest accepted `vid`.
pub const MAX_VID_LEN: usize = 64;

/// Longest accepted AMP client id (`amp-` and base64url characters):
/// `${clientId(…)}` in an `amp-analytics` request. Ids from AMP caches
/// run to about 90 characters, over [`MAX_VID_LEN`].
pub const MAX_AMP_VID_LEN: usize = 128;

/// Whether `vid` is an identifier the snippet could have made: 1–64
/// characters of `A-Z a-z 0-9 _ -`, or an AMP client id (`amp-` and up to
/// 128 in all). Anything else is ignored and the hash is used instead.
pub fn is_valid_vid(vid: &str) -> bool {
    let max = if vid.starts_with("amp-") {
        MAX_AMP_VID_LEN
    } else {
        MAX_VID_LEN
    };
    !vid.is_empty()
        && vid.len() <= max
        && vid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The secret name under which the store keeps the salt of a day.
pub fn salt_name(day: jiff::civil::Date) -> String {
    format!("salt:{day}")
}

/// The secret name of the key that scrambles `vid`s (stable, never rotated,
/// so a visitor with a `vid` is the same visitor across days).
pub const VID_KEY_NAME: &str = "vid-key";

fn keys(secret: &[u8; 32]) -> (u64, u64) {
    let k0 = u64::from_le_bytes(secret[0..8].try_into().expect("8 bytes"));
    let k1 = u64::from_le_bytes(secret[8..16].try_into().expect("8 bytes"));
    (k0, k1)
}

/// The salts of the few days that are "today" somewhere, keyed by day number.
#[derive(Default)]
struct SaltBook {
    entries: Vec<(DayNumber, (u64, u64))>,
}

/// Derives visitor hashes. Cheap to share; salts are swapped in by the
/// background refresher before the day they serve begins.
pub struct Identity {
    vid_key: (u64, u64),
    salts: ArcSwap<SaltBook>,
}

/// Why no identity was derived for a hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anonymous {
    /// The client asked not to be tracked (`DNT: 1` or `Sec-GPC: 1`).
    NoTrack,
    /// No salt for the hit's day is loaded yet (the store was unreachable
    /// at the day's start); the hit counts, the visitor does not.
    NoSalt,
}

/// What a visitor is made of, borrowed from the request.
pub struct VisitorParts<'a> {
    pub vid: Option<&'a str>,
    pub ip: IpAddr,
    pub user_agent: &'a [u8],
    pub no_track: bool,
}

impl Identity {
    /// An identity deriver with the store's `vid` key and no salts yet.
    pub fn new(vid_key: &[u8; 32]) -> Self {
        Identity {
            vid_key: keys(vid_key),
            salts: ArcSwap::from_pointee(SaltBook::default()),
        }
    }

    /// Replaces the loaded salts (a handful of days).
    pub fn install_salts(&self, salts: &[(DayNumber, [u8; 32])]) {
        let entries = salts.iter().map(|(d, s)| (*d, keys(s))).collect();
        self.salts.store(Arc::new(SaltBook { entries }));
    }

    /// The days whose salts are loaded.
    pub fn salted_days(&self) -> Vec<DayNumber> {
        self.salts.load().entries.iter().map(|(d, _)| *d).collect()
    }

    /// The visitor hash of a hit on `site` on local `day`.
    ///
    /// # Errors
    /// [`Anonymous`] when no identity may or can be derived.
    pub fn visitor(
        &self,
        site: &str,
        day: DayNumber,
        parts: &VisitorParts<'_>,
    ) -> Result<u64, Anonymous> {
        if parts.no_track {
            return Err(Anonymous::NoTrack);
        }
        if let Some(vid) = parts.vid.filter(|v| is_valid_vid(v)) {
            let mut h = SipHasher13::new_with_keys(self.vid_key.0, self.vid_key.1);
            h.write(site.as_bytes());
            h.write_u8(0xff);
            h.write(vid.as_bytes());
            return Ok(h.finish());
        }
        let book = self.salts.load();
        let Some((_, (k0, k1))) = book.entries.iter().find(|(d, _)| *d == day) else {
            return Err(Anonymous::NoSalt);
        };
        let mut h = SipHasher13::new_with_keys(*k0, *k1);
        h.write(site.as_bytes());
        h.write_u8(0xff);
        match parts.ip {
            IpAddr::V4(v4) => h.write(&v4.octets()),
            IpAddr::V6(v6) => h.write(&v6.octets()),
        }
        h.write_u8(0xfe);
        h.write(parts.user_agent);
        Ok(h.finish())
    }
}

/// One minute of visitors.
struct Bucket {
    minute: i64,
    sketch: Sketch,
}

/// Distinct visitors seen in the last `online_window`, as a ring of
/// per-minute sketches. Inserting is lock-free; a new bucket is allocated
/// once a minute by whichever hit first sees the minute change.
pub struct OnlineRing {
    window_minutes: i64,
    buckets: Box<[ArcSwap<Bucket>]>,
}

impl OnlineRing {
    /// A ring for a window of `window_minutes` (at least 1).
    pub fn new(window_minutes: u32) -> Self {
        let window_minutes = i64::from(window_minutes.max(1));
        // The window's buckets plus the current one plus one spare, so the
        // oldest bucket still read is never the one being recycled.
        let len = (window_minutes + 2) as usize;
        let buckets = (0..len)
            .map(|_| {
                ArcSwap::from_pointee(Bucket {
                    minute: i64::MIN,
                    sketch: Sketch::new(),
                })
            })
            .collect();
        OnlineRing {
            window_minutes,
            buckets,
        }
    }

    /// The window, in minutes.
    pub fn window_minutes(&self) -> u64 {
        self.window_minutes as u64
    }

    fn slot(&self, minute: i64) -> &ArcSwap<Bucket> {
        &self.buckets[minute.rem_euclid(self.buckets.len() as i64) as usize]
    }

    /// Records `visitor` as seen at `unix_secs`. Returns whether the count
    /// may have changed (the visitor was new to this minute).
    pub fn insert(&self, unix_secs: i64, visitor: u64) -> bool {
        let minute = unix_secs.div_euclid(60);
        let slot = self.slot(minute);
        loop {
            let current = slot.load();
            if current.minute >= minute {
                // The current minute (or, if the clock stepped back, a newer
                // one: close enough for a presence figure).
                return current.sketch.insert(visitor);
            }
            let fresh = Arc::new(Bucket {
                minute,
                sketch: Sketch::new(),
            });
            let previous = slot.compare_and_swap(&current, fresh);
            if !Arc::ptr_eq(&previous, &current) {
                // Another hit rotated the bucket first; use theirs.
                continue;
            }
        }
    }

    /// Distinct visitors seen from `window` minutes before `unix_secs`'s
    /// minute up to now (so between `window` and `window + 1` minutes).
    pub fn count(&self, unix_secs: i64) -> u64 {
        self.union(unix_secs).count()
    }

    /// The union of the window's sketches, for merging with other sources.
    pub fn union(&self, unix_secs: i64) -> SketchUnion {
        let now = unix_secs.div_euclid(60);
        let mut union = SketchUnion::new();
        for slot in self.buckets.iter() {
            let b = slot.load();
            if b.minute <= now && b.minute >= now - self.window_minutes {
                union.add(&b.sketch);
            }
        }
        union
    }
}

/// Visitors seen since the last flush, for a store that keeps sketches
/// (shared `online` and unique visitors across instances).
///
/// The hot path inserts into the current bucket, lock-free. The flusher
/// swaps the bucket out and hands it over one flush later, so a hit that
/// loaded the old bucket just before the swap has long finished with it.
pub struct VisitorBatcher {
    current: ArcSwap<Pending>,
    /// Buckets replaced because the minute or the day changed.
    retired: parking_lot::Mutex<Vec<Arc<Pending>>>,
    /// Buckets swapped out at the last take, handed over at the next.
    limbo: parking_lot::Mutex<Vec<Arc<Pending>>>,
}

/// Visitors of one minute of one local day.
pub struct Pending {
    pub minute: i64,
    pub day: DayNumber,
    pub sketch: Sketch,
}

impl Default for VisitorBatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl VisitorBatcher {
    pub fn new() -> Self {
        VisitorBatcher {
            current: ArcSwap::from_pointee(Pending {
                minute: i64::MIN,
                day: 0,
                sketch: Sketch::new(),
            }),
            retired: parking_lot::Mutex::new(Vec::new()),
            limbo: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// Records `visitor`, seen at Unix second `unix_secs` on local `day`.
    pub fn record(&self, unix_secs: i64, day: DayNumber, visitor: u64) {
        let minute = unix_secs.div_euclid(60);
        loop {
            let current = self.current.load();
            if current.minute == minute && current.day == day {
                current.sketch.insert(visitor);
                return;
            }
            let fresh = Arc::new(Pending {
                minute,
                day,
                sketch: Sketch::new(),
            });
            let previous = self.current.compare_and_swap(&current, fresh);
            if Arc::ptr_eq(&previous, &current) && previous.minute != i64::MIN {
                self.retired.lock().push(Arc::clone(&previous));
            }
        }
    }

    /// The buckets to ship now: those swapped out at the previous call.
    /// Swaps the current bucket out for the next call.
    pub fn take(&self) -> Vec<Arc<Pending>> {
        let mut limbo = self.limbo.lock();
        let mut ready = std::mem::take(&mut *limbo);
        // Safe to look inside now: every hit that could still write to
        // these buckets finished a flush interval ago.
        ready.retain(|p| p.sketch.count() > 0);
        let current = self.current.load_full();
        if current.minute != i64::MIN && current.sketch.count() > 0 {
            let fresh = Arc::new(Pending {
                minute: current.minute,
                day: current.day,
                sketch: Sketch::new(),
            });
            let previous = self.current.compare_and_swap(&current, fresh);
            if Arc::ptr_eq(&previous, &current) {
                limbo.push(Arc::clone(&previous));
            }
        }
        limbo.append(&mut self.retired.lock());
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn identity() -> Identity {
        let id = Identity::new(&[7; 32]);
        id.install_salts(&[(100, [1; 32]), (101, [2; 32])]);
        id
    }

    fn parts<'a>(vid: Option<&'a str>, ip: [u8; 4], ua: &'a [u8]) -> VisitorParts<'a> {
        VisitorParts {
            vid,
            ip: IpAddr::V4(Ipv4Addr::from(ip)),
            user_agent: ua,
            no_track: false,
        }
    }

    #[test]
    fn vid_rules() {
        assert!(is_valid_vid("a"));
        assert!(is_valid_vid("Abc_123-xyz"));
        assert!(is_valid_vid(&"x".repeat(64)));
        assert!(!is_valid_vid(""));
        assert!(!is_valid_vid(&"x".repeat(65)));
        assert!(!is_valid_vid("a b"));
        assert!(!is_valid_vid("ü"));
        assert!(!is_valid_vid("a.b"));
        // AMP client ids, longer than the snippet's.
        let amp = format!("amp-{}", "AbC_9-".repeat(15));
        assert_eq!(amp.len(), 94);
        assert!(is_valid_vid(&amp));
        assert!(is_valid_vid(&format!("amp-{}", "x".repeat(124))));
        assert!(!is_valid_vid(&format!("amp-{}", "x".repeat(125))));
        assert!(!is_valid_vid(&format!("amp+{}", "x".repeat(80))));
        assert!(!is_valid_vid(&format!("amp-{}.", "x".repeat(80))));
    }

    #[test]
    fn a_vid_is_the_same_visitor_whatever_the_ip_or_day() {
        let id = identity();
        let a = id
            .visitor("demo", 100, &parts(Some("abc"), [1, 2, 3, 4], b"UA"))
            .unwrap();
        let b = id
            .visitor("demo", 101, &parts(Some("abc"), [9, 9, 9, 9], b"other"))
            .unwrap();
        assert_eq!(a, b);
        let other_site = id
            .visitor("news", 100, &parts(Some("abc"), [1, 2, 3, 4], b"UA"))
            .unwrap();
        assert_ne!(a, other_site);
    }

    #[test]
    fn a_malformed_vid_falls_back_to_the_hash() {
        let id = identity();
        let bad = id
            .visitor("demo", 100, &parts(Some("not valid!"), [1, 2, 3, 4], b"UA"))
            .unwrap();
        let none = id
            .visitor("demo", 100, &parts(None, [1, 2, 3, 4], b"UA"))
            .unwrap();
        assert_eq!(bad, none);
    }

    #[test]
    fn the_hash_depends_on_ip_ua_site_and_day_salt() {
        let id = identity();
        let base = id
            .visitor("demo", 100, &parts(None, [1, 2, 3, 4], b"UA"))
            .unwrap();
        assert_eq!(
            base,
            id.visitor("demo", 100, &parts(None, [1, 2, 3, 4], b"UA"))
                .unwrap()
        );
        assert_ne!(
            base,
            id.visitor("demo", 100, &parts(None, [1, 2, 3, 5], b"UA"))
                .unwrap()
        );
        assert_ne!(
            base,
            id.visitor("demo", 100, &parts(None, [1, 2, 3, 4], b"UB"))
                .unwrap()
        );
        assert_ne!(
            base,
            id.visitor("demx", 100, &parts(None, [1, 2, 3, 4], b"UA"))
                .unwrap()
        );
        assert_ne!(
            base,
            id.visitor("demo", 101, &parts(None, [1, 2, 3, 4], b"UA"))
                .unwrap()
        );
    }

    #[test]
    fn do_not_track_derives_nothing() {
        let id = identity();
        let mut p = parts(Some("abc"), [1, 2, 3, 4], b"UA");
        p.no_track = true;
        assert_eq!(id.visitor("demo", 100, &p), Err(Anonymous::NoTrack));
    }

    #[test]
    fn a_day_without_salt_is_anonymous() {
        let id = identity();
        assert_eq!(
            id.visitor("demo", 555, &parts(None, [1, 2, 3, 4], b"UA")),
            Err(Anonymous::NoSalt)
        );
    }

    #[test]
    fn online_counts_distinct_visitors_in_the_window() {
        let ring = OnlineRing::new(5);
        let t0 = 1_800_000_000;
        for v in 0..41u64 {
            ring.insert(t0, v);
            ring.insert(t0 + 30, v);
        }
        assert_eq!(ring.count(t0 + 30), 41);
        ring.insert(t0 + 120, 1000);
        assert_eq!(ring.count(t0 + 120), 42);
        // Six minutes later the first minute has left the window.
        assert_eq!(ring.count(t0 + 6 * 60 + 60), 1);
        assert_eq!(ring.count(t0 + 20 * 60), 0);
    }

    #[test]
    fn batcher_hands_over_every_visitor_one_take_later() {
        let b = VisitorBatcher::new();
        let t0 = 1_800_000_000; // a minute boundary
        b.record(t0, 10, 1);
        b.record(t0 + 1, 10, 2);
        assert!(b.take().is_empty(), "nothing handed over at the first take");
        b.record(t0 + 61, 10, 3); // next minute: bucket rotates
        b.record(t0 + 62, 11, 4); // next day: rotates again
        let first = b.take();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].sketch.count(), 2);
        let second = b.take();
        let mut seen: Vec<(i64, DayNumber, u64)> = second
            .iter()
            .map(|p| (p.minute, p.day, p.sketch.count()))
            .collect();
        seen.sort();
        let m = t0 / 60;
        assert_eq!(seen, vec![(m + 1, 10, 1), (m + 1, 11, 1)]);
        assert!(b.take().is_empty());
    }

    #[test]
    fn online_ring_recycles_buckets() {
        let ring = OnlineRing::new(2);
        let t0 = 1_800_000_000;
        for m in 0..20 {
            ring.insert(t0 + m * 60, m as u64);
        }
        // Minutes 17, 18, 19 are within 2 minutes of minute 19.
        assert_eq!(ring.count(t0 + 19 * 60), 3);
    }
}
