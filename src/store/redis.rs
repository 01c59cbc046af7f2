//! The Redis store, for many stateless instances sharing one Redis or a
//! Redis Cluster.
//!
//! Key layout (every key of a site carries the hash tag `{site}`, so a
//! site's keys share one slot and a batch is one script call):
//!
//! | key | type | what |
//! |---|---|---|
//! | `luot:{s}:h:d:2026-11-27`, `…:h:w:2026-11-23`, `…:h:m:2026-11`, `…:h:t` | string | site hits per day, week, month, ever; the day keys are the daily series |
//! | `luot:{s}:p:d:…`, `…:p:w:…`, `…:p:m:…`, `…:p:t` | sorted set | hits per page per period: page figures and "most read" |
//! | `luot:{s}:b:<dimension>:2026-11-27` | hash | the site's breakdown by one dimension on one day: value → hits, at most `bounds.site` values besides `(other)` |
//! | `luot:{s}:bp:2026-11-27:<page>` | hash | a page's breakdowns on one day, its dimensions in one hash: `<dimension index>:<value>` → hits (`0:direct`, `1:Google`), at most `bounds.page` values a dimension besides `(other)` |
//! | `luot:{s}:titles` | hash | page → its last title seen (never expires) |
//! | `luot:{s}:r1h:<minute>`, `luot:{s}:r24h:<hour>` | hash | page → hits of the batches applied in one bucket of a rolling window (Unix minute or hour index); deleted when the window moves past it, else expire two buckets after leaving it |
//! | `luot:{s}:r1h:all`, `…:r24h:all` | sorted set | the window's sum of its buckets, pages with hits only: `top?period=1h|24h` |
//! | `luot:{s}:r1h:at`, `…:r24h:at` | string | the bucket the sum was last moved to |
//! | `luot:{s}:v:o:<unix minute>` | HyperLogLog | visitors per minute (`online`) |
//! | `luot:{s}:v:d:2026-11-27`, `luot:{s}:v:t` | HyperLogLog | visitors per day, ever |
//! | `luot:{s}:rec` | hash | the site's record day: `hits`, `date` (`2026-11-27`), raised by the apply script |
//! | `luot:{s}:por:<unix minute>` | sorted set | each instance's ranked pages by readers now, the union of the minute's rankings (expires after 3 minutes) |
//! | `luot:{s}:po:<unix minute>:<page>` | HyperLogLog | a page's readers per minute (the page's `online`), added by `PFADD` outside the batch (a set union needs no watermark) |
//! | `luot:{s}:wm` | hash | producer → last applied sequence (never pruned) |
//! | `luot:{s}:wmt` | hash | producer → Unix seconds of its last applied batch (for operators; nothing reads it) |
//! | `luot:{s}:tmp` | string | scratch for merging shipped HyperLogLog registers |
//! | `luot:secret:<name>` | string | shared secrets (daily salts expire) |
//!
//! Day and week keys and breakdown hashes expire by `EXPIREAT` (their
//! retention); months and totals never. The apply script checks and
//! advances the producer's watermark in the same atomic step as the
//! increments and breakdowns, and skips an increment whose key's expiry
//! has passed (counted late; the key is not recreated without a TTL), a
//! breakdown increment likewise (not counted).
//!
//! A breakdown hash costs one `HMGET` and one `HSET` a batch (per 1,000
//! fields), an `HINCRBY` of `(other)` when some value overflowed, and an
//! `EXPIREAT`; the values a counter holds are counted (`HLEN` for a
//! site's hash, `HKEYS` of a page's, at most two bounds' worth of fields)
//! only when a value it does not hold arrives. A page's dimensions share
//! one hash a day, so pages × days keys rather than twice that, and its
//! fields name the dimension by its two-byte index, not its name. Reading
//! a breakdown over N days is one script: N `GET`s or `ZSCORE`s of the day
//! counters and N `HGETALL`s.
//!
//! Watermarks are never pruned, however long a producer stays idle: a
//! forgotten watermark would let the same import (its own producer,
//! `import:<content hash>`, sequence 1) or a write-ahead file replayed
//! after a long downtime be applied a second time. Producers are one per
//! data directory plus one per distinct import, so the hash grows only by
//! operator actions (a new instance, an import), under 200 bytes a
//! producer and site in the two hashes (measured: 176 bytes with Redis
//! 7's hash encoding for a 16-character id); the script touches only its own producer's field,
//! never the whole hash. `wmt` keeps when each producer last had a batch
//! applied, as the embedded store does, so an operator can tell a
//! decommissioned instance's producer (safe to delete by hand once its
//! data directory is gone for good) from a live one; an `import:`
//! producer must never be deleted.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, Client, RedisError, Script, Value};

use jiff::Timestamp;
use jiff::civil::Date;

use super::{
    Applied, BreakdownIncrement, BreakdownReading, Dimension, Increment, Members, PageReaders,
    PeriodKey, Reading, Record, Scope, SiteBatch, SketchKey, Store, StoreError, ValueBounds,
    Window,
};
use crate::sketch::{member_bytes, redis_dense_hll};

