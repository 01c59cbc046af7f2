//! The embedded store: one ACID file (redb) under `data_dir`, for a single
//! instance with no other server. Each batch is one write transaction that
//! checks and advances the producer's watermark, so a batch is applied at
//! most once even if it is replayed.
//!
//! Breakdowns are one redb entry per counter (scope, dimension, day),
//! holding how many values it has and its expiry, and one per value,
//! keyed by the counter and the value, so a scope's dimension over days is
//! one key range and the bound check two lookups; expired counters are
//! pruned whole through an expiry index, a bounded amount per batch.
//!
//! Titles are one entry per page. Each rolling window keeps its buckets'
//! page hits, its sum per page and that sum's ranking (an index ordered
//! by hits), all changed at apply: a bucket that leaves the window is
//! taken out of the sum once, so `top` reads the first entries of the
//! ranking.
//!
//! redb is synchronous; every call runs on tokio's blocking pool so the
//! runtime's workers never wait on the disk.

use std::path::Path;
use std::sync::Arc;

use jiff::Timestamp;
use redb::{Database, ReadableTable, TableDefinition};

use super::{
    Applied, BreakdownIncrement, BreakdownReading, Dimension, Increment, Members, OTHER, PeriodKey,
    Reading, Record, Scope, SiteBatch, SketchKey, Store, StoreError, TOP_KEPT, Window,
};
use crate::sketch::{HLL_REGISTERS, SketchUnion};

/// Counter rows: one per (site, scope), keyed by two 64-bit hashes (site,
/// then scope: the site's rows are one key range), holding every period's
/// counter of that scope (see [`Row`]). One row per scope makes a flush one
/// read and one write per page touched, with fixed-width keys that compare
/// as bytes; a first design with one string-keyed entry per (scope,
/// period) spent most of a flush comparing and validating key strings.
const ROWS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("rows");
/// Retention index of sketches: (expiry in Unix seconds, site, scope,
/// name) → (). A range scan from the start finds what has expired.
/// (Counter rows drop their expired periods when they are rewritten.)
const EXPIRY: TableDefinition<(i64, &str, &str, &str), ()> = TableDefinition::new("expiry");
/// Watermarks: (site, producer) → (last applied sequence, Unix seconds of
/// that batch).
const WATERMARKS: TableDefinition<(&str, &str), (u64, i64)> = TableDefinition::new("watermarks");
/// Each site's most-read pages per period, kept at every flush so that
/// `top` reads one value instead of every row of the site: (site hash,
/// period code) → a [`Ranking`] of at most [`TOP_KEPT`] pages.
const RANKINGS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("rankings");
/// When rankings expire: (expiry in Unix seconds, site hash, period code)
/// → (), pruned like the sketches' index.
const RANKING_EXPIRY: TableDefinition<(i64, u64, u32), ()> = TableDefinition::new("ranking_expiry");
/// Breakdown values: a counter's key ([`counter_key`]: the scope's row
/// key, the dimension, the day) followed by the value's bytes → hits. A
/// scope and dimension over days is one key range, and a counter's values
/// are one range within it.
const BREAKDOWN_VALUES: TableDefinition<&[u8], u64> = TableDefinition::new("breakdown_values");
/// Breakdown counters: counter key → (how many distinct values it holds,
/// [`OTHER`] not counted; expiry in Unix seconds, 0 for never). Makes the
/// bound check one lookup, and a counter's expiry one value.
const BREAKDOWN_COUNTERS: TableDefinition<&[u8; COUNTER_KEY_LEN], (u32, i64)> =
    TableDefinition::new("breakdown_counters");
/// When breakdown counters expire: (expiry in Unix seconds, counter key)
/// → (), pruned like the sketches' index.
const BREAKDOWN_EXPIRY: TableDefinition<(i64, &[u8; COUNTER_KEY_LEN]), ()> =
    TableDefinition::new("breakdown_expiry");
/// A breakdown counter's key: the 16-byte row key of its scope (as
/// [`find_row`] resolves it, so scopes whose hashes collide keep apart),
/// the dimension's index, the day number big-endian (days sort in time).
const COUNTER_KEY_LEN: usize = 21;
/// Page titles: (site, page) → the last title seen, kept like the
/// page's total (no expiry).
const TITLES: TableDefinition<(&str, &str), &str> = TableDefinition::new("titles");
/// Rolling windows ([`Window`], by its index in [`Window::ALL`]): the page
/// hits of the batches applied in one bucket, (site, window, bucket
/// index, page) → hits, kept until the bucket leaves the window.
const WINDOW_BUCKETS: TableDefinition<(&str, u8, i64, &str), u64> =
    TableDefinition::new("window_buckets");
/// A window's sum of its buckets: (site, window, page) → hits, pages with
/// hits only.
const WINDOW_SUMS: TableDefinition<(&str, u8, &str), u64> = TableDefinition::new("window_sums");
/// The same sums ordered for `top`: (site, window, `u64::MAX - hits`,
/// page) → (), so the most read are the first of the window's range.
const WINDOW_RANKS: TableDefinition<(&str, u8, u64, &str), ()> =
    TableDefinition::new("window_ranks");
/// The bucket each window's sum was last moved to: (site, window) →
/// bucket index.
const WINDOW_MARKS: TableDefinition<(&str, u8), i64> = TableDefinition::new("window_marks");
/// Each site's record day ([`Record`]): site → (hits, day number), raised
/// in the transaction that applies a batch (see [`raise_record`]).
const RECORDS: TableDefinition<&str, (u64, u32)> = TableDefinition::new("records");
/// Shared secrets (salts): name → 32 bytes.
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
/// Visitor sketches: (site, sketch name) → an encoded `SketchUnion`. Only
/// days and all time: one embedded instance counts `online` itself.
const SKETCHES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("sketches");
/// The scope recorded in the expiry index for a sketch (pages start with
/// `/` and the site is empty, so this names neither).
const SKETCH_SCOPE: &str = "#v";
/// Salts older than this many days before a new one are deleted.
const SALT_KEEP_DAYS: i64 = 3;

/// A 64-bit hash of a site id or a scope, for row keys. SipHash with a
/// fixed key, so keys are stable across runs; with 100,000 pages the chance
/// of any two colliding is about 3 in 10^10, and two that do keep apart
/// ([`find_row`]).
fn key_hash(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher13::new_with_keys(0x6c75_6f74, 0x726f_7773);
    h.write(bytes);
    h.finish()
}

fn row_key(site_hash: u64, scope_hash: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&site_hash.to_be_bytes());
    key[8..].copy_from_slice(&scope_hash.to_be_bytes());
    key
}

/// Most row keys tried for one scope. A scope's row is at its hash, or,
/// when another scope's row holds that key (two hashes collide), at the
/// next free key after it that holds no other scope (rows are never
/// removed, so a run of keys is never broken). With a real hash a second
/// probe is already a one-in-10^10 event; the bound only stops a corrupt
/// file from making a read walk the table.
const MAX_PROBES: u64 = 16;

/// The key and the row of `scope` (of the site `site_hash`), or the key
/// its row goes at and `None` when it has none: the first key from the
/// scope's hash on that is free or holds this very scope (checked against
/// the scope the row stores, so colliding pages never merge).
///
/// # Errors
/// [`StoreError::Corrupt`] for an undecodable row or when
/// [`MAX_PROBES`] keys all hold other scopes.
fn find_row(
    rows: &impl ReadableTable<&'static [u8; 16], &'static [u8]>,
    site_hash: u64,
    scope: &str,
    scope_hash: u64,
) -> Result<([u8; 16], Option<Row>), StoreError> {
    for probe in 0..MAX_PROBES {
        let key = row_key(site_hash, scope_hash.wrapping_add(probe));
        let Some(v) = rows.get(&key).map_err(unavailable)? else {
            return Ok((key, None));
        };
        let row = Row::decode(v.value())
            .ok_or_else(|| StoreError::Corrupt(format!("counter row of {scope:?}")))?;
        if row.scope == scope {
            return Ok((key, Some(row)));
        }
    }
    Err(StoreError::Corrupt(format!(
        "{MAX_PROBES} counter rows share the hash of {scope:?}"
    )))
}

