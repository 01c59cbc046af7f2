//! Configuration: the types, their defaults, layering (built-in defaults, a
//! file, `LUOT_*` environment variables) and validation with key names in
//! every error.
//!
//! This module must not start anything or touch the network: it turns text
//! into a checked [`Config`], and nothing else. Environment variables are read
//! through the [`Env`] trait so tests can feed them from a map.
//!
//! May use `period` and `page` (the calendar and page types a setting
//! names), nothing else; every other stage may use it.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use crate::period::WeekStart;

/// The defaults as shipped, compiled in so the binary runs anywhere.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
pub const DEFAULT_DATA_DIR: &str = "./data";
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_HEADER_BYTES: usize = 8 * 1024;
pub const DEFAULT_MAX_HEADERS: usize = 64;
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_ONLINE_WINDOW: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_MAX_PAGES: usize = 100_000;
pub const DEFAULT_MAX_PAGE_LENGTH: usize = crate::page::DEFAULT_MAX_PAGE_LEN;
pub const DEFAULT_RATE_PER_SECOND: u32 = 100;
pub const DEFAULT_RATE_BURST: u32 = 1_000;
pub const DEFAULT_SITE_DAYS: Duration = Duration::from_secs(400 * 86_400);
pub const DEFAULT_PAGE_DAYS: Duration = Duration::from_secs(35 * 86_400);
pub const DEFAULT_WEEKS: Duration = Duration::from_secs(730 * 86_400);

/// hyper refuses a read buffer below this; headers larger than the buffer
/// cannot be parsed anyway.
const MIN_HEADER_BYTES: usize = 1024;
/// hyper's own floor for its read buffer.
const HYPER_MIN_BUF: usize = 8192;

/// Why a configuration was refused. Every variant names the key (a dotted
/// path such as `server.flush_interval`, or an environment variable).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: not valid TOML: {message}")]
    Syntax { origin: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Where `LUOT_*` variables come from: the process environment in production,
/// a map in tests.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub counting: Counting,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub sites: Vec<SiteConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub data_dir: PathBuf,
    #[serde(with = "duration_str")]
    pub flush_interval: Duration,
    #[serde(with = "duration_str")]
    pub shutdown_grace: Duration,
    pub trusted_proxies: Vec<IpNet>,
    /// A header that names the reader's country (two letters), set by a
    /// proxy in `trusted_proxies` and believed only from one, besides the
    /// standard `CF-IPCountry` and `CloudFront-Viewer-Country`, over which
    /// it wins. Empty: only those two.
    pub country_header: String,
    /// Secret; masked when the configuration is logged.
    pub metrics_token: String,
    pub log_format: LogFormat,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().expect("constant address"),
            admin_listen: DEFAULT_ADMIN_LISTEN.parse().expect("constant address"),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            trusted_proxies: Vec::new(),
            country_header: String::new(),
            metrics_token: String::new(),
            log_format: LogFormat::Text,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// HTTP limits of the public listener; the defaults suit a public beacon
/// endpoint (DESIGN §6).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Time a client has to send a complete request head (slowloris).
    #[serde(with = "duration_str")]
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: usize,
    /// Time from a complete request head to the end of the answer.
    #[serde(with = "duration_str")]
    pub request_timeout: Duration,
    /// Time an idle keep-alive connection is kept open.
    #[serde(with = "duration_str")]
    pub idle_timeout: Duration,
    /// Time an answer may wait for room in the socket's send buffer (a
    /// client that stops reading) before the connection is reset.
    #[serde(with = "duration_str")]
    pub write_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// How hits are counted, for every site unless a site overrides it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Counting {
    #[serde(with = "duration_str")]
    pub online_window: Duration,
    pub max_pages: usize,
    pub max_page_length: usize,
    pub keep_query: bool,
    /// Honour `DNT: 1` / `Sec-GPC: 1`: the hit counts, no visitor identity
    /// is derived or kept.
    pub respect_dnt: bool,
    /// Count hits from crawlers, headless browsers, uptime checkers and link
    /// previewers (off: they are answered but not counted).
    pub count_bots: bool,
    /// Sustained hits per second allowed from one client address (IPv4, or
    /// an IPv6 /64).
    pub rate_limit_per_second: u32,
    /// Hits one client may send at once before the sustained rate applies.
    pub rate_limit_burst: u32,
    /// Sustained reads per second (figures, series, top lists, badge,
    /// widget, dashboard, busuanzi) allowed from one client address: a
    /// bucket of its own, so readers and beacons never take from each
    /// other's, and a flood of reads of random pages costs the store at
    /// most this much per address.
    pub read_rate_limit_per_second: u32,
    /// Reads one client may make at once before the sustained rate applies.
    pub read_rate_limit_burst: u32,
    /// The same visitor on the same page within this window counts once.
    /// `"0s"` (the default) counts every page load, as classic counters do.
    #[serde(with = "duration_str")]
    pub dedupe_window: Duration,
    /// Distinct values one breakdown dimension keeps per site and local
    /// day; beyond it a hit counts as `(other)`.
    pub max_values: u32,
    /// Distinct values a page's `channel` or `source` keeps per local day.
    pub max_page_values: u32,
}

