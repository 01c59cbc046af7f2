//! Campaign parameters: `utm_source`, `utm_medium` and `utm_campaign` from
//! the query of the page URL a beacon sent, before the page is normalised
//! (the page itself still drops its query).
//!
//! A value is percent-decoded (`+` is a space), stripped of control
//! characters, trimmed, lowercased and cut to [`MAX_VALUE_BYTES`] at a
//! character boundary; an empty result is absent. A value already in that
//! form (lowercase ASCII letters, digits, `_`, `-`, `.`) is borrowed; any
//! other is rebuilt in an [`Inline`] buffer. The first occurrence of a
//! parameter wins; parameter names are matched without regard to case.
use super::{Inline, MAX_VALUE_BYTES, Value};

/// How many decoded bytes of one value are looked at: enough for
/// [`MAX_VALUE_BYTES`] of text after leading spaces and control characters
/// are dropped; the rest is never read.
const SCRATCH_BYTES: usize = 256;

/// The campaign parameters of one page URL.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Utm<'a> {
    pub source: Option<Value<'a>>,
    pub medium: Option<Value<'a>>,
    pub campaign: Option<Value<'a>>,
}

impl<'a> Utm<'a> {
    /// The parameters of `page`'s query (between `?` and `#`).
    pub fn from_page(page: &'a str) -> Self {
        let mut utm = Self::default();
        // Byte searches: `split('#')` and `split_once('?')` set up a
        // character searcher each, 665 instructions a hit (callgrind) on a
        // page URL that mostly has no query at all.
        let bytes = page.as_bytes();
        let before_fragment = memchr::memchr(b'#', bytes).unwrap_or(bytes.len());
        let Some(mark) = memchr::memchr(b'?', &bytes[..before_fragment]) else {
            return utm;
        };
        // Both are ASCII, so both cuts fall on character boundaries.
        let query = &page[mark + 1..before_fragment];
        for pair in query.split('&') {
            let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = if name.eq_ignore_ascii_case("utm_source") {
                &mut utm.source
            } else if name.eq_ignore_ascii_case("utm_medium") {
                &mut utm.medium
            } else if name.eq_ignore_ascii_case("utm_campaign") {
                &mut utm.campaign
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = value(raw);
            }
        }
        utm
    }
}

/// One parameter's stored value, or `None` when nothing is left of it.
fn value(raw: &str) -> Option<Value<'_>> {
    let plain = raw
        .bytes()
        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.'));
    if plain && !raw.is_empty() && raw.len() <= MAX_VALUE_BYTES {
        return Some(Value::Borrowed(raw));
    }
    let mut scratch = [0u8; SCRATCH_BYTES];
    let mut n = 0;
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() && n < SCRATCH_BYTES {
        let (byte, used) = match bytes[i] {
            b'+' => (b' ', 1),
            b'%' => match (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            ) {
                (Some(high), Some(low)) => ((high << 4) | low, 3),
                _ => (b'%', 1),
            },
            b => (b, 1),
        };
        scratch[n] = byte;
        n += 1;
        i += used;
    }
    let mut out = Inline::new();
    'text: for chunk in scratch[..n].utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || (out.len == 0 && c.is_whitespace()) {
                continue;
            }
            for lower in c.to_lowercase() {
                if !out.push(lower) {
                    break 'text;
                }
            }
        }
    }
    out.trim_end();
    (out.len > 0).then_some(Value::Inline(out))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utm(page: &str) -> [Option<String>; 3] {
        let u = Utm::from_page(page);
        [u.source, u.medium, u.campaign].map(|v| v.map(|v| v.as_str().to_owned()))
    }

    #[test]
    fn parameters_are_read_from_the_query_only() {
        assert_eq!(
            utm(
                "https://news.example/a?utm_source=facebook&utm_medium=social&utm_campaign=tet-2027#utm_source=x"
            ),
            [
                Some("facebook".into()),
                Some("social".into()),
                Some("tet-2027".into())
            ]
        );
        assert_eq!(utm("/a#?utm_source=x"), [None, None, None]);
        assert_eq!(utm("/a"), [None, None, None]);
        assert_eq!(utm("/a?UTM_Source=Zalo"), [Some("zalo".into()), None, None]);
        assert_eq!(utm("/a?utm_source=&utm_medium"), [None, None, None]);
        assert_eq!(
            utm("/a?utm_source=a&utm_source=b"),
            [Some("a".into()), None, None]
        );
    }

    #[test]
    fn values_are_decoded_trimmed_lowercased_and_cleaned() {
        let one = |v: &str| utm(&format!("/?utm_campaign={v}"))[2].clone();
        assert_eq!(one("Black+Friday").as_deref(), Some("black friday"));
        assert_eq!(
            one("%20%20T%E1%BA%BFt%202027%20").as_deref(),
            Some("tết 2027")
        );
        assert_eq!(one("a%0Ab%09c%00").as_deref(), Some("abc"));
        assert_eq!(one("100%").as_deref(), Some("100%"));
        assert_eq!(one("%zz").as_deref(), Some("%zz"));
        assert_eq!(one("%FF%FEok").as_deref(), Some("ok"));
        assert_eq!(one("+++").as_deref(), None);
        assert_eq!(one("%00%01").as_deref(), None);
        let long = one(&"Ấ".repeat(100)).unwrap();
        assert!(
            long.len() <= MAX_VALUE_BYTES && long.chars().all(|c| c == 'ấ'),
            "{long}"
        );
        let plain = one(&"a".repeat(100)).unwrap();
        assert_eq!(plain.len(), MAX_VALUE_BYTES);
    }

    #[test]
    fn a_plain_value_is_borrowed() {
        let u = Utm::from_page("/?utm_source=newsletter_2027-01");
        assert!(matches!(
            u.source,
            Some(Value::Borrowed("newsletter_2027-01"))
        ));
        let u = Utm::from_page("/?utm_source=Newsletter");
        assert!(matches!(u.source, Some(Value::Inline(_))));
    }
}
