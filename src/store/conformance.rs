//! The conformance suite every [`Store`] must pass, written once against the
//! trait. Each backend's tests instantiate it with
//! [`store_conformance_tests!`](crate::store_conformance_tests), which makes
//! one `#[tokio::test]` per case so a failure names the rule that broke.
//!
//! Every case uses its own site id, so one store may serve all of them.
//!
//! The cases about time ("for ever") take an [`Aging`] hook beside the
//! store, so that a producer can be made to look idle for years without
//! waiting for them.

use std::sync::Arc;

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};

use super::{
    Applied, BatchId, BreakdownIncrement, Dimension, EmbeddedStore, Increment, OTHER, PeriodKey,
    Scope, SiteBatch, Store, ValueBounds,
};

/// Makes a producer look idle: whatever a store records of when a
/// producer's last batch was applied is set `idle` into the past, as if no
/// batch of it had come since. A store that may forget idle producers
/// would forget this one at its next batch; the cases check that none
/// does.
pub trait Aging {
    /// Ages `producer`'s last-seen time on `site` by `idle`. Blocking is
    /// fine: only tests call it.
    fn age_producer(&self, site: &str, producer: &str, idle: SignedDuration);
}

/// The embedded store never forgets a watermark and reads no last-seen
/// time back, so there is nothing to age; the cases still apply the batch
/// again and check it is refused.
impl Aging for EmbeddedStore {
    fn age_producer(&self, _site: &str, _producer: &str, _idle: SignedDuration) {}
}

/// Longer than any horizon a store has pruned idle producers at (Redis
/// once forgot them after 30 days).
const LONG_IDLE: SignedDuration = SignedDuration::from_hours(24 * 400);

fn batch(site: &str, producer: &str, seq: u64, increments: Vec<Increment>) -> SiteBatch {
    SiteBatch {
        site: Arc::from(site),
        id: BatchId {
            producer: Arc::from(producer),
            seq,
        },
        increments,
        visitors: Vec::new(),
        breakdowns: Vec::new(),
        bounds: Default::default(),
        titles: Vec::new(),
        minute: None,
    }
}

fn inc(scope: &Scope, period: PeriodKey, hits: u64) -> Increment {
    Increment {
        scope: scope.clone(),
        period,
        hits,
        expires_at: match period {
            PeriodKey::Total | PeriodKey::Month(_) => None,
            _ => Some(Timestamp::now() + SignedDuration::from_hours(24 * 30)),
        },
    }
}

const DAY: Date = Date::constant(2026, 11, 27);
const WEEK: Date = Date::constant(2026, 11, 23);
const MONTH: Date = Date::constant(2026, 11, 1);

fn all_periods() -> [PeriodKey; 4] {
    [
        PeriodKey::Day(DAY),
        PeriodKey::Week(WEEK),
        PeriodKey::Month(MONTH),
        PeriodKey::Total,
    ]
}

fn full(scope: &Scope, hits: u64) -> Vec<Increment> {
    all_periods().iter().map(|p| inc(scope, *p, hits)).collect()
}

/// Increments land in their scope and period and add up across batches.
pub async fn applies_increments_and_reads_them_back<S: Store>(store: &S) {
    let site = "conf-apply";
    let page = Scope::Page(Arc::from("/a"));
    let mut incs = full(&Scope::Site, 3);
    incs.extend(full(&page, 2));
    assert_eq!(
        store.apply(&batch(site, "p1", 1, incs)).await.unwrap(),
        Applied::Fresh { late: 0 }
    );
    store
        .apply(&batch(site, "p1", 2, full(&Scope::Site, 4)))
        .await
        .unwrap();
    let r = store
        .read(site, &Scope::Site, &all_periods(), "p1")
        .await
        .unwrap();
    assert_eq!(r.values, vec![7, 7, 7, 7]);
    assert_eq!(r.watermark, 2);
    let r = store.read(site, &page, &all_periods(), "p1").await.unwrap();
    assert_eq!(r.values, vec![2, 2, 2, 2]);
}

/// Reading many pages at once gives what reading each gives, in order,
/// across more pages than one store call may carry.
pub async fn pages_read_together_read_as_one_by_one<S: Store>(store: &S) {
    let site = "conf-pages";
    let pages: Vec<Arc<str>> = (0..300).map(|i| Arc::from(format!("/p{i}"))).collect();
    let mut incs = full(&Scope::Site, 1);
    for (i, page) in pages.iter().enumerate().filter(|(i, _)| i % 3 != 0) {
        incs.extend(full(&Scope::Page(Arc::clone(page)), i as u64));
    }
    store.apply(&batch(site, "p1", 7, incs)).await.unwrap();
    let together = store
        .read_pages(site, &pages, &all_periods(), "p1")
        .await
        .unwrap();
    assert_eq!(together.len(), pages.len());
    for (i, (page, r)) in pages.iter().zip(&together).enumerate() {
        let one = store
            .read(site, &Scope::Page(Arc::clone(page)), &all_periods(), "p1")
            .await
            .unwrap();
        assert_eq!(r.values, one.values, "{page}");
        let hits = if i % 3 == 0 { 0 } else { i as u64 };
        assert_eq!(r.values, vec![hits; 4], "{page}");
        assert_eq!(r.watermark, 7, "{page}");
    }
    // A period never written reads as zero beside one that was.
    let never = PeriodKey::Day(Date::constant(2019, 1, 1));
    let mixed = store
        .read_pages(site, &pages[..4], &[never, PeriodKey::Total], "p1")
        .await
        .unwrap();
    let values: Vec<Vec<u64>> = mixed.into_iter().map(|r| r.values).collect();
    assert_eq!(values, vec![vec![0, 0], vec![0, 1], vec![0, 2], vec![0, 0]]);
    assert!(
        store
            .read_pages(site, &[], &all_periods(), "p1")
            .await
            .unwrap()
            .is_empty()
    );
}

/// Keys never written read as zero, and an unknown producer's watermark is 0.
pub async fn missing_keys_read_as_zero<S: Store>(store: &S) {
    let r = store
        .read(
            "conf-empty",
            &Scope::Page(Arc::from("/never")),
            &all_periods(),
            "nobody",
        )
        .await
        .unwrap();
    assert_eq!(r.values, vec![0, 0, 0, 0]);
    assert_eq!(r.watermark, 0);
}

