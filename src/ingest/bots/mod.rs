//! Bot detection: deciding whether a `User-Agent` belongs to a bot.
//!
//! # What this module owns
//!
//! One question: given the raw bytes of a `User-Agent` header, is the client
//! a bot — a crawler or spider, an HTTP library or command-line tool, a
//! headless or automated browser, an uptime checker, or a link previewer
//! (the fetcher a chat app sends to build a preview card)? A person reading
//! the page in a browser or in an app's in-app browser is not a bot.
//!
//! The answer comes from the crawler-user-agents list (MIT, by Martin
//! Monperrus et al., embedded from `crawler-user-agents.json`; see
//! `README.md` beside this file for its version and `refresh.sh` to update
//! it) plus luot's own [`EXTRA_PATTERNS`], compiled once into one big
//! alternation [`regex::bytes::Regex`] (measured ~1.3–2× faster than a
//! `RegexSet` of the same patterns for `is_match`; see the ignored bench
//! test), and answered through a small constant-size lock-free cache so that
//! the hot path usually hashes the header and does one atomic load.
//!
//! # What it must not do
//!
//! It knows nothing about HTTP (no requests, headers maps, addresses or
//! status codes: the caller hands over the header's bytes) and counts
//! nothing (no metrics, no tallies: the caller decides what a verdict means
//! and records it).
//!
//! # Decisions
//!
//! - Matching is case-sensitive, as the list intends (`[wW]get`,
//!   `S[eE][mM]rushBot`, ...).
//! - Only the first [`MAX_UA_BYTES`] bytes are considered, both by the cache
//!   and by the matcher, so the verdict for a longer header is the verdict
//!   for its prefix. Real browsers' headers are well below that.
//! - Empty (or whitespace-only) user agents are bots: a beacon sent by a
//!   real browser always carries one.
//! - Non-UTF-8 bytes are matched as they are (byte-oriented regexes); they
//!   never panic and never allocate a lossy copy.
//! - `okhttp` stays a bot (the list says so too): an Android WebView sends a
//!   Chromium user agent (`...; wv) ... Chrome/...`), never okhttp's, which
//!   only native code using the library sends — not a page view.
//! - WhatsApp's link previewer sends `WhatsApp/2.x.y A|i|N` as the whole
//!   user agent. The list's bare `WhatsApp` would also match any in-app
//!   browser that ever appended a `WhatsApp/` token, so it is replaced by an
//!   anchored `^WhatsApp(/|$)` (see [`SKIPPED_LIST_PATTERNS`]).
//! - Zalo's in-app browser (`... Zalo android/... ZaloTheme/light
//!   ZaloLanguage/vi`, `... Zalo iOS/... ZaloTheme/...`) is a person and no
//!   pattern touches it. Zalo's link-preview fetcher has no documented user
//!   agent, so none is guessed here.
#![forbid(unsafe_code)]

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use regex::bytes::{Regex, RegexBuilder};

/// The crawler-user-agents list, as shipped by its npm package.
const LIST_JSON: &str = include_str!("crawler-user-agents.json");

/// Only this many leading bytes of a user agent are considered.
pub const MAX_UA_BYTES: usize = 512;

/// log2 of the number of cache slots (4096 slots × 8 bytes = 32 KiB).
const CACHE_BITS: u32 = 12;
const CACHE_SLOTS: usize = 1 << CACHE_BITS;

/// Compiled-program size limit for the whole alternation. The default
/// (10 MiB) is meant for one hand-written regex; ~1,500 alternatives need
/// headroom as the list grows.
const SIZE_LIMIT: usize = 64 << 20;

/// Patterns of the list that luot does not compile, with the reason. Each
/// one must still exist in the list (a test checks it) so that a refresh that
/// changes them is noticed.
pub const SKIPPED_LIST_PATTERNS: &[(&str, &str)] = &[(
    "WhatsApp",
    "unanchored: would match any in-app browser carrying a WhatsApp token; \
     replaced by the extra `^WhatsApp(/|$)`, which still matches every \
     instance of the list (the previewer's UA starts with it)",
)];

