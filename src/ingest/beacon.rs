//! A beacon's fields, read out of a request body (JSON, or `text/plain` as
//! `sendBeacon` sends it) or a pixel's query: a snippet's plain body in one
//! pass of its own, anything else by serde, which the tests hold it to.

use std::borrow::Cow;

use serde::Deserialize;

use super::IngestError;
/// A beacon as sent: `{"site","page","ref","vid","title"}` in a JSON (or
/// `text/plain`, as `sendBeacon` sends it) body, or the same names as query
/// parameters of `/hit.gif`. Unknown fields are ignored so newer snippets
/// work with older servers.
#[derive(Debug, Deserialize, Default, PartialEq, Eq)]
pub struct Beacon<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub site: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub page: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed", rename = "ref")]
    pub referrer: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub vid: Option<Cow<'a, str>>,
    /// The page's `document.title`, as sent: see [`clean_title`].
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub title: Option<Cow<'a, str>>,
}

/// Most characters of a title luot keeps.
pub const TITLE_MAX_CHARS: usize = 200;

/// A title as luot keeps it: trimmed, without control characters, at most
/// [`TITLE_MAX_CHARS`] characters (not bytes); `None` when nothing is
/// left. Borrowed (no allocation) when the title is already so, as a
/// snippet's always is.
pub fn clean_title(raw: &str) -> Option<Cow<'_, str>> {
    let trimmed = raw.trim();
    let clean = !trimmed.chars().any(char::is_control);
    let cut = trimmed
        .char_indices()
        .nth(TITLE_MAX_CHARS)
        .map_or(trimmed.len(), |(at, _)| at);
    let title: Cow<'_, str> = if clean {
        Cow::Borrowed(trimmed[..cut].trim_end())
    } else {
        let kept: String = trimmed
            .chars()
            .filter(|c| !c.is_control())
            .take(TITLE_MAX_CHARS)
            .collect();
        Cow::Owned(kept.trim().to_owned())
    };
    (!title.is_empty()).then_some(title)
}

/// Deserialises a string field borrowing from the body when it has no
/// escapes (serde's own `Option<Cow<str>>` always copies), so a beacon is
/// read without allocating.
fn borrowed<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct Visit;
    impl<'de> serde::de::Visitor<'de> for Visit {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_str(self)
        }
    }
    d.deserialize_option(Visit)
}

/// Parses a JSON beacon body.
///
/// # Errors
/// [`IngestError::Malformed`] when the body is not a JSON object of strings.
pub fn parse_body(body: &[u8]) -> Result<Beacon<'_>, IngestError> {
    // Only an object is a beacon (serde would also take a JSON array).
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(IngestError::Malformed("expected a JSON object".into()));
    }
    // A body checked as UTF-8 once is read as a `str`, whose strings serde
    // takes without checking each again (~500 instructions of a beacon's
    // ~2,900). Anything else goes the slice's way, which accepts the same.
    match std::str::from_utf8(body) {
        Ok(text) => match parse_plain(text) {
            Some(beacon) => Ok(beacon),
            None => serde_json::from_str(text),
        },
        Err(_) => serde_json::from_slice(body),
    }
    .map_err(|e| IngestError::Malformed(e.to_string()))
}

/// Reads the body every snippet sends — one flat object whose values are
/// strings without escapes, or `null` — giving exactly what serde gives
/// for it; `None` for anything else (an escape, a number, a nested value,
/// a repeated field, a syntax error), which serde then reads and, when it
/// is wrong, explains.
///
/// serde's derived reader spent ~2,000 instructions on a snippet's beacon
/// (callgrind), most of them matching field names and dispatching through
/// its visitors; this reads the same body in ~1,000. serde stays the
/// reference: unit tests, property tests and the fuzz target hold the two
/// to the same answers.
///
/// A body with a backslash or any byte below 0x20 (which includes a pretty
/// printer's line breaks and tabs) is left to serde whole: one pass over
/// all of it, without an early exit so that it is vectorised, then the
/// strings can be found with `memchr` alone. `JSON.stringify` writes
/// neither.
pub(super) fn parse_plain(text: &str) -> Option<Beacon<'_>> {
    let awkward = text
        .bytes()
        .fold(false, |awkward, b| awkward | (b < 0x20) | (b == b'\\'));
    if awkward {
        return None;
    }
    let mut at = Plain { text, at: 0 };
    let mut beacon = Beacon::default();
    // Which of site, page, ref, vid, title were seen: serde refuses a
    // repeat, even of a null.
    let mut seen = [false; 5];
    at.skip_ws();
    at.eat(b'{')?;
    at.skip_ws();
    if at.eat(b'}').is_none() {
        loop {
            let key = at.string()?;
            at.skip_ws();
            at.eat(b':')?;
            at.skip_ws();
            let value = if at.eat_null() {
                None
            } else {
                Some(at.string()?)
            };
            let field = match key {
                "site" => Some((0, &mut beacon.site)),
                "page" => Some((1, &mut beacon.page)),
                "ref" => Some((2, &mut beacon.referrer)),
                "vid" => Some((3, &mut beacon.vid)),
                "title" => Some((4, &mut beacon.title)),
                _ => None,
            };
            if let Some((index, slot)) = field {
                if std::mem::replace(&mut seen[index], true) {
                    return None;
                }
                *slot = value.map(Cow::Borrowed);
            }
            at.skip_ws();
            if at.eat(b'}').is_some() {
                break;
            }
            at.eat(b',')?;
            at.skip_ws();
        }
    }
    at.skip_ws();
    (at.at == text.len()).then_some(beacon)
}