/// How long one Redis command may take before its outcome is unknown.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Salts are kept a little longer than the days they serve.
const SALT_TTL_SECS: u64 = 3 * 86_400;

/// Sequences are compared as zero-padded decimal strings, so no precision is
/// lost in Lua's doubles.
fn padded(seq: u64) -> String {
    format!("{seq:020}")
}

const APPLY_LUA: &str = include_str!("lua/apply.lua");

const READ_LUA: &str = include_str!("lua/read.lua");

const READ_PAGES_LUA: &str = include_str!("lua/read_pages.lua");

const BREAKDOWN_LUA: &str = include_str!("lua/breakdown.lua");

const TOP_WINDOW_LUA: &str = include_str!("lua/top_window.lua");

/// Most pages one page-reading script reads (its reply carries five values
/// per page).
pub const MAX_PAGES_PER_READ: usize = 256;

/// A connection to one Redis or to a cluster. Both reconnect by themselves.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// A handle to the Redis store; cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    apply: Script,
    read: Script,
    read_pages: Script,
    breakdown: Script,
}

/// Whether a URL setting names a cluster: `redis+cluster://…`, or several
/// comma-separated seeds.
pub fn is_cluster_url(url: &str) -> bool {
    url.starts_with("redis+cluster://") || url.contains(',')
}

fn cluster_seeds(url: &str) -> Vec<String> {
    let rest = url.strip_prefix("redis+cluster://").unwrap_or(url);
    rest.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.contains("://") {
                s.to_string()
            } else {
                format!("redis://{s}")
            }
        })
        .collect()
}

fn map_err(e: RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout
    } else if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
    {
        StoreError::Unavailable(e.to_string())
    } else {
        match e.kind() {
            redis::ErrorKind::Server(_) => StoreError::Refused(e.to_string()),
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

/// A counter as Redis gives it (a sorted set's score may be a float).
fn parse_counter(s: &str) -> Result<u64, StoreError> {
    s.parse::<u64>()
        .or_else(|_| s.parse::<f64>().map(|f| f.max(0.0) as u64))
        .map_err(|_| StoreError::Corrupt(format!("counter value {s:?}")))
}

fn key(site: &str, rest: &str) -> String {
    format!("luot:{{{site}}}:{rest}")
}

/// The key holding a counter of `scope` for `period`.
pub fn counter_key(site: &str, scope: &Scope, period: &PeriodKey) -> String {
    period_key(site, matches!(scope, Scope::Page(_)), period)
}

/// The key of `period`'s site counter, or of its pages' sorted set.
fn period_key(site: &str, pages: bool, period: &PeriodKey) -> String {
    let kind = if pages { 'p' } else { 'h' };
    key(site, &format!("{kind}:{period}"))
}

/// Increments as the apply script takes them: every entry's hits are added
/// to each of the group's keys. Built from increments in order
/// ([`Increment::in_order`]), a group names a page at most once, as the
/// script's read-add-write of scores needs.
#[derive(Debug, PartialEq)]
struct Group<'a> {
    /// Page sorted sets (entries name their page), or site counters.
    pages: bool,
    keys: Vec<(PeriodKey, Option<Timestamp>)>,
    /// Page (empty for the site) and hits.
    entries: Vec<(&'a str, u64)>,
}

/// Groups a batch's increments so that a scope whose periods all get the
/// same hits (a page seen on one day: its day, week, month and total) is one
/// entry of a group holding those periods' keys. A flush of 10,000 pages is
/// then one group of four keys and 10,000 entries — 20,000 script arguments
/// instead of 40,000 keys and 160,000 arguments. A scope whose periods get
/// different hits (hits on two days) has each increment in a group of one
/// key. Groups are few (one per distinct set of keys), so they are found by
/// a linear search.
fn group_increments(increments: &[Increment]) -> Vec<Group<'_>> {
    fn place<'a>(
        groups: &mut Vec<Group<'a>>,
        pages: bool,
        keys: &[Increment],
        member: &'a str,
        hits: u64,
    ) {
        let same = |g: &&mut Group<'a>| {
            g.pages == pages
                && g.keys.len() == keys.len()
                && g.keys
                    .iter()
                    .zip(keys)
                    .all(|(k, i)| k.0 == i.period && k.1 == i.expires_at)
        };
        let group = match groups.iter_mut().rev().find(same) {
            Some(g) => g,
            None => {
                groups.push(Group {
                    pages,
                    keys: keys.iter().map(|i| (i.period, i.expires_at)).collect(),
                    entries: Vec::new(),
                });
                groups.last_mut().expect("just pushed")
            }
        };
        group.entries.push((member, hits));
    }
    let mut groups = Vec::new();
    for run in increments.chunk_by(|a, b| a.scope == b.scope) {
        let pages = matches!(run[0].scope, Scope::Page(_));
        let member = run[0].scope.as_key();
        let hits = run[0].hits;
        if run.iter().all(|i| i.hits == hits) {
            place(&mut groups, pages, run, member, hits);
        } else {
            for inc in run {
                place(
                    &mut groups,
                    pages,
                    std::slice::from_ref(inc),
                    member,
                    inc.hits,
                );
            }
        }
    }
    groups
}

