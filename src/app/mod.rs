//! Wiring: builds the store, the sites and the shared state, binds the
//! listeners, spawns the flusher and the servers, and shuts down in order —
//! not ready, stop accepting, drain connections, final flush — within the
//! grace period.
//!
//! Only this module spawns long-lived tasks. [`run`] takes the shutdown
//! signal as a future so tests (and `main`) decide when it stops.
//!
//! The top of the stack: may use every module, and with `store` is the only
//! one that names a concrete store (it opens the configured one and hands
//! the rest a `store::AnyStore`, which they use through the `Store` trait).

use std::collections::BTreeSet;
use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::count::visitor::{Identity, VID_KEY_NAME, salt_name};
use crate::flush::Flusher;
use crate::flush::wal::{Wal, WalError};
use crate::http::{self, State};
use crate::ingest::bots::BotDetector;
use crate::metrics::{self as m, HitCounters};
use crate::period::{DayNumber, date_of_number, day_number};
use crate::read::Reader;
use crate::site::{SiteTable, Sites};
use crate::store::{AnyStore, EmbeddedStore, PeriodKey, RedisStore, Scope, Store, StoreError};

/// How often idle clients are dropped from the rate limiters.
const LIMITER_PRUNE: Duration = Duration::from_secs(5);

/// How often the daily salts are checked (a new day may need one).
const SALT_REFRESH: Duration = Duration::from_secs(60);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {0} is in use by another luot process")]
    DataDirLocked(PathBuf),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("write-ahead file: {0}")]
    Wal(#[from] WalError),
    #[error("bot list: {0}")]
    Bots(#[from] crate::ingest::bots::BotsError),
    #[error("source list: {0}")]
    Sources(#[from] crate::ingest::classify::ClassifyError),
}

/// The addresses the service listens on (useful when configured with port 0).
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub public: SocketAddr,
    pub admin: SocketAddr,
}

/// How a run ended.
#[derive(Clone, Copy, Debug)]
pub struct Stopped {
    /// Every connection closed within the grace period.
    pub drained: bool,
    /// Every counted hit reached the store.
    pub flushed: bool,
}

/// The lock that keeps two processes out of one data directory. Held for
/// the life of the run; released when dropped (or when the process dies).
pub struct DataDirLock {
    _file: File,
}

/// Creates `dir` and locks it.
///
/// # Errors
/// [`AppError::DataDir`] or [`AppError::DataDirLocked`].
pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, AppError> {
    let io = |source| AppError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(AppError::DataDirLocked(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// The producer id of this data directory: made once, kept in the
/// directory, so batches replayed after a restart keep their identity.
///
/// # Errors
/// [`AppError::DataDir`] when the file cannot be read or written.
pub fn producer_id(dir: &Path) -> Result<Arc<str>, AppError> {
    let path = dir.join("producer-id");
    let io = |source| AppError::DataDir {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if is_producer_id(text.trim()) => return Ok(Arc::from(text.trim())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let id: String = random_bytes::<8>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let tmp = dir.join("producer-id.tmp");
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(id.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(Arc::from(id.as_str()))
}

fn is_producer_id(text: &str) -> bool {
    text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes
}

/// Re-reads the configuration and applies what a reload can change: the
/// sites, `[counting]` and `[retention]` (the flusher and imports take the
/// latter from the swapped site table). `[server]`, `[limits]` and
/// `[store]` apply only at a restart; a change to them is named in the
/// log. `running` is the configuration in force: it takes the applied
/// sections, so that each reload is compared with what runs now, not with
/// what started.
async fn apply_reload(
    reload: &Reload,
    running: &mut Config,
    store: &AnyStore,
    sites: &Sites,
    identity: &Identity,
    producer: &str,
) {
    let new = match reload() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "configuration reload refused; the running configuration stays");
            return;
        }
    };
    let restart_only = restart_only_changes(running, &new);
    if !restart_only.is_empty() {
        tracing::warn!(
            sections = %restart_only.join(", "),
            "these sections change only at a restart; their running values stay until then"
        );
    }
    if new.retention != running.retention {
        tracing::info!(
            from = ?running.retention,
            to = ?new.retention,
            "[retention] reloaded: the next batches and imports expire by it"
        );
    }
    if new.counting.online_window != running.counting.online_window {
        tracing::info!(
            from = ?running.counting.online_window,
            to = ?new.counting.online_window,
            "[counting] online_window reloaded"
        );
    }
    // A new site's first sequence rises above anything this producer sent
    // for it before (it may have been declared in an earlier run).
    let mut first = std::collections::HashMap::new();
    let current = sites.snapshot();
    for site in &new.sites {
        if current.get(&site.id).is_none() {
            let mark = store
                .read(&site.id, &Scope::Site, &[PeriodKey::Total], producer)
                .await
                .map(|r| r.watermark)
                .unwrap_or(0);
            let clock = Timestamp::now().as_microsecond().max(0) as u64;
            first.insert(site.id.clone(), (mark + 1).max(clock));
        }
    }
    let table = sites.rebuilt(&new, |s| {
        first
            .get(&s.id)
            .copied()
            .unwrap_or_else(|| Timestamp::now().as_microsecond().max(0) as u64)
    });
    sites.swap(table);
    if let Err(e) = load_salts(store, sites, identity).await {
        tracing::warn!(error = %e, "loading the salts of reloaded sites failed; they are retried every minute");
    }
    tracing::info!(sites = new.sites.len(), "configuration reloaded");
    running.sites = new.sites;
    running.counting = new.counting;
    running.retention = new.retention;
}

/// The sections that differ between `running` and `new` and apply only at
/// a restart, by their names in the file.
fn restart_only_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    fn same<T: serde::Serialize>(a: &T, b: &T) -> bool {
        matches!(
            (serde_json::to_value(a), serde_json::to_value(b)),
            (Ok(a), Ok(b)) if a == b
        )
    }
    let mut changed = Vec::new();
    if !same(&running.server, &new.server) {
        changed.push("[server]");
    }
    if !same(&running.limits, &new.limits) {
        changed.push("[limits]");
    }
    if !same(&running.store, &new.store) {
        changed.push("[store]");
    }
    changed
}

/// Runs `work` on a thread of its own with its own single-threaded
/// runtime, the thread and the runtime's blocking threads (store writes,
/// the write-ahead file) at [`background_priority`]: the flusher's CPU work
/// (taking deltas, building batches, merging sketches, store writes) then
/// yields to the runtime that answers requests without starving. Resolves
/// to `work`'s output, or an error if the thread could not run it.
///
/// [`background_priority`]: crate::background::background_priority
fn spawn_background<T: Send + 'static>(
    name: &str,
    work: impl Future<Output = T> + Send + 'static,
) -> tokio::sync::oneshot::Receiver<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            crate::background::background_priority();
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_start(crate::background::background_priority)
                .build()
            {
                Ok(runtime) => {
                    let _ = tx.send(runtime.block_on(work));
                }
                Err(e) => tracing::error!(error = %e, "cannot start the flusher's runtime"),
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the flusher's thread");
    }
    rx
}

/// How often the metrics recorder folds histogram samples into buckets.
const METRICS_UPKEEP: Duration = Duration::from_millis(100);

/// Folds histogram samples (HTTP durations, one per request) into their
/// buckets every [`METRICS_UPKEEP`] on a thread of its own, until the
/// returned sender is dropped. The recorder keeps every sample until then:
/// without upkeep a process nobody scrapes grows by 8 bytes per request
/// (heaptrack: megabytes in a load run). Not on the flusher, whose
/// background class may leave it waiting while the core is busy; each run
/// folds ~0.1 s of samples, well under a millisecond.
fn spawn_upkeep(
    handle: metrics_exporter_prometheus::PrometheusHandle,
) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("luot-metrics".to_string())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                rx.recv_timeout(METRICS_UPKEEP)
            {
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the metrics upkeep thread");
    }
    tx
}

