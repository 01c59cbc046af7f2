//! `luot import`: turns the command's flags and files (a starting total,
//! pages' starting totals, a CSV of daily history, or a `luot export` file)
//! into one `ImportRequest`, names it by its content so that the same
//! import twice is refused by the store's watermark, and sends it to the
//! admin listener. It decides nothing about what an import does to the
//! figures: the server does.

use std::path::{Path, PathBuf};

use hyper::Method;

use super::{AdminTarget, CliError, ClientError, HttpClient};
use crate::flush::import::{Day, Export, ImportRequest, PageTotal, content_id};

/// The admin route imports go to.
const IMPORT_PATH: &str = "/admin/v1/import";

/// What to import, as the command line gives it.
#[derive(Debug, Clone, Default)]
pub struct ImportCommand {
    /// The site to import into.
    pub site: String,
    /// A starting total added to the site's total.
    pub total: Option<u64>,
    /// Pages' starting totals, each `PAGE=N`.
    pub page_totals: Vec<String>,
    /// A CSV file of `date,hits[,visitors]` lines.
    pub history: Option<PathBuf>,
    /// A `luot export` JSON file to recreate.
    pub from_export: Option<PathBuf>,
}

/// Builds the import and sends it; returns the service's answer (JSON:
/// whether it was applied, how many days were too old).
///
/// # Errors
/// A [`CliError`] for an unreadable or malformed input, nothing to import,
/// or a failed request (the service's refusal carries its status).
pub fn run(target: &AdminTarget, command: &ImportCommand) -> Result<String, CliError> {
    let request = build_request(command)?;
    send(&target.client()?, request)
}

/// The request the command describes.
///
/// # Errors
/// As [`run`], before anything is sent.
pub fn build_request(command: &ImportCommand) -> Result<ImportRequest, CliError> {
    let mut request = match &command.from_export {
        Some(path) => {
            let export: Export =
                serde_json::from_str(&read(path)?).map_err(|source| CliError::NotAnExport {
                    path: path.clone(),
                    source,
                })?;
            from_export(&export)
        }
        None => ImportRequest {
            total: command.total,
            ..ImportRequest::default()
        },
    };
    request.site = command.site.clone();
    for item in &command.page_totals {
        request.pages.push(page_total(item)?);
    }
    if let Some(path) = &command.history {
        request.history = parse_history(&path.display().to_string(), &read(path)?)?;
    }
    if request.total.is_none() && request.pages.is_empty() && request.history.is_empty() {
        return Err(CliError::NothingToImport);
    }
    Ok(request)
}

/// Fills in the request's id from its content (so the same import twice
/// has the same id) and sends it; returns the answer's body.
///
/// # Errors
/// [`CliError::Client`], with the status and body of a refusal.
pub fn send(client: &HttpClient, mut request: ImportRequest) -> Result<String, CliError> {
    let encode = |request: &ImportRequest| {
        serde_json::to_vec(request).map_err(|e| ClientError::Answer(e.to_string()))
    };
    request.id = String::new();
    request.id = content_id(&encode(&request)?);
    let body = encode(&request)?;
    let answer = client.request(Method::POST, IMPORT_PATH, body)?.success()?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// The import that recreates an export in an empty store: its days (with
/// their breakdowns), its pages' totals, and its total (less the configured `initial_total`,
/// which lives in configuration, not in the store).
pub fn from_export(export: &Export) -> ImportRequest {
    ImportRequest {
        site: export.site.clone(),
        id: String::new(),
        total: Some(export.total.saturating_sub(export.initial_total)),
        pages: export.pages.clone(),
        history: export
            .days
            .iter()
            .filter(|d| d.hits > 0 || d.visitors.is_some_and(|v| v > 0))
            .map(|d| Day {
                date: d.date,
                hits: d.hits,
                visitors: d.visitors,
                breakdown: d.breakdown.clone(),
            })
            .collect(),
    }
}

/// One `--page-total PAGE=N` (the page may itself hold `=`).
///
/// # Errors
/// [`CliError::PageTotal`].
pub fn page_total(item: &str) -> Result<PageTotal, CliError> {
    let bad = |problem: String| CliError::PageTotal {
        item: item.to_string(),
        problem,
    };
    let (page, n) = item
        .rsplit_once('=')
        .ok_or_else(|| bad("expected PAGE=N".into()))?;
    let total = n
        .parse()
        .map_err(|_| bad(format!("`{n}` is not a number")))?;
    Ok(PageTotal {
        page: page.to_string(),
        total,
        title: None,
    })
}

/// Reads daily history from CSV: `date,hits[,visitors]` per line, an
/// optional header line, blank lines ignored. `path` names the file in
/// errors.
///
/// # Errors
/// [`CliError::Input`] naming the line (`path:line`).
pub fn parse_history(path: &str, text: &str) -> Result<Vec<Day>, CliError> {
    let mut days = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (i == 0 && line.to_ascii_lowercase().starts_with("date")) {
            continue;
        }
        let day = parse_day(line).map_err(|message| CliError::Input {
            at: format!("{path}:{}", i + 1),
            message,
        })?;
        days.push(day);
    }
    Ok(days)
}

