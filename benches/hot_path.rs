//! The hot path, measured: normalising a page and counting a hit on a known
//! page, classifying a hit into its dimensions, and freezing a batch of
//! 10,000 keys. Load tests of the real server live beside this file (see
//! BENCHMARKS.md).

use std::sync::Arc;

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use luot::config::Retention;
use luot::count::ledger::{Ledger, Stored};
use luot::count::tally::{Delta, SiteTally};
use luot::flush::build_batch;
use luot::ingest::classify::{Classifier, ClientHints, Hit};
use luot::page::{PageRules, normalize_into};
use luot::period::{LocalDay, SiteCalendar, WeekStart, day_number};

#[path = "../tests/common/redis.rs"]
#[allow(dead_code)]
mod redis_harness;

fn calendar() -> SiteCalendar {
    SiteCalendar::new(
        jiff::tz::TimeZone::get("Asia/Ho_Chi_Minh").expect("zone"),
        WeekStart::Monday,
    )
}

fn hot_path(c: &mut Criterion) {
    let tally = SiteTally::new(100_000);
    let day = day_number(jiff::civil::Date::constant(2026, 11, 27));
    let rules = PageRules::default();
    let mut buf = String::with_capacity(rules.max_len + 8);
    for i in 0..1000 {
        tally.count(&format!("/news/article-{i}"), day);
    }
    c.bench_function("normalize+count known page", |b| {
        b.iter(|| {
            normalize_into(
                black_box("https://news.example/news/article-7?utm_source=fb#top"),
                rules,
                &mut buf,
            )
            .expect("valid page");
            tally.count(&buf, day)
        })
    });
}

fn flush_batch(c: &mut Criterion) {
    let cal = calendar();
    let day = day_number(jiff::civil::Date::constant(2026, 11, 27));
    let deltas: Vec<Delta> = (0..10_000)
        .map(|i| Delta {
            page: Some(Arc::from(format!("/p{i}").as_str())),
            day,
            hits: 3,
        })
        .collect();
    let site: Arc<str> = Arc::from("demo");
    let producer: Arc<str> = Arc::from("bench");
    let retention = Retention::default();
    c.bench_function("build batch of 10k page deltas", |b| {
        b.iter(|| {
            build_batch(
                &site,
                &producer,
                1,
                (black_box(&deltas), &[]),
                &cal,
                &retention,
            )
        })
    });
}

/// Composing one page's figures for an answer, with every place its
/// unflushed hits can be — a frozen batch, the open deltas and the tally,
/// each of 10,000 pages — after three batches were applied and let go.
fn page_figures(c: &mut Criterion) {
    let cal = calendar();
    let today = jiff::civil::Date::constant(2026, 11, 27);
    let day = day_number(today);
    let retention = Retention::default();
    let site: Arc<str> = Arc::from("demo");
    let producer: Arc<str> = Arc::from("bench");
    let pages: Vec<String> = (0..10_000).map(|i| format!("/news/article-{i}")).collect();
    let tally = SiteTally::new(100_000);
    let ledger = Ledger::new(1);
    let build = |seq, deltas: &[Delta], dims: &[luot::count::breakdown::DimDelta]| {
        build_batch(&site, &producer, seq, (deltas, dims), &cal, &retention)
    };
    let count_all = || {
        for p in &pages {
            tally.count(p, day);
        }
        ledger.write().take_from(&tally);
    };
    for _ in 0..3 {
        count_all();
        let send = ledger.next_batch(false, usize::MAX, build).expect("batch");
        ledger.write().acknowledge(send.batch.id.seq);
        let mut stored = Stored::empty(today, &cal);
        stored.watermark = send.batch.id.seq;
        ledger.write().install(stored);
    }
    count_all();
    let _in_flight = ledger.next_batch(false, usize::MAX, build).expect("batch");
    count_all();
    for p in &pages {
        tally.count(p, day);
    }
    let old_reading = Stored::empty(today, &cal);
    // The day's week and month, as the site's day clock keeps them.
    let local = LocalDay::of(&cal, today);
    // A different page each time, as answers come, so caches do not hold
    // one page's entries.
    let mut i = 0usize;
    c.bench_function(
        "compose a page's figures over 3 delta sets of 10k pages",
        |b| {
            b.iter(|| {
                i = (i + 7919) % pages.len();
                let page: &str = black_box(&pages[i]);
                ledger
                    .read()
                    .counts(&local, &old_reading, Some(page), &tally)
            })
        },
    );
}

