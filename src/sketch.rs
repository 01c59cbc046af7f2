//! Distinct counting of visitors: a lock-free sketch that is exact for small
//! numbers and a HyperLogLog (Redis-compatible registers, ~0.81 % standard
//! error) beyond. Knows nothing of visitors, HTTP or stores: it counts 64-bit
//! hashes.
//!
//! Two types live here. [`Sketch`] is the write side: it is shared between
//! request threads and updated through `&self` without locks or allocation.
//! [`SketchUnion`] is the read side: an owned snapshot that merges any number
//! of sketches (or other unions), answers `count`, and can be shipped to a
//! store either as parts ([`SketchUnion::registers`],
//! [`SketchUnion::exact_members`]) or as one checked byte string
//! ([`SketchUnion::to_bytes`]).
//!
//! The HyperLogLog follows Redis to the bit: 16384 registers indexed by the
//! low 14 bits of the hash, a register value equal to the number of trailing
//! zeros of the remaining 50 bits plus one, and the estimator of Redis's
//! `hllCount` (Otmar Ertl's improved estimator). The same registers therefore
//! give the same estimate here as `PFCOUNT` would give in Redis.
//!
//! The one deliberate deviation is the hash `0`, which both halves of the
//! sketch treat as if it were [`ZERO_SUBSTITUTE`], because the exact set uses
//! `0` to mark an empty slot. Colliding with that one constant costs nothing
//! measurable, and keeping both halves on the same value keeps the registers
//! derivable from the exact members.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

/// Number of slots of the exact set; twice [`EXACT_LIMIT`] so that linear
/// probing stays short (load factor at most one half).
pub const EXACT_SLOTS: usize = 4096;

/// Largest number of distinct hashes counted exactly; one more and the
/// sketch answers with the HyperLogLog estimate instead.
pub const EXACT_LIMIT: usize = 2048;

/// Number of HyperLogLog registers (precision p = 14), the same as Redis so
/// that registers can be copied into a Redis HyperLogLog unchanged.
pub const HLL_REGISTERS: usize = 1 << HLL_P;

/// The value stored (and counted) in place of a hash equal to 0, because 0
/// marks an empty slot of the exact set. It is the 64-bit golden ratio, an
/// arbitrary but well-mixed non-zero constant.
pub const ZERO_SUBSTITUTE: u64 = 0x9E37_79B9_7F4A_7C15;

/// Number of hash bits used to choose a register (Redis's `HLL_P`).
const HLL_P: u32 = 14;

/// Number of hash bits left to count trailing zeros in (Redis's `HLL_Q`).
const HLL_Q: usize = 64 - HLL_P as usize;

/// Largest value a register can hold, reached when all `HLL_Q` bits are zero.
const HLL_MAX_REGISTER: u8 = HLL_Q as u8 + 1;

/// Redis's `HLL_ALPHA_INF`, that is 0.5 / ln 2, spelt as Redis spells it so
/// that the estimate is bit-for-bit the same.
const HLL_ALPHA_INF: f64 = 0.721_347_520_444_481_7;

/// Longest probe sequence tried before the exact set gives up. At a load
/// factor of at most one half and well-mixed hashes a probe this long is
/// astronomically unlikely; with adversarial hashes the sketch merely falls
/// back to the HyperLogLog, which is always up to date.
const MAX_PROBE: usize = 128;

/// Size in bytes of the registers packed at 6 bits each, the layout of a
/// dense Redis HyperLogLog.
const DENSE_BYTES: usize = HLL_REGISTERS * 6 / 8;

/// Current version of the byte encoding written by [`SketchUnion::to_bytes`].
const ENCODING_VERSION: u8 = 1;

/// Encoding kind: the sorted exact members follow.
const KIND_EXACT: u8 = 0;

/// Encoding kind: registers in the run-length form described at
/// [`encode_sparse`].
const KIND_SPARSE: u8 = 1;

/// Encoding kind: registers packed at 6 bits each, as in Redis's dense form.
const KIND_DENSE: u8 = 2;

/// Bytes before the payload: version, kind and the payload length (u32 LE).
const HEADER_LEN: usize = 6;

/// Bytes after the payload: the CRC-32 of everything before it (u32 LE).
const TRAILER_LEN: usize = 4;

/// Returns the register index and the register candidate value of a hash,
/// exactly as Redis's `hllPatLen` does after hashing the element.
fn hll_position(hash: u64) -> (usize, u8) {
    let index = (hash & (HLL_REGISTERS as u64 - 1)) as usize;
    // The guard bit makes the count at most HLL_Q + 1 even when all the
    // remaining bits are zero.
    let bits = (hash >> HLL_P) | (1u64 << HLL_Q);
    let count = bits.trailing_zeros() as u8 + 1;
    (index, count)
}

/// Redis's MurmurHash64A with its HyperLogLog seed, as `PFADD` applies it to
/// an element. Members enter the registers through it, so that sending the
/// members to Redis with `PFADD` (each as its 8 little-endian bytes) and
/// sending these registers give the same HyperLogLog.
pub fn redis_element_hash(data: &[u8]) -> u64 {
    const M: u64 = 0xc6a4_a793_5bd1_e995;
    const R: u32 = 47;
    const SEED: u64 = 0xadc8_3b19;
    let mut h = SEED ^ (data.len() as u64).wrapping_mul(M);
    let mut blocks = data.chunks_exact(8);
    for block in &mut blocks {
        let mut k = u64::from_le_bytes(block.try_into().expect("8-byte block"));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate() {
            h ^= u64::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

/// The register position of a stored member: Redis's hash of its 8
/// little-endian bytes, then Redis's index and count.
fn member_position(member: u64) -> (usize, u8) {
    hll_position(redis_element_hash(&member.to_le_bytes()))
}

/// The member as Redis's `PFADD` should receive it.
pub fn member_bytes(member: u64) -> [u8; 8] {
    member.to_le_bytes()
}

/// Maps a caller's hash to the value the sketch stores, so that 0 can mark
/// an empty slot.
fn normalize(hash: u64) -> u64 {
    if hash == 0 { ZERO_SUBSTITUTE } else { hash }
}

/// Returns the home slot of a key in the exact set. Fibonacci hashing takes
/// the top bits of a multiplication, so that even poorly mixed hashes spread
/// out, and it uses other bits than the register index does.
fn home_slot(key: u64) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - EXACT_SLOTS.trailing_zeros())) as usize
}

