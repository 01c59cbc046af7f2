//! HTTP: the public routes (beacons, figures, health) and the admin routes
//! (metrics), the mapping of every error to a status and a JSON body, CORS.
//!
//! Handlers are thin: they take borrowed parts of the request to `ingest`
//! and `read`, and turn the result into a response. One function,
//! [`ApiError::response`], maps errors to statuses.
//!
//! The faces readers see live in [`faces`]: the snippet (`/luot.js`), the
//! widget (`/widget/{site}`), the badge (`/badge/{site}.svg`), busuanzi
//! (`/busuanzi`, JSONP) and the figures' JSON writer; [`text`] holds the
//! number formatting and query parameters they and the owner's pages
//! share. The owner's side lives in [`owner`]: history (series and top
//! pages, and the read-token rule), the dashboard (`/dashboard/{site}`)
//! and the admin listener's import and export. [`server`] runs the
//! listeners.
//!
//! May use every stage below it: `ingest` (to count), `read` (figures),
//! `flush::import` (the import queue), `site`, `count`, `store` (the trait,
//! through the store the app hands it in [`State`]) and the bottom. Only
//! `app` and `cli` sit above it.

pub mod faces;
pub mod owner;
pub mod server;
pub mod text;

use faces::{badge, busuanzi, figures, snippet, widget};
use owner::{admin, dashboard, history};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use ipnet::IpNet;
use jiff::Timestamp;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

use crate::count::tally::Kept;
use crate::count::visitor::Identity;
use crate::ingest::bots::BotDetector;
use crate::ingest::{self, Beacon, Ingest, IngestError, Sender};
use crate::metrics::{self, HitCounters};
use crate::read::Reader;
use crate::site::{Site, Sites};
use crate::store::{AnyStore, Store};

/// The response body type of every route.
pub type Body = Full<Bytes>;

/// A transparent 1×1 GIF.
pub const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// Every public route, as `(method, path template)`. The OpenAPI document
/// must describe each (a test checks it).
pub const PUBLIC_ROUTES: &[(&str, &str)] = &[
    ("POST", "/hit"),
    ("OPTIONS", "/hit"),
    ("GET", "/hit.gif"),
    ("GET", "/api/v1/sites/{site}/counters"),
    ("OPTIONS", "/api/v1/sites/{site}/counters"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/luot.js"),
    ("GET", "/widget/{site}"),
    ("GET", "/badge/{site}.svg"),
    ("GET", "/busuanzi"),
    ("GET", "/api/v1/sites/{site}/series"),
    ("GET", "/api/v1/sites/{site}/top"),
    ("GET", "/dashboard/{site}"),
];

/// Everything the handlers share. Cheap to clone (an `Arc`).
pub struct State {
    pub sites: Arc<Sites>,
    pub identity: Arc<Identity>,
    pub store: AnyStore,
    pub reader: Reader,
    pub counters: HitCounters,
    pub http_metrics: metrics::HttpMetrics,
    pub bots: BotDetector,
    pub trusted_proxies: Vec<IpNet>,
    pub max_body_bytes: usize,
    /// Request head limits; hyper enforces twice these as a backstop.
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub metrics_token: Option<String>,
    /// Where imports go (the flusher); `None` where none are taken.
    pub imports: Option<crate::flush::import::ImportQueue>,
    pub prometheus: PrometheusHandle,
    /// False until start-up is complete, and again once draining begins.
    pub ready: AtomicBool,
}

/// A refusal, with the status and machine-readable code it maps to.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn not_found() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not answer that method",
        )
    }

    /// A client over its read limit: the beacon limit's status and code.
    pub(crate) fn read_limited() -> Self {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many reads from this address; slow down",
        )
    }

    fn body_too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body exceeds {limit} bytes"),
        )
    }

    /// The JSON error response: `{"error": code, "message": sentence}`.
    pub fn response(&self) -> Response<Body> {
        let body = serde_json::to_vec(&ErrorBody {
            error: self.code,
            message: &self.message,
        })
        .unwrap_or_default();
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        let (status, code) = match &e {
            IngestError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed"),
            IngestError::MissingSite => (StatusCode::BAD_REQUEST, "missing_site"),
            IngestError::BadPage(_) => (StatusCode::BAD_REQUEST, "bad_page"),
            IngestError::UnknownSite(_) => (StatusCode::NOT_FOUND, "unknown_site"),
            IngestError::ForbiddenOrigin(_) => (StatusCode::FORBIDDEN, "origin_not_allowed"),
            IngestError::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Which public route a request is for; the label of its metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Hit,
    HitGif,
    Counters,
    Healthz,
    Readyz,
    Snippet,
    Widget,
    Badge,
    Busuanzi,
    Series,
    Top,
    Dashboard,
    Unknown,
}

impl Route {
    /// Every route (a new one joins this list), for the metrics that
    /// exist from the start.
    const ALL: [Route; 13] = [
        Route::Hit,
        Route::HitGif,
        Route::Counters,
        Route::Healthz,
        Route::Readyz,
        Route::Snippet,
        Route::Widget,
        Route::Badge,
        Route::Busuanzi,
        Route::Series,
        Route::Top,
        Route::Dashboard,
        Route::Unknown,
    ];

    fn label(self) -> &'static str {
        match self {
            Route::Hit => "hit",
            Route::HitGif => "hit_gif",
            Route::Counters => "counters",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Snippet => "snippet",
            Route::Series => "series",
            Route::Top => "top",
            Route::Dashboard => "dashboard",
            Route::Widget => "widget",
            Route::Badge => "badge",
            Route::Busuanzi => "busuanzi",
            Route::Unknown => "unknown",
        }
    }
}