/// The hash holding the breakdown of `scope` on `day`: for the site one
/// per dimension (`luot:{s}:b:<dimension>:<day>`, a field per value), for
/// a page one for all its dimensions (`luot:{s}:bp:<day>:<page>`, a field
/// per dimension and value, see [`field_prefix`]), so a page costs one
/// key a day, not one per dimension.
pub fn breakdown_key(site: &str, scope: &Scope, dimension: Dimension, day: Date) -> String {
    match scope {
        Scope::Site => key(site, &format!("b:{}:{day}", dimension.as_str())),
        Scope::Page(page) => key(site, &format!("bp:{day}:{page}")),
    }
}

/// What a field of a breakdown hash starts with before its value: nothing
/// in a site's hash (one dimension a hash), the dimension's index and a
/// colon in a page's (`0:direct`, `1:Google`): two bytes rather than a
/// name, as a page's hashes are many (pages × days).
fn field_prefix(scope: &Scope, dimension: Dimension) -> String {
    match scope {
        Scope::Site => String::new(),
        Scope::Page(_) => format!("{}:", dimension.index()),
    }
}

/// One breakdown hash and what a batch adds to it: each field once (a
/// site hash's fields are values, a page hash's are
/// [`field_prefix`]ed), with its hits.
#[derive(Debug)]
struct BreakdownHash<'a> {
    key: String,
    fields: Vec<(std::borrow::Cow<'a, str>, u64)>,
}

/// Breakdown hashes of one kind (site or page) that share their expiry,
/// which the apply script takes once for them all.
#[derive(Debug)]
struct BreakdownGroup<'a> {
    page: bool,
    /// The first increment's: a counter's increments share the day's
    /// retention.
    expires: Option<Timestamp>,
    bound: u32,
    hashes: Vec<BreakdownHash<'a>>,
}

/// Groups breakdown increments in order ([`BreakdownIncrement::in_order`])
/// by the hash they add to (a site counter alone, a page's counters of
/// one day together), and hashes of one kind and expiry into one group: a
/// flush is then a group of site hashes and one of page hashes (two of
/// each across midnight), and a page's hash a few script arguments.
fn group_breakdowns<'a>(
    site: &str,
    breakdowns: &'a [BreakdownIncrement],
    bounds: ValueBounds,
) -> Vec<BreakdownGroup<'a>> {
    let mut groups: Vec<BreakdownGroup<'a>> = Vec::new();
    for scope_run in breakdowns.chunk_by(|a, b| a.scope == b.scope) {
        let scope = &scope_run[0].scope;
        let page = matches!(scope, Scope::Page(_));
        let mut counters: Vec<&[BreakdownIncrement]> = scope_run
            .chunk_by(|a, b| a.dimension == b.dimension && a.day == b.day)
            .collect();
        if page {
            // Stable: a day's counters stay in dimension order.
            counters.sort_by_key(|c| c[0].day);
        }
        for day_run in counters.chunk_by(|a, b| page && a[0].day == b[0].day) {
            let first = &day_run[0][0];
            let fields = day_run
                .iter()
                .flat_map(|c| c.iter())
                .map(|b| {
                    let field = if page {
                        std::borrow::Cow::Owned(format!(
                            "{}{}",
                            field_prefix(scope, b.dimension),
                            b.value
                        ))
                    } else {
                        std::borrow::Cow::Borrowed(&*b.value)
                    };
                    (field, b.hits)
                })
                .collect();
            let hash = BreakdownHash {
                key: breakdown_key(site, scope, first.dimension, first.day),
                fields,
            };
            // Groups are few (a kind and an expiry each: a page seen on
            // two days is in two), so they are found by a linear search.
            let same =
                |g: &&mut BreakdownGroup<'a>| g.page == page && g.expires == first.expires_at;
            match groups.iter_mut().rev().find(same) {
                Some(g) => g.hashes.push(hash),
                None => groups.push(BreakdownGroup {
                    page,
                    expires: first.expires_at,
                    bound: if page { bounds.page } else { bounds.site },
                    hashes: vec![hash],
                }),
            }
        }
    }
    groups
}

/// The hash of a site's page titles: page → the last title seen.
pub fn titles_key(site: &str) -> String {
    key(site, "titles")
}

/// A rolling window's name in its keys: `r1h`, `r24h`.
fn window_name(window: Window) -> String {
    format!("r{}", window.as_str())
}

/// A key of a rolling window: `luot:{s}:r1h:<bucket index>` (a bucket's
/// page hits), `…:r1h:all` (the window's sum), `…:r1h:at` (the bucket the
/// sum was last moved to). The apply script names the same keys.
pub fn window_key(site: &str, window: Window, rest: &str) -> String {
    key(site, &format!("{}:{rest}", window_name(window)))
}

// ---- record day (issue 25 §7) ----

/// The hash holding a site's record day (`hits`, `date`).
fn record_key(site: &str) -> String {
    key(site, "rec")
}

