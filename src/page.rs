//! What a page is: turning whatever a beacon sends as `page` (a path or a
//! full URL) into one canonical, bounded path, so that `/a`, `/a/`,
//! `https://site/a?utm_source=x#top` count as one page. Pure,
//! allocation-free when given a buffer; knows nothing of HTTP, sites or
//! stores.
//!
//! The canonical form is built in one pass and never holds more than
//! `max_len` bytes, even while dot segments are being resolved, so a hostile
//! beacon with a megabyte-long `page` costs linear time and no memory.
//!
//! Decisions worth knowing when reading counts:
//!
//! * Empty input (or input that is only whitespace) is the root page `/`.
//! * ASCII control characters are rejected anywhere in the input, raw or
//!   percent-encoded (`%00`–`%1F`, `%7F`), including in the query and the
//!   fragment that are later dropped, so that whether a hit counts never
//!   depends on a site's `keep_query` setting.
//! * Something that starts with a scheme (`word:`) but is not followed by
//!   `//` is not a page (`javascript:`, `mailto:`, `data:`, and also
//!   `localhost:8080/x`, which is ambiguous and never sent by a browser).
//! * Text without a scheme and without a leading `/`, such as `news/a` or
//!   `www.example.com/a`, is a relative path and gets a leading `/`.
//! * Non-ASCII characters are kept, percent-encoded as UTF-8 with uppercase
//!   hex; the output is always printable ASCII.

/// The page length used when a site does not choose its own.
///
/// It is long enough for any real article slug and short enough that the
/// counter's keys stay small.
pub const DEFAULT_MAX_PAGE_LEN: usize = 512;

/// The longest host [`host_of`] returns, in bytes.
///
/// It is the longest DNS name; an out buffer with at least this capacity
/// means [`host_of`] never allocates.
pub const MAX_HOST_LEN: usize = 253;

/// How a site wants its pages normalised.
///
/// A site whose pages are told apart by their query (`/article?id=7`) sets
/// `keep_query`; every other site drops it so that tracking parameters do
/// not split one page into many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRules {
    /// Whether the query is part of the page. When it is, it is kept after
    /// `?` with its percent-encoding made canonical, and an empty query is
    /// dropped.
    pub keep_query: bool,
    /// The longest canonical page in bytes; longer pages are truncated, not
    /// rejected, so that a hit on a very long URL still counts. A value of
    /// 0 is outside the contract and is treated as 1.
    pub max_len: usize,
}

impl Default for PageRules {
    /// Drops the query and bounds pages at [`DEFAULT_MAX_PAGE_LEN`], which
    /// is right for most sites.
    fn default() -> Self {
        Self {
            keep_query: false,
            max_len: DEFAULT_MAX_PAGE_LEN,
        }
    }
}

/// Why a beacon's `page` names no page.
///
/// Each variant is one cause, so a caller can count rejections by cause.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageError {
    /// The input holds an ASCII control character (0x00–0x1F or 0x7F),
    /// raw or percent-encoded. No browser sends one, so it is a mangled or
    /// forged beacon, and a control character in a stored key would break
    /// logs and exports.
    #[error("the page contains an ASCII control character, raw or percent-encoded")]
    ControlCharacter,
    /// The input has a scheme that is not followed by `//`, as in
    /// `javascript:alert(1)` or `mailto:x`, so it does not point at a page.
    #[error("the page has a scheme but no `//` authority, so it is not a web page")]
    NotAPath,
}

/// Writes the canonical form of `input` into `out` (cleared first).
///
/// This is the form under which a hit is counted: scheme, authority and
/// fragment are dropped, the query is dropped unless `rules.keep_query`,
/// percent-encoding is made canonical, runs of `/` collapse, dot segments
/// are resolved without climbing above `/`, and a trailing `/` is removed
/// except for the root. The result always starts with `/`, is printable
/// ASCII, and normalising it again gives it back unchanged.
///
/// When the canonical form is longer than `rules.max_len` bytes, it is
/// truncated to at most `rules.max_len` bytes without splitting a `%XX`
/// escape, and then a trailing `/`, `?` or lone `.`/`..` segment left by
/// the cut is removed; the hit still counts, on the truncated page.
///
/// Never allocates when `out` already has capacity ≥ `rules.max_len + 4`,
/// because at most `max(rules.max_len, 1)` bytes are ever written to it.
///
/// # Errors
///
/// [`PageError::ControlCharacter`] when the input holds an ASCII control
/// character, raw or percent-encoded, anywhere (including the parts that are
/// dropped); [`PageError::NotAPath`] when it has a scheme without `//`. On
/// error `out` is left empty.
pub fn normalize_into(input: &str, rules: PageRules, out: &mut String) -> Result<(), PageError> {
    out.clear();
    let input = input.trim_ascii();
    reject_control(input.as_bytes())?;
    let (path, query) = path_and_query(strip_origin(input)?);

    let mut writer = Bounded::new(out, rules.max_len.max(1));
    for segment in segments(path) {
        match classify(segment.as_bytes()) {
            Segment::Empty | Segment::Dot => {}
            Segment::DotDot => writer.pop(),
            Segment::Normal => writer.push_segment(segment),
        }
    }
    writer.ensure_root();
    if let Some(query) = query.filter(|q| rules.keep_query && !q.is_empty()) {
        writer.push_query(query);
    }
    writer.finish();
    Ok(())
}