/// Moving 10,000 pages' pending hits from the tally into the ledger's open
/// deltas: the time the flusher holds the ledger's write lock once per
/// flush interval, while answers wait.
fn take_into_ledger(c: &mut Criterion) {
    let day = day_number(jiff::civil::Date::constant(2026, 11, 27));
    let pages: Vec<String> = (0..10_000).map(|i| format!("/news/article-{i}")).collect();
    let tally = SiteTally::new(100_000);
    let mut group = c.benchmark_group("ledger");
    group.sample_size(20);
    group.bench_function("take 10k pages' hits into the open deltas", |b| {
        b.iter_batched(
            || {
                // A fresh interval: nothing open, every page hit again.
                for p in &pages {
                    tally.count(p, day);
                }
                Ledger::new(1)
            },
            |ledger| {
                ledger.write().take_from(&tally);
                ledger
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// The 10,000 pages seen once each on one day, and their site: what a busy
/// site's flush carries.
fn flush_deltas() -> Vec<Delta> {
    let day = day_number(jiff::civil::Date::constant(2026, 11, 27));
    (0..10_000)
        .map(|i| Delta {
            page: Some(Arc::from(format!("/news/article-{i}").as_str())),
            day,
            hits: 3,
        })
        .chain(std::iter::once(Delta {
            page: None,
            day,
            hits: 30_000,
        }))
        .collect()
}

/// Benches applying a flush of 10,000 page deltas (batch built each time,
/// a new sequence each time) to `store`.
fn bench_apply<S: luot::store::Store>(c: &mut Criterion, group: &str, store: &S) {
    let cal = calendar();
    let deltas = flush_deltas();
    let site: Arc<str> = Arc::from("demo");
    let producer: Arc<str> = Arc::from("bench");
    let retention = Retention::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut seq = 0;
    let mut group = c.benchmark_group(group);
    group.sample_size(10);
    group.bench_function("apply a flush of 10k page deltas", |b| {
        b.iter(|| {
            seq += 1;
            let batch = build_batch(&site, &producer, seq, (&deltas, &[]), &cal, &retention);
            runtime.block_on(store.apply(&batch)).expect("applied")
        })
    });
    group.finish();
}

fn embedded_apply(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = luot::store::EmbeddedStore::open(dir.path()).expect("store");
    bench_apply(c, "embedded store", &store);
}

/// Wall time of the apply script's call: Redis's CPU for the batch (it is
/// single-threaded) plus luot's encoding. Skipped without `redis-server`.
fn redis_apply(c: &mut Criterion) {
    let installed = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!("redis-server is not available: the Redis apply bench is skipped");
        return;
    }
    // The integration tests' harness: a loopback server of its own with the
    // production checklist's `appendfsync always`, killed when dropped.
    let server = redis_harness::RedisServer::start();
    let url = server.url();
    let store = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(luot::store::RedisStore::connect(&url))
        .expect("connect");
    bench_apply(c, "redis store", &store);
}

const CHROME_ANDROID: &str = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";
const ZALO_ANDROID: &str = "Mozilla/5.0 (Linux; Android 13; SM-A536E Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/128.0.6613.146 Mobile Safari/537.36 Zalo android/12100630 ZaloTheme/light ZaloLanguage/vi";

/// Classifying one hit into its dimensions (issue 24): named and unknown
/// referrers, a campaign, an in-app browser, with the User-Agent's verdict
/// cached (the steady state: a site sees few distinct User-Agents) and
/// missed (each User-Agent new, so the substring tables run).
fn classify(c: &mut Criterion) {
    let classifier = Classifier::new().expect("shipped sources");
    let site = ["news.example"];
    let hit = |referrer, page, ua: &'static str| Hit {
        page,
        referrer,
        user_agent: ua.as_bytes(),
        hints: ClientHints::default(),
    };
    let mut group = c.benchmark_group("classify");
    for (name, h) in [
        (
            "Facebook referrer, cached UA",
            hit(
                Some("https://l.facebook.com/l.php?u=x"),
                "/news/a-1",
                CHROME_ANDROID,
            ),
        ),
        (
            "Google Discover, cached UA",
            hit(
                Some("android-app://com.google.android.googlequicksearchbox/"),
                "/news/a-1",
                CHROME_ANDROID,
            ),
        ),
        (
            "unknown referrer + 3 UTM, cached UA",
            hit(
                Some("https://www.VnExpress.net/thoi-su/x.html"),
                "/news/a-1?utm_source=Partner&utm_medium=referral&utm_campaign=tet+2027",
                CHROME_ANDROID,
            ),
        ),
        (
            "Zalo in-app, no referrer, cached UA",
            hit(None, "/news/a-1", ZALO_ANDROID),
        ),
        (
            "direct, cached UA with client hints",
            Hit {
                hints: ClientHints {
                    ua: Some(
                        br#""Chromium";v="131", "Google Chrome";v="131", "Not_A Brand";v="24""#,
                    ),
                    mobile: Some(b"?1"),
                    platform: Some(br#""Android""#),
                },
                ..hit(None, "/news/a-1", CHROME_ANDROID)
            },
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| classifier.classify(black_box(&h), &site))
        });
    }
    // 65,536 distinct User-Agents through 4,096 cache slots: each is a miss.
    for (name, base) in [("Chrome", CHROME_ANDROID), ("Zalo", ZALO_ANDROID)] {
        let uas: Vec<String> = (0..65_536).map(|i| format!("{base} x/{i}")).collect();
        let mut i = 0;
        group.bench_function(
            format!("Facebook referrer, new {name} UA (cache miss)"),
            |b| {
                b.iter(|| {
                    i = (i + 1) & 0xffff;
                    let h = Hit {
                        user_agent: uas[i].as_bytes(),
                        ..hit(Some("https://l.facebook.com/l.php?u=x"), "/news/a-1", base)
                    };
                    classifier.classify(black_box(&h), &site).browser
                })
            },
        );
    }
    group.finish();
}

/// A hit's country (issue 24): a trusted proxy's header, and addresses
/// looked up in the shipped registry data — a fixed one (its table
/// entries stay in cache, as under a few busy clients) and 4,096
/// addresses spread over the IPv4 space or a few IPv6 blocks (more of
/// the table is touched, as under many clients).
fn country(c: &mut Criterion) {
    use std::net::IpAddr;

    use luot::ingest::classify::country;
    let mut group = c.benchmark_group("country");
    group.bench_function("CF-IPCountry header", |b| {
        let ip: IpAddr = "8.8.8.8".parse().expect("address");
        b.iter(|| country(black_box(Some("VN")), black_box(ip)))
    });
    for (name, ip) in [
        ("one IPv4 address (VNPT)", "14.160.0.1"),
        ("one IPv6 address (Viettel)", "2402:800::1"),
        ("private IPv4 address", "192.168.1.1"),
    ] {
        let ip: IpAddr = ip.parse().expect("address");
        group.bench_function(name, |b| b.iter(|| country(None, black_box(ip))));
    }
    // A fixed pseudo-random walk (an LCG), so every run sees the same mix.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        seed >> 16
    };
    let v4: Vec<IpAddr> = (0..4096)
        .map(|_| IpAddr::from(std::net::Ipv4Addr::from(next() as u32)))
        .collect();
    let blocks = [
        0x2402_0800_u128,
        0x2001_0ee0,
        0x2003_0000,
        0x2001_4860,
        0x2a01_0cb0,
    ];
    let v6: Vec<IpAddr> = (0..4096)
        .map(|i| {
            let high = blocks[i % blocks.len()] << 96;
            let low = u128::from(next()) << 40 | u128::from(next() & 0xff_ffff);
            IpAddr::from(std::net::Ipv6Addr::from(high | low))
        })
        .collect();
    for (name, addresses) in [("4,096 IPv4 addresses", &v4), ("4,096 IPv6 addresses", &v6)] {
        let mut i = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                country(None, black_box(addresses[i]))
            })
        });
    }
    group.finish();
}

