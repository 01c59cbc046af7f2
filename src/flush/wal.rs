//! The write-ahead file: "nothing lost" between a flush and the store.
//!
//! This module owns one file, `data_dir/luot.wal` ([`FILE_NAME`]). Every
//! frozen [`SiteBatch`] is appended to it and made durable (`fdatasync`)
//! *before* it is sent to the store, and an acknowledgement record is added
//! once the store has applied it. At start, [`Wal::open`] reads the file back
//! and hands the batches that were never acknowledged to the caller, which
//! replays them with their original ids (producer, seq): the store refuses any
//! seq at or below its watermark, so replay is exactly once.
//!
//! What it must not do: talk to a store, know HTTP, spawn tasks or decide
//! when to flush. It is a plain synchronous file; the caller decides on which
//! thread its (blocking) calls run.
//!
//! # Durability
//!
//! - [`Wal::append`] writes one record and calls `fdatasync` before it
//!   returns; if anything fails, the file is cut back to its previous length,
//!   so a failed append leaves no half record behind later appends.
//! - [`Wal::ack`] writes a small record *without* syncing. Losing it in a
//!   crash only means the batch is replayed at the next start, and the store
//!   refuses it as a duplicate because its seq is at or below the watermark;
//!   correctness never depends on an acknowledgement reaching the disk.
//! - Rewrites (compaction at start, and when the file grows too large) write a
//!   temporary file, sync it, rename it over the live file and sync the
//!   directory, so a crash leaves either the old or the new file, whole.
//!
//! # File format
//!
//! A sequence of records, each
//! `[magic u8 = 0xA7][kind u8][len u32 LE][crc32 u32 LE][payload; len]`,
//! where the CRC-32 (IEEE) covers `kind`, the four `len` bytes and the
//! payload, and `len` is at most [`MAX_PAYLOAD`].
//!
//! - kind 1, a batch: the payload is a compact JSON object
//!   `{"s": site, "p": producer, "q": seq, "i": [increment, ..]}`, each
//!   increment `{"g": page or null for the site, "k": period, "h": hits,
//!   "x": [unix seconds, nanoseconds] or null}` and a period one of
//!   `{"d": "YYYY-MM-DD"}`, `{"w": ..}`, `{"m": ..}` or `"t"`.
//! - kind 2, an acknowledgement: `[seq u64 LE][site, UTF-8]`.
//!
//! Batches are keyed by (site, seq). Reading stops at the first record that is
//! truncated, has a bad magic, kind, length or checksum, or does not decode;
//! everything from there to the end is the skipped tail, reported in
//! [`Recovery::skipped_bytes`] and dropped when the file is rewritten. An
//! acknowledgement of an unknown (site, seq) is ignored; a batch whose
//! (site, seq) is already pending replaces the earlier one and takes its own
//! place in the order.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::store::{
    BatchId, BreakdownIncrement, Dimension, Increment, PeriodKey, Scope, SiteBatch, ValueBounds,
};

/// The write-ahead file's name inside the data directory.
pub const FILE_NAME: &str = "luot.wal";

/// The temporary file a rewrite goes through before it is renamed.
const TEMP_FILE_NAME: &str = "luot.wal.tmp";

/// The largest payload a record may carry (64 MiB). A length above this, or
/// above what is left of the file, marks the record as corrupt, so a damaged
/// length never makes a read allocate more than the file holds.
pub const MAX_PAYLOAD: u32 = 64 * 1024 * 1024;

const MAGIC: u8 = 0xA7;
const KIND_BATCH: u8 = 1;
const KIND_ACK: u8 = 2;
/// magic + kind + len + crc.
const HEADER_LEN: usize = 1 + 1 + 4 + 4;

/// Why a write-ahead operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "batch for site {site:?} (seq {seq}) is too large for the write-ahead file: {bytes} bytes"
    )]
    TooLarge {
        site: Arc<str>,
        seq: u64,
        bytes: usize,
    },
    #[error("batch for site {site:?} (seq {seq}) could not be encoded: {source}")]
    Encode {
        site: Arc<str>,
        seq: u64,
        #[source]
        source: serde_json::Error,
    },
}

/// What a start found in the file.
#[derive(Debug, Default)]
pub struct Recovery {
    /// The batches never acknowledged, in file (= send) order, to be replayed
    /// with their original ids.
    pub pending: Vec<SiteBatch>,
    /// Bytes of a corrupt or truncated tail that were skipped (and dropped).
    pub skipped_bytes: u64,
    /// Valid records read (batches and acknowledgements).
    pub records: u64,
}

/// When the file is compacted while running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// With no batch pending, a file larger than this is truncated to empty.
    pub truncate_idle_above: u64,
    /// With batches pending, a file larger than this (and at least twice the
    /// size of the pending records) is rewritten with only those.
    pub rewrite_above: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            truncate_idle_above: 1024 * 1024,
            rewrite_above: 64 * 1024 * 1024,
        }
    }
}

