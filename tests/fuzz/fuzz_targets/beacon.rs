//! Beacon parsing: a `POST /hit` body and a `/hit.gif` query string.
//! Properties: no panic; every field read is no longer than the input (a
//! beacon never grows); a JSON body that parses is an object; a UTF-8 object
//! reads as serde alone reads it (`parse_body` has a plain reader of its own
//! for the common body and serde for the rest).
#![no_main]

use libfuzzer_sys::fuzz_target;
use luot::ingest::{Beacon, parse_body, parse_query};

fn fields<'a>(b: &'a Beacon<'_>) -> impl Iterator<Item = &'a str> {
    [&b.site, &b.page, &b.referrer, &b.vid]
        .into_iter()
        .filter_map(|f| f.as_deref())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(beacon) = parse_body(data) {
        assert_eq!(data.trim_ascii_start().first(), Some(&b'{'));
        for field in fields(&beacon) {
            assert!(field.len() <= data.len());
        }
    }
    if let Ok(text) = std::str::from_utf8(data)
        && text.trim_ascii_start().starts_with('{')
    {
        let serde: Option<Beacon<'_>> = serde_json::from_str(text).ok();
        assert_eq!(parse_body(data).ok(), serde);
    }
    if let Ok(query) = std::str::from_utf8(data) {
        let beacon = parse_query(query);
        for field in fields(&beacon) {
            // Percent-decoding only shrinks; a lossy replacement of an
            // invalid sequence (3 bytes) replaces at least one `%XX` (3).
            assert!(field.len() <= query.len());
        }
    }
});