/// How long start-up waits for the store to answer.
const STARTUP_PATIENCE: Duration = Duration::from_secs(30);

/// Runs a start-up store operation, retrying while the store is away (a
/// container started next to its Redis), up to [`STARTUP_PATIENCE`].
async fn startup<T, F, Fut>(mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let give_up = Instant::now() + STARTUP_PATIENCE;
    let mut backoff = crate::flush::Backoff::new();
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retriable() && Instant::now() < give_up => {
                let pause = backoff.fail(Instant::now());
                tracing::warn!(error = %e, retry_in = ?pause, "the store does not answer yet");
                tokio::time::sleep(pause).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Loads the salts of every day that is yesterday, today or tomorrow in
/// some site's zone.
async fn load_salts(
    store: &AnyStore,
    sites: &Sites,
    identity: &Identity,
) -> Result<(), StoreError> {
    let now = Timestamp::now();
    let mut days: BTreeSet<DayNumber> = BTreeSet::new();
    for site in sites.snapshot().iter() {
        let today = day_number(site.calendar().day_of(now));
        days.extend([today.saturating_sub(1), today, today + 1]);
    }
    if days.iter().copied().eq(identity.salted_days()) {
        return Ok(());
    }
    let mut salts = Vec::with_capacity(days.len());
    for day in days {
        let salt = store
            .secret(&salt_name(date_of_number(day)), random_bytes())
            .await?;
        salts.push((day, salt));
    }
    identity.install_salts(&salts);
    Ok(())
}

/// Runs the service until `shutdown` resolves. `on_bound` is told the
/// listening addresses once both listeners are bound.
///
/// # Errors
/// An [`AppError`] when the service cannot start. Once it has started, it
/// always stops cleanly: a store that does not answer at shutdown is logged
/// and reported in [`Stopped`], not an error.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    on_bound: impl FnOnce(Bound),
) -> Result<Stopped, AppError> {
    run_reloadable(config, None, shutdown, on_bound).await
}

/// Where a reload reads the configuration again (the same file and
/// environment as at start).
pub type Reload = Box<dyn Fn() -> Result<Config, crate::config::ConfigError> + Send + Sync>;

/// [`run`], and on SIGHUP re-reads the configuration with `reload`: sites
/// added, removed or changed take effect without a restart and without
/// losing a hit; an invalid configuration is refused with a log line and
/// the running one kept. Listener addresses, the data directory and the
/// store need a restart.
///
/// # Errors
/// As [`run`].
pub async fn run_reloadable(
    config: Config,
    reload: Option<Reload>,
    shutdown: impl Future<Output = ()>,
    on_bound: impl FnOnce(Bound),
) -> Result<Stopped, AppError> {
    let server = &config.server;
    let _lock = lock_data_dir(&server.data_dir)?;
    let producer = producer_id(&server.data_dir)?;
    let (store, wal) = open_store(&config).await?;
    let prometheus = m::install();
    m::build_info(store.kind());
    let _upkeep = spawn_upkeep(prometheus.clone());

    let vid_key = startup(|| store.secret(VID_KEY_NAME, random_bytes())).await?;
    let identity = Arc::new(Identity::new(&vid_key));
    let sites = build_sites(&config, &store, &producer).await?;
    startup(|| load_salts(&store, &sites, &identity)).await?;
    let wal = wal.map(|(wal, pending)| {
        replay_write_ahead(&sites, &producer, pending);
        wal
    });

    let mut flusher = Flusher::new(
        store.clone(),
        Arc::clone(&sites),
        Arc::clone(&producer),
        wal,
    );
    // The first pass installs every site's reading, so the first answer is
    // not stale.
    flusher.pass().await;

    let (public, admin, bound) = bind_listeners(server).await?;
    let (import_tx, import_rx) = tokio::sync::mpsc::channel(16);
    let state = build_state(
        &config, &store, &sites, &identity, &producer, prometheus, import_tx,
    )?;

    let (flush_stop, flush_task) = spawn_flusher(
        flusher,
        store.clone(),
        Arc::clone(&sites),
        Arc::clone(&identity),
        import_rx,
        server.flush_interval,
    );
    let (refresh_stop, refresh_task) = spawn_refresher(&state);
    let (servers_stop, public_task, admin_task) = spawn_servers(&config, &state, public, admin);
    let reload_task = reload.map(|reload| {
        spawn_reloader(
            reload,
            config.clone(),
            store.clone(),
            sites,
            identity,
            producer.clone(),
        )
    });

    http::set_ready(&state, true);
    tracing::info!(public = %bound.public, admin = %bound.admin, store = store.kind(), producer = %producer, "luot listening");
    on_bound(bound);

    shutdown.await;
    let tasks = Tasks {
        reload: reload_task,
        servers_stop,
        public: public_task,
        admin: admin_task,
        refresh_stop,
        refresh: refresh_task,
        flush_stop,
        flush: flush_task,
    };
    Ok(shut_down(tasks, &state, server.shutdown_grace).await)
}

/// Opens the configured store: the embedded file, or Redis with the
/// write-ahead file in front of it and the batches that file holds
/// unacknowledged (to be replayed once the sites exist).
async fn open_store(
    config: &Config,
) -> Result<(AnyStore, Option<(Wal, Vec<crate::store::SiteBatch>)>), AppError> {
    let data_dir = &config.server.data_dir;
    if config.store.redis_url.is_empty() {
        // One local ACID file: a batch is durable once applied, so no
        // write-ahead file is needed in front of it.
        return Ok((AnyStore::Embedded(EmbeddedStore::open(data_dir)?), None));
    }
    let store = AnyStore::Redis(RedisStore::connect(&config.store.redis_url).await?);
    let (wal, recovery) = Wal::open(data_dir)?;
    if recovery.skipped_bytes > 0 {
        tracing::warn!(
            skipped_bytes = recovery.skipped_bytes,
            "the write-ahead file had a damaged tail; it was skipped"
        );
    }
    Ok((store, Some((wal, recovery.pending))))
}

/// Builds the declared sites, each starting its batch sequence above
/// anything this producer sent before.
async fn build_sites(
    config: &Config,
    store: &AnyStore,
    producer: &str,
) -> Result<Arc<Sites>, AppError> {
    // A batch's sequence must rise above anything this producer sent
    // before, even if the store forgot nothing: start from the store's
    // watermark, and from the clock for good measure.
    let mut first_seqs = std::collections::HashMap::new();
    for site in &config.sites {
        let r =
            startup(|| store.read(&site.id, &Scope::Site, &[PeriodKey::Total], producer)).await?;
        let clock_seq = Timestamp::now().as_microsecond().max(0) as u64;
        first_seqs.insert(site.id.clone(), (r.watermark + 1).max(clock_seq));
    }
    Ok(Arc::new(Sites::new(SiteTable::new(config, |s| {
        first_seqs.get(&s.id).copied().unwrap_or(1)
    }))))
}

/// Hands the write-ahead file's unacknowledged batches to their sites'
/// ledgers, to be sent again with their original ids (the store's
/// watermark refuses any it already applied). A batch of a site no
/// longer declared, or of another producer, is dropped with a warning.
fn replay_write_ahead(sites: &Sites, producer: &str, pending: Vec<crate::store::SiteBatch>) {
    let table = sites.snapshot();
    let mut replayed = 0usize;
    for batch in pending {
        match table.get(&batch.site) {
            Some(site) if *batch.id.producer == *producer => {
                site.adopt(batch);
                replayed += 1;
            }
            _ => tracing::warn!(
                site = %batch.site,
                seq = batch.id.seq,
                "a write-ahead batch names a site no longer declared (or another producer); it is dropped"
            ),
        }
    }
    if replayed > 0 {
        tracing::info!(
            batches = replayed,
            "replaying unacknowledged batches from the write-ahead file"
        );
    }
}

/// Binds the public and the admin listener, and reads back the addresses
/// they got (a configured port 0 picks a free one).
async fn bind_listeners(
    server: &crate::config::ServerConfig,
) -> Result<(TcpListener, TcpListener, Bound), AppError> {
    let bind_error = |addr| move |source| AppError::Bind { addr, source };
    let public = TcpListener::bind(server.listen)
        .await
        .map_err(bind_error(server.listen))?;
    let admin = TcpListener::bind(server.admin_listen)
        .await
        .map_err(bind_error(server.admin_listen))?;
    let bound = Bound {
        public: public.local_addr().map_err(bind_error(server.listen))?,
        admin: admin
            .local_addr()
            .map_err(bind_error(server.admin_listen))?,
    };
    Ok((public, admin, bound))
}

/// Builds the state every request handler shares: the sites, the reader,
/// the bot list, the limits and the import queue's sending end.
fn build_state(
    config: &Config,
    store: &AnyStore,
    sites: &Arc<Sites>,
    identity: &Arc<Identity>,
    producer: &Arc<str>,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    imports: crate::flush::import::ImportQueue,
) -> Result<Arc<State>, AppError> {
    let server = &config.server;
    let bots = BotDetector::new()?;
    tracing::info!(patterns = bots.patterns(), "bot list compiled");
    Ok(Arc::new(State {
        sites: Arc::clone(sites),
        identity: Arc::clone(identity),
        store: store.clone(),
        reader: Reader::new(store.clone(), Arc::clone(producer)),
        counters: HitCounters::new(),
        http_metrics: crate::http::route_metrics(),
        bots,
        classifier: crate::ingest::classify::Classifier::new()?,
        listing_answers: Default::default(),
        trusted_proxies: server.trusted_proxies.clone(),
        // Checked by `Config::validate`; empty is none.
        country_header: hyper::header::HeaderName::from_bytes(server.country_header.as_bytes())
            .ok(),
        max_body_bytes: config.limits.max_body_bytes,
        max_header_bytes: config.limits.max_header_bytes,
        max_headers: config.limits.max_headers,
        metrics_token: Some(server.metrics_token.clone()).filter(|t| !t.is_empty()),
        prometheus,
        imports: Some(imports),
        ready: AtomicBool::new(false),
    }))
}

/// Starts the flusher on its background thread ([`spawn_background`]):
/// one pass every `interval`, imports as they come, and the final drain
/// once it is told the deadline. Returns the sender of that deadline and
/// the receiver of the drain's result (whether every hit was flushed).
fn spawn_flusher(
    flusher: Flusher<AnyStore>,
    store: AnyStore,
    sites: Arc<Sites>,
    identity: Arc<Identity>,
    imports: tokio::sync::mpsc::Receiver<crate::flush::import::ImportJob>,
    interval: Duration,
) -> (
    watch::Sender<Option<Instant>>,
    tokio::sync::oneshot::Receiver<bool>,
) {
    let (stop_tx, stop_rx) = watch::channel(None::<Instant>);
    let task = spawn_background(
        "luot-flush",
        flush_until_stopped(flusher, store, sites, identity, imports, stop_rx, interval),
    );
    (stop_tx, task)
}

/// The flusher's loop: a pass and the sites' upkeep each `interval`,
/// imports between passes; when `stop` names a deadline, the final drain,
/// whose result it returns.
async fn flush_until_stopped(
    mut flusher: Flusher<AnyStore>,
    store: AnyStore,
    sites: Arc<Sites>,
    identity: Arc<Identity>,
    mut imports: tokio::sync::mpsc::Receiver<crate::flush::import::ImportJob>,
    mut stop: watch::Receiver<Option<Instant>>,
    interval: Duration,
) -> bool {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_salt = Instant::now();
    let mut last_prune = Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                flusher.pass().await;
                let prune = last_prune.elapsed() >= LIMITER_PRUNE;
                tend_sites(&sites, Timestamp::now(), prune);
                if prune {
                    last_prune = Instant::now();
                }
                if last_salt.elapsed() >= SALT_REFRESH {
                    last_salt = Instant::now();
                    if let Err(e) = load_salts(&store, &sites, &identity).await {
                        tracing::warn!(error = %e, "loading the daily salts failed");
                    }
                }
            }
            Some(job) = imports.recv() => {
                flusher.apply_import(job).await;
            }
            changed = stop.changed() => {
                let deadline = match (changed, *stop.borrow()) {
                    (Ok(()), Some(deadline)) => deadline,
                    _ => Instant::now() + Duration::from_secs(1),
                };
                return flusher.drain(deadline).await;
            }
        }
    }
}

