//! The embedded store: one ACID file (redb) under `data_dir`, for a single
//! instance with no other server. Each batch is one write transaction that
//! checks and advances the producer's watermark, so a batch is applied at
//! most once even if it is replayed.
//!
//! redb is synchronous; every call runs on tokio's blocking pool so the
//! runtime's workers never wait on the disk.

use std::path::Path;
use std::sync::Arc;

use jiff::Timestamp;
use redb::{Database, ReadableTable, TableDefinition};

use super::{
    Applied, Increment, Members, PeriodKey, Reading, Scope, SiteBatch, SketchKey, Store, StoreError,
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
        let tx = db.begin_write().map_err(unavailable)?;
        {
            tx.open_table(ROWS).map_err(unavailable)?;
            tx.open_table(EXPIRY).map_err(unavailable)?;
            tx.open_table(WATERMARKS).map_err(unavailable)?;
            tx.open_table(SECRETS).map_err(unavailable)?;
            tx.open_table(SKETCHES).map_err(unavailable)?;
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

fn apply_blocking(
    db: &Database,
    batch: &SiteBatch,
    scope_hash: fn(&[u8]) -> u64,
) -> Result<Applied, StoreError> {
    let now = Timestamp::now();
    let tx = db.begin_write().map_err(unavailable)?;
    let late;
    {
        let mut marks = tx.open_table(WATERMARKS).map_err(unavailable)?;
        let mark = marks
            .get((batch.site.as_ref(), batch.id.producer.as_ref()))
            .map_err(unavailable)?
            .map(|v| v.value().0)
            .unwrap_or(0);
        if batch.id.seq <= mark {
            return Ok(Applied::Duplicate);
        }
        marks
            .insert(
                (batch.site.as_ref(), batch.id.producer.as_ref()),
                (batch.id.seq, now.as_second()),
            )
            .map_err(unavailable)?;
        let mut rows = tx.open_table(ROWS).map_err(unavailable)?;
        let mut expiry = tx.open_table(EXPIRY).map_err(unavailable)?;
        let mut skipped = 0u64;
        let site_hash = key_hash(batch.site.as_bytes());
        let mut encoded = Vec::new();
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
            encoded.clear();
            row.encode(&mut encoded);
            rows.insert(&key, encoded.as_slice()).map_err(unavailable)?;
        }
        late = skipped;
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
    }
    tx.commit().map_err(unavailable)?;
    Ok(Applied::Fresh { late })
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
            Ok(Reading { values, watermark })
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
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let rows = tx.open_table(ROWS).map_err(unavailable)?;
            let mut start = [0u8; 16];
            start[..8].copy_from_slice(&site_hash.to_be_bytes());
            let mut end = [0xffu8; 16];
            end[..8].copy_from_slice(&site_hash.to_be_bytes());
            let now = Timestamp::now().as_second();
            // A min-heap of the best `limit` so far: memory stays bounded
            // by `limit`, not by the site's pages.
            let mut best: std::collections::BinaryHeap<
                std::cmp::Reverse<(u64, std::cmp::Reverse<String>)>,
            > = std::collections::BinaryHeap::new();
            for entry in rows
                .range::<&[u8; 16]>(&start..=&end)
                .map_err(unavailable)?
            {
                let (_, v) = entry.map_err(unavailable)?;
                let Some(row) = Row::decode(v.value()) else {
                    return Err(StoreError::Corrupt("counter row".into()));
                };
                if row.scope.is_empty() {
                    continue;
                }
                let hits = row.get(code, now);
                if hits == 0 || limit == 0 {
                    continue;
                }
                best.push(std::cmp::Reverse((hits, std::cmp::Reverse(row.scope))));
                if best.len() > limit {
                    best.pop();
                }
            }
            let mut out: Vec<(String, u64)> = best
                .into_iter()
                .map(|std::cmp::Reverse((hits, std::cmp::Reverse(page)))| (page, hits))
                .collect();
            out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            Ok(out)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|db| db.begin_read().map(|_| ()).map_err(unavailable))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BatchId;

    fn page_totals(seq: u64, pages: &[(&str, u64)]) -> SiteBatch {
        SiteBatch {
            site: Arc::from("demo"),
            id: BatchId {
                producer: Arc::from("p"),
                seq,
            },
            increments: pages
                .iter()
                .map(|&(page, hits)| Increment {
                    scope: Scope::Page(Arc::from(page)),
                    period: PeriodKey::Total,
                    hits,
                    expires_at: None,
                })
                .collect(),
            visitors: Vec::new(),
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
}