/// The path and the query of what follows the origin, without the
/// fragment.
///
/// The separators are ASCII, so the bytes are searched directly: `str`'s
/// `split_once` and `split` with a `char` pattern cost ~200 and ~110
/// instructions a call on a beacon's short page (callgrind).
fn path_and_query(rest: &str) -> (&str, Option<&str>) {
    let bytes = rest.as_bytes();
    let Some(end) = bytes.iter().position(|&b| b == b'?' || b == b'#') else {
        return (rest, None);
    };
    if bytes[end] == b'#' {
        return (&rest[..end], None);
    }
    let query = &rest[end + 1..];
    let query_end = query.bytes().position(|b| b == b'#').unwrap_or(query.len());
    (&rest[..end], Some(&query[..query_end]))
}

/// The segments of a path between its slashes, as `path.split('/')` gives
/// them (an empty one before a leading slash, between two slashes and
/// after a trailing one).
fn segments(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(path);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.bytes().position(|b| b == b'/') {
            Some(at) => {
                rest = Some(&current[at + 1..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// Returns the canonical form of `input` in a new `String`.
///
/// It is the convenient form of [`normalize_into`] for tests, tools and
/// cold paths; the hot path should reuse a buffer with [`normalize_into`].
///
/// # Errors
///
/// The same as [`normalize_into`].
pub fn normalize(input: &str, rules: PageRules) -> Result<String, PageError> {
    // The canonical form is at most three bytes per input byte plus the
    // leading `/`, and never more than the bound.
    let capacity = rules
        .max_len
        .max(1)
        .min(input.len().saturating_mul(3).saturating_add(1));
    let mut out = String::with_capacity(capacity);
    normalize_into(input, rules, &mut out)?;
    Ok(out)
}

/// Writes the host of a URL-ish `input` into `out` (cleared first) and
/// returns it, lowercased, without port, userinfo or a trailing dot.
///
/// It is used to map a `Referer` to a site, so
/// `https://User@Example.COM:8080/x` gives `example.com`. An IPv6 literal
/// keeps its brackets, as it is written in a URL and in a `Host` header:
/// `http://[::1]:8080/` gives `[::1]`. A protocol-relative `//host/x` has a
/// host too.
///
/// It writes into a caller's buffer instead of returning a new string so
/// that it never allocates: `out` with capacity ≥ [`MAX_HOST_LEN`] is never
/// grown. The returned slice borrows `out`.
///
/// # Errors
///
/// Returns `None`, leaving `out` empty, when the input has no authority (a
/// bare or relative path, `javascript:…`), when the host is empty, or when
/// it is not a plain host: a name of ASCII letters, digits, `-`, `_` and
/// `.` no longer than [`MAX_HOST_LEN`], or a bracketed IPv6 literal, with
/// an optional numeric port. Browsers send internationalised names as
/// punycode, so rejecting other characters loses no real referrer. An
/// authority holding a backslash is rejected too, because browsers and
/// RFC 3986 disagree on where its host is.
pub fn host_of<'o>(input: &str, out: &'o mut String) -> Option<&'o str> {
    out.clear();
    let host = host_slice(input.trim_ascii())?;
    out.extend(host.chars().map(|c| c.to_ascii_lowercase()));
    Some(out.as_str())
}

/// Finds the host inside `input`, still in its original case.
fn host_slice(input: &str) -> Option<&str> {
    let after_slashes = match input.strip_prefix("//") {
        Some(after) => after,
        None => scheme_rest(input)?.strip_prefix("//")?,
    };
    let authority = &after_slashes[..authority_len(after_slashes)];
    // Browsers read a backslash in an http(s) authority as the start of the
    // path, RFC 3986 reads it as data; a host that depends on who reads it
    // is no host.
    if authority.contains('\\') {
        return None;
    }
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_userinfo, host_port)| host_port);

    let (host, port) = if host_port.starts_with('[') {
        let close = host_port.find(']')?;
        let inner = &host_port[1..close];
        let literal_ok = !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !literal_ok {
            return None;
        }
        (&host_port[..=close], &host_port[close + 1..])
    } else {
        let end = host_port.find(':').unwrap_or(host_port.len());
        let name = &host_port[..end];
        let name = name.strip_suffix('.').unwrap_or(name);
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_ok {
            return None;
        }
        (name, &host_port[end..])
    };

    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit()));
    (port_ok && host.len() <= MAX_HOST_LEN).then_some(host)
}

