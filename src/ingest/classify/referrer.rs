//! Referrers: the host (or Android app) a referrer URL names, whether it is
//! the site's own, which named source it is, and the bare host an unknown
//! one is counted as.
//!
//! The named sources come from `sources.json` beside this file, read once
//! into hash maps. A host is matched by walking its suffixes from the
//! longest (`news.google.com`, `google.com`, `com`): the first suffix in the
//! map decides, so a more specific entry (`news.google.com`, Google News)
//! wins over a shorter one. Then a label listed under `any_tld` followed by
//! nothing but a top-level domain (`google.com.vn`, `www.yandex.ru`) names
//! its source. This is what the referer-parser lists (snowplow's
//! `referers.yml`, Matomo's `SearchEngines.yml`/`Socials.yml`) do by
//! listing domains, and what Plausible does by looking the host up after
//! dropping `www.`; luot keeps the list small and walks suffixes instead of
//! listing every country domain. Never a regex per hit.
/// The named-source maps: looked up with request text on every hit, built
/// once from the shipped file (foldhash, keyed per process).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

use serde::Deserialize;

use super::{Channel, ClassifyError, Inline, MAX_VALUE_BYTES, Value};

/// The named-source table, compiled in (see the file's `about`).
pub const SOURCES_JSON: &str = include_str!("sources.json");

/// The longest host DNS allows, in bytes.
const MAX_HOST_BYTES: usize = 253;
/// The longest DNS label, in bytes.
const MAX_LABEL_BYTES: usize = 63;
/// The longest IPv6 address in text (`ffff:…:255.255.255.255`), so that a
/// bracketed literal always fits a stored value whole.
const MAX_IPV6_BYTES: usize = 45;

/// Leading labels an unknown referrer's host loses (one of them, once):
/// the web and mobile front doors of the same site, and Facebook-style link
/// shims (`l.`, `lm.`).
const STRIPPED_PREFIXES: [&str; 5] = ["www.", "m.", "l.", "lm.", "mobile."];

/// A named source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Source {
    pub name: &'static str,
    pub channel: Channel,
}

/// The file's shape. Strings borrow from the compiled-in text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourcesFile<'a> {
    #[serde(borrow, rename = "about")]
    _about: &'a str,
    #[serde(borrow)]
    second_levels: Vec<&'a str>,
    #[serde(borrow)]
    sources: Vec<SourceEntry<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceEntry<'a> {
    name: &'a str,
    channel: Channel,
    #[serde(borrow, default)]
    hosts: Vec<&'a str>,
    #[serde(borrow, default)]
    any_tld: Vec<&'a str>,
    #[serde(borrow, default)]
    apps: Vec<&'a str>,
}

/// The named sources as hash maps.
pub(crate) struct SourceTable {
    /// A host and all its subdomains.
    hosts: HashMap<&'static str, Source>,
    /// A label followed by a top-level domain.
    any_tld: HashMap<&'static str, Source>,
    /// An `android-app://` package.
    apps: HashMap<&'static str, Source>,
    /// Second-level labels of country domains (`com` in `com.vn`).
    second_levels: HashSet<&'static str>,
    /// How many sources.
    count: usize,
}

impl SourceTable {
    /// Reads `json` (the compiled-in file) into the maps.
    pub fn parse(json: &'static str) -> Result<Self, ClassifyError> {
        let file: SourcesFile<'static> = serde_json::from_str(json)?;
        let mut table = Self {
            hosts: HashMap::default(),
            any_tld: HashMap::default(),
            apps: HashMap::default(),
            second_levels: HashSet::default(),
            count: file.sources.len(),
        };
        for label in file.second_levels {
            check_name(label)?;
            if !table.second_levels.insert(label) {
                return Err(duplicate("second level", label));
            }
        }
        let mut names = HashSet::default();
        for entry in file.sources {
            if entry.name.trim().is_empty() {
                return Err(ClassifyError::Invalid {
                    value: entry.name.to_owned(),
                    reason: "a source needs a name",
                });
            }
            if !names.insert(entry.name) {
                return Err(duplicate("source", entry.name));
            }
            if entry.hosts.is_empty() && entry.any_tld.is_empty() && entry.apps.is_empty() {
                return Err(ClassifyError::Invalid {
                    value: entry.name.to_owned(),
                    reason: "a source needs hosts, any_tld labels or apps",
                });
            }
            let source = Source {
                name: entry.name,
                channel: entry.channel,
            };
            for (what, keys, map) in [
                ("host", entry.hosts, &mut table.hosts),
                ("any_tld label", entry.any_tld, &mut table.any_tld),
                ("app", entry.apps, &mut table.apps),
            ] {
                for key in keys {
                    check_name(key)?;
                    if what == "any_tld label" && key.contains('.') {
                        return Err(ClassifyError::Invalid {
                            value: key.to_owned(),
                            reason: "an any_tld entry is one label",
                        });
                    }
                    if map.insert(key, source).is_some() {
                        return Err(duplicate(what, key));
                    }
                }
            }
        }
        Ok(table)
    }