/// The HTTP metrics with every route's series registered at 0, so that the
/// alerts' and the dashboard's `rate()` see a route's first error.
pub fn route_metrics() -> metrics::HttpMetrics {
    let m = metrics::HttpMetrics::new();
    for route in Route::ALL {
        m.prime(route.label());
    }
    m
}

fn route_of(path: &str) -> (Route, Option<&str>) {
    match path {
        "/hit" => (Route::Hit, None),
        "/hit.gif" => (Route::HitGif, None),
        "/healthz" => (Route::Healthz, None),
        "/readyz" => (Route::Readyz, None),
        "/luot.js" => (Route::Snippet, None),
        "/busuanzi" => (Route::Busuanzi, None),
        _ => {
            let one_segment = |s: &str| !s.is_empty() && !s.contains('/');
            if let Some(site) = path.strip_prefix("/widget/")
                && one_segment(site)
            {
                return (Route::Widget, Some(site));
            }
            if let Some(site) = path.strip_prefix("/dashboard/")
                && one_segment(site)
            {
                return (Route::Dashboard, Some(site));
            }
            if let Some(site) = path
                .strip_prefix("/badge/")
                .and_then(|rest| rest.strip_suffix(".svg"))
                && one_segment(site)
            {
                return (Route::Badge, Some(site));
            }
            if let Some(rest) = path.strip_prefix("/api/v1/sites/")
                && let Some((site, what)) = rest.split_once('/')
                && one_segment(site)
            {
                match what {
                    "counters" => return (Route::Counters, Some(site)),
                    "series" => return (Route::Series, Some(site)),
                    "top" => return (Route::Top, Some(site)),
                    _ => {}
                }
            }
            (Route::Unknown, None)
        }
    }
}