/// Returns the part of `input` after a leading `scheme:`, or `None` when
/// `input` does not start with a scheme as RFC 3986 §3.1 spells it.
fn scheme_rest(input: &str) -> Option<&str> {
    let bytes = input.as_bytes();
    if !bytes.first()?.is_ascii_alphabetic() {
        return None;
    }
    let len = bytes
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))?;
    (bytes[len] == b':').then(|| &input[len + 1..])
}

/// Returns the length of the authority at the start of `s`, which ends at
/// the first `/`, `?` or `#` (RFC 3986 §3.2).
fn authority_len(s: &str) -> usize {
    s.find(['/', '?', '#']).unwrap_or(s.len())
}

/// Drops the scheme and authority, leaving the path, query and fragment.
fn strip_origin(input: &str) -> Result<&str, PageError> {
    if let Some(after) = input.strip_prefix("//") {
        return Ok(&after[authority_len(after)..]);
    }
    if input.starts_with('/') {
        return Ok(input);
    }
    match scheme_rest(input) {
        Some(rest) => match rest.strip_prefix("//") {
            Some(after) => Ok(&after[authority_len(after)..]),
            None => Err(PageError::NotAPath),
        },
        // A relative path; splitting it on `/` below gives it its leading
        // `/` for free.
        None => Ok(input),
    }
}

/// Rejects raw ASCII control characters and their `%XX` escapes.
///
/// One pass without an early exit, which the compiler vectorises, then the
/// escapes only when there is a `%` (a byte at a time, this was ~400
/// instructions for a beacon's URL, callgrind).
fn reject_control(bytes: &[u8]) -> Result<(), PageError> {
    let is_control = |b: u8| b < 0x20 || b == 0x7F;
    let (control, percent) = bytes.iter().fold((false, false), |(control, percent), &b| {
        (control | is_control(b), percent | (b == b'%'))
    });
    let escaped_control = percent
        && bytes
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'%' && escape_value(&bytes[i..]).is_some_and(is_control));
    if control || escaped_control {
        return Err(PageError::ControlCharacter);
    }
    Ok(())
}

/// Returns the byte a `%XX` escape at the start of `bytes` stands for.
fn escape_value(bytes: &[u8]) -> Option<u8> {
    match bytes {
        [b'%', high, low, ..] => Some(hex_value(*high)? << 4 | hex_value(*low)?),
        _ => None,
    }
}

/// Returns the value of one hexadecimal digit.
fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Whether a byte is unreserved (RFC 3986 §2.3), so its escape is decoded.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether a byte may stand unescaped in a canonical path or query.
///
/// Everything printable is kept except the characters that browsers escape
/// themselves, plus `%`, which is handled as an escape, and the backslash,
/// which is data here, not a separator.
fn is_kept_raw(b: u8) -> bool {
    b.is_ascii_graphic()
        && !matches!(
            b,
            b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' | b'%'
        )
}

/// One unit of canonical output, which truncation never splits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// A printable ASCII byte written as itself.
    Raw(u8),
    /// A byte written as `%XX` with uppercase hex.
    Escaped(u8),
}

impl Unit {
    /// The number of bytes the unit takes in the output.
    fn len(self) -> usize {
        match self {
            Unit::Raw(_) => 1,
            Unit::Escaped(_) => 3,
        }
    }
}