/// The open write-ahead file and the batches it holds unacknowledged.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Length of the valid content; writes go here.
    size: u64,
    /// A failed write could not be cut back: cut to `size` before the next.
    damaged: bool,
    pending: Pending,
    limits: Limits,
}

impl Wal {
    /// Opens (creates) `data_dir/luot.wal`, reads it and returns the
    /// unacknowledged batches. Rewrites the file so it holds only those
    /// (compaction at start), durably: temporary file, sync, rename, sync of
    /// the directory. A corrupt or truncated tail is skipped and reported,
    /// never an error.
    ///
    /// # Errors
    /// [`WalError::Io`] if the directory or file cannot be created, read or
    /// rewritten.
    pub fn open(data_dir: &Path) -> Result<(Wal, Recovery), WalError> {
        Wal::open_with_limits(data_dir, Limits::default())
    }

    /// [`Wal::open`] with explicit compaction thresholds.
    ///
    /// # Errors
    /// As [`Wal::open`].
    pub fn open_with_limits(data_dir: &Path, limits: Limits) -> Result<(Wal, Recovery), WalError> {
        let path = data_dir.join(FILE_NAME);
        fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        let (pending, batches, mut recovery) = read_file(&file, &path)?;
        recovery.pending = batches;

        let mut wal = Wal {
            dir: data_dir.to_path_buf(),
            path,
            file,
            size: 0,
            damaged: false,
            pending,
            limits,
        };
        // Already exactly the pending batches, nothing else: keep the file.
        let compact = recovery.skipped_bytes == 0 && recovery.records == wal.pending.len() as u64;
        if compact {
            wal.size = wal.pending.live_bytes;
            // The file may have just been created: make its name durable.
            sync_dir(&wal.dir)?;
        } else {
            wal.rewrite()?;
        }
        Ok((wal, recovery))
    }

    /// Appends a batch record and syncs it (`fdatasync`) before returning.
    /// On failure the file is cut back to where it was, and the batch is not
    /// pending: the caller must not send it as durable.
    ///
    /// # Errors
    /// [`WalError::TooLarge`] or [`WalError::Encode`] if the batch cannot be
    /// framed, [`WalError::Io`] if it cannot be written or synced.
    pub fn append(&mut self, batch: &SiteBatch) -> Result<(), WalError> {
        let payload = encode_batch(batch)?;
        if payload.len() > MAX_PAYLOAD as usize {
            return Err(WalError::TooLarge {
                site: batch.site.clone(),
                seq: batch.id.seq,
                bytes: payload.len(),
            });
        }
        let frame = frame(KIND_BATCH, &payload);
        self.write_frame(&frame, true)?;
        self.pending.insert(batch.site.clone(), batch.id.seq, frame);
        Ok(())
    }