impl Default for Counting {
    fn default() -> Self {
        Counting {
            online_window: DEFAULT_ONLINE_WINDOW,
            max_pages: DEFAULT_MAX_PAGES,
            max_page_length: DEFAULT_MAX_PAGE_LENGTH,
            keep_query: false,
            respect_dnt: true,
            count_bots: false,
            rate_limit_per_second: DEFAULT_RATE_PER_SECOND,
            rate_limit_burst: DEFAULT_RATE_BURST,
            read_rate_limit_per_second: DEFAULT_RATE_PER_SECOND,
            read_rate_limit_burst: DEFAULT_RATE_BURST,
            dedupe_window: Duration::ZERO,
            max_values: DEFAULT_MAX_VALUES,
            max_page_values: DEFAULT_MAX_PAGE_VALUES,
        }
    }
}

/// The default of `counting.max_values`.
pub const DEFAULT_MAX_VALUES: u32 = 1_000;
/// The default of `counting.max_page_values`.
pub const DEFAULT_MAX_PAGE_VALUES: u32 = 50;
/// The most `max_values` or `max_page_values` may be: each value is a
/// counter in memory and in the store.
const MAX_VALUES_CAP: u32 = 100_000;

/// The counting rules in force for one site: the global `[counting]`
/// values, overridden by the site's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteRules {
    pub respect_dnt: bool,
    pub count_bots: bool,
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    pub read_rate_limit_per_second: u32,
    pub read_rate_limit_burst: u32,
    pub dedupe_window: Duration,
    pub max_pages: usize,
    pub max_values: u32,
    pub max_page_values: u32,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Empty: the embedded store. Secret (may carry a password); masked in logs.
    pub redis_url: String,
}

/// How long figures of each period are kept (DESIGN §4). Months and totals
/// are kept forever.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    #[serde(with = "duration_str")]
    pub site_days: Duration,
    #[serde(with = "duration_str")]
    pub page_days: Duration,
    #[serde(with = "duration_str")]
    pub weeks: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            site_days: DEFAULT_SITE_DAYS,
            page_days: DEFAULT_PAGE_DAYS,
            weeks: DEFAULT_WEEKS,
        }
    }
}

/// Widget and dashboard label language.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    Vi,
    En,
}

/// One declared site. Hits for any other id are refused.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Slug: 1–64 of `a-z 0-9 _ -`. It appears in store keys and URLs.
    pub id: String,
    /// IANA time zone name; days, weeks and months are local to it.
    pub timezone: String,
    /// Origins allowed to send beacons and read figures from a browser:
    /// `"*"` or `scheme://host[:port]`.
    pub origins: Vec<String>,
    /// Hostnames that belong to the site, for clients that identify a site by
    /// its page URL (busuanzi).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Added to the total, to carry over an old counter's value.
    pub initial_total: u64,
    #[serde(default)]
    pub language: Language,
    #[serde(default)]
    pub week_start: WeekStart,
    /// Overrides `counting.max_pages` for this site.
    #[serde(default)]
    pub max_pages: Option<usize>,
    /// Overrides `counting.respect_dnt`.
    #[serde(default)]
    pub respect_dnt: Option<bool>,
    /// Overrides `counting.count_bots`.
    #[serde(default)]
    pub count_bots: Option<bool>,
    /// Overrides `counting.rate_limit_per_second`.
    #[serde(default)]
    pub rate_limit_per_second: Option<u32>,
    /// Overrides `counting.rate_limit_burst`.
    #[serde(default)]
    pub rate_limit_burst: Option<u32>,
    /// Overrides `counting.read_rate_limit_per_second`.
    #[serde(default)]
    pub read_rate_limit_per_second: Option<u32>,
    /// Overrides `counting.read_rate_limit_burst`.
    #[serde(default)]
    pub read_rate_limit_burst: Option<u32>,
    /// Overrides `counting.dedupe_window`.
    #[serde(default, with = "opt_duration_str")]
    pub dedupe_window: Option<Duration>,
    /// Overrides `counting.max_values`.
    #[serde(default)]
    pub max_values: Option<u32>,
    /// Overrides `counting.max_page_values`.
    #[serde(default)]
    pub max_page_values: Option<u32>,
    /// Bearer token for the owner's routes when the site is not public.
    /// Secret; masked in logs.
    #[serde(default)]
    pub read_token: Option<String>,
    #[serde(default = "default_true")]
    pub public: bool,
    /// Client addresses or CIDRs whose hits are answered as usual but not
    /// counted (the newsroom's office, its monitoring): at most
    /// [`MAX_IGNORE_ADDRESSES`], matched against the client address behind
    /// `trusted_proxies`. Written as `"10.0.0.1"` or `"10.0.0.0/8"`.
    #[serde(default, with = "net_list")]
    pub ignore_addresses: Vec<IpNet>,
}

fn default_true() -> bool {
    true
}