/// A concurrent distinct counter over 64-bit hashes, shared between threads
/// and updated through `&self`.
///
/// It keeps two things at once. An exact set answers while at most
/// [`EXACT_LIMIT`] distinct hashes have been seen, because small counts are
/// the common case and an estimate of 3 for 2 visitors looks broken. The
/// HyperLogLog registers are always updated, so that once the set overflows
/// the estimate is immediately available and correct.
pub struct Sketch {
    /// Open-addressing table of members; 0 marks an empty slot.
    slots: Box<[AtomicU64]>,
    /// Number of members successfully placed in `slots`.
    len: AtomicU32,
    /// Set once the exact set stopped being complete; never cleared.
    overflowed: AtomicBool,
    /// HyperLogLog registers in Redis's convention, one byte each.
    registers: Box<[AtomicU8]>,
}

impl Sketch {
    /// Creates an empty sketch. This is the only allocation the sketch ever
    /// makes (about 48 KiB), so that [`Sketch::insert`] never allocates.
    #[must_use]
    pub fn new() -> Self {
        Self {
            slots: (0..EXACT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            len: AtomicU32::new(0),
            overflowed: AtomicBool::new(false),
            registers: (0..HLL_REGISTERS).map(|_| AtomicU8::new(0)).collect(),
        }
    }

    /// Records one hash. It is lock-free, never allocates and never blocks,
    /// so that it can sit on the hot path of every request.
    ///
    /// Returns whether the count may have changed: true when the hash was
    /// new to the exact set, or when the set has overflowed (whether a hash
    /// is new is then unknowable); false for a hash already counted.
    pub fn insert(&self, hash: u64) -> bool {
        let key = normalize(hash);
        let (index, count) = member_position(key);
        // The register is raised before the key is published in the exact
        // set, and the publishing compare-exchange releases it, so that a
        // reader which sees the key also sees its register.
        let old = self.registers[index].fetch_max(count, Ordering::Relaxed);

        if self.overflowed.load(Ordering::Relaxed) {
            return old < count;
        }
        let mut slot = home_slot(key);
        for _ in 0..MAX_PROBE {
            let cell = &self.slots[slot];
            let current = cell.load(Ordering::Acquire);
            if current == key {
                return false;
            }
            if current == 0 {
                match cell.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        let before = self.len.fetch_add(1, Ordering::AcqRel);
                        if before as usize >= EXACT_LIMIT {
                            self.overflowed.store(true, Ordering::Release);
                        }
                        return true;
                    }
                    // Another thread inserted the same key at the same time.
                    Err(actual) if actual == key => return false,
                    // Another thread took the slot for a different key, so
                    // the probe goes on.
                    Err(_) => {}
                }
            }
            slot = (slot + 1) % EXACT_SLOTS;
        }
        // The key could not be placed, so the set is no longer complete.
        self.overflowed.store(true, Ordering::Release);
        true
    }

    /// Returns the number of distinct hashes seen: exact while
    /// [`Sketch::is_exact`], otherwise the HyperLogLog estimate.
    #[must_use]
    pub fn count(&self) -> u64 {
        if let Some(len) = self.exact_len() {
            return len as u64;
        }
        let mut histogram = [0u32; 64];
        for register in self.registers.iter() {
            histogram[usize::from(register.load(Ordering::Relaxed).min(HLL_MAX_REGISTER))] += 1;
        }
        estimate_from_histogram(&histogram)
    }

    /// Tells whether [`Sketch::count`] is currently exact, so that callers
    /// can label or round an approximate answer.
    #[must_use]
    pub fn is_exact(&self) -> bool {
        self.exact_len().is_some()
    }

    /// Returns the exact size while the set is complete and within the limit.
    fn exact_len(&self) -> Option<usize> {
        let len = self.len.load(Ordering::Acquire) as usize;
        // A length past the limit can be observed just before the thread
        // that caused it raises the flag, hence the second test.
        if self.overflowed.load(Ordering::Acquire) || len > EXACT_LIMIT {
            None
        } else {
            Some(len)
        }
    }

    /// Copies the members out while the set is complete, or returns `None`.
    ///
    /// Slots only ever go from empty to a key, so the copy is a set of real
    /// members containing every member inserted before the copy began; the
    /// flag is read again afterwards so that a set which overflowed during
    /// the copy is not passed off as complete.
    fn exact_snapshot(&self) -> Option<Vec<u64>> {
        if self.overflowed.load(Ordering::Acquire) {
            return None;
        }
        let members: Vec<u64> = self
            .slots
            .iter()
            .map(|slot| slot.load(Ordering::Acquire))
            .filter(|&key| key != 0)
            .collect();
        if self.overflowed.load(Ordering::Acquire) || members.len() > EXACT_LIMIT {
            None
        } else {
            Some(members)
        }
    }
}

impl Default for Sketch {
    /// Same as [`Sketch::new`], so that a sketch can be built by containers
    /// that require `Default`.
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Sketch {
    /// Shows the summary rather than 20 000 atomics, which would drown any
    /// log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sketch")
            .field("exact", &self.is_exact())
            .field("count", &self.count())
            .finish()
    }
}

/// An owned, mergeable snapshot of one or more sketches, built at read time
/// to answer "how many distinct hashes across these sketches".
///
/// It stays exact (a real set of members) while every input was exact and
/// the union holds at most [`EXACT_LIMIT`] members; its registers are always
/// the element-wise maximum of all inputs, so that the HyperLogLog answer is
/// ready the moment exactness is lost. While it is exact the members are the
/// authority: the registers are derivable from them, and the byte encoding
/// carries only the members.
#[derive(Clone, PartialEq, Eq)]
pub struct SketchUnion {
    /// Merged registers, always [`HLL_REGISTERS`] long, each at most 51.
    registers: Box<[u8]>,
    /// The members while the union is exact.
    exact: Option<HashSet<u64>>,
}

impl SketchUnion {
    /// Creates the union of nothing: exact, with a count of zero, so that
    /// unions can be folded from an empty start.
    #[must_use]
    pub fn new() -> Self {
        Self {
            registers: vec![0u8; HLL_REGISTERS].into_boxed_slice(),
            exact: Some(HashSet::new()),
        }
    }