/// The record day from the read script's last two values (popped: the
/// date, then the hits); `None` before any hit.
fn parse_record(date: Option<String>, hits: Option<String>) -> Result<Option<Record>, StoreError> {
    let (Some(date), Some(hits)) = (date, hits) else {
        return Err(StoreError::Corrupt("read reply lacks the record".into()));
    };
    if date.is_empty() {
        return Ok(None);
    }
    let day = date
        .parse::<Date>()
        .map_err(|_| StoreError::Corrupt(format!("record date {date:?}")))?;
    Ok(Some(Record {
        hits: parse_counter(&hits)?,
        date: day,
    }))
}

// ---- end record day ----

/// The key holding the visitor sketch `sketch` of a site.
pub fn sketch_key(site: &str, sketch: &SketchKey) -> String {
    key(site, &format!("v:{sketch}"))
}

/// The key of a page's readers in one Unix minute.
pub fn page_minute_key(site: &str, page: &str, minute: i64) -> String {
    key(site, &format!("po:{minute}:{page}"))
}

impl RedisStore {
    /// Connects to `url` (`redis://`, `rediss://`, `redis+cluster://h:p,…`
    /// or a comma-separated seed list). The connection is made lazily for a
    /// single server, so the service can start while Redis is away; a
    /// cluster needs one seed to answer.
    ///
    /// # Errors
    /// [`StoreError::Refused`] for a URL that cannot be used,
    /// [`StoreError::Unavailable`] when no cluster seed answers.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let conn = if is_cluster_url(url) {
            let seeds = cluster_seeds(url);
            let client = redis::cluster::ClusterClient::builder(seeds)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .retries(3)
                .build()
                .map_err(|e| StoreError::Refused(e.to_string()))?;
            Conn::Cluster(client.get_async_connection().await.map_err(map_err)?)
        } else {
            let client = Client::open(url).map_err(|e| StoreError::Refused(e.to_string()))?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(1));
            Conn::Single(ConnectionManager::new_lazy_with_config(client, config).map_err(map_err)?)
        };
        Ok(RedisStore {
            conn,
            apply: Script::new(APPLY_LUA),
            read: Script::new(READ_LUA),
            read_pages: Script::new(READ_PAGES_LUA),
            breakdown: Script::new(BREAKDOWN_LUA),
        })
    }

    /// Which kind of deployment this is.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        match &self.conn {
            Conn::Single(c) => invocation.invoke_async(&mut c.clone()).await,
            Conn::Cluster(c) => invocation.invoke_async(&mut c.clone()).await,
        }
        .map_err(map_err)
    }

    /// One read script call: counters, watermark and one union count per
    /// group of sketches.
    async fn read_all(
        &self,
        site: &str,
        scope: &Scope,
        periods: &[PeriodKey],
        producer: &str,
        groups: &[Vec<SketchKey>],
    ) -> Result<(Reading, Vec<Option<u64>>), StoreError> {
        let mut inv = self.read.prepare_invoke();
        inv.key(key(site, "wm"));
        for p in periods {
            inv.key(counter_key(site, scope, p));
        }
        for k in groups.iter().flatten() {
            inv.key(sketch_key(site, k));
        }
        if *scope == Scope::Site {
            // Record day: the last key (read.lua).
            inv.key(record_key(site));
        }
        inv.arg(producer);
        match scope {
            Scope::Site => inv.arg("c").arg(""),
            Scope::Page(p) => inv.arg("z").arg(p.as_ref()),
        };
        inv.arg(periods.len());
        for g in groups {
            inv.arg(g.len());
        }
        let mut raw: Vec<String> = self.invoke(&inv).await?;
        let parse = parse_counter;
        let record = if *scope == Scope::Site {
            parse_record(raw.pop(), raw.pop())?
        } else {
            None
        };
        let expected = periods.len() + 1 + groups.len();
        if raw.len() != expected {
            return Err(StoreError::Corrupt(format!(
                "read reply has {} values, expected {expected}",
                raw.len()
            )));
        }
        let values = raw[..periods.len()]
            .iter()
            .map(|v| parse(v))
            .collect::<Result<_, _>>()?;
        let watermark = parse(&raw[periods.len()])?;
        let counts = raw[periods.len() + 1..]
            .iter()
            .map(|c| parse(c).map(Some))
            .collect::<Result<_, _>>()?;
        Ok((
            Reading {
                values,
                watermark,
                record,
            },
            counts,
        ))
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        match &self.conn {
            Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
        .map_err(map_err)
    }
}

fn expire_arg(at: Option<Timestamp>) -> i64 {
    // A zero means "never"; an instant at or before the epoch is long gone,
    // and 1 keeps it "expired" rather than "never".
    at.map_or(0, |t| t.as_second().max(1))
}

