//! Every metric luot exports: its name, help and buckets in one place, and
//! pre-registered handles so the hot path does no registry lookup.
//!
//! Names follow `luot_<what>[_<unit>]` in base units with `_total` on
//! counters only. Label values come from small fixed sets: a result, a
//! route, a status code, a declared site id. Never a page, visitor, IP or
//! error text.

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HITS: &str = "luot_hits_total";
pub const SITE_HITS: &str = "luot_site_hits_total";
pub const SITE_ONLINE: &str = "luot_site_online_visitors";
pub const PAGE_OVERFLOW: &str = "luot_page_overflow_total";
pub const SITE_PAGES: &str = "luot_site_pages";
/// Pages with readers in the online window, tracked per site for `online`.
pub const SITE_ONLINE_PAGES: &str = "luot_site_online_pages";
/// Hits on pages not tracked for `online` because the site's cap was reached.
pub const ONLINE_PAGES_REFUSED: &str = "luot_online_pages_refused_total";
pub const LIMITER_CLIENTS: &str = "luot_rate_limiter_clients";
pub const HTTP_REQUESTS: &str = "luot_http_requests_total";
pub const HTTP_DURATION: &str = "luot_http_request_duration_seconds";
pub const CONNECTIONS: &str = "luot_http_connections";
pub const CONNECTIONS_REFUSED: &str = "luot_http_connections_refused_total";
/// Connections the server closed itself, by `reason` ([`CLOSE_REASONS`]).
pub const CONNECTIONS_CLOSED: &str = "luot_http_connections_closed_total";
/// Why the server closed a public connection: no complete head in
/// `header_read_timeout`, idle past `idle_timeout`, an answer stuck past
/// `write_timeout`, or still open when shutdown's drain ended.
pub const CLOSE_REASONS: [&str; 4] = [
    "header_timeout",
    "idle_timeout",
    "write_timeout",
    "shutdown",
];
pub const FLUSH_DURATION: &str = "luot_flush_duration_seconds";
pub const FLUSH_PASSES: &str = "luot_flush_passes_total";
pub const FLUSH_BATCH_KEYS: &str = "luot_flush_batch_keys";
pub const FLUSH_RETRIES: &str = "luot_flush_retries_total";
pub const DUPLICATE_BATCHES: &str = "luot_duplicate_batches_total";
pub const STORE_ERRORS: &str = "luot_store_errors_total";
pub const STORE_UP: &str = "luot_store_up";
pub const PENDING_KEYS: &str = "luot_pending_keys";
pub const LATE_DELTAS: &str = "luot_late_deltas_total";
pub const WAL_BYTES: &str = "luot_wal_bytes";
pub const WAL_ERRORS: &str = "luot_wal_errors_total";
pub const ANONYMOUS_HITS: &str = "luot_anonymous_hits_total";
pub const PAGE_READS: &str = "luot_page_reads_total";
pub const STORE_READS: &str = "luot_store_reads_total";
pub const BUILD_INFO: &str = "luot_build_info";
/// Hits whose value in a dimension counted as `(other)`: the dimension's
/// values for the day were full (`max_values`, or `max_page_values` for a
/// page's source), by `dimension` ([`DIMENSIONS`]).
pub const BREAKDOWN_OVERFLOW: &str = "luot_breakdown_overflow_total";
/// The `dimension` labels of [`BREAKDOWN_OVERFLOW`], in the store's
/// dimension order (a test in `store` holds them equal).
pub const DIMENSIONS: [&str; 9] = [
    "channel",
    "source",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "browser",
    "os",
    "device",
    "country",
];

/// Why a hit was or was not counted: the `result` label of [`HITS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HitResult {
    Counted,
    Bot,
    RateLimited,
    Duplicate,
    Invalid,
    UnknownSite,
    Forbidden,
    /// From one of the site's `ignore_addresses`: answered, not counted.
    Ignored,
}

impl HitResult {
    pub const ALL: [HitResult; 8] = [
        HitResult::Counted,
        HitResult::Bot,
        HitResult::RateLimited,
        HitResult::Duplicate,
        HitResult::Invalid,
        HitResult::UnknownSite,
        HitResult::Forbidden,
        HitResult::Ignored,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HitResult::Counted => "counted",
            HitResult::Bot => "bot",
            HitResult::RateLimited => "rate_limited",
            HitResult::Duplicate => "duplicate",
            HitResult::Invalid => "invalid",
            HitResult::UnknownSite => "unknown_site",
            HitResult::Forbidden => "forbidden",
            HitResult::Ignored => "ignored",
        }
    }
}

