//! `GET /widget/{site}/top?period=24h&limit=5&lang=vi`: a most-read box as
//! a self-contained HTML page for an `<iframe>`, in the footer widget's
//! style.
//!
//! Each entry links to the page on the site's first declared origin (the
//! frame is served from luot's), opening in the reader's tab; its text is
//! the page's title, or its path when none was seen. The markup is a maud
//! template: a title is text, never markup (`<b>x</b>` shows as those
//! characters). Reads the top list through the owner's read route; never
//! counts.

use hyper::{Response, StatusCode};
use jiff::Timestamp;
use maud::{PreEscaped, html};

use super::text::{group, query_param};
use super::{ApiError, Body, State, lookup};
use crate::config::Language;
use crate::http::owner::history::{TopPage, top_pages, top_period_named};

/// Entries unless `?limit=` says otherwise.
pub const DEFAULT_LIMIT: usize = 5;
/// The most entries a box shows.
pub const MAX_LIMIT: usize = 20;

/// No script at all; inline style; any site may frame it.
const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'";

const STYLE: &str = "\
ol{margin:0;padding:0 0 0 1.4em}\
li{padding:3px 0;border-top:1px dashed var(--line)}\
li:first-child{border-top:0}\
a{color:var(--fg);text-decoration:none}\
a:hover{text-decoration:underline}\
.n{float:right;margin-left:8px;color:var(--mute);font-variant-numeric:tabular-nums}\
.empty{list-style:none;color:var(--mute)}";

struct Labels {
    code: &'static str,
    most_read: &'static str,
    empty: &'static str,
    separator: char,
}

const VI: Labels = Labels {
    code: "vi",
    most_read: "Đọc nhiều nhất",
    empty: "Chưa có bài nào",
    separator: '.',
};

const EN: Labels = Labels {
    code: "en",
    most_read: "Most read",
    empty: "Nothing yet",
    separator: ',',
};

/// What a period is called in the box's heading.
fn period_label(name: &str, language: Language) -> &'static str {
    let vi = language == Language::Vi;
    match name {
        "1h" if vi => "1 giờ qua",
        "1h" => "last hour",
        "today" if vi => "hôm nay",
        "today" => "today",
        "yesterday" if vi => "hôm qua",
        "yesterday" => "yesterday",
        "week" if vi => "tuần này",
        "week" => "this week",
        "month" if vi => "tháng này",
        "month" => "this month",
        "total" if vi => "mọi lúc",
        "total" => "all time",
        _ if vi => "24 giờ qua",
        _ => "last 24 hours",
    }
}

fn bad(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_parameter", message)
}

/// Answers `GET /widget/{site}/top`.
///
/// # Errors
/// 404 for an undeclared site, 400 for a `period`, `limit` or `lang` it
/// does not know, 503 when the store cannot answer.
pub async fn serve(
    state: &State,
    id: &str,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let site = lookup(state, id)?;
    let language = match query_param(query, "lang").as_deref() {
        None => site.config.language,
        Some("vi") => Language::Vi,
        Some("en") => Language::En,
        Some(_) => return Err(bad("`lang` must be `vi` or `en`")),
    };
    let name = query_param(query, "period").map_or_else(|| "24h".to_string(), |p| p.into_owned());
    let period = top_period_named(&name, site.calendar().day_of(Timestamp::now()), &site)?;
    let limit = match query_param(query, "limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| bad("`limit` must be a whole number from 1 to 20"))?,
    };
    let pages = top_pages(state, &site, period, limit).await?;
    // Links go to the site's own pages: its first declared origin.
    let origin = site
        .config
        .origins
        .iter()
        .find(|o| o.starts_with("http://") || o.starts_with("https://"))
        .map(String::as_str);
    let html = render(&pages, &name, language, origin);
    Ok(super::document(
        html,
        "text/html; charset=utf-8",
        "no-cache",
        CSP,
    ))
}

/// The box for `pages`. maud escapes every spliced value.
fn render(pages: &[TopPage], period: &str, language: Language, origin: Option<&str>) -> String {
    let labels = match language {
        Language::Vi => &VI,
        Language::En => &EN,
    };
    let page = html! {
        (PreEscaped("<!doctype html>\n"))
        html lang=(labels.code) class="auto" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (labels.most_read) }
                style { (PreEscaped(super::widget::STYLE)) (PreEscaped(STYLE)) }
            }
            body {
                div class="luot" {
                    div class="head" { b { (labels.most_read) " · " (period_label(period, language)) } }
                    ol {
                        @if pages.is_empty() {
                            li class="empty" { (labels.empty) }
                        }
                        @for p in pages {
                            li {
                                span class="n" { (group(p.hits, labels.separator)) }
                                @let text = p.title.as_deref().unwrap_or(&p.page);
                                @match origin {
                                    Some(origin) => {
                                        a href={ (origin) "/" (p.page.trim_start_matches('/')) } target="_top" { (text) }
                                    }
                                    None => span { (text) },
                                }
                            }
                        }
                    }
                }
            }
        }
        "\n"
    };
    page.into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages() -> Vec<TopPage> {
        vec![
            TopPage {
                page: "/tin-tuc/a".into(),
                title: Some("<b>x</b> & \"y\"".into()),
                hits: 1234,
            },
            TopPage {
                page: "//evil.example/b".into(),
                title: None,
                hits: 5,
            },
        ]
    }

    #[test]
    fn titles_are_text_and_links_stay_on_the_site() {
        let html = render(&pages(), "24h", Language::Vi, Some("https://news.example"));
        assert!(html.contains("Đọc nhiều nhất · 24 giờ qua"), "{html}");
        assert!(html.contains(
            "<a href=\"https://news.example/tin-tuc/a\" target=\"_top\">&lt;b&gt;x&lt;/b&gt; &amp; &quot;y&quot;</a>"
        ), "{html}");
        assert!(!html.contains("<b>x</b>"));
        assert!(
            html.contains("href=\"https://news.example/evil.example/b\""),
            "{html}"
        );
        assert!(html.contains(">1.234<"));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn english_and_empty() {
        let html = render(&[], "1h", Language::En, None);
        assert!(html.contains("Most read · last hour"));
        assert!(html.contains("Nothing yet"));
        let html = render(&pages(), "today", Language::En, None);
        assert!(html.contains("<span>/tin-tuc/a</span>") || html.contains("&lt;b&gt;x"));
        assert!(!html.contains("<a "));
    }
}