    /// Merges a snapshot of a (possibly concurrently updated) sketch into the
    /// union, so that readers never hold up writers.
    pub fn add(&mut self, sketch: &Sketch) {
        // The members are read before the registers, so that every member
        // seen also has its register seen (see `Sketch::insert`).
        let members = sketch.exact_snapshot();
        for (mine, theirs) in self.registers.iter_mut().zip(sketch.registers.iter()) {
            *mine = (*mine).max(theirs.load(Ordering::Relaxed));
        }
        match members {
            Some(members) => self.merge_exact(members),
            None => self.exact = None,
        }
    }

    /// Merges another union into this one. The operation is associative and
    /// commutative, so that partial unions (per shard, per period) can be
    /// combined in any order.
    pub fn add_union(&mut self, other: &SketchUnion) {
        for (mine, theirs) in self.registers.iter_mut().zip(other.registers.iter()) {
            *mine = (*mine).max(*theirs);
        }
        match &other.exact {
            Some(members) => self.merge_exact(members.iter().copied()),
            None => self.exact = None,
        }
    }

    /// Returns the number of distinct hashes in the union: exact while
    /// [`SketchUnion::is_exact`], otherwise Redis's HyperLogLog estimate.
    #[must_use]
    pub fn count(&self) -> u64 {
        match &self.exact {
            Some(members) => members.len() as u64,
            None => estimate(&self.registers),
        }
    }

    /// Tells whether [`SketchUnion::count`] is exact, so that callers can
    /// label or round an approximate answer.
    #[must_use]
    pub fn is_exact(&self) -> bool {
        self.exact.is_some()
    }

    /// Returns the merged registers, [`HLL_REGISTERS`] bytes each holding a
    /// value from 0 to 51 in Redis's convention, so that they can be written
    /// to a store (for instance into a Redis HyperLogLog).
    #[must_use]
    pub fn registers(&self) -> &[u8] {
        &self.registers
    }

    /// Returns the members, in no particular order, while the union is
    /// exact, so that they can be written to a store; `None` once the union
    /// is approximate. A hash of 0 appears as [`ZERO_SUBSTITUTE`].
    pub fn exact_members(&self) -> Option<impl Iterator<Item = u64> + '_> {
        self.exact.as_ref().map(|members| members.iter().copied())
    }

    /// Rebuilds a union from parts previously taken from
    /// [`SketchUnion::registers`] and [`SketchUnion::exact_members`], so that
    /// state kept in a store can be merged again.
    ///
    /// The registers must be exactly [`HLL_REGISTERS`] long with values of
    /// at most 51. Members may come in any order and with repeats. The
    /// registers are raised to cover the members, since the members are the
    /// authority while exact. More than [`EXACT_LIMIT`] distinct members is
    /// not an error: the union is simply approximate, as if it had been
    /// merged from those members.
    ///
    /// # Errors
    ///
    /// [`SketchError::RegisterCount`] for registers of the wrong length and
    /// [`SketchError::RegisterValue`] for a register above 51.
    pub fn from_parts(registers: &[u8], exact: Option<&[u64]>) -> Result<SketchUnion, SketchError> {
        if registers.len() != HLL_REGISTERS {
            return Err(SketchError::RegisterCount {
                len: registers.len(),
            });
        }
        if let Some((index, &value)) = registers
            .iter()
            .enumerate()
            .find(|&(_, &value)| value > HLL_MAX_REGISTER)
        {
            return Err(SketchError::RegisterValue { index, value });
        }
        let mut union = SketchUnion {
            registers: registers.into(),
            exact: None,
        };
        if let Some(members) = exact {
            let members: HashSet<u64> = members.iter().map(|&hash| normalize(hash)).collect();
            for &key in &members {
                union.raise(key);
            }
            if members.len() <= EXACT_LIMIT {
                union.exact = Some(members);
            }
        }
        Ok(union)
    }

    /// Encodes the union as a compact, versioned, self-checking byte string,
    /// so that it can be stored as one opaque value.
    ///
    /// Layout: version (1 byte, currently 1), kind (1 byte), payload length
    /// (u32 LE), payload, CRC-32/IEEE of everything before it (u32 LE). The
    /// kinds are 0 = exact members as strictly ascending u64 LE; 1 = registers
    /// run-length encoded (see `encode_sparse`); 2 = registers packed at 6
    /// bits each in the layout of Redis's dense HyperLogLog (12 288 bytes).
    /// Of kinds 1 and 2 the shorter one is written.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut payload = Vec::new();
        let kind = match &self.exact {
            Some(members) => {
                let mut sorted: Vec<u64> = members.iter().copied().collect();
                sorted.sort_unstable();
                payload.reserve(sorted.len() * 8);
                for key in sorted {
                    payload.extend_from_slice(&key.to_le_bytes());
                }
                KIND_EXACT
            }
            None => {
                encode_sparse(&self.registers, &mut payload);
                if payload.len() < DENSE_BYTES {
                    KIND_SPARSE
                } else {
                    payload = pack_dense(&self.registers);
                    KIND_DENSE
                }
            }
        };
        // The payload is at most 2048 members of 8 bytes, so it fits a u32.
        let payload_len = payload.len() as u32;
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + TRAILER_LEN);
        out.push(ENCODING_VERSION);
        out.push(kind);
        out.extend_from_slice(&payload_len.to_le_bytes());
        out.extend_from_slice(&payload);
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes what [`SketchUnion::to_bytes`] wrote. Any damage (truncation,
    /// flipped bits, junk, a future version) is reported as an error rather
    /// than a panic or a silently wrong count.
    ///
    /// # Errors
    ///
    /// [`SketchError::Truncated`] when bytes are missing,
    /// [`SketchError::ChecksumMismatch`] when they were damaged,
    /// [`SketchError::UnsupportedVersion`] for another encoding version and
    /// [`SketchError::Malformed`] when a checksummed payload is invalid.
    pub fn from_bytes(bytes: &[u8]) -> Result<SketchUnion, SketchError> {
        if bytes.len() < HEADER_LEN + TRAILER_LEN {
            return Err(SketchError::Truncated { len: bytes.len() });
        }
        let declared = u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]) as usize;
        let expected = HEADER_LEN
            .checked_add(declared)
            .and_then(|n| n.checked_add(TRAILER_LEN));
        match expected {
            Some(expected) if expected == bytes.len() => {}
            Some(expected) if expected > bytes.len() => {
                return Err(SketchError::Truncated { len: bytes.len() });
            }
            _ => return Err(SketchError::Malformed("length does not match the header")),
        }
        let (body, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
        let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        if crc32(body) != stored {
            return Err(SketchError::ChecksumMismatch);
        }
        if body[0] != ENCODING_VERSION {
            return Err(SketchError::UnsupportedVersion(body[0]));
        }
        let payload = &body[HEADER_LEN..];
        match body[1] {
            KIND_EXACT => decode_exact(payload),
            KIND_SPARSE => Ok(SketchUnion {
                registers: decode_sparse(payload)?,
                exact: None,
            }),
            KIND_DENSE => Ok(SketchUnion {
                registers: unpack_dense(payload)?,
                exact: None,
            }),
            _ => Err(SketchError::Malformed("unknown kind")),
        }
    }

    /// Adds exact members; drops exactness once the union passes the limit.
    fn merge_exact(&mut self, members: impl IntoIterator<Item = u64>) {
        if let Some(set) = &mut self.exact {
            set.extend(members);
            if set.len() > EXACT_LIMIT {
                self.exact = None;
            }
        }
    }

    /// Raises the register of one stored key, as an insert would have.
    fn raise(&mut self, key: u64) {
        let (index, count) = member_position(key);
        self.registers[index] = self.registers[index].max(count);
    }
}