/// A period as a number: its kind in the top bits, its (first) day below.
fn period_code(period: &PeriodKey) -> u32 {
    use crate::period::day_number;
    match period {
        PeriodKey::Day(d) => (1 << 28) | day_number(*d),
        PeriodKey::Week(d) => (2 << 28) | day_number(*d),
        PeriodKey::Month(d) => (3 << 28) | day_number(*d),
        PeriodKey::Total => 4 << 28,
    }
}

/// Every counter of one scope: `(period code, hits, expiry)`, expiry 0 for
/// never. Encoded as a version byte, the scope (so rows can be listed by
/// page), then 20 bytes per counter.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    scope: String,
    entries: Vec<(u32, u64, i64)>,
}

const ROW_VERSION: u8 = 1;

impl Row {
    fn new(scope: &str) -> Self {
        Row {
            scope: scope.to_string(),
            entries: Vec::new(),
        }
    }

    fn add(&mut self, code: u32, hits: u64, expires_at: Option<Timestamp>) {
        let expires = expires_at.map_or(0, |t| t.as_second().max(1));
        match self.entries.iter_mut().find(|e| e.0 == code) {
            Some(e) => {
                e.1 = e.1.saturating_add(hits);
                e.2 = expires;
            }
            None => self.entries.push((code, hits, expires)),
        }
    }

    fn get(&self, code: u32, now: i64) -> u64 {
        self.entries
            .iter()
            .find(|e| e.0 == code && (e.2 == 0 || e.2 > now))
            .map_or(0, |e| e.1)
    }

    fn forget_expired(&mut self, now: i64) {
        self.entries.retain(|e| e.2 == 0 || e.2 > now);
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(ROW_VERSION);
        out.extend_from_slice(&(self.scope.len() as u32).to_le_bytes());
        out.extend_from_slice(self.scope.as_bytes());
        for (code, hits, expires) in &self.entries {
            out.extend_from_slice(&code.to_le_bytes());
            out.extend_from_slice(&hits.to_le_bytes());
            out.extend_from_slice(&expires.to_le_bytes());
        }
    }

    fn decode(bytes: &[u8]) -> Option<Row> {
        let (&version, rest) = bytes.split_first()?;
        if version != ROW_VERSION || rest.len() < 4 {
            return None;
        }
        let len = u32::from_le_bytes(rest[..4].try_into().ok()?) as usize;
        let rest = &rest[4..];
        let scope = std::str::from_utf8(rest.get(..len)?).ok()?.to_string();
        let body = &rest[len..];
        if body.len() % 20 != 0 {
            return None;
        }
        let entries = body
            .chunks_exact(20)
            .map(|c| {
                (
                    u32::from_le_bytes(c[..4].try_into().expect("4 bytes")),
                    u64::from_le_bytes(c[4..12].try_into().expect("8 bytes")),
                    i64::from_le_bytes(c[12..].try_into().expect("8 bytes")),
                )
            })
            .collect();
        Some(Row { scope, entries })
    }
}

/// The most-read pages of one site and period, most read first (ties by
/// page), at most [`TOP_KEPT`], with the period's expiry (0: never).
///
/// Kept exactly at each flush: counters only grow (until their period
/// expires, and the ranking with it), so a page can only enter when the
/// flush that adds to it offers its new value ([`Ranking::offer`]).
#[derive(Debug, Default, PartialEq, Eq)]
struct Ranking {
    expires: i64,
    pages: Vec<(u64, String)>,
}

impl Ranking {
    /// Takes in `page` at `hits` if it ranks among the first
    /// [`TOP_KEPT`]. O(1) for a page that does not; else O(`TOP_KEPT`).
    fn offer(&mut self, page: &str, hits: u64) {
        let worse = |(h, p): (u64, &str), (lh, lp): (u64, &str)| h < lh || (h == lh && p > lp);
        if self.pages.len() >= TOP_KEPT
            && let Some((lh, lp)) = self.pages.last()
            && worse((hits, page), (*lh, lp))
        {
            // A kept page is at least as good as the last, and its value
            // never drops: this one is not kept.
            return;
        }
        match self.pages.iter_mut().find(|(_, p)| p == page) {
            Some(entry) => entry.0 = hits,
            None => self.pages.push((hits, page.to_string())),
        }
        self.pages
            .sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        self.pages.truncate(TOP_KEPT);
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.pages.len() * 24);
        out.extend_from_slice(&self.expires.to_le_bytes());
        for (hits, page) in &self.pages {
            out.extend_from_slice(&hits.to_le_bytes());
            out.extend_from_slice(&(page.len() as u32).to_le_bytes());
            out.extend_from_slice(page.as_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Ranking> {
        let expires = i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let mut rest = &bytes[8..];
        let mut pages = Vec::new();
        while !rest.is_empty() {
            let hits = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
            let len = u32::from_le_bytes(rest.get(8..12)?.try_into().ok()?) as usize;
            let page = std::str::from_utf8(rest.get(12..12 + len)?).ok()?;
            pages.push((hits, page.to_string()));
            rest = &rest[12 + len..];
        }
        Some(Ranking { expires, pages })
    }
}

/// Offers the new values of a page's counters (`row`, just updated for
/// the periods `codes`) to the site's rankings, loaded once per batch.
fn rank(
    rankings: &mut std::collections::HashMap<u32, Ranking>,
    table: &redb::Table<(u64, u32), &[u8]>,
    site_hash: u64,
    row: &Row,
    codes: impl Iterator<Item = u32>,
    now: i64,
) -> Result<(), StoreError> {
    for code in codes {
        let Some(&(_, hits, expires)) = row
            .entries
            .iter()
            .find(|e| e.0 == code && (e.2 == 0 || e.2 > now))
        else {
            continue;
        };
        let ranking = match rankings.entry(code) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let kept = match table.get((site_hash, code)).map_err(unavailable)? {
                    Some(bytes) => Ranking::decode(bytes.value())
                        .ok_or_else(|| StoreError::Corrupt("ranking".into()))?,
                    None => Ranking::default(),
                };
                v.insert(kept)
            }
        };
        ranking.expires = if expires == 0 || ranking.expires == 0 && ranking.pages.is_empty() {
            expires
        } else {
            ranking.expires.max(expires)
        };
        ranking.offer(&row.scope, hits);
    }
    Ok(())
}

/// Writes the rankings a batch changed, indexing the expiry of each.
fn store_rankings(
    rankings: std::collections::HashMap<u32, Ranking>,
    table: &mut redb::Table<(u64, u32), &[u8]>,
    expiry: &mut redb::Table<(i64, u64, u32), ()>,
    site_hash: u64,
) -> Result<(), StoreError> {
    for (code, ranking) in rankings {
        let old = table
            .insert((site_hash, code), ranking.encode().as_slice())
            .map_err(unavailable)?
            .and_then(|v| Ranking::decode(v.value()).map(|r| r.expires));
        if old != Some(ranking.expires) {
            if let Some(at) = old.filter(|at| *at != 0) {
                expiry.remove((at, site_hash, code)).map_err(unavailable)?;
            }
            if ranking.expires != 0 {
                expiry
                    .insert((ranking.expires, site_hash, code), ())
                    .map_err(unavailable)?;
            }
        }
    }
    Ok(())
}

/// Deletes rankings whose period has expired, at most
/// [`PRUNE_PER_BATCH`] per call.
fn prune_rankings(
    table: &mut redb::Table<(u64, u32), &[u8]>,
    expiry: &mut redb::Table<(i64, u64, u32), ()>,
    now: i64,
) -> Result<(), StoreError> {
    let mut due = Vec::new();
    for entry in expiry.iter().map_err(unavailable)?.take(PRUNE_PER_BATCH) {
        let (key, _) = entry.map_err(unavailable)?;
        let (at, site, code) = key.value();
        if at > now {
            break;
        }
        due.push((at, site, code));
    }
    for (at, site, code) in due {
        table.remove((site, code)).map_err(unavailable)?;
        expiry.remove((at, site, code)).map_err(unavailable)?;
    }
    Ok(())
}

