//! Classification: the dimensions of one hit — where the reader came from
//! (`channel`, `source`), which campaign brought them (`utm_source`,
//! `utm_medium`, `utm_campaign`) and what they read on (`browser`, `os`,
//! `device`).
//!
//! # What this module owns
//!
//! [`Classifier`] (built once, shared), [`Hit`] (the borrowed parts of a
//! request it reads), [`Dimensions`] (its answer), [`Channel`], [`Value`],
//! and beside them: `referrer` (a referrer's host, the named-source table
//! read from `sources.json`), `utm` (the page URL's campaign parameters) and
//! `agent` ([`Browser`], [`Os`], [`Device`] from the User-Agent and Client
//! Hints, cached per distinct header set) and `country` ([`Country`] from a
//! trusted proxy's header or the client address, through [`country()`];
//! not yet part of [`Dimensions`]).
//!
//! # What it must not do
//!
//! It counts nothing, stores nothing and knows no HTTP types: the caller
//! hands over borrowed strings and bytes and decides what to do with the
//! answer. It uses no other luot module (it sits beside the bot guard,
//! whose cache and User-Agent bound it follows). It never runs a regex,
//! and never allocates: see the cost model below.
//!
//! # The rules (issue 24), first match wins
//!
//! 1. `utm_medium` is `email` or `newsletter` → channel `email`; source is
//!    `utm_source` if present, else what rules 2–7 say.
//! 2. The referrer's host is one of the site's hosts, exactly or with `www.`
//!    added or removed → `internal`, `(internal)`.
//! 3. The referrer is on the named-source list → that source and channel.
//! 4. Any other referrer → `referral`, its host lowercased without a leading
//!    `www.`, `m.`, `l.`, `lm.` or `mobile.`; never a path or query.
//! 5. No referrer and an in-app browser (Zalo, Facebook, Messenger,
//!    Instagram, TikTok, LINE) → that app, `social`.
//! 6. No referrer and a `utm_source` → `referral`, the `utm_source`.
//! 7. Otherwise → `direct`, `(direct)`.
//!
//! A referrer that is not a URL with a valid host (`scheme://host…`; hosts
//! of ASCII letters, digits, `-`, `_` and `.`, labels of at most 63 bytes)
//! is treated as no referrer: the snippet sends `document.referrer`, which is
//! always a URL or empty, so anything else is forged and earns no value of
//! its own.
//!
//! # Cost model
//!
//! A classification allocates nothing, whatever the input: named sources,
//! channels, browsers, systems and devices are `&'static str`; an unknown
//! referrer host or a UTM value is borrowed from the request when it is
//! already in its stored form (lowercase, no escapes), and otherwise copied
//! into a [`Value::Inline`] buffer of [`MAX_VALUE_BYTES`] on the stack. The
//! referrer is matched by walking its host's suffixes through hash maps
//! (a few lookups of short keys); the User-Agent is parsed by a table of
//! substring searches only on a cache miss, and a hit of the cache is one
//! keyed hash of the headers and one atomic load.
#![forbid(unsafe_code)]

mod agent;
mod country;
mod referrer;
mod utm;

pub use agent::{Agent, Browser, ClientHints, Device, InApp, Os};
pub use country::{Country, country};
pub use referrer::SOURCES_JSON;

use agent::AgentCache;
use referrer::{Referrer, SourceTable};
use utm::Utm;

/// The longest stored value (an unknown referrer host, a UTM value), in
/// bytes. Longer hosts keep their rightmost labels; longer UTM values are
/// cut at a character boundary.
pub const MAX_VALUE_BYTES: usize = 64;

/// The source of a referrer on the site's own hosts.
pub const INTERNAL: &str = "(internal)";
/// The source of a hit with no referrer, no in-app browser and no campaign.
pub const DIRECT: &str = "(direct)";
/// A UTM dimension's value when the page URL does not carry it.
pub const NONE: &str = "(none)";