    /// How many named sources.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The named source of a lowercase `host`, if any.
    pub fn by_host(&self, host: &str) -> Option<Source> {
        let mut suffix = host;
        loop {
            if let Some(source) = self.hosts.get(suffix) {
                return Some(*source);
            }
            match suffix.split_once('.') {
                Some((_, rest)) => suffix = rest,
                None => break,
            }
        }
        let mut rest = host;
        while let Some((label, after)) = rest.split_once('.') {
            if let Some(source) = self.any_tld.get(label)
                && self.is_top_level(after)
            {
                return Some(*source);
            }
            rest = after;
        }
        None
    }

    /// The named source of a lowercase Android package, if any.
    pub fn by_app(&self, package: &str) -> Option<Source> {
        self.apps.get(package).copied()
    }

    /// Whether `domain` is a top-level domain: one label of letters (or
    /// punycode), or a listed second level and a two-letter country code.
    fn is_top_level(&self, domain: &str) -> bool {
        let tld = |label: &str| {
            label.len() >= 2
                && (label.bytes().all(|b| b.is_ascii_lowercase()) || label.starts_with("xn--"))
        };
        match domain.split_once('.') {
            None => tld(domain),
            Some((second, country)) => {
                self.second_levels.contains(second)
                    && country.len() == 2
                    && country.bytes().all(|b| b.is_ascii_lowercase())
            }
        }
    }
}

fn duplicate(what: &'static str, value: &str) -> ClassifyError {
    ClassifyError::Duplicate {
        what,
        value: value.to_owned(),
    }
}

/// A table key must be a lowercase host (or package) as [`Host`] makes one.
fn check_name(name: &str) -> Result<(), ClassifyError> {
    let lowercase = name
        .bytes()
        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'));
    if !lowercase || valid_host(name.as_bytes()).is_none() {
        return Err(ClassifyError::Invalid {
            value: name.to_owned(),
            reason: "not a lowercase host of letters, digits, '-', '_' and dots",
        });
    }
    Ok(())
}