/// A batch replayed with the same id, or an older one, changes nothing.
pub async fn a_replayed_batch_is_applied_once<S: Store>(store: &S) {
    let site = "conf-once";
    let b = batch(site, "p1", 1, full(&Scope::Site, 5));
    assert_eq!(store.apply(&b).await.unwrap(), Applied::Fresh { late: 0 });
    assert_eq!(store.apply(&b).await.unwrap(), Applied::Duplicate);
    let b2 = batch(site, "p1", 2, full(&Scope::Site, 1));
    assert_eq!(store.apply(&b2).await.unwrap(), Applied::Fresh { late: 0 });
    assert_eq!(store.apply(&b).await.unwrap(), Applied::Duplicate);
    assert_eq!(store.apply(&b2).await.unwrap(), Applied::Duplicate);
    let r = store
        .read(site, &Scope::Site, &[PeriodKey::Total], "p1")
        .await
        .unwrap();
    assert_eq!(r.values, vec![6]);
    assert_eq!(r.watermark, 2);
}

/// Importing the same thing twice changes nothing, however long apart: an
/// import is a producer of its own (`import:<content hash>`, sequence 1),
/// idle from the moment it is applied, and another producer's batch (when
/// a store that prunes idle producers would prune) must not make the
/// repeat count again.
pub async fn an_import_repeated_after_a_long_idle_is_a_duplicate<S: Store>(
    store: &S,
    aging: &impl Aging,
) {
    let site = "conf-import-again";
    let import = "import:5f2b9c0e7d41a6b3";
    let page = Scope::Page(Arc::from("/old-post"));
    let mut incs = full(&Scope::Site, 1_000);
    incs.extend(full(&page, 400));
    let imported = batch(site, import, 1, incs);
    assert_eq!(
        store.apply(&imported).await.unwrap(),
        Applied::Fresh { late: 0 }
    );
    aging.age_producer(site, import, LONG_IDLE);
    assert_eq!(
        store
            .apply(&batch(site, "live", 1, full(&Scope::Site, 1)))
            .await
            .unwrap(),
        Applied::Fresh { late: 0 }
    );
    assert_eq!(
        store.apply(&imported).await.unwrap(),
        Applied::Duplicate,
        "the same import, repeated long after, must be refused"
    );
    let r = store
        .read(site, &Scope::Site, &all_periods(), import)
        .await
        .unwrap();
    assert_eq!((r.values, r.watermark), (vec![1_001; 4], 1));
    let r = store
        .read(site, &page, &all_periods(), import)
        .await
        .unwrap();
    assert_eq!(r.values, vec![400; 4]);
}

/// A batch is applied at most once, however long apart: an instance
/// restored from an old volume replays its write-ahead file (batches the
/// store applied but whose acknowledgement was lost) after a long
/// downtime; the replay is refused, and the producer's next batch applies.
pub async fn a_batch_replayed_after_a_long_downtime_is_a_duplicate<S: Store>(
    store: &S,
    aging: &impl Aging,
) {
    let site = "conf-replay-late";
    let restored = "a1b2c3d4e5f60718";
    let b41 = batch(site, restored, 41, full(&Scope::Site, 10));
    let b42 = batch(site, restored, 42, full(&Scope::Site, 20));
    for b in [&b41, &b42] {
        assert_eq!(store.apply(b).await.unwrap(), Applied::Fresh { late: 0 });
    }
    aging.age_producer(site, restored, LONG_IDLE);
    store
        .apply(&batch(site, "live", 7, full(&Scope::Site, 1)))
        .await
        .unwrap();
    for b in [&b41, &b42] {
        assert_eq!(
            store.apply(b).await.unwrap(),
            Applied::Duplicate,
            "batch {} replayed long after must be refused",
            b.id.seq
        );
    }
    assert_eq!(
        store
            .apply(&batch(site, restored, 43, full(&Scope::Site, 100)))
            .await
            .unwrap(),
        Applied::Fresh { late: 0 }
    );
    let r = store
        .read(site, &Scope::Site, &[PeriodKey::Total], restored)
        .await
        .unwrap();
    assert_eq!((r.values, r.watermark), (vec![131], 43));
}

/// Watermarks are per producer and per site: one producer's sequence never
/// hides another's batch.
pub async fn watermarks_are_per_producer_and_site<S: Store>(store: &S) {
    let (a, b) = ("conf-marks-a", "conf-marks-b");
    store
        .apply(&batch(a, "p1", 10, full(&Scope::Site, 1)))
        .await
        .unwrap();
    assert_eq!(
        store
            .apply(&batch(a, "p2", 1, full(&Scope::Site, 1)))
            .await
            .unwrap(),
        Applied::Fresh { late: 0 }
    );
    assert_eq!(
        store
            .apply(&batch(b, "p1", 1, full(&Scope::Site, 1)))
            .await
            .unwrap(),
        Applied::Fresh { late: 0 }
    );
    let r = store
        .read(a, &Scope::Site, &[PeriodKey::Total], "p1")
        .await
        .unwrap();
    assert_eq!((r.values[0], r.watermark), (2, 10));
    let r = store
        .read(a, &Scope::Site, &[PeriodKey::Total], "p2")
        .await
        .unwrap();
    assert_eq!(r.watermark, 1);
    let r = store
        .read(b, &Scope::Site, &[PeriodKey::Total], "p1")
        .await
        .unwrap();
    assert_eq!((r.values[0], r.watermark), (1, 1));
}

/// An increment whose period has expired is skipped and reported late; the
/// rest of the batch (the total) still applies, and the expired key is not
/// brought back.
pub async fn expired_periods_are_late_and_total_still_counts<S: Store>(store: &S) {
    let site = "conf-late";
    let old = Date::constant(2020, 1, 1);
    let incs = vec![
        Increment {
            scope: Scope::Site,
            period: PeriodKey::Day(old),
            hits: 4,
            expires_at: Some(Timestamp::now() - SignedDuration::from_hours(1)),
        },
        Increment {
            scope: Scope::Site,
            period: PeriodKey::Total,
            hits: 4,
            expires_at: None,
        },
    ];
    assert_eq!(
        store.apply(&batch(site, "p1", 1, incs)).await.unwrap(),
        Applied::Fresh { late: 1 }
    );
    let r = store
        .read(
            site,
            &Scope::Site,
            &[PeriodKey::Day(old), PeriodKey::Total],
            "p1",
        )
        .await
        .unwrap();
    assert_eq!(r.values, vec![0, 4]);
}

