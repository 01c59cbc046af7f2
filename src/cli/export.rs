//! `luot export`: fetches a site's export (its daily series with each
//! day's breakdowns, and every page's total) from the admin listener and
//! writes it as JSON (what `luot import --from-export` reads back), as the
//! daily series in CSV, as the page totals in CSV, or as the daily
//! breakdowns in CSV, to a file or standard output.
//!
//! The CSV forms are for spreadsheets: every field that came from clients
//! goes through `csv_cell` (quoted per RFC 4180, formulas neutralised).
//! Breakdowns get a CSV of their own (`date,dimension,value,hits`), since
//! the daily series has one line a day and a value per column would make
//! its columns differ from day to day.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::str::FromStr;

use hyper::Method;

use super::{AdminTarget, CliError, ClientError, HttpClient};
use crate::flush::import::{Export, csv_cell};

/// What to export, as the command line gives it.
#[derive(Debug, Clone)]
pub struct ExportCommand {
    pub site: String,
    /// First day (default: as far back as site days are kept).
    pub from: Option<String>,
    /// Last day (default: today in the site's zone).
    pub to: Option<String>,
    /// `json`, `csv`, `pages-csv` or `breakdowns-csv`, checked by
    /// [`Format::from_str`].
    pub format: String,
    /// Where to write; standard output when `None`.
    pub output: Option<PathBuf>,
}

/// How an export is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Everything, pretty-printed JSON.
    Json,
    /// The daily series: `date,hits,visitors`.
    Csv,
    /// The page totals: `page,total,title`.
    PagesCsv,
    /// The site's breakdowns, a line per day, dimension and value:
    /// `date,dimension,value,hits`.
    BreakdownsCsv,
}

impl FromStr for Format {
    type Err = CliError;

    fn from_str(s: &str) -> Result<Self, CliError> {
        match s {
            "json" => Ok(Self::Json),
            "csv" => Ok(Self::Csv),
            "pages-csv" => Ok(Self::PagesCsv),
            "breakdowns-csv" => Ok(Self::BreakdownsCsv),
            other => Err(CliError::Format(other.to_string())),
        }
    }
}

/// Fetches the export and writes it where the command says.
///
/// # Errors
/// [`CliError::Format`] (before anything is fetched), [`CliError::Client`],
/// or [`CliError::File`] when the output cannot be written.
pub fn run(target: &AdminTarget, command: &ExportCommand) -> Result<(), CliError> {
    let format: Format = command.format.parse()?;
    let export = fetch(
        &target.client()?,
        &command.site,
        command.from.as_deref(),
        command.to.as_deref(),
    )?;
    let text = render(&export, format)?;
    match &command.output {
        Some(path) => std::fs::write(path, text),
        None => writeln!(std::io::stdout().lock(), "{text}"),
    }
    .map_err(|source| CliError::File {
        path: command.output.clone().unwrap_or_else(|| "<stdout>".into()),
        source,
    })
}

