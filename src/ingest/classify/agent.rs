//! What a reader reads on: browser family, operating system, device class
//! and in-app browser, from the `User-Agent` and, when the browser sends
//! them, the low-entropy Client Hints (`Sec-CH-UA`, `Sec-CH-UA-Mobile`,
//! `Sec-CH-UA-Platform`), which Chromium sends on every secure request.
//!
//! # How
//!
//! Ordered tables of substrings, first match wins, in the manner of
//! ua-parser's `regexes.yaml` (uap-core): the most specific families first
//! (an in-app browser or Cốc Cốc also says `Chrome/`, Edge says `Chrome/`
//! and `Safari/`, Chrome says `Safari/`), Android WebView by its `; wv)`
//! marker (uap-core's "Chrome Mobile WebView" rule), Safari only with its
//! `Version/` token (an iOS web view without it is not Safari), Facebook by
//! `FBAN`/`FBAV`/`FB_IAB` and Messenger by its `FBAN/Messenger…` or
//! `FB_IAB/Orca-Android` app name (as uap-core and Matomo's device-detector
//! name them). Device classes follow issue 24: an iPad, an Android without
//! `Mobile`, a Kindle or Silk are tablets; an iPhone, an Android with
//! `Mobile` and other `Mobi…` phones are mobile; the rest is desktop
//! (iPadOS asking for desktop pages sends a macOS User-Agent and is
//! desktop). No parser crate: a uap-core port compiles hundreds of regexes
//! at start and runs them on every miss, mostly for families luot folds
//! into "Other", and still needs luot's own rules for the in-app browsers
//! and Cốc Cốc; woothee knows none of them. The tables here are small
//! enough to read in one sitting and to extend with a line.
//!
//! Client Hints win where they speak: a known brand in `Sec-CH-UA` names
//! the browser when the User-Agent says only Chrome, Android WebView or
//! nothing known (an in-app browser, which the hints cannot tell, and a
//! fork that names itself in the User-Agent keep their names; the reduced
//! User-Agent of Chromium still carries those tokens),
//! `Sec-CH-UA-Platform` names the system, and
//! `Sec-CH-UA-Mobile` decides mobile (`?1`) or not (`?0`: a tablet on
//! Android, else a desktop).
//!
//! # Cache
//!
//! Like the bot guard's (`ingest::bots`): a direct-mapped array of atomic
//! words keyed by a per-process keyed hash of the bounded headers. A word
//! is `tag << 32 | verdict`: the hash's high half (never 0) and the packed
//! [`Agent`]. A hit is one hash and one atomic load; a miss parses and
//! stores. No lock, no allocation.
use std::hash::BuildHasher;

/// The cache's keyed hash: foldhash, keyed per process. Every hit hashes
/// its whole User-Agent (often 120–250 bytes) and Client Hints; SipHash
/// spent ~790 instructions a hit on it (callgrind), foldhash a fraction.
/// A forged collision only swaps a cached verdict for the forger's own
/// request, which it could get by sending another User-Agent.
type RandomState = foldhash::fast::RandomState;
use std::sync::atomic::{AtomicU64, Ordering};

use memchr::memmem;

/// Only this many leading bytes of a User-Agent are considered: the bot
/// guard's bound (`ingest::bots::MAX_UA_BYTES`, which a test holds it to),
/// restated so that this module uses no other.
pub const MAX_UA_BYTES: usize = 512;

/// Only this many leading bytes of each Client Hint are considered.
const MAX_HINT_BYTES: usize = 256;

/// log2 of the number of cache slots (4,096 × 8 bytes = 32 KiB).
const CACHE_BITS: u32 = 12;
const CACHE_SLOTS: usize = 1 << CACHE_BITS;

/// A browser family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Browser {
    Chrome,
    Safari,
    Firefox,
    Edge,
    Opera,
    SamsungInternet,
    CocCoc,
    UcBrowser,
    Yandex,
    Zalo,
    Facebook,
    Messenger,
    Instagram,
    TikTok,
    Line,
    AndroidWebView,
    Other,
}