/// Why the named-source table could not be built (a test proves the
/// shipped file builds, so only a hand-edited file that skipped the tests
/// can fail).
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// `sources.json` is not valid JSON of the expected shape (or holds an
    /// escape, which a borrowed string cannot carry).
    #[error("sources.json does not parse: {0}")]
    Json(#[from] serde_json::Error),
    /// A host, label, package or source name appears twice.
    #[error("sources.json names {what} {value:?} twice")]
    Duplicate {
        /// `"host"`, `"any_tld label"`, `"app"` or `"source"`.
        what: &'static str,
        /// The repeated text.
        value: String,
    },
    /// A host, label or package is not lowercase ASCII letters, digits,
    /// `-`, `_` and dots, or a source has an empty name or no referrers.
    #[error("sources.json entry {value:?} is invalid: {reason}")]
    Invalid {
        /// The offending text.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// How a reader arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// No referrer, no in-app browser, no campaign.
    Direct,
    /// From another page of the same site.
    Internal,
    /// From a search engine.
    Search,
    /// From a social network or messaging app (its site or in-app browser).
    Social,
    /// From a news aggregator (Google News, Báo Mới).
    News,
    /// From a mail client or a newsletter campaign.
    Email,
    /// From any other site, or a campaign link without a referrer.
    Referral,
}

impl Channel {
    /// Every channel, in declaration order.
    pub const ALL: [Channel; 7] = [
        Channel::Direct,
        Channel::Internal,
        Channel::Search,
        Channel::Social,
        Channel::News,
        Channel::Email,
        Channel::Referral,
    ];

    /// The stored and displayed name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Direct => "direct",
            Channel::Internal => "internal",
            Channel::Search => "search",
            Channel::Social => "social",
            Channel::News => "news",
            Channel::Email => "email",
            Channel::Referral => "referral",
        }
    }
}

/// One dimension's value: a name luot knows, or text from the request,
/// borrowed when it is already in stored form, else copied into a bounded
/// buffer on the stack. Never longer than [`MAX_VALUE_BYTES`] unless
/// `Known`.
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    /// A named source, `(internal)`, `(direct)` or `(none)`.
    Known(&'static str),
    /// Request text already lowercase and unescaped, at most
    /// [`MAX_VALUE_BYTES`].
    Borrowed(&'a str),
    /// Request text that needed lowercasing or unescaping.
    Inline(Inline),
}

impl Value<'_> {
    /// The value as text.
    pub fn as_str(&self) -> &str {
        match self {
            Value::Known(s) => s,
            Value::Borrowed(s) => s,
            Value::Inline(inline) => inline.as_str(),
        }
    }
}

impl PartialEq for Value<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Value<'_> {}

impl PartialEq<&str> for Value<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Up to [`MAX_VALUE_BYTES`] of UTF-8 text on the stack.
#[derive(Clone, Copy)]
pub struct Inline {
    len: u8,
    bytes: [u8; MAX_VALUE_BYTES],
}

impl Inline {
    const fn new() -> Self {
        Self {
            len: 0,
            bytes: [0; MAX_VALUE_BYTES],
        }
    }

    /// A copy of `text`, which the caller keeps within the bound (a longer
    /// one is cut at a character boundary).
    fn copy_of(text: &str) -> Self {
        let mut inline = Self::new();
        for c in text.chars() {
            if !inline.push(c) {
                break;
            }
        }
        inline
    }

    /// Appends `c` if it fits; says whether it did.
    fn push(&mut self, c: char) -> bool {
        let len = usize::from(self.len);
        let width = c.len_utf8();
        if len + width > MAX_VALUE_BYTES {
            return false;
        }
        c.encode_utf8(&mut self.bytes[len..len + width]);
        // At most MAX_VALUE_BYTES (64), so it fits a u8.
        self.len = (len + width) as u8;
        true
    }

    /// Drops trailing whitespace.
    fn trim_end(&mut self) {
        // trim_end keeps a prefix, so the length stays within the bound.
        self.len = self.as_str().trim_end().len() as u8;
    }

    /// The text. Only whole characters are ever pushed, so the bytes are
    /// UTF-8; the checked conversion keeps the module free of `unsafe`.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::fmt::Debug for Inline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// The parts of a request classification reads, borrowed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hit<'a> {
    /// The page URL as the beacon sent it, before normalisation: only its
    /// query's `utm_*` parameters are read.
    pub page: &'a str,
    /// The beacon's `ref` (the page's `document.referrer`), if any.
    pub referrer: Option<&'a str>,
    /// The raw `User-Agent` header (may be empty or not UTF-8).
    pub user_agent: &'a [u8],
    /// The `Sec-CH-UA*` headers, when the browser sent them.
    pub hints: ClientHints<'a>,
}

/// One hit's value in each dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dimensions<'a> {
    /// How the reader arrived.
    pub channel: Channel,
    /// A named source, a bare referrer host, an in-app browser's app, a
    /// `utm_source`, `(internal)` or `(direct)`.
    pub source: Value<'a>,
    /// The page URL's `utm_source`, lowercased, trimmed, bounded; `(none)`.
    pub utm_source: Value<'a>,
    /// The page URL's `utm_medium`, likewise.
    pub utm_medium: Value<'a>,
    /// The page URL's `utm_campaign`, likewise.
    pub utm_campaign: Value<'a>,
    /// The browser family.
    pub browser: Browser,
    /// The operating system.
    pub os: Os,
    /// Mobile, tablet or desktop.
    pub device: Device,
}