impl Default for SketchUnion {
    /// Same as [`SketchUnion::new`], the empty union.
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SketchUnion {
    /// Shows the summary rather than 16 384 registers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SketchUnion")
            .field("exact", &self.is_exact())
            .field("count", &self.count())
            .finish()
    }
}

/// Why parts or bytes could not be turned into a [`SketchUnion`], so that a
/// caller can tell damaged stored data from a programming error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SketchError {
    /// The bytes end before the header, payload and checksum they announce.
    Truncated {
        /// Number of bytes received.
        len: usize,
    },
    /// The checksum does not match: the bytes were damaged.
    ChecksumMismatch,
    /// The bytes were written by an encoding version this code cannot read.
    UnsupportedVersion(u8),
    /// The bytes pass the checksum but do not describe a valid union, which
    /// points at a bug in whatever wrote them.
    Malformed(&'static str),
    /// Registers of the wrong length were given.
    RegisterCount {
        /// Number of registers received.
        len: usize,
    },
    /// A register holds a value that Redis's convention cannot produce.
    RegisterValue {
        /// Position of the offending register.
        index: usize,
        /// Its value, greater than 51.
        value: u8,
    },
}

impl fmt::Display for SketchError {
    /// Describes the error for logs, in lower case without a full stop, as
    /// is usual for error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SketchError::Truncated { len } => write!(f, "sketch encoding truncated at {len} bytes"),
            SketchError::ChecksumMismatch => write!(f, "sketch encoding checksum mismatch"),
            SketchError::UnsupportedVersion(version) => {
                write!(f, "unsupported sketch encoding version {version}")
            }
            SketchError::Malformed(what) => write!(f, "malformed sketch encoding: {what}"),
            SketchError::RegisterCount { len } => {
                write!(f, "expected {HLL_REGISTERS} registers, got {len}")
            }
            SketchError::RegisterValue { index, value } => write!(
                f,
                "register {index} holds {value}, more than the maximum {HLL_MAX_REGISTER}"
            ),
        }
    }
}

impl std::error::Error for SketchError {}

/// Decodes the payload of an exact encoding: strictly ascending, non-zero
/// members, at most [`EXACT_LIMIT`] of them. Registers are rebuilt from them.
fn decode_exact(payload: &[u8]) -> Result<SketchUnion, SketchError> {
    if !payload.len().is_multiple_of(8) {
        return Err(SketchError::Malformed("exact payload is not whole u64s"));
    }
    if payload.len() / 8 > EXACT_LIMIT {
        return Err(SketchError::Malformed("more exact members than the limit"));
    }
    let mut union = SketchUnion::new();
    let mut members = HashSet::with_capacity(payload.len() / 8);
    let mut previous = 0u64;
    for chunk in payload.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let key = u64::from_le_bytes(word);
        // Keys are non-zero, so starting from 0 also rejects a zero key.
        if key <= previous {
            return Err(SketchError::Malformed(
                "exact members not strictly ascending",
            ));
        }
        previous = key;
        members.insert(key);
        union.raise(key);
    }
    union.exact = Some(members);
    Ok(union)
}

/// Appends the registers in a run-length form that is small when most
/// registers are zero, the usual case at small cardinalities.
///
/// Each token is one of: a byte `0x00..=0x3F`, one register of that value;
/// a byte `0x40 | (n - 1)`, a run of n zero registers for n in 1..=64; two
/// bytes `0x80 | ((n - 1) >> 8)`, `(n - 1) & 0xFF`, a run of n zero registers
/// for n in 1..=32768.
fn encode_sparse(registers: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < registers.len() {
        if registers[i] != 0 {
            out.push(registers[i]);
            i += 1;
            continue;
        }
        let start = i;
        while i < registers.len() && registers[i] == 0 {
            i += 1;
        }
        let run = i - start - 1;
        if run < 64 {
            out.push(0x40 | run as u8);
        } else {
            out.push(0x80 | (run >> 8) as u8);
            out.push(run as u8);
        }
    }
}

/// Reverses [`encode_sparse`], checking that the tokens describe exactly
/// [`HLL_REGISTERS`] registers of valid values.
fn decode_sparse(payload: &[u8]) -> Result<Box<[u8]>, SketchError> {
    let mut registers = vec![0u8; HLL_REGISTERS];
    let mut filled = 0usize;
    let mut tokens = payload.iter();
    while let Some(&token) = tokens.next() {
        let (value, run) = match token {
            0x00..=0x3F => (token, 1),
            0x40..=0x7F => (0, usize::from(token & 0x3F) + 1),
            _ => {
                let low = *tokens
                    .next()
                    .ok_or(SketchError::Malformed("zero run cut short"))?;
                (0, (usize::from(token & 0x7F) << 8 | usize::from(low)) + 1)
            }
        };
        if value > HLL_MAX_REGISTER {
            return Err(SketchError::Malformed("register value above 51"));
        }
        if run > HLL_REGISTERS - filled {
            return Err(SketchError::Malformed("runs exceed the register count"));
        }
        registers[filled..filled + run].fill(value);
        filled += run;
    }
    if filled != HLL_REGISTERS {
        return Err(SketchError::Malformed(
            "runs fall short of the register count",
        ));
    }
    Ok(registers.into_boxed_slice())
}

