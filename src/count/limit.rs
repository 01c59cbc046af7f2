//! Per-client rate limiting of hits (DESIGN §2): a keyed GCRA limiter whose
//! key is the client's network address — an IPv4 address, or the /64 of an
//! IPv6 address — so that one script cannot inflate a counter, while a
//! newsroom or a mobile carrier's shared address keeps plenty of room.
//!
//! What this module owns: the [`RateLimit`] value (validated, with the
//! defaults of [`DEFAULT_PER_SECOND`] hits per second sustained and a burst of
//! [`DEFAULT_BURST`]), the mapping from an address to a [`ClientKey`], and
//! [`ClientLimiter`], which wraps a [`governor`] keyed limiter and exposes the
//! three things the rest of the service needs: a yes/no answer per hit
//! ([`ClientLimiter::allow`]), pruning of forgotten clients
//! ([`ClientLimiter::prune`]) and the size of its state
//! ([`ClientLimiter::len`], the metric).
//!
//! What it must not do: know HTTP (which header carries the client address,
//! which status a refused hit gets) or sites (a per-site override is simply
//! another [`ClientLimiter`] that the caller keeps for that site). It never
//! awaits, and [`ClientLimiter::allow`] neither allocates nor takes a lock
//! across anything slow for a client it already knows: it is one hash, one
//! shard read lock of a `DashMap` and one compare-and-swap.

#![forbid(unsafe_code)]

use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;

use governor::clock::DefaultClock;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// Sustained hits per second allowed to one client by default: far above
/// what people behind one address produce, far below what a loop does.
pub const DEFAULT_PER_SECOND: u32 = 100;

/// Hits one client may send at once by default, before the sustained rate
/// applies: room for a newsroom or a carrier-grade NAT opening pages together.
pub const DEFAULT_BURST: u32 = 1_000;

/// A rate limit for one client: `per_second` hits per second sustained, with
/// up to `burst` hits at once (GCRA: the burst is refilled at `per_second`).
///
/// Both fields are non-zero when built through [`RateLimit::new`] (what the
/// configuration should use); the fields are public so that a limit reads
/// plainly in configuration and tests. A zero limit would refuse everything
/// forever, which is never what an operator means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained hits per second (the replenish rate). Non-zero.
    pub per_second: u32,
    /// Largest number of hits allowed at once (the bucket size). Non-zero.
    pub burst: u32,
}

/// Why a [`RateLimit`] was rejected, so that the configuration can name the
/// offending field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitError {
    /// `per_second` was zero: no hit would ever be allowed after the burst.
    #[error("rate limit per_second must be at least 1")]
    ZeroPerSecond,
    /// `burst` was zero: no hit would ever be allowed.
    #[error("rate limit burst must be at least 1")]
    ZeroBurst,
}

impl RateLimit {
    /// The default limit ([`DEFAULT_PER_SECOND`], [`DEFAULT_BURST`]), as a
    /// constant so that it can be used in `const` contexts and defaults.
    pub const DEFAULT: RateLimit = RateLimit {
        per_second: DEFAULT_PER_SECOND,
        burst: DEFAULT_BURST,
    };

    /// A validated limit: both numbers must be at least 1.
    pub fn new(per_second: u32, burst: u32) -> Result<Self, RateLimitError> {
        RateLimit { per_second, burst }.validate()
    }

    /// Checks a limit built field by field (e.g. deserialized), returning it
    /// unchanged when both numbers are at least 1.
    pub fn validate(self) -> Result<Self, RateLimitError> {
        if self.per_second == 0 {
            Err(RateLimitError::ZeroPerSecond)
        } else if self.burst == 0 {
            Err(RateLimitError::ZeroBurst)
        } else {
            Ok(self)
        }
    }

    /// The governor quota: one hit replenished every `1 / per_second`, at
    /// most `burst` at once. A zero field (which [`RateLimit::new`] rejects)
    /// is taken as 1 so that building a limiter can never panic.
    fn quota(self) -> Quota {
        let per_second = NonZeroU32::new(self.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN);
        Quota::per_second(per_second).allow_burst(burst)
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The key of a client for rate limiting: an IPv4 address, or the /64 prefix
/// of an IPv6 address (one IPv6 subscriber usually owns a whole /64, so
/// limiting single IPv6 addresses would be no limit at all).
///
/// Small and `Copy` (no allocation); `Display` shows it as `192.0.2.1` or
/// `2001:db8::/64` for logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(KeyInner);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum KeyInner {
    /// An IPv4 address, as its 32 bits.
    V4(u32),
    /// The upper 64 bits of an IPv6 address.
    V6(u64),
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            KeyInner::V4(bits) => write!(f, "{}", Ipv4Addr::from(bits)),
            KeyInner::V6(prefix) => {
                write!(f, "{}/64", Ipv6Addr::from(u128::from(prefix) << 64))
            }
        }
    }
}