/// Answers one public request.
pub async fn handle_public(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let (route, site_param) = route_of(req.uri().path());
    let site_param = site_param.map(str::to_owned);
    let result = dispatch_public(&state, route, site_param, req, peer).await;
    let resp = result.unwrap_or_else(|e| e.response());
    state.http_metrics.record(
        route.label(),
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    Ok(resp)
}

/// The public routing table: which handler answers a route and method,
/// after the checks every request or every read passes (head size, the
/// read rate limit).
async fn dispatch_public(
    state: &State,
    route: Route,
    site_param: Option<String>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    // The rarely used routes are boxed: the future of every request is as
    // large as the largest route's, and hyper moves it a few times per
    // request (measured: 2.7 KB before).
    match (route, req.method()) {
        _ if head_too_large(state, &req) => Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "request headers exceed {} bytes or {} fields",
                state.max_header_bytes, state.max_headers
            ),
        )),
        (Route::Hit, &Method::POST) => post_hit(state, req, peer).await,
        (Route::Hit | Route::Counters, &Method::OPTIONS) => preflight(state, &req, site_param),
        (Route::HitGif, &Method::GET | &Method::HEAD) => Ok(hit_gif(state, &req, peer)),
        // Busuanzi's read is limited where its site is known (its Referer).
        (
            Route::Counters
            | Route::Widget
            | Route::Badge
            | Route::Series
            | Route::Top
            | Route::Dashboard,
            &Method::GET | &Method::HEAD,
        ) if !read_allowed(state, site_param.as_deref(), req.headers(), peer) => {
            Err(ApiError::read_limited())
        }
        (Route::Counters, &Method::GET | &Method::HEAD) => {
            counters(state, &req, site_param.as_deref().unwrap_or_default()).await
        }
        (Route::Healthz, &Method::GET | &Method::HEAD) => {
            Ok(json(StatusCode::OK, &Health { status: "ok" }))
        }
        (Route::Readyz, &Method::GET | &Method::HEAD) => Ok(Box::pin(readyz(state)).await),
        (Route::Snippet, &Method::GET | &Method::HEAD) => Ok(snippet::serve(state, req.headers())),
        (Route::Widget, &Method::GET | &Method::HEAD) => widget::serve(
            state,
            site_param.as_deref().unwrap_or_default(),
            req.uri().query(),
        ),
        (Route::Badge, &Method::GET | &Method::HEAD) => {
            Box::pin(badge::serve(
                state,
                site_param.as_deref().unwrap_or_default(),
                req.uri().query(),
            ))
            .await
        }
        // GET only: a busuanzi request counts a hit.
        (Route::Busuanzi, &Method::GET) => {
            Box::pin(busuanzi::serve(
                state,
                req.headers(),
                req.uri().query(),
                peer,
            ))
            .await
        }
        (Route::Series, &Method::GET | &Method::HEAD) => {
            Box::pin(history::series(
                state,
                site_param.as_deref().unwrap_or_default(),
                req.headers(),
                req.uri().query(),
            ))
            .await
        }
        (Route::Top, &Method::GET | &Method::HEAD) => {
            Box::pin(history::top(
                state,
                site_param.as_deref().unwrap_or_default(),
                req.headers(),
                req.uri().query(),
            ))
            .await
        }
        (Route::Dashboard, &Method::GET | &Method::HEAD) => {
            Box::pin(dashboard::serve(
                state,
                site_param.as_deref().unwrap_or_default(),
                req.headers(),
                req.uri().query(),
            ))
            .await
        }
        (Route::Unknown, _) => Err(ApiError::not_found()),
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// Whether the request head exceeds the configured limits.
fn head_too_large(state: &State, req: &Request<Incoming>) -> bool {
    let headers = req.headers();
    if headers.len() > state.max_headers {
        return true;
    }
    // Request line plus "name: value\r\n" per field, as sent.
    let uri = req.uri();
    let target = uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + 3);
    let line = req.method().as_str().len() + target + 12;
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    line + fields > state.max_header_bytes
}

/// Most body bytes read and thrown away to answer an oversized beacon
/// cleanly: clients that write the whole body before reading the answer
/// would otherwise see a reset instead of the 413.
const MAX_DISCARD: usize = 1 << 20;

/// Reads a body of at most `limit` bytes.
///
/// # Errors
/// 413 when the body is larger (after reading and discarding up to
/// [`MAX_DISCARD`] bytes of it), 400 when it cannot be read.
async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    let mut body = body;
    // A beacon arrives in one frame: keep hyper's buffer as it is, and copy
    // only when a body comes in pieces.
    let mut first: Option<Bytes> = None;
    let mut kept = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                "the request body could not be read",
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen <= limit {
            if first.is_none() && kept.is_empty() {
                first = Some(data);
            } else {
                if let Some(f) = first.take() {
                    kept.extend_from_slice(&f);
                }
                kept.extend_from_slice(&data);
            }
        } else if seen > MAX_DISCARD {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::body_too_large(limit));
    }
    Ok(first.unwrap_or_else(|| kept.freeze()))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let mut body = Vec::with_capacity(128);
    if serde_json::to_writer(&mut body, value).is_err() {
        body.clear();
    }
    json_bytes(status, body)
}

/// A JSON answer from bytes already written.
fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A rendered document (the dashboard, the widget, the badge): its type,
/// caching and content security policy, and never sniffed or sent a
/// referrer from.
fn document(
    body: String,
    content_type: &'static str,
    cache_control: &'static str,
    csp: &'static str,
) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Header names compared or looked up on every beacon, as constants: a
/// name given as a string is parsed at each use.
const X_FORWARDED_FOR: header::HeaderName = header::HeaderName::from_static("x-forwarded-for");
const SEC_GPC: header::HeaderName = header::HeaderName::from_static("sec-gpc");

