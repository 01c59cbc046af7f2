//! The store conformance suite (src/store/conformance.rs) against the
//! embedded store, plus what only a file-backed store must do: keep
//! everything across a reopen.

mod common;

use std::sync::Arc;

use luot::store::{Applied, BatchId, EmbeddedStore, Increment, PeriodKey, Scope, SiteBatch, Store};

async fn fresh_embedded() -> EmbeddedStore {
    // The directory outlives the test process's use of it; the OS cleans
    // /tmp, and each test gets its own.
    let dir = tempfile::tempdir().expect("temp dir").keep();
    EmbeddedStore::open(&dir).expect("open store")
}

mod embedded {
    use super::fresh_embedded;
    luot::store_conformance_tests!(fresh_embedded());
}

#[tokio::test]
async fn embedded_store_keeps_counters_watermarks_and_secrets_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let batch = SiteBatch {
        site: Arc::from("demo"),
        id: BatchId {
            producer: Arc::from("p1"),
            seq: 3,
        },
        increments: vec![Increment {
            scope: Scope::Site,
            period: PeriodKey::Total,
            hits: 42,
            expires_at: None,
        }],
        visitors: Vec::new(),
        breakdowns: Vec::new(),
        bounds: Default::default(),
        titles: Vec::new(),
        minute: None,
    };
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.apply(&batch).await.unwrap();
        store.secret("salt:x", [9; 32]).await.unwrap();
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let r = store
        .read("demo", &Scope::Site, &[PeriodKey::Total], "p1")
        .await
        .unwrap();
    assert_eq!((r.values[0], r.watermark), (42, 3));
    assert_eq!(store.apply(&batch).await.unwrap(), Applied::Duplicate);
    assert_eq!(store.secret("salt:x", [1; 32]).await.unwrap(), [9; 32]);
}

/// The same suite against a real Redis, started by the harness on a free
/// loopback port. Each test gets its own server, so tests never share keys.
mod redis_single {
    use super::common::redis::RedisServer;
    use luot::store::RedisStore;

    /// Keeps the server alive as long as the store under test.
    pub struct WithServer {
        store: RedisStore,
        server: RedisServer,
    }

    impl WithServer {
        pub fn server(&self) -> &RedisServer {
            &self.server
        }
    }

    impl std::ops::Deref for WithServer {
        type Target = RedisStore;
        fn deref(&self) -> &RedisStore {
            &self.store
        }
    }

    impl luot::store::Store for WithServer {
        fn apply(
            &self,
            batch: &luot::store::SiteBatch,
        ) -> impl std::future::Future<
            Output = Result<luot::store::Applied, luot::store::StoreError>,
        > + Send {
            self.store.apply(batch)
        }
        fn read(
            &self,
            site: &str,
            scope: &luot::store::Scope,
            periods: &[luot::store::PeriodKey],
            producer: &str,
        ) -> impl std::future::Future<
            Output = Result<luot::store::Reading, luot::store::StoreError>,
        > + Send {
            self.store.read(site, scope, periods, producer)
        }
        fn secret(
            &self,
            name: &str,
            candidate: [u8; 32],
        ) -> impl std::future::Future<Output = Result<[u8; 32], luot::store::StoreError>> + Send
        {
            self.store.secret(name, candidate)
        }
        fn distinct(
            &self,
            site: &str,
            keys: &[luot::store::SketchKey],
        ) -> impl std::future::Future<Output = Result<Option<u64>, luot::store::StoreError>> + Send
        {
            self.store.distinct(site, keys)
        }
        fn ping(
            &self,
        ) -> impl std::future::Future<Output = Result<(), luot::store::StoreError>> + Send {
            self.store.ping()
        }
        fn top(
            &self,
            site: &str,
            period: luot::store::PeriodKey,
            limit: usize,
        ) -> impl std::future::Future<Output = Result<Vec<(String, u64)>, luot::store::StoreError>> + Send
        {
            self.store.top(site, period, limit)
        }
        fn breakdown(
            &self,
            site: &str,
            scope: &luot::store::Scope,
            dimension: luot::store::Dimension,
            days: &[jiff::civil::Date],
        ) -> impl std::future::Future<
            Output = Result<luot::store::BreakdownReading, luot::store::StoreError>,
        > + Send {
            self.store.breakdown(site, scope, dimension, days)
        }
        fn top_window(
            &self,
            site: &str,
            window: luot::store::Window,
            minute: i64,
            limit: usize,
        ) -> impl std::future::Future<Output = Result<Vec<(String, u64)>, luot::store::StoreError>> + Send
        {
            self.store.top_window(site, window, minute, limit)
        }
        fn titles(
            &self,
            site: &str,
            pages: &[std::sync::Arc<str>],
        ) -> impl std::future::Future<Output = Result<Vec<Option<String>>, luot::store::StoreError>> + Send
        {
            self.store.titles(site, pages)
        }
        fn read_site(
            &self,
            site: &str,
            periods: &[luot::store::PeriodKey],
            producer: &str,
            groups: &[Vec<luot::store::SketchKey>],
        ) -> impl std::future::Future<
            Output = Result<(luot::store::Reading, Vec<Option<u64>>), luot::store::StoreError>,
        > + Send {
            self.store.read_site(site, periods, producer, groups)
        }
    }

