//! The dashboard's live and breakdown panels: "Đang đọc" (reading now —
//! the pages with the most readers, refreshed every 10 s, and the site's
//! online over the last hour) and where hits came from and on what
//! ("Nguồn truy cập", campaigns, devices, browsers, systems, countries),
//! each a ranked list with bars over a period the reader switches.
//!
//! The frames are maud markup (escaped); the script
//! (`assets/panels.js`) fills them from `/online`, `/top` and
//! `/breakdown` with `textContent`, so a value from a client (a referrer
//! host, a UTM string, a page path) stays text. Display names of fixed
//! values (channels, devices, countries) travel in the page's JSON, in the
//! page's language; any other value is shown as sent.

use maud::{Markup, html};
use serde::Serialize;

/// The panels' style, appended to the dashboard's.
pub const STYLE: &str = include_str!("assets/panels.css");
/// The panels' script, appended to the dashboard's.
pub const SCRIPT: &str = include_str!("assets/panels.js");

/// How often "Đang đọc" is read again.
pub const NOW_REFRESH_MS: u32 = 10_000;
/// Pages listed in "Đang đọc".
pub const NOW_PAGES: usize = 10;
/// Values listed per breakdown panel.
pub const VALUES: usize = 8;
/// Top pages whose sources are one click away.
pub const SOURCE_PAGES: usize = 5;

/// The panels' text in one language.
pub struct PanelLabels {
    reading_now: &'static str,
    every_10s: &'static str,
    last_hour: &'static str,
    readers: &'static str,
    nobody: &'static str,
    sources: &'static str,
    channels: &'static str,
    top_sources: &'static str,
    pages_sources: &'static str,
    pick_page: &'static str,
    campaigns: &'static str,
    utm_source: &'static str,
    utm_medium: &'static str,
    utm_campaign: &'static str,
    devices: &'static str,
    browsers: &'static str,
    systems: &'static str,
    countries: &'static str,
    periods: [(&'static str, &'static str); 4],
    empty: &'static str,
    /// Display names of fixed values (channels, devices, markers).
    names: &'static [(&'static str, &'static str)],
}

pub const VI: PanelLabels = PanelLabels {
    reading_now: "Đang đọc",
    every_10s: "cập nhật mỗi 10 giây",
    last_hour: "Trực tuyến trong 60 phút qua",
    readers: "người đọc",
    nobody: "Chưa có ai đang đọc",
    sources: "Nguồn truy cập",
    channels: "Kênh",
    top_sources: "Nguồn",
    pages_sources: "Nguồn của từng trang",
    pick_page: "Chọn một trang để xem nguồn",
    campaigns: "Chiến dịch",
    utm_source: "utm_source",
    utm_medium: "utm_medium",
    utm_campaign: "utm_campaign",
    devices: "Thiết bị",
    browsers: "Trình duyệt",
    systems: "Hệ điều hành",
    countries: "Quốc gia",
    periods: [
        ("today", "Hôm nay"),
        ("yesterday", "Hôm qua"),
        ("week", "Tuần này"),
        ("month", "Tháng này"),
    ],
    empty: "Chưa có dữ liệu",
    names: &[
        ("direct", "Trực tiếp"),
        ("internal", "Nội bộ"),
        ("search", "Tìm kiếm"),
        ("social", "Mạng xã hội"),
        ("news", "Tin tức"),
        ("email", "Email"),
        ("referral", "Giới thiệu"),
        ("mobile", "Điện thoại"),
        ("tablet", "Máy tính bảng"),
        ("desktop", "Máy tính"),
        ("(other)", "(khác)"),
        ("(unknown)", "(không rõ)"),
        ("(none)", "(không có)"),
        ("Other", "Khác"),
    ],
};

pub const EN: PanelLabels = PanelLabels {
    reading_now: "Reading now",
    every_10s: "updated every 10 seconds",
    last_hour: "Online over the last 60 minutes",
    readers: "readers",
    nobody: "Nobody is reading right now",
    sources: "Traffic sources",
    channels: "Channels",
    top_sources: "Sources",
    pages_sources: "Sources of each page",
    pick_page: "Pick a page to see its sources",
    campaigns: "Campaigns",
    utm_source: "utm_source",
    utm_medium: "utm_medium",
    utm_campaign: "utm_campaign",
    devices: "Devices",
    browsers: "Browsers",
    systems: "Operating systems",
    countries: "Countries",
    periods: [
        ("today", "Today"),
        ("yesterday", "Yesterday"),
        ("week", "This week"),
        ("month", "This month"),
    ],
    empty: "No data yet",
    names: &[
        ("direct", "Direct"),
        ("internal", "Internal"),
        ("search", "Search"),
        ("social", "Social"),
        ("news", "News"),
        ("email", "Email"),
        ("referral", "Referral"),
        ("mobile", "Mobile"),
        ("tablet", "Tablet"),
        ("desktop", "Desktop"),
        ("(other)", "(other)"),
        ("(unknown)", "(unknown)"),
        ("(none)", "(none)"),
    ],
};