/// One history line, or what is wrong with it.
fn parse_day(line: &str) -> Result<Day, String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    if !(2..=3).contains(&fields.len()) {
        return Err("expected date,hits[,visitors]".into());
    }
    let date = fields[0]
        .parse()
        .map_err(|_| format!("`{}` is not a date like 2026-11-27", fields[0]))?;
    let hits = fields[1]
        .parse()
        .map_err(|_| format!("`{}` is not a number of hits", fields[1]))?;
    let visitors = match fields.get(2) {
        None | Some(&"") => None,
        Some(v) => Some(
            v.parse()
                .map_err(|_| format!("`{v}` is not a number of visitors"))?,
        ),
    };
    Ok(Day {
        date,
        hits,
        visitors,
        breakdown: Default::default(),
    })
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::File {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flush::import::ExportDay;
    use jiff::civil::Date;

    #[test]
    fn history_csv_with_and_without_header_and_visitors() {
        let text = "date,hits,visitors\n2026-11-01,100,40\n\n2026-11-02, 80 ,\n2026-11-03,5\n";
        let days = parse_history("h.csv", text).unwrap();
        assert_eq!(days.len(), 3);
        assert_eq!(days[0].hits, 100);
        assert_eq!(days[0].visitors, Some(40));
        assert_eq!(days[1].visitors, None);
        assert_eq!(days[2].date, Date::constant(2026, 11, 3));
    }

    #[test]
    fn history_csv_errors_name_the_line() {
        let err = parse_history("h.csv", "2026-11-01,100\n2026-13-01,5\n").unwrap_err();
        assert!(err.to_string().starts_with("h.csv:2:"), "{err}");
        let err = parse_history("h.csv", "2026-11-01,many\n").unwrap_err();
        assert!(err.to_string().contains("h.csv:1"), "{err}");
    }

    #[test]
    fn page_totals_split_at_the_last_equals_sign() {
        let p = page_total("/search?q=a=7").unwrap();
        assert_eq!((p.page.as_str(), p.total), ("/search?q=a", 7));
        let err = page_total("/about").unwrap_err().to_string();
        assert_eq!(err, "--page-total /about: expected PAGE=N");
        let err = page_total("/about=x").unwrap_err().to_string();
        assert_eq!(err, "--page-total /about=x: `x` is not a number");
    }

    #[test]
    fn an_empty_import_is_refused_before_anything_is_sent() {
        let command = ImportCommand {
            site: "demo".into(),
            ..ImportCommand::default()
        };
        assert!(matches!(
            build_request(&command),
            Err(CliError::NothingToImport)
        ));
    }

    #[test]
    fn an_export_becomes_an_import_of_its_days_pages_and_stored_total() {
        let day = |d, hits, visitors| ExportDay {
            date: Date::constant(2026, 11, d),
            hits,
            visitors,
            breakdown: Default::default(),
        };
        let export = Export {
            site: "old".into(),
            exported_at: String::new(),
            total: 1_000,
            initial_total: 400,
            from: Date::constant(2026, 11, 1),
            to: Date::constant(2026, 11, 3),
            days: vec![day(1, 0, None), day(2, 0, Some(3)), day(3, 9, Some(4))],
            pages: vec![PageTotal {
                page: "/".into(),
                total: 600,
                title: None,
            }],
        };
        let request = from_export(&export);
        assert_eq!(request.total, Some(600));
        assert_eq!(request.pages.len(), 1);
        let dates: Vec<_> = request.history.iter().map(|d| d.date.day()).collect();
        assert_eq!(dates, [2, 3], "empty days are left out");
    }

    #[test]
    fn an_exports_breakdowns_travel_in_the_import_and_its_id() {
        let mut day = ExportDay {
            date: Date::constant(2026, 11, 2),
            hits: 9,
            visitors: None,
            breakdown: Default::default(),
        };
        let export = |day: &ExportDay| Export {
            site: "old".into(),
            exported_at: String::new(),
            total: 9,
            initial_total: 0,
            from: day.date,
            to: day.date,
            days: vec![ExportDay {
                breakdown: day.breakdown.clone(),
                ..*day
            }],
            pages: Vec::new(),
        };
        let plain = serde_json::to_string(&from_export(&export(&day))).unwrap();
        assert!(
            !plain.contains("breakdown"),
            "an import without breakdowns keeps its old bytes (and id): {plain}"
        );
        day.breakdown
            .entry("channel".into())
            .or_default()
            .insert("search".into(), 6);
        let request = from_export(&export(&day));
        assert_eq!(request.history[0].breakdown["channel"]["search"], 6);
        let with = serde_json::to_string(&request).unwrap();
        assert!(
            with.contains(r#""breakdown":{"channel":{"search":6}}"#),
            "{with}"
        );
        assert_ne!(content_id(with.as_bytes()), content_id(plain.as_bytes()));
    }
}