impl Store for RedisStore {
    async fn apply(&self, batch: &SiteBatch) -> Result<Applied, StoreError> {
        let site = batch.site.as_ref();
        let mut inv = self.apply.prepare_invoke();
        inv.key(key(site, "wm"))
            .key(key(site, "wmt"))
            .key(key(site, "tmp"))
            .arg(batch.id.producer.as_ref())
            .arg(padded(batch.id.seq));
        let reordered;
        let increments = if Increment::in_order(&batch.increments) {
            &batch.increments
        } else {
            reordered = Increment::into_order(batch.increments.clone());
            &reordered
        };
        let groups = group_increments(increments);
        inv.arg(groups.len());
        for g in &groups {
            inv.arg(if g.pages { "z" } else { "c" })
                .arg(g.keys.len())
                .arg(g.entries.len());
            for (period, expires) in &g.keys {
                inv.key(period_key(site, g.pages, period))
                    .arg(expire_arg(*expires));
            }
            if g.pages {
                for &(member, _) in &g.entries {
                    inv.arg(member);
                }
            }
            for &(_, hits) in &g.entries {
                inv.arg(hits);
            }
        }
        let reordered;
        let breakdowns = if BreakdownIncrement::in_order(&batch.breakdowns) {
            &batch.breakdowns
        } else {
            reordered = BreakdownIncrement::into_order(batch.breakdowns.clone());
            &reordered
        };
        let groups = group_breakdowns(site, breakdowns, batch.bounds);
        inv.arg(groups.len());
        for g in &groups {
            inv.arg(if g.page { "p" } else { "s" })
                .arg(expire_arg(g.expires))
                .arg(g.bound)
                .arg(g.hashes.len());
            for h in &g.hashes {
                inv.key(&h.key).arg(h.fields.len());
                for (field, _) in &h.fields {
                    inv.arg(field.as_ref());
                }
                for (_, hits) in &h.fields {
                    inv.arg(*hits);
                }
            }
        }
        inv.arg(batch.titles.len());
        if !batch.titles.is_empty() {
            inv.key(titles_key(site));
            for (page, title) in &batch.titles {
                inv.arg(page.as_ref()).arg(title.as_ref());
            }
        }
        match batch.minute {
            Some(minute) => {
                inv.arg(Window::ALL.len());
                for w in Window::ALL {
                    inv.arg(window_name(w))
                        .arg(w.bucket_secs())
                        .arg(w.buckets())
                        .arg(w.bucket_of(minute));
                }
            }
            None => {
                inv.arg(0);
            }
        }
        for delta in &batch.visitors {
            for (sketch, expires) in &delta.keys {
                inv.key(sketch_key(site, sketch));
                match &delta.members {
                    Members::Exact(members) => {
                        inv.arg("m").arg(expire_arg(*expires)).arg(members.len());
                        for m in members {
                            inv.arg(member_bytes(*m).as_slice());
                        }
                    }
                    Members::Registers(registers) => {
                        inv.arg("r")
                            .arg(expire_arg(*expires))
                            .arg(redis_dense_hll(registers));
                    }
                }
            }
        }
        // Record day: always the last key (apply.lua).
        inv.key(record_key(site));
        let (fresh, late): (i64, u64) = self.invoke(&inv).await?;
        Ok(if fresh == 1 {
            Applied::Fresh { late }
        } else {
            Applied::Duplicate
        })
    }

    async fn read(
        &self,
        site: &str,
        scope: &Scope,
        periods: &[PeriodKey],
        producer: &str,
    ) -> Result<Reading, StoreError> {
        Ok(self.read_all(site, scope, periods, producer, &[]).await?.0)
    }

    async fn read_site(
        &self,
        site: &str,
        periods: &[PeriodKey],
        producer: &str,
        groups: &[Vec<SketchKey>],
    ) -> Result<(Reading, Vec<Option<u64>>), StoreError> {
        self.read_all(site, &Scope::Site, periods, producer, groups)
            .await
    }

    /// One script call per [`MAX_PAGES_PER_READ`] pages, each call one
    /// snapshot.
    async fn read_pages(
        &self,
        site: &str,
        pages: &[Arc<str>],
        periods: &[PeriodKey],
        producer: &str,
    ) -> Result<Vec<Reading>, StoreError> {
        let mut readings = Vec::with_capacity(pages.len());
        for chunk in pages.chunks(MAX_PAGES_PER_READ) {
            let mut inv = self.read_pages.prepare_invoke();
            inv.key(key(site, "wm"));
            for p in periods {
                inv.key(counter_key(site, &Scope::Page(Arc::from("")), p));
            }
            inv.arg(producer);
            for page in chunk {
                inv.arg(page.as_ref());
            }
            let raw: Vec<String> = self.invoke(&inv).await?;
            let expected = 1 + periods.len() * chunk.len();
            if raw.len() != expected {
                return Err(StoreError::Corrupt(format!(
                    "page read reply has {} values, expected {expected}",
                    raw.len()
                )));
            }
            let watermark = parse_counter(&raw[0])?;
            for i in 0..chunk.len() {
                let values = (0..periods.len())
                    .map(|k| parse_counter(&raw[1 + k * chunk.len() + i]))
                    .collect::<Result<_, _>>()?;
                readings.push(Reading {
                    values,
                    watermark,
                    record: None,
                });
            }
        }
        Ok(readings)
    }

