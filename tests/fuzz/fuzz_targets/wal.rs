//! The write-ahead file reader: any bytes as `luot.wal` open without a
//! panic (a corrupt tail is skipped, never an error), and the compacted file
//! reopens to the same pending batches with nothing skipped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use luot::flush::wal::Wal;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("luot.wal"), data).expect("write luot.wal");
    let (wal, first) = Wal::open(dir.path()).expect("a corrupt file is skipped, not an error");
    assert!(first.skipped_bytes <= data.len() as u64);
    assert_eq!(wal.pending(), first.pending.len());
    drop(wal);
    let (_, again) = Wal::open(dir.path()).expect("reopen the compacted file");
    assert_eq!(again.skipped_bytes, 0, "compaction left a bad tail");
    assert_eq!(again.pending, first.pending);
});
