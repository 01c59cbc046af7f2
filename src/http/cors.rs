//! CORS: [`allow_origin`] (an answer's `Access-Control-Allow-Origin` when
//! the site allows the request's `Origin`), [`allow_amp`] (the same for a
//! figures answer read by an AMP page, with AMP's source-origin protocol)
//! and [`preflight`] (`OPTIONS` on `/hit` and on a site's counters).
//!
//! Which origins a site allows is its configuration's to say; this file
//! only writes the headers, and knows how an AMP cache names a site's
//! origin.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::sender::header_str;
use super::{ApiError, Body, State};
use crate::site::Site;

/// Adds CORS headers for `origin` when the site allows it.
pub(super) fn allow_origin(resp: &mut Response<Body>, site: &Site, origin: Option<&str>) {
    let h = resp.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin
        && site.config.allows_origin(origin)
        && let Ok(v) = HeaderValue::from_str(origin)
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
}

/// The AMP runtime's answer header naming the source origin it may read.
const AMP_SOURCE_ORIGIN: header::HeaderName =
    header::HeaderName::from_static("amp-access-control-allow-source-origin");

/// CORS for figures an AMP page reads (`amp-list`), following AMP's CORS
/// protocol (amp.dev, "CORS in AMP"):
///
/// - With `__amp_source_origin=<src>` (older runtimes send it on every
///   fetch): when `src` is one of the site's `origins` (or they are
///   `["*"]`) and the request comes from an AMP cache
///   (`https://*.cdn.ampproject.org`), from `src` itself, from an origin the
///   site allows, or from no origin at all (`AMP-Same-Origin: true`), the
///   answer carries `AMP-Access-Control-Allow-Source-Origin: <src>`
///   (exposed to the runtime) and `Access-Control-Allow-Origin: <Origin>`;
///   otherwise neither.
/// - Without it: the site's `origins` as for any read, plus the AMP cache
///   origin of each of them (`https://news.example` is read from
///   `https://news-example.cdn.ampproject.org`).
pub(super) fn allow_amp(
    resp: &mut Response<Body>,
    site: &Site,
    origin: Option<&str>,
    source_origin: Option<&str>,
) {
    let Some(source) = source_origin else {
        if let Some(origin) = origin
            && !site.config.allows_origin(origin)
            && site
                .config
                .origins
                .iter()
                .any(|o| is_amp_cache_of(origin, o))
        {
            let h = resp.headers_mut();
            h.append(header::VARY, HeaderValue::from_static("Origin"));
            if let Ok(v) = HeaderValue::from_str(origin) {
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            }
            return;
        }
        return allow_origin(resp, site, origin);
    };
    let h = resp.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    let origin_ok = origin.is_none_or(|o| {
        is_amp_cache(o) || o.eq_ignore_ascii_case(source) || site.config.allows_origin(o)
    });
    if !(origin_ok && site.config.allows_origin(source)) {
        return;
    }
    let Ok(source) = HeaderValue::from_str(source) else {
        return;
    };
    if let Some(v) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(AMP_SOURCE_ORIGIN, source);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("AMP-Access-Control-Allow-Source-Origin"),
    );
}

/// Google's AMP cache: `https://cdn.ampproject.org` and its subdomains.
const AMP_CACHE_DOMAIN: &str = "cdn.ampproject.org";

/// Whether `origin` is an AMP cache's (`https://*.cdn.ampproject.org`).
fn is_amp_cache(origin: &str) -> bool {
    let Some(host) = strip_prefix_ignore_case(origin, "https://") else {
        return false;
    };
    if host.eq_ignore_ascii_case(AMP_CACHE_DOMAIN) {
        return true;
    }
    host.len() > AMP_CACHE_DOMAIN.len() + 1
        && host.is_char_boundary(host.len() - AMP_CACHE_DOMAIN.len() - 1)
        && {
            let (sub, domain) = host.split_at(host.len() - AMP_CACHE_DOMAIN.len() - 1);
            domain[1..].eq_ignore_ascii_case(AMP_CACHE_DOMAIN)
                && domain.starts_with('.')
                && !sub.contains(['.', '/', ':', '@'])
        }
}