/// The key of a client: an IPv4 address, or the /64 of an IPv6 address
/// (IPv4-mapped IPv6 → the IPv4).
///
/// IPv4-mapped addresses (`::ffff:a.b.c.d`) are what a dual-stack socket
/// reports for IPv4 clients, so they must land on the same key as the plain
/// IPv4 address. Other transition forms (6to4, Teredo, NAT64) are left as
/// IPv6 and keyed by their /64. Never panics, never allocates.
pub fn client_key(ip: IpAddr) -> ClientKey {
    match ip {
        IpAddr::V4(v4) => ClientKey(KeyInner::V4(u32::from(v4))),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => ClientKey(KeyInner::V4(u32::from(v4))),
            None => ClientKey(KeyInner::V6((u128::from(v6) >> 64) as u64)),
        },
    }
}

/// The keyed governor limiter: a `DashMap` of GCRA cells (SipHash with a
/// random key, so clients cannot aim at one shard) and the `quanta` clock.
type Keyed = RateLimiter<ClientKey, DefaultKeyedStateStore<ClientKey>, DefaultClock>;

/// A per-client rate limiter: one GCRA cell per [`ClientKey`], shared by all
/// request threads through `&self`.
///
/// State grows with the number of distinct clients seen, so the owner must
/// call [`ClientLimiter::prune`] every few seconds and may report
/// [`ClientLimiter::len`] as a metric.
pub struct ClientLimiter {
    limit: RateLimit,
    inner: Keyed,
}

impl fmt::Debug for ClientLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientLimiter")
            .field("limit", &self.limit)
            .field("clients", &self.inner.len())
            .finish()
    }
}

impl ClientLimiter {
    /// A limiter applying `limit` to every client separately. A zero field
    /// (rejected by [`RateLimit::new`]) is taken as 1 rather than panicking.
    pub fn new(limit: RateLimit) -> Self {
        ClientLimiter {
            limit,
            inner: RateLimiter::dashmap(limit.quota()),
        }
    }

    /// The limit this limiter applies, so that a configuration reload can
    /// tell whether the limiter must be rebuilt.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// True when the client may send one more hit now (and counts that hit
    /// against its budget); false when it is over its limit and the hit
    /// should be refused.
    ///
    /// Hot path: no await, no allocation for a client already known (a new
    /// client inserts one map entry), only a shard lock held for a hash
    /// lookup and a compare-and-swap.
    pub fn allow(&self, ip: IpAddr) -> bool {
        self.inner.check_key(&client_key(ip)).is_ok()
    }

    /// Forgets clients whose state has returned to "full burst available"
    /// (governor's `retain_recent`) and shrinks the map; call every few
    /// seconds from a housekeeping task.
    ///
    /// Forgetting such a client changes no future answer: a client with no
    /// state is treated exactly as one with a full burst. This walks every
    /// entry, write-locking one shard at a time, so it belongs off the hot
    /// path; hits on other shards proceed meanwhile.
    pub fn prune(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }

    /// Number of clients with state (the metric for the limiter's size).
    /// Approximate while hits are arriving concurrently.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// True when no client has state, e.g. after a quiet period and a prune.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::thread::sleep;
    use std::time::{Duration, Instant};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn rate_limit_validation_and_default() {
        assert_eq!(RateLimit::default(), RateLimit::new(100, 1_000).unwrap());
        assert_eq!(RateLimit::new(0, 5), Err(RateLimitError::ZeroPerSecond));
        assert_eq!(RateLimit::new(5, 0), Err(RateLimitError::ZeroBurst));
        assert_eq!(
            RateLimit {
                per_second: 3,
                burst: 7
            }
            .validate(),
            Ok(RateLimit {
                per_second: 3,
                burst: 7
            })
        );
        // A hand-built zero limit does not panic: it behaves as 1/s, burst 1.
        let limiter = ClientLimiter::new(RateLimit {
            per_second: 0,
            burst: 0,
        });
        assert!(limiter.allow(ip("192.0.2.1")));
        assert!(!limiter.allow(ip("192.0.2.1")));
    }

    #[test]
    fn default_burst_then_limited() {
        let limiter = ClientLimiter::new(RateLimit::default());
        let client = ip("198.51.100.7");
        let start = Instant::now();
        for i in 0..DEFAULT_BURST {
            assert!(limiter.allow(client), "hit {i} of the burst refused");
        }
        let over = limiter.allow(client);
        // One hit is replenished every 10 ms; only a stalled test thread
        // could legitimately see the 1001st allowed.
        if start.elapsed() < Duration::from_millis(9) {
            assert!(!over, "hit 1001 allowed within the burst window");
        }
        // Another client is unaffected.
        assert!(limiter.allow(ip("198.51.100.8")));
    }

    #[test]
    fn small_limit_refills_at_the_sustained_rate() {
        // 10/s: one hit every 100 ms, burst of 5.
        let limiter = ClientLimiter::new(RateLimit::new(10, 5).unwrap());
        let client = ip("203.0.113.9");
        let allowed = (0..20).filter(|_| limiter.allow(client)).count();
        assert_eq!(allowed, 5);
        sleep(Duration::from_millis(150));
        let allowed = (0..20).filter(|_| limiter.allow(client)).count();
        // One more after 100 ms; two only if this thread stalled > 50 ms.
        assert!((1..=2).contains(&allowed), "allowed {allowed} after 150 ms");
    }