    /// Ages a producer the way a Redis that pruned idle producers would
    /// judge it: by its entry in the site's watermark-times hash.
    impl luot::store::conformance::Aging for WithServer {
        fn age_producer(&self, site: &str, producer: &str, idle: jiff::SignedDuration) {
            super::age_in_redis(self.server.addr(), site, producer, idle);
        }
    }

    pub async fn fresh() -> WithServer {
        let server = tokio::task::spawn_blocking(RedisServer::start)
            .await
            .expect("start redis");
        let store = RedisStore::connect(&server.url()).await.expect("connect");
        WithServer { store, server }
    }

    luot::store_conformance_tests!(fresh());
}

/// Sets `producer`'s last-seen time on `site` (the `luot:{site}:wmt`
/// hash, on the Redis at `addr`, which must serve the site's slot) `idle`
/// into the past.
fn age_in_redis(
    addr: std::net::SocketAddr,
    site: &str,
    producer: &str,
    idle: jiff::SignedDuration,
) {
    let when = (jiff::Timestamp::now() - idle).as_second().to_string();
    let key = format!("luot:{{{site}}}:wmt");
    common::redis::must(addr, &["HSET", &key, producer, &when]);
}

/// Ages producers on a cluster, on the master serving the site's slot.
struct ClusterAging<'a>(&'a common::redis::RedisCluster);

impl luot::store::conformance::Aging for ClusterAging<'_> {
    fn age_producer(&self, site: &str, producer: &str, idle: jiff::SignedDuration) {
        let key = format!("luot:{{{site}}}:wmt");
        let node = self.0.node_of_slot(common::redis::slot_of(&key));
        age_in_redis(node, site, producer, idle);
    }
}

