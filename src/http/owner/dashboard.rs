//! `GET /dashboard/{site}`: the owner's page — the six figures and unique
//! visitors, a 30-day chart of hits and visitors, a 12-month chart, the
//! most-read pages today and this week, online now refreshed every 30 s,
//! and [`panels`]: "Đang đọc" (pages read now, every 10 s, and the hour's
//! online) and the breakdowns (sources, campaigns, devices, browsers,
//! systems, countries) over a period the reader picks.
//!
//! One self-contained HTML page: its CSS (`assets/dashboard.css`) and
//! script (`assets/dashboard.js`) are inline and it loads nothing else. The
//! figures are rendered here by maud templates, which escape every value
//! they splice; the series and top lists travel in the page
//! as JSON (`<script type="application/json">`, with `<`, `>` and `&`
//! escaped) and the script draws the charts as inline SVG and the lists
//! with `textContent`, so a hostile page path stays text. Every 30 s the
//! script reads `/counters` (public) and every 5 minutes the series and
//! top lists, with the `?token=` the page was opened with as a bearer
//! token. A site with `public = false` needs that token for the page
//! itself too ([`history::authorize`]). This module reads; it never counts.

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use jiff::Timestamp;
use maud::{Markup, PreEscaped, html};
use serde::Serialize;

use super::history::{self, Point, period_named, series_points};
use super::panels;
use super::text::{group, query_param};
use super::{ApiError, Body, State, lookup};
use crate::config::Language;
use crate::count::ledger::Figures;
use crate::period::month_of;
use crate::site::Site;

/// How often the page reads fresh figures (online now among them).
pub const REFRESH_MS: u32 = 30_000;
/// Every this many refreshes the charts and top lists are read again.
const RELOAD_EVERY: u32 = 10;
/// Pages in each most-read list.
pub const TOP_PAGES: usize = 10;
/// Days in the daily chart.
pub const CHART_DAYS: i64 = 30;
/// Months in the monthly chart.
pub const CHART_MONTHS: i64 = 12;

const STYLE: &str = include_str!("assets/dashboard.css");
const SCRIPT: &str = include_str!("assets/dashboard.js");

/// Inline style and script only, requests to this origin only, never
/// framed (the page may carry a token).
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; \
    script-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The page's text in one language.
struct Labels {
    code: &'static str,
    title: &'static str,
    total: &'static str,
    today: &'static str,
    yesterday: &'static str,
    week: &'static str,
    month: &'static str,
    online: &'static str,
    /// After a visitors figure: "312 khách".
    visitors_unit: &'static str,
    /// After the all-time visitors figure.
    visitors_all: &'static str,
    online_note: &'static str,
    days: &'static str,
    months: &'static str,
    hits: &'static str,
    visitors: &'static str,
    most_read: &'static str,
    updated: &'static str,
    stale: &'static str,
    empty: &'static str,
    no_script: &'static str,
    separator: char,
}

const VI: Labels = Labels {
    code: "vi",
    title: "Thống kê truy cập",
    total: "Tổng lượt truy cập",
    today: "Hôm nay",
    yesterday: "Hôm qua",
    week: "Tuần này",
    month: "Tháng này",
    online: "Đang trực tuyến",
    visitors_unit: "khách",
    visitors_all: "khách từ trước đến nay",
    online_note: "trong 5 phút qua",
    days: "30 ngày qua",
    months: "12 tháng qua",
    hits: "lượt xem",
    visitors: "khách",
    most_read: "Đọc nhiều nhất",
    updated: "Cập nhật lúc",
    stale: "kho dữ liệu không trả lời — số liệu có thể cũ",
    empty: "Chưa có lượt xem nào",
    no_script: "Biểu đồ và danh sách cần JavaScript.",
    separator: '.',
};

const EN: Labels = Labels {
    code: "en",
    title: "Visitor statistics",
    total: "Total visits",
    today: "Today",
    yesterday: "Yesterday",
    week: "This week",
    month: "This month",
    online: "Online now",
    visitors_unit: "visitors",
    visitors_all: "visitors all time",
    online_note: "in the last 5 minutes",
    days: "Last 30 days",
    months: "Last 12 months",
    hits: "hits",
    visitors: "visitors",
    most_read: "Most read",
    updated: "Updated at",
    stale: "the store is not answering — figures may be old",
    empty: "No views yet",
    no_script: "The charts and lists need JavaScript.",
    separator: ',',
};