/// luot's own patterns, for what the list misses or might drop in a refresh.
/// Several duplicate list entries on purpose: the cost is nil and they keep
/// luot's guarantees independent of the list's upkeep. Case-sensitive.
pub const EXTRA_PATTERNS: &[&str] = &[
    // Headless and automated browsers.
    "HeadlessChrome",
    "PhantomJS",
    "Lighthouse", // covers Chrome-Lighthouse, PageSpeed's "Lighthouse"
    "Chrome-Lighthouse",
    // Uptime checkers.
    "UptimeRobot",
    "[pP]ingdom",
    "StatusCake",
    "Site24x7",
    "Better Uptime",
    "BetterUptime",
    // Link previewers.
    "facebookexternalhit",
    "Twitterbot",
    "Slackbot",
    "Slack-ImgProxy",
    "Discordbot",
    "TelegramBot",
    // WhatsApp's previewer: the whole UA is `WhatsApp/2.23.20.0 A` (or bare
    // `WhatsApp`); anchored so an in-app browser token never matches.
    "^WhatsApp(/|$)",
    // HTTP libraries and command-line tools.
    "curl/",
    "Wget/",
    "python-requests",
    "python-httpx",
    "Python-urllib",
    "aiohttp/",
    "Go-http-client",
    "okhttp",
    "axios/",
    "node-fetch",
    "undici",
    "Java/",
    "libwww-perl",
    "HTTPie",
];

/// Why the bot patterns could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BotsError {
    /// The embedded list is not valid JSON.
    #[error("crawler-user-agents list is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The embedded list is not a JSON array of objects with a `pattern`.
    #[error("crawler-user-agents list entry {index} has no string `pattern`")]
    Shape {
        /// Index of the offending entry (`usize::MAX`: the top level).
        index: usize,
    },
    /// One pattern does not compile with the `regex` crate.
    #[error("bot pattern {pattern:?} does not compile: {source}")]
    Pattern {
        /// The pattern as written.
        pattern: String,
        /// The regex crate's reason.
        source: regex::Error,
    },
    /// The patterns compile one by one but not together (size limits).
    #[error("bot patterns do not compile together: {0}")]
    Set(#[source] regex::Error),
}

/// Decides whether a user agent is a bot. Build once, share (`Sync`).
pub struct BotDetector {
    /// `(?:p1)|(?:p2)|...`: one alternation of every pattern.
    matcher: Regex,
    /// How many patterns the alternation holds.
    count: usize,
    /// Keyed SipHash: an outsider cannot craft a UA colliding with another.
    hasher: RandomState,
    /// Direct-mapped verdict cache. A slot is 0 (empty) or `tag | verdict`,
    /// where `tag` is the UA's hash with its low bit cleared (never 0) and
    /// `verdict` is that low bit. One atomic word: no tearing, no lock.
    cache: Box<[AtomicU64]>,
}

impl std::fmt::Debug for BotDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotDetector")
            .field("patterns", &self.patterns())
            .finish_non_exhaustive()
    }
}

impl BotDetector {
    /// Compiles the embedded list (minus [`SKIPPED_LIST_PATTERNS`]) plus
    /// luot's [`EXTRA_PATTERNS`], once.
    ///
    /// # Errors
    ///
    /// If the embedded list cannot be parsed or a pattern cannot be compiled
    /// (a test proves the shipped list compiles, so this only happens to a
    /// hand-edited list that skipped the tests).
    pub fn new() -> Result<Self, BotsError> {
        let mut patterns = list_patterns(LIST_JSON)?;
        patterns.retain(|p| !SKIPPED_LIST_PATTERNS.iter().any(|(s, _)| s == p));
        patterns.extend(EXTRA_PATTERNS.iter().map(|p| (*p).to_owned()));
        let matcher = compile_alternation(&patterns)?;
        let cache = (0..CACHE_SLOTS).map(|_| AtomicU64::new(0)).collect();
        Ok(Self {
            matcher,
            count: patterns.len(),
            hasher: RandomState::new(),
            cache,
        })
    }