/// Builds every ranking from the rows (once, when a file written before
/// rankings were kept is opened).
fn build_rankings(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    let rows = tx.open_table(ROWS).map_err(unavailable)?;
    let mut table = tx.open_table(RANKINGS).map_err(unavailable)?;
    let mut expiry = tx.open_table(RANKING_EXPIRY).map_err(unavailable)?;
    let now = Timestamp::now().as_second();
    let mut by_site: std::collections::HashMap<u64, std::collections::HashMap<u32, Ranking>> =
        std::collections::HashMap::new();
    for entry in rows.iter().map_err(unavailable)? {
        let (k, v) = entry.map_err(unavailable)?;
        let site_hash = u64::from_be_bytes(k.value()[..8].try_into().expect("8 bytes"));
        let row =
            Row::decode(v.value()).ok_or_else(|| StoreError::Corrupt("counter row".into()))?;
        if row.scope.is_empty() {
            continue;
        }
        let codes: Vec<u32> = row.entries.iter().map(|e| e.0).collect();
        let rankings = by_site.entry(site_hash).or_default();
        rank(rankings, &table, site_hash, &row, codes.into_iter(), now)?;
    }
    for (site_hash, rankings) in by_site {
        store_rankings(rankings, &mut table, &mut expiry, site_hash)?;
    }
    Ok(())
}

/// How many expired counters one flush transaction deletes at most, so a
/// backlog of expiries never makes one flush slow.
const PRUNE_PER_BATCH: usize = 1_000;

/// redb's page cache. 4 MiB rather than 8: with glibc's mmap threshold
/// fixed (`src/main.rs`), RSS growth per page key went from 276–283 to
/// 162–170 bytes (load script's memory phase, 10,000 to 100,000 pages);
/// the flusher reads more of the file from the OS page cache, ~10 ms more
/// CPU a second at 10,000 pages flushed a second (BENCHMARKS.md).
const CACHE_BYTES: usize = 4 * 1024 * 1024;

/// The file name inside `data_dir`.
pub const FILE_NAME: &str = "luot.redb";

/// A handle to the embedded store; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    /// The hash of a scope in its row key: [`key_hash`], or a degenerate
    /// one in tests that make pages collide.
    scope_hash: fn(&[u8]) -> u64,
}

impl EmbeddedStore {
    /// Opens (or creates) the store file in `data_dir`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file cannot be opened (another
    /// process holds it, permissions), [`StoreError::Corrupt`] when redb
    /// cannot read it.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(FILE_NAME);
        // redb caches file pages in memory; the default cache (1 GiB)
        // would make the process's memory grow with the file. Counters are
        // read once per flush, so a small cache does.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::Storage(redb::StorageError::Corrupted(m)) => {
                    StoreError::Corrupt(m)
                }
                other => StoreError::Unavailable(format!("{}: {other}", path.display())),
            })?;
        let ranked = {
            let tx = db.begin_read().map_err(unavailable)?;
            match tx.open_table(RANKINGS) {
                Ok(_) => true,
                Err(redb::TableError::TableDoesNotExist(_)) => false,
                Err(e) => return Err(unavailable(e)),
            }
        };
        let tx = db.begin_write().map_err(unavailable)?;
        {
            if !ranked {
                build_rankings(&tx)?;
            }
            tx.open_table(ROWS).map_err(unavailable)?;
            tx.open_table(EXPIRY).map_err(unavailable)?;
            tx.open_table(WATERMARKS).map_err(unavailable)?;
            tx.open_table(SECRETS).map_err(unavailable)?;
            tx.open_table(SKETCHES).map_err(unavailable)?;
            tx.open_table(BREAKDOWN_VALUES).map_err(unavailable)?;
            tx.open_table(BREAKDOWN_COUNTERS).map_err(unavailable)?;
            tx.open_table(BREAKDOWN_EXPIRY).map_err(unavailable)?;
            tx.open_table(TITLES).map_err(unavailable)?;
            tx.open_table(WINDOW_BUCKETS).map_err(unavailable)?;
            tx.open_table(WINDOW_SUMS).map_err(unavailable)?;
            tx.open_table(WINDOW_RANKS).map_err(unavailable)?;
            tx.open_table(WINDOW_MARKS).map_err(unavailable)?;
            tx.open_table(RECORDS).map_err(unavailable)?;
        }
        tx.commit().map_err(unavailable)?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            scope_hash: key_hash,
        })
    }

    /// [`EmbeddedStore::open`] with `scope_hash` in place of [`key_hash`]
    /// for scopes, so that a test can make two pages' row keys collide.
    #[cfg(test)]
    fn open_with_scope_hash(
        data_dir: &Path,
        scope_hash: fn(&[u8]) -> u64,
    ) -> Result<Self, StoreError> {
        Ok(EmbeddedStore {
            scope_hash,
            ..EmbeddedStore::open(data_dir)?
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        // Called from the flusher, this runs on its runtime's blocking
        // threads, at the background priority
        // (`crate::background::background_priority`);
        // called to answer a request, it runs at the priority requests
        // have.
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("blocking task failed: {e}")))?
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Applies `batch` in one write transaction, unless its watermark shows
/// it applied already: the counters, the rankings, the breakdowns, the
/// visitor sketches.
fn apply_blocking(
    db: &Database,
    batch: &SiteBatch,
    scope_hash: fn(&[u8]) -> u64,
) -> Result<Applied, StoreError> {
    let now = Timestamp::now();
    let tx = db.begin_write().map_err(unavailable)?;
    if !advance_watermark(&tx, batch, now)? {
        return Ok(Applied::Duplicate);
    }
    let (late, rows) = add_increments(&tx, batch, scope_hash, now)?;
    raise_record(&tx, batch, scope_hash, now)?;
    add_breakdowns(&tx, batch, &rows, scope_hash, now)?;
    add_titles(&tx, batch)?;
    add_windows(&tx, batch)?;
    merge_visitors(&tx, batch, now)?;
    tx.commit().map_err(unavailable)?;
    Ok(Applied::Fresh { late })
}

/// Keeps the batch's titles, replacing each page's.
fn add_titles(tx: &redb::WriteTransaction, batch: &SiteBatch) -> Result<(), StoreError> {
    if batch.titles.is_empty() {
        return Ok(());
    }
    let mut titles = tx.open_table(TITLES).map_err(unavailable)?;
    for (page, title) in &batch.titles {
        titles
            .insert((batch.site.as_ref(), page.as_ref()), title.as_ref())
            .map_err(unavailable)?;
    }
    Ok(())
}

/// A window's number in its tables' keys.
fn window_code(window: Window) -> u8 {
    match window {
        Window::Hour => 0,
        Window::Day => 1,
    }
}

/// The sums and their ranking, changed together.
struct WindowSums<'t> {
    sums: redb::Table<'t, (&'static str, u8, &'static str), u64>,
    ranks: redb::Table<'t, (&'static str, u8, u64, &'static str), ()>,
}

impl WindowSums<'_> {
    /// Adds `hits` to `page`'s sum, or takes them off (`add` false), and
    /// moves it in the ranking: O(log pages).
    fn change(
        &mut self,
        (site, code, page): (&str, u8, &str),
        hits: u64,
        add: bool,
    ) -> Result<(), StoreError> {
        let old = self
            .sums
            .get((site, code, page))
            .map_err(unavailable)?
            .map_or(0, |v| v.value());
        let new = if add {
            old.saturating_add(hits)
        } else {
            old.saturating_sub(hits)
        };
        if old > 0 {
            self.ranks
                .remove((site, code, u64::MAX - old, page))
                .map_err(unavailable)?;
        }
        if new > 0 {
            self.sums
                .insert((site, code, page), new)
                .map_err(unavailable)?;
            self.ranks
                .insert((site, code, u64::MAX - new, page), ())
                .map_err(unavailable)?;
        } else {
            self.sums.remove((site, code, page)).map_err(unavailable)?;
        }
        Ok(())
    }
}