/// What the script draws from, embedded in the page.
#[derive(Serialize)]
struct Data<'a> {
    labels: ScriptLabels<'a>,
    days: &'a [Point],
    months: &'a [Point],
    top: Tops<'a>,
    refresh_ms: u32,
    reload_every: u32,
    limit: usize,
}

#[derive(Serialize)]
struct ScriptLabels<'a> {
    hits: &'a str,
    visitors: &'a str,
    empty: &'a str,
    days: &'a str,
    months: &'a str,
}

#[derive(Serialize)]
struct Tops<'a> {
    today: Vec<TopPage<'a>>,
    week: Vec<TopPage<'a>>,
}

#[derive(Serialize)]
struct TopPage<'a> {
    page: &'a str,
    /// The page's last title, shown as text (`textContent`).
    title: Option<&'a str>,
    hits: u64,
}

/// Everything one rendering shows.
struct View {
    figures: Figures,
    days: Vec<Point>,
    months: Vec<Point>,
    top_today: Vec<history::TopPage>,
    top_week: Vec<history::TopPage>,
    /// The store failed one of the reads: some of the page is missing.
    degraded: bool,
    timezone: String,
}

fn bad(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_parameter", message)
}

/// Answers `GET /dashboard/{site}[?lang=vi|en][&token=…]`.
///
/// # Errors
/// 404 for an undeclared site, 401 for a private site without its token,
/// 400 for a `lang` it does not know.
pub async fn serve(
    state: &State,
    id: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let site = lookup(state, id)?;
    history::authorize(&site, headers, query)?;
    let language = match query_param(query, "lang").as_deref() {
        None => site.config.language,
        Some("vi") => Language::Vi,
        Some("en") => Language::En,
        Some(_) => return Err(bad("`lang` must be `vi` or `en`")),
    };
    let labels = match language {
        Language::Vi => &VI,
        Language::En => &EN,
    };
    // Only a token the reader typed into the URL is handed to the page's
    // script: one a proxy adds as a header is not the reader's to see.
    let token = if site.config.public {
        None
    } else {
        history::param(query, "token")
    };

    let view = read_view(state, &site).await;
    let html = render(&view, labels, token.as_deref());

    let cache = if site.config.public {
        "no-cache"
    } else {
        "private, no-cache"
    };
    // No referrer either: the URL may carry the token.
    let mut resp = super::document(html, "text/html; charset=utf-8", cache, CSP);
    let h = resp.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    Ok(resp)
}

