//! `GET /widget/{site}`: the footer box as a self-contained HTML page, for
//! an `<iframe>`.
//!
//! The page carries its CSS and a few lines of script inline and loads
//! nothing else; its figures are rendered here, and the script refreshes
//! them every 30 seconds from `/api/v1/sites/{site}/counters` (a relative
//! URL, so the page works behind a path prefix). The markup is a maud
//! template, which escapes every piece of text spliced into it. This module
//! reads figures; it never counts.

use hyper::{Response, StatusCode};
use jiff::Timestamp;
use maud::{PreEscaped, html};

use super::text::{group, pad, query_param};
use super::{ApiError, Body, State, lookup};
use crate::config::Language;
use crate::count::ledger::Figures;

/// Digits the total is padded to unless `?pad=` says otherwise.
pub const DEFAULT_PAD: usize = 8;
/// The widest `?pad=` accepted.
pub const MAX_PAD: usize = 12;
/// How often the page asks for fresh figures.
const REFRESH_MS: u32 = 30_000;

/// The page may run its own inline style and script and talk to this
/// origin, nothing more; any site may frame it.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; \
    script-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'";

/// The box's labels in one language.
struct Labels {
    code: &'static str,
    visits: &'static str,
    today: &'static str,
    yesterday: &'static str,
    week: &'static str,
    month: &'static str,
    online: &'static str,
    /// The record day's row, shown with `?record=1`.
    record: &'static str,
    /// The digit-group separator `toLocaleString` uses for this language.
    separator: char,
}

const VI: Labels = Labels {
    code: "vi",
    visits: "Lượt Truy Cập",
    today: "Hôm nay",
    yesterday: "Hôm qua",
    week: "Tuần này",
    month: "Tháng này",
    online: "Đang trực tuyến",
    record: "Ngày cao nhất",
    separator: '.',
};

const EN: Labels = Labels {
    code: "en",
    visits: "Visits",
    today: "Today",
    yesterday: "Yesterday",
    week: "This week",
    month: "This month",
    online: "Online now",
    record: "Best day",
    separator: ',',
};

/// Light, dark, or whatever the reader's system prefers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Theme {
    Auto,
    Light,
    Dark,
}

/// The widget's options, from its query string.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    language: Option<Language>,
    theme: Theme,
    pad: usize,
    /// `record=1`: a row with the site's record day.
    record: bool,
}

fn bad(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_parameter", message)
}

fn options(query: Option<&str>) -> Result<Options, ApiError> {
    let language = match query_param(query, "lang").as_deref() {
        None => None,
        Some("vi") => Some(Language::Vi),
        Some("en") => Some(Language::En),
        Some(_) => return Err(bad("`lang` must be `vi` or `en`")),
    };
    let theme = match query_param(query, "theme").as_deref() {
        None | Some("auto") => Theme::Auto,
        Some("light") => Theme::Light,
        Some("dark") => Theme::Dark,
        Some(_) => return Err(bad("`theme` must be `light`, `dark` or `auto`")),
    };
    let pad = match query_param(query, "pad") {
        None => DEFAULT_PAD,
        Some(p) => p
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAD).contains(n))
            .ok_or_else(|| bad("`pad` must be a whole number from 1 to 12"))?,
    };
    let record = match query_param(query, "record").as_deref() {
        None | Some("0") => false,
        Some("1") => true,
        Some(_) => return Err(bad("`record` must be `1` or `0`")),
    };
    Ok(Options {
        language,
        theme,
        pad,
        record,
    })
}

/// Answers `GET /widget/{site}`.
///
/// # Errors
/// 404 for an undeclared site, 400 for a `lang`, `theme` or `pad` it does
/// not know.
pub fn serve(state: &State, id: &str, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let site = lookup(state, id)?;
    let options = options(query)?;
    let figures = state.reader.site_figures(&site, Timestamp::now());
    let labels = match options.language.unwrap_or(site.config.language) {
        Language::Vi => &VI,
        Language::En => &EN,
    };
    let html = render_with(&figures, labels, options.theme, options.pad, options.record);
    Ok(super::document(
        html,
        "text/html; charset=utf-8",
        "no-cache",
        CSP,
    ))
}

