//! `GET /ignore/{site}`: the page that leaves an editor's own visits out,
//! in Vietnamese or English (the site's `language`, or `?lang=`).
//!
//! Browser storage belongs to an origin: `localStorage` written on this
//! page, served by luot, is luot's and never seen by the snippet running
//! on the site's pages. So the flag is set where the snippet can read it,
//! on the site's own origin: this page links to the site's pages with
//! `#luot-ignore=on` (and `#luot-ignore=off` to undo), and `luot.js`
//! there keeps or drops `luot_ignore:<site>` in `localStorage` before it
//! sends anything. A fragment reaches neither the site's server nor luot,
//! and no page's name carries it. For origins the configuration does not
//! name (a site with `origins = ["*"]`), a field takes the site's address
//! and the buttons build the same links.
//!
//! The page is a maud template (every spliced value escaped); it reads
//! nothing from the store and counts nothing.

use hyper::{Response, StatusCode};
use maud::{PreEscaped, html};

use super::text::query_param;
use super::{ApiError, Body, State, lookup};
use crate::config::Language;

/// The fragment `luot.js` reads; `=on` leaves this browser out, `=off`
/// counts it again.
pub const FRAGMENT: &str = "luot-ignore";

/// Inline style and script only; the page loads nothing, is never framed
/// (its buttons are not to be clicked through another page) and sends no
/// form.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; \
    script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's text in one language.
struct Labels {
    code: &'static str,
    title: &'static str,
    intro: &'static str,
    why: &'static str,
    leave_out: &'static str,
    count_again: &'static str,
    other: &'static str,
    placeholder: &'static str,
    scope: &'static str,
}

const VI: Labels = Labels {
    code: "vi",
    title: "Không tính lượt xem của tôi",
    intro: "luot đếm mọi lượt xem trang của site này. Để lượt xem của chính bạn trên \
        trình duyệt này không được tính, hãy mở liên kết “Không tính” dưới đây; \
        “Tính lại” bỏ lựa chọn đó.",
    why: "Lựa chọn được lưu trong bộ nhớ của trình duyệt (localStorage) theo địa chỉ \
        của site, nên phải được đặt trên chính các trang của site: trang này do bộ \
        đếm phục vụ ở một địa chỉ khác nên không thể đặt thay bạn. Liên kết mở trang \
        chủ của site với #luot-ignore ở cuối địa chỉ; luot.js trên trang đó ghi nhớ \
        lựa chọn và từ đó không gửi lượt xem nào từ trình duyệt này.",
    leave_out: "Không tính trình duyệt này",
    count_again: "Tính lại trình duyệt này",
    other: "Địa chỉ khác của site:",
    placeholder: "https://bao.example",
    scope: "Chỉ áp dụng cho trình duyệt này và site này, với các trang dùng luot.js. \
        Ảnh đếm (/hit.gif) và trang AMP không đọc được lựa chọn này: với chúng, và \
        cho cả một văn phòng, hãy nhờ người vận hành luot thêm địa chỉ IP của bạn vào \
        ignore_addresses. Xoá dữ liệu của site trong trình duyệt cũng bỏ lựa chọn.",
};

const EN: Labels = Labels {
    code: "en",
    title: "Leave out my visits",
    intro: "luot counts every page view of this site. To keep your own views on this \
        browser out of its figures, open a “Leave out” link below; “Count again” \
        undoes it.",
    why: "The choice is kept in the browser's storage (localStorage) for the site's \
        address, so it must be made on the site's own pages: this page is served by \
        the counter at another address and cannot make it for you. The link opens the \
        site's home page with #luot-ignore at the end of its address; luot.js there \
        remembers the choice and from then on sends no page view from this browser.",
    leave_out: "Leave out this browser",
    count_again: "Count this browser again",
    other: "Another address of the site:",
    placeholder: "https://news.example",
    scope: "It applies to this browser and this site only, on pages with luot.js. \
        Pixels (/hit.gif) and AMP pages cannot read it: for those, and for a whole \
        office, ask whoever runs luot to list your IP addresses in ignore_addresses. \
        Clearing the site's data in the browser undoes it too.",
};