/// Adds the batch's page hits (their all-time increments) to the bucket
/// of its minute in each rolling window, after taking the buckets that
/// have left the window out of its sum (and out of the file). A batch
/// stamped before a window's last bucket (a replay) counts in that
/// bucket. A batch without a minute (history) is in no window.
fn add_windows(tx: &redb::WriteTransaction, batch: &SiteBatch) -> Result<(), StoreError> {
    let Some(minute) = batch.minute else {
        return Ok(());
    };
    let site = batch.site.as_ref();
    let pages: Vec<(&str, u64)> = batch
        .increments
        .iter()
        .filter(|i| i.period == PeriodKey::Total)
        .filter_map(|i| match &i.scope {
            Scope::Page(p) => Some((p.as_ref(), i.hits)),
            Scope::Site => None,
        })
        .collect();
    let mut buckets = tx.open_table(WINDOW_BUCKETS).map_err(unavailable)?;
    let mut marks = tx.open_table(WINDOW_MARKS).map_err(unavailable)?;
    let mut sums = WindowSums {
        sums: tx.open_table(WINDOW_SUMS).map_err(unavailable)?,
        ranks: tx.open_table(WINDOW_RANKS).map_err(unavailable)?,
    };
    for window in Window::ALL {
        let code = window_code(window);
        let mark = marks
            .get((site, code))
            .map_err(unavailable)?
            .map(|v| v.value());
        let at = mark.map_or(window.bucket_of(minute), |m| {
            m.max(window.bucket_of(minute))
        });
        if mark != Some(at) {
            // Buckets at or before `at - buckets` have left the window.
            let first_live = at - window.buckets() + 1;
            let mut gone = Vec::new();
            for entry in buckets
                .range((site, code, i64::MIN, "")..(site, code, first_live, ""))
                .map_err(unavailable)?
            {
                let (k, v) = entry.map_err(unavailable)?;
                let (_, _, b, page) = k.value();
                gone.push((b, page.to_owned(), v.value()));
            }
            for (b, page, hits) in gone {
                sums.change((site, code, &page), hits, false)?;
                buckets
                    .remove((site, code, b, page.as_str()))
                    .map_err(unavailable)?;
                crate::background::pace();
            }
            marks.insert((site, code), at).map_err(unavailable)?;
        }
        for &(page, hits) in &pages {
            // Six small writes a page and window: yield the core as the
            // counters' loop does.
            crate::background::pace();
            let was = buckets
                .get((site, code, at, page))
                .map_err(unavailable)?
                .map_or(0, |v| v.value());
            buckets
                .insert((site, code, at, page), was.saturating_add(hits))
                .map_err(unavailable)?;
            sums.change((site, code, page), hits, true)?;
        }
    }
    Ok(())
}

/// [`Store::top_window`]: the window's ranking while its mark is at most
/// one bucket behind `minute`, else the sum of its live buckets.
fn top_window_blocking(
    db: &Database,
    site: &str,
    window: Window,
    minute: i64,
    limit: usize,
) -> Result<Vec<(String, u64)>, StoreError> {
    let tx = db.begin_read().map_err(unavailable)?;
    let code = window_code(window);
    let at = window.bucket_of(minute);
    let marks = tx.open_table(WINDOW_MARKS).map_err(unavailable)?;
    let Some(mark) = marks
        .get((site, code))
        .map_err(unavailable)?
        .map(|v| v.value())
    else {
        return Ok(Vec::new());
    };
    if at - mark >= window.buckets() {
        return Ok(Vec::new());
    }
    let limit = limit.min(TOP_KEPT);
    if at - mark <= 1 {
        let ranks = tx.open_table(WINDOW_RANKS).map_err(unavailable)?;
        let mut out = Vec::with_capacity(limit);
        for entry in ranks
            .range((site, code, 0, "")..(site, code + 1, 0, ""))
            .map_err(unavailable)?
            .take(limit)
        {
            let (k, _) = entry.map_err(unavailable)?;
            let (_, _, inverse, page) = k.value();
            out.push((page.to_owned(), u64::MAX - inverse));
        }
        return Ok(out);
    }
    let buckets = tx.open_table(WINDOW_BUCKETS).map_err(unavailable)?;
    let mut summed: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for entry in buckets
        .range((site, code, at - window.buckets() + 1, "")..(site, code, at + 1, ""))
        .map_err(unavailable)?
    {
        let (k, v) = entry.map_err(unavailable)?;
        *summed.entry(k.value().3.to_owned()).or_default() += v.value();
    }
    let mut out: Vec<(String, u64)> = summed.into_iter().collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out.truncate(limit);
    Ok(out)
}

/// Moves the batch's producer's watermark on the site to the batch's
/// sequence, with the time it was seen; `false` (and nothing written) when
/// the watermark already covers the batch: it was applied before.
fn advance_watermark(
    tx: &redb::WriteTransaction,
    batch: &SiteBatch,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let mut marks = tx.open_table(WATERMARKS).map_err(unavailable)?;
    let mark = marks
        .get((batch.site.as_ref(), batch.id.producer.as_ref()))
        .map_err(unavailable)?
        .map(|v| v.value().0)
        .unwrap_or(0);
    if batch.id.seq <= mark {
        return Ok(false);
    }
    marks
        .insert(
            (batch.site.as_ref(), batch.id.producer.as_ref()),
            (batch.id.seq, now.as_second()),
        )
        .map_err(unavailable)?;
    Ok(true)
}

/// Where a batch's scopes' rows are ([`find_row`]'s answer), kept from
/// the increments for the breakdowns of the same scopes.
type RowKeys<'a> = std::collections::HashMap<&'a str, [u8; 16]>;

/// Adds the batch's increments to their rows, in key order, dropping
/// expired periods, and keeps the site's rankings of the pages it
/// touched. Returns how many increments came too late (their period had
/// expired), and where each scope's row is when the batch has breakdowns
/// to add.
fn add_increments<'a>(
    tx: &redb::WriteTransaction,
    batch: &'a SiteBatch,
    scope_hash: fn(&[u8]) -> u64,
    now: Timestamp,
) -> Result<(u64, RowKeys<'a>), StoreError> {
    let mut rows = tx.open_table(ROWS).map_err(unavailable)?;
    let mut resolved = RowKeys::new();
    let mut skipped = 0u64;
    let site_hash = key_hash(batch.site.as_bytes());
    let mut encoded = Vec::new();
    let mut ranking_table = tx.open_table(RANKINGS).map_err(unavailable)?;
    let mut ranking_expiry = tx.open_table(RANKING_EXPIRY).map_err(unavailable)?;
    let mut rankings = std::collections::HashMap::new();
    // Increments come sorted by scope (build_batch), so each scope's
    // increments are one run: one read and one write per scope. Rows
    // are visited in key order, so each B-tree leaf is read and copied
    // once per batch; in scope order (random in the keys' hashes) a
    // batch larger than redb's cache read leaves back again and again.
    let mut runs: Vec<([u8; 16], &[Increment])> = batch
        .increments
        .chunk_by(|a, b| a.scope == b.scope)
        .map(|run| {
            let hash = scope_hash(run[0].scope.as_key().as_bytes());
            (row_key(site_hash, hash), run)
        })
        .collect();
    runs.sort_unstable_by_key(|r| r.0);
    for (key, run) in runs {
        // On the flusher's threads, a batch of 10,000 pages is ~25 ms
        // of work: let requests on the same core in every 100 µs.
        crate::background::pace();
        let scope = run[0].scope.as_key();
        // `key` is where the scope's hash points; its row may be
        // another scope's, when their hashes collide.
        let hash = u64::from_be_bytes(key[8..].try_into().expect("8 bytes"));
        let (key, row) = find_row(&rows, site_hash, scope, hash)?;
        if !batch.breakdowns.is_empty() {
            resolved.insert(scope, key);
        }
        let mut row = row.unwrap_or_else(|| Row::new(scope));
        for inc in run {
            if inc.expires_at.is_some_and(|at| at <= now) {
                // The period's figure is already gone; recreating it
                // would bring back a counter without its retention.
                skipped += 1;
                continue;
            }
            row.add(period_code(&inc.period), inc.hits, inc.expires_at);
        }
        row.forget_expired(now.as_second());
        if !scope.is_empty() {
            let codes = run.iter().map(|inc| period_code(&inc.period));
            rank(
                &mut rankings,
                &ranking_table,
                site_hash,
                &row,
                codes,
                now.as_second(),
            )?;
        }
        encoded.clear();
        row.encode(&mut encoded);
        rows.insert(&key, encoded.as_slice()).map_err(unavailable)?;
    }
    store_rankings(rankings, &mut ranking_table, &mut ranking_expiry, site_hash)?;
    prune_rankings(&mut ranking_table, &mut ranking_expiry, now.as_second())?;
    Ok((skipped, resolved))
}