/// The whole suite against a Redis Cluster of three masters with a replica
/// each: every key of a batch shares the site's slot, so no script call
/// meets CROSSSLOT. One cluster serves every case (each uses its own site).
#[tokio::test]
async fn redis_cluster_passes_the_conformance_suite() {
    use luot::store::conformance as c;
    let cluster = tokio::task::spawn_blocking(|| common::redis::RedisCluster::start(3, 1))
        .await
        .expect("start cluster");
    for url in [cluster.cluster_url(), cluster.url_list()] {
        let store = luot::store::RedisStore::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        assert!(store.is_cluster(), "{url} is a cluster URL");
        store.ping().await.unwrap();
    }
    let store = luot::store::RedisStore::connect(&cluster.cluster_url())
        .await
        .unwrap();
    c::applies_increments_and_reads_them_back(&store).await;
    c::missing_keys_read_as_zero(&store).await;
    c::a_replayed_batch_is_applied_once(&store).await;
    c::a_mixed_batch_lands_every_increment_once(&store).await;
    c::a_large_batch_adds_to_what_is_stored(&store).await;
    c::watermarks_are_per_producer_and_site(&store).await;
    c::expired_periods_are_late_and_total_still_counts(&store).await;
    c::sites_are_isolated(&store).await;
    c::first_secret_wins(&store).await;
    c::site_refresh_reads_counters_watermark_and_sketches(&store).await;
    c::day_and_all_time_visitors_are_kept_and_merge(&store).await;
    c::top_pages_are_ranked_per_period(&store).await;
    c::breakdown_values_add_up_over_days(&store).await;
    c::a_duplicate_batch_adds_no_breakdown(&store).await;
    c::a_full_breakdown_counts_new_values_as_other(&store).await;
    c::an_expired_breakdown_increment_is_skipped(&store).await;
    c::page_and_site_breakdowns_are_separate(&store).await;
    c::breakdowns_in_any_order_land(&store).await;
    c::a_large_breakdown_is_bounded_exactly(&store).await;
    c::titles_are_kept_last_one_wins(&store).await;
    c::rolling_windows_count_a_minute_until_it_leaves(&store).await;
    c::ping_answers(&store).await;
    c::the_record_day_rises_and_never_falls(&store).await;
    c::a_record_tie_keeps_the_earlier_date(&store).await;
    c::a_duplicate_batch_leaves_the_record(&store).await;
    c::an_imported_history_raises_the_record(&store).await;
    let aging = ClusterAging(&cluster);
    c::an_import_repeated_after_a_long_idle_is_a_duplicate(&store, &aging).await;
    c::a_batch_replayed_after_a_long_downtime_is_a_duplicate(&store, &aging).await;
    drop(cluster);
}

/// Visitors shipped as members (few) and as registers (many) land in the
/// same Redis HyperLogLog as if every visitor had been `PFADD`ed, so
/// instances that ship differently still agree, and Redis's count of a
/// union equals luot's own estimate of it.
#[tokio::test]
async fn redis_sketches_agree_with_local_sketches_whichever_way_they_ship() {
    use luot::sketch::{Sketch, SketchUnion};
    use luot::store::{Members, SketchKey, VisitorDelta};
    let store = redis_single::fresh().await;
    // Instance A saw visitors 0..1000 (few: shipped as members); instance B
    // saw 500..6000 (many: shipped as registers).
    let few = Sketch::new();
    for v in 0..1000u64 {
        few.insert(v * 7919 + 1);
    }
    let many = Sketch::new();
    for v in 500..6000u64 {
        many.insert(v * 7919 + 1);
    }
    let mut a = SketchUnion::new();
    a.add(&few);
    let mut b = SketchUnion::new();
    b.add(&many);
    assert!(a.is_exact() && !b.is_exact());
    let key = SketchKey::Day(jiff::civil::Date::constant(2026, 11, 27));
    let expires = Some(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24));
    for (seq, members) in [
        (1, Members::Exact(a.exact_members().unwrap().collect())),
        (2, Members::Registers(b.registers().to_vec())),
    ] {
        let batch = SiteBatch {
            site: Arc::from("sk"),
            id: BatchId {
                producer: Arc::from("p"),
                seq,
            },
            increments: Vec::new(),
            visitors: vec![VisitorDelta {
                keys: vec![(key, expires)],
                members,
            }],
            breakdowns: Vec::new(),
            bounds: Default::default(),
            titles: Vec::new(),
            minute: None,
        };
        store.apply(&batch).await.unwrap();
    }
    let mut union = a.clone();
    union.add_union(&b);
    let redis = store.distinct("sk", &[key]).await.unwrap().unwrap();
    assert_eq!(
        redis,
        union.count(),
        "Redis and luot estimate the same union"
    );
    let truth = 6000u64;
    assert!(
        redis.abs_diff(truth) * 100 < truth * 3,
        "{redis} vs {truth}"
    );
    // A key never written counts zero, and the minute keys are separate.
    assert_eq!(
        store.distinct("sk", &[SketchKey::Minute(1)]).await.unwrap(),
        Some(0)
    );
}