impl Config {
    /// Builds the configuration: built-in defaults, then the file (if any),
    /// then `LUOT_*` variables from `env`; then validates it.
    ///
    /// The file is taken from `file`, else from `LUOT_CONFIG`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key (or variable) that is wrong.
    pub fn load(file: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigError> {
        let mut table = parse_table(DEFAULT_TOML, "built-in defaults")?;
        let from_env = env.var("LUOT_CONFIG").map(PathBuf::from);
        if let Some(path) = file.map(Path::to_path_buf).or(from_env) {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let overlay = parse_table(&text, &path.display().to_string())?;
            merge(&mut table, overlay);
        }
        apply_env(&mut table, env)?;
        Config::from_table(table)
    }

    /// Parses one TOML text on top of the built-in defaults (no environment).
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let mut table = parse_table(DEFAULT_TOML, "built-in defaults")?;
        merge(&mut table, parse_table(text, "config")?);
        Config::from_table(table)
    }

    fn from_table(table: toml::Table) -> Result<Config, ConfigError> {
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                ConfigError::invalid(if path == "." { "config".into() } else { path }, message)
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot, one section after the other.
    ///
    /// # Errors
    /// A [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
        self.validate_limits()?;
        self.validate_counting()?;
        self.validate_retention()?;
        self.validate_sites()
    }

    /// `[server]`: a flush interval the flusher can keep, a grace period,
    /// two distinct listeners, a country header that is a header name.
    fn validate_server(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.flush_interval < Duration::from_millis(10)
            || s.flush_interval > Duration::from_secs(60)
        {
            return Err(ConfigError::invalid(
                "server.flush_interval",
                "must be between 10ms and 60s",
            ));
        }
        if s.shutdown_grace.is_zero() {
            return Err(ConfigError::invalid(
                "server.shutdown_grace",
                "must be more than zero",
            ));
        }
        if s.listen == s.admin_listen && s.listen.port() != 0 {
            return Err(ConfigError::invalid(
                "server.admin_listen",
                "must differ from server.listen",
            ));
        }
        if !s.country_header.is_empty() && !is_header_name(&s.country_header) {
            return Err(ConfigError::invalid(
                "server.country_header",
                format!("`{}` is not an HTTP header name", s.country_header),
            ));
        }
        Ok(())
    }

    /// `[limits]`: a header limit hyper can buffer, and no limit or
    /// deadline at zero (which would refuse everything).
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.max_header_bytes < MIN_HEADER_BYTES {
            return Err(ConfigError::invalid(
                "limits.max_header_bytes",
                format!("must be at least {MIN_HEADER_BYTES}"),
            ));
        }
        for (key, v) in [
            ("limits.max_headers", l.max_headers),
            ("limits.max_body_bytes", l.max_body_bytes),
            ("limits.max_connections", l.max_connections),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(key, "must be more than zero"));
            }
        }
        for (key, v) in [
            ("limits.header_read_timeout", l.header_read_timeout),
            ("limits.request_timeout", l.request_timeout),
            ("limits.idle_timeout", l.idle_timeout),
            ("limits.write_timeout", l.write_timeout),
        ] {
            if v.is_zero() {
                return Err(ConfigError::invalid(key, "must be more than zero"));
            }
        }
        Ok(())
    }

    /// `[counting]`: the online window, page length, rate limits, dedupe
    /// window and page cap within the bounds the counting code assumes.
    fn validate_counting(&self) -> Result<(), ConfigError> {
        let c = &self.counting;
        if c.online_window < Duration::from_secs(60) || c.online_window > Duration::from_secs(3600)
        {
            return Err(ConfigError::invalid(
                "counting.online_window",
                "must be between 1m and 1h",
            ));
        }
        if c.max_page_length < 16 || c.max_page_length > 4096 {
            return Err(ConfigError::invalid(
                "counting.max_page_length",
                "must be between 16 and 4096",
            ));
        }
        for (name, v) in [
            ("counting.rate_limit_per_second", c.rate_limit_per_second),
            ("counting.rate_limit_burst", c.rate_limit_burst),
            (
                "counting.read_rate_limit_per_second",
                c.read_rate_limit_per_second,
            ),
            ("counting.read_rate_limit_burst", c.read_rate_limit_burst),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(name, "must be more than zero"));
            }
        }
        if c.dedupe_window > MAX_DEDUPE_WINDOW {
            return Err(ConfigError::invalid(
                "counting.dedupe_window",
                "must be at most 24h",
            ));
        }
        if c.max_pages == 0 {
            return Err(ConfigError::invalid(
                "counting.max_pages",
                "must be more than zero",
            ));
        }
        for (name, v) in [
            ("counting.max_values", c.max_values),
            ("counting.max_page_values", c.max_page_values),
        ] {
            check_value_bound(name, Some(v))?;
        }
        Ok(())
    }

    /// `[retention]`: no period kept for less than readers rely on (two
    /// days of days, so that yesterday stays; two weeks of weeks).
    fn validate_retention(&self) -> Result<(), ConfigError> {
        let r = &self.retention;
        for (key, v, min_days) in [
            ("retention.site_days", r.site_days, 2),
            ("retention.page_days", r.page_days, 2),
            ("retention.weeks", r.weeks, 14),
        ] {
            if v < Duration::from_secs(min_days * 86_400) {
                return Err(ConfigError::invalid(
                    key,
                    format!("must be at least {min_days} days"),
                ));
            }
        }
        Ok(())
    }

    /// `[[sites]]`: at least one, each valid, no id twice.
    fn validate_sites(&self) -> Result<(), ConfigError> {
        if self.sites.is_empty() {
            return Err(ConfigError::invalid("sites", "declare at least one site"));
        }
        let mut seen = HashSet::new();
        for (i, site) in self.sites.iter().enumerate() {
            site.validate(&format!("sites[{i}]"))?;
            if !seen.insert(site.id.as_str()) {
                return Err(ConfigError::invalid(
                    format!("sites[{i}].id"),
                    format!("site `{}` is declared twice", site.id),
                ));
            }
        }
        Ok(())
    }

    /// The configuration as pretty JSON with secrets masked, for the log.
    pub fn masked_json(&self) -> String {
        let mut masked = self.clone();
        if !masked.server.metrics_token.is_empty() {
            masked.server.metrics_token = "***".into();
        }
        if !masked.store.redis_url.is_empty() {
            masked.store.redis_url = mask_url_password(&masked.store.redis_url);
        }
        for site in &mut masked.sites {
            if site.read_token.is_some() {
                site.read_token = Some("***".into());
            }
        }
        serde_json::to_string(&masked).unwrap_or_else(|_| "{}".into())
    }
}