/// Reads the unit at the start of non-empty `bytes`, returning it and the
/// number of input bytes it consumed.
fn next_unit(bytes: &[u8]) -> (Unit, usize) {
    let first = bytes[0];
    if first == b'%' {
        return match escape_value(bytes) {
            Some(value) if is_unreserved(value) => (Unit::Raw(value), 3),
            Some(value) => (Unit::Escaped(value), 3),
            // A lone `%` is data and becomes `%25`.
            None => (Unit::Escaped(b'%'), 1),
        };
    }
    if is_kept_raw(first) {
        (Unit::Raw(first), 1)
    } else {
        (Unit::Escaped(first), 1)
    }
}

/// Iterates over the canonical units of `bytes`.
fn units(mut bytes: &[u8]) -> impl Iterator<Item = Unit> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let (unit, used) = next_unit(bytes);
        bytes = &bytes[used..];
        Some(unit)
    })
}

/// What a path segment means for dot-segment removal.
enum Segment {
    /// Nothing between two slashes, which collapse into one.
    Empty,
    /// `.` or `%2E`, which names the current segment.
    Dot,
    /// `..` in any escaping, which climbs one segment.
    DotDot,
    /// Anything else.
    Normal,
}

/// Classifies a raw segment after canonical decoding, so that `%2E%2E`
/// climbs just as `..` does.
fn classify(segment: &[u8]) -> Segment {
    let mut dots = 0;
    for unit in units(segment) {
        if unit != Unit::Raw(b'.') || dots == 2 {
            return Segment::Normal;
        }
        dots += 1;
    }
    match dots {
        0 => Segment::Empty,
        1 => Segment::Dot,
        _ => Segment::DotDot,
    }
}

/// The canonical page being built, holding at most `cap` bytes.
///
/// Conceptually it is a stack of segments whose concatenation may be longer
/// than `cap`; `out` holds the longest prefix of that concatenation made of
/// whole units that fits. Segments that start beyond the bound are only
/// counted, which is enough to resolve `..` exactly: popping one of them
/// changes nothing visible, and the segment that straddles the bound still
/// has its `/` in `out`.
struct Bounded<'o> {
    /// The visible prefix of the page.
    out: &'o mut String,
    /// The most bytes `out` may hold.
    cap: usize,
    /// How many segments on the stack start at or beyond the bound.
    hidden: usize,
    /// Whether the last thing written to `out` was cut short.
    cut: bool,
}

impl<'o> Bounded<'o> {
    /// Starts an empty page in a cleared `out`.
    fn new(out: &'o mut String, cap: usize) -> Self {
        Self {
            out,
            cap,
            hidden: 0,
            cut: false,
        }
    }

    /// Whether the full page is longer than what `out` holds.
    fn truncated(&self) -> bool {
        self.hidden > 0 || self.cut
    }

    /// Whether `len` more bytes fit within the bound.
    fn fits(&self, len: usize) -> bool {
        self.cap - self.out.len() >= len
    }

    /// Pushes a non-dot segment with its leading `/`.
    fn push_segment(&mut self, segment: &str) {
        if self.truncated() || !self.fits(1) {
            self.hidden += 1;
            return;
        }
        self.out.push('/');
        self.write_units(segment);
    }

    /// Removes the last segment, if any, for a `..`.
    fn pop(&mut self) {
        if self.hidden > 0 {
            self.hidden -= 1;
            return;
        }
        // Segments never hold a raw `/`, so the last one starts at the last
        // `/`; at the root there is nothing to climb.
        if let Some(start) = self.out.rfind('/') {
            self.out.truncate(start);
        }
        self.cut = false;
    }

    /// Turns an empty path into the root `/`.
    fn ensure_root(&mut self) {
        if self.out.is_empty() {
            // The bound is at least 1 and nothing can be hidden behind an
            // empty `out`, so the root always fits.
            self.out.push('/');
        }
    }

    /// Appends `?` and the canonical form of a non-empty query.
    fn push_query(&mut self, query: &str) {
        if self.truncated() {
            return;
        }
        if !self.fits(1) {
            self.cut = true;
            return;
        }
        self.out.push('?');
        self.write_units(query);
    }