impl Browser {
    /// Every family, in declaration order (the packed form is the index).
    pub const ALL: [Browser; 17] = [
        Browser::Chrome,
        Browser::Safari,
        Browser::Firefox,
        Browser::Edge,
        Browser::Opera,
        Browser::SamsungInternet,
        Browser::CocCoc,
        Browser::UcBrowser,
        Browser::Yandex,
        Browser::Zalo,
        Browser::Facebook,
        Browser::Messenger,
        Browser::Instagram,
        Browser::TikTok,
        Browser::Line,
        Browser::AndroidWebView,
        Browser::Other,
    ];

    /// The stored and displayed name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Browser::Chrome => "Chrome",
            Browser::Safari => "Safari",
            Browser::Firefox => "Firefox",
            Browser::Edge => "Edge",
            Browser::Opera => "Opera",
            Browser::SamsungInternet => "Samsung Internet",
            Browser::CocCoc => "Cốc Cốc",
            Browser::UcBrowser => "UC Browser",
            Browser::Yandex => "Yandex",
            Browser::Zalo => "Zalo",
            Browser::Facebook => "Facebook",
            Browser::Messenger => "Messenger",
            Browser::Instagram => "Instagram",
            Browser::TikTok => "TikTok",
            Browser::Line => "LINE",
            Browser::AndroidWebView => "Android WebView",
            Browser::Other => "Other",
        }
    }
}

/// An operating system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Os {
    Android,
    Ios,
    IpadOs,
    Windows,
    MacOs,
    Linux,
    ChromeOs,
    Other,
}

impl Os {
    /// Every system, in declaration order (the packed form is the index).
    pub const ALL: [Os; 8] = [
        Os::Android,
        Os::Ios,
        Os::IpadOs,
        Os::Windows,
        Os::MacOs,
        Os::Linux,
        Os::ChromeOs,
        Os::Other,
    ];

    /// The stored and displayed name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Os::Android => "Android",
            Os::Ios => "iOS",
            Os::IpadOs => "iPadOS",
            Os::Windows => "Windows",
            Os::MacOs => "macOS",
            Os::Linux => "Linux",
            Os::ChromeOs => "ChromeOS",
            Os::Other => "Other",
        }
    }
}

/// A device class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Mobile,
    Tablet,
    Desktop,
}

impl Device {
    /// Every class, in declaration order (the packed form is the index).
    pub const ALL: [Device; 3] = [Device::Mobile, Device::Tablet, Device::Desktop];

    /// The stored and displayed name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Device::Mobile => "mobile",
            Device::Tablet => "tablet",
            Device::Desktop => "desktop",
        }
    }
}

/// An app whose in-app browser counts as a source when it sends no
/// referrer (rule 5 of the channel rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InApp {
    Zalo,
    Facebook,
    Messenger,
    Instagram,
    TikTok,
    Line,
}

impl InApp {
    /// Every app, in declaration order (the packed form is the index + 1).
    pub const ALL: [InApp; 6] = [
        InApp::Zalo,
        InApp::Facebook,
        InApp::Messenger,
        InApp::Instagram,
        InApp::TikTok,
        InApp::Line,
    ];

    /// The source name (the same as the named-source list's where both
    /// have the app).
    pub const fn as_str(self) -> &'static str {
        self.browser().as_str()
    }

    /// The browser family this app's in-app browser counts as.
    pub const fn browser(self) -> Browser {
        match self {
            InApp::Zalo => Browser::Zalo,
            InApp::Facebook => Browser::Facebook,
            InApp::Messenger => Browser::Messenger,
            InApp::Instagram => Browser::Instagram,
            InApp::TikTok => Browser::TikTok,
            InApp::Line => Browser::Line,
        }
    }
}

/// The low-entropy Client Hints, raw header bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClientHints<'a> {
    /// `Sec-CH-UA`: `"Brand";v="N", …`.
    pub ua: Option<&'a [u8]>,
    /// `Sec-CH-UA-Mobile`: `?1` or `?0`.
    pub mobile: Option<&'a [u8]>,
    /// `Sec-CH-UA-Platform`: `"Android"`, `"Windows"`, ….
    pub platform: Option<&'a [u8]>,
}