// ---- record day (issue 25 §7) ----

/// Raises the site's record day to the best of the site's day counters
/// this batch increased, as they stand after it (the row was written
/// just before, in the same transaction). A late day (expired, not
/// applied) reads as nothing and raises nothing.
fn raise_record(
    tx: &redb::WriteTransaction,
    batch: &SiteBatch,
    scope_hash: fn(&[u8]) -> u64,
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut days = batch
        .increments
        .iter()
        .filter(|i| i.scope == Scope::Site)
        .filter_map(|i| match i.period {
            PeriodKey::Day(d) => Some(d),
            _ => None,
        })
        .peekable();
    if days.peek().is_none() {
        return Ok(());
    }
    let rows = tx.open_table(ROWS).map_err(unavailable)?;
    let (_, row) = find_row(&rows, key_hash(batch.site.as_bytes()), "", scope_hash(b""))?;
    let Some(row) = row else { return Ok(()) };
    let mut records = tx.open_table(RECORDS).map_err(unavailable)?;
    let mut best = read_record(&records, &batch.site)?;
    let mut raised = false;
    for day in days {
        let hits = row.get(period_code(&PeriodKey::Day(day)), now.as_second());
        let candidate = Record { hits, date: day };
        if candidate.beats(best.as_ref()) {
            best = Some(candidate);
            raised = true;
        }
    }
    if let (true, Some(best)) = (raised, best) {
        let value = (best.hits, crate::period::day_number(best.date));
        records
            .insert(batch.site.as_ref(), value)
            .map_err(unavailable)?;
    }
    Ok(())
}

/// The site's kept record day, if any.
fn read_record(
    records: &impl ReadableTable<&'static str, (u64, u32)>,
    site: &str,
) -> Result<Option<Record>, StoreError> {
    Ok(records.get(site).map_err(unavailable)?.map(|v| {
        let (hits, day) = v.value();
        Record {
            hits,
            date: crate::period::date_of_number(day),
        }
    }))
}

// ---- end record day ----

fn counter_key(
    row: &[u8; 16],
    dimension: Dimension,
    day: jiff::civil::Date,
) -> [u8; COUNTER_KEY_LEN] {
    let mut key = [0u8; COUNTER_KEY_LEN];
    key[..16].copy_from_slice(row);
    // Nine dimensions: the index always fits a byte.
    key[16] = dimension.index() as u8;
    key[17..].copy_from_slice(&crate::period::day_number(day).to_be_bytes());
    key
}

/// The first key past every value of the counters from `from` on that
/// share its first `len` bytes: values are UTF-8, which never holds the
/// byte 0xFF.
fn past_values(from: &[u8], len: usize) -> Vec<u8> {
    let mut end = from[..len].to_vec();
    end.push(0xFF);
    end
}

/// Deletes a breakdown counter, its values and its expiry entry; returns
/// how many values it held.
fn remove_counter(
    values: &mut redb::Table<&[u8], u64>,
    counters: &mut redb::Table<&[u8; COUNTER_KEY_LEN], (u32, i64)>,
    expiry: &mut redb::Table<(i64, &[u8; COUNTER_KEY_LEN]), ()>,
    key: &[u8; COUNTER_KEY_LEN],
    expires: i64,
) -> Result<usize, StoreError> {
    let end = past_values(key, COUNTER_KEY_LEN);
    let mut removed = 0;
    values
        .retain_in::<&[u8], _>(key.as_slice()..end.as_slice(), |_, _| {
            removed += 1;
            false
        })
        .map_err(unavailable)?;
    counters.remove(key).map_err(unavailable)?;
    if expires != 0 {
        expiry.remove((expires, key)).map_err(unavailable)?;
    }
    Ok(removed)
}

/// Adds the batch's breakdown increments to their counters, in key order:
/// a value the counter holds grows; a new one enters while the counter
/// holds fewer than its bound, else its hits go to [`OTHER`]. A counter's
/// increments share its expiry (the day's retention; the first one's is
/// used); past it they are skipped, like a late day increment, and the
/// counter is not recreated. Then prunes expired counters.
fn add_breakdowns(
    tx: &redb::WriteTransaction,
    batch: &SiteBatch,
    resolved: &RowKeys<'_>,
    scope_hash: fn(&[u8]) -> u64,
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut values = tx.open_table(BREAKDOWN_VALUES).map_err(unavailable)?;
    let mut counters = tx.open_table(BREAKDOWN_COUNTERS).map_err(unavailable)?;
    let mut expiry = tx.open_table(BREAKDOWN_EXPIRY).map_err(unavailable)?;
    let now_s = now.as_second();
    if !batch.breakdowns.is_empty() {
        let reordered;
        let breakdowns = if BreakdownIncrement::in_order(&batch.breakdowns) {
            &batch.breakdowns
        } else {
            reordered = BreakdownIncrement::into_order(batch.breakdowns.clone());
            &reordered
        };
        let mut rows = tx.open_table(ROWS).map_err(unavailable)?;
        let site_hash = key_hash(batch.site.as_bytes());
        // One run per scope, visited in row-key order as the increments
        // are (see `add_increments`).
        let mut runs: Vec<([u8; 16], &[BreakdownIncrement])> = breakdowns
            .chunk_by(|a, b| a.scope == b.scope)
            .map(|run| {
                let hash = scope_hash(run[0].scope.as_key().as_bytes());
                (row_key(site_hash, hash), run)
            })
            .collect();
        runs.sort_unstable_by_key(|r| r.0);
        let mut value_key = Vec::new();
        for (key, run) in runs {
            crate::background::pace();
            let scope = run[0].scope.as_key();
            let row = match resolved.get(scope) {
                // Its increments wrote the row just now.
                Some(row) => *row,
                None => {
                    let hash = u64::from_be_bytes(key[8..].try_into().expect("8 bytes"));
                    let (row, found) = find_row(&rows, site_hash, scope, hash)?;
                    if found.is_none() {
                        // The row key names the scope's breakdowns: claim
                        // it, so no colliding scope takes it later.
                        let mut encoded = Vec::new();
                        Row::new(scope).encode(&mut encoded);
                        rows.insert(&row, encoded.as_slice()).map_err(unavailable)?;
                    }
                    row
                }
            };
            let bound = if scope.is_empty() {
                batch.bounds.site
            } else {
                batch.bounds.page
            };
            for counter in run.chunk_by(|a, b| a.dimension == b.dimension && a.day == b.day) {
                let first = &counter[0];
                if first.expires_at.is_some_and(|at| at <= now) {
                    continue;
                }
                let expires = first.expires_at.map_or(0, |t| t.as_second().max(1));
                let ck = counter_key(&row, first.dimension, first.day);
                let stored = counters.get(&ck).map_err(unavailable)?.map(|v| v.value());
                let (mut held, was) = match stored {
                    Some((held, at)) if at == 0 || at > now_s => (held, Some(at)),
                    Some((_, at)) => {
                        // Expired, not pruned yet: it is gone, as a Redis
                        // key would be.
                        remove_counter(&mut values, &mut counters, &mut expiry, &ck, at)?;
                        (0, None)
                    }
                    None => (0, None),
                };
                let mut other = 0u64;
                for inc in counter {
                    if &*inc.value == OTHER {
                        other = other.saturating_add(inc.hits);
                        continue;
                    }
                    value_key.clear();
                    value_key.extend_from_slice(&ck);
                    value_key.extend_from_slice(inc.value.as_bytes());
                    let had = values
                        .get(value_key.as_slice())
                        .map_err(unavailable)?
                        .map(|v| v.value());
                    let hits = match had {
                        Some(h) => h.saturating_add(inc.hits),
                        None if held < bound => {
                            held += 1;
                            inc.hits
                        }
                        None => {
                            other = other.saturating_add(inc.hits);
                            continue;
                        }
                    };
                    values
                        .insert(value_key.as_slice(), hits)
                        .map_err(unavailable)?;
                }
                if other > 0 {
                    value_key.clear();
                    value_key.extend_from_slice(&ck);
                    value_key.extend_from_slice(OTHER.as_bytes());
                    let had = values
                        .get(value_key.as_slice())
                        .map_err(unavailable)?
                        .map_or(0, |v| v.value());
                    values
                        .insert(value_key.as_slice(), had.saturating_add(other))
                        .map_err(unavailable)?;
                }
                if stored != Some((held, expires)) {
                    counters.insert(&ck, (held, expires)).map_err(unavailable)?;
                }
                if was != Some(expires) {
                    if let Some(at) = was.filter(|at| *at != 0) {
                        expiry.remove((at, &ck)).map_err(unavailable)?;
                    }
                    if expires != 0 {
                        expiry.insert((expires, &ck), ()).map_err(unavailable)?;
                    }
                }
            }
        }
    }
    prune_breakdowns(&mut values, &mut counters, &mut expiry, now_s)
}

