//! `GET /badge/{site}.svg`: a shields-style SVG badge, "visits | 9,356,665".
//!
//! Two coloured halves whose widths follow the text (an approximation of
//! Verdana 11 px, with `textLength` so the text always fits its half).
//! The label and colour come from the query and are checked, or escaped by
//! `escape_xml`, before they reach the SVG; the answer also forbids
//! scripts outright, in case someone opens the badge as a document. This
//! module reads figures; it never counts.

use std::borrow::Cow;
use std::fmt::Write;

use hyper::{Response, StatusCode};
use jiff::Timestamp;

use super::text::{group, query_param};
use super::{ApiError, Body, State, lookup};
use crate::ingest::IngestError;

/// The longest `?label=`, in characters.
pub const MAX_LABEL_CHARS: usize = 40;
/// The value half's colour unless `?color=` names another.
const DEFAULT_COLOR: &str = "007ec6";
/// The label half's colour.
const LABEL_COLOR: &str = "555";
/// Short: a badge on a README is fetched through caching proxies.
const CACHE_CONTROL: &str = "public, max-age=60";
/// An SVG opened as a document runs no script and loads nothing.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'";

/// Colour names accepted by `?color=`, as shields.io spells them.
const NAMED_COLORS: &[(&str, &str)] = &[
    ("brightgreen", "4c1"),
    ("green", "97ca00"),
    ("yellowgreen", "a4a61d"),
    ("yellow", "dfb317"),
    ("orange", "fe7d37"),
    ("red", "e05d44"),
    ("blue", "007ec6"),
    ("lightgrey", "9f9f9f"),
    ("grey", "555"),
    ("success", "4c1"),
    ("important", "fe7d37"),
    ("critical", "e05d44"),
    ("informational", "007ec6"),
];

/// Which figure the badge shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Period {
    Total,
    Today,
    Yesterday,
    Week,
    Month,
    Online,
}

impl Period {
    fn parse(text: &str) -> Option<Period> {
        Some(match text {
            "total" => Period::Total,
            "today" => Period::Today,
            "yesterday" => Period::Yesterday,
            "week" => Period::Week,
            "month" => Period::Month,
            "online" => Period::Online,
            _ => return None,
        })
    }

    fn default_label(self) -> &'static str {
        match self {
            Period::Total => "visits",
            Period::Today => "visits today",
            Period::Yesterday => "visits yesterday",
            Period::Week => "visits this week",
            Period::Month => "visits this month",
            Period::Online => "online",
        }
    }
}

fn bad(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_parameter", message)
}

/// The colour for `?color=`: 3 or 6 hex digits (a leading `#` allowed) or
/// a known name; anything else gives the default, so a typo still shows a
/// badge.
fn color(param: Option<&str>) -> String {
    let Some(given) = param.map(|c| c.trim_start_matches('#')) else {
        return DEFAULT_COLOR.to_string();
    };
    if matches!(given.len(), 3 | 6) && given.bytes().all(|b| b.is_ascii_hexdigit()) {
        return given.to_ascii_lowercase();
    }
    NAMED_COLORS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(given))
        .map_or(DEFAULT_COLOR, |(_, hex)| hex)
        .to_string()
}

/// Answers `GET /badge/{site}.svg`.
///
/// # Errors
/// 404 for an undeclared site; 400 for an unknown `period`, a `label`
/// over 40 characters, or a `page` that is not a page.
pub async fn serve(
    state: &State,
    id: &str,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let site = lookup(state, id)?;
    let period = match query_param(query, "period") {
        None => Period::Total,
        Some(p) => Period::parse(&p).ok_or_else(|| {
            bad("`period` must be total, today, yesterday, week, month or online")
        })?,
    };
    let label = match query_param(query, "label") {
        Some(l) if l.chars().count() > MAX_LABEL_CHARS => {
            return Err(bad("`label` is longer than 40 characters"));
        }
        Some(l) => l.into_owned(),
        None => period.default_label().to_string(),
    };
    let color = color(query_param(query, "color").as_deref());
    let now = Timestamp::now();
    let figures = match query_param(query, "page") {
        None => state.reader.site_figures(&site, now),
        Some(raw) => {
            let page: std::sync::Arc<str> = crate::page::normalize(&raw, site.rules)
                .map_err(|e| ApiError::from(IngestError::BadPage(e)))?
                .into();
            state
                .reader
                .page_figures(&site, &page, now, None, crate::metrics::ReadRoute::Badge)
                .await
        }
    };
    let value = match period {
        Period::Total => figures.total,
        Period::Today => figures.today,
        Period::Yesterday => figures.yesterday,
        Period::Week => figures.week,
        Period::Month => figures.month,
        Period::Online => figures.online.unwrap_or(0),
    };
    let svg = render(&label, &group(value, ','), &color);
    Ok(super::document(svg, "image/svg+xml", CACHE_CONTROL, CSP))
}