/// The box's style, shared with the most-read box ([`super::top`]).
pub(super) const STYLE: &str = "\
:root{--bg:#fff;--fg:#1f2328;--mute:#59636e;--line:#d8dee4;--odo:#1f2328;--odo-fg:#fff;--dot:#1a7f37}\
.dark{--bg:#0d1117;--fg:#e6edf3;--mute:#9198a1;--line:#30363d;--odo:#010409;--odo-fg:#f0f6fc;--dot:#3fb950}\
@media (prefers-color-scheme:dark){.auto{--bg:#0d1117;--fg:#e6edf3;--mute:#9198a1;--line:#30363d;--odo:#010409;--odo-fg:#f0f6fc;--dot:#3fb950}}\
html{color-scheme:light dark}\
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.4 system-ui,-apple-system,\"Segoe UI\",Roboto,\"Noto Sans\",\"DejaVu Sans\",sans-serif}\
.luot{box-sizing:border-box;max-width:320px;padding:10px 12px;border:1px solid var(--line);border-radius:6px;background:var(--bg)}\
.head{display:flex;align-items:center;justify-content:space-between;gap:8px;margin-bottom:6px}\
.head b{font-weight:600;white-space:nowrap}\
.odo{display:inline-flex;gap:2px}\
.odo span{display:inline-block;min-width:.8em;padding:1px 2px;border-radius:3px;background:var(--odo);color:var(--odo-fg);text-align:center;font:600 15px/1.3 ui-monospace,\"DejaVu Sans Mono\",monospace}\
table{width:100%;border-collapse:collapse}\
th{text-align:left;font-weight:400;color:var(--mute);padding:2px 0}\
td{text-align:right;font-variant-numeric:tabular-nums;padding:2px 0}\
tr+tr th,tr+tr td{border-top:1px dashed var(--line)}\
.on::before{content:\"\";display:inline-block;width:7px;height:7px;margin-right:6px;border-radius:50%;background:var(--dot);vertical-align:middle}";

const SCRIPT: &str = "\
(function(){var b=document.getElementById(\"luot\"),src=b.getAttribute(\"data-src\"),\
pad=+b.getAttribute(\"data-pad\"),lang=document.documentElement.lang;\
function odo(el,s){el.setAttribute(\"aria-label\",s);el.textContent=\"\";\
for(var i=0;i<s.length;i++){var c=document.createElement(\"span\");c.textContent=s[i];el.appendChild(c)}}\
function put(f){b.querySelectorAll(\"[data-k]\").forEach(function(el){var v=f[el.getAttribute(\"data-k\")];\
if(typeof v!=\"number\")return;if(el.classList.contains(\"odo\"))odo(el,String(v).padStart(pad,\"0\"));\
else el.textContent=v.toLocaleString(lang)})}\
function tick(){if(!window.fetch)return;fetch(src,{cache:\"no-store\",credentials:\"omit\"})\
.then(function(r){return r.ok?r.json():null}).then(function(f){f&&put(f)}).catch(function(){})}\
setInterval(tick,";

/// The tail of the inline script: the refresh period closes its
/// `setInterval` call.
const SCRIPT_END: &str = ")})();";

/// [`render_with`] without the record day's row.
#[cfg(test)]
fn render(figures: &Figures, labels: &Labels, theme: Theme, width: usize) -> String {
    render_with(figures, labels, theme, width, false)
}

/// The record day's cell: the hits, grouped, and the day (`27/11/2026` in
/// Vietnamese, `2026-11-27` in English); a dash before any hit.
fn record_cell(figures: &Figures, labels: &Labels) -> String {
    match figures.record {
        None => "—".to_string(),
        Some(r) => {
            let hits = group(r.hits, labels.separator);
            let d = r.date;
            if labels.code == "vi" {
                format!("{hits} ({:02}/{:02}/{})", d.day(), d.month(), d.year())
            } else {
                format!("{hits} ({d})")
            }
        }
    }
}