/// Packs the registers at 6 bits each, least significant bits first, which
/// is byte for byte the register area of a dense Redis HyperLogLog.
fn pack_dense(registers: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; DENSE_BYTES];
    for (i, &value) in registers.iter().enumerate() {
        let bit = i * 6;
        let shifted = u16::from(value & 0x3F) << (bit % 8);
        out[bit / 8] |= shifted as u8;
        if bit % 8 > 2 {
            out[bit / 8 + 1] |= (shifted >> 8) as u8;
        }
    }
    out
}

/// A complete dense Redis HyperLogLog string of `registers`: the 16-byte
/// header (`HYLL`, dense encoding, an invalidated cardinality cache) and the
/// packed registers, ready for `SET` and `PFMERGE`.
pub fn redis_dense_hll(registers: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + DENSE_BYTES);
    out.extend_from_slice(b"HYLL");
    out.push(0); // dense
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&[0; 7]);
    out.push(0x80); // the cached cardinality is invalid
    out.extend_from_slice(&pack_dense(registers));
    out
}

/// Reverses [`pack_dense`], checking the length and the register values.
fn unpack_dense(payload: &[u8]) -> Result<Box<[u8]>, SketchError> {
    if payload.len() != DENSE_BYTES {
        return Err(SketchError::Malformed("dense payload has the wrong length"));
    }
    let mut registers = vec![0u8; HLL_REGISTERS];
    for (i, register) in registers.iter_mut().enumerate() {
        let bit = i * 6;
        let low = u16::from(payload[bit / 8]);
        let high = u16::from(payload.get(bit / 8 + 1).copied().unwrap_or(0));
        let value = (((high << 8 | low) >> (bit % 8)) & 0x3F) as u8;
        if value > HLL_MAX_REGISTER {
            return Err(SketchError::Malformed("register value above 51"));
        }
        *register = value;
    }
    Ok(registers.into_boxed_slice())
}

/// Redis's estimate for a slice of registers.
fn estimate(registers: &[u8]) -> u64 {
    let mut histogram = [0u32; 64];
    for &value in registers {
        histogram[usize::from(value.min(HLL_MAX_REGISTER))] += 1;
    }
    estimate_from_histogram(&histogram)
}

/// Redis's `hllCount` estimator on a register histogram (Otmar Ertl, "New
/// cardinality estimation algorithms for HyperLogLog sketches",
/// arXiv:1702.01284), written operation for operation like the C so that the
/// floating-point result, and hence the rounded count, is identical.
fn estimate_from_histogram(histogram: &[u32; 64]) -> u64 {
    let m = HLL_REGISTERS as f64;
    let mut z = m * hll_tau((m - f64::from(histogram[HLL_Q + 1])) / m);
    for j in (1..=HLL_Q).rev() {
        z += f64::from(histogram[j]);
        z *= 0.5;
    }
    z += m * hll_sigma(f64::from(histogram[0]) / m);
    // With all registers zero z is infinite and the estimate is 0, as in
    // Redis; `round` rounds half away from zero like `llroundl`.
    (HLL_ALPHA_INF * m * m / z).round() as u64
}

/// Redis's `hllSigma`, the correction for registers still at zero.
fn hll_sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let z_prime = z;
        z += x * y;
        y += y;
        if z_prime == z {
            return z;
        }
    }
}

/// Redis's `hllTau`, the correction for registers at the maximum value.
fn hll_tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let z_prime = z;
        y *= 0.5;
        // Redis writes pow(1 - x, 2), which is exactly this product.
        z -= (1.0 - x) * (1.0 - x) * y;
        if z_prime == z {
            return z / 3.0;
        }
    }
}