/// Escapes `text` for XML text and quoted attribute values (`&`, `<`, `>`,
/// `"`, `'`). Control characters other than tab and line breaks are
/// dropped: XML 1.0 cannot carry them at all, and one would turn the badge
/// into an XML error.
///
/// The badge is the one face not written with maud, whose escaper is for
/// HTML: it leaves control characters in (HTML carries them; XML does
/// not), and it cannot write the self-closing elements an SVG served as
/// `image/svg+xml` needs (`<stop/>`; its void elements end in `>`).
fn escape_xml(text: &str) -> Cow<'_, str> {
    let needs = |c: char| matches!(c, '&' | '<' | '>' | '"' | '\'') || is_forbidden(c);
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if is_forbidden(c) => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn is_forbidden(c: char) -> bool {
    (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
}

/// The advance width of `c` in Verdana at 11 px, roughly: close enough
/// that `textLength` never squeezes or stretches text visibly.
fn char_width(c: char) -> f64 {
    match c {
        ' ' => 3.9,
        'i' | 'l' | 'j' | '|' | '!' | '\'' | '.' | ',' | ':' | ';' => 3.6,
        'f' | 't' | 'r' | 'I' | '(' | ')' | '[' | ']' | '-' | '/' => 4.6,
        'm' | 'M' | 'W' | '@' | '%' => 10.0,
        'w' => 9.0,
        '0'..='9' => 7.0,
        'a'..='z' | '_' | '#' | '$' | '?' | '*' | '"' => 6.6,
        'A'..='Z' | '&' | '+' | '=' | '<' | '>' | '~' => 7.6,
        c if c.is_ascii() => 6.6,
        // East Asian wide characters take about a full em.
        c if c as u32 >= 0x1100 => 11.0,
        // Latin with diacritics (Vietnamese), Greek, Cyrillic…
        _ => 7.0,
    }
}

fn text_width(text: &str) -> f64 {
    text.chars().map(char_width).sum()
}

/// The badge for `label` and `value` (both plain text; escaped here) on a
/// value half of colour `color` (3 or 6 hex digits).
fn render(label: &str, value: &str, color: &str) -> String {
    const PADDING: f64 = 10.0;
    let label_text = text_width(label);
    let value_text = text_width(value);
    let left = (label_text + PADDING).round();
    let right = (value_text + PADDING).round();
    let width = left + right;
    let title = format!("{label}: {value}");
    let (label, value, title) = (escape_xml(label), escape_xml(value), escape_xml(&title));
    let label_x = left / 2.0;
    let value_x = left + right / 2.0;
    let mut svg = String::with_capacity(1200);
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"20\" role=\"img\" aria-label=\"{title}\">\
<title>{title}</title>\
<linearGradient id=\"s\" x2=\"0\" y2=\"100%\"><stop offset=\"0\" stop-color=\"#bbb\" stop-opacity=\".1\"/><stop offset=\"1\" stop-opacity=\".1\"/></linearGradient>\
<clipPath id=\"r\"><rect width=\"{width}\" height=\"20\" rx=\"3\" fill=\"#fff\"/></clipPath>\
<g clip-path=\"url(#r)\"><rect width=\"{left}\" height=\"20\" fill=\"#{LABEL_COLOR}\"/>\
<rect x=\"{left}\" width=\"{right}\" height=\"20\" fill=\"#{color}\"/>\
<rect width=\"{width}\" height=\"20\" fill=\"url(#s)\"/></g>\
<g fill=\"#fff\" text-anchor=\"middle\" font-family=\"Verdana,Geneva,DejaVu Sans,sans-serif\" font-size=\"11\">\
<text x=\"{label_x}\" y=\"15\" fill=\"#010101\" fill-opacity=\".3\" textLength=\"{label_text:.1}\">{label}</text>\
<text x=\"{label_x}\" y=\"14\" textLength=\"{label_text:.1}\">{label}</text>\
<text x=\"{value_x}\" y=\"15\" fill=\"#010101\" fill-opacity=\".3\" textLength=\"{value_text:.1}\">{value}</text>\
<text x=\"{value_x}\" y=\"14\" textLength=\"{value_text:.1}\">{value}</text>\
</g></svg>"
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes_and_drops_controls() {
        assert_eq!(escape_xml("plain"), "plain");
        assert!(matches!(escape_xml("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape_xml(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape_xml("a\u{0}b\u{1b}c\td"), "abc\td");
        assert_eq!(escape_xml("Lượt Truy Cập"), "Lượt Truy Cập");
    }

    #[test]
    fn colours_are_hex_or_known_names_else_the_default() {
        assert_eq!(color(None), DEFAULT_COLOR);
        assert_eq!(color(Some("ABC")), "abc");
        assert_eq!(color(Some("#00ff00")), "00ff00");
        assert_eq!(color(Some("Red")), "e05d44");
        assert_eq!(color(Some("12345")), DEFAULT_COLOR);
        assert_eq!(color(Some("red\" onload=\"x")), DEFAULT_COLOR);
        assert_eq!(color(Some("url(#x)")), DEFAULT_COLOR);
    }

    #[test]
    fn the_badge_escapes_its_label_and_grows_with_it() {
        let short = render("visits", "9,356,665", "4c1");
        assert!(short.contains(">visits</text>"));
        assert!(short.contains(">9,356,665</text>"));
        assert!(short.contains("aria-label=\"visits: 9,356,665\""));
        let hostile = render("<script>alert(1)</script>\"&'", "1", "4c1");
        assert!(!hostile.contains("<script"));
        assert!(hostile.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&amp;&#39;"));
        let width = |svg: &str| -> f64 {
            let start = svg.find("width=\"").unwrap() + 7;
            svg[start..start + svg[start..].find('"').unwrap()]
                .parse()
                .unwrap()
        };
        assert!(
            width(&render("a much longer label", "1", "4c1")) > width(&render("a", "1", "4c1"))
        );
    }

    #[test]
    fn periods_parse_and_name_themselves() {
        assert_eq!(Period::parse("today"), Some(Period::Today));
        assert_eq!(Period::parse("Today"), None);
        assert_eq!(Period::Total.default_label(), "visits");
    }
}