impl SiteConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !is_slug(&self.id) {
            return Err(ConfigError::invalid(
                format!("{key}.id"),
                "must be 1-64 characters of a-z, 0-9, _ and -",
            ));
        }
        if jiff::tz::TimeZone::get(&self.timezone).is_err() {
            return Err(ConfigError::invalid(
                format!("{key}.timezone"),
                format!("`{}` is not an IANA time zone name", self.timezone),
            ));
        }
        for (j, origin) in self.origins.iter().enumerate() {
            if origin != "*" && !is_origin(origin) {
                return Err(ConfigError::invalid(
                    format!("{key}.origins[{j}]"),
                    format!("`{origin}` is not \"*\" nor scheme://host[:port]"),
                ));
            }
        }
        for (j, host) in self.hosts.iter().enumerate() {
            if host.is_empty() || host.contains(['/', ' ', ':']) && !host.starts_with('[') {
                return Err(ConfigError::invalid(
                    format!("{key}.hosts[{j}]"),
                    format!("`{host}` is not a hostname"),
                ));
            }
        }
        if self.initial_total > MAX_INITIAL_TOTAL {
            return Err(ConfigError::invalid(
                format!("{key}.initial_total"),
                format!("must be at most {MAX_INITIAL_TOTAL}"),
            ));
        }
        if self.max_pages == Some(0) {
            return Err(ConfigError::invalid(
                format!("{key}.max_pages"),
                "must be more than zero",
            ));
        }
        for (name, v) in [
            ("rate_limit_per_second", self.rate_limit_per_second),
            ("rate_limit_burst", self.rate_limit_burst),
            (
                "read_rate_limit_per_second",
                self.read_rate_limit_per_second,
            ),
            ("read_rate_limit_burst", self.read_rate_limit_burst),
        ] {
            if v == Some(0) {
                return Err(ConfigError::invalid(
                    format!("{key}.{name}"),
                    "must be more than zero",
                ));
            }
        }
        check_value_bound(&format!("{key}.max_values"), self.max_values)?;
        check_value_bound(&format!("{key}.max_page_values"), self.max_page_values)?;
        if self.dedupe_window.is_some_and(|w| w > MAX_DEDUPE_WINDOW) {
            return Err(ConfigError::invalid(
                format!("{key}.dedupe_window"),
                "must be at most 24h",
            ));
        }
        if self.ignore_addresses.len() > MAX_IGNORE_ADDRESSES {
            return Err(ConfigError::invalid(
                format!("{key}.ignore_addresses"),
                format!("at most {MAX_IGNORE_ADDRESSES} addresses or CIDRs"),
            ));
        }
        if matches!(&self.read_token, Some(t) if t.len() < 16) {
            return Err(ConfigError::invalid(
                format!("{key}.read_token"),
                "must be at least 16 characters",
            ));
        }
        Ok(())
    }

    /// The counting rules for this site.
    pub fn rules(&self, global: &Counting) -> SiteRules {
        SiteRules {
            respect_dnt: self.respect_dnt.unwrap_or(global.respect_dnt),
            count_bots: self.count_bots.unwrap_or(global.count_bots),
            rate_limit_per_second: self
                .rate_limit_per_second
                .unwrap_or(global.rate_limit_per_second),
            rate_limit_burst: self.rate_limit_burst.unwrap_or(global.rate_limit_burst),
            read_rate_limit_per_second: self
                .read_rate_limit_per_second
                .unwrap_or(global.read_rate_limit_per_second),
            read_rate_limit_burst: self
                .read_rate_limit_burst
                .unwrap_or(global.read_rate_limit_burst),
            dedupe_window: self.dedupe_window.unwrap_or(global.dedupe_window),
            max_pages: self.max_pages.unwrap_or(global.max_pages),
            max_values: self.max_values.unwrap_or(global.max_values),
            max_page_values: self.max_page_values.unwrap_or(global.max_page_values),
        }
    }

    /// Whether hits from client address `ip` are left out (answered, not
    /// counted). An empty list, the common case, costs one length check.
    pub fn ignores(&self, ip: std::net::IpAddr) -> bool {
        !self.ignore_addresses.is_empty() && self.ignore_addresses.iter().any(|n| n.contains(&ip))
    }

    /// Whether a browser at `origin` may send beacons and read answers.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }
}