    async fn secret(&self, name: &str, candidate: [u8; 32]) -> Result<[u8; 32], StoreError> {
        let k = format!("luot:secret:{name}");
        let mut set = redis::cmd("SET");
        set.arg(&k).arg(candidate.as_slice()).arg("NX");
        if name.starts_with("salt:") {
            set.arg("EX").arg(SALT_TTL_SECS);
        }
        let _: Value = self.query(&set).await?;
        let stored: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(&k)).await?;
        let stored =
            stored.ok_or_else(|| StoreError::Unavailable(format!("secret {name} vanished")))?;
        stored
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("secret {name} is not 32 bytes")))
    }

    async fn distinct(&self, site: &str, keys: &[SketchKey]) -> Result<Option<u64>, StoreError> {
        if keys.is_empty() {
            return Ok(Some(0));
        }
        let mut cmd = redis::cmd("PFCOUNT");
        for k in keys {
            cmd.arg(sketch_key(site, k));
        }
        Ok(Some(self.query(&cmd).await?))
    }

    async fn top(
        &self,
        site: &str,
        period: PeriodKey,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = counter_key(site, &Scope::Page("".into()), &period);
        let stop = i64::try_from(limit).unwrap_or(i64::MAX) - 1;
        let pairs: Vec<(String, f64)> = self
            .query(
                redis::cmd("ZREVRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(stop)
                    .arg("WITHSCORES"),
            )
            .await?;
        let mut out: Vec<(String, u64)> = pairs
            .into_iter()
            .map(|(page, score)| (page, score.max(0.0) as u64))
            .collect();
        // Redis breaks ties by member in reverse; order them like the
        // embedded store does.
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    }

    /// One script call: the days' counters and breakdown hashes.
    async fn breakdown(
        &self,
        site: &str,
        scope: &Scope,
        dimension: Dimension,
        days: &[Date],
    ) -> Result<BreakdownReading, StoreError> {
        let mut days = days.to_vec();
        days.sort_unstable();
        days.dedup();
        if days.is_empty() {
            return Ok(BreakdownReading::default());
        }
        let mut inv = self.breakdown.prepare_invoke();
        for d in &days {
            inv.key(counter_key(site, scope, &PeriodKey::Day(*d)));
        }
        for d in &days {
            inv.key(breakdown_key(site, scope, dimension, *d));
        }
        match scope {
            Scope::Site => inv.arg("c").arg(""),
            Scope::Page(p) => inv.arg("z").arg(p.as_ref()),
        };
        inv.arg(field_prefix(scope, dimension));
        let raw: Vec<String> = self.invoke(&inv).await?;
        let Some((hits, pairs)) = raw.split_first() else {
            return Err(StoreError::Corrupt("empty breakdown reply".into()));
        };
        if pairs.len() % 2 != 0 {
            return Err(StoreError::Corrupt("breakdown reply is not pairs".into()));
        }
        let values = pairs
            .chunks_exact(2)
            .map(|p| Ok((p[0].clone(), parse_counter(&p[1])?)))
            .collect::<Result<_, StoreError>>()?;
        Ok(BreakdownReading {
            hits: parse_counter(hits)?,
            values,
        })
    }

    /// One `HMGET` per 1,000 pages.
    async fn titles(
        &self,
        site: &str,
        pages: &[Arc<str>],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let mut out = Vec::with_capacity(pages.len());
        for chunk in pages.chunks(1000) {
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(titles_key(site));
            for page in chunk {
                cmd.arg(page.as_ref());
            }
            let got: Vec<Option<String>> = self.query(&cmd).await?;
            out.extend(got);
        }
        Ok(out)
    }

    /// One script call: the window's kept sum, or while its mark is two
    /// buckets or more behind `minute`, the union of its live buckets.
    async fn top_window(
        &self,
        site: &str,
        window: Window,
        minute: i64,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let limit = limit.min(super::TOP_KEPT);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let at = window.bucket_of(minute);
        // Made per call (hashing 1 KB), not kept: a kept one would make
        // this handle, and every `AnyStore`, 100 bytes larger.
        let script = Script::new(TOP_WINDOW_LUA);
        let mut inv = script.prepare_invoke();
        inv.key(window_key(site, window, "at"))
            .key(window_key(site, window, "all"));
        for b in at - window.buckets() + 1..=at {
            inv.key(window_key(site, window, &b.to_string()));
        }
        inv.arg(at).arg(window.buckets()).arg(limit);
        let raw: Vec<String> = self.invoke(&inv).await?;
        if !raw.len().is_multiple_of(2) {
            return Err(StoreError::Corrupt("window reply is not pairs".into()));
        }
        let mut out = raw
            .chunks_exact(2)
            .map(|p| Ok((p[0].clone(), parse_counter(&p[1])?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.retain(|(_, hits)| *hits > 0);
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out.truncate(limit);
        Ok(out)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = match &self.conn {
            Conn::Single(c) => c.clone().ping().await,
            Conn::Cluster(c) => redis::cmd("PING").query_async(&mut c.clone()).await,
        }
        .map_err(map_err)?;
        Ok(())
    }

    async fn add_page_readers(
        &self,
        site: &str,
        readers: &[PageReaders],
        keep: Duration,
    ) -> Result<(), StoreError> {
        if readers.is_empty() {
            return Ok(());
        }
        // One PFADD and one EXPIREAT per page and minute, in one pipeline.
        let mut pipe = redis::pipe();
        for (page, seen) in readers {
            let mut minutes: Vec<i64> = seen.iter().map(|(_, m)| *m).collect();
            minutes.sort_unstable();
            minutes.dedup();
            for minute in minutes {
                let k = page_minute_key(site, page, minute);
                let cmd = pipe.cmd("PFADD").arg(&k);
                for (v, _) in seen.iter().filter(|(_, m)| *m == minute) {
                    cmd.arg(member_bytes(*v).as_slice());
                }
                cmd.ignore();
                let end = (minute + 1) * 60 + keep.as_secs() as i64;
                pipe.cmd("EXPIREAT").arg(&k).arg(end).ignore();
            }
        }
        let _: () = match &self.conn {
            Conn::Single(c) => pipe.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => pipe.query_async(&mut c.clone()).await,
        }
        .map_err(map_err)?;
        Ok(())
    }

    async fn page_readers(
        &self,
        site: &str,
        pages: &[Arc<str>],
        first: i64,
        last: i64,
    ) -> Result<Option<Vec<u64>>, StoreError> {
        if pages.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let mut pipe = redis::pipe();
        for page in pages {
            let cmd = pipe.cmd("PFCOUNT");
            for minute in first..=last {
                cmd.arg(page_minute_key(site, page, minute));
            }
        }
        let counts: Vec<u64> = match &self.conn {
            Conn::Single(c) => pipe.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => pipe.query_async(&mut c.clone()).await,
        }
        .map_err(map_err)?;
        Ok(Some(counts))
    }

    async fn share_ranking(
        &self,
        site: &str,
        minute: i64,
        ranked: &[(Arc<str>, u64)],
        limit: usize,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let now_key = key(site, &format!("por:{minute}"));
        let last_key = key(site, &format!("por:{}", minute - 1));
        let mut pipe = redis::pipe();
        if !ranked.is_empty() {
            let cmd = pipe.cmd("ZADD").arg(&now_key);
            for (page, n) in ranked {
                cmd.arg(*n).arg(page.as_ref());
            }
            cmd.ignore();
            pipe.cmd("EXPIRE").arg(&now_key).arg(180).ignore();
        }
        let stop = limit.saturating_sub(1);
        pipe.cmd("ZREVRANGE").arg(&now_key).arg(0).arg(stop);
        pipe.cmd("ZREVRANGE").arg(&last_key).arg(0).arg(stop);
        let (now, last): (Vec<String>, Vec<String>) = match &self.conn {
            Conn::Single(c) => pipe.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => pipe.query_async(&mut c.clone()).await,
        }
        .map_err(map_err)?;
        let mut pages = now;
        for page in last {
            if !pages.contains(&page) {
                pages.push(page);
            }
        }
        pages.truncate(limit);
        Ok(Some(pages))
    }

    /// Other instances may share the server.
    fn sole_writer(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_site_hash_tag() {
        let d = jiff::civil::Date::constant(2026, 11, 27);
        assert_eq!(
            counter_key("demo", &Scope::Site, &PeriodKey::Day(d)),
            "luot:{demo}:h:d:2026-11-27"
        );
        assert_eq!(
            counter_key("demo", &Scope::Page("/a".into()), &PeriodKey::Total),
            "luot:{demo}:p:t"
        );
        assert_eq!(
            sketch_key("demo", &SketchKey::Minute(7)),
            "luot:{demo}:v:o:7"
        );
        assert_eq!(sketch_key("demo", &SketchKey::All), "luot:{demo}:v:t");
    }

    #[test]
    fn cluster_urls_are_recognised() {
        assert!(is_cluster_url("redis+cluster://127.0.0.1:7000"));
        assert!(is_cluster_url("redis://a:1,redis://b:2"));
        assert!(!is_cluster_url("redis://127.0.0.1:6379/0"));
        assert_eq!(
            cluster_seeds("redis+cluster://127.0.0.1:7000,127.0.0.1:7001"),
            vec!["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
    }

    fn inc(page: Option<&str>, period: PeriodKey, hits: u64) -> Increment {
        Increment {
            scope: page.map_or(Scope::Site, |p| Scope::Page(p.into())),
            period,
            hits,
            expires_at: match period {
                PeriodKey::Day(_) => Some(Timestamp::UNIX_EPOCH),
                _ => None,
            },
        }
    }

    #[test]
    fn a_page_seen_on_one_day_is_one_entry_for_its_four_keys() {
        let day = jiff::civil::Date::constant(2026, 12, 5);
        let before = jiff::civil::Date::constant(2026, 12, 4);
        let periods = [
            PeriodKey::Day(day),
            PeriodKey::Week(jiff::civil::Date::constant(2026, 11, 30)),
            PeriodKey::Month(jiff::civil::Date::constant(2026, 12, 1)),
            PeriodKey::Total,
        ];
        let mut incs: Vec<Increment> = periods.iter().map(|p| inc(None, *p, 7)).collect();
        for (page, hits) in [("/a", 2), ("/b", 1)] {
            incs.extend(periods.iter().map(|p| inc(Some(page), *p, hits)));
        }
        // "/c" was seen on two days: its periods' hits differ.
        incs.push(inc(Some("/c"), PeriodKey::Day(before), 1));
        incs.push(inc(Some("/c"), periods[0], 3));
        incs.extend(periods[1..].iter().map(|p| inc(Some("/c"), *p, 4)));
        incs.extend(periods.iter().map(|p| inc(Some("/d"), *p, 5)));

        let groups = group_increments(&incs);
        let keys = |g: &Group<'_>| g.keys.iter().map(|k| k.0).collect::<Vec<_>>();
        assert_eq!(groups.len(), 7, "{groups:#?}");
        assert!(!groups[0].pages);
        assert_eq!(keys(&groups[0]), periods);
        assert_eq!(groups[0].entries, vec![("", 7)]);
        assert!(groups[1].pages);
        assert_eq!(keys(&groups[1]), periods);
        assert_eq!(groups[1].entries, vec![("/a", 2), ("/b", 1), ("/d", 5)]);
        // "/c": one group of one key per increment.
        let c: Vec<_> = groups[2..]
            .iter()
            .map(|g| (keys(g), g.entries.clone()))
            .collect();
        assert_eq!(
            c,
            vec![
                (vec![PeriodKey::Day(before)], vec![("/c", 1)]),
                (vec![periods[0]], vec![("/c", 3)]),
                (vec![periods[1]], vec![("/c", 4)]),
                (vec![periods[2]], vec![("/c", 4)]),
                (vec![periods[3]], vec![("/c", 4)]),
            ]
        );
        // Every increment is carried exactly once.
        let carried: u64 = groups
            .iter()
            .map(|g| g.keys.len() as u64 * g.entries.iter().map(|e| e.1).sum::<u64>())
            .sum();
        assert_eq!(carried, incs.iter().map(|i| i.hits).sum::<u64>());
    }

    #[test]
    fn breakdowns_group_by_hash_a_page_s_day_in_one() {
        let day = Date::constant(2026, 11, 27);
        let before = Date::constant(2026, 11, 26);
        let b = |scope: &Scope, dimension, day, value: &str| BreakdownIncrement {
            scope: scope.clone(),
            dimension,
            day,
            value: Arc::from(value),
            hits: 1,
            expires_at: None,
        };
        let page = Scope::Page(Arc::from("/a"));
        let (ch, src) = (Dimension::Channel, Dimension::Source);
        let all = BreakdownIncrement::into_order(vec![
            b(&Scope::Site, ch, day, "direct"),
            b(&Scope::Site, ch, day, "search"),
            b(&Scope::Site, src, day, "Google"),
            b(&page, ch, before, "direct"),
            b(&page, ch, day, "search"),
            b(&page, src, before, "(direct)"),
            b(&page, src, day, "Google"),
        ]);
        let bounds = ValueBounds { site: 9, page: 3 };
        let groups = group_breakdowns("demo", &all, bounds);
        type Shape<'a> = (bool, u32, Vec<(&'a str, Vec<&'a str>)>);
        let shape: Vec<Shape<'_>> = groups
            .iter()
            .map(|g| {
                let hashes = g
                    .hashes
                    .iter()
                    .map(|h| {
                        (
                            h.key.as_str(),
                            h.fields.iter().map(|f| f.0.as_ref()).collect(),
                        )
                    })
                    .collect();
                (g.page, g.bound, hashes)
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (
                    false,
                    9,
                    vec![
                        ("luot:{demo}:b:channel:2026-11-27", vec!["direct", "search"]),
                        ("luot:{demo}:b:source:2026-11-27", vec!["Google"]),
                    ]
                ),
                (
                    true,
                    3,
                    vec![
                        (
                            "luot:{demo}:bp:2026-11-26:/a",
                            vec!["0:direct", "1:(direct)"]
                        ),
                        ("luot:{demo}:bp:2026-11-27:/a", vec!["0:search", "1:Google"]),
                    ]
                ),
            ]
        );
        // Across midnight pages carry two days, two expiries: two groups,
        // however the pages interleave them.
        let mut midnight = Vec::new();
        for page in ["/a", "/b", "/c"] {
            for (day, at) in [(before, 1), (day, 2)] {
                midnight.push(BreakdownIncrement {
                    expires_at: Some(Timestamp::from_second(at).unwrap()),
                    ..b(&Scope::Page(Arc::from(page)), ch, day, "direct")
                });
            }
        }
        let groups = group_breakdowns("demo", &midnight, bounds);
        let sizes: Vec<usize> = groups.iter().map(|g| g.hashes.len()).collect();
        assert_eq!(sizes, vec![3, 3]);
        // The page fields' prefixes are the dimensions' storage order.
        assert_eq!((ch.index(), src.index()), (0, 1));
    }

    #[test]
    fn sequences_compare_as_padded_strings() {
        assert!(padded(9) < padded(10));
        assert!(padded(1_800_000_000_000_001) > padded(1_800_000_000_000_000));
        assert_eq!(padded(u64::MAX).len(), 20);
    }
}