    /// Appends the canonical units of `bytes` until one does not fit.
    ///
    /// A run of bytes kept as they are is copied at once, which is most of
    /// any real path; the units between runs go one at a time. (A beacon's
    /// page took ~2,900 instructions byte by byte, callgrind.) Kept bytes
    /// are ASCII, so a run is a slice of `text` at character boundaries,
    /// copied without checking it as UTF-8 again.
    fn write_units(&mut self, text: &str) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut at = 0;
        while at < text.len() {
            let bytes = &text.as_bytes()[at..];
            let run = bytes
                .iter()
                .position(|&b| !is_kept_raw(b))
                .unwrap_or(bytes.len());
            if run > 0 {
                let take = run.min(self.cap - self.out.len());
                self.out.push_str(&text[at..at + take]);
                if take < run {
                    self.cut = true;
                    return;
                }
                at += run;
                continue;
            }
            let (unit, used) = next_unit(bytes);
            if !self.fits(unit.len()) {
                self.cut = true;
                return;
            }
            match unit {
                Unit::Raw(b) => self.out.push(char::from(b)),
                Unit::Escaped(b) => {
                    self.out.push('%');
                    self.out.push(char::from(HEX[usize::from(b >> 4)]));
                    self.out.push(char::from(HEX[usize::from(b & 0xF)]));
                }
            }
            at += used;
        }
    }

    /// Tidies what a truncation left so that the result is canonical too.
    fn finish(self) {
        if !self.truncated() {
            return;
        }
        // A cut can leave a `/` or `?` with nothing after it.
        while self.out.len() > 1 && self.out.ends_with(['/', '?']) {
            self.out.pop();
        }
        // A cut path can end in a partial segment that reads `.` or `..`
        // (from `.well-known` or `..x`), which would be resolved when the
        // page is normalised again, so it goes now. In a query, or after a
        // whole segment, this never matches.
        if !self.out.contains('?')
            && let Some(start) = self.out.rfind('/')
            && matches!(&self.out[start + 1..], "." | "..")
        {
            self.out.truncate(start);
        }
        if self.out.is_empty() {
            self.out.push('/');
        }
    }
}

#[cfg(test)]
mod tests {
    /// Inputs on which the property tests once failed (formerly kept in a
    /// top-level proptest-regressions file).
    #[test]
    fn past_property_failures_stay_fixed() {
        for (input, keep_query, max_len) in [(".%e1%bb%87/ /../", false, 5), (".\\", false, 2)] {
            let rules = PageRules {
                keep_query,
                max_len,
            };
            let once = normalize(input, rules).expect("a page");
            assert!(
                once.starts_with('/') && once.len() <= max_len,
                "{input:?} -> {once:?}"
            );
            assert_eq!(
                normalize(&once, rules).as_deref(),
                Ok(once.as_str()),
                "idempotent"
            );
        }
    }

    use super::*;
    use proptest::prelude::*;

    fn rules(keep_query: bool, max_len: usize) -> PageRules {
        PageRules {
            keep_query,
            max_len,
        }
    }

    fn norm(input: &str) -> Result<String, PageError> {
        normalize(input, PageRules::default())
    }

    fn host(input: &str) -> Option<String> {
        let mut out = String::with_capacity(MAX_HOST_LEN);
        host_of(input, &mut out).map(str::to_owned)
    }

    #[test]
    fn default_rules_drop_the_query_and_bound_at_512() {
        assert_eq!(PageRules::default(), rules(false, DEFAULT_MAX_PAGE_LEN));
        assert_eq!(DEFAULT_MAX_PAGE_LEN, 512);
    }

    #[test]
    fn examples_normalise_to_their_canonical_page() {
        let table = [
            (
                "https://news.example/thoi-su/bai-1?utm_source=fb#top",
                "/thoi-su/bai-1",
            ),
            ("/a/", "/a"),
            ("/", "/"),
            ("", "/"),
            ("  \t/a \r\n", "/a"),
            ("//cdn.x/a/b/", "/a/b"),
            ("/a//b", "/a/b"),
            ("/a/./b/../c", "/a/c"),
            ("/../../x", "/x"),
            ("/a/b/..", "/a"),
            ("/a/.", "/a"),
            ("/%2e%2E/a/%2E/b", "/a/b"),
            ("/%7Euser", "/~user"),
            ("/%41%2d%5F", "/A-_"),
            ("/%e1%bb%87", "/%E1%BB%87"),
            ("/tin tức", "/tin%20t%E1%BB%A9c"),
            ("/a%2Fb", "/a%2Fb"),
            ("/a%2fb", "/a%2Fb"),
            ("/100%", "/100%25"),
            ("/100%zz", "/100%25zz"),
            ("/a\\b", "/a%5Cb"),
            ("/<\"{|}^`>", "/%3C%22%7B%7C%7D%5E%60%3E"),
            ("news/a", "/news/a"),
            ("./news/../a", "/a"),
            ("?x=1", "/"),
            ("#top", "/"),
            ("https://site", "/"),
            ("https://site?x=1", "/"),
            ("HTTPS://Site/A", "/A"),
            ("svn+ssh://host/repo/", "/repo"),
            ("///a", "/a"),
            ("/a?b=1#x", "/a"),
            ("/a#x?y", "/a"),
        ];
        for (input, expected) in table {
            assert_eq!(norm(input).as_deref(), Ok(expected), "input {input:?}");
        }
    }