/// Whether `cache` is the AMP cache origin of the publisher origin
/// `publisher` (`https://host`, no port): the cache's subdomain is the
/// host with each `-` doubled and each `.` made a `-`, wrapped in `0-` …
/// `-0` when that puts a `-` in its 3rd and 4th places. Hosts whose
/// subdomain would pass 63 characters, or international ones, get a
/// hashed subdomain from the cache; such an origin is listed in the site's
/// `origins` as it is.
fn is_amp_cache_of(cache: &str, publisher: &str) -> bool {
    let Some(host) = strip_prefix_ignore_case(publisher, "https://") else {
        return false;
    };
    if host.is_empty() || host.contains([':', '/']) || !is_amp_cache(cache) {
        return false;
    }
    let mut sub = String::with_capacity(host.len() + 8);
    for c in host.chars() {
        match c {
            '-' => sub.push_str("--"),
            '.' => sub.push('-'),
            c => sub.push(c.to_ascii_lowercase()),
        }
    }
    if sub.as_bytes().get(2..4) == Some(b"--") {
        sub = format!("0-{sub}-0");
    }
    sub.len() <= 63
        && strip_prefix_ignore_case(cache, "https://").is_some_and(|h| {
            h.len() == sub.len() + 1 + AMP_CACHE_DOMAIN.len()
                && h.is_char_boundary(sub.len())
                && h[..sub.len()].eq_ignore_ascii_case(&sub)
        })
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    (text.len() >= prefix.len()
        && text.is_char_boundary(prefix.len())
        && text[..prefix.len()].eq_ignore_ascii_case(prefix))
    .then(|| &text[prefix.len()..])
}

pub(super) fn preflight(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amp_cache_origins_are_recognised() {
        for (origin, cache) in [
            ("https://news-example.cdn.ampproject.org", true),
            ("https://NEWS-example.CDN.ampproject.org", true),
            ("https://cdn.ampproject.org", true),
            ("https://a.b.cdn.ampproject.org", false),
            ("http://news-example.cdn.ampproject.org", false),
            ("https://evilcdn.ampproject.org", false),
            ("https://news-example.cdn.ampproject.org.evil", false),
            ("https://news.example", false),
            ("https://.cdn.ampproject.org", false),
        ] {
            assert_eq!(is_amp_cache(origin), cache, "{origin}");
        }
    }

    #[test]
    fn a_publisher_origin_maps_to_its_cache_subdomain() {
        for (cache, publisher, yes) in [
            (
                "https://example-com.cdn.ampproject.org",
                "https://example.com",
                true,
            ),
            (
                "https://news-example.cdn.ampproject.org",
                "https://news.example",
                true,
            ),
            (
                "https://tin--tuc-vn.cdn.ampproject.org",
                "https://tin-tuc.vn",
                true,
            ),
            (
                "https://0-ab--cd-com-0.cdn.ampproject.org",
                "https://ab-cd.com",
                true,
            ),
            (
                "https://ab--cd-com.cdn.ampproject.org",
                "https://ab-cd.com",
                false,
            ),
            (
                "https://www-example-com.cdn.ampproject.org",
                "https://example.com",
                false,
            ),
            (
                "https://example-com.cdn.ampproject.org",
                "http://example.com",
                false,
            ),
            (
                "https://example-com.cdn.ampproject.org",
                "https://example.com:8443",
                false,
            ),
            ("https://example-com.evil.org", "https://example.com", false),
            ("https://example-com.cdn.ampproject.org", "*", false),
        ] {
            assert_eq!(
                is_amp_cache_of(cache, publisher),
                yes,
                "{cache} for {publisher}"
            );
        }
    }
}