/// Deletes breakdown counters whose retention has passed, until about
/// [`PRUNE_PER_BATCH`] values are gone (at least one counter a call).
fn prune_breakdowns(
    values: &mut redb::Table<&[u8], u64>,
    counters: &mut redb::Table<&[u8; COUNTER_KEY_LEN], (u32, i64)>,
    expiry: &mut redb::Table<(i64, &[u8; COUNTER_KEY_LEN]), ()>,
    now: i64,
) -> Result<(), StoreError> {
    let mut removed = 0;
    while removed < PRUNE_PER_BATCH {
        let due = match expiry.first().map_err(unavailable)? {
            Some((k, _)) => {
                let (at, key) = k.value();
                (at <= now).then_some((at, *key))
            }
            None => None,
        };
        let Some((at, key)) = due else {
            break;
        };
        removed += 1 + remove_counter(values, counters, expiry, &key, at)?;
    }
    Ok(())
}

/// [`Store::breakdown`] in one read transaction: the scope's day counters
/// from its row, and one range scan each of the counters and the values
/// of the scope and dimension from the first asked day to the last.
fn breakdown_blocking(
    db: &Database,
    site: &str,
    scope: &str,
    dimension: Dimension,
    days: &[jiff::civil::Date],
    scope_hash: fn(&[u8]) -> u64,
) -> Result<BreakdownReading, StoreError> {
    let mut days = days.to_vec();
    days.sort_unstable();
    days.dedup();
    let (Some(&first), Some(&last)) = (days.first(), days.last()) else {
        return Ok(BreakdownReading::default());
    };
    let tx = db.begin_read().map_err(unavailable)?;
    let rows = tx.open_table(ROWS).map_err(unavailable)?;
    let (row_key, row) = find_row(
        &rows,
        key_hash(site.as_bytes()),
        scope,
        scope_hash(scope.as_bytes()),
    )?;
    let Some(row) = row else {
        return Ok(BreakdownReading::default());
    };
    let now = Timestamp::now().as_second();
    let hits = days
        .iter()
        .map(|d| row.get(period_code(&PeriodKey::Day(*d)), now))
        .fold(0u64, u64::saturating_add);
    let counters = tx.open_table(BREAKDOWN_COUNTERS).map_err(unavailable)?;
    let from = counter_key(&row_key, dimension, first);
    let to = counter_key(&row_key, dimension, last);
    let asked: std::collections::HashSet<[u8; 4]> = days
        .iter()
        .map(|d| crate::period::day_number(*d).to_be_bytes())
        .collect();
    let day_of = |key: &[u8]| -> [u8; 4] { key[17..COUNTER_KEY_LEN].try_into().expect("4 bytes") };
    let mut live = std::collections::HashSet::new();
    for entry in counters
        .range::<&[u8; COUNTER_KEY_LEN]>(&from..=&to)
        .map_err(unavailable)?
    {
        let (k, v) = entry.map_err(unavailable)?;
        let (_, at) = v.value();
        let day = day_of(k.value());
        if (at == 0 || at > now) && asked.contains(&day) {
            live.insert(day);
        }
    }
    let mut sums: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    if !live.is_empty() {
        let table = tx.open_table(BREAKDOWN_VALUES).map_err(unavailable)?;
        let end = past_values(&to, COUNTER_KEY_LEN);
        for entry in table
            .range::<&[u8]>(from.as_slice()..end.as_slice())
            .map_err(unavailable)?
        {
            let (k, v) = entry.map_err(unavailable)?;
            let key = k.value();
            if !live.contains(&day_of(key)) {
                continue;
            }
            let value = std::str::from_utf8(&key[COUNTER_KEY_LEN..])
                .map_err(|_| StoreError::Corrupt("breakdown value".into()))?;
            let sum = sums.entry(value.to_string()).or_default();
            *sum = sum.saturating_add(v.value());
        }
    }
    Ok(BreakdownReading {
        hits,
        values: sums.into_iter().collect(),
    })
}

/// Merges the batch's visitor deltas into the stored sketches (minute
/// sketches and expired keys skipped, as `online` is not kept), indexing
/// a new sketch's expiry, then prunes expired sketches.
fn merge_visitors(
    tx: &redb::WriteTransaction,
    batch: &SiteBatch,
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut expiry = tx.open_table(EXPIRY).map_err(unavailable)?;
    let mut sketches = tx.open_table(SKETCHES).map_err(unavailable)?;
    for delta in &batch.visitors {
        let add = match &delta.members {
            Members::Exact(m) => SketchUnion::from_parts(&[0u8; HLL_REGISTERS], Some(m)),
            Members::Registers(r) => SketchUnion::from_parts(r, None),
        }
        .map_err(|e| StoreError::Refused(format!("visitor sketch: {e}")))?;
        for (key, expires_at) in &delta.keys {
            if matches!(key, SketchKey::Minute(_)) || expires_at.is_some_and(|at| at <= now) {
                continue;
            }
            let name = key.to_string();
            let k = (batch.site.as_ref(), name.as_str());
            let existing = sketches
                .get(k)
                .map_err(unavailable)?
                .map(|v| v.value().to_vec());
            let mut union = match &existing {
                Some(bytes) => SketchUnion::from_bytes(bytes)
                    .map_err(|e| StoreError::Corrupt(format!("sketch {name}: {e}")))?,
                None => SketchUnion::new(),
            };
            union.add_union(&add);
            sketches
                .insert(k, union.to_bytes().as_slice())
                .map_err(unavailable)?;
            if let (None, Some(at)) = (&existing, expires_at) {
                expiry
                    .insert((at.as_second(), k.0, SKETCH_SCOPE, k.1), ())
                    .map_err(unavailable)?;
            }
        }
    }
    prune_expired(&mut sketches, &mut expiry, now)?;
    Ok(())
}

/// Deletes counters whose retention has passed, at most
/// [`PRUNE_PER_BATCH`] per call.
fn prune_expired(
    sketches: &mut redb::Table<(&str, &str), &[u8]>,
    expiry: &mut redb::Table<(i64, &str, &str, &str), ()>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut due = Vec::new();
    for entry in expiry.iter().map_err(unavailable)?.take(PRUNE_PER_BATCH) {
        let (key, _) = entry.map_err(unavailable)?;
        let (at, site, scope, period) = key.value();
        if at > now.as_second() {
            break;
        }
        due.push((at, site.to_string(), scope.to_string(), period.to_string()));
    }
    for (at, site, scope, period) in due {
        if scope == SKETCH_SCOPE {
            sketches
                .remove((site.as_str(), period.as_str()))
                .map_err(unavailable)?;
        }
        expiry
            .remove((at, site.as_str(), scope.as_str(), period.as_str()))
            .map_err(unavailable)?;
    }
    Ok(())
}