impl<'a> ClientHints<'a> {
    /// Each hint cut to [`MAX_HINT_BYTES`].
    pub(crate) fn bounded(self) -> Self {
        let cut = |h: Option<&'a [u8]>| h.map(|h| &h[..h.len().min(MAX_HINT_BYTES)]);
        Self {
            ua: cut(self.ua),
            mobile: cut(self.mobile),
            platform: cut(self.platform),
        }
    }
}

/// What a User-Agent (and its hints) says about the reader's software.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Agent {
    pub browser: Browser,
    pub os: Os,
    pub device: Device,
    /// The app, when this is an in-app browser (Zalo, Facebook, …).
    pub in_app: Option<InApp>,
}

impl Agent {
    /// Four bytes: browser, system, device, app (0: none).
    fn pack(self) -> u32 {
        let index = |found: Option<usize>| found.unwrap_or(0) as u32;
        let app = self
            .in_app
            .and_then(|a| InApp::ALL.iter().position(|x| *x == a))
            .map_or(0, |i| i as u32 + 1);
        index(Browser::ALL.iter().position(|b| *b == self.browser))
            | (index(Os::ALL.iter().position(|o| *o == self.os)) << 8)
            | (index(Device::ALL.iter().position(|d| *d == self.device)) << 16)
            | (app << 24)
    }

    /// The inverse of [`Agent::pack`]; out-of-range bytes read as "Other".
    fn unpack(word: u32) -> Self {
        let byte = |shift: u32| ((word >> shift) & 0xff) as usize;
        Self {
            browser: Browser::ALL.get(byte(0)).copied().unwrap_or(Browser::Other),
            os: Os::ALL.get(byte(8)).copied().unwrap_or(Os::Other),
            device: Device::ALL
                .get(byte(16))
                .copied()
                .unwrap_or(Device::Desktop),
            in_app: byte(24)
                .checked_sub(1)
                .and_then(|i| InApp::ALL.get(i).copied()),
        }
    }
}

/// In-app browsers, by a token of their User-Agent, most specific first:
/// Messenger before Facebook (both say `FBAV/`).
const IN_APP: &[(&str, InApp)] = &[
    ("Instagram", InApp::Instagram),
    ("FBAN/Messenger", InApp::Messenger),
    ("FB_IAB/Orca-Android", InApp::Messenger),
    ("FB_IAB/MESSENGER", InApp::Messenger),
    ("FBAN/", InApp::Facebook),
    ("FBAV/", InApp::Facebook),
    ("FB_IAB/", InApp::Facebook),
    ("Zalo android/", InApp::Zalo),
    ("Zalo iOS/", InApp::Zalo),
    ("ZaloTheme/", InApp::Zalo),
    ("musical_ly", InApp::TikTok),
    ("trill_", InApp::TikTok),
    ("TikTok", InApp::TikTok),
    (" Line/", InApp::Line),
];

/// Browsers that name themselves, most specific first (each of them also
/// says `Chrome/` or `Safari/`).
const BROWSERS: &[(&str, Browser)] = &[
    // Amazon's Silk says `like Chrome/`; it is none of the named families.
    ("Silk/", Browser::Other),
    ("coc_coc_browser", Browser::CocCoc),
    ("SamsungBrowser/", Browser::SamsungInternet),
    ("UCBrowser/", Browser::UcBrowser),
    ("UCWEB", Browser::UcBrowser),
    ("YaBrowser/", Browser::Yandex),
    ("YaSearchBrowser/", Browser::Yandex),
    ("Edg/", Browser::Edge),
    ("EdgA/", Browser::Edge),
    ("EdgiOS/", Browser::Edge),
    ("Edge/", Browser::Edge),
    ("OPR/", Browser::Opera),
    ("OPiOS/", Browser::Opera),
    ("OPT/", Browser::Opera),
    ("Opera", Browser::Opera),
    ("FxiOS/", Browser::Firefox),
    ("Firefox/", Browser::Firefox),
    ("CriOS/", Browser::Chrome),
];