/// ISO 3166-1 alpha-2 codes and their names in Vietnamese and English:
/// the countries a Vietnamese newsroom's readers come from most, and `ZZ`
/// (unknown). A code not listed is shown as the code.
pub const COUNTRIES: &[(&str, &str, &str)] = &[
    ("VN", "Việt Nam", "Vietnam"),
    ("US", "Hoa Kỳ", "United States"),
    ("JP", "Nhật Bản", "Japan"),
    ("KR", "Hàn Quốc", "South Korea"),
    ("CN", "Trung Quốc", "China"),
    ("TW", "Đài Loan", "Taiwan"),
    ("HK", "Hồng Kông", "Hong Kong"),
    ("SG", "Singapore", "Singapore"),
    ("TH", "Thái Lan", "Thailand"),
    ("MY", "Malaysia", "Malaysia"),
    ("ID", "Indonesia", "Indonesia"),
    ("PH", "Philippines", "Philippines"),
    ("KH", "Campuchia", "Cambodia"),
    ("LA", "Lào", "Laos"),
    ("MM", "Myanmar", "Myanmar"),
    ("BN", "Brunei", "Brunei"),
    ("TL", "Đông Timor", "Timor-Leste"),
    ("IN", "Ấn Độ", "India"),
    ("BD", "Bangladesh", "Bangladesh"),
    ("PK", "Pakistan", "Pakistan"),
    ("LK", "Sri Lanka", "Sri Lanka"),
    ("NP", "Nepal", "Nepal"),
    ("MN", "Mông Cổ", "Mongolia"),
    ("AU", "Úc", "Australia"),
    ("NZ", "New Zealand", "New Zealand"),
    ("CA", "Canada", "Canada"),
    ("MX", "Mexico", "Mexico"),
    ("BR", "Brazil", "Brazil"),
    ("AR", "Argentina", "Argentina"),
    ("CL", "Chile", "Chile"),
    ("CO", "Colombia", "Colombia"),
    ("PE", "Peru", "Peru"),
    ("GB", "Vương quốc Anh", "United Kingdom"),
    ("IE", "Ireland", "Ireland"),
    ("FR", "Pháp", "France"),
    ("DE", "Đức", "Germany"),
    ("NL", "Hà Lan", "Netherlands"),
    ("BE", "Bỉ", "Belgium"),
    ("LU", "Luxembourg", "Luxembourg"),
    ("CH", "Thụy Sĩ", "Switzerland"),
    ("AT", "Áo", "Austria"),
    ("IT", "Ý", "Italy"),
    ("ES", "Tây Ban Nha", "Spain"),
    ("PT", "Bồ Đào Nha", "Portugal"),
    ("SE", "Thụy Điển", "Sweden"),
    ("NO", "Na Uy", "Norway"),
    ("DK", "Đan Mạch", "Denmark"),
    ("FI", "Phần Lan", "Finland"),
    ("PL", "Ba Lan", "Poland"),
    ("CZ", "Séc", "Czechia"),
    ("SK", "Slovakia", "Slovakia"),
    ("HU", "Hungary", "Hungary"),
    ("RO", "Romania", "Romania"),
    ("BG", "Bulgaria", "Bulgaria"),
    ("GR", "Hy Lạp", "Greece"),
    ("UA", "Ukraina", "Ukraine"),
    ("RU", "Nga", "Russia"),
    ("BY", "Belarus", "Belarus"),
    ("TR", "Thổ Nhĩ Kỳ", "Türkiye"),
    ("IL", "Israel", "Israel"),
    (
        "AE",
        "Các Tiểu vương quốc Ả Rập Thống nhất",
        "United Arab Emirates",
    ),
    ("SA", "Ả Rập Xê Út", "Saudi Arabia"),
    ("QA", "Qatar", "Qatar"),
    ("KW", "Kuwait", "Kuwait"),
    ("IR", "Iran", "Iran"),
    ("EG", "Ai Cập", "Egypt"),
    ("ZA", "Nam Phi", "South Africa"),
    ("NG", "Nigeria", "Nigeria"),
    ("KE", "Kenya", "Kenya"),
    ("MA", "Maroc", "Morocco"),
    ("ZZ", "Không rõ", "Unknown"),
];