/// Latency buckets for HTTP requests, in seconds: a beacon answers in
/// microseconds, a page read may wait on the store.
const HTTP_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];
/// Flush duration buckets, in seconds.
const FLUSH_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Batch size buckets, in keys.
const KEY_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process and describes every
/// metric. Later calls return the same handle (tests run several servers in
/// one process).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), HTTP_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(FLUSH_DURATION.into()), FLUSH_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(FLUSH_BATCH_KEYS.into()), KEY_BUCKETS)
                })
                .expect("bucket lists are non-empty constants");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test harness):
            // then this handle renders nothing, which is its own signal.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            // Known label sets exist from the start, so rate() has a series.
            for reason in CLOSE_REASONS {
                metrics::counter!(CONNECTIONS_CLOSED, "reason" => reason).increment(0);
            }
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(HITS, "Beacons received, by result (counted or why not).");
    describe_counter!(SITE_HITS, "Hits counted, per declared site.");
    describe_gauge!(
        SITE_ONLINE,
        "Distinct visitors in the online window, per declared site."
    );
    describe_counter!(
        BREAKDOWN_OVERFLOW,
        "Hits whose value in a dimension counted as (other): the day's values were full."
    );
    describe_counter!(
        PAGE_OVERFLOW,
        "Hits on new pages beyond max_pages, counted for the site only."
    );
    describe_gauge!(
        LIMITER_CLIENTS,
        "Client addresses with rate-limit state, per declared site."
    );
    describe_gauge!(
        SITE_ONLINE_PAGES,
        "Pages with readers in the online window, tracked for their online figure, per declared site."
    );
    describe_counter!(
        ONLINE_PAGES_REFUSED,
        "Hits on pages not tracked for their online figure: the site's max_pages pages were already tracked."
    );
    describe_gauge!(
        SITE_PAGES,
        "Distinct pages kept in memory, per declared site."
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency, by route."
    );
    describe_gauge!(CONNECTIONS, "Open HTTP connections on the public listener.");
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections refused because the connection cap was reached."
    );
    describe_counter!(
        CONNECTIONS_CLOSED,
        "Public connections the server closed, by reason (a deadline, or shutdown)."
    );
    describe_histogram!(
        FLUSH_DURATION,
        Unit::Seconds,
        "Time to apply one site batch to the store."
    );
    describe_counter!(
        FLUSH_PASSES,
        "Flush passes completed over every site, whether or not they had anything to send."
    );
    describe_histogram!(
        FLUSH_BATCH_KEYS,
        "Distinct (scope, day) keys in a flushed batch."
    );
    describe_counter!(
        FLUSH_RETRIES,
        "Batch applications retried after a store error."
    );
    describe_counter!(
        DUPLICATE_BATCHES,
        "Batches the store refused as already applied (watermark)."
    );
    describe_counter!(
        STORE_ERRORS,
        "Store operations that failed, by operation and kind."
    );
    describe_gauge!(
        STORE_UP,
        "1 when the last store operation succeeded, else 0."
    );
    describe_gauge!(PENDING_KEYS, "Keys waiting to be flushed, all sites.");
    describe_counter!(
        LATE_DELTAS,
        "Increments whose period had expired when applied (total only)."
    );
    describe_gauge!(WAL_BYTES, Unit::Bytes, "Size of the write-ahead file.");
    describe_counter!(
        WAL_ERRORS,
        "Write-ahead file appends or checkpoints that failed."
    );
    describe_counter!(
        ANONYMOUS_HITS,
        "Counted hits without a visitor identity, by reason."
    );
    describe_counter!(
        PAGE_READS,
        "Page readings fetched from the store, by why: first (none kept for today), behind (the kept one missed a batch that left memory), refresh (past its time to live, read in the background)."
    );
    describe_counter!(
        STORE_READS,
        "Store calls made to answer reads, by the route that made them (refresh: kept page readings read again in the background, up to 256 pages a call)."
    );
    describe_gauge!(BUILD_INFO, "Always 1; labels carry the version.");
}

/// Handles for the per-hit counters, registered once.
pub struct HitCounters {
    by_result: [Counter; HitResult::ALL.len()],
    pub anonymous_no_track: Counter,
    pub anonymous_no_salt: Counter,
    /// [`BREAKDOWN_OVERFLOW`], by the dimension's index in [`DIMENSIONS`].
    pub breakdown_overflow: [Counter; 9],
}

impl HitCounters {
    pub fn new() -> Self {
        HitCounters {
            by_result: HitResult::ALL.map(|r| metrics::counter!(HITS, "result" => r.label())),
            anonymous_no_track: metrics::counter!(ANONYMOUS_HITS, "reason" => "no_track"),
            anonymous_no_salt: metrics::counter!(ANONYMOUS_HITS, "reason" => "no_salt"),
            breakdown_overflow: DIMENSIONS
                .map(|d| metrics::counter!(BREAKDOWN_OVERFLOW, "dimension" => d)),
        }
    }

    pub fn record(&self, result: HitResult) {
        self.by_result[result as usize].increment(1);
    }
}