/// The union count of some sketches; `None` when a minute is asked for
/// (one embedded instance counts `online` itself).
fn distinct_blocking(
    db: &Database,
    site: &str,
    keys: &[SketchKey],
) -> Result<Option<u64>, StoreError> {
    if keys.iter().any(|k| matches!(k, SketchKey::Minute(_))) {
        return Ok(None);
    }
    let tx = db.begin_read().map_err(unavailable)?;
    let sketches = tx.open_table(SKETCHES).map_err(unavailable)?;
    let mut union = SketchUnion::new();
    for key in keys {
        let name = key.to_string();
        if let Some(v) = sketches.get((site, name.as_str())).map_err(unavailable)? {
            let stored = SketchUnion::from_bytes(v.value())
                .map_err(|e| StoreError::Corrupt(format!("sketch {name}: {e}")))?;
            union.add_union(&stored);
        }
    }
    Ok(Some(union.count()))
}

/// When the salt of a new day is created, deletes salts of days more than
/// [`SALT_KEEP_DAYS`] before it: an old salt could only re-identify
/// yesterday's visitors.
fn prune_salts(secrets: &mut redb::Table<&str, &[u8]>, created: &str) -> Result<(), StoreError> {
    let Some(day) = created
        .strip_prefix("salt:")
        .and_then(|d| d.parse::<jiff::civil::Date>().ok())
    else {
        return Ok(());
    };
    let Ok(oldest) = day.checked_sub(jiff::Span::new().days(SALT_KEEP_DAYS)) else {
        return Ok(());
    };
    let mut stale = Vec::new();
    for entry in secrets.range("salt:".."salt;").map_err(unavailable)? {
        let (k, _) = entry.map_err(unavailable)?;
        let name = k.value().to_string();
        if let Some(d) = name
            .strip_prefix("salt:")
            .and_then(|d| d.parse::<jiff::civil::Date>().ok())
            && d < oldest
        {
            stale.push(name);
        }
    }
    for name in stale {
        secrets.remove(name.as_str()).map_err(unavailable)?;
    }
    Ok(())
}

impl Store for EmbeddedStore {
    async fn apply(&self, batch: &SiteBatch) -> Result<Applied, StoreError> {
        self.apply_shared(Arc::new(batch.clone())).await
    }

    async fn apply_shared(&self, batch: Arc<SiteBatch>) -> Result<Applied, StoreError> {
        let scope_hash = self.scope_hash;
        self.blocking(move |db| apply_blocking(db, &batch, scope_hash))
            .await
    }

    async fn read(
        &self,
        site: &str,
        scope: &Scope,
        periods: &[PeriodKey],
        producer: &str,
    ) -> Result<Reading, StoreError> {
        let site = site.to_string();
        let scope = scope.as_key().to_string();
        let codes: Vec<u32> = periods.iter().map(period_code).collect();
        let producer = producer.to_string();
        let scope_hash = self.scope_hash;
        // Read in place rather than on the blocking pool: a read
        // transaction of one row takes microseconds (pages come from the
        // cache), far less than a hand-off to another thread; reads
        // happen on every answer that shows a page's figures.
        let read = |db: &Database| {
            let tx = db.begin_read().map_err(unavailable)?;
            let rows = tx.open_table(ROWS).map_err(unavailable)?;
            let marks = tx.open_table(WATERMARKS).map_err(unavailable)?;
            let hash = scope_hash(scope.as_bytes());
            let (_, row) = find_row(&rows, key_hash(site.as_bytes()), &scope, hash)?;
            let row = row.unwrap_or_else(|| Row::new(&scope));
            let now = Timestamp::now().as_second();
            let values = codes.iter().map(|c| row.get(*c, now)).collect();
            let watermark = marks
                .get((site.as_str(), producer.as_str()))
                .map_err(unavailable)?
                .map(|v| v.value().0)
                .unwrap_or(0);
            let record = if scope.is_empty() {
                read_record(&tx.open_table(RECORDS).map_err(unavailable)?, &site)?
            } else {
                None
            };
            Ok(Reading {
                values,
                watermark,
                record,
            })
        };
        read(&self.db)
    }