/// What a referrer names.
#[derive(Debug)]
pub(crate) enum Referrer<'a> {
    /// A web page's host, lowercased, without user, port or trailing dot.
    Web(Host<'a>),
    /// An `android-app://` URI's package, lowercased.
    App(Host<'a>),
}

impl<'a> Referrer<'a> {
    /// The host (or package) of `referrer`, or `None` for an empty or
    /// invalid one (not `scheme://host…`, or a host that DNS could not
    /// carry).
    pub fn parse(referrer: &'a str) -> Option<Self> {
        let referrer = referrer.trim_matches(|c: char| c.is_ascii_whitespace() || c.is_control());
        // The scheme's characters, then `://` (one short scan, where a
        // substring search would set up a searcher per hit).
        let scheme_len = referrer
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
            .unwrap_or(referrer.len());
        let (scheme, rest) = referrer.split_at(scheme_len);
        let rest = rest.strip_prefix("://")?;
        if !scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
        {
            return None;
        }
        // A byte scan: `split` with a set of chars decodes each character.
        let end = rest
            .bytes()
            .position(|b| matches!(b, b'/' | b'?' | b'#' | b'\\'))
            .unwrap_or(rest.len());
        let authority = &rest[..end];
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = if host_port.starts_with('[') {
            // An IPv6 literal keeps its brackets; the port goes.
            let end = host_port.find(']')?;
            &host_port[..=end]
        } else {
            host_port.split(':').next().unwrap_or_default()
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        let host = Host::new(host)?;
        if scheme.eq_ignore_ascii_case("android-app") {
            Some(Referrer::App(host))
        } else {
            Some(Referrer::Web(host))
        }
    }
}

/// A valid host, lowercase: borrowed when it already was, else a copy on
/// the stack.
// The copy is large next to the borrow, and boxing it would allocate on
// the hot path; a `Host` lives on the stack for one classification.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Host<'a> {
    Borrowed(&'a str),
    Lowered {
        len: u8,
        bytes: [u8; MAX_HOST_BYTES],
    },
}

impl<'a> Host<'a> {
    /// `host` lowercased, if it is a valid host (see [`valid_host`]).
    fn new(host: &'a str) -> Option<Self> {
        valid_host(host.as_bytes())?;
        if !host.bytes().any(|b| b.is_ascii_uppercase()) {
            return Some(Host::Borrowed(host));
        }
        let mut bytes = [0; MAX_HOST_BYTES];
        bytes[..host.len()].copy_from_slice(host.as_bytes());
        bytes[..host.len()].make_ascii_lowercase();
        // valid_host bounds the length to MAX_HOST_BYTES (253).
        Some(Host::Lowered {
            len: host.len() as u8,
            bytes,
        })
    }

    /// The lowercase host.
    pub fn as_str(&self) -> &str {
        match self {
            Host::Borrowed(h) => h,
            // ASCII only (valid_host), so always UTF-8.
            Host::Lowered { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
        }
    }

    /// The value stored for an unknown referrer: without one of
    /// [`STRIPPED_PREFIXES`] when `strip` (and something with a dot is
    /// left), and at most [`MAX_VALUE_BYTES`], keeping the rightmost labels
    /// (the registrable part) so that it is still a host.
    pub fn value(&self, strip: bool) -> Value<'a> {
        let bare = |h: &str| -> (usize, usize) {
            let mut start = 0;
            if strip {
                for prefix in STRIPPED_PREFIXES {
                    if let Some(rest) = h.strip_prefix(prefix)
                        && rest.contains('.')
                    {
                        start = prefix.len();
                        break;
                    }
                }
            }
            while h.len() - start > MAX_VALUE_BYTES {
                match h[start..].find('.') {
                    Some(dot) => start += dot + 1,
                    // Labels are at most 63 bytes, so a dot is always found;
                    // kept for safety.
                    None => start = h.len() - MAX_VALUE_BYTES,
                }
            }
            (start, h.len())
        };
        match self {
            Host::Borrowed(h) => {
                let h: &'a str = h;
                let (start, end) = bare(h);
                Value::Borrowed(&h[start..end])
            }
            Host::Lowered { .. } => {
                let h = self.as_str();
                let (start, end) = bare(h);
                Value::Inline(Inline::copy_of(&h[start..end]))
            }
        }
    }
}

/// `Some(())` when `host` is 1–253 bytes of ASCII letters, digits, `-`, `_`
/// and dots in non-empty labels of at most 63 bytes, or a bracketed IPv6
/// literal (hex digits, `:` and `.`, at most [`MAX_IPV6_BYTES`]).
fn valid_host(host: &[u8]) -> Option<()> {
    if host.is_empty() || host.len() > MAX_HOST_BYTES {
        return None;
    }
    if let Some(inner) = host.strip_prefix(b"[") {
        let inner = inner.strip_suffix(b"]")?;
        let ok = !inner.is_empty()
            && inner.len() <= MAX_IPV6_BYTES
            && inner
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
        return ok.then_some(());
    }
    let ok = host.split(|b| *b == b'.').all(|label| {
        !label.is_empty()
            && label.len() <= MAX_LABEL_BYTES
            && label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    });
    ok.then_some(())
}

/// Rule 2: whether the lowercase `host` is one of `site_hosts` (in any
/// case), exactly or with `www.` added or removed.
pub(crate) fn is_internal<S: AsRef<str>>(host: &str, site_hosts: &[S]) -> bool {
    let bare = host.strip_prefix("www.").unwrap_or(host);
    site_hosts.iter().any(|site| {
        let site = site.as_ref();
        let site = match site.get(..4) {
            Some(www) if www.eq_ignore_ascii_case("www.") => &site[4..],
            _ => site,
        };
        site.eq_ignore_ascii_case(bare)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> SourceTable {
        SourceTable::parse(SOURCES_JSON).expect("shipped table parses")
    }

    fn host_of(referrer: &str) -> Option<String> {
        match Referrer::parse(referrer)? {
            Referrer::Web(h) | Referrer::App(h) => Some(h.as_str().to_owned()),
        }
    }

    #[test]
    fn the_shipped_table_parses_with_every_source_of_the_issue() {
        let t = table();
        assert_eq!(t.count(), 23);
        let file: SourcesFile<'static> = serde_json::from_str(SOURCES_JSON).unwrap();
        let names: Vec<&str> = file.sources.iter().map(|s| s.name).collect();
        for name in [
            "Google",
            "Google News",
            "Gmail",
            "Outlook",
            "Yahoo Mail",
            "Facebook",
            "Messenger",
            "Instagram",
            "TikTok",
            "Reddit",
            "LinkedIn",
            "Telegram",
            "YouTube",
            "X",
            "Zalo",
            "Cốc Cốc",
            "Báo Mới",
            "Bing",
            "Yahoo",
            "DuckDuckGo",
            "Yandex",
            "Baidu",
            "Naver",
        ] {
            assert!(names.contains(&name), "{name} missing");
        }
    }

    #[test]
    fn a_repeated_host_label_app_or_name_is_refused() {
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        let base = |sources: &str| {
            leak(format!(
                r#"{{"about":"","second_levels":["com"],"sources":[{sources}]}}"#
            ))
        };
        for sources in [
            r#"{"name":"A","channel":"social","hosts":["a.com"]},{"name":"B","channel":"social","hosts":["a.com"]}"#,
            r#"{"name":"A","channel":"social","hosts":["a.com","a.com"]}"#,
            r#"{"name":"A","channel":"search","any_tld":["a"]},{"name":"B","channel":"search","any_tld":["a"]}"#,
            r#"{"name":"A","channel":"social","apps":["com.a"]},{"name":"B","channel":"social","apps":["com.a"]}"#,
            r#"{"name":"A","channel":"social","hosts":["a.com"]},{"name":"A","channel":"social","hosts":["b.com"]}"#,
        ] {
            assert!(
                matches!(
                    SourceTable::parse(base(sources)),
                    Err(ClassifyError::Duplicate { .. })
                ),
                "{sources}"
            );
        }
        for sources in [
            r#"{"name":"A","channel":"social","hosts":["A.com"]}"#,
            r#"{"name":"A","channel":"social","hosts":["a..com"]}"#,
            r#"{"name":"A","channel":"social"}"#,
            r#"{"name":"","channel":"social","hosts":["a.com"]}"#,
            r#"{"name":"A","channel":"search","any_tld":["a.b"]}"#,
        ] {
            assert!(
                matches!(
                    SourceTable::parse(base(sources)),
                    Err(ClassifyError::Invalid { .. })
                ),
                "{sources}"
            );
        }
        assert!(matches!(
            SourceTable::parse(base(
                r#"{"name":"A","channel":"nowhere","hosts":["a.com"]}"#
            )),
            Err(ClassifyError::Json(_))
        ));
    }

    #[test]
    fn hosts_match_by_longest_suffix_then_by_any_tld() {
        let t = table();
        let name = |h: &str| t.by_host(h).map(|s| s.name);
        assert_eq!(name("news.google.com"), Some("Google News"));
        assert_eq!(name("mail.google.com"), Some("Gmail"));
        assert_eq!(name("google.com"), Some("Google"));
        assert_eq!(name("www.google.com.vn"), Some("Google"));
        assert_eq!(name("www.google.co.uk"), Some("Google"));
        assert_eq!(name("google.de"), Some("Google"));
        assert_eq!(name("accounts.google.com"), Some("Google"));
        assert_eq!(name("google.example.com"), None);
        assert_eq!(name("notgoogle.com"), None);
        assert_eq!(name("google"), None);
        assert_eq!(name("yandex.ru"), Some("Yandex"));
        assert_eq!(name("yandex.com.tr"), Some("Yandex"));
        assert_eq!(name("search.yahoo.com"), Some("Yahoo"));
        assert_eq!(name("vn.search.yahoo.com"), Some("Yahoo"));
        assert_eq!(name("mail.yahoo.com"), Some("Yahoo Mail"));
        assert_eq!(name("l.facebook.com"), Some("Facebook"));
        assert_eq!(name("lm.facebook.com"), Some("Facebook"));
        assert_eq!(name("chat.zalo.me"), Some("Zalo"));
        assert_eq!(name("id.zaloapp.com"), Some("Zalo"));
        assert_eq!(name("notfacebook.com"), None);
        assert_eq!(name("facebook.com.evil.net"), None);
        assert_eq!(
            t.by_app("com.google.android.googlequicksearchbox")
                .map(|s| s.name),
            Some("Google")
        );
        assert_eq!(
            t.by_app("com.facebook.katana").map(|s| s.name),
            Some("Facebook")
        );
        assert_eq!(t.by_app("com.example"), None);
    }

    #[test]
    fn a_referrer_gives_its_host_only() {
        assert_eq!(
            host_of("https://WWW.Example.COM:8443/a/b?q=1#x").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(
            host_of("https://user:pw@example.com/").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            host_of("http://example.com.").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            host_of("http://example.com?x=/y").as_deref(),
            Some("example.com")
        );
        assert_eq!(host_of("http://[::1]:8080/").as_deref(), Some("[::1]"));
        assert_eq!(
            host_of("android-app://com.google.android.googlequicksearchbox/").as_deref(),
            Some("com.google.android.googlequicksearchbox")
        );
        assert!(matches!(
            Referrer::parse("android-app://com.facebook.katana"),
            Some(Referrer::App(_))
        ));
        for invalid in [
            "",
            "   ",
            "example.com",
            "/relative/path",
            "://example.com",
            "1http://example.com",
            "http://",
            "http:///path",
            "file:///etc/passwd",
            "http://exa mple.com/",
            "http://ví-dụ.vn/",
            "http://a..b/",
            "http://[zz]/",
        ] {
            assert_eq!(host_of(invalid), None, "{invalid:?}");
        }
    }

    #[test]
    fn an_unknown_host_loses_one_front_door_prefix_and_stays_bounded() {
        let value = |r: &str| match Referrer::parse(r).unwrap() {
            Referrer::Web(h) => h.value(true).as_str().to_owned(),
            Referrer::App(h) => h.value(false).as_str().to_owned(),
        };
        assert_eq!(value("https://www.vnexpress.net/"), "vnexpress.net");
        assert_eq!(value("https://M.Example.com/"), "example.com");
        assert_eq!(value("https://mobile.example.com/"), "example.com");
        assert_eq!(value("https://lm.example.com/"), "example.com");
        assert_eq!(value("https://www.m.example.com/"), "m.example.com");
        assert_eq!(value("https://www.com/"), "www.com");
        assert_eq!(value("https://news.example.com/"), "news.example.com");
        let long = format!("https://{}.example.com/", ["abcdefghij"; 10].join("."));
        let v = value(&long);
        assert!(
            v.len() <= MAX_VALUE_BYTES && v.ends_with(".example.com") && !v.starts_with('.'),
            "{v}"
        );
    }

    #[test]
    fn internal_is_exact_or_www_added_or_removed() {
        let hosts = [
            "Báo.example".to_owned(),
            "news.example".to_owned(),
            "www.tin.example".to_owned(),
        ];
        assert!(is_internal("news.example", &hosts));
        assert!(is_internal("www.news.example", &hosts));
        assert!(is_internal("tin.example", &hosts));
        assert!(is_internal("www.tin.example", &hosts));
        assert!(!is_internal("m.news.example", &hosts));
        assert!(!is_internal("news.example.com", &hosts));
        assert!(!is_internal("example", &hosts));
    }
}