impl Default for HitCounters {
    fn default() -> Self {
        Self::new()
    }
}

/// Handles for one declared site.
pub struct SiteMetrics {
    pub hits: Counter,
    pub online: Gauge,
    pub overflow: Counter,
    pub pages: Gauge,
    pub limiter_clients: Gauge,
    pub online_pages: Gauge,
    pub online_pages_refused: Counter,
}

impl SiteMetrics {
    pub fn new(site: &str) -> Self {
        let site = site.to_string();
        SiteMetrics {
            hits: metrics::counter!(SITE_HITS, "site" => site.clone()),
            online: metrics::gauge!(SITE_ONLINE, "site" => site.clone()),
            overflow: metrics::counter!(PAGE_OVERFLOW, "site" => site.clone()),
            pages: metrics::gauge!(SITE_PAGES, "site" => site.clone()),
            limiter_clients: metrics::gauge!(LIMITER_CLIENTS, "site" => site.clone()),
            online_pages: metrics::gauge!(SITE_ONLINE_PAGES, "site" => site.clone()),
            online_pages_refused: metrics::counter!(ONLINE_PAGES_REFUSED, "site" => site),
        }
    }
}

/// The `op` labels of [`STORE_ERRORS`].
pub const STORE_OPS: [&str; 3] = ["apply", "read", "import"];
/// The `kind` labels of [`STORE_ERRORS`]: every `StoreError::kind`.
pub const STORE_ERROR_KINDS: [&str; 4] = ["unavailable", "timeout", "corrupt", "refused"];

/// Handles for the flusher.
pub struct FlushMetrics {
    pub duration: Histogram,
    /// One per completed pass, idle or not: what tests wait on to know a
    /// whole pass ran after something they did.
    pub passes: Counter,
    pub batch_keys: Histogram,
    pub retries: Counter,
    pub duplicates: Counter,
    pub store_up: Gauge,
    pub pending_keys: Gauge,
    pub late: Counter,
    pub wal_bytes: Gauge,
    pub wal_errors: Counter,
}

impl FlushMetrics {
    pub fn new() -> Self {
        // Every store error series exists from the start at 0, so that
        // `rate()` and `increase()` see the first error.
        for op in STORE_OPS {
            for kind in STORE_ERROR_KINDS {
                drop(metrics::counter!(STORE_ERRORS, "op" => op, "kind" => kind));
            }
        }
        FlushMetrics {
            duration: metrics::histogram!(FLUSH_DURATION),
            passes: metrics::counter!(FLUSH_PASSES),
            batch_keys: metrics::histogram!(FLUSH_BATCH_KEYS),
            retries: metrics::counter!(FLUSH_RETRIES),
            duplicates: metrics::counter!(DUPLICATE_BATCHES),
            store_up: metrics::gauge!(STORE_UP),
            pending_keys: metrics::gauge!(PENDING_KEYS),
            late: metrics::counter!(LATE_DELTAS),
            wal_bytes: metrics::gauge!(WAL_BYTES),
            wal_errors: metrics::counter!(WAL_ERRORS),
        }
    }

    /// Counts a failed store operation (`op` and `kind` are fixed labels).
    pub fn store_error(&self, op: &'static str, kind: &'static str) {
        metrics::counter!(STORE_ERRORS, "op" => op, "kind" => kind).increment(1);
        self.store_up.set(0.0);
    }
}

impl Default for FlushMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The status labels of [`HTTP_REQUESTS`]; anything else is "other".
const STATUSES: [u16; 16] = [
    200, 204, 304, 400, 401, 403, 404, 405, 408, 413, 415, 429, 431, 500, 503, 0,
];
const STATUS_LABELS: [&str; 16] = [
    "200", "204", "304", "400", "401", "403", "404", "405", "408", "413", "415", "429", "431",
    "500", "503", "other",
];
/// Most routes [`HttpMetrics`] can tell apart.
pub const MAX_ROUTES: usize = 24;