/// Who sent a request: the client's address (behind trusted proxies, from
/// `X-Forwarded-For`), its User-Agent, DNT or GPC, Origin and Referer.
///
/// The fields are found in one pass over the head rather than looked up by
/// name one by one, which hashed each name (the six lookups took ~1,100
/// instructions a beacon; callgrind). Each takes its first value, as a
/// lookup does; `X-Forwarded-For` is looked up by name only when it comes
/// in several fields, to take them all in order.
fn sender<'r>(state: &State, headers: &'r HeaderMap, peer: SocketAddr) -> Sender<'r> {
    let (mut user_agent, mut dnt, mut gpc, mut origin, mut referer) =
        (None, None, None, None, None);
    // The first X-Forwarded-For field, and whether there are more (a proxy
    // chain may add its own): one field is taken from the pass, several
    // are looked up by name in order (~400 instructions a lookup).
    let (mut forwarded, mut forwarded_more) = (None, false);
    for (name, value) in headers {
        let slot = if *name == header::USER_AGENT {
            &mut user_agent
        } else if *name == X_FORWARDED_FOR {
            forwarded_more = forwarded.is_some();
            forwarded.get_or_insert(value);
            continue;
        } else if *name == header::ORIGIN {
            &mut origin
        } else if *name == header::REFERER {
            &mut referer
        } else if *name == header::DNT {
            &mut dnt
        } else if *name == SEC_GPC {
            &mut gpc
        } else {
            continue;
        };
        slot.get_or_insert(value);
    }
    let peer_ip = ingest::canonical(peer.ip());
    let ip = if forwarded_more {
        let all = headers.get_all(X_FORWARDED_FOR);
        ingest::client_ip(
            peer_ip,
            all.iter().map(HeaderValue::as_bytes),
            &state.trusted_proxies,
        )
    } else {
        let first = forwarded.map(HeaderValue::as_bytes);
        ingest::client_ip(peer_ip, first.into_iter(), &state.trusted_proxies)
    };
    let flag = |value: Option<&HeaderValue>| value.is_some_and(|v| v.as_bytes() == b"1");
    let text = |value: Option<&'r HeaderValue>| value.and_then(|v| v.to_str().ok());
    Sender {
        ip,
        user_agent: user_agent.map_or(&b""[..], HeaderValue::as_bytes),
        no_track: flag(dnt) || flag(gpc),
        origin: text(origin).filter(|o| *o != "null"),
        referer: text(referer),
    }
}

/// Adds CORS headers for `origin` when the site allows it.
fn allow_origin(resp: &mut Response<Body>, site: &Site, origin: Option<&str>) {
    let h = resp.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin
        && site.config.allows_origin(origin)
        && let Ok(v) = HeaderValue::from_str(origin)
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
}

/// Whether a read of site `id` from this client is within the site's read
/// limit ([`Site::read_limiter`]; the client address as beacons find it).
/// An unknown site is left to the route, which answers 404 and reads
/// nothing.
fn read_allowed(state: &State, id: Option<&str>, headers: &HeaderMap, peer: SocketAddr) -> bool {
    match id.and_then(|id| state.sites.load().get(id).cloned()) {
        Some(site) => site.read_limiter.allow(sender(state, headers, peer).ip),
        None => true,
    }
}

fn lookup(state: &State, id: &str) -> Result<Arc<Site>, ApiError> {
    state
        .sites
        .load()
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::from(ingest::unknown_site(id)))
}

async fn post_hit(
    state: &State,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let quiet = is_quiet(req.uri());
    let (parts, body) = req.into_parts();
    let limit = state.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_DISCARD as u64) {
        // Too large even to drain: answer now; the connection closes.
        state.counters.record(metrics::HitResult::Invalid);
        return Err(ApiError::body_too_large(limit));
    }
    let bytes = read_body(body, limit)
        .await
        .inspect_err(|_| state.counters.record(metrics::HitResult::Invalid))?;
    if quiet {
        return quiet_beacon(state, &parts.headers, &bytes, peer);
    }
    // Boxed: its future (a page read) is large, and would otherwise make
    // every request's future large, quiet ones included.
    Box::pin(answer_beacon(state, &parts.headers, &bytes, peer)).await
}