/// No watermark is ever pruned, however long its producer has been idle
/// (a forgotten one would let an import or a write-ahead replay count
/// twice), and the watermark-times hash records when each producer's last
/// batch was applied, for operators.
#[tokio::test]
async fn redis_keeps_watermarks_of_producers_idle_for_years() {
    let store = redis_single::fresh().await;
    let addr = store.server().addr();
    let ancient = (jiff::Timestamp::now().as_second() - 3 * 365 * 86_400).to_string();
    let recent = (jiff::Timestamp::now().as_second() - 29 * 86_400).to_string();
    for (producer, when) in [("gone", ancient.as_str()), ("quiet", recent.as_str())] {
        common::redis::must(
            addr,
            &["HSET", "luot:{pr}:wm", producer, "00000000000000000005"],
        );
        common::redis::must(addr, &["HSET", "luot:{pr}:wmt", producer, when]);
    }
    let before = jiff::Timestamp::now().as_second();
    let batch = SiteBatch {
        site: Arc::from("pr"),
        id: BatchId {
            producer: Arc::from("active"),
            seq: 1,
        },
        increments: Vec::new(),
        visitors: Vec::new(),
        breakdowns: Vec::new(),
        bounds: Default::default(),
        titles: Vec::new(),
        minute: None,
    };
    store.apply(&batch).await.unwrap();
    let names = |key: &str| {
        let mut names: Vec<String> = common::redis::must(addr, &["HKEYS", key])
            .array()
            .unwrap()
            .iter()
            .filter_map(|v| v.text())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names("luot:{pr}:wm"), vec!["active", "gone", "quiet"]);
    assert_eq!(names("luot:{pr}:wmt"), vec!["active", "gone", "quiet"]);
    let seen = common::redis::must(addr, &["HGET", "luot:{pr}:wmt", "active"])
        .text()
        .and_then(|t| t.parse::<i64>().ok())
        .expect("a last-seen time");
    assert!(seen >= before - 1, "{seen} < {before}");
    let gone = common::redis::must(addr, &["HGET", "luot:{pr}:wm", "gone"]).text();
    assert_eq!(gone.as_deref(), Some("00000000000000000005"));
}