/// Handles for the HTTP metrics, registered on first use of each (route,
/// status) and reused after, so answering a request does no registry
/// lookup and no allocation.
pub struct HttpMetrics {
    routes: [OnceLock<&'static str>; MAX_ROUTES],
    requests: [[OnceLock<Counter>; 16]; MAX_ROUTES],
    durations: [OnceLock<Histogram>; MAX_ROUTES],
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpMetrics {
    pub fn new() -> Self {
        HttpMetrics {
            routes: std::array::from_fn(|_| OnceLock::new()),
            requests: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            durations: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The slot of a route label, claimed on first use.
    fn slot(&self, label: &'static str) -> Option<usize> {
        for (i, slot) in self.routes.iter().enumerate() {
            match slot.get() {
                Some(l) if *l == label => return Some(i),
                Some(_) => continue,
                None => {
                    let claimed = *slot.get_or_init(|| label);
                    if claimed == label {
                        return Some(i);
                    }
                }
            }
        }
        None
    }

    /// Registers every status of the route labelled `label` at 0, and its
    /// latency histogram, so that each series exists before its first
    /// request (`rate()` misses a series' first increment).
    pub fn prime(&self, label: &'static str) {
        let Some(route) = self.slot(label) else {
            return;
        };
        for (s, status) in STATUS_LABELS.iter().enumerate() {
            self.requests[route][s].get_or_init(
                || metrics::counter!(HTTP_REQUESTS, "route" => label, "status" => *status),
            );
        }
        self.durations[route].get_or_init(|| metrics::histogram!(HTTP_DURATION, "route" => label));
    }

    /// Records one answered request of the route labelled `label`.
    pub fn record(&self, label: &'static str, status: u16, seconds: f64) {
        let Some(route) = self.slot(label) else {
            return;
        };
        let s = STATUSES
            .iter()
            .position(|&c| c == status)
            .unwrap_or(STATUSES.len() - 1);
        self.requests[route][s]
            .get_or_init(
                || metrics::counter!(HTTP_REQUESTS, "route" => label, "status" => STATUS_LABELS[s]),
            )
            .increment(1);
        self.durations[route]
            .get_or_init(|| metrics::histogram!(HTTP_DURATION, "route" => label))
            .record(seconds);
    }
}

/// Why a page was read from the store: the `reason` label of
/// [`PAGE_READS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageRead {
    /// No reading of the page was kept for today: the answer waited.
    First,
    /// The kept reading missed a batch that had already left memory: the
    /// answer waited.
    Behind,
    /// The kept reading outlived its time to live and was read again in
    /// the background (the answer did not wait).
    Refresh,
}

/// Handles for [`PAGE_READS`], registered once.
pub struct PageReadCounters {
    by_reason: [Counter; 3],
}

impl PageReadCounters {
    pub fn new() -> Self {
        PageReadCounters {
            by_reason: ["first", "behind", "refresh"]
                .map(|r| metrics::counter!(PAGE_READS, "reason" => r)),
        }
    }

    /// Counts `n` pages read for `reason`.
    pub fn record(&self, reason: PageRead, n: u64) {
        self.by_reason[reason as usize].increment(n);
    }
}

impl Default for PageReadCounters {
    fn default() -> Self {
        Self::new()
    }
}

/// Which route made a store call: the `route` label of [`STORE_READS`].
/// `luot_page_reads_total{reason}` says why a page was read; this says
/// who asked, for every kind of read (series, top lists too), so that
/// what a route costs the store shows beside its requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadRoute {
    /// The answering beacon (`POST /hit?answer`), and busuanzi's is
    /// [`ReadRoute::Busuanzi`].
    Hit,
    Counters,
    Series,
    Top,
    Badge,
    Widget,
    Dashboard,
    Busuanzi,
    Breakdown,
    /// Kept page readings read again in the background.
    Refresh,
    /// `GET /api/v1/sites/{site}/pages`: a listing page's many pages.
    Pages,
}

impl ReadRoute {
    pub const ALL: [ReadRoute; 11] = [
        ReadRoute::Hit,
        ReadRoute::Counters,
        ReadRoute::Series,
        ReadRoute::Top,
        ReadRoute::Badge,
        ReadRoute::Widget,
        ReadRoute::Dashboard,
        ReadRoute::Busuanzi,
        ReadRoute::Breakdown,
        ReadRoute::Refresh,
        ReadRoute::Pages,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ReadRoute::Hit => "hit",
            ReadRoute::Counters => "counters",
            ReadRoute::Series => "series",
            ReadRoute::Top => "top",
            ReadRoute::Badge => "badge",
            ReadRoute::Widget => "widget",
            ReadRoute::Dashboard => "dashboard",
            ReadRoute::Busuanzi => "busuanzi",
            ReadRoute::Breakdown => "breakdown",
            ReadRoute::Refresh => "refresh",
            ReadRoute::Pages => "pages",
        }
    }
}

/// Handles for [`STORE_READS`], every label registered (at 0) at once.
pub struct StoreReadCounters {
    by_route: [Counter; ReadRoute::ALL.len()],
}

impl StoreReadCounters {
    pub fn new() -> Self {
        StoreReadCounters {
            by_route: ReadRoute::ALL.map(|r| metrics::counter!(STORE_READS, "route" => r.label())),
        }
    }

    /// Counts one store call made for `route`.
    pub fn record(&self, route: ReadRoute) {
        self.by_route[route as usize].increment(1);
    }
}

impl Default for StoreReadCounters {
    fn default() -> Self {
        Self::new()
    }
}

/// Sets the build info gauge.
pub fn build_info(store: &'static str) {
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "store" => store).set(1.0);
}