/// Counts a beacon and answers with the site's and the page's figures.
async fn answer_beacon(
    state: &State,
    headers: &HeaderMap,
    body: &[u8],
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let beacon = ingest::parse_body(body).inspect_err(|e| state.counters.record(e.result()))?;
    let sender = sender(state, headers, peer);
    let now = Timestamp::now();
    let (site, page) = count_beacon(state, &beacon, &sender, now, false)?;
    let mut resp = match page {
        None => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        // `json_bytes` marks it `no-store`.
        Some(CountedPage { name, kept }) => {
            let page_figures = state
                .reader
                .page_figures(&site, &name, now, kept, metrics::ReadRoute::Hit)
                .await;
            let site_figures = state.reader.site_figures(&site, now);
            json_bytes(
                StatusCode::OK,
                figures::beacon_answer(&site_figures, &page_figures),
            )
        }
    };
    allow_origin(&mut resp, &site, sender.origin);
    Ok(resp)
}

/// Whether a `/hit` query asks for a quiet answer (`quiet=1`).
///
/// A query without `%` or `+` decodes to itself, so its pairs are compared
/// as they are; any other query goes through the form decoder. The
/// decoder's `Cow` pairs cost ~650 instructions per beacon against ~60.
pub fn is_quiet(uri: &hyper::Uri) -> bool {
    uri.query().is_some_and(query_is_quiet)
}

fn query_is_quiet(query: &str) -> bool {
    let q = query.as_bytes();
    if q.iter().any(|&b| b == b'%' || b == b'+') {
        return form_urlencoded::parse(q).any(|(k, v)| k == "quiet" && v == "1");
    }
    q.split(|&b| b == b'&').any(|pair| pair == b"quiet=1")
}

/// Counts a beacon sent with `?quiet=1`, from the request's headers and body
/// bytes to the `204` answer.
///
/// This is the hot path of a page view; it allocates nothing once the page,
/// the visitor and the client are known (a test with a counting allocator
/// holds it to that). The answer carries no header unless the browser sent
/// an `Origin` that needs CORS headers.
///
/// # Errors
/// An [`ApiError`] when the beacon is refused.
pub fn quiet_beacon(
    state: &State,
    headers: &HeaderMap,
    body: &[u8],
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let beacon = ingest::parse_body(body).inspect_err(|e| state.counters.record(e.result()))?;
    let sender = sender(state, headers, peer);
    let (site, _) = count_beacon(state, &beacon, &sender, Timestamp::now(), true)?;
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    if sender.origin.is_some() {
        allow_origin(&mut resp, &site, sender.origin);
    }
    Ok(resp)
}

/// The page a beacon was counted on, for its answer.
struct CountedPage {
    /// The normalised page; the tally's own name for it when it keeps it.
    name: Arc<str>,
    /// The page's kept store reading when the tally keeps the page (`None`:
    /// look it up).
    kept: Option<Option<Kept>>,
}

/// Counts a beacon; returns the site and, unless `quiet`, the normalised
/// page (to read its figures for the answer).
fn count_beacon(
    state: &State,
    beacon: &Beacon<'_>,
    sender: &Sender<'_>,
    now: Timestamp,
    quiet: bool,
) -> Result<(Arc<Site>, Option<CountedPage>), ApiError> {
    let outcome = (|| {
        let id = ingest::site_id(beacon)?;
        let table = state.sites.load();
        let site = table.get(id).ok_or_else(|| ingest::unknown_site(id))?;
        let ingest = Ingest {
            identity: &state.identity,
            counters: &state.counters,
            bots: &state.bots,
        };
        let page = ingest.count(site, beacon, sender, now, |page, _, entry| {
            (!quiet).then(|| match entry {
                Some(entry) => CountedPage {
                    name: Arc::clone(entry.key),
                    kept: Some(entry.reading(now.as_millisecond(), state.reader.page_ttl())),
                },
                None => CountedPage {
                    name: Arc::from(page),
                    kept: None,
                },
            })
        })?;
        Ok::<_, IngestError>((Arc::clone(site), page))
    })();
    outcome.map_err(|e| {
        state.counters.record(e.result());
        ApiError::from(e)
    })
}