/// JSON that is safe inside a `<script>` element: no `<`, `>` or `&`, so
/// nothing in it can close the element or open a comment.
fn script_json<T: Serialize>(value: &T) -> String {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Reads everything the page shows. A store read that fails leaves its
/// part empty and marks the view degraded; the page is still served.
async fn read_view(state: &State, site: &Site) -> View {
    let now = Timestamp::now();
    let today = site.calendar().day_of(now);
    let figures = state.reader.site_figures(site, now);
    let mut degraded = false;
    // Two series and two top lists: one store call each.
    for _ in 0..4 {
        state
            .reader
            .count_store_read(crate::metrics::ReadRoute::Dashboard);
    }
    let days_from = today
        .checked_sub(jiff::Span::new().days(CHART_DAYS - 1))
        .unwrap_or(today);
    let days = series_points(state, site, None, days_from, today, false)
        .await
        .inspect_err(|_| degraded = true)
        .unwrap_or_default();
    let months_from = today
        .checked_sub(jiff::Span::new().months(CHART_MONTHS - 1))
        .map(month_of)
        .unwrap_or(today);
    let months = series_points(state, site, None, months_from, today, true)
        .await
        .inspect_err(|_| degraded = true)
        .unwrap_or_default();
    let top_today = top_pages(state, site, today, "today").await;
    let top_week = top_pages(state, site, today, "week").await;
    degraded |= top_today.is_none() || top_week.is_none() || figures.stale;
    View {
        figures,
        days,
        months,
        top_today: top_today.unwrap_or_default(),
        top_week: top_week.unwrap_or_default(),
        degraded,
        timezone: site.config.timezone.clone(),
    }
}

/// `?lang=…` (and the token, when the page was opened with one).
fn lang_href(code: &str, token: Option<&str>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("lang", code);
    if let Some(t) = token {
        query.append_pair("token", t);
    }
    format!("?{}", query.finish())
}

/// The page for `view`: a maud template, which escapes every value spliced
/// into it; the style, the script and the embedded JSON (escaped for a
/// `<script>` element by [`script_json`]) go in as they are.
fn render(view: &View, labels: &Labels, token: Option<&str>) -> String {
    let site = &*view.figures.site;
    let page = html! {
        (PreEscaped("<!doctype html>\n"))
        html lang=(labels.code) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                meta name="color-scheme" content="light dark";
                meta name="robots" content="noindex";
                meta name="referrer" content="no-referrer";
                title { (labels.title) " · " (site) }
                style { (PreEscaped(STYLE)) (PreEscaped(panels::STYLE)) }
            }
            body {
                "\n"
                main id="dash" data-site=(site) data-token=[token] {
                    "\n"
                    (page_header(view, labels, token))
                    (figure_cards(&view.figures, labels))
                    (charts(labels))
                    (top_lists(labels))
                    (panel_frames(labels))
                    footer { "luot" }
                    "\n"
                }
                "\n"
                script type="application/json" id="luot-data" {
                    (PreEscaped(script_json(&script_data(view, labels))))
                }
                "\n"
                script { (PreEscaped(SCRIPT)) "\n" (PreEscaped(panels::SCRIPT)) }
                "\n"
            }
        }
        "\n"
    };
    page.into_string()
}

/// The title with the site, the language switch (carrying the token), and
/// when the figures were read, in which zone, and whether some are missing.
fn page_header(view: &View, labels: &Labels, token: Option<&str>) -> Markup {
    let current = |code: &str| (labels.code == code).then_some("page");
    html! {
        header {
            h1 { (labels.title) " " span class="site" { (view.figures.site) } }
            nav {
                a href=(lang_href("vi", token)) hreflang="vi" aria-current=[current("vi")] { "VI" }
                " "
                a href=(lang_href("en", token)) hreflang="en" aria-current=[current("en")] { "EN" }
            }
        }
        "\n"
        p class="asof" {
            (labels.updated) " " time id="as-of" { (view.figures.as_of) } " · " (view.timezone)
            @if view.degraded {
                " · " span class="stale" { (labels.stale) }
            }
        }
        "\n"
    }
}

/// The six figures, each hit count with its visitors below it (a dash
/// where the store keeps no visitor figure), and online now.
fn figure_cards(figures: &Figures, labels: &Labels) -> Markup {
    let v = figures.visitors.as_ref();
    let (unit, all) = (labels.visitors_unit, labels.visitors_all);
    // One card a row: key, label, hits, visitors, the visitors' unit.
    #[rustfmt::skip]
    let cards = [
        ("total", labels.total, figures.total, v.map(|x| x.total), all),
        ("today", labels.today, figures.today, v.map(|x| x.today), unit),
        ("yesterday", labels.yesterday, figures.yesterday, v.map(|x| x.yesterday), unit),
        ("week", labels.week, figures.week, v.map(|x| x.week), unit),
        ("month", labels.month, figures.month, v.map(|x| x.month), unit),
    ];
    let n = |v: u64| group(v, labels.separator);
    let shown = |v: Option<u64>| v.map_or_else(|| "–".to_string(), n);
    html! {
        section class="figures" {
            "\n"
            @for (key, label, value, visitors, unit) in cards {
                div class={ "fig " (key) } {
                    h2 { (label) }
                    b data-k=(key) id={ "fig-" (key) } { (n(value)) }
                    small { span data-v=(key) id={ "vis-" (key) } { (shown(visitors)) } " " (unit) }
                }
                "\n"
            }
            div class="fig online" {
                h2 class="on" { (labels.online) }
                b data-k="online" id="fig-online" { (n(figures.online.unwrap_or(0))) }
                small { (labels.online_note) }
            }
            "\n"
        }
        "\n"
    }
}