    /// Records that the store acknowledged (applied, or refused as a
    /// duplicate) the batch (site, seq). An unknown (site, seq) is ignored.
    ///
    /// The record is not synced: if it is lost in a crash, the batch is
    /// replayed at the next start and the store refuses it, since its seq is
    /// at or below the producer's watermark. Replaying an acknowledged batch
    /// is therefore harmless, and losing an acknowledgement costs one refused
    /// request.
    ///
    /// Afterwards, when nothing is pending and the file is larger than
    /// [`Limits::truncate_idle_above`], it is truncated to empty; when batches
    /// remain pending and the file is larger than [`Limits::rewrite_above`]
    /// (and at least twice their size), it is rewritten with only those.
    ///
    /// # Errors
    /// [`WalError::Io`] if the record cannot be written or a compaction
    /// fails; the batch then stays pending (at worst it is replayed).
    pub fn ack(&mut self, site: &str, seq: u64) -> Result<(), WalError> {
        if !self.pending.contains(site, seq) {
            return Ok(());
        }
        let mut payload = Vec::with_capacity(8 + site.len());
        payload.extend_from_slice(&seq.to_le_bytes());
        payload.extend_from_slice(site.as_bytes());
        if payload.len() > MAX_PAYLOAD as usize {
            // Such a site cannot have been appended; nothing to record.
            return Ok(());
        }
        self.write_frame(&frame(KIND_ACK, &payload), false)?;
        self.pending.remove(site, seq);

        if self.pending.is_empty() {
            if self.size > self.limits.truncate_idle_above {
                self.truncate_empty()?;
            }
        } else if self.size > self.limits.rewrite_above
            && self.size >= self.pending.live_bytes.saturating_mul(2)
        {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Current file size in bytes (for a metric).
    pub fn size_bytes(&self) -> u64 {
        self.size
    }

    /// Number of unacknowledged batches.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one framed record at the end of the valid content, optionally
    /// syncing; on failure cuts the file back so no partial record remains.
    fn write_frame(&mut self, frame: &[u8], sync: bool) -> Result<(), WalError> {
        if self.damaged {
            self.file.set_len(self.size).map_err(io_err(&self.path))?;
            self.damaged = false;
        }
        let start = self.size;
        let result = (|| {
            self.file.seek(SeekFrom::Start(start))?;
            self.file.write_all(frame)?;
            if sync {
                self.file.sync_data()?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.size = start + frame.len() as u64;
                Ok(())
            }
            Err(source) => {
                if self.file.set_len(start).is_err() {
                    self.damaged = true;
                }
                Err(WalError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Cuts the file to empty (nothing pending). Not synced: if the cut is
    /// lost, the old records and their acknowledgements read back the same.
    fn truncate_empty(&mut self) -> Result<(), WalError> {
        match self.file.set_len(0) {
            Ok(()) => {
                self.size = 0;
                Ok(())
            }
            Err(source) => {
                // The file is unchanged or empty; either reads back the same,
                // but writes must continue at the old end.
                self.damaged = true;
                Err(WalError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Replaces the file with one holding only the pending batches: temporary
    /// file, sync, rename, sync of the directory. The temporary file's handle
    /// becomes the live one as soon as the rename succeeds, so later writes
    /// can never go to the replaced (unlinked) file.
    fn rewrite(&mut self) -> Result<(), WalError> {
        let temp = self.dir.join(TEMP_FILE_NAME);
        let mut out = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(io_err(&temp))?;
        for frame in self.pending.frames() {
            out.write_all(frame).map_err(io_err(&temp))?;
        }
        out.sync_all().map_err(io_err(&temp))?;
        fs::rename(&temp, &self.path).map_err(io_err(&self.path))?;
        self.file = out;
        self.size = self.pending.live_bytes;
        self.damaged = false;
        sync_dir(&self.dir)
    }
}

/// The unacknowledged batches as their framed records, in file order, keyed
/// by (site, seq).
#[derive(Debug, Default)]
struct Pending {
    /// Insertion number → (site, seq, frame).
    order: BTreeMap<u64, (Arc<str>, u64, Vec<u8>)>,
    /// site → seq → insertion number.
    index: HashMap<Arc<str>, HashMap<u64, u64>>,
    next: u64,
    /// Sum of the pending frames' lengths.
    live_bytes: u64,
}

impl Pending {
    /// Adds a batch's frame at the end; returns its insertion number and
    /// that of the entry it replaced, if any.
    fn insert(&mut self, site: Arc<str>, seq: u64, frame: Vec<u8>) -> (u64, Option<u64>) {
        let replaced = self.remove(&site, seq);
        let number = self.next;
        self.next += 1;
        self.live_bytes += frame.len() as u64;
        self.index
            .entry(site.clone())
            .or_default()
            .insert(seq, number);
        self.order.insert(number, (site, seq, frame));
        (number, replaced)
    }

    /// Removes (site, seq); returns its insertion number if it was pending.
    fn remove(&mut self, site: &str, seq: u64) -> Option<u64> {
        let seqs = self.index.get_mut(site)?;
        let number = seqs.remove(&seq)?;
        if seqs.is_empty() {
            self.index.remove(site);
        }
        if let Some((_, _, frame)) = self.order.remove(&number) {
            self.live_bytes -= frame.len() as u64;
        }
        Some(number)
    }

    fn contains(&self, site: &str, seq: u64) -> bool {
        self.index.get(site).is_some_and(|s| s.contains_key(&seq))
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn frames(&self) -> impl Iterator<Item = &[u8]> {
        self.order.values().map(|(_, _, frame)| frame.as_slice())
    }
}

/// Reads every valid record from the start of `file`, stopping at the first
/// bad one. Returns the pending frames, the pending batches in order and the
/// counts (with `pending` left empty).
fn read_file(file: &File, path: &Path) -> Result<(Pending, Vec<SiteBatch>, Recovery), WalError> {
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    reader.seek(SeekFrom::Start(0)).map_err(io_err(path))?;

    let mut pending = Pending::default();
    let mut batches: BTreeMap<u64, SiteBatch> = BTreeMap::new();
    let mut records = 0u64;
    let mut offset = 0u64;

    loop {
        let remaining = file_len - offset;
        if remaining == 0 {
            break;
        }
        match read_record(&mut reader, remaining).map_err(io_err(path))? {
            Some(Record::Batch { batch, frame }) => {
                let seq = batch.id.seq;
                let len = frame.len() as u64;
                let (number, replaced) = pending.insert(batch.site.clone(), seq, frame);
                if let Some(old) = replaced {
                    batches.remove(&old);
                }
                batches.insert(number, batch);
                offset += len;
            }
            Some(Record::Ack { site, seq, len }) => {
                if let Some(number) = pending.remove(&site, seq) {
                    batches.remove(&number);
                }
                offset += len;
            }
            None => break,
        }
        records += 1;
    }

    let recovery = Recovery {
        pending: Vec::new(),
        skipped_bytes: file_len - offset,
        records,
    };
    Ok((pending, batches.into_values().collect(), recovery))
}

/// One decoded record.
enum Record {
    Batch { batch: SiteBatch, frame: Vec<u8> },
    Ack { site: String, seq: u64, len: u64 },
}

/// Reads the next record, or `None` if it is truncated or corrupt (the start
/// of the skipped tail). `remaining` is what is left of the file, so a
/// damaged length is refused before anything is allocated for it.
fn read_record(reader: &mut impl Read, remaining: u64) -> io::Result<Option<Record>> {
    if remaining < HEADER_LEN as u64 {
        return Ok(None);
    }
    let mut header = [0u8; HEADER_LEN];
    if !read_full(reader, &mut header)? {
        return Ok(None);
    }
    let magic = header[0];
    let kind = header[1];
    let len_bytes = [header[2], header[3], header[4], header[5]];
    let len = u32::from_le_bytes(len_bytes);
    let crc = u32::from_le_bytes([header[6], header[7], header[8], header[9]]);
    if magic != MAGIC
        || !(kind == KIND_BATCH || kind == KIND_ACK)
        || len > MAX_PAYLOAD
        || u64::from(len) > remaining - HEADER_LEN as u64
    {
        return Ok(None);
    }
    let mut frame = vec![0u8; HEADER_LEN + len as usize];
    frame[..HEADER_LEN].copy_from_slice(&header);
    if !read_full(reader, &mut frame[HEADER_LEN..])? {
        return Ok(None);
    }
    let payload = &frame[HEADER_LEN..];
    if checksum(kind, len, payload) != crc {
        return Ok(None);
    }
    let record = match kind {
        KIND_BATCH => decode_batch(payload).map(|batch| Record::Batch { batch, frame }),
        _ => decode_ack(payload).map(|(site, seq)| Record::Ack {
            site,
            seq,
            len: HEADER_LEN as u64 + u64::from(len),
        }),
    };
    Ok(record)
}

/// Fills `buf`; `false` if the file ended first.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn checksum(kind: u8, len: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(&len.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Frames a payload whose length the caller has checked against
/// [`MAX_PAYLOAD`].
fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(MAGIC);
    out.push(kind);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(kind, len, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn decode_ack(payload: &[u8]) -> Option<(String, u64)> {
    let (seq, site) = payload.split_first_chunk::<8>()?;
    let site = std::str::from_utf8(site).ok()?;
    Some((site.to_owned(), u64::from_le_bytes(*seq)))
}

/// The serialized form of a [`SiteBatch`].
#[derive(Serialize, Deserialize)]
struct BatchRecord {
    #[serde(rename = "s")]
    site: Arc<str>,
    #[serde(rename = "p")]
    producer: Arc<str>,
    #[serde(rename = "q")]
    seq: u64,
    #[serde(rename = "i")]
    increments: Vec<IncrementRecord>,
    /// Absent in records written before breakdowns existed.
    #[serde(rename = "b", default, skip_serializing_if = "Vec::is_empty")]
    breakdowns: Vec<BreakdownRecord>,
    /// The value bounds, `(site, page)`.
    #[serde(rename = "v", default)]
    bounds: Option<(u32, u32)>,
    /// Page titles, `(page, title)`.
    #[serde(rename = "t", default, skip_serializing_if = "Vec::is_empty")]
    titles: Vec<(Arc<str>, Arc<str>)>,
    /// The Unix minute of the flush (see `SiteBatch::minute`); absent in
    /// records written before rolling windows existed.
    #[serde(rename = "w", default, skip_serializing_if = "Option::is_none")]
    minute: Option<i64>,
}

/// The serialized form of a [`BreakdownIncrement`].
#[derive(Serialize, Deserialize)]
struct BreakdownRecord {
    /// The page, or `None` for the site.
    #[serde(rename = "g")]
    page: Option<Arc<str>>,
    /// [`Dimension::as_str`].
    #[serde(rename = "n")]
    dimension: String,
    #[serde(rename = "d")]
    day: Date,
    #[serde(rename = "v")]
    value: Arc<str>,
    #[serde(rename = "h")]
    hits: u64,
    #[serde(rename = "x")]
    expires_at: Option<(i64, i32)>,
}

/// The serialized form of an [`Increment`].
#[derive(Serialize, Deserialize)]
struct IncrementRecord {
    /// The page, or `None` for the site.
    #[serde(rename = "g")]
    page: Option<Arc<str>>,
    #[serde(rename = "k")]
    period: PeriodRecord,
    #[serde(rename = "h")]
    hits: u64,
    /// Unix seconds and nanoseconds, exact.
    #[serde(rename = "x")]
    expires_at: Option<(i64, i32)>,
}

/// The serialized form of a [`PeriodKey`].
#[derive(Serialize, Deserialize)]
enum PeriodRecord {
    #[serde(rename = "d")]
    Day(Date),
    #[serde(rename = "w")]
    Week(Date),
    #[serde(rename = "m")]
    Month(Date),
    #[serde(rename = "t")]
    Total,
}

fn encode_batch(batch: &SiteBatch) -> Result<Vec<u8>, WalError> {
    let record = BatchRecord {
        site: batch.site.clone(),
        producer: batch.id.producer.clone(),
        seq: batch.id.seq,
        increments: batch
            .increments
            .iter()
            .map(|inc| IncrementRecord {
                page: match &inc.scope {
                    Scope::Site => None,
                    Scope::Page(p) => Some(p.clone()),
                },
                period: match inc.period {
                    PeriodKey::Day(d) => PeriodRecord::Day(d),
                    PeriodKey::Week(d) => PeriodRecord::Week(d),
                    PeriodKey::Month(d) => PeriodRecord::Month(d),
                    PeriodKey::Total => PeriodRecord::Total,
                },
                hits: inc.hits,
                expires_at: inc
                    .expires_at
                    .map(|t| (t.as_second(), t.subsec_nanosecond())),
            })
            .collect(),
        breakdowns: batch
            .breakdowns
            .iter()
            .map(|b| BreakdownRecord {
                page: match &b.scope {
                    Scope::Site => None,
                    Scope::Page(p) => Some(p.clone()),
                },
                dimension: b.dimension.as_str().to_owned(),
                day: b.day,
                value: b.value.clone(),
                hits: b.hits,
                expires_at: b.expires_at.map(|t| (t.as_second(), t.subsec_nanosecond())),
            })
            .collect(),
        bounds: Some((batch.bounds.site, batch.bounds.page)),
        titles: batch.titles.clone(),
        minute: batch.minute,
    };
    serde_json::to_vec(&record).map_err(|source| WalError::Encode {
        site: batch.site.clone(),
        seq: batch.id.seq,
        source,
    })
}

/// Decodes a batch payload; `None` if it is not one (treated as corruption).
fn decode_batch(payload: &[u8]) -> Option<SiteBatch> {
    let record: BatchRecord = serde_json::from_slice(payload).ok()?;
    let mut increments = Vec::with_capacity(record.increments.len());
    for inc in record.increments {
        let expires_at = match inc.expires_at {
            None => None,
            Some((seconds, nanos)) => Some(Timestamp::new(seconds, nanos).ok()?),
        };
        increments.push(Increment {
            scope: match inc.page {
                None => Scope::Site,
                Some(p) => Scope::Page(p),
            },
            period: match inc.period {
                PeriodRecord::Day(d) => PeriodKey::Day(d),
                PeriodRecord::Week(d) => PeriodKey::Week(d),
                PeriodRecord::Month(d) => PeriodKey::Month(d),
                PeriodRecord::Total => PeriodKey::Total,
            },
            hits: inc.hits,
            expires_at,
        });
    }
    let mut breakdowns = Vec::with_capacity(record.breakdowns.len());
    for b in record.breakdowns {
        let expires_at = match b.expires_at {
            None => None,
            Some((seconds, nanos)) => Some(Timestamp::new(seconds, nanos).ok()?),
        };
        breakdowns.push(BreakdownIncrement {
            scope: match b.page {
                None => Scope::Site,
                Some(p) => Scope::Page(p),
            },
            dimension: Dimension::from_name(&b.dimension)?,
            day: b.day,
            value: b.value,
            hits: b.hits,
            expires_at,
        });
    }
    Some(SiteBatch {
        site: record.site,
        id: BatchId {
            producer: record.producer,
            seq: record.seq,
        },
        increments,
        // Visitor sketches are not kept in the file (see SiteBatch).
        visitors: Vec::new(),
        breakdowns,
        titles: record.titles,
        minute: record.minute,
        bounds: record
            .bounds
            .map_or_else(ValueBounds::default, |(site, page)| ValueBounds {
                site,
                page,
            }),
    })
}

/// Makes renames and creations in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), WalError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
    }
    Ok(())
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn date(y: i16, m: i8, d: i8) -> Date {
        Date::new(y, m, d).unwrap()
    }

    fn batch(site: &str, seq: u64) -> SiteBatch {
        SiteBatch {
            site: site.into(),
            id: BatchId {
                producer: "host-a:7f3c".into(),
                seq,
            },
            increments: vec![
                Increment {
                    scope: Scope::Site,
                    period: PeriodKey::Day(date(2026, 11, 27)),
                    hits: 3 + seq,
                    expires_at: Some(Timestamp::new(1_800_000_000, 123_456_789).unwrap()),
                },
                Increment {
                    scope: Scope::Page("/blog/ünïcödé-日本語/%E2%9C%93?q=a%20b".into()),
                    period: PeriodKey::Week(date(2026, 11, 23)),
                    hits: u64::MAX,
                    expires_at: None,
                },
                Increment {
                    scope: Scope::Page("/\"quoted\"\\back\n".into()),
                    period: PeriodKey::Month(date(2026, 11, 1)),
                    hits: 0,
                    expires_at: Some(Timestamp::new(-5, -1).unwrap()),
                },
                Increment {
                    scope: Scope::Page("".into()),
                    period: PeriodKey::Total,
                    hits: 1,
                    expires_at: None,
                },
            ],
            visitors: Vec::new(),
            breakdowns: vec![
                BreakdownIncrement {
                    scope: Scope::Site,
                    dimension: Dimension::Country,
                    day: date(2026, 11, 27),
                    value: "VN".into(),
                    hits: 2 + seq,
                    expires_at: Some(Timestamp::new(1_800_000_000, 5).unwrap()),
                },
                BreakdownIncrement {
                    scope: Scope::Page("/blog/ünïcödé".into()),
                    dimension: Dimension::Source,
                    day: date(2026, 11, 27),
                    value: "\"zalo\"\n".into(),
                    hits: 1,
                    expires_at: None,
                },
            ],
            bounds: ValueBounds { site: 7, page: 3 },
            titles: vec![("/blog/ünïcödé".into(), "Tin <b>nóng</b> \"hôm nay\"".into())],
            minute: Some(29_496_000),
        }
    }

    fn file_bytes(dir: &Path) -> Vec<u8> {
        fs::read(dir.join(FILE_NAME)).unwrap()
    }

    fn write_file(dir: &Path, bytes: &[u8]) {
        fs::write(dir.join(FILE_NAME), bytes).unwrap();
    }

    /// Writes `batches` to a fresh WAL and returns the file's bytes and the
    /// offset at which each record starts.
    fn written(batches: &[SiteBatch]) -> (Vec<u8>, Vec<usize>) {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        let mut starts = Vec::new();
        for b in batches {
            starts.push(wal.size_bytes() as usize);
            wal.append(b).unwrap();
        }
        drop(wal);
        (file_bytes(dir.path()), starts)
    }

    #[test]
    fn unacknowledged_batches_come_back_in_order_and_exactly_equal() {
        let dir = tempfile::tempdir().unwrap();
        let (b1, b2, b3) = (
            batch("example.org", 1),
            batch("example.org", 2),
            batch("other.net", 1),
        );
        {
            let (mut wal, rec) = Wal::open(dir.path()).unwrap();
            assert!(rec.pending.is_empty());
            assert_eq!((rec.skipped_bytes, rec.records), (0, 0));
            wal.append(&b1).unwrap();
            wal.append(&b2).unwrap();
            wal.append(&b3).unwrap();
            assert_eq!(wal.pending(), 3);
            wal.ack("example.org", 2).unwrap();
            assert_eq!(wal.pending(), 2);
        }
        let (wal, rec) = Wal::open(dir.path()).unwrap();
        assert_eq!(rec.pending, vec![b1, b3]);
        assert_eq!(rec.skipped_bytes, 0);
        assert_eq!(rec.records, 4);
        assert_eq!(wal.pending(), 2);
        assert_eq!(wal.size_bytes(), file_bytes(dir.path()).len() as u64);
    }

    #[test]
    fn all_acknowledged_reopens_empty_and_compacted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            for seq in 1..=20 {
                wal.append(&batch("example.org", seq)).unwrap();
                wal.ack("example.org", seq).unwrap();
            }
            assert_eq!(wal.pending(), 0);
            assert!(wal.size_bytes() > 0);
        }
        let (wal, rec) = Wal::open(dir.path()).unwrap();
        assert!(rec.pending.is_empty());
        assert_eq!(rec.records, 40);
        assert_eq!(wal.size_bytes(), 0);
        assert_eq!(file_bytes(dir.path()).len(), 0);
    }

    #[test]
    fn ack_of_unknown_batch_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let b = batch("example.org", 7);
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            wal.append(&b).unwrap();
            let size = wal.size_bytes();
            wal.ack("example.org", 8).unwrap();
            wal.ack("unknown.site", 7).unwrap();
            assert_eq!(wal.size_bytes(), size, "nothing written for unknown acks");
            assert_eq!(wal.pending(), 1);
        }
        // Acks for unknown batches inside the file are ignored too.
        let mut bytes = file_bytes(dir.path());
        let mut payload = 99u64.to_le_bytes().to_vec();
        payload.extend_from_slice(b"example.org");
        bytes.extend_from_slice(&frame(KIND_ACK, &payload));
        write_file(dir.path(), &bytes);
        let (_, rec) = Wal::open(dir.path()).unwrap();
        assert_eq!(rec.pending, vec![b]);
        assert_eq!((rec.records, rec.skipped_bytes), (2, 0));
    }

    #[test]
    fn truncated_tail_at_every_offset_keeps_earlier_records() {
        let batches = [batch("a.org", 1), batch("a.org", 2), batch("b.org", 1)];
        let (bytes, starts) = written(&batches);
        let last = starts[2];
        for cut in last + 1..bytes.len() {
            let dir = tempfile::tempdir().unwrap();
            write_file(dir.path(), &bytes[..cut]);
            let (wal, rec) = Wal::open(dir.path()).unwrap();
            assert_eq!(rec.pending, batches[..2], "cut at {cut}");
            assert_eq!(rec.skipped_bytes, (cut - last) as u64, "cut at {cut}");
            assert_eq!(rec.records, 2);
            // The tail is gone from the file.
            assert_eq!(file_bytes(dir.path()), bytes[..last]);
            assert_eq!(wal.size_bytes(), last as u64);
        }
    }

    #[test]
    fn corrupt_byte_in_middle_record_keeps_records_before_it() {
        let batches = [batch("a.org", 1), batch("a.org", 2), batch("b.org", 1)];
        let (bytes, starts) = written(&batches);
        let (middle, end) = (starts[1], starts[2]);
        for at in middle..end {
            let dir = tempfile::tempdir().unwrap();
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x5A;
            write_file(dir.path(), &damaged);
            let (_, rec) = Wal::open(dir.path()).unwrap();
            assert_eq!(rec.pending, batches[..1], "byte {at}");
            assert_eq!(
                rec.skipped_bytes,
                (bytes.len() - middle) as u64,
                "byte {at}"
            );
            assert_eq!(file_bytes(dir.path()), bytes[..middle]);
        }
    }

    #[test]
    fn huge_length_in_a_header_is_refused_without_allocating() {
        for len in [MAX_PAYLOAD, MAX_PAYLOAD + 1, u32::MAX] {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = vec![MAGIC, KIND_BATCH];
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(&[0; 4 + 10]);
            write_file(dir.path(), &bytes);
            let (_, rec) = Wal::open(dir.path()).unwrap();
            assert!(rec.pending.is_empty());
            assert_eq!(rec.skipped_bytes, bytes.len() as u64);
        }
    }

    #[test]
    fn valid_checksum_but_undecodable_payload_is_a_corrupt_tail() {
        let (good, _) = written(&[batch("a.org", 1)]);
        let mut bytes = good.clone();
        bytes.extend_from_slice(&frame(KIND_BATCH, b"{not json"));
        bytes.extend_from_slice(&frame(KIND_ACK, b"short"));
        let dir = tempfile::tempdir().unwrap();
        write_file(dir.path(), &bytes);
        let (_, rec) = Wal::open(dir.path()).unwrap();
        assert_eq!(rec.pending, vec![batch("a.org", 1)]);
        assert_eq!(rec.skipped_bytes, (bytes.len() - good.len()) as u64);
    }

    #[test]
    fn appends_after_recovering_a_damaged_file_survive_reopen() {
        let (bytes, _) = written(&[batch("a.org", 1), batch("a.org", 2)]);
        let dir = tempfile::tempdir().unwrap();
        write_file(dir.path(), &bytes[..bytes.len() - 3]);
        {
            let (mut wal, rec) = Wal::open(dir.path()).unwrap();
            assert_eq!(rec.pending, vec![batch("a.org", 1)]);
            assert!(rec.skipped_bytes > 0);
            wal.append(&batch("a.org", 3)).unwrap();
        }
        let (_, rec) = Wal::open(dir.path()).unwrap();
        assert_eq!(rec.pending, vec![batch("a.org", 1), batch("a.org", 3)]);
        assert_eq!(rec.skipped_bytes, 0);
        assert!(!dir.path().join(TEMP_FILE_NAME).exists());
    }

    #[test]
    fn reappended_batch_replaces_the_earlier_copy() {
        let dir = tempfile::tempdir().unwrap();
        let mut changed = batch("a.org", 1);
        changed.increments.truncate(1);
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            wal.append(&batch("a.org", 1)).unwrap();
            wal.append(&batch("a.org", 2)).unwrap();
            wal.append(&changed).unwrap();
            assert_eq!(wal.pending(), 2);
        }
        let (mut wal, rec) = Wal::open(dir.path()).unwrap();
        assert_eq!(rec.pending, vec![batch("a.org", 2), changed]);
        wal.ack("a.org", 1).unwrap();
        assert_eq!(wal.pending(), 1);
    }

    #[test]
    fn idle_file_past_threshold_is_truncated_to_empty() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            truncate_idle_above: 2_000,
            rewrite_above: u64::MAX,
        };
        let (mut wal, _) = Wal::open_with_limits(dir.path(), limits).unwrap();
        let mut truncations = 0;
        for seq in 1..=50 {
            wal.append(&batch("a.org", seq)).unwrap();
            let before = wal.size_bytes();
            wal.ack("a.org", seq).unwrap();
            if wal.size_bytes() == 0 {
                truncations += 1;
                assert!(before + 23 > 2_000, "only truncated past the threshold");
            }
            assert!(wal.size_bytes() <= 3_000, "size {}", wal.size_bytes());
            assert_eq!(wal.size_bytes(), file_bytes(dir.path()).len() as u64);
        }
        assert!(truncations > 5);
        drop(wal);
        let (_, rec) = Wal::open_with_limits(dir.path(), limits).unwrap();
        assert!(rec.pending.is_empty());
        assert_eq!(rec.skipped_bytes, 0);
    }

    #[test]
    fn busy_file_past_threshold_is_rewritten_with_only_pending_batches() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            truncate_idle_above: u64::MAX,
            rewrite_above: 4_000,
        };
        let keep = [batch("kept.org", 1), batch("kept.org", 2)];
        let (mut wal, _) = Wal::open_with_limits(dir.path(), limits).unwrap();
        wal.append(&keep[0]).unwrap();
        let mut rewrites = 0;
        for seq in 1..=60 {
            if seq == 30 {
                wal.append(&keep[1]).unwrap();
            }
            wal.append(&batch("a.org", seq)).unwrap();
            let before = wal.size_bytes();
            wal.ack("a.org", seq).unwrap();
            if wal.size_bytes() < before {
                rewrites += 1;
            }
            assert!(
                wal.size_bytes() <= 4_000 + 1_000,
                "size {}",
                wal.size_bytes()
            );
            assert_eq!(wal.size_bytes(), file_bytes(dir.path()).len() as u64);
        }
        assert!(rewrites > 3);
        assert_eq!(wal.pending(), 2);
        drop(wal);
        let (_, rec) = Wal::open_with_limits(dir.path(), limits).unwrap();
        assert_eq!(rec.pending, keep);
        assert_eq!(rec.skipped_bytes, 0);
    }

    #[test]
    fn reopening_again_and_again_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            for seq in 1..=5 {
                wal.append(&batch("a.org", seq)).unwrap();
            }
            wal.ack("a.org", 2).unwrap();
            wal.ack("a.org", 4).unwrap();
        }
        let mut bytes = file_bytes(dir.path());
        bytes.extend_from_slice(&[MAGIC, KIND_BATCH, 1, 2]); // a torn tail
        write_file(dir.path(), &bytes);

        let (_, first) = Wal::open(dir.path()).unwrap();
        assert_eq!(first.skipped_bytes, 4);
        let after_first = file_bytes(dir.path());
        for _ in 0..3 {
            let (wal, again) = Wal::open(dir.path()).unwrap();
            assert_eq!(again.pending, first.pending);
            assert_eq!(again.skipped_bytes, 0);
            assert_eq!(again.records, 3);
            assert_eq!(wal.pending(), 3);
            assert_eq!(file_bytes(dir.path()), after_first);
        }
        let seqs: Vec<u64> = first.pending.iter().map(|b| b.id.seq).collect();
        assert_eq!(seqs, [1, 3, 5]);
    }