    /// Whether `user_agent` (the raw header bytes; may be empty or not
    /// UTF-8) is a bot. Empty or whitespace-only is a bot. Only the first
    /// [`MAX_UA_BYTES`] bytes are considered.
    ///
    /// A cache hit hashes the bytes and loads one atomic: no allocation, no
    /// lock. A miss runs the matcher and stores the verdict.
    pub fn is_bot(&self, user_agent: &[u8]) -> bool {
        let ua = bounded(user_agent);
        if ua.trim_ascii().is_empty() {
            return true;
        }
        let hash = self.hasher.hash_one(ua);
        let tag = (hash & !1).max(2);
        let slot = &self.cache[(hash >> (64 - CACHE_BITS)) as usize];
        let entry = slot.load(Ordering::Relaxed);
        if entry & !1 == tag {
            return entry & 1 == 1;
        }
        let verdict = self.matcher.is_match(ua);
        slot.store(tag | u64::from(verdict), Ordering::Relaxed);
        verdict
    }

    /// Number of patterns compiled (for a log line).
    pub fn patterns(&self) -> usize {
        self.count
    }

    /// The matcher's verdict, bypassing this detector's cache (same
    /// bounding rules): for a caller that caches verdicts itself (the
    /// classifier keeps one with each User-Agent's browser, system and
    /// device, so a hit looks its User-Agent up once).
    pub fn matches_uncached(&self, user_agent: &[u8]) -> bool {
        let ua = bounded(user_agent);
        ua.trim_ascii().is_empty() || self.matcher.is_match(ua)
    }
}

/// The first [`MAX_UA_BYTES`] bytes.
fn bounded(user_agent: &[u8]) -> &[u8] {
    &user_agent[..user_agent.len().min(MAX_UA_BYTES)]
}

/// The `pattern` field of every entry of the list, in order.
fn list_patterns(json: &str) -> Result<Vec<String>, BotsError> {
    let value: serde_json::Value = serde_json::from_str(json)?;
    let entries = value
        .as_array()
        .ok_or(BotsError::Shape { index: usize::MAX })?;
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            entry
                .get("pattern")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .ok_or(BotsError::Shape { index })
        })
        .collect()
}