/// The sites' upkeep after each flush pass: recount and publish who is
/// online, rotate due dedupe filters, and (when `prune`) drop idle
/// clients from the rate limiters.
fn tend_sites(sites: &Sites, now: Timestamp, prune: bool) {
    for site in sites.snapshot().iter() {
        site.recount_online(now);
        site.metrics.online.set(site.online_now(now) as f64);
        if let Some(filter) = &site.dedupe {
            filter.rotate_if_due(now.as_millisecond().max(0) as u64);
        }
        if prune {
            site.limiter.prune();
            site.read_limiter.prune();
        }
        site.metrics.limiter_clients.set(site.limiter.len() as f64);
    }
}

/// Starts the page refresher ([`Reader::refresh_until`]), the one task
/// that reads again the page readings requests queue. Returns what stops
/// it and its handle.
fn spawn_refresher(
    state: &Arc<State>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let state = Arc::clone(state);
    let task = tokio::spawn(async move {
        let stop = async {
            let _ = stop_rx.await;
        };
        state.reader.refresh_until(stop).await;
    });
    (stop_tx, task)
}

/// Starts the public and the admin server. Returns what stops both and
/// their handles, which resolve once every connection has ended (to
/// whether all closed by themselves within the drain).
fn spawn_servers(
    config: &Config,
    state: &Arc<State>,
    public: TcpListener,
    admin: TcpListener,
) -> (
    watch::Sender<bool>,
    tokio::task::JoinHandle<bool>,
    tokio::task::JoinHandle<bool>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let drain = connection_drain(config.server.shutdown_grace);
    let public_task = {
        let state = Arc::clone(state);
        tokio::spawn(http::server::serve(
            public,
            config.limits.clone(),
            move |req, peer| http::handle_public(Arc::clone(&state), req, peer),
            stop_rx.clone(),
            drain,
            true,
        ))
    };
    let admin_task = {
        let state = Arc::clone(state);
        tokio::spawn(http::server::serve(
            admin,
            config.limits.clone(),
            move |req, _peer| http::handle_admin(Arc::clone(&state), req),
            stop_rx,
            drain,
            false,
        ))
    };
    (stop_tx, public_task, admin_task)
}