/// Every breakdown hash the apply script creates carries its day's
/// expiry, an expired increment creates no key at all, and the layout is
/// one hash per site dimension and day and one per page and day.
#[tokio::test]
async fn redis_breakdown_hashes_all_expire_and_late_ones_are_not_created() {
    use luot::store::{BreakdownIncrement, Dimension, ValueBounds};
    let store = redis_single::fresh().await;
    let addr = store.server().addr();
    let now = jiff::Timestamp::now();
    let day = jiff::civil::Date::constant(2026, 11, 27);
    let old = jiff::civil::Date::constant(2020, 1, 1);
    let keep = now + jiff::SignedDuration::from_hours(24 * 30);
    let gone = now - jiff::SignedDuration::from_hours(1);
    let bd = |scope: &Scope, dimension, day, value: &str, expires| BreakdownIncrement {
        scope: scope.clone(),
        dimension,
        day,
        value: Arc::from(value),
        hits: 1,
        expires_at: Some(expires),
    };
    let page = Scope::Page(Arc::from("/a"));
    let mut breakdowns = Vec::new();
    for dimension in Dimension::ALL {
        breakdowns.push(bd(&Scope::Site, dimension, day, "x", keep));
        breakdowns.push(bd(&Scope::Site, dimension, old, "x", gone));
    }
    for dimension in [Dimension::Channel, Dimension::Source] {
        breakdowns.push(bd(&page, dimension, day, "x", keep));
        breakdowns.push(bd(&page, dimension, old, "x", gone));
    }
    let batch = SiteBatch {
        site: Arc::from("ttl"),
        id: BatchId {
            producer: Arc::from("p"),
            seq: 1,
        },
        increments: Vec::new(),
        visitors: Vec::new(),
        breakdowns: BreakdownIncrement::into_order(breakdowns),
        bounds: ValueBounds::default(),
        titles: Vec::new(),
        minute: None,
    };
    store.apply(&batch).await.unwrap();
    let mut keys: Vec<String> = common::redis::must(addr, &["KEYS", "luot:{ttl}:b*"])
        .array()
        .unwrap()
        .iter()
        .filter_map(|v| v.text())
        .collect();
    keys.sort();
    let mut want: Vec<String> = Dimension::ALL
        .iter()
        .map(|d| format!("luot:{{ttl}}:b:{}:2026-11-27", d.as_str()))
        .collect();
    want.push("luot:{ttl}:bp:2026-11-27:/a".to_string());
    want.sort();
    assert_eq!(keys, want, "no key for the expired day");
    for key in &keys {
        let at = common::redis::must(addr, &["EXPIRETIME", key]).int();
        assert_eq!(at, Some(keep.as_second()), "{key}");
    }
    let fields = common::redis::must(addr, &["HGETALL", "luot:{ttl}:bp:2026-11-27:/a"]);
    let fields: Vec<String> = fields
        .array()
        .unwrap()
        .iter()
        .filter_map(|v| v.text())
        .collect();
    assert_eq!(
        fields,
        vec!["0:x", "1", "1:x", "1"],
        "a page's dimensions share its hash"
    );
}

/// What the rolling windows cost in Redis for a site of `pages` pages all
/// read in one bucket: `MEMORY USAGE` of a bucket and of the window's sum
/// (run by hand: `cargo test --test store_conformance -- --ignored
/// window_memory --nocapture`; the numbers are in BENCHMARKS.md).
#[tokio::test]
#[ignore]
async fn redis_window_memory() {
    use luot::store::{RedisStore, Window, redis::window_key};
    let server = tokio::task::spawn_blocking(common::redis::RedisServer::start)
        .await
        .unwrap();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let minute = jiff::Timestamp::now().as_second().div_euclid(60);
    for (seq, pages) in [(1, 10_000u64), (2, 100_000)] {
        let site = format!("mem{pages}");
        let mut increments = Vec::new();
        for i in 0..pages {
            increments.push(Increment {
                scope: Scope::Page(Arc::from(format!("/tin-tuc/bai-viet-so-{i:06}"))),
                period: PeriodKey::Total,
                hits: 1 + i % 50,
                expires_at: None,
            });
        }
        let batch = SiteBatch {
            site: Arc::from(site.as_str()),
            id: BatchId {
                producer: Arc::from("p1"),
                seq,
            },
            increments,
            visitors: Vec::new(),
            breakdowns: Vec::new(),
            bounds: Default::default(),
            titles: Vec::new(),
            minute: Some(minute),
        };
        store.apply(&batch).await.unwrap();
        for window in Window::ALL {
            let bucket = window.bucket_of(minute).to_string();
            let usage = |key: String| match common::redis::must(
                server.addr(),
                &["MEMORY", "USAGE", &key, "SAMPLES", "0"],
            ) {
                common::redis::RespValue::Integer(n) => n,
                other => panic!("{other:?}"),
            };
            let one = usage(window_key(&site, window, &bucket));
            let sum = usage(window_key(&site, window, "all"));
            println!(
                "{pages} pages, {}: a bucket {one} bytes, the sum {sum} bytes; \
                 every page in every bucket: {} bytes",
                window.as_str(),
                sum + one * window.buckets()
            );
        }
    }
}