    async fn secret(&self, name: &str, candidate: [u8; 32]) -> Result<[u8; 32], StoreError> {
        let name = name.to_string();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            let value = {
                let mut secrets = tx.open_table(SECRETS).map_err(unavailable)?;
                let existing = secrets
                    .get(name.as_str())
                    .map_err(unavailable)?
                    .map(|v| v.value().to_vec());
                match existing {
                    Some(bytes) => bytes.try_into().map_err(|_| {
                        StoreError::Corrupt(format!("secret {name} is not 32 bytes"))
                    })?,
                    None => {
                        secrets
                            .insert(name.as_str(), candidate.as_slice())
                            .map_err(unavailable)?;
                        prune_salts(&mut secrets, &name)?;
                        candidate
                    }
                }
            };
            tx.commit().map_err(unavailable)?;
            Ok(value)
        })
        .await
    }

    async fn distinct(&self, site: &str, keys: &[SketchKey]) -> Result<Option<u64>, StoreError> {
        let site = site.to_string();
        let keys = keys.to_vec();
        self.blocking(move |db| distinct_blocking(db, &site, &keys))
            .await
    }

    async fn top(
        &self,
        site: &str,
        period: PeriodKey,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let site_hash = key_hash(site.as_bytes());
        let code = period_code(&period);
        // One value, kept at each flush: no scan of the site's rows.
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let table = tx.open_table(RANKINGS).map_err(unavailable)?;
            let Some(bytes) = table.get((site_hash, code)).map_err(unavailable)? else {
                return Ok(Vec::new());
            };
            let ranking = Ranking::decode(bytes.value())
                .ok_or_else(|| StoreError::Corrupt("ranking".into()))?;
            let now = Timestamp::now().as_second();
            if ranking.expires != 0 && ranking.expires <= now {
                return Ok(Vec::new());
            }
            Ok(ranking
                .pages
                .into_iter()
                .filter(|(hits, _)| *hits > 0)
                .take(limit)
                .map(|(hits, page)| (page, hits))
                .collect())
        })
        .await
    }

    async fn top_window(
        &self,
        site: &str,
        window: Window,
        minute: i64,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let site = site.to_string();
        self.blocking(move |db| top_window_blocking(db, &site, window, minute, limit))
            .await
    }

    async fn titles(
        &self,
        site: &str,
        pages: &[Arc<str>],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let site = site.to_string();
        let pages = pages.to_vec();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let titles = tx.open_table(TITLES).map_err(unavailable)?;
            pages
                .iter()
                .map(|page| {
                    Ok(titles
                        .get((site.as_str(), page.as_ref()))
                        .map_err(unavailable)?
                        .map(|v| v.value().to_owned()))
                })
                .collect()
        })
        .await
    }

    async fn breakdown(
        &self,
        site: &str,
        scope: &Scope,
        dimension: Dimension,
        days: &[jiff::civil::Date],
    ) -> Result<BreakdownReading, StoreError> {
        let site = site.to_string();
        let scope = scope.as_key().to_string();
        let days = days.to_vec();
        let scope_hash = self.scope_hash;
        self.blocking(move |db| breakdown_blocking(db, &site, &scope, dimension, &days, scope_hash))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|db| db.begin_read().map(|_| ()).map_err(unavailable))
            .await
    }

    /// The embedded file is locked by one process, and imports go through
    /// its flusher: this instance is its only writer.
    fn sole_writer(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BatchId;

    fn batch(seq: u64, pages: impl Iterator<Item = (String, u64)>) -> SiteBatch {
        let mut increments: Vec<Increment> = pages
            .map(|(page, hits)| Increment {
                scope: Scope::Page(Arc::from(page)),
                period: PeriodKey::Total,
                hits,
                expires_at: None,
            })
            .collect();
        increments.sort_by(|a, b| a.scope.cmp(&b.scope));
        SiteBatch {
            site: Arc::from("s"),
            id: BatchId {
                producer: Arc::from("p"),
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

    /// Site `demo`'s batch `seq` of page totals.
    fn page_totals(seq: u64, pages: &[(&str, u64)]) -> SiteBatch {
        SiteBatch {
            site: Arc::from("demo"),
            ..batch(seq, pages.iter().map(|&(p, hits)| (p.to_string(), hits)))
        }
    }

    #[tokio::test]
    async fn pages_whose_row_keys_collide_keep_their_own_counts() {
        let dir = tempfile::tempdir().unwrap();
        // Every scope, the site's included, hashes alike.
        let store = EmbeddedStore::open_with_scope_hash(dir.path(), |_| 7).unwrap();
        let pages = [("/a", 3), ("/b", 5), ("/c", 11)];
        store.apply(&page_totals(1, &pages)).await.unwrap();
        // A second batch adds to rows found again past the collisions.
        store
            .apply(&page_totals(2, &[("/b", 1), ("/d", 2)]))
            .await
            .unwrap();
        let total = |page: &'static str| {
            let store = store.clone();
            async move {
                let scope = Scope::Page(Arc::from(page));
                let r = store.read("demo", &scope, &[PeriodKey::Total], "p").await;
                r.unwrap().values[0]
            }
        };
        assert_eq!(total("/a").await, 3);
        assert_eq!(total("/b").await, 6);
        assert_eq!(total("/c").await, 11);
        assert_eq!(total("/d").await, 2);
        assert_eq!(total("/never").await, 0, "a page never written reads 0");
        let site = store
            .read("demo", &Scope::Site, &[PeriodKey::Total], "p")
            .await
            .unwrap();
        assert_eq!(site.values, vec![0], "no page's hits land on the site");
        let top = store.top("demo", PeriodKey::Total, 10).await.unwrap();
        let want: Vec<(String, u64)> = [("/c", 11), ("/b", 6), ("/a", 3), ("/d", 2)]
            .iter()
            .map(|&(p, n)| (p.to_string(), n))
            .collect();
        assert_eq!(top, want);
    }

    /// `top` reads the ranking kept at each flush, not the site's rows:
    /// with every row of the site gone, it still answers, and exactly.
    #[tokio::test]
    async fn top_reads_a_kept_ranking_and_no_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let pages = (0..3_000u64).map(|i| (format!("/p{i:04}"), i % 500 + 1));
        store.apply(&batch(1, pages)).await.unwrap();
        // A second batch lifts one page into the lead and ties another.
        let more = [("/p0001".to_string(), 1_000), ("/p0002".to_string(), 497)];
        store.apply(&batch(2, more.into_iter())).await.unwrap();
        let expected = vec![
            ("/p0001".to_string(), 1_002),
            ("/p0002".to_string(), 500),
            ("/p0499".to_string(), 500),
            ("/p0999".to_string(), 500),
        ];
        assert_eq!(store.top("s", PeriodKey::Total, 4).await.unwrap(), expected);
        let tx = store.db.begin_write().unwrap();
        {
            let mut rows = tx.open_table(ROWS).unwrap();
            rows.retain(|_, _| false).unwrap();
        }
        tx.commit().unwrap();
        assert_eq!(
            store.top("s", PeriodKey::Total, 4).await.unwrap(),
            expected,
            "answered without the rows"
        );
        let top = store.top("s", PeriodKey::Total, 1_000).await.unwrap();
        assert_eq!(top.len(), TOP_KEPT);
    }

    fn bd(
        scope: &Scope,
        dimension: Dimension,
        day: jiff::civil::Date,
        value: &str,
        expires_at: Option<Timestamp>,
    ) -> BreakdownIncrement {
        BreakdownIncrement {
            scope: scope.clone(),
            dimension,
            day,
            value: Arc::from(value),
            hits: 1,
            expires_at,
        }
    }

    fn len<K: redb::Key + 'static, V: redb::Value + 'static>(
        store: &EmbeddedStore,
        table: TableDefinition<K, V>,
    ) -> u64 {
        use redb::ReadableTableMetadata;
        let tx = store.db.begin_read().unwrap();
        tx.open_table(table).unwrap().len().unwrap()
    }

    /// Expired breakdown counters go, values and all: pruned by a later
    /// batch, or dropped when a batch adds to one not pruned yet.
    #[tokio::test]
    async fn expired_breakdown_counters_are_pruned_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let soon = Some(Timestamp::now() + jiff::SignedDuration::from_secs(1));
        let later = Some(Timestamp::now() + jiff::SignedDuration::from_hours(1));
        let (d1, d2, d3) = (
            jiff::civil::Date::constant(2026, 11, 25),
            jiff::civil::Date::constant(2026, 11, 26),
            jiff::civil::Date::constant(2026, 11, 27),
        );
        let ch = Dimension::Channel;
        let site = Scope::Site;
        let first = SiteBatch {
            breakdowns: vec![
                bd(&site, ch, d1, "gone", soon),
                bd(&site, ch, d1, "gone too", soon),
                bd(&site, ch, d2, "kept", None),
                bd(&site, ch, d3, "old", soon),
            ],
            ..batch(1, std::iter::empty())
        };
        store.apply(&first).await.unwrap();
        assert_eq!(len(&store, BREAKDOWN_VALUES), 4);
        tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
        let second = SiteBatch {
            breakdowns: vec![bd(&site, ch, d3, "new", later)],
            ..batch(2, std::iter::empty())
        };
        store.apply(&second).await.unwrap();
        let read = |day: jiff::civil::Date| {
            let store = store.clone();
            async move {
                let mut r = store
                    .breakdown("s", &Scope::Site, ch, &[day])
                    .await
                    .unwrap();
                r.values.sort();
                r.values
            }
        };
        assert_eq!(read(d3).await, vec![("new".to_string(), 1)]);
        assert_eq!(read(d2).await, vec![("kept".to_string(), 1)]);
        assert_eq!(read(d1).await, vec![]);
        assert_eq!(
            len(&store, BREAKDOWN_VALUES),
            2,
            "d1 pruned, d3's old value dropped"
        );
        assert_eq!(len(&store, BREAKDOWN_COUNTERS), 2);
        assert_eq!(len(&store, BREAKDOWN_EXPIRY), 1, "only d3 expires");
    }

    /// Scopes whose row keys collide keep their breakdowns apart, the
    /// site's included.
    #[tokio::test]
    async fn breakdowns_of_colliding_scopes_keep_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with_scope_hash(dir.path(), |_| 7).unwrap();
        let day = jiff::civil::Date::constant(2026, 11, 27);
        let (a, b) = (Scope::Page(Arc::from("/a")), Scope::Page(Arc::from("/b")));
        let ch = Dimension::Channel;
        let one = SiteBatch {
            breakdowns: BreakdownIncrement::into_order(vec![
                bd(&a, ch, day, "a", None),
                bd(&b, ch, day, "b", None),
            ]),
            ..batch(1, std::iter::empty())
        };
        store.apply(&one).await.unwrap();
        let two = SiteBatch {
            // "/b" has increments too: its row is found once for both.
            breakdowns: vec![
                bd(&Scope::Site, ch, day, "site", None),
                bd(&b, ch, day, "b2", None),
            ],
            ..batch(2, [("/b".to_string(), 1)].into_iter())
        };
        store.apply(&two).await.unwrap();
        for (scope, values) in [
            (&Scope::Site, vec!["site"]),
            (&a, vec!["a"]),
            (&b, vec!["b", "b2"]),
        ] {
            let mut r = store.breakdown("s", scope, ch, &[day]).await.unwrap();
            r.values.sort();
            let want: Vec<(String, u64)> = values.iter().map(|v| (v.to_string(), 1)).collect();
            assert_eq!(r.values, want, "{scope:?}");
        }
    }

    #[test]
    fn a_ranking_keeps_the_best_pages_exactly() {
        let mut r = Ranking::default();
        for i in 0..(TOP_KEPT as u64 + 50) {
            r.offer(&format!("/{i:03}"), i);
        }
        assert_eq!(r.pages.len(), TOP_KEPT);
        assert_eq!(
            r.pages[0],
            (TOP_KEPT as u64 + 49, format!("/{:03}", TOP_KEPT + 49))
        );
        // A kept page grows; an unkept one tied with the last enters only
        // if its name sorts first.
        r.offer("/100", 1_000);
        assert_eq!(r.pages[0], (1_000, "/100".to_string()));
        let last = r.pages.last().unwrap().clone();
        r.offer("/zzz", last.0);
        assert!(!r.pages.iter().any(|(_, p)| p == "/zzz"));
        r.offer("/", last.0);
        assert!(r.pages.iter().any(|(_, p)| p == "/"));
        assert_eq!(Ranking::decode(&r.encode()), Some(r));
    }
}
