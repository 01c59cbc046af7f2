//! HTTP: the public routes (beacons, figures, health) and the admin routes
//! (metrics, import, export), the mapping of every error to a status and a
//! JSON body, CORS.
//!
//! Handlers are thin: they take borrowed parts of the request to `ingest`
//! and `read`, and turn the result into a response. One function,
//! [`ApiError::response`], maps errors to statuses.
//!
//! This file holds what the handlers share ([`State`]) and the routers:
//! [`handle_public`] (which route a request is for, `PUBLIC_ROUTES`, and
//! the checks every request or every read passes) and [`handle_admin`].
//! The rest is one concept a file:
//!
//! - `error`: [`ApiError`], its JSON answer and `From<IngestError>`;
//! - `body`: a request's head and body within their size limits;
//! - `answer`: the JSON and document answers routes share;
//! - `sender`: who sent a request (client address behind trusted proxies,
//!   User-Agent, DNT or GPC, Origin, Referer);
//! - `cors`: CORS headers and preflights;
//! - `beacon`: `/hit` and `/hit.gif`, counting a beacon, and the hot path
//!   of a page view, [`quiet_beacon`];
//! - `counters`: `/api/v1/sites/{site}/counters`;
//! - `pages`: `/api/v1/sites/{site}/pages`, many pages' figures and
//!   titles at once, for listing pages;
//! - `health`: `/healthz`, `/readyz` and the readiness flag.
//!
//! The faces readers see live in [`faces`]: the snippet (`/luot.js`), the
//! widget (`/widget/{site}`), the badge (`/badge/{site}.svg`), busuanzi
//! (`/busuanzi`, JSONP), the own-visits page (`/ignore/{site}`) and the
//! figures' JSON writer; [`text`] holds the
//! number formatting and query parameters they and the owner's pages
//! share. The owner's side lives in [`owner`]: history (series and top
//! pages, and the read-token rule), breakdowns, the dashboard (`/dashboard/{site}`)
//! and the admin listener's import and export. [`server`] runs the
//! listeners. `faces` and `owner` import from here what their files take
//! from the router (named there as `super::…`).
//!
//! May use every stage below it: `ingest` (to count), `read` (figures),
//! `flush::import` (the import queue), `site`, `count`, `store` (the trait,
//! through the store the app hands it in [`State`]) and the bottom. Only
//! `app` and `cli` sit above it.

mod answer;
mod beacon;
mod body;
mod cors;
mod counters;
mod error;
pub mod faces;
mod health;
pub mod owner;
pub mod pages;
mod sender;
pub mod server;
pub mod text;

pub use beacon::{PIXEL_GIF, is_quiet, quiet_beacon};
pub use error::ApiError;
pub use health::set_ready;

// The helpers the routers here, the faces and the owner's routes share.
use answer::{document, json};
use beacon::{count_beacon, hit_gif, post_hit};
use body::head_too_large;
use cors::preflight;
use counters::counters;
use faces::{badge, busuanzi, ignore, snippet, widget};
use health::{Health, readyz};
use owner::{admin, breakdown, dashboard, history, online};
use sender::{header_str, sender};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use ipnet::IpNet;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::count::visitor::Identity;
use crate::ingest;
use crate::ingest::bots::BotDetector;
use crate::ingest::classify::Classifier;
use crate::metrics::{self, HitCounters};
use crate::read::Reader;
use crate::site::{Site, Sites};
use crate::store::AnyStore;

/// The response body type of every route.
pub type Body = Full<Bytes>;

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
    ("GET", "/widget/{site}/top"),
    ("GET", "/badge/{site}.svg"),
    ("GET", "/busuanzi"),
    ("GET", "/api/v1/sites/{site}/series"),
    ("GET", "/api/v1/sites/{site}/top"),
    ("GET", "/api/v1/sites/{site}/breakdown"),
    ("GET", "/api/v1/sites/{site}/online"),
    ("GET", "/dashboard/{site}"),
    ("GET", "/ignore/{site}"),
    ("GET", "/api/v1/sites/{site}/pages"),
    ("OPTIONS", "/api/v1/sites/{site}/pages"),
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
    /// Finds each counted hit's dimensions (source, device, …).
    pub classifier: Classifier,
    /// Recent `/pages` answers (a front page asks the same for everyone).
    pub listing_answers: pages::ListingAnswers,
    pub trusted_proxies: Vec<IpNet>,
    /// `server.country_header`, believed only from `trusted_proxies`;
    /// `None` when empty.
    pub country_header: Option<hyper::header::HeaderName>,
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
    WidgetTop,
    Badge,
    Busuanzi,
    Series,
    Top,
    Breakdown,
    Online,
    Dashboard,
    Ignore,
    Pages,
    Unknown,
}