/// A breakdown bound must be 1 to [`MAX_VALUES_CAP`].
fn check_value_bound(name: &str, value: Option<u32>) -> Result<(), ConfigError> {
    match value {
        Some(v) if v == 0 || v > MAX_VALUES_CAP => Err(ConfigError::invalid(
            name,
            format!("must be 1 to {MAX_VALUES_CAP}"),
        )),
        _ => Ok(()),
    }
}

/// `ignore_addresses` is scanned on every hit of its site: a short list.
pub const MAX_IGNORE_ADDRESSES: usize = 256;

/// A dedupe window beyond a day is a different feature (unique visitors).
const MAX_DEDUPE_WINDOW: Duration = Duration::from_secs(86_400);

/// Keeps figures far below the range where a JSON reader loses precision.
const MAX_INITIAL_TOTAL: u64 = 1 << 50;

/// A site id: 1–64 of `a-z 0-9 _ -`.
pub fn is_slug(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn is_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric())
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' '])
}

fn mask_url_password(url: &str) -> String {
    // redis://user:password@host:port/db → redis://user:***@host:port/db
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

fn parse_table(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            origin: origin.to_string(),
            message: e.to_string(),
        })
}

/// Merges `overlay` into `base`: tables key by key, anything else (arrays
/// included, so a file's `[[sites]]` replace the demo site) replaced whole.
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// The environment overrides of DESIGN §8. Each is checked here so that a
/// bad value names the variable, not a key the user never wrote.
fn apply_env(table: &mut toml::Table, env: &dyn Env) -> Result<(), ConfigError> {
    fn section<'t>(table: &'t mut toml::Table, name: &str) -> &'t mut toml::Table {
        let entry = table
            .entry(name.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        entry.as_table_mut().expect("made a table above")
    }
    let string = |v: String| toml::Value::String(v);
    if let Some(v) = env.var("LUOT_LISTEN") {
        v.parse::<SocketAddr>()
            .map_err(|e| ConfigError::invalid("LUOT_LISTEN", e.to_string()))?;
        section(table, "server").insert("listen".into(), string(v));
    }
    if let Some(v) = env.var("LUOT_ADMIN_LISTEN") {
        v.parse::<SocketAddr>()
            .map_err(|e| ConfigError::invalid("LUOT_ADMIN_LISTEN", e.to_string()))?;
        section(table, "server").insert("admin_listen".into(), string(v));
    }
    if let Some(v) = env.var("LUOT_DATA_DIR") {
        section(table, "server").insert("data_dir".into(), string(v));
    }
    if let Some(v) = env.var("LUOT_FLUSH_INTERVAL") {
        humantime::parse_duration(&v)
            .map_err(|e| ConfigError::invalid("LUOT_FLUSH_INTERVAL", e.to_string()))?;
        section(table, "server").insert("flush_interval".into(), string(v));
    }
    if let Some(v) = env.var("LUOT_TRUSTED_PROXIES") {
        let mut list = Vec::new();
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = parse_net(item).ok_or_else(|| {
                ConfigError::invalid(
                    "LUOT_TRUSTED_PROXIES",
                    format!("`{item}` is not an address or CIDR"),
                )
            })?;
            list.push(string(net.to_string()));
        }
        section(table, "server").insert("trusted_proxies".into(), toml::Value::Array(list));
    }
    if let Some(v) = env.var("LUOT_REDIS_URL") {
        section(table, "store").insert("redis_url".into(), string(v));
    }
    Ok(())
}

/// Whether `name` is an HTTP field name: a token of RFC 9110 (§5.1,
/// §5.6.2), which is what hyper accepts.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// An address (`10.0.0.1`, `::1`) or a CIDR (`10.0.0.0/8`).
pub fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// A duration in the largest whole unit: `"400d"`, `"5m"`, `"200ms"`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// An optional duration as a human string.
mod opt_duration_str {
    use super::*;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration_str::deserialize(d).map(Some)
    }
}

/// Lists of addresses or CIDRs (`"10.0.0.1"`, `"10.0.0.0/8"`), each
/// parsed by [`parse_net`]; an error names the item (`…ignore_addresses[1]`).
mod net_list {
    use super::*;

    pub fn serialize<S: serde::Serializer>(nets: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(nets.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
        /// One item, read through the (path-tracking) sequence.
        struct Net(IpNet);
        impl<'de> Deserialize<'de> for Net {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Net, D::Error> {
                let text = String::deserialize(d)?;
                parse_net(&text).map(Net).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "`{text}` is not an address (\"10.0.0.1\") or a CIDR (\"10.0.0.0/8\")"
                    ))
                })
            }
        }
        Ok(Vec::<Net>::deserialize(d)?
            .into_iter()
            .map(|n| n.0)
            .collect())
    }
}

/// Durations as human strings (`"200ms"`, `"1s"`, `"5m"`, `"400d"`).
mod duration_str {
    use super::*;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration like \"200ms\", \"1s\", \"5m\": {e}"
            ))
        })
    }
}