/// Lookup table of the reflected CRC-32/IEEE polynomial, built at compile
/// time so that no dependency is needed.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32/IEEE (as in zlib and Ethernet) of `data`, the integrity check of
/// the byte encoding.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc = CRC_TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;
    use std::thread;

    /// Turns a counter into a well-mixed 64-bit hash (splitmix64's output
    /// function), so that tests do not depend on a hashing crate.
    fn splitmix64(x: u64) -> u64 {
        let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Builds a sketch holding `splitmix64(i)` for every `i` in `range`.
    fn sketch_of(range: std::ops::Range<u64>) -> Sketch {
        let sketch = Sketch::new();
        for i in range {
            sketch.insert(splitmix64(i));
        }
        sketch
    }

    /// Relative error of an estimate, printed so that runs with
    /// `--nocapture` report the measured accuracy.
    fn relative_error(label: &str, estimate: u64, truth: u64) -> f64 {
        let error = (estimate as f64 - truth as f64) / truth as f64;
        println!(
            "{label}: truth {truth}, estimate {estimate}, error {:+.3} %",
            error * 100.0
        );
        error.abs()
    }

    /// Appends a header and a valid checksum to a payload, to reach the
    /// payload checks behind the checksum.
    fn framed(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![ENCODING_VERSION, kind];
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn register(sketch: &Sketch, index: usize) -> u8 {
        sketch.registers[index].load(Ordering::Relaxed)
    }

    #[test]
    fn redis_convention_low_14_bits_pick_the_register_and_trailing_zeros_give_the_value() {
        // Bit 14 set: no trailing zeros above the index bits.
        assert_eq!(hll_position(5 | 1 << 14), (5, 1));
        // Bit 14 clear, bit 15 set: one trailing zero.
        assert_eq!(hll_position(5 | 1 << 15), (5, 2));
        // Nothing above the index bits: the guard bit 50 gives 51.
        assert_eq!(hll_position(5), (5, 51));
        // Only the top bit set: 63 - 14 = 49 trailing zeros.
        assert_eq!(hll_position(16383 | 1 << 63), (16383, 50));

        // A member reaches its register through Redis's element hash.
        let sketch = Sketch::new();
        sketch.insert(42);
        let (index, count) = hll_position(0xe983_f143_360a_dbd6);
        assert_eq!(register(&sketch, index), count);
    }

    #[test]
    fn estimator_matches_redis_on_edge_histograms() {
        // All registers zero: Redis answers 0.
        assert_eq!(estimate(&[0u8; HLL_REGISTERS]), 0);
        // One register set: Redis answers 1.
        let mut registers = [0u8; HLL_REGISTERS];
        registers[123] = 1;
        assert_eq!(estimate(&registers), 1);
        registers[9000] = 3;
        assert_eq!(estimate(&registers), 2);
        // The helper functions' edge values, as in Redis.
        assert_eq!(hll_sigma(1.0), f64::INFINITY);
        assert_eq!(hll_sigma(0.0), 0.0);
        assert_eq!(hll_tau(0.0), 0.0);
        assert_eq!(hll_tau(1.0), 0.0);
        // All registers at the maximum must not overflow or return NaN.
        let full = estimate(&[HLL_MAX_REGISTER; HLL_REGISTERS]);
        assert!(full > 1 << 60, "saturated sketch estimates {full}");
    }

    #[test]
    fn empty_sketch_is_exact_and_counts_zero() {
        let sketch = Sketch::default();
        assert!(sketch.is_exact());
        assert_eq!(sketch.count(), 0);
        assert_eq!(SketchUnion::new().count(), 0);
    }

    #[test]
    fn exact_counts_for_0_1_41_and_2048_distinct_hashes() {
        for n in [0u64, 1, 41, 2048] {
            let sketch = sketch_of(0..n);
            assert!(sketch.is_exact(), "n = {n}");
            assert_eq!(sketch.count(), n, "n = {n}");
        }
    }

    #[test]
    fn repeated_inserts_do_not_change_the_exact_count() {
        let sketch = sketch_of(0..41);
        for _ in 0..5 {
            for i in 0..41 {
                sketch.insert(splitmix64(i));
            }
        }
        assert_eq!(sketch.count(), 41);
        let full = sketch_of(0..2048);
        for i in 0..2048 {
            full.insert(splitmix64(i));
        }
        assert!(full.is_exact());
        assert_eq!(full.count(), 2048);
    }

    #[test]
    fn hash_zero_is_counted_once_as_the_substitute() {
        let sketch = Sketch::new();
        sketch.insert(0);
        sketch.insert(0);
        assert_eq!(sketch.count(), 1);
        sketch.insert(1);
        assert_eq!(sketch.count(), 2);
        let mut union = SketchUnion::new();
        union.add(&sketch);
        let mut members: Vec<u64> = union.exact_members().unwrap().collect();
        members.sort_unstable();
        assert_eq!(members, vec![1, ZERO_SUBSTITUTE]);
        let (index, value) = member_position(ZERO_SUBSTITUTE);
        assert_eq!(register(&sketch, index), value);
        let decoded = SketchUnion::from_parts(union.registers(), Some(&[0, 1])).unwrap();
        assert_eq!(decoded, union);
    }

    #[test]
    fn one_past_the_limit_switches_to_the_estimate() {
        let sketch = sketch_of(0..2049);
        assert!(!sketch.is_exact());
        let estimate = sketch.count();
        assert!(relative_error("2049", estimate, 2049) < 0.03);
    }

    #[test]
    fn estimate_within_3_percent_for_10_000_distinct() {
        assert!(relative_error("10k", sketch_of(0..10_000).count(), 10_000) < 0.03);
    }

    #[test]
    fn estimate_within_3_percent_for_100_000_distinct() {
        assert!(relative_error("100k", sketch_of(0..100_000).count(), 100_000) < 0.03);
    }

    #[test]
    fn estimate_within_3_percent_for_1_000_000_distinct() {
        let sketch = sketch_of(0..1_000_000);
        assert!(relative_error("1M", sketch.count(), 1_000_000) < 0.03);
        let mut union = SketchUnion::new();
        union.add(&sketch);
        assert_eq!(union.count(), sketch.count(), "union and sketch agree");
    }

    /// Runs `work(thread_index, sketch)` on 4 threads sharing one sketch.
    fn on_four_threads(work: fn(u64, &Sketch)) -> Sketch {
        let sketch = Arc::new(Sketch::new());
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let sketch = Arc::clone(&sketch);
                thread::spawn(move || work(t, &sketch))
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        Arc::into_inner(sketch).unwrap()
    }

    #[test]
    fn concurrent_identical_ranges_below_the_limit_count_exactly() {
        for _ in 0..20 {
            let sketch = on_four_threads(|t, sketch| {
                // Odd threads go backwards so that the threads collide on
                // the same keys both early and late.
                for i in 0..1500 {
                    let i = if t % 2 == 0 { i } else { 1499 - i };
                    sketch.insert(splitmix64(i));
                }
            });
            assert!(sketch.is_exact());
            assert_eq!(sketch.count(), 1500);
        }
    }

    #[test]
    fn concurrent_overlapping_ranges_filling_exactly_the_limit_stay_exact() {
        for _ in 0..20 {
            // Thread t inserts t*512 .. t*512+1024, so the union is 0..2048.
            let sketch = on_four_threads(|t, sketch| {
                for i in (t * 512..t * 512 + 1024).map(|i| i % 2048) {
                    sketch.insert(splitmix64(i));
                }
            });
            assert!(sketch.is_exact());
            assert_eq!(sketch.count(), 2048);
        }
    }

    #[test]
    fn concurrent_overlapping_ranges_above_the_limit_estimate_well() {
        let sketch = on_four_threads(|_, sketch| {
            for i in 0..20_000 {
                sketch.insert(splitmix64(i));
            }
        });
        assert!(!sketch.is_exact());
        assert!(relative_error("4 threads x 0..20000", sketch.count(), 20_000) < 0.03);

        // Thread t inserts t*5000 .. t*5000+10000, so the union is 0..25000.
        let sketch = on_four_threads(|t, sketch| {
            for i in t * 5000..t * 5000 + 10_000 {
                sketch.insert(splitmix64(i));
            }
        });
        assert!(relative_error("4 threads, union 0..25000", sketch.count(), 25_000) < 0.03);
    }

    #[test]
    fn concurrent_race_across_the_limit_overflows_and_estimates() {
        for _ in 0..20 {
            // 4 disjoint ranges of 600 make 2400, just past the limit.
            let sketch = on_four_threads(|t, sketch| {
                for i in t * 600..t * 600 + 600 {
                    sketch.insert(splitmix64(i));
                }
            });
            assert!(!sketch.is_exact());
            let estimate = sketch.count();
            assert!(
                (estimate as f64 - 2400.0).abs() / 2400.0 < 0.03,
                "{estimate}"
            );
        }
    }

    #[test]
    fn union_of_two_exact_sketches_with_overlap_is_exact() {
        let mut union = SketchUnion::new();
        union.add(&sketch_of(0..1000));
        union.add(&sketch_of(500..1800));
        assert!(union.is_exact());
        assert_eq!(union.count(), 1800);
        assert_eq!(union.exact_members().unwrap().count(), 1800);
    }

    #[test]
    fn union_crossing_the_limit_falls_back_to_hll_within_error() {
        let mut union = SketchUnion::new();
        union.add(&sketch_of(0..2000));
        union.add(&sketch_of(1000..3000));
        assert!(!union.is_exact());
        assert!(union.exact_members().is_none());
        assert!(relative_error("union 0..3000", union.count(), 3000) < 0.03);
    }

    #[test]
    fn union_of_exact_and_overflowed_sketch_uses_hll() {
        let mut union = SketchUnion::new();
        union.add(&sketch_of(0..10));
        union.add(&sketch_of(100_000..120_000));
        assert!(!union.is_exact());
        assert!(relative_error("union 10 + 20000", union.count(), 20_010) < 0.03);
        // The order of inputs does not matter.
        let mut reversed = SketchUnion::new();
        reversed.add(&sketch_of(100_000..120_000));
        reversed.add(&sketch_of(0..10));
        assert_eq!(reversed, union);
    }

    #[test]
    fn union_registers_are_the_elementwise_max() {
        let a = sketch_of(0..5000);
        let b = sketch_of(3000..9000);
        let mut union = SketchUnion::new();
        union.add(&a);
        union.add(&b);
        for i in 0..HLL_REGISTERS {
            assert_eq!(union.registers()[i], register(&a, i).max(register(&b, i)));
        }
        assert_eq!(union.registers(), sketch_of(0..9000).registers().as_slice());
    }

    impl Sketch {
        /// Copies the registers, for comparisons in tests.
        fn registers(&self) -> Vec<u8> {
            self.registers
                .iter()
                .map(|r| r.load(Ordering::Relaxed))
                .collect()
        }
    }

    #[test]
    fn from_parts_checks_registers_and_degrades_past_the_limit() {
        assert_eq!(
            SketchUnion::from_parts(&[0; 10], None),
            Err(SketchError::RegisterCount { len: 10 })
        );
        let mut registers = vec![0u8; HLL_REGISTERS];
        registers[77] = 52;
        assert_eq!(
            SketchUnion::from_parts(&registers, None),
            Err(SketchError::RegisterValue {
                index: 77,
                value: 52
            })
        );
        let many: Vec<u64> = (0..3000).map(splitmix64).collect();
        let union = SketchUnion::from_parts(&[0; HLL_REGISTERS], Some(&many)).unwrap();
        assert!(!union.is_exact());
        assert_eq!(union.registers(), sketch_of(0..3000).registers().as_slice());
        // Repeats are tolerated.
        let union = SketchUnion::from_parts(&[0; HLL_REGISTERS], Some(&[3, 3, 4])).unwrap();
        assert_eq!(union.count(), 2);
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn dense_packing_uses_the_redis_bit_layout() {
        let mut registers = vec![0u8; HLL_REGISTERS];
        registers[0] = 0b10_1010;
        registers[1] = 0b11_0011;
        registers[HLL_REGISTERS - 1] = 51;
        let packed = pack_dense(&registers);
        // Register 0 fills bits 0..6 of byte 0; register 1 starts at bit 6.
        assert_eq!(packed[0], 0b1110_1010);
        assert_eq!(packed[1], 0b0000_1100);
        assert_eq!(packed[DENSE_BYTES - 1], 51 << 2);
        assert_eq!(&*unpack_dense(&packed).unwrap(), registers.as_slice());
    }

    #[test]
    fn encoding_picks_the_compact_form() {
        let exact = {
            let mut u = SketchUnion::new();
            u.add(&sketch_of(0..3));
            u
        };
        let bytes = exact.to_bytes();
        assert_eq!(bytes[1], KIND_EXACT);
        assert_eq!(bytes.len(), HEADER_LEN + 3 * 8 + TRAILER_LEN);

        let mut small = SketchUnion::new();
        small.add(&sketch_of(0..3000));
        let bytes = small.to_bytes();
        assert_eq!(bytes[1], KIND_SPARSE);
        println!("3000 distinct: {} bytes", bytes.len());
        assert!(bytes.len() < 8000);

        let mut large = SketchUnion::new();
        large.add(&sketch_of(0..200_000));
        let bytes = large.to_bytes();
        assert_eq!(bytes[1], KIND_DENSE);
        assert_eq!(bytes.len(), HEADER_LEN + DENSE_BYTES + TRAILER_LEN);
        assert_eq!(SketchUnion::from_bytes(&bytes).unwrap(), large);
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_rejected() {
        let mut union = SketchUnion::new();
        union.add(&sketch_of(0..5));
        let bytes = union.to_bytes();
        for len in 0..bytes.len() {
            assert!(SketchUnion::from_bytes(&bytes[..len]).is_err(), "len {len}");
        }
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(SketchUnion::from_bytes(&damaged).is_err(), "bit {bit}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(SketchUnion::from_bytes(&longer).is_err());
    }

    #[test]
    fn checksummed_but_malformed_payloads_are_rejected() {
        let malformed = |bytes: Vec<u8>| {
            let result = SketchUnion::from_bytes(&bytes);
            assert!(
                matches!(result, Err(SketchError::Malformed(_))),
                "{result:?}"
            );
        };
        // Exact members out of order, repeated, zero, or not whole u64s.
        let words = |keys: &[u64]| {
            keys.iter()
                .flat_map(|k| k.to_le_bytes())
                .collect::<Vec<_>>()
        };
        malformed(framed(KIND_EXACT, &words(&[2, 1])));
        malformed(framed(KIND_EXACT, &words(&[2, 2])));
        malformed(framed(KIND_EXACT, &words(&[0, 1])));
        malformed(framed(KIND_EXACT, &[1, 2, 3]));
        let too_many: Vec<u64> = (1..=EXACT_LIMIT as u64 + 1).collect();
        malformed(framed(KIND_EXACT, &words(&too_many)));
        // Sparse runs that overshoot, fall short, are cut short, or hold a
        // value above 51.
        malformed(framed(KIND_SPARSE, &[0xFF, 0xFF]));
        malformed(framed(KIND_SPARSE, &[0x40]));
        malformed(framed(KIND_SPARSE, &[0x80]));
        malformed(framed(KIND_SPARSE, &[52, 0x80 | 0x3F, 0xFE]));
        // Dense payloads of the wrong length or with a value above 51.
        malformed(framed(KIND_DENSE, &[0; 10]));
        malformed(framed(KIND_DENSE, &[0xFF; DENSE_BYTES]));
        // An unknown kind and a future version.
        malformed(framed(9, &[]));
        let mut future = framed(KIND_EXACT, &[]);
        future[0] = 2;
        let crc = crc32(&future[..HEADER_LEN]);
        future[HEADER_LEN..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            SketchUnion::from_bytes(&future),
            Err(SketchError::UnsupportedVersion(2))
        );
        // A well-formed sparse payload is accepted: 51 then 16383 zeros.
        let ok = SketchUnion::from_bytes(&framed(KIND_SPARSE, &[51, 0x80 | 0x3F, 0xFE])).unwrap();
        assert_eq!(ok.registers()[0], 51);
        assert!(!ok.is_exact());
    }

    #[test]
    fn errors_display_without_panicking() {
        let errors = [
            SketchError::Truncated { len: 3 },
            SketchError::ChecksumMismatch,
            SketchError::UnsupportedVersion(7),
            SketchError::Malformed("x"),
            SketchError::RegisterCount { len: 1 },
            SketchError::RegisterValue {
                index: 1,
                value: 60,
            },
        ];
        for error in errors {
            let boxed: Box<dyn std::error::Error> = Box::new(error);
            assert!(!boxed.to_string().is_empty());
        }
    }

    /// Small sets of counters drawn from a narrow range, so that they
    /// overlap often.
    fn small_set() -> impl Strategy<Value = Vec<u64>> {
        prop::collection::vec(0u64..2500, 0..900)
    }

    fn union_of(keys: &[u64]) -> SketchUnion {
        let sketch = Sketch::new();
        for &k in keys {
            sketch.insert(splitmix64(k));
        }
        let mut union = SketchUnion::new();
        union.add(&sketch);
        union
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn add_union_is_associative_and_commutative_and_exact_when_small(
            a in small_set(), b in small_set(), c in small_set()
        ) {
            let (ua, ub, uc) = (union_of(&a), union_of(&b), union_of(&c));
            // (a + b) + c
            let mut left = ua.clone();
            left.add_union(&ub);
            left.add_union(&uc);
            // a + (c + b)
            let mut inner = uc.clone();
            inner.add_union(&ub);
            let mut right = ua.clone();
            right.add_union(&inner);
            // c + a + b
            let mut other = uc.clone();
            other.add_union(&ua);
            other.add_union(&ub);
            prop_assert_eq!(&left, &right);
            prop_assert_eq!(&left, &other);

            let truth: HashSet<u64> = a.iter().chain(&b).chain(&c).copied().collect();
            if truth.len() <= EXACT_LIMIT {
                prop_assert!(left.is_exact());
                prop_assert_eq!(left.count(), truth.len() as u64);
            } else {
                prop_assert!(!left.is_exact());
            }
            // The registers equal those of one sketch fed everything.
            let all: Vec<u64> = truth.into_iter().collect();
            let reference = union_of(&all);
            prop_assert_eq!(left.registers(), reference.registers());
        }

        #[test]
        fn encoding_round_trips_sketch_unions(keys in prop::collection::vec(any::<u64>(), 0..3000)) {
            let sketch = Sketch::new();
            for &k in &keys {
                sketch.insert(k);
            }
            let mut union = SketchUnion::new();
            union.add(&sketch);
            let decoded = SketchUnion::from_bytes(&union.to_bytes()).unwrap();
            prop_assert_eq!(decoded.count(), sketch.count());
            prop_assert_eq!(&decoded, &union);
        }

        #[test]
        fn encoding_round_trips_arbitrary_registers(
            cells in prop::collection::vec((0usize..HLL_REGISTERS, 0u8..=51), 0..20_000)
        ) {
            let mut registers = vec![0u8; HLL_REGISTERS];
            for (index, value) in cells {
                registers[index] = value;
            }
            let union = SketchUnion::from_parts(&registers, None).unwrap();
            let decoded = SketchUnion::from_bytes(&union.to_bytes()).unwrap();
            prop_assert_eq!(decoded.registers(), registers.as_slice());
            prop_assert_eq!(decoded.count(), union.count());
        }

        #[test]
        fn from_bytes_of_random_junk_returns_an_error_and_never_panics(
            junk in prop::collection::vec(any::<u8>(), 0..200)
        ) {
            prop_assert!(SketchUnion::from_bytes(&junk).is_err());
        }

        #[test]
        fn from_bytes_of_junk_behind_a_valid_checksum_never_panics(
            kind in 0u8..4, payload in prop::collection::vec(any::<u8>(), 0..300)
        ) {
            // Whatever the outcome, it must be a value, not a panic.
            let _ = SketchUnion::from_bytes(&framed(kind, &payload));
        }
    }
}

#[cfg(test)]
mod redis_hash_tests {
    use super::*;

    #[test]
    fn murmur64a_matches_reference_values() {
        // Reference values from Redis's C MurmurHash64A (seed 0xadc83b19),
        // covering the empty input, a tail only, and blocks plus a tail.
        assert_eq!(redis_element_hash(b""), 0xd8df_ea65_85bc_9732);
        assert_eq!(redis_element_hash(b"a"), 0x53d2_470a_9b43_b1a7);
        assert_eq!(redis_element_hash(b"hello"), 0x0f65_6f01_eecf_e400);
        assert_eq!(
            redis_element_hash(b"0123456789abcdef!"),
            0xb917_c99b_031f_7674
        );
        assert_eq!(redis_element_hash(&member_bytes(42)), 0xe983_f143_360a_dbd6);
    }

    #[test]
    fn dense_hll_has_redis_header_and_size() {
        let blob = redis_dense_hll(&[0u8; HLL_REGISTERS]);
        assert_eq!(&blob[..4], b"HYLL");
        assert_eq!(blob[4], 0);
        assert_eq!(blob[15] & 0x80, 0x80);
        assert_eq!(blob.len(), 16 + 12_288);
    }
}