/// Starts the reloader: on each SIGHUP, [`apply_reload`] with `running`,
/// the configuration in force. Aborted at shutdown (a reload half done
/// leaves either table in place, both whole).
fn spawn_reloader(
    reload: Reload,
    mut running: Config,
    store: AnyStore,
    sites: Arc<Sites>,
    identity: Arc<Identity>,
    producer: Arc<str>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reloads are off");
            return;
        };
        while hangups.recv().await.is_some() {
            apply_reload(&reload, &mut running, &store, &sites, &identity, &producer).await;
        }
    })
}

/// What a run spawned, with what stops each, for [`shut_down`].
struct Tasks {
    reload: Option<tokio::task::JoinHandle<()>>,
    servers_stop: watch::Sender<bool>,
    public: tokio::task::JoinHandle<bool>,
    admin: tokio::task::JoinHandle<bool>,
    refresh_stop: tokio::sync::oneshot::Sender<()>,
    refresh: tokio::task::JoinHandle<()>,
    flush_stop: watch::Sender<Option<Instant>>,
    flush: tokio::sync::oneshot::Receiver<bool>,
}

/// Stops what the run spawned, in order, within `grace`: the reloader;
/// readiness; the servers (they stop accepting and return once every
/// connection has ended, so no hit is counted after the final take); the
/// refresher (no request is left to queue a refresh); and the final flush.
async fn shut_down(tasks: Tasks, state: &State, grace: Duration) -> Stopped {
    if let Some(task) = tasks.reload {
        task.abort();
    }
    let deadline = Instant::now() + grace;
    tracing::info!(grace = ?grace, "shutting down: not ready, draining connections");
    http::set_ready(state, false);
    let _ = tasks.servers_stop.send(true);
    // Both servers return once every connection is gone (those still open
    // after the drain are reset), so no hit is counted after the final take.
    let drained = tasks.public.await.unwrap_or(false);
    let _ = tasks.admin.await;
    let _ = tasks.refresh_stop.send(());
    let _ = tasks.refresh.await;
    let _ = tasks.flush_stop.send(Some(deadline));
    let flushed = tasks.flush.await.unwrap_or(false);
    // (The flusher ran on its own thread; it has returned.)
    if flushed {
        tracing::info!(drained, "stopped; every counted hit reached the store");
    } else {
        tracing::warn!(
            drained,
            "stopped; the store did not take every pending hit before the grace period ended"
        );
    }
    Stopped { drained, flushed }
}

/// How much of `shutdown_grace` open connections get to finish before
/// they are reset: half. The rest is the final flush's, so a client that
/// never reads its answers (or any slow request) cannot take the time the
/// store needs to receive every pending hit.
fn connection_drain(grace: Duration) -> Duration {
    grace / 2
}