/// A page's readers now (`count::page_online`): the hot path's insert for
/// a page and visitor already seen this minute (one map lookup and a scan
/// of the page's exact entries), for a new reader of a known page, on a
/// busy page (its sketch ring), and the flusher's sweep and ranking over
/// 100,000 pages read in the window.
fn page_online(c: &mut Criterion) {
    use luot::count::page_online::PageOnline;

    let t0 = 1_800_000_000_i64;
    let mut group = c.benchmark_group("page_online");
    let pages = PageOnline::new(5, 100_000);
    let paths: Vec<String> = (0..10_000).map(|i| format!("/tin-tuc/bai-{i}")).collect();
    for (i, p) in paths.iter().enumerate() {
        for v in 0..4u64 {
            pages.insert(p, t0, (i as u64) << 20 | v);
        }
    }
    group.bench_function("seen page and visitor (4 readers)", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % paths.len();
            pages.insert(black_box(&paths[i]), t0 + 1, (i as u64) << 20 | 3)
        })
    });
    let full = PageOnline::new(5, 100_000);
    for v in 0..64u64 {
        full.insert("/full", t0, v << 20);
    }
    group.bench_function("seen visitor of a page with 64 readers", |b| {
        b.iter(|| full.insert(black_box("/full"), t0 + 1, 63 << 20))
    });
    let busy = PageOnline::new(5, 100_000);
    for v in 0..10_000u64 {
        busy.insert("/busy", t0, v.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
    group.bench_function("busy page (sketch ring)", |b| {
        let mut v = 0u64;
        b.iter(|| {
            v = (v + 1) % 10_000;
            busy.insert(
                black_box("/busy"),
                t0 + 1,
                v.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            )
        })
    });
    group.sample_size(10);
    let wide = PageOnline::new(5, 100_000);
    for i in 0..100_000u64 {
        wide.insert(
            &format!("/p/{i}"),
            t0,
            i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
    }
    group.bench_function("sweep and rank 100,000 pages", |b| {
        b.iter(|| wide.sweep(black_box(t0 + 30)))
    });
    group.finish();
}

criterion_group!(
    benches,
    classify,
    country,
    page_online,
    hot_path,
    flush_batch,
    page_figures,
    take_into_ledger,
    embedded_apply,
    redis_apply
);
criterion_main!(benches);