/// Classifies hits. Build once at start, share (`Sync`): the named-source
/// table is read-only and the User-Agent cache is a fixed array of atomic
/// words.
pub struct Classifier {
    sources: SourceTable,
    agents: AgentCache,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("sources", &self.sources.count())
            .finish_non_exhaustive()
    }
}

impl Classifier {
    /// Reads the shipped named-source table ([`SOURCES_JSON`]) into hash
    /// maps and sets up an empty User-Agent cache.
    ///
    /// # Errors
    ///
    /// If `sources.json` does not parse, repeats an entry or holds an
    /// invalid one (see [`ClassifyError`]).
    pub fn new() -> Result<Self, ClassifyError> {
        Ok(Self {
            sources: SourceTable::parse(SOURCES_JSON)?,
            agents: AgentCache::new(),
        })
    }

    /// The dimensions of `hit` on a site whose hosts are `site_hosts` (the
    /// site's configured `hosts`, compared without regard to case). Never
    /// allocates, never panics.
    pub fn classify<'a, S: AsRef<str>>(&self, hit: &Hit<'a>, site_hosts: &[S]) -> Dimensions<'a> {
        let agent = self.agents.agent(hit.user_agent, hit.hints);
        self.classify_with(hit, agent, site_hosts)
    }

    /// [`Classifier::classify`] with the hit's agent already looked up
    /// ([`Classifier::agent_and_bot`]).
    pub fn classify_with<'a, S: AsRef<str>>(
        &self,
        hit: &Hit<'a>,
        agent: Agent,
        site_hosts: &[S],
    ) -> Dimensions<'a> {
        let utm = Utm::from_page(hit.page);
        let (mut channel, mut source) = self.origin(hit.referrer, &utm, agent.in_app, site_hosts);
        // Rule 1 overrides the channel of whatever rules 2–7 found, and
        // their source when the campaign names one.
        if utm
            .medium
            .is_some_and(|m| matches!(m.as_str(), "email" | "newsletter"))
        {
            channel = Channel::Email;
            if let Some(named) = utm.source {
                source = named;
            }
        }
        let none = Value::Known(NONE);
        Dimensions {
            channel,
            source,
            utm_source: utm.source.unwrap_or(none),
            utm_medium: utm.medium.unwrap_or(none),
            utm_campaign: utm.campaign.unwrap_or(none),
            browser: agent.browser,
            os: agent.os,
            device: agent.device,
        }
    }

    /// Browser, system, device and in-app browser of a User-Agent and its
    /// Client Hints, through the cache.
    pub fn agent(&self, user_agent: &[u8], hints: ClientHints<'_>) -> Agent {
        self.agents.agent(user_agent, hints)
    }

    /// [`Classifier::agent`] and whether the User-Agent is a bot's, as
    /// `is_bot` (uncached) says: both kept in the one cache slot of the
    /// User-Agent and Client Hints, so a hit looks them up once.
    pub fn agent_and_bot(
        &self,
        user_agent: &[u8],
        hints: ClientHints<'_>,
        is_bot: impl FnOnce(&[u8]) -> bool,
    ) -> (Agent, bool) {
        self.agents.agent_and_bot(user_agent, hints, is_bot)
    }

    /// Rules 2–7: channel and source from the referrer, the in-app browser
    /// and the campaign's source.
    fn origin<'a, S: AsRef<str>>(
        &self,
        referrer: Option<&'a str>,
        utm: &Utm<'a>,
        in_app: Option<InApp>,
        site_hosts: &[S],
    ) -> (Channel, Value<'a>) {
        match referrer.and_then(Referrer::parse) {
            Some(Referrer::App(package)) => match self.sources.by_app(package.as_str()) {
                Some(named) => (named.channel, Value::Known(named.name)),
                None => (Channel::Referral, package.value(false)),
            },
            Some(Referrer::Web(host)) => {
                if referrer::is_internal(host.as_str(), site_hosts) {
                    (Channel::Internal, Value::Known(INTERNAL))
                } else if let Some(named) = self.sources.by_host(host.as_str()) {
                    (named.channel, Value::Known(named.name))
                } else {
                    (Channel::Referral, host.value(true))
                }
            }
            None => match (in_app, utm.source) {
                (Some(app), _) => (Channel::Social, Value::Known(app.as_str())),
                (None, Some(named)) => (Channel::Referral, named),
                (None, None) => (Channel::Direct, Value::Known(DIRECT)),
            },
        }
    }
}

#[cfg(test)]
mod tests;