/// A batch as a flush builds it: the site and pages seen on one day (the
/// same hits in each period), a page seen on two days (different hits per
/// period), and an expired period. Every increment lands once.
pub async fn a_mixed_batch_lands_every_increment_once<S: Store>(store: &S) {
    let site = "conf-mixed";
    let yesterday = Date::constant(2026, 11, 26);
    let mut incs = full(&Scope::Site, 9);
    let pages: Vec<Scope> = (0..50)
        .map(|i| Scope::Page(Arc::from(format!("/p/{i}"))))
        .collect();
    for (i, page) in pages.iter().enumerate() {
        incs.extend(full(page, i as u64 + 1));
    }
    let two_days = Scope::Page(Arc::from("/two-days"));
    incs.push(inc(&two_days, PeriodKey::Day(yesterday), 2));
    incs.push(inc(&two_days, PeriodKey::Day(DAY), 3));
    incs.push(inc(&two_days, PeriodKey::Week(WEEK), 5));
    incs.push(inc(&two_days, PeriodKey::Month(MONTH), 5));
    incs.push(inc(&two_days, PeriodKey::Total, 5));
    let expired = Scope::Page(Arc::from("/expired"));
    incs.push(Increment {
        scope: expired.clone(),
        period: PeriodKey::Day(Date::constant(2020, 1, 1)),
        hits: 1,
        expires_at: Some(Timestamp::now() - SignedDuration::from_hours(1)),
    });
    incs.push(inc(&expired, PeriodKey::Total, 1));
    assert_eq!(
        store.apply(&batch(site, "p1", 1, incs)).await.unwrap(),
        Applied::Fresh { late: 1 }
    );
    let periods = all_periods();
    let r = store
        .read(site, &Scope::Site, &periods, "p1")
        .await
        .unwrap();
    assert_eq!((r.values, r.watermark), (vec![9; 4], 1));
    for (i, page) in pages.iter().enumerate() {
        let r = store.read(site, page, &periods, "p1").await.unwrap();
        assert_eq!(r.values, vec![i as u64 + 1; 4], "{page:?}");
    }
    let mut with_yesterday = vec![PeriodKey::Day(yesterday)];
    with_yesterday.extend(periods);
    let r = store
        .read(site, &two_days, &with_yesterday, "p1")
        .await
        .unwrap();
    assert_eq!(r.values, vec![2, 3, 5, 5, 5]);
    let r = store
        .read(
            site,
            &expired,
            &[PeriodKey::Day(Date::constant(2020, 1, 1)), PeriodKey::Total],
            "p1",
        )
        .await
        .unwrap();
    assert_eq!(r.values, vec![0, 1]);
}

/// A batch of more pages than one script call reads at a time adds to what
/// is stored, large counts stay exact, and increments in any order, a scope
/// and period repeated, all land.
pub async fn a_large_batch_adds_to_what_is_stored<S: Store>(store: &S) {
    let site = "conf-large";
    let names: Vec<Arc<str>> = (0..2_500).map(|i| Arc::from(format!("/l/{i}"))).collect();
    let pages: Vec<Scope> = names.iter().map(|n| Scope::Page(n.clone())).collect();
    let big = 1_000_000_000_007u64;
    let mut first = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        first.extend(full(page, if i == 7 { big } else { i as u64 + 1 }));
    }
    assert_eq!(
        store.apply(&batch(site, "p1", 1, first)).await.unwrap(),
        Applied::Fresh { late: 0 }
    );
    // Pages backwards, and the first page's day twice.
    let mut second = Vec::new();
    for page in pages.iter().rev() {
        second.extend(full(page, 2));
    }
    let mut again = second[second.len() - 4].clone();
    assert_eq!(
        (&again.scope, again.period),
        (&pages[0], PeriodKey::Day(DAY))
    );
    again.hits = 1;
    second.push(again);
    assert_eq!(
        store.apply(&batch(site, "p1", 2, second)).await.unwrap(),
        Applied::Fresh { late: 0 }
    );
    let periods = all_periods();
    let readings = store
        .read_pages(site, &names, &periods, "p1")
        .await
        .unwrap();
    assert_eq!(readings.len(), names.len());
    for (i, r) in readings.iter().enumerate() {
        let before = if i == 7 { big } else { i as u64 + 1 };
        let mut want = vec![before + 2; 4];
        if i == 0 {
            want[0] += 1;
        }
        assert_eq!((&r.values, r.watermark), (&want, 2), "{}", names[i]);
    }
}

/// Sites do not see each other's counters.
pub async fn sites_are_isolated<S: Store>(store: &S) {
    store
        .apply(&batch("conf-iso-a", "p1", 1, full(&Scope::Site, 9)))
        .await
        .unwrap();
    let r = store
        .read("conf-iso-b", &Scope::Site, &[PeriodKey::Total], "p1")
        .await
        .unwrap();
    assert_eq!(r.values, vec![0]);
}

/// The first secret written wins; later candidates get the stored one.
pub async fn first_secret_wins<S: Store>(store: &S) {
    let first = store.secret("conf-salt", [1; 32]).await.unwrap();
    assert_eq!(first, [1; 32]);
    let second = store.secret("conf-salt", [2; 32]).await.unwrap();
    assert_eq!(second, [1; 32]);
    let other = store.secret("conf-salt-2", [3; 32]).await.unwrap();
    assert_eq!(other, [3; 32]);
}