    fn arb_date() -> impl Strategy<Value = Date> {
        (-9999i16..=9999, 1i8..=12, 1i8..=28).prop_map(|(y, m, d)| Date::new(y, m, d).unwrap())
    }

    fn arb_increment() -> impl Strategy<Value = Increment> {
        (
            proptest::option::of(any::<String>()),
            (0u8..4, arb_date()),
            any::<u64>(),
            proptest::option::of((
                Timestamp::MIN.as_second() + 1..Timestamp::MAX.as_second(),
                0i32..1_000_000_000,
            )),
        )
            .prop_map(|(page, (kind, d), hits, x)| Increment {
                scope: page.map_or(Scope::Site, |p| Scope::Page(p.into())),
                period: match kind {
                    0 => PeriodKey::Day(d),
                    1 => PeriodKey::Week(d),
                    2 => PeriodKey::Month(d),
                    _ => PeriodKey::Total,
                },
                hits,
                expires_at: x.map(|(s, n)| Timestamp::new(s, n).unwrap()),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_batch_round_trips_exactly(
            site in any::<String>(),
            producer in any::<String>(),
            seq in any::<u64>(),
            increments in proptest::collection::vec(arb_increment(), 0..8),
        ) {
            let b = SiteBatch {
                site: site.into(),
                id: BatchId { producer: producer.into(), seq },
                increments,
                visitors: Vec::new(),
                breakdowns: Vec::new(),
                bounds: Default::default(),
                titles: Vec::new(),
                minute: None,
            };
            let payload = encode_batch(&b).unwrap();
            prop_assert_eq!(decode_batch(&payload), Some(b.clone()));

            let dir = tempfile::tempdir().unwrap();
            {
                let (mut wal, _) = Wal::open(dir.path()).unwrap();
                wal.append(&b).unwrap();
            }
            let (_, rec) = Wal::open(dir.path()).unwrap();
            prop_assert_eq!(rec.pending, vec![b]);
        }

        #[test]
        fn junk_file_never_panics_and_is_skipped(
            junk in proptest::collection::vec(any::<u8>(), 0..4096),
            magic_first in any::<bool>(),
        ) {
            let mut junk = junk;
            if magic_first && junk.len() >= 2 {
                junk[0] = MAGIC;
                junk[1] = KIND_BATCH;
            }
            let dir = tempfile::tempdir().unwrap();
            write_file(dir.path(), &junk);
            let (wal, rec) = Wal::open(dir.path()).unwrap();
            prop_assert!(rec.skipped_bytes <= junk.len() as u64);
            prop_assert!(wal.size_bytes() <= junk.len() as u64 - rec.skipped_bytes);
            if !junk.is_empty() && rec.records == 0 {
                prop_assert_eq!(rec.skipped_bytes, junk.len() as u64);
                prop_assert_eq!(wal.size_bytes(), 0);
            }
            drop(wal);
            let (_, again) = Wal::open(dir.path()).unwrap();
            prop_assert_eq!(again.skipped_bytes, 0);
            prop_assert_eq!(again.pending, rec.pending);
        }
    }
}