/// The two charts' frames and legends; the script draws into them.
fn charts(labels: &Labels) -> Markup {
    html! {
        section class="card" {
            div class="head" {
                h2 { (labels.days) }
                span class="legend" { i class="h" {} (labels.hits) i class="v" {} (labels.visitors) }
            }
            div class="chart" id="chart-days" { noscript { (labels.no_script) } }
        }
        "\n"
        section class="card" {
            div class="head" {
                h2 { (labels.months) }
                span class="legend" { i class="h" {} (labels.hits) }
            }
            div class="chart" id="chart-months" {}
        }
        "\n"
    }
}

/// "Đang đọc" and the breakdowns ([`panels`]), in the page's language.
fn panel_frames(labels: &Labels) -> Markup {
    match labels.code {
        "vi" => panels::render(&panels::VI, true),
        _ => panels::render(&panels::EN, false),
    }
}

/// The two most-read lists' frames; the script fills them with
/// `textContent`, so a page path never becomes markup.
fn top_lists(labels: &Labels) -> Markup {
    html! {
        section class="tops" {
            div class="card" { h2 { (labels.most_read) " · " (labels.today) } ol id="top-today" {} }
            div class="card" { h2 { (labels.most_read) " · " (labels.week) } ol id="top-week" {} }
        }
        "\n"
    }
}

/// What the script draws from: the series, the top lists, its labels and
/// timings.
fn script_data<'a>(view: &'a View, labels: &'a Labels) -> Data<'a> {
    Data {
        labels: ScriptLabels {
            hits: labels.hits,
            visitors: labels.visitors,
            empty: labels.empty,
            days: labels.days,
            months: labels.months,
        },
        days: &view.days,
        months: &view.months,
        top: Tops {
            today: pages(&view.top_today),
            week: pages(&view.top_week),
        },
        refresh_ms: REFRESH_MS,
        reload_every: RELOAD_EVERY,
        limit: TOP_PAGES,
    }
}

/// The most-read pages of a named period, `None` when the store fails.
async fn top_pages(
    state: &State,
    site: &Site,
    today: jiff::civil::Date,
    name: &str,
) -> Option<Vec<history::TopPage>> {
    let period = period_named(name, today, site).ok()?;
    history::top_pages(state, site, history::TopPeriod::Key(period), TOP_PAGES)
        .await
        .ok()
}