/// Systems, most specific first (an iPad says `like Mac OS X`, Android says
/// `Linux`, Windows Phone 8.1 says `Android`).
const SYSTEMS: &[(&str, Os)] = &[
    ("iPad", Os::IpadOs),
    ("iPhone", Os::Ios),
    ("iPod", Os::Ios),
    ("CrOS", Os::ChromeOs),
    ("Windows Phone", Os::Other),
    ("Android", Os::Android),
    ("Windows", Os::Windows),
    ("Macintosh", Os::MacOs),
    ("Mac OS X", Os::MacOs),
    ("Linux", Os::Linux),
    ("X11", Os::Linux),
];

/// `Sec-CH-UA` brands that name a family (GREASE brands and the bare
/// `Chromium` name none).
const BRANDS: &[(&str, Browser)] = &[
    ("Google Chrome", Browser::Chrome),
    ("Microsoft Edge", Browser::Edge),
    ("Opera", Browser::Opera),
    ("Opera GX", Browser::Opera),
    ("Samsung Internet", Browser::SamsungInternet),
    ("YaBrowser", Browser::Yandex),
    ("Yandex", Browser::Yandex),
    ("CocCoc", Browser::CocCoc),
    ("Coc Coc", Browser::CocCoc),
    ("Android WebView", Browser::AndroidWebView),
];

/// `Sec-CH-UA-Platform` values.
const PLATFORMS: &[(&str, Os)] = &[
    ("Android", Os::Android),
    ("iOS", Os::Ios),
    ("Windows", Os::Windows),
    ("macOS", Os::MacOs),
    ("Linux", Os::Linux),
    ("Chrome OS", Os::ChromeOs),
    ("Chromium OS", Os::ChromeOs),
    ("ChromeOS", Os::ChromeOs),
];

fn has(ua: &[u8], token: &str) -> bool {
    memmem::find(ua, token.as_bytes()).is_some()
}

fn first<T: Copy>(ua: &[u8], table: &[(&str, T)]) -> Option<T> {
    table
        .iter()
        .find(|(token, _)| has(ua, token))
        .map(|(_, found)| *found)
}

/// Parses a (bounded) User-Agent and its (bounded) hints. Pure; the cache
/// calls it on a miss.
pub(crate) fn parse(ua: &[u8], hints: ClientHints<'_>) -> Agent {
    let in_app = first(ua, IN_APP);
    let ua_browser = in_app.map(InApp::browser).or_else(|| first(ua, BROWSERS));
    let ua_browser = ua_browser.unwrap_or_else(|| {
        if has(ua, "; wv)") {
            Browser::AndroidWebView
        } else if has(ua, "Chrome/") || has(ua, "Chromium/") {
            Browser::Chrome
        } else if has(ua, "Version/") && has(ua, "Safari/") && !has(ua, "Android") {
            Browser::Safari
        } else {
            Browser::Other
        }
    });
    // The hints decide only between what the User-Agent cannot tell apart:
    // an in-app browser or a fork that names itself keeps that name.
    let browser = match ua_browser {
        Browser::Chrome | Browser::AndroidWebView | Browser::Other if in_app.is_none() => {
            hints.ua.and_then(brand).unwrap_or(ua_browser)
        }
        _ => ua_browser,
    };
    let ua_os = first(ua, SYSTEMS).unwrap_or(Os::Other);
    let os = hints.platform.and_then(platform).unwrap_or(ua_os);
    let device = match hints.mobile.map(<[u8]>::trim_ascii) {
        Some(b"?1") => Device::Mobile,
        Some(b"?0") if os == Os::Android => Device::Tablet,
        Some(b"?0") => Device::Desktop,
        _ => ua_device(ua, ua_os),
    };
    Agent {
        browser,
        os,
        device,
        in_app,
    }
}

/// The device class a User-Agent alone gives.
fn ua_device(ua: &[u8], os: Os) -> Device {
    if has(ua, "Kindle") || has(ua, "Silk/") {
        return Device::Tablet;
    }
    match os {
        Os::IpadOs => Device::Tablet,
        Os::Ios => Device::Mobile,
        Os::Android if has(ua, "Mobile") => Device::Mobile,
        Os::Android => Device::Tablet,
        _ if has(ua, "Mobi") || has(ua, "Opera Mini") || has(ua, "Windows Phone") => Device::Mobile,
        _ if has(ua, "Tablet") => Device::Tablet,
        _ => Device::Desktop,
    }
}

