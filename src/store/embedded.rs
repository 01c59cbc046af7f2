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

use super::{Applied, Members, PeriodKey, Reading, Scope, SiteBatch, SketchKey, Store, StoreError};
use crate::sketch::{HLL_REGISTERS, SketchUnion};

/// Counter values: (site, scope, period name) → hits. The scope is the page
/// path, or "" for the site.
const COUNTERS: TableDefinition<(&str, &str, &str), u64> = TableDefinition::new("counters");
/// Retention index: (expiry in Unix seconds, site, scope, period) → (). A
/// range scan from the start finds what has expired.
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

/// How many expired counters one flush transaction deletes at most, so a
/// backlog of expiries never makes one flush slow.
const PRUNE_PER_BATCH: usize = 1_000;

/// The file name inside `data_dir`.
pub const FILE_NAME: &str = "luot.redb";

/// A handle to the embedded store; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
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
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(m)) => {
                StoreError::Corrupt(m)
            }
            other => StoreError::Unavailable(format!("{}: {other}", path.display())),
        })?;
        let tx = db.begin_write().map_err(unavailable)?;
        {
            tx.open_table(COUNTERS).map_err(unavailable)?;
            tx.open_table(EXPIRY).map_err(unavailable)?;
            tx.open_table(WATERMARKS).map_err(unavailable)?;
            tx.open_table(SECRETS).map_err(unavailable)?;
            tx.open_table(SKETCHES).map_err(unavailable)?;
        }
        tx.commit().map_err(unavailable)?;
        Ok(EmbeddedStore { db: Arc::new(db) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("blocking task failed: {e}")))?
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn apply_blocking(db: &Database, batch: &SiteBatch) -> Result<Applied, StoreError> {
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
        let mut counters = tx.open_table(COUNTERS).map_err(unavailable)?;
        let mut expiry = tx.open_table(EXPIRY).map_err(unavailable)?;
        let mut skipped = 0u64;
        for inc in &batch.increments {
            if inc.expires_at.is_some_and(|at| at <= now) {
                // The period's figure is already gone; recreating it would
                // bring back a key without its retention.
                skipped += 1;
                continue;
            }
            let period = inc.period.to_string();
            let key = (batch.site.as_ref(), inc.scope.as_key(), period.as_str());
            let old = counters.get(key).map_err(unavailable)?.map(|v| v.value());
            let new = old.unwrap_or(0).saturating_add(inc.hits);
            counters.insert(key, new).map_err(unavailable)?;
            if let (None, Some(at)) = (old, inc.expires_at) {
                expiry
                    .insert((at.as_second(), key.0, key.1, key.2), ())
                    .map_err(unavailable)?;
            }
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
        prune_expired(&mut counters, &mut sketches, &mut expiry, now)?;
    }
    tx.commit().map_err(unavailable)?;
    Ok(Applied::Fresh { late })
}

/// Deletes counters whose retention has passed, at most
/// [`PRUNE_PER_BATCH`] per call.
fn prune_expired(
    counters: &mut redb::Table<(&str, &str, &str), u64>,
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
        } else {
            counters
                .remove((site.as_str(), scope.as_str(), period.as_str()))
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
        let batch = batch.clone();
        self.blocking(move |db| apply_blocking(db, &batch)).await
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
        let names: Vec<String> = periods.iter().map(ToString::to_string).collect();
        let producer = producer.to_string();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let counters = tx.open_table(COUNTERS).map_err(unavailable)?;
            let marks = tx.open_table(WATERMARKS).map_err(unavailable)?;
            let mut values = Vec::with_capacity(names.len());
            for name in &names {
                let v = counters
                    .get((site.as_str(), scope.as_str(), name.as_str()))
                    .map_err(unavailable)?
                    .map(|v| v.value())
                    .unwrap_or(0);
                values.push(v);
            }
            let watermark = marks
                .get((site.as_str(), producer.as_str()))
                .map_err(unavailable)?
                .map(|v| v.value().0)
                .unwrap_or(0);
            Ok(Reading { values, watermark })
        })
        .await
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

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|db| db.begin_read().map(|_| ()).map_err(unavailable))
            .await
    }
}