fn hit_gif(state: &State, req: &Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let beacon = ingest::parse_query(req.uri().query().unwrap_or_default());
    let sender = sender(state, req.headers(), peer);
    let result = count_beacon(state, &beacon, &sender, Timestamp::now(), true);
    let mut resp = Response::new(Full::new(Bytes::from_static(PIXEL_GIF)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache, must-revalidate, max-age=0"),
    );
    if let Err(e) = result {
        *resp.status_mut() = e.status;
        resp.headers_mut()
            .insert("x-luot-error", HeaderValue::from_static(e.code));
    }
    resp
}

async fn counters(
    state: &State,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let site = lookup(state, id)?;
    let origin = header_str(req.headers(), header::ORIGIN);
    let page = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "page")
            .map(|(_, v)| v.into_owned())
    });
    let now = Timestamp::now();
    let figures = match page {
        None => state.reader.site_figures(&site, now),
        Some(raw) => {
            let page: Arc<str> = crate::page::normalize(&raw, site.rules)
                .map_err(|e| ApiError::from(IngestError::BadPage(e)))?
                .into();
            state
                .reader
                .page_figures(&site, &page, now, None, metrics::ReadRoute::Counters)
                .await
        }
    };
    let mut resp = json_bytes(StatusCode::OK, figures::to_vec(&figures));
    allow_origin(&mut resp, &site, origin);
    Ok(resp)
}

fn preflight(
    state: &State,
    req: &Request<Incoming>,
    site_param: Option<String>,
) -> Result<Response<Body>, ApiError> {
    let origin = header_str(req.headers(), header::ORIGIN);
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    // A preflight does not say which site a beacon is for; allow an origin
    // that some declared site allows (the beacon itself is checked again).
    let allowed = origin.filter(|o| match &site_param {
        Some(id) => state
            .sites
            .load()
            .get(id)
            .is_some_and(|s| s.config.allows_origin(o)),
        None => state.sites.load().iter().any(|s| s.config.allows_origin(o)),
    });
    let h = resp.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(v) = allowed.and_then(|o| HeaderValue::from_str(o).ok()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
    }
    Ok(resp)
}

async fn readyz(state: &State) -> Response<Body> {
    #[derive(Serialize)]
    struct Ready<'a> {
        ready: bool,
        store: &'a str,
        reason: Option<&'a str>,
    }
    let reason = if !state.ready.load(Ordering::Acquire) {
        Some("starting or draining")
    } else {
        match tokio::time::timeout(std::time::Duration::from_secs(1), state.store.ping()).await {
            Ok(Ok(())) => None,
            _ => Some("store unreachable"),
        }
    };
    let status = if reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        &Ready {
            ready: reason.is_none(),
            store: state.store.kind(),
            reason,
        },
    )
}