/// One regex matching wherever any of `patterns` matches. Each pattern is
/// wrapped in a non-capturing group, so its flags and alternations stay its
/// own.
fn compile_alternation(patterns: &[String]) -> Result<Regex, BotsError> {
    let alternation = patterns
        .iter()
        .map(|p| format!("(?:{p})"))
        .collect::<Vec<_>>()
        .join("|");
    RegexBuilder::new(&alternation)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(SIZE_LIMIT)
        .build()
        .map_err(|set_err| {
            // Name the culprit if one pattern alone is at fault.
            patterns
                .iter()
                .find_map(|p| {
                    Regex::new(p).err().map(|source| BotsError::Pattern {
                        pattern: p.clone(),
                        source,
                    })
                })
                .unwrap_or(BotsError::Set(set_err))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// One detector for the whole test binary: compiling it is the slow part.
    fn detector() -> &'static BotDetector {
        static D: OnceLock<BotDetector> = OnceLock::new();
        D.get_or_init(|| BotDetector::new().expect("shipped list compiles"))
    }

    /// Every compiled pattern, for diagnostics.
    fn all_patterns() -> Vec<String> {
        let mut patterns = list_patterns(LIST_JSON).unwrap();
        patterns.retain(|p| !SKIPPED_LIST_PATTERNS.iter().any(|(s, _)| s == p));
        patterns.extend(EXTRA_PATTERNS.iter().map(|p| (*p).to_owned()));
        patterns
    }

    /// Which patterns match `ua` (slow; only to explain a failure).
    fn culprits(ua: &[u8]) -> Vec<String> {
        all_patterns()
            .into_iter()
            .filter(|p| Regex::new(p).unwrap().is_match(bounded(ua)))
            .collect()
    }

    fn list() -> Vec<serde_json::Value> {
        serde_json::from_str(LIST_JSON).expect("list is JSON")
    }

    /// Real, current browser and in-app browser user agents: never bots.
    const BROWSERS: &[&str] = &[
        // Chrome 120–131: Windows, macOS, Linux, ChromeOS, Android, iOS.
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.0.0 Safari/537.36",
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
        // Brave sends Chrome's user agent.
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        // Firefox 120–133: desktop, Android, iOS.
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:128.0) Gecko/20100101 Firefox/128.0",
        "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
        "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/132.0 Mobile/15E148 Safari/605.1.15",
        // Safari 17/18: macOS, iOS, iPadOS (mobile and desktop mode).
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1.1 Safari/605.1.15",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1.1 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        // iPadOS desktop mode: a Mac's Safari UA.
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Safari/605.1.15",
        // Edge 120+.
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Mobile Safari/537.36 EdgA/130.0.0.0",
        // Samsung Internet 23–26.
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S928B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-A546B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Safari/537.36",
        // Opera, Vivaldi, Yandex, UC, Cốc Cốc, Xiaomi, Google app.
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 OPR/115.0.0.0",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Mobile Safari/537.36 OPR/85.0.0.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 Vivaldi/7.0.3495.18",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.0.0 YaBrowser/24.10.0.0 Safari/537.36",
        "Mozilla/5.0 (Linux; arm_64; Android 14; SM-A546E) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.6613.186 YaBrowser/24.10.5.186.00 SA/3 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; U; Android 13; en-US; 2201117TG Build/TKQ1.221114.001) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/123.0.6312.80 UCBrowser/13.7.5.1321 Mobile Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) coc_coc_browser/128.0.186 Chrome/122.0.6261.186 Safari/537.36",
        "Mozilla/5.0 (Linux; Android 13; SM-A325F) AppleWebKit/537.36 (KHTML, like Gecko) coc_coc_browser/130.0.246 Chrome/124.0.6367.246 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; U; Android 13; vi-vn; 22111317PG Build/TP1A.220624.014) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/112.0.5615.136 Mobile Safari/537.36 XiaoMi/MiuiBrowser/14.8.1-gn",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) GSA/343.0.695551749 Mobile/15E148 Safari/604.1",
        // Zalo in-app browser (Android WebView, iOS WKWebView).
        "Mozilla/5.0 (Linux; Android 13; SM-A536E Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/128.0.6613.146 Mobile Safari/537.36 Zalo android/12100630 ZaloTheme/light ZaloLanguage/vi",
        "Mozilla/5.0 (Linux; Android 12; 2201117TG Build/SKQ1.211103.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/109.0.5414.117 Mobile Safari/537.36 Zalo android/12100676 ZaloTheme/dark ZaloLanguage/vi",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Zalo iOS/638 ZaloTheme/light ZaloLanguage/vn",
        // Facebook and Messenger in-app.
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/470.0.0.40.97;FBBV/600000000;FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;FBSV/17.5;FBSS/3;FBLC/vi_VN;FBOP/5;FBRV/0]",
        "Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.39 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/489.0.0.66.81;]",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/MessengerForiOS;FBAV/470.0.0.40.97;FBBV/600000000;FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;FBSV/17.5;FBSS/3;FBCR/;FBID/phone;FBLC/vi_VN;FBOP/5]",
        // Instagram in-app.
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 356.0.0.25.109 (iPhone15,3; iOS 18_1; en_US; en; scale=3.00; 1290x2796; 656429547; IABMV/1)",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A.240905.003; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/130.0.6723.102 Mobile Safari/537.36 Instagram 354.0.0.43.97 Android (34/14; 420dpi; 1080x2205; Google/google; Pixel 8; shiba; shiba; en_US; 648963521)",
        // TikTok in-app.
        "Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/128.0.6613.127 Mobile Safari/537.36 trill_370104 JsSdk/1.0 NetType/WIFI Channel/googleplay AppName/trill app_version/37.1.4 ByteLocale/vi ByteFullLocale/vi Region/VN AppId/1180 Spark/1.6.3.5-bugfix AppVersion/37.1.4 BytedanceWebview/d8a21c6",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 musical_ly_37.0.0 JsSdk/2.0 NetType/WIFI Channel/App Store ByteLocale/en Region/US RevealType/Dialog isDarkMode/0 WKWebView/1 BytedanceWebview/d8a21c6 FalconTag/",
        // LINE in-app.
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Safari Line/14.9.0",
        "Mozilla/5.0 (Linux; Android 13; SM-G991B Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36 Line/14.7.1/IAB",
        // WeChat.
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.49(0x18003137) NetType/WIFI Language/zh_CN",
        "Mozilla/5.0 (Linux; Android 13; V2148A Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36 XWEB/1160117 MMWEBSDK/20240301 MMWEBID/1234 MicroMessenger/8.0.48.2580(0x28003035) WeChat/arm64 Weixin NetType/WIFI Language/zh_CN ABI/arm64",
        // Other in-app browsers: Pinterest, Snapchat, Telegram (Android).
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [Pinterest/iOS]",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Snapchat/13.0.0.40 (like Safari/8618.2.12.10.5, panda)",
        "Mozilla/5.0 (Linux; Android 13; SM-A525F Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/130.0.6723.107 Mobile Safari/537.36 Telegram-Android/11.2.2 (Samsung SM-A525F; Android 13; SDK 33; AVERAGE)",
        // Plain Android WebView.
        "Mozilla/5.0 (Linux; Android 14; Pixel 7 Build/AP2A.240805.005; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/127.0.6533.103 Mobile Safari/537.36",
    ];

    /// What luot's extras promise to catch, whatever the list says.
    const LUOT_BOTS: &[&str] = &[
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1",
        "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Lighthouse",
        "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
        "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 PingdomPageSpeed/1.0 (pingbot/2.0; +http://www.pingdom.com/)",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 (StatusCake)",
        "Mozilla/5.0 (compatible; Site24x7)",
        "Better Uptime Bot Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/98.0.4758.102 Safari/537.36",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "facebookexternalhit/1.1 Facebot Twitterbot/1.0",
        "Twitterbot/1.0",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
        "TelegramBot (like TwitterBot)",
        "WhatsApp/2.23.20.0 A",
        "WhatsApp/2.2407.3 i",
        "WhatsApp",
        "curl/8.5.0",
        "Wget/1.21.4",
        "python-requests/2.32.3",
        "python-httpx/0.27.2",
        "Python-urllib/3.12",
        "Python/3.12 aiohttp/3.10.10",
        "Go-http-client/1.1",
        "Go-http-client/2.0",
        "okhttp/4.12.0",
        "axios/1.7.7",
        "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
        "node-fetch",
        "undici",
        "Java/17.0.9",
        "libwww-perl/6.72",
        "HTTPie/3.2.2",
    ];

    #[test]
    fn shipped_list_parses_and_compiles_with_more_than_500_patterns() {
        let list = list_patterns(LIST_JSON).expect("list parses");
        assert!(list.len() > 500, "only {} list patterns", list.len());
        let d = BotDetector::new().expect("list compiles");
        assert_eq!(
            d.patterns(),
            list.len() - SKIPPED_LIST_PATTERNS.len() + EXTRA_PATTERNS.len()
        );
        assert!(d.patterns() > 500);
    }

    #[test]
    fn every_list_pattern_compiles_alone_with_the_regex_crate() {
        // Reports, rather than stops at, every pattern the regex crate
        // rejects (look-arounds, back-references): each must be listed in
        // SKIPPED_LIST_PATTERNS with a reason.
        let rejected: Vec<(String, String)> = list_patterns(LIST_JSON)
            .unwrap()
            .into_iter()
            .filter_map(|p| {
                regex::bytes::Regex::new(&p)
                    .err()
                    .map(|e| (p, e.to_string()))
            })
            .filter(|(p, _)| !SKIPPED_LIST_PATTERNS.iter().any(|(s, _)| s == p))
            .collect();
        assert!(
            rejected.is_empty(),
            "patterns the regex crate rejects: {rejected:#?}"
        );
        for extra in EXTRA_PATTERNS {
            regex::bytes::Regex::new(extra).expect("extra pattern compiles");
        }
    }

    #[test]
    fn every_skipped_pattern_still_exists_in_the_list() {
        let list = list_patterns(LIST_JSON).unwrap();
        for (skipped, _why) in SKIPPED_LIST_PATTERNS {
            assert!(
                list.iter().any(|p| p == skipped),
                "{skipped:?} is no longer in the list: review SKIPPED_LIST_PATTERNS"
            );
        }
    }

    #[test]
    fn every_instance_in_the_list_is_a_bot() {
        // No documented exceptions: the one skipped pattern (`WhatsApp`) is
        // replaced by an extra that still matches all of its instances.
        let d = detector();
        let mut missed = Vec::new();
        let mut total = 0;
        for entry in list() {
            let pattern = entry["pattern"].as_str().unwrap().to_owned();
            for instance in entry
                .get("instances")
                .and_then(|i| i.as_array())
                .into_iter()
                .flatten()
            {
                let ua = instance.as_str().expect("instance is a string");
                total += 1;
                if !d.is_bot(ua.as_bytes()) {
                    missed.push((pattern.clone(), ua.to_owned()));
                }
            }
        }
        assert!(total > 1000, "only {total} instances");
        assert!(
            missed.is_empty(),
            "{} of {total} instances missed: {missed:#?}",
            missed.len()
        );
    }

    #[test]
    fn real_browsers_and_in_app_browsers_are_not_bots() {
        assert!(BROWSERS.len() >= 40);
        let d = detector();
        let named: Vec<String> = BROWSERS
            .iter()
            .filter(|ua| d.is_bot(ua.as_bytes()))
            .map(|ua| format!("{ua}\n  matched by {:?}", culprits(ua.as_bytes())))
            .collect();
        assert!(named.is_empty(), "false positives:\n{}", named.join("\n"));
    }

    #[test]
    fn luot_extras_catch_headless_uptime_previewers_and_http_tools() {
        let d = detector();
        for ua in LUOT_BOTS {
            assert!(d.is_bot(ua.as_bytes()), "not a bot: {ua}");
        }
        // And the extras alone, without the list, catch them too.
        let extras: Vec<String> = EXTRA_PATTERNS.iter().map(|p| (*p).to_owned()).collect();
        let extras_only = compile_alternation(&extras).unwrap();
        for ua in LUOT_BOTS {
            assert!(extras_only.is_match(ua.as_bytes()), "extras miss: {ua}");
        }
    }

    #[test]
    fn whatsapp_previewer_is_a_bot_but_a_whatsapp_token_in_a_browser_is_not() {
        let d = detector();
        assert!(d.is_bot(b"WhatsApp/2.23.20.0 A"));
        assert!(!d.is_bot(
            b"Mozilla/5.0 (Linux; Android 14; Pixel 7 Build/AP2A.240805.005; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/127.0.6533.103 Mobile Safari/537.36 WhatsApp/2.24.1.6"
        ));
    }

    #[test]
    fn empty_and_whitespace_user_agents_are_bots() {
        let d = detector();
        assert!(d.is_bot(b""));
        assert!(d.is_bot(b"   \t"));
        assert!(d.matches_uncached(b""));
    }

    #[test]
    fn non_utf8_and_very_long_user_agents_do_not_panic() {
        let d = detector();
        let _ = d.is_bot(&[0xff, 0xfe, 0x80, b'c', b'u', b'r', b'l', 0xc3]);
        assert!(d.is_bot(b"\xff\xfecurl/8.0"), "curl after invalid bytes");
        let browser = BROWSERS[0].as_bytes();
        let mut long = browser.to_vec();
        long.extend(std::iter::repeat_n(0xe1, 1 << 20));
        assert!(!d.is_bot(&long), "a browser UA followed by 1 MiB of junk");
        // Only the first MAX_UA_BYTES count: a bot token past them is unseen.
        let mut late = vec![b'x'; MAX_UA_BYTES];
        late.extend_from_slice(b" curl/8.0");
        assert!(!d.is_bot(&late));
        assert!(d.is_bot(&late[MAX_UA_BYTES - 100..]));
        // A multi-byte character cut in half by the bound.
        let mut cut = vec![b'a'; MAX_UA_BYTES - 1];
        cut.extend_from_slice("é".as_bytes());
        let _ = d.is_bot(&cut);
    }

    #[test]
    fn a_cache_hit_answers_from_the_slot_without_running_the_matcher() {
        // Design argument for "a hit does not allocate": the hit path is
        // `bounded` (a slice), `trim_ascii` (a slice), `RandomState::hash_one`
        // (SipHash on the stack), one index and one `AtomicU64::load`; none
        // of them allocates. Only the matcher (the regex crate's cache pool)
        // may allocate, and this test proves a hit never reaches it: a
        // forged verdict planted in the slot is returned as is. (The crate
        // forbids unsafe code, so a counting global allocator cannot live
        // here; the scratch crate used one to confirm 0 allocations/hit.)
        let d = BotDetector::new().unwrap();
        let ua = BROWSERS[0].as_bytes();
        assert!(!d.is_bot(ua)); // miss: matcher says "not a bot", stored
        let hash = d.hasher.hash_one(ua);
        let tag = (hash & !1).max(2);
        let slot = &d.cache[(hash >> (64 - CACHE_BITS)) as usize];
        assert_eq!(slot.load(Ordering::Relaxed), tag);
        slot.store(tag | 1, Ordering::Relaxed); // forge "bot"
        assert!(d.is_bot(ua), "the hit came from the slot");
        assert!(!d.matches_uncached(ua));
    }

    proptest! {
        #[test]
        fn cached_verdict_equals_the_matcher_for_random_user_agents(
            uas in proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..700),
                    (0..BROWSERS.len(), proptest::collection::vec(any::<u8>(), 0..20))
                        .prop_map(|(i, tail)| {
                            let mut v = BROWSERS[i].as_bytes().to_vec();
                            v.extend(tail);
                            v
                        }),
                    (0..LUOT_BOTS.len(), "[ -~]{0,40}").prop_map(|(i, head)| {
                        format!("{head}{}", LUOT_BOTS[i]).into_bytes()
                    }),
                ],
                1..40,
            )
        ) {
            let d = detector();
            for _round in 0..2 {
                for ua in &uas {
                    prop_assert_eq!(d.is_bot(ua), d.matches_uncached(ua));
                }
            }
        }
    }

    /// `cargo test --release -- --ignored --nocapture bench_`: RegexSet vs.
    /// one alternation, uncached, and the cached path.
    #[test]
    #[ignore = "benchmark; run in release mode"]
    fn bench_regexset_vs_alternation_and_cache() {
        use std::hint::black_box;
        use std::time::Instant;

        let patterns = all_patterns();
        let t = Instant::now();
        let set = regex::bytes::RegexSetBuilder::new(&patterns)
            .size_limit(SIZE_LIMIT)
            .dfa_size_limit(SIZE_LIMIT)
            .build()
            .unwrap();
        let set_build = t.elapsed();
        let t = Instant::now();
        let alt = compile_alternation(&patterns).unwrap();
        let alt_build = t.elapsed();

        let mut corpus: Vec<Vec<u8>> = BROWSERS.iter().map(|u| u.as_bytes().to_vec()).collect();
        corpus.extend(LUOT_BOTS.iter().map(|u| u.as_bytes().to_vec()));
        let n_browsers = BROWSERS.len();
        for (i, ua) in corpus.iter().enumerate() {
            assert_eq!(set.is_match(ua), alt.is_match(ua), "disagree on {i}");
        }
        let iters = 200;
        let time = |f: &dyn Fn(&[u8]) -> bool, uas: &[Vec<u8>]| {
            for ua in uas {
                black_box(f(ua));
            }
            let t = Instant::now();
            for _ in 0..iters {
                for ua in uas {
                    black_box(f(black_box(ua)));
                }
            }
            t.elapsed().as_nanos() as f64 / (iters * uas.len()) as f64
        };
        let d = BotDetector::new().unwrap();
        let browsers = &corpus[..n_browsers];
        let bots = &corpus[n_browsers..];
        println!("patterns: {}", patterns.len());
        println!("build: RegexSet {set_build:?}, alternation {alt_build:?}");
        // Worst-ish cases: 512 bytes of noise, binary and printable.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let noise: Vec<Vec<u8>> = (0..50)
            .map(|_| (0..512).map(|_| next() as u8).collect())
            .collect();
        let ascii: Vec<Vec<u8>> = (0..50)
            .map(|_| (0..512).map(|_| b' ' + (next() % 95) as u8).collect())
            .collect();
        for (name, uas) in [
            ("browsers", browsers),
            ("bots", bots),
            ("all", &corpus[..]),
            ("noise512", &noise[..]),
            ("ascii512", &ascii[..]),
        ] {
            println!(
                "{name:9} ns/UA: RegexSet {:8.1}  alternation {:8.1}  is_bot cached {:6.1}",
                time(&|u| set.is_match(u), uas),
                time(&|u| alt.is_match(u), uas),
                time(&|u| d.is_bot(u), uas),
            );
        }
    }
}