fn pages(list: &[history::TopPage]) -> Vec<TopPage<'_>> {
    list.iter()
        .map(|p| TopPage {
            page: &p.page,
            title: p.title.as_deref(),
            hits: p.hits,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn view() -> View {
        View {
            figures: Figures {
                site: Arc::from("demo"),
                page: None,
                total: 9_356_665,
                today: 545,
                yesterday: 808,
                week: 1353,
                month: 2958,
                online: Some(45),
                visitors: Some(crate::count::ledger::Visitors {
                    today: 312,
                    yesterday: 401,
                    week: 1001,
                    month: 2100,
                    total: 123_456,
                }),
                record: None,
                stale: false,
                as_of: "2026-11-27T21:00:00+07:00".into(),
            },
            days: (1..=30)
                .map(|d| Point {
                    date: format!("2026-11-{d:02}"),
                    hits: d * 10,
                    visitors: Some(d),
                })
                .collect(),
            months: vec![Point {
                date: "2026-11".into(),
                hits: 2958,
                visitors: None,
            }],
            top_today: vec![
                history::TopPage {
                    page: "/tin-tuc/a".into(),
                    title: Some("</script><b>Tin</b>".into()),
                    hits: 40,
                },
                history::TopPage {
                    page: "/</script><script>alert(1)</script>".into(),
                    title: None,
                    hits: 3,
                },
            ],
            top_week: vec![],
            degraded: false,
            timezone: "Asia/Ho_Chi_Minh".into(),
        }
    }

    #[test]
    fn the_vietnamese_page_shows_the_figures_and_labels() {
        let html = render(&view(), &VI, None);
        for text in [
            "<html lang=\"vi\">",
            "Thống kê truy cập",
            "Tổng lượt truy cập",
            "id=\"fig-total\">9.356.665<",
            "Hôm nay",
            "id=\"fig-today\">545<",
            "Hôm qua",
            "id=\"fig-yesterday\">808<",
            "Tuần này",
            "id=\"fig-week\">1.353<",
            "Tháng này",
            "id=\"fig-month\">2.958<",
            "Đang trực tuyến",
            "id=\"fig-online\">45<",
            "id=\"vis-total\">123.456<",
            "id=\"vis-today\">312<",
            "Đọc nhiều nhất · Hôm nay",
            "Đọc nhiều nhất · Tuần này",
            "30 ngày qua",
            "12 tháng qua",
            "name=\"viewport\"",
            "Asia/Ho_Chi_Minh",
        ] {
            assert!(html.contains(text), "{text} missing");
        }
        assert!(!html.contains("data-token="));
    }

    #[test]
    fn english_labels_and_grouping() {
        let html = render(&view(), &EN, None);
        for text in [
            "<html lang=\"en\">",
            "Visitor statistics",
            "Total visits",
            ">9,356,665<",
            "Today",
            "Yesterday",
            "This week",
            "This month",
            "Online now",
            "Most read · Today",
            "Most read · This week",
            "Last 30 days",
            "Last 12 months",
            "aria-current=\"page\">EN<",
        ] {
            assert!(html.contains(text), "{text} missing");
        }
    }

    #[test]
    fn embedded_data_cannot_close_the_script() {
        let html = render(&view(), &VI, None);
        let start = html.find("id=\"luot-data\">").unwrap() + "id=\"luot-data\">".len();
        let end = start + html[start..].find("</script>").unwrap();
        let json: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
        assert_eq!(json["days"].as_array().unwrap().len(), 30);
        assert_eq!(json["days"][29]["hits"], 300);
        assert_eq!(json["days"][29]["visitors"], 30);
        assert_eq!(json["months"][0]["date"], "2026-11");
        assert_eq!(
            json["top"]["today"][1]["page"],
            "/</script><script>alert(1)</script>"
        );
        assert_eq!(json["top"]["today"][0]["title"], "</script><b>Tin</b>");
        assert_eq!(json["top"]["today"][1]["title"], serde_json::Value::Null);
        assert_eq!(json["refresh_ms"], 30_000);
        assert!(!html.contains("<script>alert"));
        assert_eq!(html.matches("</script>").count(), 2);
    }

    #[test]
    fn the_token_is_carried_escaped_into_the_page_and_its_links() {
        let html = render(&view(), &VI, Some("s3cret\"&token<16+"));
        assert!(html.contains("data-token=\"s3cret&quot;&amp;token&lt;16+\""));
        assert!(html.contains("href=\"?lang=en&amp;token=s3cret%22%26token%3C16%2B\""));
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        let html = render(&view(), &EN, None);
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(!html.contains(" src="));
        assert!(!html.contains("<link"));
        assert!(html.contains("\"refresh_ms\":30000"));
        assert!(SCRIPT.contains("setInterval(tick, data.refresh_ms)"));
    }

    #[test]
    fn a_degraded_reading_says_so() {
        let mut v = view();
        v.degraded = true;
        v.figures.visitors = None;
        let html = render(&v, &EN, None);
        assert!(html.contains("class=\"stale\""));
        assert!(html.contains("id=\"vis-today\">–<"));
    }

    #[test]
    fn a_hostile_site_name_comes_out_escaped() {
        let mut v = view();
        v.figures.site = Arc::from("<script>alert(1)</script>\"&");
        let html = render(&v, &EN, None);
        let shown = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&amp;";
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains(&format!("<title>Visitor statistics · {shown}</title>")));
        assert!(html.contains(&format!("data-site=\"{shown}\"")));
        assert!(html.contains(&format!("<span class=\"site\">{shown}</span>")));
        assert_eq!(html.matches("</script>").count(), 2);
    }
}