/// hyper needs its read buffer at least this large; the header limit is
/// enforced separately with `max_header_size`.
pub fn hyper_buf_size(limits: &Limits) -> usize {
    (2 * limits.max_header_bytes + limits.max_body_bytes).max(HYPER_MIN_BUF)
}

/// How many header slots hyper keeps on the stack while it parses a
/// request head; a larger `max_headers` makes it allocate two arrays of
/// that many slots on the heap for every request (hyper 1.x,
/// `proto::h1::role`).
pub const HYPER_INLINE_HEADERS: usize = 100;

/// hyper's own header-count limit, a backstop above the configured one so
/// that the handler, not hyper, refuses a head one field too long, with
/// the JSON body every error has. Below [`HYPER_INLINE_HEADERS`] the
/// backstop is hyper's inline capacity, which costs no allocation; past it,
/// twice the limit.
pub fn hyper_max_headers(limits: &Limits) -> usize {
    if limits.max_headers < HYPER_INLINE_HEADERS {
        HYPER_INLINE_HEADERS
    } else {
        limits.max_headers.saturating_mul(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn invalid_key(err: ConfigError) -> String {
        match err {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("expected an Invalid error, got {other}"),
        }
    }

    #[test]
    fn default_file_matches_the_named_constants() {
        let c = Config::load(None, &env(&[])).expect("defaults load");
        assert_eq!(c.server.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(c.server.admin_listen, DEFAULT_ADMIN_LISTEN.parse().unwrap());
        assert_eq!(c.server.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.server.flush_interval, DEFAULT_FLUSH_INTERVAL);
        assert_eq!(c.server.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(c.server.country_header, "");
        let l = Limits::default();
        assert_eq!(c.limits.header_read_timeout, l.header_read_timeout);
        assert_eq!(c.limits.max_header_bytes, l.max_header_bytes);
        assert_eq!(c.limits.max_headers, l.max_headers);
        assert_eq!(c.limits.max_body_bytes, l.max_body_bytes);
        assert_eq!(c.limits.request_timeout, l.request_timeout);
        assert_eq!(c.limits.idle_timeout, l.idle_timeout);
        assert_eq!(c.limits.write_timeout, l.write_timeout);
        assert_eq!(c.limits.max_connections, l.max_connections);
        assert_eq!(c.counting.online_window, DEFAULT_ONLINE_WINDOW);
        assert_eq!(c.counting.max_pages, DEFAULT_MAX_PAGES);
        assert_eq!(c.counting.max_page_length, DEFAULT_MAX_PAGE_LENGTH);
        let d = Counting::default();
        assert_eq!(c.counting.respect_dnt, d.respect_dnt);
        assert_eq!(c.counting.count_bots, d.count_bots);
        assert_eq!(c.counting.rate_limit_per_second, DEFAULT_RATE_PER_SECOND);
        assert_eq!(c.counting.rate_limit_burst, DEFAULT_RATE_BURST);
        assert_eq!(c.counting.dedupe_window, d.dedupe_window);
        assert_eq!(c.retention.site_days, DEFAULT_SITE_DAYS);
        assert_eq!(c.retention.page_days, DEFAULT_PAGE_DAYS);
        assert_eq!(c.retention.weeks, DEFAULT_WEEKS);
    }

    #[test]
    fn default_file_declares_the_demo_site() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.sites.len(), 1);
        let demo = &c.sites[0];
        assert_eq!(demo.id, "demo");
        assert_eq!(demo.timezone, "Asia/Ho_Chi_Minh");
        assert_eq!(demo.origins, vec!["*"]);
        assert_eq!(demo.hosts, vec!["localhost", "127.0.0.1"]);
        assert_eq!(demo.initial_total, 0);
        assert!(demo.allows_origin("https://anything.example"));
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = Config::from_toml_str("[server]\nflush_intervall = \"1s\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("flush_intervall"), "{text}");
        assert!(text.starts_with("server"), "{text}");
    }

    #[test]
    fn unknown_top_level_table_is_an_error() {
        let err = Config::from_toml_str("[sever]\nlisten = \"0.0.0.0:1\"\n").unwrap_err();
        assert!(err.to_string().contains("sever"), "{err}");
    }

    #[test]
    fn bad_duration_names_the_key() {
        let err = Config::from_toml_str("[server]\nflush_interval = \"soon\"\n").unwrap_err();
        assert_eq!(invalid_key(err), "server.flush_interval");
    }

    #[test]
    fn durations_print_in_their_largest_whole_unit() {
        assert_eq!(format_duration(Duration::from_secs(400 * 86_400)), "400d");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn durations_are_human_strings() {
        let c = Config::from_toml_str(
            "[server]\nflush_interval = \"200ms\"\n[counting]\nonline_window = \"10m\"\n",
        )
        .unwrap();
        assert_eq!(c.server.flush_interval, Duration::from_millis(200));
        assert_eq!(c.counting.online_window, Duration::from_secs(600));
    }

    #[test]
    fn bad_timezone_names_the_site_key() {
        let text = "[[sites]]\nid = \"x\"\ntimezone = \"Mars/Olympus\"\norigins = [\"*\"]\ninitial_total = 0\n";
        assert_eq!(
            invalid_key(Config::from_toml_str(text).unwrap_err()),
            "sites[0].timezone"
        );
    }

    #[test]
    fn file_sites_replace_the_demo_site() {
        let text = "[[sites]]\nid = \"news\"\ntimezone = \"Europe/Berlin\"\norigins = [\"https://news.example\"]\ninitial_total = 9356665\n";
        let c = Config::from_toml_str(text).unwrap();
        assert_eq!(c.sites.len(), 1);
        assert_eq!(c.sites[0].id, "news");
        assert_eq!(c.sites[0].initial_total, 9_356_665);
        assert!(c.sites[0].allows_origin("https://news.example"));
        assert!(!c.sites[0].allows_origin("https://evil.example"));
    }

    #[test]
    fn bad_site_id_and_duplicates_are_refused() {
        let bad =
            "[[sites]]\nid = \"Bad Id\"\ntimezone = \"UTC\"\norigins = []\ninitial_total = 0\n";
        assert_eq!(
            invalid_key(Config::from_toml_str(bad).unwrap_err()),
            "sites[0].id"
        );
        let twice = "[[sites]]\nid = \"a\"\ntimezone = \"UTC\"\norigins = []\ninitial_total = 0\n[[sites]]\nid = \"a\"\ntimezone = \"UTC\"\norigins = []\ninitial_total = 0\n";
        assert_eq!(
            invalid_key(Config::from_toml_str(twice).unwrap_err()),
            "sites[1].id"
        );
    }

    #[test]
    fn ignore_addresses_take_addresses_and_cidrs_and_name_a_bad_item() {
        let site = |list: &str| {
            format!(
                "[[sites]]\nid = \"a\"\ntimezone = \"UTC\"\norigins = []\ninitial_total = 0\nignore_addresses = {list}\n"
            )
        };
        let c = Config::from_toml_str(&site(r#"["203.0.113.7", "10.0.0.0/8", "2001:db8::/32"]"#))
            .unwrap();
        let s = &c.sites[0];
        for (ip, ignored) in [
            ("203.0.113.7", true),
            ("203.0.113.8", false),
            ("10.200.1.2", true),
            ("2001:db8:1::9", true),
            ("2001:db9::1", false),
        ] {
            assert_eq!(s.ignores(ip.parse().unwrap()), ignored, "{ip}");
        }
        assert!(
            !Config::from_toml_str(&site("[]")).unwrap().sites[0]
                .ignores("203.0.113.7".parse().unwrap())
        );
        for bad in [
            r#"["10.0.0.1", "office"]"#,
            r#"["10.0.0.1", "10.0.0.0/33"]"#,
        ] {
            assert_eq!(
                invalid_key(Config::from_toml_str(&site(bad)).unwrap_err()),
                "sites[0].ignore_addresses[1]",
                "{bad}"
            );
        }
        let many: Vec<String> = (0..=MAX_IGNORE_ADDRESSES)
            .map(|i| format!("\"10.0.{}.{}\"", i / 256, i % 256))
            .collect();
        assert_eq!(
            invalid_key(
                Config::from_toml_str(&site(&format!("[{}]", many.join(",")))).unwrap_err()
            ),
            "sites[0].ignore_addresses"
        );
        // Logged as CIDRs.
        assert!(
            c.masked_json()
                .contains(r#""ignore_addresses":["203.0.113.7/32","10.0.0.0/8","2001:db8::/32"]"#)
        );
    }

    #[test]
    fn bad_origin_is_refused() {
        let text = "[[sites]]\nid = \"a\"\ntimezone = \"UTC\"\norigins = [\"news.example\"]\ninitial_total = 0\n";
        assert_eq!(
            invalid_key(Config::from_toml_str(text).unwrap_err()),
            "sites[0].origins[0]"
        );
    }

    #[test]
    fn country_header_is_a_header_name_or_empty() {
        for name in ["X-Country", "x-geo-country", "Fly-Client-Country_2"] {
            let text = format!("[server]\ncountry_header = \"{name}\"\n");
            let c = Config::from_toml_str(&text).unwrap();
            assert_eq!(c.server.country_header, name);
        }
        for name in ["X Country", "X-Country:", "Việt", "x/y", "(country)"] {
            let text = format!("[server]\ncountry_header = \"{name}\"\n");
            let err = Config::from_toml_str(&text).unwrap_err();
            assert_eq!(invalid_key(err), "server.country_header", "{name:?}");
        }
    }

    #[test]
    fn environment_overrides_the_file_values() {
        let e = env(&[
            ("LUOT_LISTEN", "127.0.0.1:18080"),
            ("LUOT_ADMIN_LISTEN", "127.0.0.1:19090"),
            ("LUOT_DATA_DIR", "/tmp/luot-x"),
            ("LUOT_FLUSH_INTERVAL", "200ms"),
            ("LUOT_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8,::1"),
        ]);
        let c = Config::load(None, &e).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:18080".parse().unwrap());
        assert_eq!(c.server.admin_listen, "127.0.0.1:19090".parse().unwrap());
        assert_eq!(c.server.data_dir, PathBuf::from("/tmp/luot-x"));
        assert_eq!(c.server.flush_interval, Duration::from_millis(200));
        let nets: Vec<String> = c
            .server
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, vec!["127.0.0.1/32", "10.0.0.0/8", "::1/128"]);
    }

    #[test]
    fn bad_environment_value_names_the_variable() {
        for (var, value) in [
            ("LUOT_FLUSH_INTERVAL", "fast"),
            ("LUOT_LISTEN", "nowhere"),
            ("LUOT_TRUSTED_PROXIES", "10.0.0.0/99"),
        ] {
            let err = Config::load(None, &env(&[(var, value)])).unwrap_err();
            assert_eq!(invalid_key(err), var);
        }
    }

    #[test]
    fn config_file_comes_from_luot_config_when_no_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("luot.toml");
        std::fs::write(&path, "[server]\nshutdown_grace = \"3s\"\n").unwrap();
        let e = env(&[("LUOT_CONFIG", path.to_str().unwrap())]);
        let c = Config::load(None, &e).unwrap();
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(3));
        let missing = Config::load(Some(Path::new("/nonexistent/luot.toml")), &e).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }));
    }

    #[test]
    fn masked_json_hides_secrets() {
        let text = "[server]\nmetrics_token = \"s3cret-token\"\n[store]\nredis_url = \"redis://u:hunter2@127.0.0.1:6379\"\n";
        let c = Config::from_toml_str(text).unwrap();
        let json = c.masked_json();
        assert!(
            !json.contains("s3cret-token") && !json.contains("hunter2"),
            "{json}"
        );
        assert!(json.contains("redis://u:***@127.0.0.1:6379"), "{json}");
    }

    #[test]
    fn site_rules_fall_back_to_the_global_counting_rules() {
        let text = "[counting]\ndedupe_window = \"30m\"\n[[sites]]\nid = \"a\"\ntimezone = \"UTC\"\norigins = []\ninitial_total = 0\nrate_limit_per_second = 5\ncount_bots = true\n[[sites]]\nid = \"b\"\ntimezone = \"UTC\"\norigins = []\ninitial_total = 0\ndedupe_window = \"0s\"\n";
        let c = Config::from_toml_str(text).unwrap();
        let a = c.sites[0].rules(&c.counting);
        assert_eq!(a.rate_limit_per_second, 5);
        assert_eq!(a.rate_limit_burst, DEFAULT_RATE_BURST);
        assert!(a.count_bots && a.respect_dnt);
        assert_eq!(a.dedupe_window, Duration::from_secs(1800));
        let b = c.sites[1].rules(&c.counting);
        assert_eq!(b.dedupe_window, Duration::ZERO);
        assert!(!b.count_bots);
        assert_eq!(b.rate_limit_per_second, DEFAULT_RATE_PER_SECOND);
        let zero = "[[sites]]\nid = \"a\"\ntimezone = \"UTC\"\norigins = []\ninitial_total = 0\nrate_limit_burst = 0\n";
        assert_eq!(
            invalid_key(Config::from_toml_str(zero).unwrap_err()),
            "sites[0].rate_limit_burst"
        );
    }

    #[test]
    fn read_rate_limit_defaults_to_the_beacon_limit_and_is_overridden_per_site() {
        let text = "[counting]\nread_rate_limit_burst = 50\n[[sites]]\nid = \"a\"\ntimezone = \"UTC\"\norigins = []\ninitial_total = 0\nread_rate_limit_per_second = 7\n";
        let c = Config::from_toml_str(text).unwrap();
        let a = c.sites[0].rules(&c.counting);
        assert_eq!(
            (a.read_rate_limit_per_second, a.read_rate_limit_burst),
            (7, 50)
        );
        let d = Counting::default();
        assert_eq!(
            (d.read_rate_limit_per_second, d.read_rate_limit_burst),
            (d.rate_limit_per_second, d.rate_limit_burst)
        );
        for (text, key) in [
            (
                "[counting]\nread_rate_limit_per_second = 0\n",
                "counting.read_rate_limit_per_second",
            ),
            (
                "[[sites]]\nid = \"a\"\ntimezone = \"UTC\"\norigins = []\ninitial_total = 0\nread_rate_limit_burst = 0\n",
                "sites[0].read_rate_limit_burst",
            ),
        ] {
            assert_eq!(invalid_key(Config::from_toml_str(text).unwrap_err()), key);
        }
    }

    #[test]
    fn limits_out_of_range_are_refused() {
        let err = Config::from_toml_str("[limits]\nmax_header_bytes = 10\n").unwrap_err();
        assert_eq!(invalid_key(err), "limits.max_header_bytes");
        let err = Config::from_toml_str("[server]\nflush_interval = \"0s\"\n").unwrap_err();
        assert_eq!(invalid_key(err), "server.flush_interval");
    }

    #[test]
    fn hypers_header_backstop_is_above_the_limit_and_inline_below_its_capacity() {
        let mut limits = Limits::default();
        for (configured, backstop) in [(1, 100), (64, 100), (99, 100), (100, 200), (150, 300)] {
            limits.max_headers = configured;
            assert_eq!(hyper_max_headers(&limits), backstop, "{configured}");
        }
    }
}