/// The family a `Sec-CH-UA` list names, if any: each entry's first quoted
/// string is a brand.
fn brand(list: &[u8]) -> Option<Browser> {
    list.split(|b| *b == b',').find_map(|entry| {
        let quoted = entry.split(|b| *b == b'"').nth(1)?;
        BRANDS
            .iter()
            .find(|(name, _)| name.as_bytes() == quoted)
            .map(|(_, browser)| *browser)
    })
}

/// The system a `Sec-CH-UA-Platform` value names, if any (`"Unknown"` and
/// others name none).
fn platform(value: &[u8]) -> Option<Os> {
    let value = value.trim_ascii();
    let value = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value);
    PLATFORMS
        .iter()
        .find(|(name, _)| name.as_bytes().eq_ignore_ascii_case(value))
        .map(|(_, os)| *os)
}

/// The parsed verdicts of recently seen header sets.
/// The bits of a cache slot's low word holding the packed [`Agent`].
const AGENT_BITS: u32 = (1 << 27) - 1;
/// Set in a slot whose bot verdict is known.
const VERDICT_KNOWN: u32 = 1 << 30;
/// Set in a slot whose User-Agent is a bot's.
const BOT: u32 = 1 << 31;

pub(crate) struct AgentCache {
    /// Keyed SipHash: an outsider cannot aim a header set at another's slot.
    hasher: RandomState,
    /// `0` (empty) or `tag << 32 | Agent::pack()`.
    slots: Box<[AtomicU64]>,
}