const STYLE: &str = "\
html{color-scheme:light dark}\
body{margin:0 auto;max-width:40em;padding:16px;font:15px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,\"Noto Sans\",\"DejaVu Sans\",sans-serif}\
h1{font-size:1.3em}\
ul{list-style:none;padding:0}\
li{margin:.6em 0}\
a.b,button{display:inline-block;margin:.2em .4em .2em 0;padding:.35em .8em;border:1px solid #888;border-radius:5px;color:inherit;background:none;font:inherit;text-decoration:none;cursor:pointer}\
a.on,button.on{border-color:#c00}\
input{font:inherit;padding:.3em;width:16em;max-width:100%}\
.note{color:#777;font-size:.9em}";

/// Builds the same links as the list for an address typed in the field.
const SCRIPT: &str = "\
(function(){var a=document.getElementById(\"addr\");\
document.querySelectorAll(\"button[data-go]\").forEach(function(b){b.addEventListener(\"click\",function(){\
var u;try{u=new URL(a.value.trim())}catch(e){a.focus();return}\
if(u.protocol!=\"https:\"&&u.protocol!=\"http:\"){a.focus();return}\
location.href=u.origin+\"/#luot-ignore=\"+b.getAttribute(\"data-go\")})})})();";

/// Answers `GET /ignore/{site}[?lang=vi|en]`.
///
/// # Errors
/// 404 for an undeclared site, 400 for a `lang` it does not know.
pub fn serve(state: &State, id: &str, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let site = lookup(state, id)?;
    let language = match query_param(query, "lang").as_deref() {
        None => site.config.language,
        Some("vi") => Language::Vi,
        Some("en") => Language::En,
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_parameter",
                "`lang` must be `vi` or `en`",
            ));
        }
    };
    let labels = match language {
        Language::Vi => &VI,
        Language::En => &EN,
    };
    let html = render(&site.id, &site.config.origins, labels);
    Ok(super::document(
        html,
        "text/html; charset=utf-8",
        "no-cache",
        CSP,
    ))
}

/// The page: a pair of links for each declared `http(s)` origin, and the
/// field for any other address.
fn render(site: &str, origins: &[String], labels: &Labels) -> String {
    let origins = origins.iter().filter(|o| {
        let lower = o.to_ascii_lowercase();
        lower.starts_with("https://") || lower.starts_with("http://")
    });
    let page = html! {
        (PreEscaped("<!doctype html>\n"))
        html lang=(labels.code) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                meta name="robots" content="noindex";
                title { (labels.title) " · " (site) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                "\n"
                h1 { (labels.title) " · " (site) }
                p { (labels.intro) }
                ul id="origins" {
                    @for origin in origins {
                        li {
                            code { (origin) } br;
                            a class="b on" href={ (origin) "/#" (FRAGMENT) "=on" } { (labels.leave_out) }
                            a class="b" href={ (origin) "/#" (FRAGMENT) "=off" } { (labels.count_again) }
                        }
                    }
                }
                p {
                    label for="addr" { (labels.other) } " "
                    input id="addr" type="url" placeholder=(labels.placeholder);
                    br;
                    button type="button" class="on" data-go="on" { (labels.leave_out) }
                    button type="button" data-go="off" { (labels.count_again) }
                }
                p { (labels.why) }
                p class="note" { (labels.scope) }
                "\n"
                script { (PreEscaped(SCRIPT)) }
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

    #[test]
    fn declared_origins_get_a_pair_of_links_and_others_none() {
        let origins = [
            "https://news.example".to_string(),
            "http://localhost:8000".to_string(),
            "*".to_string(),
        ];
        let html = render("news", &origins, &EN);
        for text in [
            "<html lang=\"en\">",
            "href=\"https://news.example/#luot-ignore=on\"",
            "href=\"https://news.example/#luot-ignore=off\"",
            "href=\"http://localhost:8000/#luot-ignore=on\"",
            "Leave out this browser",
            "Count this browser again",
            "localStorage",
        ] {
            assert!(html.contains(text), "{text} missing from {html}");
        }
        assert!(!html.contains("href=\"*"), "{html}");
        assert_eq!(html.matches("#luot-ignore=on\"").count(), 2);
    }

    #[test]
    fn the_vietnamese_page_and_escaping() {
        let html = render("<b>x</b>", &["https://a.example\"><i".to_string()], &VI);
        assert!(html.contains("Không tính trình duyệt này"));
        assert!(html.contains("Tính lại trình duyệt này"));
        assert!(html.contains("<html lang=\"vi\">"));
        assert!(
            !html.contains("<b>x</b>") && !html.contains("\"><i"),
            "{html}"
        );
        assert_eq!(html.matches("<script>").count(), 1);
    }
}