/// What the panels' script reads, embedded in the page's JSON.
#[derive(Serialize)]
pub struct PanelData {
    refresh_ms: u32,
    now_pages: usize,
    values: usize,
    source_pages: usize,
    readers: &'static str,
    nobody: &'static str,
    empty: &'static str,
    last_hour: &'static str,
    /// Display names of fixed values and countries in the page's language.
    names: std::collections::BTreeMap<&'static str, &'static str>,
}

/// The panels' data in the language of `labels`.
pub fn data(labels: &PanelLabels, vietnamese: bool) -> PanelData {
    let mut names: std::collections::BTreeMap<&str, &str> = labels.names.iter().copied().collect();
    for (code, vi, en) in COUNTRIES {
        names.insert(code, if vietnamese { vi } else { en });
    }
    PanelData {
        refresh_ms: NOW_REFRESH_MS,
        now_pages: NOW_PAGES,
        values: VALUES,
        source_pages: SOURCE_PAGES,
        readers: labels.readers,
        nobody: labels.nobody,
        empty: labels.empty,
        last_hour: labels.last_hour,
        names,
    }
}

/// One ranked list's frame, filled by the script from `by=`.
fn list(title: &str, by: &str) -> Markup {
    html! {
        div class="bd" {
            h3 { (title) }
            ol class="ranked" id={ "bd-" (by) } data-by=(by) {}
        }
    }
}

/// The panels' frames, in the language of `labels` (`vietnamese` picks
/// the countries' names); the script's data rides on the first frame.
pub fn render(labels: &PanelLabels, vietnamese: bool) -> Markup {
    let json = serde_json::to_string(&data(labels, vietnamese)).unwrap_or_else(|_| "{}".into());
    html! {
        section class="card now" id="reading-now" data-panels=(json) {
            div class="head" {
                h2 class="on" { (labels.reading_now) }
                span class="legend" { (labels.every_10s) }
            }
            div class="chart small" id="chart-online" {}
            ol class="ranked" id="now-pages" {}
        }
        "\n"
        section class="card" id="breakdowns" {
            div class="head" {
                h2 { (labels.sources) }
                nav class="periods" id="bd-periods" {
                    @for (i, (key, label)) in labels.periods.iter().enumerate() {
                        button type="button" data-period=(key)
                            aria-pressed=(if i == 0 { "true" } else { "false" }) { (label) }
                    }
                }
            }
            div class="bds" {
                (list(labels.channels, "channel"))
                (list(labels.top_sources, "source"))
                div class="bd" {
                    h3 { (labels.pages_sources) }
                    ol class="ranked pick" id="bd-pages" {}
                    p class="hint" id="bd-page-hint" { (labels.pick_page) }
                    ol class="ranked" id="bd-page-sources" {}
                }
            }
            h2 { (labels.campaigns) }
            div class="bds" {
                (list(labels.utm_source, "utm_source"))
                (list(labels.utm_medium, "utm_medium"))
                (list(labels.utm_campaign, "utm_campaign"))
            }
            div class="bds" {
                (list(labels.devices, "device"))
                (list(labels.browsers, "browser"))
                (list(labels.systems, "os"))
                (list(labels.countries, "country"))
            }
        }
        "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_country_has_a_name_in_both_languages_and_codes_are_unique() {
        assert!(COUNTRIES.len() >= 60);
        let mut codes: Vec<&str> = COUNTRIES.iter().map(|c| c.0).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), COUNTRIES.len());
        for (code, vi, en) in COUNTRIES {
            assert!(code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()));
            assert!(!vi.is_empty() && !en.is_empty());
        }
        let vi = data(&VI, true);
        assert_eq!(vi.names["VN"], "Việt Nam");
        assert_eq!(vi.names["social"], "Mạng xã hội");
        let en = data(&EN, false);
        assert_eq!(en.names["DE"], "Germany");
        assert_eq!(en.names["ZZ"], "Unknown");
    }

    #[test]
    fn the_frames_name_every_dimension_once() {
        let html = render(&VI, true).into_string();
        for by in [
            "channel",
            "source",
            "utm_source",
            "utm_medium",
            "utm_campaign",
            "device",
            "browser",
            "os",
            "country",
        ] {
            assert_eq!(html.matches(&format!("id=\"bd-{by}\"")).count(), 1, "{by}");
        }
        assert!(html.contains("Đang đọc"));
        assert!(html.contains("Nguồn truy cập"));
        assert!(html.contains("aria-pressed=\"true\">Hôm nay<"));
        // The data attribute is escaped by maud and parses back.
        assert!(html.contains("data-panels=\"{&quot;refresh_ms&quot;:10000"));
        let en = render(&EN, false).into_string();
        assert!(en.contains("Reading now") && en.contains("Traffic sources"));
    }
}