impl AgentCache {
    pub fn new() -> Self {
        Self {
            hasher: RandomState::default(),
            slots: (0..CACHE_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The verdict for a User-Agent and its hints: from the cache, or
    /// parsed and stored. Only the first [`MAX_UA_BYTES`] bytes of the
    /// User-Agent and [`MAX_HINT_BYTES`] of each hint count.
    pub fn agent(&self, user_agent: &[u8], hints: ClientHints<'_>) -> Agent {
        self.lookup(user_agent, hints, None::<fn(&[u8]) -> bool>).0
    }

    /// [`AgentCache::agent`] and the bot verdict `is_bot` gives for the
    /// User-Agent, both kept in the same slot: one lookup per hit.
    pub fn agent_and_bot(
        &self,
        user_agent: &[u8],
        hints: ClientHints<'_>,
        is_bot: impl FnOnce(&[u8]) -> bool,
    ) -> (Agent, bool) {
        let (agent, bot) = self.lookup(user_agent, hints, Some(is_bot));
        (agent, bot.unwrap_or(false))
    }

    /// The agent, and the bot verdict when `is_bot` is given: from the
    /// slot when it holds them, else worked out and stored. A slot's low
    /// word is the packed agent (bits 0–26), [`VERDICT_KNOWN`] and
    /// [`BOT`].
    fn lookup(
        &self,
        user_agent: &[u8],
        hints: ClientHints<'_>,
        is_bot: Option<impl FnOnce(&[u8]) -> bool>,
    ) -> (Agent, Option<bool>) {
        let ua = &user_agent[..user_agent.len().min(MAX_UA_BYTES)];
        let hints = hints.bounded();
        let hash = self.hasher.hash_one((ua, hints));
        let tag = (hash >> 32) | 1;
        let slot = &self.slots[(hash as usize) & (CACHE_SLOTS - 1)];
        let entry = slot.load(Ordering::Relaxed);
        let found = (entry >> 32 == tag).then_some(entry as u32);
        let agent = found.map_or_else(|| parse(ua, hints), |word| Agent::unpack(word & AGENT_BITS));
        let known = found
            .filter(|word| word & VERDICT_KNOWN != 0)
            .map(|word| word & BOT != 0);
        let verdict = match (known, is_bot) {
            (Some(bot), _) => Some(bot),
            (None, Some(is_bot)) => Some(is_bot(ua)),
            (None, None) => None,
        };
        if found.is_none() || (known.is_none() && verdict.is_some()) {
            let flags = verdict.map_or(0, |bot| VERDICT_KNOWN | if bot { BOT } else { 0 });
            slot.store(
                (tag << 32) | u64::from(agent.pack() | flags),
                Ordering::Relaxed,
            );
        }
        (agent, verdict)
    }

    /// The slot and word a header set would use (tests forge entries).
    #[cfg(test)]
    fn slot_of(&self, user_agent: &[u8], hints: ClientHints<'_>) -> (&AtomicU64, u64) {
        let ua = &user_agent[..user_agent.len().min(MAX_UA_BYTES)];
        let hash = self.hasher.hash_one((ua, hints.bounded()));
        (
            &self.slots[(hash as usize) & (CACHE_SLOTS - 1)],
            (hash >> 32) | 1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_agent_bound_is_the_bot_guards() {
        assert_eq!(MAX_UA_BYTES, crate::ingest::bots::MAX_UA_BYTES);
    }

    #[test]
    fn every_agent_packs_and_unpacks_to_itself() {
        for browser in Browser::ALL {
            for os in Os::ALL {
                for device in Device::ALL {
                    for in_app in std::iter::once(None).chain(InApp::ALL.map(Some)) {
                        let a = Agent {
                            browser,
                            os,
                            device,
                            in_app,
                        };
                        assert_eq!(Agent::unpack(a.pack()), a);
                    }
                }
            }
        }
    }

    #[test]
    fn the_bot_verdict_is_kept_in_the_agents_slot() {
        let cache = AgentCache::new();
        let ua = b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
        let hints = ClientHints::default();
        let mut asked = 0;
        let (_, bot) = cache.agent_and_bot(ua, hints, |_| {
            asked += 1;
            true
        });
        assert!(bot);
        let (_, again) = cache.agent_and_bot(ua, hints, |_| {
            asked += 1;
            false
        });
        assert!(again, "answered from the slot");
        assert_eq!(asked, 1, "the matcher ran once");
        // An entry made without a verdict asks for it once, then keeps it.
        let other = b"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
        let agent = cache.agent(other, hints);
        let (same, bot) = cache.agent_and_bot(other, hints, |_| {
            asked += 1;
            false
        });
        assert_eq!((same, bot, asked), (agent, false, 2));
        let (slot, _) = cache.slot_of(other, hints);
        let word = slot.load(Ordering::Relaxed) as u32;
        assert_eq!(word & (VERDICT_KNOWN | BOT), VERDICT_KNOWN);
        assert_eq!(
            cache.agent(other, hints),
            agent,
            "the flags never leak into the agent"
        );
    }

    #[test]
    fn a_cache_hit_answers_from_the_slot_without_parsing() {
        let cache = AgentCache::new();
        let ua = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
        let hints = ClientHints::default();
        let first = cache.agent(ua, hints);
        assert_eq!(first.browser, Browser::Chrome);
        let (slot, tag) = cache.slot_of(ua, hints);
        assert_eq!(slot.load(Ordering::Relaxed) >> 32, tag);
        let forged = Agent {
            browser: Browser::Firefox,
            os: Os::Linux,
            device: Device::Tablet,
            in_app: Some(InApp::Line),
        };
        slot.store((tag << 32) | u64::from(forged.pack()), Ordering::Relaxed);
        assert_eq!(cache.agent(ua, hints), forged, "the hit came from the slot");
        // Other hints are another key.
        let with_hints = ClientHints {
            mobile: Some(b"?0"),
            ..hints
        };
        assert_eq!(cache.agent(ua, with_hints).browser, Browser::Chrome);
    }

    #[test]
    fn brands_and_platforms_are_read_from_their_quoted_form() {
        assert_eq!(
            brand(br#""Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99""#),
            Some(Browser::Chrome)
        );
        assert_eq!(
            brand(br#""Not/A)Brand";v="8", "Chromium";v="126", "Microsoft Edge";v="126""#),
            Some(Browser::Edge)
        );
        assert_eq!(brand(br#""Chromium";v="126", "Not.A/Brand";v="24""#), None);
        assert_eq!(brand(b"garbage"), None);
        assert_eq!(platform(br#""Android""#), Some(Os::Android));
        assert_eq!(platform(br#" "Chrome OS" "#), Some(Os::ChromeOs));
        assert_eq!(platform(br#""Unknown""#), None);
        assert_eq!(platform(b"\"\""), None);
    }
}