/// A site refresh reads what separate calls would.
pub async fn site_refresh_reads_counters_watermark_and_sketches<S: Store>(store: &S) {
    let site = "conf-refresh";
    let mut b = batch(site, "p1", 4, full(&Scope::Site, 3));
    b.visitors = vec![super::VisitorDelta {
        keys: vec![(super::SketchKey::Minute(100), None)],
        members: super::Members::Exact(vec![1, 2, 3]),
    }];
    store.apply(&b).await.unwrap();
    let keys = vec![super::SketchKey::Minute(100), super::SketchKey::Minute(101)];
    let (reading, counts) = store
        .read_site(site, &all_periods(), "p1", std::slice::from_ref(&keys))
        .await
        .unwrap();
    let plain = store
        .read(site, &Scope::Site, &all_periods(), "p1")
        .await
        .unwrap();
    assert_eq!(reading, plain);
    assert_eq!(reading.values, vec![3, 3, 3, 3]);
    assert_eq!(counts, vec![store.distinct(site, &keys).await.unwrap()]);
    if let Some(n) = counts[0] {
        assert_eq!(n, 3);
    }
    let (_, none) = store
        .read_site(site, &all_periods(), "p1", &[])
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// Visitors per day and ever are kept by every store: the union of the
/// days of a week counts a visitor seen on two days once, and a day's
/// sketch merges members and registers from different batches.
pub async fn day_and_all_time_visitors_are_kept_and_merge<S: Store>(store: &S) {
    use super::{Members, SketchKey, VisitorDelta};
    let site = "conf-visitors";
    let mon = Date::constant(2026, 11, 23);
    let tue = Date::constant(2026, 11, 24);
    let later = Some(Timestamp::now() + SignedDuration::from_hours(24 * 30));
    let delta = |day: Date, members: Vec<u64>| VisitorDelta {
        keys: vec![(SketchKey::Day(day), later), (SketchKey::All, None)],
        members: Members::Exact(members),
    };
    let mut b1 = batch(site, "p1", 1, Vec::new());
    b1.visitors = vec![delta(mon, vec![1, 2, 3])];
    let mut b2 = batch(site, "p1", 2, Vec::new());
    b2.visitors = vec![delta(tue, vec![3, 4])];
    store.apply(&b1).await.unwrap();
    store.apply(&b2).await.unwrap();
    let groups = vec![
        vec![SketchKey::Day(mon)],
        vec![SketchKey::Day(tue)],
        vec![SketchKey::Day(mon), SketchKey::Day(tue)],
        vec![SketchKey::All],
        vec![SketchKey::Day(Date::constant(2026, 11, 25))],
    ];
    let (_, counts) = store
        .read_site(site, &[PeriodKey::Total], "p1", &groups)
        .await
        .unwrap();
    assert_eq!(counts, vec![Some(3), Some(2), Some(4), Some(4), Some(0)]);
}

/// The most-read pages of a period, most read first, ties by page, at
/// most `limit`, never the site itself, and each period on its own.
pub async fn top_pages_are_ranked_per_period<S: Store>(store: &S) {
    let site = "conf-top";
    let mut incs = full(&Scope::Site, 10);
    for (page, hits) in [("/a", 5), ("/b", 9), ("/c", 5), ("/d", 1)] {
        incs.extend(full(&Scope::Page(Arc::from(page)), hits));
    }
    incs.push(inc(
        &Scope::Page(Arc::from("/old")),
        PeriodKey::Day(Date::constant(2026, 11, 26)),
        50,
    ));
    incs.sort_by(|a, b| a.scope.cmp(&b.scope));
    store.apply(&batch(site, "p1", 1, incs)).await.unwrap();
    let top = store.top(site, PeriodKey::Day(DAY), 3).await.unwrap();
    assert_eq!(
        top,
        vec![
            ("/b".to_string(), 9),
            ("/a".to_string(), 5),
            ("/c".to_string(), 5)
        ]
    );
    let all = store.top(site, PeriodKey::Total, 10).await.unwrap();
    assert_eq!(all.len(), 4, "{all:?}");
    let yesterday = store
        .top(site, PeriodKey::Day(Date::constant(2026, 11, 26)), 10)
        .await
        .unwrap();
    assert_eq!(yesterday, vec![("/old".to_string(), 50)]);
    assert!(
        store
            .top(site, PeriodKey::Week(WEEK), 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .top("conf-top-none", PeriodKey::Total, 5)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A breakdown increment of `value` on `day`, kept 30 days from now.
fn bd(
    scope: &Scope,
    dimension: Dimension,
    day: Date,
    value: &str,
    hits: u64,
) -> BreakdownIncrement {
    BreakdownIncrement {
        scope: scope.clone(),
        dimension,
        day,
        value: Arc::from(value),
        hits,
        expires_at: Some(Timestamp::now() + SignedDuration::from_hours(24 * 30)),
    }
}

/// A batch of `increments` and `breakdowns` (put in order) under `bounds`.
fn with_breakdowns(
    site: &str,
    seq: u64,
    increments: Vec<Increment>,
    breakdowns: Vec<BreakdownIncrement>,
    bounds: ValueBounds,
) -> SiteBatch {
    SiteBatch {
        breakdowns: BreakdownIncrement::into_order(breakdowns),
        bounds,
        ..batch(site, "p1", seq, increments)
    }
}

/// The values of a breakdown read, sorted by value.
async fn breakdown_of<S: Store>(
    store: &S,
    site: &str,
    scope: &Scope,
    dimension: Dimension,
    days: &[Date],
) -> (u64, Vec<(String, u64)>) {
    let mut r = store.breakdown(site, scope, dimension, days).await.unwrap();
    r.values.sort();
    (r.hits, r.values)
}

fn pairs(values: &[(&str, u64)]) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = values.iter().map(|&(s, n)| (s.to_string(), n)).collect();
    v.sort();
    v
}

const D1: Date = Date::constant(2026, 11, 25);
const D2: Date = Date::constant(2026, 11, 26);
const D3: Date = Date::constant(2026, 11, 27);

/// A breakdown's values add up over the asked days; its hits are the day
/// counters' (what `read` gives for those days), hits counted without
/// dimensions included; another dimension, or a day never written, reads
/// no values.
pub async fn breakdown_values_add_up_over_days<S: Store>(store: &S) {
    let site = "conf-bd-days";
    let s = Scope::Site;
    let ch = Dimension::Channel;
    let first = with_breakdowns(
        site,
        1,
        vec![
            inc(&s, PeriodKey::Day(D1), 5),
            inc(&s, PeriodKey::Day(D2), 7),
        ],
        vec![
            bd(&s, ch, D1, "direct", 2),
            bd(&s, ch, D1, "search", 3),
            bd(&s, ch, D2, "search", 4),
            bd(&s, ch, D2, "social", 1),
            bd(&s, Dimension::Country, D2, "VN", 7),
        ],
        ValueBounds::default(),
    );
    assert_eq!(
        store.apply(&first).await.unwrap(),
        Applied::Fresh { late: 0 }
    );
    // Hits without dimensions (imported) on D3, then a value on it.
    let second = with_breakdowns(
        site,
        2,
        vec![inc(&s, PeriodKey::Day(D3), 10)],
        vec![bd(&s, ch, D3, "search", 6)],
        ValueBounds::default(),
    );
    assert_eq!(
        store.apply(&second).await.unwrap(),
        Applied::Fresh { late: 0 }
    );
    let days = [D1, D2, D3];
    let day_hits: u64 = store
        .read(site, &s, &days.map(PeriodKey::Day), "p1")
        .await
        .unwrap()
        .values
        .iter()
        .sum();
    assert_eq!(day_hits, 22);
    assert_eq!(
        breakdown_of(store, site, &s, ch, &days).await,
        (
            day_hits,
            pairs(&[("direct", 2), ("search", 13), ("social", 1)])
        )
    );
    assert_eq!(
        breakdown_of(store, site, &s, ch, &[D2]).await,
        (7, pairs(&[("search", 4), ("social", 1)]))
    );
    assert_eq!(
        breakdown_of(store, site, &s, ch, &[D3, D1]).await,
        (15, pairs(&[("direct", 2), ("search", 9)])),
        "only the asked days, not those between"
    );
    assert_eq!(
        breakdown_of(store, site, &s, Dimension::Country, &days).await,
        (22, pairs(&[("VN", 7)]))
    );
    assert_eq!(
        breakdown_of(store, site, &s, Dimension::Browser, &days).await,
        (22, Vec::new()),
        "a dimension never written"
    );
    let never = Date::constant(2026, 11, 1);
    assert_eq!(
        breakdown_of(store, site, &s, ch, &[never]).await,
        (0, Vec::new()),
        "a day never written"
    );
    assert_eq!(
        breakdown_of(store, "conf-bd-nobody", &s, ch, &days).await,
        (0, Vec::new()),
        "a site never written"
    );
    assert_eq!(
        breakdown_of(store, site, &s, ch, &[]).await,
        (0, Vec::new())
    );
}

/// A replayed batch adds nothing to a breakdown.
pub async fn a_duplicate_batch_adds_no_breakdown<S: Store>(store: &S) {
    let site = "conf-bd-once";
    let page = Scope::Page(Arc::from("/a"));
    let b = with_breakdowns(
        site,
        1,
        vec![
            inc(&Scope::Site, PeriodKey::Day(D3), 3),
            inc(&page, PeriodKey::Day(D3), 3),
        ],
        vec![
            bd(&Scope::Site, Dimension::Source, D3, "Google", 3),
            bd(&page, Dimension::Source, D3, "Google", 3),
        ],
        ValueBounds::default(),
    );
    assert_eq!(store.apply(&b).await.unwrap(), Applied::Fresh { late: 0 });
    assert_eq!(store.apply(&b).await.unwrap(), Applied::Duplicate);
    for scope in [&Scope::Site, &page] {
        assert_eq!(
            breakdown_of(store, site, scope, Dimension::Source, &[D3]).await,
            (3, pairs(&[("Google", 3)])),
            "{scope:?}"
        );
    }
}

/// A counter holds at most its bound of distinct values, `(other)` not
/// counted: a new value beyond goes to `(other)`, in the batch's value
/// order, while values it holds keep counting; the site's bound and a
/// page's apply separately, a page's per dimension.
pub async fn a_full_breakdown_counts_new_values_as_other<S: Store>(store: &S) {
    let site = "conf-bd-bound";
    let s = Scope::Site;
    let page = Scope::Page(Arc::from("/p"));
    let (ch, src) = (Dimension::Channel, Dimension::Source);
    let bounds = ValueBounds { site: 3, page: 2 };
    let first = with_breakdowns(
        site,
        1,
        Vec::new(),
        vec![
            // (other) sent as a value does not take a place.
            bd(&s, src, D3, OTHER, 1),
            bd(&s, src, D3, "a", 1),
            bd(&s, src, D3, "b", 1),
            bd(&s, src, D3, "c", 1),
            bd(&s, src, D3, "d", 1),
            bd(&s, src, D3, "e", 1),
            bd(&page, src, D3, "a", 1),
            bd(&page, src, D3, "b", 1),
            bd(&page, src, D3, "c", 1),
            bd(&page, ch, D3, "direct", 1),
            bd(&page, ch, D3, "search", 1),
            // Another day is another counter; on it the page's channels
            // are full and its sources are not.
            bd(&s, src, D2, "z", 1),
            bd(&page, src, D2, "x", 1),
            bd(&page, src, D2, OTHER, 1),
            bd(&page, ch, D2, "direct", 1),
            bd(&page, ch, D2, "search", 1),
        ],
        bounds,
    );
    store.apply(&first).await.unwrap();
    let second = with_breakdowns(
        site,
        2,
        Vec::new(),
        vec![
            bd(&s, src, D3, "a", 10),
            bd(&s, src, D3, "f", 10),
            bd(&page, src, D3, "b", 10),
            bd(&page, src, D3, "d", 10),
            bd(&page, src, D3, DISCOVER, 5),
            bd(&page, ch, D3, "social", 10),
            bd(&page, ch, D3, "direct", 10),
            bd(&page, src, D2, "y", 10),
        ],
        bounds,
    );
    store.apply(&second).await.unwrap();
    let (_, values) = breakdown_of(store, site, &s, src, &[D3]).await;
    assert_eq!(
        values,
        pairs(&[("a", 11), ("b", 1), ("c", 1), (OTHER, 13)]),
        "site bound 3"
    );
    let (_, values) = breakdown_of(store, site, &page, src, &[D3]).await;
    assert_eq!(
        values,
        pairs(&[("a", 1), ("b", 11), (OTHER, 16)]),
        "page bound 2"
    );
    let (_, values) = breakdown_of(store, site, &page, ch, &[D3]).await;
    assert_eq!(
        values,
        pairs(&[("direct", 11), ("search", 1), (OTHER, 10)]),
        "a page's bound is per dimension"
    );
    let (_, values) = breakdown_of(store, site, &s, src, &[D2, D3]).await;
    assert_eq!(
        values,
        pairs(&[("a", 11), ("b", 1), ("c", 1), ("z", 1), (OTHER, 13)]),
        "each day its own bound"
    );
    let (_, values) = breakdown_of(store, site, &page, src, &[D2]).await;
    assert_eq!(
        values,
        pairs(&[("x", 1), ("y", 10), (OTHER, 1)]),
        "a page's sources are not full because its channels are"
    );
    // A raised bound lets new values in again.
    let third = with_breakdowns(
        site,
        3,
        Vec::new(),
        vec![bd(&s, src, D3, "g", 5)],
        ValueBounds { site: 4, page: 2 },
    );
    store.apply(&third).await.unwrap();
    let (_, values) = breakdown_of(store, site, &s, src, &[D3]).await;
    assert_eq!(
        values,
        pairs(&[("a", 11), ("b", 1), ("c", 1), ("g", 5), (OTHER, 13)])
    );
}

/// A breakdown increment whose expiry has passed is skipped (its counter
/// is not brought back), beside a fresh one in the same batch.
pub async fn an_expired_breakdown_increment_is_skipped<S: Store>(store: &S) {
    let site = "conf-bd-late";
    let old = Date::constant(2020, 1, 1);
    let page = Scope::Page(Arc::from("/old"));
    let gone = Some(Timestamp::now() - SignedDuration::from_hours(1));
    let mut late = vec![
        bd(&Scope::Site, Dimension::Device, old, "mobile", 4),
        bd(&page, Dimension::Channel, old, "direct", 4),
    ];
    for b in &mut late {
        b.expires_at = gone;
    }
    late.push(bd(&Scope::Site, Dimension::Device, D3, "mobile", 2));
    let b = with_breakdowns(site, 1, Vec::new(), late, ValueBounds::default());
    assert_eq!(store.apply(&b).await.unwrap(), Applied::Fresh { late: 0 });
    assert_eq!(
        breakdown_of(store, site, &Scope::Site, Dimension::Device, &[old]).await,
        (0, Vec::new())
    );
    assert_eq!(
        breakdown_of(store, site, &page, Dimension::Channel, &[old]).await,
        (0, Vec::new())
    );
    assert_eq!(
        breakdown_of(store, site, &Scope::Site, Dimension::Device, &[old, D3]).await,
        (0, pairs(&[("mobile", 2)]))
    );
}

/// A page's breakdown is its own: not the site's, not another page's.
pub async fn page_and_site_breakdowns_are_separate<S: Store>(store: &S) {
    let site = "conf-bd-scope";
    let (a, b) = (Scope::Page(Arc::from("/a")), Scope::Page(Arc::from("/b")));
    let ch = Dimension::Channel;
    let batch = with_breakdowns(
        site,
        1,
        vec![
            inc(&Scope::Site, PeriodKey::Day(D3), 9),
            inc(&a, PeriodKey::Day(D3), 5),
            inc(&b, PeriodKey::Day(D3), 4),
        ],
        vec![
            bd(&Scope::Site, ch, D3, "direct", 6),
            bd(&Scope::Site, ch, D3, "search", 3),
            bd(&a, ch, D3, "direct", 5),
            bd(&a, Dimension::Source, D3, "(direct)", 5),
            bd(&b, ch, D3, "search", 3),
            bd(&b, ch, D3, "direct", 1),
        ],
        ValueBounds::default(),
    );
    store.apply(&batch).await.unwrap();
    assert_eq!(
        breakdown_of(store, site, &Scope::Site, ch, &[D3]).await,
        (9, pairs(&[("direct", 6), ("search", 3)]))
    );
    assert_eq!(
        breakdown_of(store, site, &a, ch, &[D3]).await,
        (5, pairs(&[("direct", 5)]))
    );
    assert_eq!(
        breakdown_of(store, site, &a, Dimension::Source, &[D3]).await,
        (5, pairs(&[("(direct)", 5)]))
    );
    assert_eq!(
        breakdown_of(store, site, &b, ch, &[D3]).await,
        (4, pairs(&[("direct", 1), ("search", 3)]))
    );
    assert_eq!(
        breakdown_of(store, site, &Scope::Page(Arc::from("/c")), ch, &[D3]).await,
        (0, Vec::new())
    );
    assert_eq!(
        breakdown_of(store, site, &Scope::Site, Dimension::Source, &[D3]).await,
        (9, Vec::new()),
        "a page's source is not the site's"
    );
}

/// A counter filled by more values than one store call carries, then
/// added to: every value held lands once, the rest in `(other)`.
pub async fn a_large_breakdown_is_bounded_exactly<S: Store>(store: &S) {
    let site = "conf-bd-large";
    let s = Scope::Site;
    let campaign = Dimension::UtmCampaign;
    let bounds = ValueBounds {
        site: 1_200,
        page: 50,
    };
    let values: Vec<String> = (0..1_500).map(|i| format!("campaign-{i:04}")).collect();
    let first = values
        .iter()
        .enumerate()
        .map(|(i, v)| bd(&s, campaign, D3, v, i as u64 + 1))
        .collect();
    store
        .apply(&with_breakdowns(site, 1, Vec::new(), first, bounds))
        .await
        .unwrap();
    let again = values.iter().map(|v| bd(&s, campaign, D3, v, 1)).collect();
    store
        .apply(&with_breakdowns(site, 2, Vec::new(), again, bounds))
        .await
        .unwrap();
    let (_, got) = breakdown_of(store, site, &s, campaign, &[D3]).await;
    let mut want: Vec<(String, u64)> = values[..1_200]
        .iter()
        .enumerate()
        .map(|(i, v)| (v.clone(), i as u64 + 2))
        .collect();
    let over: u64 = (1_200..1_500u64).map(|i| i + 2).sum();
    want.push((OTHER.to_string(), over));
    want.sort();
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
}

/// A value with colons in it (Google Discover's referrer).
const DISCOVER: &str = "android-app://com.google.android.googlequicksearchbox";

/// Breakdown increments out of order, a value twice, land as if in order
/// and merged; a value may hold colons.
pub async fn breakdowns_in_any_order_land<S: Store>(store: &S) {
    let site = "conf-bd-order";
    let page = Scope::Page(Arc::from("/a"));
    let (ch, src) = (Dimension::Channel, Dimension::Source);
    let b = SiteBatch {
        breakdowns: vec![
            bd(&page, src, D3, "Zalo", 1),
            bd(&page, ch, D3, "social", 1),
            bd(&page, src, D2, "Zalo", 4),
            bd(&page, src, D3, "Zalo", 2),
            bd(&page, src, D3, DISCOVER, 1),
            bd(&Scope::Site, ch, D3, "social", 2),
            bd(&Scope::Site, ch, D3, "social", 3),
            bd(&Scope::Site, ch, D3, "direct", 1),
        ],
        ..batch(site, "p1", 1, Vec::new())
    };
    store.apply(&b).await.unwrap();
    assert_eq!(
        breakdown_of(store, site, &Scope::Site, ch, &[D3]).await.1,
        pairs(&[("direct", 1), ("social", 5)])
    );
    assert_eq!(
        breakdown_of(store, site, &page, src, &[D2, D3]).await.1,
        pairs(&[("Zalo", 7), (DISCOVER, 1)])
    );
    assert_eq!(
        breakdown_of(store, site, &page, ch, &[D2, D3]).await.1,
        pairs(&[("social", 1)])
    );
}

/// A reachable store answers a ping.
pub async fn ping_answers<S: Store>(store: &S) {
    store.ping().await.unwrap();
}

/// A page's pages-only batch (all four periods) of `hits` each, in order.
fn pages_batch(site: &str, seq: u64, minute: Option<i64>, pages: &[(&str, u64)]) -> SiteBatch {
    let mut incs = Vec::new();
    for (page, hits) in pages {
        incs.extend(full(&Scope::Page(Arc::from(*page)), *hits));
    }
    incs.sort_by(|a, b| a.scope.cmp(&b.scope));
    SiteBatch {
        minute,
        ..batch(site, "p1", seq, incs)
    }
}

fn ranked(pages: &[(&str, u64)]) -> Vec<(String, u64)> {
    pages.iter().map(|(p, h)| (p.to_string(), *h)).collect()
}

/// The last title seen is kept per page, as sent (markup included: it is
/// shown as text); a page without one reads `None`; a duplicate batch
/// changes no title.
pub async fn titles_are_kept_last_one_wins<S: Store>(store: &S) {
    let site = "conf-titles";
    let titled = |seq, titles: &[(&str, &str)]| SiteBatch {
        titles: titles
            .iter()
            .map(|(p, t)| (Arc::from(*p), Arc::from(*t)))
            .collect(),
        ..pages_batch(site, seq, None, &[("/a", 1), ("/b", 1)])
    };
    let first = titled(1, &[("/a", "Tin một"), ("/b", "<b>x</b> & \"y\"")]);
    assert!(matches!(
        store.apply(&first).await.unwrap(),
        Applied::Fresh { .. }
    ));
    let second = titled(2, &[("/a", "Tin hai")]);
    store.apply(&second).await.unwrap();
    let again = titled(2, &[("/a", "never applied")]);
    assert_eq!(store.apply(&again).await.unwrap(), Applied::Duplicate);
    let pages: Vec<Arc<str>> = ["/a", "/b", "/c"].map(Arc::from).to_vec();
    assert_eq!(
        store.titles(site, &pages).await.unwrap(),
        vec![
            Some("Tin hai".to_string()),
            Some("<b>x</b> & \"y\"".to_string()),
            None
        ]
    );
    assert_eq!(
        store
            .titles("conf-titles-other", &pages[..1])
            .await
            .unwrap(),
        vec![None]
    );
}

/// The current hour, as a Unix minute: the windows' buckets then start
/// at known minutes. Near the real clock, since a store may expire the
/// buckets by it.
fn this_hour() -> i64 {
    Timestamp::now().as_second().div_euclid(3_600) * 60
}

/// A batch's page hits count in the rolling hour from its minute `m`
/// until minute `m + 59` and leave at `m + 60`, whether the window moves
/// on by one bucket or after a pause; the day window likewise by hours;
/// a duplicate batch adds nothing and a batch without a minute (history)
/// is in no window.
pub async fn rolling_windows_count_a_minute_until_it_leaves<S: Store>(store: &S) {
    use super::Window::{Day, Hour};
    let site = "conf-windows";
    let m0 = this_hour();
    let top =
        |window, minute| async move { store.top_window(site, window, minute, 10).await.unwrap() };
    assert!(top(Hour, m0).await.is_empty());
    store
        .apply(&pages_batch(site, 1, Some(m0), &[("/a", 3), ("/b", 1)]))
        .await
        .unwrap();
    assert_eq!(top(Hour, m0).await, ranked(&[("/a", 3), ("/b", 1)]));
    let again = pages_batch(site, 1, Some(m0), &[("/a", 3), ("/b", 1)]);
    assert_eq!(store.apply(&again).await.unwrap(), Applied::Duplicate);
    store
        .apply(&pages_batch(site, 2, Some(m0 + 30), &[("/b", 5)]))
        .await
        .unwrap();
    store
        .apply(&pages_batch(site, 3, None, &[("/history", 100)]))
        .await
        .unwrap();
    assert_eq!(top(Hour, m0 + 30).await, ranked(&[("/b", 6), ("/a", 3)]));
    assert_eq!(top(Hour, m0 + 59).await, ranked(&[("/b", 6), ("/a", 3)]));
    // Read while the site is quiet: minute m0 has left.
    assert_eq!(top(Hour, m0 + 60).await, ranked(&[("/b", 5)]));
    assert_eq!(top(Hour, m0 + 90).await, ranked(&[]));
    // The window moved on after a pause, then bucket by bucket.
    store
        .apply(&pages_batch(site, 4, Some(m0 + 60), &[("/c", 1)]))
        .await
        .unwrap();
    assert_eq!(top(Hour, m0 + 60).await, ranked(&[("/b", 5), ("/c", 1)]));
    store
        .apply(&pages_batch(site, 5, Some(m0 + 89), &[("/c", 1)]))
        .await
        .unwrap();
    assert_eq!(top(Hour, m0 + 89).await, ranked(&[("/b", 5), ("/c", 2)]));
    store
        .apply(&pages_batch(site, 6, Some(m0 + 90), &[("/d", 1)]))
        .await
        .unwrap();
    assert_eq!(top(Hour, m0 + 90).await, ranked(&[("/c", 2), ("/d", 1)]));
    // A batch stamped before the window's last bucket counts in it.
    store
        .apply(&pages_batch(site, 7, Some(m0 + 10), &[("/d", 1)]))
        .await
        .unwrap();
    assert_eq!(top(Hour, m0 + 90).await, ranked(&[("/c", 2), ("/d", 2)]));
    assert_eq!(
        top(Day, m0 + 90).await,
        ranked(&[("/b", 6), ("/a", 3), ("/c", 2), ("/d", 2)])
    );
    assert_eq!(
        store.top_window(site, Day, m0 + 90, 2).await.unwrap().len(),
        2
    );
    // After a pause the sum is made again of the live buckets: a page in
    // two of them counts both.
    store
        .apply(&pages_batch(site, 8, Some(m0 + 100), &[("/a", 1)]))
        .await
        .unwrap();
    store
        .apply(&pages_batch(site, 9, Some(m0 + 180), &[("/f", 1)]))
        .await
        .unwrap();
    assert_eq!(
        top(Day, m0 + 180).await,
        ranked(&[("/b", 6), ("/a", 4), ("/c", 2), ("/d", 2), ("/f", 1)])
    );
    // A day later, every hour has left the day window.
    let later = m0 + 28 * 60;
    store
        .apply(&pages_batch(site, 10, Some(later), &[("/e", 1)]))
        .await
        .unwrap();
    assert_eq!(top(Day, later).await, ranked(&[("/e", 1)]));
    assert_eq!(top(Hour, later).await, ranked(&[("/e", 1)]));
    assert!(
        store
            .top_window("conf-windows-none", Hour, m0, 5)
            .await
            .unwrap()
            .is_empty()
    );
}

// ---- record day (issue 25 §7) ----

fn day_inc(scope: &Scope, day: Date, hits: u64) -> Increment {
    inc(scope, PeriodKey::Day(day), hits)
}

async fn record_of<S: Store>(store: &S, site: &str) -> Option<(u64, Date)> {
    store
        .read(site, &Scope::Site, &[PeriodKey::Total], "p1")
        .await
        .unwrap()
        .record
        .map(|r| (r.hits, r.date))
}

const R1: Date = Date::constant(2026, 11, 25);
const R2: Date = Date::constant(2026, 11, 26);
const R3: Date = Date::constant(2026, 11, 27);

/// The record is the site's best local day as its day counters stand,
/// raised by a higher day, never lowered by a lower one; pages' days do
/// not count; a page's read carries none.
pub async fn the_record_day_rises_and_never_falls<S: Store>(store: &S) {
    let site = "conf-record";
    assert_eq!(record_of(store, site).await, None, "no hit, no record");
    let page = Scope::Page(Arc::from("/a"));
    let mut incs = vec![
        day_inc(&Scope::Site, R1, 5),
        inc(&Scope::Site, PeriodKey::Total, 5),
    ];
    incs.push(day_inc(&page, R2, 900));
    let b = |seq, incs| batch(site, "p1", seq, Increment::into_order(incs));
    store.apply(&b(1, incs)).await.unwrap();
    assert_eq!(record_of(store, site).await, Some((5, R1)));
    store
        .apply(&b(2, vec![day_inc(&Scope::Site, R2, 3)]))
        .await
        .unwrap();
    assert_eq!(record_of(store, site).await, Some((5, R1)), "a lower day");
    store
        .apply(&b(3, vec![day_inc(&Scope::Site, R2, 4)]))
        .await
        .unwrap();
    assert_eq!(record_of(store, site).await, Some((7, R2)), "7 on R2");
    store
        .apply(&b(4, vec![day_inc(&Scope::Site, R1, 1)]))
        .await
        .unwrap();
    assert_eq!(record_of(store, site).await, Some((7, R2)), "R1 at 6");
    let r = store
        .read(site, &page, &[PeriodKey::Total], "p1")
        .await
        .unwrap();
    assert_eq!(r.record, None, "a page's reading carries no record");
}

/// Two days with as many hits: the earlier date keeps the record, in
/// whichever order they were counted.
pub async fn a_record_tie_keeps_the_earlier_date<S: Store>(store: &S) {
    let site = "conf-record-tie";
    let b = |seq, day, hits| batch(site, "p1", seq, vec![day_inc(&Scope::Site, day, hits)]);
    store.apply(&b(1, R2, 10)).await.unwrap();
    store.apply(&b(2, R3, 10)).await.unwrap();
    assert_eq!(record_of(store, site).await, Some((10, R2)), "a later tie");
    store.apply(&b(3, R1, 10)).await.unwrap();
    assert_eq!(
        record_of(store, site).await,
        Some((10, R1)),
        "an earlier tie"
    );
}

/// A batch refused by the watermark raises nothing, even one that would.
pub async fn a_duplicate_batch_leaves_the_record<S: Store>(store: &S) {
    let site = "conf-record-dup";
    let b = |seq, day, hits| batch(site, "p1", seq, vec![day_inc(&Scope::Site, day, hits)]);
    store.apply(&b(1, R1, 5)).await.unwrap();
    store.apply(&b(2, R1, 3)).await.unwrap();
    assert_eq!(store.apply(&b(2, R1, 3)).await.unwrap(), Applied::Duplicate);
    assert_eq!(
        store.apply(&b(2, R2, 100)).await.unwrap(),
        Applied::Duplicate
    );
    assert_eq!(record_of(store, site).await, Some((8, R1)));
}

/// An import of history (day increments under its own producer, through
/// the same apply) raises the record to its best day.
pub async fn an_imported_history_raises_the_record<S: Store>(store: &S) {
    let site = "conf-record-import";
    store
        .apply(&batch(site, "p1", 1, vec![day_inc(&Scope::Site, R3, 40)]))
        .await
        .unwrap();
    let history = vec![
        day_inc(&Scope::Site, R1, 4_321),
        day_inc(&Scope::Site, R2, 1_000),
    ];
    let import = batch(site, "import:0123456789abcdef", 1, history);
    assert_eq!(
        store.apply(&import).await.unwrap(),
        Applied::Fresh { late: 0 }
    );
    assert_eq!(record_of(store, site).await, Some((4_321, R1)));
}

// ---- end record day ----

/// Generates one `#[tokio::test]` per conformance case for the store that
/// `$make` (an async expression) builds. Each test builds its own store,
/// which must also be the [`Aging`] hook of the cases about time.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@cases $make;
            applies_increments_and_reads_them_back,
            pages_read_together_read_as_one_by_one,
            missing_keys_read_as_zero,
            a_replayed_batch_is_applied_once,
            watermarks_are_per_producer_and_site,
            expired_periods_are_late_and_total_still_counts,
            a_mixed_batch_lands_every_increment_once,
            a_large_batch_adds_to_what_is_stored,
            sites_are_isolated,
            first_secret_wins,
            site_refresh_reads_counters_watermark_and_sketches,
            day_and_all_time_visitors_are_kept_and_merge,
            top_pages_are_ranked_per_period,
            breakdown_values_add_up_over_days,
            a_duplicate_batch_adds_no_breakdown,
            a_full_breakdown_counts_new_values_as_other,
            an_expired_breakdown_increment_is_skipped,
            page_and_site_breakdowns_are_separate,
            breakdowns_in_any_order_land,
            a_large_breakdown_is_bounded_exactly,
            titles_are_kept_last_one_wins,
            rolling_windows_count_a_minute_until_it_leaves,
            ping_answers,
            the_record_day_rises_and_never_falls,
            a_record_tie_keeps_the_earlier_date,
            a_duplicate_batch_leaves_the_record,
            an_imported_history_raises_the_record,
        );
        $crate::store_conformance_tests!(@aged $make;
            an_import_repeated_after_a_long_idle_is_a_duplicate,
            a_batch_replayed_after_a_long_downtime_is_a_duplicate,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let store = $make.await;
                $crate::store::conformance::$case(&store).await;
            }
        )*
    };
    (@aged $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let store = $make.await;
                $crate::store::conformance::$case(&store, &store).await;
            }
        )*
    };
}