/// A cursor over a body for [`parse_plain`].
struct Plain<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Plain<'a> {
    /// Skips spaces (the only JSON whitespace [`parse_plain`] lets in).
    fn skip_ws(&mut self) {
        let bytes = self.text.as_bytes();
        while bytes.get(self.at) == Some(&b' ') {
            self.at += 1;
        }
    }

    /// Takes `byte` when it is next.
    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.text.as_bytes().get(self.at) == Some(&byte)).then(|| self.at += 1)
    }

    /// Takes `null` when it is next. What follows is checked by the
    /// caller, as after any value (`nullx` goes to serde, which refuses it).
    fn eat_null(&mut self) -> bool {
        let taken = self.text.as_bytes()[self.at..].starts_with(b"null");
        if taken {
            self.at += 4;
        }
        taken
    }

    /// Takes a string and returns what is between its quotes (the body
    /// holds no escape, see [`parse_plain`]); `None` when no string is
    /// next.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let end = start + memchr::memchr(b'"', &self.text.as_bytes()[start..])?;
        self.at = end + 1;
        // The quotes are ASCII, so both ends are character boundaries.
        self.text.get(start..end)
    }
}

/// Parses `/hit.gif`'s query string.
pub fn parse_query(query: &str) -> Beacon<'_> {
    let mut beacon = Beacon::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match key.as_ref() {
            "site" => &mut beacon.site,
            "page" => &mut beacon.page,
            "ref" => &mut beacon.referrer,
            "vid" => &mut beacon.vid,
            "title" => &mut beacon.title,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(value);
        }
    }
    beacon
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_trimmed_cleaned_and_bounded_in_characters() {
        assert_eq!(clean_title("  Tin nóng  ").as_deref(), Some("Tin nóng"));
        assert!(matches!(clean_title("Tin nóng"), Some(Cow::Borrowed(_))));
        assert_eq!(clean_title("a\u{0}b\nc\u{7f}").as_deref(), Some("abc"));
        assert_eq!(clean_title(" \t\n "), None);
        assert_eq!(clean_title(""), None);
        let long = "ệ".repeat(300);
        let kept = clean_title(&long).unwrap();
        assert_eq!(kept.chars().count(), TITLE_MAX_CHARS);
        assert_eq!(kept.len(), TITLE_MAX_CHARS * "ệ".len());
        assert_eq!(clean_title("<b>x</b>").as_deref(), Some("<b>x</b>"));
    }

    #[test]
    fn a_title_is_read_from_the_plain_path_serde_and_the_pixel() {
        let body = r#"{"site":"demo","page":"/a","title":"Tin <b>nóng</b>"}"#;
        let plain = parse_plain(body).expect("a snippet's body");
        assert_eq!(plain.title.as_deref(), Some("Tin <b>nóng</b>"));
        let escaped = parse_body(br#"{"site":"demo","title":"\"Tin\" m\u1edbi"}"#).unwrap();
        assert_eq!(escaped.title.as_deref(), Some("\"Tin\" mới"));
        let pixel = parse_query("site=demo&title=Tin%20m%E1%BB%9Bi");
        assert_eq!(pixel.title.as_deref(), Some("Tin mới"));
        // A repeated title goes to serde, which refuses it.
        assert!(parse_plain(r#"{"title":"a","title":"b"}"#).is_none());
    }
}
