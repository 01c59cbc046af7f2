//! Figures as JSON, written directly into the answer's buffer.
//!
//! The beacon's answer and the counters route send figures on every
//! request; serde's derived serialiser escapes every key and goes through a
//! map serialiser per field, which cost more than the rest of the answer
//! (perf, BENCHMARKS.md). This writer emits the same bytes as
//! `serde_json::to_vec(&figures)` — a property test holds it to that — with
//! the keys as constants and the numbers through `itoa`.

use crate::count::ledger::{Figures, Visitors};
use crate::read::Listed;
use crate::store::Record;

/// Appends `figures` as JSON to `out`.
pub fn write(out: &mut Vec<u8>, figures: &Figures) {
    out.extend_from_slice(b"{\"site\":");
    string(out, &figures.site);
    out.extend_from_slice(b",\"page\":");
    match &figures.page {
        Some(page) => string(out, page),
        None => out.extend_from_slice(b"null"),
    }
    number(out, b",\"total\":", figures.total);
    number(out, b",\"today\":", figures.today);
    number(out, b",\"yesterday\":", figures.yesterday);
    number(out, b",\"week\":", figures.week);
    number(out, b",\"month\":", figures.month);
    match figures.online {
        Some(n) => number(out, b",\"online\":", n),
        None => out.extend_from_slice(b",\"online\":null"),
    }
    out.extend_from_slice(b",\"visitors\":");
    match &figures.visitors {
        Some(v) => visitors(out, v),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"record\":");
    match &figures.record {
        Some(r) => record(out, r),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(if figures.stale {
        b",\"stale\":true,\"as_of\":"
    } else {
        b",\"stale\":false,\"as_of\":"
    });
    string(out, &figures.as_of);
    out.push(b'}');
}

/// The answer to a beacon: `{"site": <figures>, "page": <figures>}`.
pub fn beacon_answer(site: &Figures, page: &Figures) -> Vec<u8> {
    // Two sets of figures are about 500 bytes with a long page path.
    let mut out = Vec::with_capacity(640);
    out.extend_from_slice(b"{\"site\":");
    write(&mut out, site);
    out.extend_from_slice(b",\"page\":");
    write(&mut out, page);
    out.push(b'}');
    out
}

/// One set of figures.
pub fn to_vec(figures: &Figures) -> Vec<u8> {
    let mut out = Vec::with_capacity(320);
    write(&mut out, figures);
    out
}

// ---- listing pages (issue 25 §3) ----

/// One page of `/pages`: the page figures the counters route gives, less
/// what every page of the answer shares or a page never has (`site` and
/// `as_of` are said once for all, `visitors` and `record` are a site's),
/// with the page's `title` after `page`, and `hits` (the asked period's
/// figure) at the end when a period was asked. About 130 bytes a page
/// rather than 250: the answer's size is most of its cost.
pub fn write_listed(out: &mut Vec<u8>, page: &str, listed: &Listed, hits: Option<u64>) {
    let c = &listed.counts;
    out.extend_from_slice(b"{\"page\":");
    string(out, page);
    out.extend_from_slice(b",\"title\":");
    match &listed.title {
        Some(t) => string(out, t),
        None => out.extend_from_slice(b"null"),
    }
    number(out, b",\"total\":", c.total);
    number(out, b",\"today\":", c.today);
    number(out, b",\"yesterday\":", c.yesterday);
    number(out, b",\"week\":", c.week);
    number(out, b",\"month\":", c.month);
    match listed.online {
        Some(n) => number(out, b",\"online\":", n),
        None => out.extend_from_slice(b",\"online\":null"),
    }
    out.extend_from_slice(if listed.stale {
        b",\"stale\":true"
    } else {
        b",\"stale\":false"
    });
    if let Some(hits) = hits {
        number(out, b",\"hits\":", hits);
    }
    out.push(b'}');
}

// ---- end listing pages ----

/// `{"hits":4321,"date":"2026-11-27"}`.
fn record(out: &mut Vec<u8>, r: &Record) {
    number(out, b"{\"hits\":", r.hits);
    out.extend_from_slice(b",\"date\":\"");
    // `Display` of a date is `YYYY-MM-DD` (a year past 9999 has a sign);
    // written through a small stack buffer, not a `String`.
    use std::io::Write;
    let mut buf = [0u8; 16];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{}", r.date);
    let len = cursor.position() as usize;
    out.extend_from_slice(&buf[..len]);
    out.extend_from_slice(b"\"}");
}

fn visitors(out: &mut Vec<u8>, v: &Visitors) {
    number(out, b"{\"today\":", v.today);
    number(out, b",\"yesterday\":", v.yesterday);
    number(out, b",\"week\":", v.week);
    number(out, b",\"month\":", v.month);
    number(out, b",\"total\":", v.total);
    out.push(b'}');
}

/// The digits are pushed one by one: a figure has a few, and copying a
/// slice of unknown length is a call to `memcpy`, ~16 per answer
/// (measured with a uprobe on it).
fn number<const N: usize>(out: &mut Vec<u8>, key: &[u8; N], n: u64) {
    out.extend_from_slice(key);
    for &digit in itoa::Buffer::new().format(n).as_bytes() {
        out.push(digit);
    }
}

/// A JSON string, escaped as serde_json escapes it: `"` and `\` with a
/// backslash, the control characters that have a short form with it, the
/// others as `\u00XX`; everything else (UTF-8 included) as it is.
pub fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Names, paths and times need no escape: one check without early exit,
    // which the compiler vectorises, and one copy.
    let needs_escape = bytes.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !needs_escape {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0x00..=0x1f => 0,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if short == 0 {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.push(b'\\');
            out.push(short);
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn figures() -> impl Strategy<Value = Figures> {
        let text = prop_oneof![
            "[a-z0-9/_.-]{0,40}",
            any::<String>(),
            Just("\"\\\u{0}\u{8}\u{c}\n\r\t\u{1f}\u{7f}é😀".to_string()),
        ];
        let visitors = prop::option::of(any::<[u64; 5]>().prop_map(|v| Visitors {
            today: v[0],
            yesterday: v[1],
            week: v[2],
            month: v[3],
            total: v[4],
        }));
        let record = prop::option::of((any::<u64>(), 0u32..3_000_000).prop_map(|(hits, n)| {
            crate::store::Record {
                hits,
                date: crate::period::date_of_number(n),
            }
        }));
        (
            text.clone(),
            prop::option::of(text.clone()),
            any::<[u64; 5]>(),
            prop::option::of(any::<u64>()),
            (visitors, record),
            any::<bool>(),
            text,
        )
            .prop_map(
                |(site, page, n, online, (visitors, record), stale, as_of)| Figures {
                    site: Arc::from(site),
                    page: page.map(Arc::from),
                    total: n[0],
                    today: n[1],
                    yesterday: n[2],
                    week: n[3],
                    month: n[4],
                    online,
                    visitors,
                    record,
                    stale,
                    as_of: Arc::from(as_of),
                },
            )
    }

    proptest! {
        #[test]
        fn writes_what_serde_writes(f in figures()) {
            prop_assert_eq!(
                String::from_utf8(to_vec(&f)).unwrap(),
                serde_json::to_string(&f).unwrap()
            );
        }

        #[test]
        fn the_beacon_answer_is_what_serde_writes(site in figures(), page in figures()) {
            let want = serde_json::json!({"site": &site, "page": &page});
            let got: serde_json::Value = serde_json::from_slice(&beacon_answer(&site, &page)).unwrap();
            prop_assert_eq!(got, want);
        }
    }
}