/// Answers one admin request (`/metrics`, `/healthz`).
pub async fn handle_admin(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let authorised = match &state.metrics_token {
        None => true,
        Some(token) => req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes())),
    };
    let path = req.uri().path().to_owned();
    let export_site = path
        .strip_prefix("/admin/v1/sites/")
        .and_then(|rest| rest.strip_suffix("/export"))
        .filter(|s| !s.is_empty() && !s.contains('/'))
        .map(str::to_owned);
    let resp = match (req.method(), path.as_str()) {
        (&Method::POST, "/admin/v1/import") | (&Method::GET, _)
            if !authorised && (path.starts_with("/admin/") || path == "/metrics") =>
        {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a bearer token is required on the admin listener",
            )
            .response()
        }
        (&Method::POST, "/admin/v1/import") => admin::import(&state, req)
            .await
            .unwrap_or_else(|e| e.response()),
        (&Method::GET, _) if export_site.is_some() => admin::export(
            &state,
            export_site.as_deref().unwrap_or_default(),
            req.uri().query(),
        )
        .await
        .unwrap_or_else(|e| e.response()),
        (&Method::GET, "/metrics") => {
            if authorised {
                let mut r = Response::new(Full::new(Bytes::from(state.prometheus.render())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            } else {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "a bearer token is required for /metrics",
                )
                .response()
            }
        }
        (&Method::GET, "/healthz") => json(StatusCode::OK, &Health { status: "ok" }),
        _ => ApiError::not_found().response(),
    };
    Ok(resp)
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Marks the service not ready (draining).
pub fn set_ready(state: &State, ready: bool) {
    state.ready.store(ready, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decoded_quiet(query: &str) -> bool {
        form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "quiet" && v == "1")
    }

    #[test]
    fn quiet_is_read_from_plain_and_encoded_queries() {
        for (query, quiet) in [
            ("quiet=1", true),
            ("a=b&quiet=1", true),
            ("quiet=1&quiet=0", true),
            ("quiet=0", false),
            ("quiet=10", false),
            ("quiet", false),
            ("xquiet=1", false),
            ("quiet=%31", true),
            ("qu%69et=1", true),
            ("quiet=1+", false),
            ("", false),
        ] {
            assert_eq!(query_is_quiet(query), quiet, "{query:?}");
        }
    }

    proptest! {
        /// The plain-query shortcut decides as the form decoder does.
        #[test]
        fn quiet_shortcut_agrees_with_the_decoder(
            query in "((quiet|qu%69et|q|a)(=(1|0|%31|1\\+|))?&?){0,4}",
        ) {
            prop_assert_eq!(query_is_quiet(&query), decoded_quiet(&query));
        }
    }

    #[test]
    fn routes_are_recognised() {
        assert_eq!(route_of("/hit").0, Route::Hit);
        assert_eq!(route_of("/hit.gif").0, Route::HitGif);
        assert_eq!(
            route_of("/api/v1/sites/demo/counters"),
            (Route::Counters, Some("demo"))
        );
        assert_eq!(route_of("/api/v1/sites//counters").0, Route::Unknown);
        assert_eq!(route_of("/api/v1/sites/a/b/counters").0, Route::Unknown);
        assert_eq!(route_of("/nope").0, Route::Unknown);
        assert_eq!(route_of("/luot.js").0, Route::Snippet);
        assert_eq!(route_of("/busuanzi").0, Route::Busuanzi);
        assert_eq!(route_of("/widget/demo"), (Route::Widget, Some("demo")));
        assert_eq!(route_of("/widget/").0, Route::Unknown);
        assert_eq!(route_of("/widget/a/b").0, Route::Unknown);
        assert_eq!(route_of("/badge/demo.svg"), (Route::Badge, Some("demo")));
        assert_eq!(route_of("/badge/.svg").0, Route::Unknown);
        assert_eq!(route_of("/badge/demo").0, Route::Unknown);
        assert_eq!(route_of("/badge/a/b.svg").0, Route::Unknown);
        assert_eq!(
            route_of("/dashboard/demo"),
            (Route::Dashboard, Some("demo"))
        );
        assert_eq!(route_of("/dashboard/").0, Route::Unknown);
        assert_eq!(route_of("/dashboard/a/b").0, Route::Unknown);
    }

    #[test]
    fn every_listed_route_is_served_by_the_router() {
        for (_, path) in PUBLIC_ROUTES {
            let concrete = path.replace("{site}", "demo");
            assert_ne!(route_of(&concrete).0, Route::Unknown, "{path}");
        }
    }

    #[test]
    fn pixel_is_a_gif() {
        assert!(PIXEL_GIF.starts_with(b"GIF89a"));
        assert_eq!(PIXEL_GIF.last(), Some(&0x3b));
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn ingest_errors_map_to_their_statuses() {
        let cases = [
            (IngestError::Malformed("x".into()), 400),
            (IngestError::MissingSite, 400),
            (IngestError::UnknownSite("x".into()), 404),
            (IngestError::ForbiddenOrigin("x".into()), 403),
            (IngestError::BadPage(crate::page::PageError::NotAPath), 400),
        ];
        for (e, status) in cases {
            assert_eq!(ApiError::from(e).status.as_u16(), status);
        }
    }
}

#[cfg(test)]
mod openapi_tests {
    use super::PUBLIC_ROUTES;

    const OPENAPI: &str = include_str!("../../deploy/openapi.yaml");

    /// The methods documented under `path` in the OpenAPI document.
    fn documented_methods(path: &str) -> Vec<String> {
        let header = format!("  {path}:");
        let mut lines = OPENAPI.lines().skip_while(|l| *l != header);
        if lines.next().is_none() {
            return Vec::new();
        }
        lines
            .take_while(|l| l.starts_with("    ") || l.is_empty())
            .filter(|l| !l.starts_with("     ") && l.ends_with(':'))
            .map(|l| l.trim().trim_end_matches(':').to_string())
            .collect()
    }

    #[test]
    fn every_public_route_is_in_the_openapi_document() {
        for (method, path) in PUBLIC_ROUTES {
            let methods = documented_methods(path);
            assert!(
                methods.iter().any(|m| m.eq_ignore_ascii_case(method)),
                "{method} {path} is missing from deploy/openapi.yaml (documented: {methods:?})"
            );
        }
    }

    #[test]
    fn the_check_notices_a_missing_route() {
        assert!(documented_methods("/no-such-route").is_empty());
    }
}