    #[test]
    fn kept_queries_are_canonical_and_empty_ones_dropped() {
        let keep = rules(true, DEFAULT_MAX_PAGE_LEN);
        let table = [
            ("/a?b=1#x", "/a?b=1"),
            ("/a?#x", "/a"),
            ("/a?", "/a"),
            ("/?x", "/?x"),
            ("https://s/a/?q=%7e%2f%zz t", "/a?q=~%2F%25zz%20t"),
            ("/a?next=//b/./c/", "/a?next=//b/./c/"),
            ("/a?b?c", "/a?b?c"),
            ("/a#x?y", "/a"),
        ];
        for (input, expected) in table {
            assert_eq!(
                normalize(input, keep).as_deref(),
                Ok(expected),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn schemes_without_authority_are_not_paths() {
        for input in [
            "javascript:alert(1)",
            "mailto:x@example.com",
            "data:text/html,hi",
            "http:/a",
            "localhost:8080/x",
        ] {
            assert_eq!(norm(input), Err(PageError::NotAPath), "input {input:?}");
        }
    }

    #[test]
    fn control_characters_are_rejected_raw_or_encoded_anywhere() {
        let keep = rules(true, DEFAULT_MAX_PAGE_LEN);
        for input in [
            "/a\nb", "/a\u{7f}", "/a%0Ab", "/a%7f", "/a%%00", "/a?x=%0d", "/a#\u{1}",
        ] {
            assert_eq!(
                norm(input),
                Err(PageError::ControlCharacter),
                "input {input:?}"
            );
            assert_eq!(normalize(input, keep), Err(PageError::ControlCharacter));
        }
    }

    #[test]
    fn errors_leave_the_buffer_empty() {
        let mut out = String::from("/stale");
        assert!(normalize_into("javascript:1", PageRules::default(), &mut out).is_err());
        assert_eq!(out, "");
    }

    #[test]
    fn long_pages_are_truncated_without_splitting_an_escape() {
        let long = format!("/{}", "%E1%BB%87".repeat(400));
        let page = norm(&long).unwrap();
        assert!(page.len() <= DEFAULT_MAX_PAGE_LEN);
        // 511 bytes of escapes fit after the `/`, which is 170 whole ones.
        assert_eq!(page.len(), 1 + 170 * 3);
        assert!(page.ends_with("%E1") || page.ends_with("%BB") || page.ends_with("%87"));

        for max_len in 1..12 {
            let page = normalize("/ab%E1%BB%87/cd", rules(false, max_len)).unwrap();
            assert!(page.len() <= max_len, "{page} for {max_len}");
            let last_percent = page.rfind('%').unwrap_or(0);
            assert!(
                page.len() - last_percent >= 3 || last_percent == 0,
                "{page}"
            );
        }
    }

    #[test]
    fn truncation_removes_the_trailing_slash_and_partial_dot_segments() {
        assert_eq!(
            normalize("/abc/def", rules(false, 5)).as_deref(),
            Ok("/abc")
        );
        assert_eq!(
            normalize("/ab/.well-known", rules(false, 5)).as_deref(),
            Ok("/ab")
        );
        assert_eq!(normalize("/ab/..x", rules(false, 6)).as_deref(), Ok("/ab"));
        assert_eq!(normalize("/..x", rules(false, 3)).as_deref(), Ok("/"));
        assert_eq!(normalize("/a?x=/y", rules(true, 6)).as_deref(), Ok("/a?x="));
        assert_eq!(normalize("/a?xyz", rules(true, 3)).as_deref(), Ok("/a"));
        assert_eq!(normalize("/abc", rules(false, 0)).as_deref(), Ok("/"));
    }

    #[test]
    fn dot_segments_resolve_exactly_past_the_length_bound() {
        let long = "x".repeat(100);
        let input = format!("/a/{long}/b/../../c");
        assert_eq!(normalize(&input, rules(false, 10)).as_deref(), Ok("/a/c"));
        let input = format!("/a/{long}/b/..");
        assert_eq!(
            normalize(&input, rules(false, 10)).as_deref(),
            Ok("/a/xxxxxxx")
        );
    }

    #[test]
    fn normalize_into_does_not_reallocate_a_big_enough_buffer() {
        let page_rules = PageRules::default();
        let mut out = String::with_capacity(page_rules.max_len + 4);
        let capacity = out.capacity();
        let pointer = out.as_ptr();
        let huge = format!(
            "https://news.example/{}/../a?utm=1",
            "tin tức/".repeat(5000)
        );
        for input in [
            "https://news.example/thoi-su/bai-1?utm_source=fb#top",
            "/tin tức/%e1%bb%87/./../x/",
            huge.as_str(),
        ] {
            normalize_into(input, page_rules, &mut out).unwrap();
            assert_eq!(out.capacity(), capacity);
            assert_eq!(out.as_ptr(), pointer);
        }
    }

    #[test]
    fn host_of_lowercases_and_drops_userinfo_port_and_trailing_dot() {
        assert_eq!(
            host("https://User@Example.COM:8080/x").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            host("https://user:pw@a.b@Example.com/x").as_deref(),
            Some("example.com")
        );
        assert_eq!(host("http://example.com").as_deref(), Some("example.com"));
        assert_eq!(
            host("http://example.com.:80?x").as_deref(),
            Some("example.com")
        );
        assert_eq!(host("  //CDN.example/a ").as_deref(), Some("cdn.example"));
        assert_eq!(host("http://10.0.0.1:3000/").as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn host_of_keeps_brackets_on_ipv6_literals() {
        assert_eq!(host("http://[::1]:8080/").as_deref(), Some("[::1]"));
        assert_eq!(
            host("http://[2001:DB8::1]/x").as_deref(),
            Some("[2001:db8::1]")
        );
        assert_eq!(host("http://[::1/"), None);
        assert_eq!(host("http://[]/"), None);
        assert_eq!(host("http://[::1]x/"), None);
    }

    #[test]
    fn host_of_is_none_without_a_plain_host() {
        for input in [
            "/a/b",
            "news/a",
            "",
            "javascript:alert(1)",
            "http:///x",
            "file:///etc/passwd",
            "http://:80/",
            "http://exa mple.com/",
            "http://ví-dụ.vn/",
            "http://a.com:8o/",
            "http://evil.com\\@good.com/",
        ] {
            assert_eq!(host(input), None, "input {input:?}");
        }
        let long = format!("http://{}.com/", "a".repeat(MAX_HOST_LEN));
        assert_eq!(host(&long), None);
    }

    #[test]
    fn host_of_does_not_reallocate_a_big_enough_buffer() {
        let mut out = String::with_capacity(MAX_HOST_LEN);
        let pointer = out.as_ptr();
        let long = format!("http://{}/", "A".repeat(MAX_HOST_LEN));
        assert_eq!(host_of(&long, &mut out).map(str::len), Some(MAX_HOST_LEN));
        assert_eq!(out.as_ptr(), pointer);
    }

    /// Strings made of the pieces that stress the normaliser.
    fn tricky_input() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/"),
            Just("//"),
            Just("."),
            Just(".."),
            Just("%"),
            Just("%2e"),
            Just("%2E"),
            Just("%2f"),
            Just("%7e"),
            Just("%e1%bb%87"),
            Just("%0"),
            Just("%zz"),
            Just("?"),
            Just("#"),
            Just(" "),
            Just("\\"),
            Just("ứ"),
            Just("a"),
            Just("bc"),
            Just("http://h"),
            Just(":"),
        ];
        prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    fn any_input() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), "[/%.a-fA-F0-9?#: ]{0,64}", tricky_input(),]
    }

    fn any_rules() -> impl Strategy<Value = PageRules> {
        (
            any::<bool>(),
            prop_oneof![1usize..64, Just(DEFAULT_MAX_PAGE_LEN)],
        )
            .prop_map(|(keep_query, max_len)| rules(keep_query, max_len))
    }

    /// Checks every promise the canonical form makes.
    fn assert_canonical(page: &str, page_rules: PageRules) {
        assert!(page.starts_with('/'), "{page:?}");
        assert!(page.len() <= page_rules.max_len, "{page:?}");
        assert!(page.bytes().all(|b| b.is_ascii_graphic()), "{page:?}");
        let path = match page.split_once('?') {
            Some((path, query)) => {
                assert!(page_rules.keep_query && !query.is_empty(), "{page:?}");
                path
            }
            None => page,
        };
        assert!(!path.contains("//"), "{page:?}");
        assert!(!path.contains("/./") && !path.contains("/../"), "{page:?}");
        assert!(path == "/" || !path.ends_with('/'), "{page:?}");
        assert!(!path.ends_with("/.") && !path.ends_with("/.."), "{page:?}");
        let mut rest = page;
        while let Some(at) = rest.find('%') {
            let escape = rest.as_bytes().get(at + 1..at + 3).unwrap_or(b"");
            assert!(
                escape.len() == 2
                    && escape
                        .iter()
                        .all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')),
                "{page:?}"
            );
            rest = &rest[at + 1..];
        }
    }

    /// `Bounded::write_units` as it was before runs were copied at once.
    fn write_units_one_by_one(page: &mut Bounded<'_>, bytes: &[u8]) {
        for unit in units(bytes) {
            if !page.fits(unit.len()) {
                page.cut = true;
                return;
            }
            match unit {
                Unit::Raw(b) => page.out.push(char::from(b)),
                Unit::Escaped(b) => page.out.push_str(&format!("%{b:02X}")),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn normalised_pages_are_canonical_bounded_and_idempotent(
            input in any_input(),
            page_rules in any_rules(),
        ) {
            if let Ok(page) = normalize(&input, page_rules) {
                assert_canonical(&page, page_rules);
                prop_assert_eq!(normalize(&page, page_rules), Ok(page));
            }
        }

        #[test]
        fn truncating_while_resolving_equals_truncating_the_full_page(
            input in any_input(),
            keep_query in any::<bool>(),
            max_len in 1usize..64,
        ) {
            let unbounded = normalize(&input, rules(keep_query, usize::MAX));
            let bounded = normalize(&input, rules(keep_query, max_len));
            match unbounded {
                Ok(full) => prop_assert_eq!(bounded, normalize(&full, rules(keep_query, max_len))),
                Err(error) => prop_assert_eq!(bounded, Err(error)),
            }
        }

        #[test]
        fn normalize_into_matches_normalize_and_never_grows_the_buffer(
            input in any_input(),
            page_rules in any_rules(),
        ) {
            let mut out = String::with_capacity(page_rules.max_len + 4);
            let pointer = out.as_ptr();
            let result = normalize_into(&input, page_rules, &mut out);
            prop_assert_eq!(out.as_ptr(), pointer);
            prop_assert_eq!(result.map(|()| out), normalize(&input, page_rules));
        }

        #[test]
        fn runs_copied_at_once_equal_units_written_one_by_one(
            chars in prop::collection::vec(prop_oneof![
                Just('%'), Just('.'), Just('a'), Just('Z'), Just('7'), Just(' '),
                Just('"'), Just('\\'), Just('~'), Just('é'), Just('\u{80}'), any::<char>(),
            ], 0..24),
            cap in 0usize..24,
            prefix in 0usize..4,
        ) {
            let text: String = chars.into_iter().collect();
            let write = |one_by_one: bool| {
                let mut out = "x".repeat(prefix.min(cap));
                let mut page = Bounded::new(&mut out, cap);
                if one_by_one {
                    write_units_one_by_one(&mut page, text.as_bytes());
                } else {
                    page.write_units(&text);
                }
                let cut = page.cut;
                (out, cut)
            };
            prop_assert_eq!(write(false), write(true));
        }

        #[test]
        fn byte_searches_split_as_the_str_methods_did(
            rest in "[a/?#.%]{0,12}",
        ) {
            let before_fragment = rest.split_once('#').map_or(rest.as_str(), |(before, _)| before);
            let expected = match before_fragment.split_once('?') {
                Some((path, query)) => (path, Some(query)),
                None => (before_fragment, None),
            };
            let (path, query) = path_and_query(&rest);
            prop_assert_eq!((path, query), expected);
            prop_assert_eq!(segments(path).collect::<Vec<_>>(), path.split('/').collect::<Vec<_>>());
        }

        #[test]
        fn host_of_never_panics_and_returns_a_lowercase_plain_host(input in any_input()) {
            let mut out = String::with_capacity(MAX_HOST_LEN);
            if let Some(host) = host_of(&input, &mut out) {
                prop_assert!(!host.is_empty() && host.len() <= MAX_HOST_LEN);
                prop_assert!(!host.bytes().any(|b| b.is_ascii_uppercase() || b == b':' && !host.starts_with('[')));
            }
        }
    }
}