impl Route {
    /// Every route (a new one joins this list), for the metrics that
    /// exist from the start.
    const ALL: [Route; 18] = [
        Route::Hit,
        Route::HitGif,
        Route::Counters,
        Route::Healthz,
        Route::Readyz,
        Route::Snippet,
        Route::Widget,
        Route::WidgetTop,
        Route::Badge,
        Route::Busuanzi,
        Route::Series,
        Route::Top,
        Route::Breakdown,
        Route::Online,
        Route::Dashboard,
        Route::Ignore,
        Route::Pages,
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
            Route::Breakdown => "breakdown",
            Route::Online => "online",
            Route::Dashboard => "dashboard",
            Route::Widget => "widget",
            Route::WidgetTop => "widget_top",
            Route::Badge => "badge",
            Route::Busuanzi => "busuanzi",
            Route::Ignore => "ignore",
            Route::Pages => "pages",
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
            if let Some(site) = path
                .strip_prefix("/widget/")
                .and_then(|rest| rest.strip_suffix("/top"))
                && one_segment(site)
            {
                return (Route::WidgetTop, Some(site));
            }
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
            if let Some(site) = path.strip_prefix("/ignore/")
                && one_segment(site)
            {
                return (Route::Ignore, Some(site));
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
                    "breakdown" => return (Route::Breakdown, Some(site)),
                    "pages" => return (Route::Pages, Some(site)),
                    "online" => return (Route::Online, Some(site)),
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
        (Route::Hit | Route::Counters | Route::Pages, &Method::OPTIONS) => {
            preflight(state, &req, site_param)
        }
        (Route::HitGif, &Method::GET | &Method::HEAD) => Ok(hit_gif(state, &req, peer)),
        // Busuanzi's read is limited where its site is known (its Referer).
        (
            Route::Counters
            | Route::Widget
            | Route::WidgetTop
            | Route::Badge
            | Route::Series
            | Route::Top
            | Route::Breakdown
            | Route::Online
            | Route::Dashboard
            | Route::Pages,
            &Method::GET | &Method::HEAD,
        ) if !read_allowed(state, site_param.as_deref(), req.headers(), peer) => {
            Err(ApiError::read_limited())
        }
        (Route::Counters, &Method::GET | &Method::HEAD) => {
            counters(state, &req, site_param.as_deref().unwrap_or_default()).await
        }
        (Route::Pages, &Method::GET | &Method::HEAD) => {
            Box::pin(pages::pages(
                state,
                &req,
                site_param.as_deref().unwrap_or_default(),
            ))
            .await
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
        (Route::WidgetTop, &Method::GET | &Method::HEAD) => {
            Box::pin(faces::top::serve(
                state,
                site_param.as_deref().unwrap_or_default(),
                req.uri().query(),
            ))
            .await
        }
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
        (Route::Breakdown, &Method::GET | &Method::HEAD) => {
            Box::pin(breakdown::serve(
                state,
                site_param.as_deref().unwrap_or_default(),
                req.headers(),
                req.uri().query(),
            ))
            .await
        }
        (Route::Online, &Method::GET | &Method::HEAD) => online::serve(
            state,
            site_param.as_deref().unwrap_or_default(),
            req.headers(),
            req.uri().query(),
        ),
        (Route::Dashboard, &Method::GET | &Method::HEAD) => {
            Box::pin(dashboard::serve(
                state,
                site_param.as_deref().unwrap_or_default(),
                req.headers(),
                req.uri().query(),
            ))
            .await
        }
        (Route::Ignore, &Method::GET | &Method::HEAD) => ignore::serve(
            state,
            site_param.as_deref().unwrap_or_default(),
            req.uri().query(),
        ),
        (Route::Unknown, _) => Err(ApiError::not_found()),
        _ => Err(ApiError::method_not_allowed()),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(route_of("/ignore/demo"), (Route::Ignore, Some("demo")));
        assert_eq!(route_of("/ignore/").0, Route::Unknown);
        assert_eq!(route_of("/ignore/a/b").0, Route::Unknown);
    }

    #[test]
    fn every_listed_route_is_served_by_the_router() {
        for (_, path) in PUBLIC_ROUTES {
            let concrete = path.replace("{site}", "demo");
            assert_ne!(route_of(&concrete).0, Route::Unknown, "{path}");
        }
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
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