    #[test]
    fn ipv6_keys_by_slash_64() {
        let a = client_key(ip("2001:db8:1:2::1"));
        let b = client_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        let c = client_key(ip("2001:db8:1:3::1"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");

        // Same /64 shares one budget; a neighbouring /64 has its own.
        let limiter = ClientLimiter::new(RateLimit::new(1, 3).unwrap());
        for _ in 0..3 {
            assert!(limiter.allow(ip("2001:db8:1:2::1")));
        }
        assert!(!limiter.allow(ip("2001:db8:1:2::2")));
        assert!(limiter.allow(ip("2001:db8:1:3::1")));
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn ipv4_mapped_is_ipv4() {
        let v4 = client_key(ip("192.0.2.33"));
        assert_eq!(client_key(ip("::ffff:192.0.2.33")), v4);
        assert_eq!(v4.to_string(), "192.0.2.33");
        // Not to be confused with an IPv6 address whose /64 is all zeros.
        assert_ne!(client_key(ip("::1")), client_key(ip("0.0.0.1")));
        assert_ne!(client_key(ip("::1")), client_key(ip("0.0.0.0")));

        let limiter = ClientLimiter::new(RateLimit::new(1, 1).unwrap());
        assert!(limiter.allow(ip("192.0.2.33")));
        assert!(!limiter.allow(ip("::ffff:192.0.2.33")));
    }

    #[test]
    fn prune_drops_idle_clients_only() {
        // 1000/s: an idle client is back to a full burst within a few ms.
        let fast = ClientLimiter::new(RateLimit::new(1_000, 2).unwrap());
        for i in 0..100u32 {
            assert!(fast.allow(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))));
        }
        assert_eq!(fast.len(), 100);
        sleep(Duration::from_millis(50));
        fast.prune();
        assert_eq!(fast.len(), 0);
        assert!(fast.is_empty());

        // 1/s with a burst of 3: an exhausted client is still limited for
        // seconds, so pruning must keep it.
        let slow = ClientLimiter::new(RateLimit::new(1, 3).unwrap());
        let busy = ip("192.0.2.1");
        for _ in 0..3 {
            assert!(slow.allow(busy));
        }
        slow.prune();
        assert_eq!(slow.len(), 1);
        assert!(!slow.allow(busy), "pruning forgot a limited client");
    }

    #[test]
    fn many_clients_then_prune_is_bounded() {
        let limiter = ClientLimiter::new(RateLimit::new(1_000, 5).unwrap());
        for i in 0..20_000u32 {
            limiter.allow(IpAddr::V4(Ipv4Addr::from(0xc000_0000 + i)));
            // Distinct /64s...
            limiter.allow(IpAddr::V6(Ipv6Addr::from(u128::from(i) << 64 | 1)));
            // ...and a flood inside one /64, which is one client.
            limiter.allow(IpAddr::V6(Ipv6Addr::from(
                0x2001_0db8_0000_0001_u128 << 64 | u128::from(i),
            )));
        }
        assert_eq!(limiter.len(), 40_001);
        sleep(Duration::from_millis(100));
        limiter.prune();
        assert_eq!(limiter.len(), 0);
    }

    proptest! {
        #[test]
        fn client_key_never_panics(bits in any::<u128>(), v4 in any::<u32>()) {
            let v6 = Ipv6Addr::from(bits);
            let key = client_key(IpAddr::V6(v6));
            let _ = key.to_string();
            // Anything sharing the upper 64 bits shares the key.
            let sibling = Ipv6Addr::from(bits ^ u128::from(u64::MAX));
            if v6.to_ipv4_mapped().is_none() && sibling.to_ipv4_mapped().is_none() {
                prop_assert_eq!(key, client_key(IpAddr::V6(sibling)));
            }
            let plain = Ipv4Addr::from(v4);
            prop_assert_eq!(
                client_key(IpAddr::V4(plain)),
                client_key(IpAddr::V6(plain.to_ipv6_mapped()))
            );
            let _ = client_key(IpAddr::V4(plain)).to_string();
        }
    }

    /// Micro-benchmark of the hot path for a known client. Run with
    /// `cargo test --release -- --ignored --nocapture allow_known_key_bench`.
    #[test]
    #[ignore = "timing; run in release mode"]
    fn allow_known_key_bench() {
        let limiter = ClientLimiter::new(RateLimit::default());
        let client = ip("198.51.100.1");
        limiter.allow(client);
        const N: u32 = 5_000_000;
        let start = Instant::now();
        let mut allowed = 0u32;
        for _ in 0..N {
            allowed += u32::from(limiter.allow(std::hint::black_box(client)));
        }
        let elapsed = start.elapsed();
        println!(
            "allow() known key: {:.1} ns/op ({allowed} allowed of {N})",
            elapsed.as_nanos() as f64 / f64::from(N)
        );
    }
}