/// The page for `figures`, with the record day's row when `record` is
/// set. maud escapes every spliced value (`&`, `<`, `>`, `"`); the style
/// and script are this module's constants, spliced as they are.
fn render_with(
    figures: &Figures,
    labels: &Labels,
    theme: Theme,
    width: usize,
    record: bool,
) -> String {
    let class = match theme {
        Theme::Auto => "auto",
        Theme::Light => "light",
        Theme::Dark => "dark",
    };
    let site = &*figures.site;
    let total = pad(figures.total, width);
    let n = |v: u64| group(v, labels.separator);
    let rows = [
        (labels.today, "today", figures.today),
        (labels.yesterday, "yesterday", figures.yesterday),
        (labels.week, "week", figures.week),
        (labels.month, "month", figures.month),
        (labels.online, "online", figures.online.unwrap_or(0)),
    ];
    let page = html! {
        (PreEscaped("<!doctype html>\n"))
        html lang=(labels.code) class=(class) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (labels.visits) " · " (site) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                "\n"
                div class="luot" id="luot" data-src={ "../api/v1/sites/" (site) "/counters" } data-pad=(width) {
                    div class="head" {
                        b { (labels.visits) }
                        span class="odo" data-k="total" role="img" aria-label=(total) {
                            @for digit in total.chars() { span { (digit) } }
                        }
                    }
                    "\n"
                    table {
                        @for (label, key, value) in rows {
                            tr {
                                th class=[(key == "online").then_some("on")] { (label) ":" }
                                td data-k=(key) { (n(value)) }
                            }
                        }
                        @if record {
                            tr {
                                th { (labels.record) ":" }
                                td class="rec" { (record_cell(figures, labels)) }
                            }
                        }
                    }
                }
                "\n"
                script { (PreEscaped(SCRIPT)) (REFRESH_MS) (PreEscaped(SCRIPT_END)) }
                "\n"
            }
        }
        "\n"
    };
    page.into_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn figures() -> Figures {
        Figures {
            site: Arc::from("demo"),
            page: None,
            total: 9_356_665,
            today: 545,
            yesterday: 808,
            week: 1353,
            month: 2958,
            online: Some(45),
            visitors: None,
            record: None,
            stale: false,
            as_of: "".into(),
        }
    }

    #[test]
    fn the_vietnamese_box_shows_the_footer() {
        let html = render(&figures(), &VI, Theme::Auto, 8);
        for text in [
            "Lượt Truy Cập",
            "Hôm nay:",
            "Hôm qua:",
            "Tuần này:",
            "Tháng này:",
            "Đang trực tuyến:",
            "aria-label=\"09356665\"",
            ">1.353<",
            ">2.958<",
            ">45<",
            "<html lang=\"vi\" class=\"auto\">",
        ] {
            assert!(html.contains(text), "{text} missing from {html}");
        }
    }

    #[test]
    fn english_labels_and_grouping() {
        let html = render(&figures(), &EN, Theme::Dark, 10);
        for text in [
            "Visits",
            "Today:",
            "Yesterday:",
            "This week:",
            "This month:",
            "Online now:",
            "aria-label=\"0009356665\"",
            ">1,353<",
            "class=\"dark\"",
        ] {
            assert!(html.contains(text), "{text} missing");
        }
    }

    #[test]
    fn options_are_validated() {
        assert_eq!(
            options(None).unwrap(),
            Options {
                language: None,
                theme: Theme::Auto,
                pad: DEFAULT_PAD,
                record: false,
            }
        );
        assert!(options(Some("record=1")).unwrap().record);
        let o = options(Some("lang=en&theme=dark&pad=12")).unwrap();
        assert_eq!(o.language, Some(Language::En));
        assert_eq!(o.theme, Theme::Dark);
        assert_eq!(o.pad, 12);
        for q in [
            "pad=0",
            "pad=13",
            "pad=x",
            "lang=fr",
            "theme=<b>",
            "record=yes",
        ] {
            assert_eq!(options(Some(q)).unwrap_err().status, 400, "{q}");
        }
    }

    #[test]
    fn the_record_day_row_shows_when_asked() {
        let mut f = figures();
        assert!(!render(&f, &VI, Theme::Auto, 8).contains("Ngày cao nhất"));
        let none = render_with(&f, &VI, Theme::Auto, 8, true);
        assert!(
            none.contains("Ngày cao nhất:") && none.contains(">—<"),
            "{none}"
        );
        f.record = Some(crate::store::Record {
            hits: 4321,
            date: jiff::civil::date(2026, 11, 27),
        });
        let vi = render_with(&f, &VI, Theme::Auto, 8, true);
        assert!(vi.contains(">4.321 (27/11/2026)<"), "{vi}");
        let en = render_with(&f, &EN, Theme::Auto, 8, true);
        assert!(
            en.contains("Best day:") && en.contains(">4,321 (2026-11-27)<"),
            "{en}"
        );
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        let html = render(&figures(), &VI, Theme::Light, 8);
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(!html.contains(" src="));
        assert!(html.contains("setInterval(tick,30000)"));
    }

    #[test]
    fn a_hostile_site_name_comes_out_escaped() {
        let mut f = figures();
        f.site = Arc::from("<script>alert(1)</script>\"&");
        let html = render(&f, &EN, Theme::Auto, 8);
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(
            html.contains(
                "<title>Visits · &lt;script&gt;alert(1)&lt;/script&gt;&quot;&amp;</title>"
            )
        );
        assert!(html.contains(
            "data-src=\"../api/v1/sites/&lt;script&gt;alert(1)&lt;/script&gt;&quot;&amp;/counters\""
        ));
        assert_eq!(html.matches("<script>").count(), 1);
    }
}