/// Fetches a site's export.
///
/// # Errors
/// [`CliError::Client`]: a failed request, a refusal (404 for an unknown
/// site, 400 for bad dates), or an answer that is not an export.
pub fn fetch(
    client: &HttpClient,
    site: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Export, CliError> {
    let body = client
        .request(Method::GET, &export_path(site, from, to), Vec::new())?
        .success()?;
    Ok(serde_json::from_slice(&body).map_err(|e| ClientError::Answer(e.to_string()))?)
}

/// The export route for a site and optional first and last days, each
/// part percent-encoded (a site id never needs it; anything else then
/// reaches the service as written and is refused there).
fn export_path(site: &str, from: Option<&str>, to: Option<&str>) -> String {
    let mut path = format!("/admin/v1/sites/{}/export", encode(site));
    for (key, value) in [("from", from), ("to", to)] {
        if let Some(value) = value {
            let separator = if path.contains('?') { '&' } else { '?' };
            let _ = write!(path, "{separator}{key}={}", encode(value));
        }
    }
    path
}

/// Percent-encodes every byte outside RFC 3986's unreserved set.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The export as text in the given format.
///
/// # Errors
/// [`CliError::Encode`] if JSON encoding fails.
pub fn render(export: &Export, format: Format) -> Result<String, CliError> {
    match format {
        Format::Json => serde_json::to_string_pretty(export).map_err(CliError::Encode),
        Format::Csv => Ok(to_csv(export, false)),
        Format::PagesCsv => Ok(to_csv(export, true)),
        Format::BreakdownsCsv => Ok(breakdowns_csv(export)),
    }
}

/// The export's breakdowns as CSV: `date,dimension,value,hits`, days in
/// order, then dimensions and values by name.
pub fn breakdowns_csv(export: &Export) -> String {
    let mut out = String::from("date,dimension,value,hits\n");
    for day in &export.days {
        for (dimension, values) in &day.breakdown {
            for (value, hits) in values {
                let _ = writeln!(
                    out,
                    "{},{},{},{hits}",
                    day.date,
                    csv_cell(dimension),
                    csv_cell(value)
                );
            }
        }
    }
    out
}

/// An export as CSV: the daily series (`date,hits,visitors`), or with
/// `pages` the page totals (`page,total,title`, no title left empty).
pub fn to_csv(export: &Export, pages: bool) -> String {
    let mut out = String::new();
    if pages {
        out.push_str("page,total,title\n");
        for p in &export.pages {
            let title = p.title.as_deref().map(csv_cell).unwrap_or_default();
            let _ = writeln!(out, "{},{},{title}", csv_cell(&p.page), p.total);
        }
    } else {
        out.push_str("date,hits,visitors\n");
        for d in &export.days {
            let v = d.visitors.map(|v| v.to_string()).unwrap_or_default();
            let _ = writeln!(out, "{},{},{v}", d.date, d.hits);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flush::import::{ExportDay, PageTotal};
    use jiff::civil::Date;

    fn export() -> Export {
        Export {
            site: "demo".into(),
            exported_at: String::new(),
            total: 10,
            initial_total: 0,
            from: Date::constant(2026, 11, 1),
            to: Date::constant(2026, 11, 1),
            days: vec![ExportDay {
                date: Date::constant(2026, 11, 1),
                hits: 7,
                visitors: None,
                breakdown: [
                    ("channel", vec![("search", 4), ("social", 2)]),
                    (
                        "utm_campaign",
                        vec![("=cmd|' /C calc'!A0", 1), ("tết, 2027", 2)],
                    ),
                ]
                .into_iter()
                .map(|(d, values)| {
                    let values = values.into_iter().map(|(v, n)| (v.to_string(), n));
                    (d.to_string(), values.collect())
                })
                .collect(),
            }],
            pages: vec![
                PageTotal {
                    page: "/a,\"b\"".into(),
                    total: 3,
                    title: Some("Tin \"A\", <b>x</b>".into()),
                },
                PageTotal {
                    page: "/c".into(),
                    total: 1,
                    title: None,
                },
            ],
        }
    }

    #[test]
    fn export_csv_quotes_awkward_pages() {
        assert_eq!(
            to_csv(&export(), true),
            "page,total,title\n\"/a,\"\"b\"\"\",3,\"Tin \"\"A\"\", <b>x</b>\"\n/c,1,\n"
        );
    }

    #[test]
    fn breakdowns_csv_has_a_line_per_day_dimension_and_value_safely_quoted() {
        let text = render(&export(), Format::BreakdownsCsv).unwrap();
        assert_eq!(
            text,
            "date,dimension,value,hits\n\
             2026-11-01,channel,search,4\n\
             2026-11-01,channel,social,2\n\
             2026-11-01,utm_campaign,\"'=cmd|' /C calc'!A0\",1\n\
             2026-11-01,utm_campaign,\"tết, 2027\",2\n"
        );
        assert_eq!(
            "breakdowns-csv".parse::<Format>().unwrap(),
            Format::BreakdownsCsv
        );
    }

    #[test]
    fn the_daily_series_leaves_unknown_visitors_empty() {
        let text = render(&export(), Format::Csv).unwrap();
        assert_eq!(text, "date,hits,visitors\n2026-11-01,7,\n");
    }

    #[test]
    fn formats_are_named_as_the_flag_says() {
        assert_eq!("pages-csv".parse::<Format>().unwrap(), Format::PagesCsv);
        let err = "xml".parse::<Format>().unwrap_err().to_string();
        assert_eq!(
            err,
            "--format xml: expected json, csv, pages-csv or breakdowns-csv"
        );
    }

    #[test]
    fn the_path_names_the_site_and_the_days_given() {
        assert_eq!(
            export_path("demo", None, None),
            "/admin/v1/sites/demo/export"
        );
        assert_eq!(
            export_path("demo", Some("2026-11-01"), Some("2026-11-30")),
            "/admin/v1/sites/demo/export?from=2026-11-01&to=2026-11-30"
        );
        assert_eq!(
            export_path("a b/c", None, Some("x&y")),
            "/admin/v1/sites/a%20b%2Fc/export?to=x%26y"
        );
    }
}
