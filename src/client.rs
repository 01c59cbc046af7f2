//! The other end of the admin listener, for the command line: `luot
//! import` and `luot export` talk to a running luot through it, and
//! `luot healthcheck` asks its public listener whether it is ready.
//!
//! A deliberately small HTTP/1.1 client over a plain TCP stream to a
//! loopback or private address: one request, `Connection: close`, bounded
//! in time and size. It knows nothing of stores.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::http::admin::{Day, Export, ImportRequest, PageTotal, content_id};

/// How long a command waits on the service.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer read.
const MAX_ANSWER: u64 = 256 * 1024 * 1024;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach luot at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("luot answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("unreadable answer: {0}")]
    Answer(String),
    #[error("{path}: {message}")]
    Input { path: String, message: String },
}

/// An answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends one request and reads the whole answer.
///
/// # Errors
/// [`ClientError::Connect`] or [`ClientError::Answer`].
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    token: Option<&str>,
) -> Result<Answer, ClientError> {
    let connect = |source| ClientError::Connect { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(connect)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(connect)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(connect)?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).map_err(connect)?;
    stream.write_all(body).map_err(connect)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut raw)
        .map_err(|e| ClientError::Answer(e.to_string()))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| ClientError::Answer("no HTTP head".into()))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| ClientError::Answer(format!("bad status line: {head}")))?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body).ok_or_else(|| ClientError::Answer("bad chunked body".into()))?;
    }
    Ok(Answer { status, body })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

fn ok(answer: Answer) -> Result<Vec<u8>, ClientError> {
    if answer.status / 100 == 2 {
        Ok(answer.body)
    } else {
        Err(ClientError::Status {
            status: answer.status,
            body: String::from_utf8_lossy(&answer.body).into_owned(),
        })
    }
}

/// Reads daily history from CSV: `date,hits[,visitors]` per line, an
/// optional header line, blank lines ignored.
///
/// # Errors
/// [`ClientError::Input`] naming the line.
pub fn parse_history(path: &str, text: &str) -> Result<Vec<Day>, ClientError> {
    let mut days = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (i == 0 && line.to_ascii_lowercase().starts_with("date")) {
            continue;
        }
        let bad = |message: String| ClientError::Input {
            path: format!("{path}:{}", i + 1),
            message,
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if !(2..=3).contains(&fields.len()) {
            return Err(bad("expected date,hits[,visitors]".into()));
        }
        let date = fields[0]
            .parse()
            .map_err(|_| bad(format!("`{}` is not a date like 2026-11-27", fields[0])))?;
        let hits = fields[1]
            .parse()
            .map_err(|_| bad(format!("`{}` is not a number of hits", fields[1])))?;
        let visitors = match fields.get(2) {
            None | Some(&"") => None,
            Some(v) => Some(
                v.parse()
                    .map_err(|_| bad(format!("`{v}` is not a number of visitors")))?,
            ),
        };
        days.push(Day {
            date,
            hits,
            visitors,
        });
    }
    Ok(days)
}

/// Fills in the request's id from its content (so the same import twice
/// has the same id) and sends it.
///
/// # Errors
/// A [`ClientError`].
pub fn import(
    admin: SocketAddr,
    token: Option<&str>,
    mut request: ImportRequest,
) -> Result<String, ClientError> {
    request.id = String::new();
    let canonical = serde_json::to_vec(&request).map_err(|e| ClientError::Answer(e.to_string()))?;
    request.id = content_id(&canonical);
    let body = serde_json::to_vec(&request).map_err(|e| ClientError::Answer(e.to_string()))?;
    let answer = ok(request_with(
        admin,
        "POST",
        "/admin/v1/import",
        &body,
        token,
    )?)?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn request_with(
    admin: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    token: Option<&str>,
) -> Result<Answer, ClientError> {
    request(admin, method, path, body, token)
}

/// The import that recreates an export in an empty store: its days, its
/// pages' totals, and its total (less the configured `initial_total`,
/// which lives in configuration, not in the store).
pub fn import_from_export(export: &Export) -> ImportRequest {
    ImportRequest {
        site: export.site.clone(),
        id: String::new(),
        total: Some(export.total.saturating_sub(export.initial_total)),
        pages: export
            .pages
            .iter()
            .map(|p| PageTotal {
                page: p.page.clone(),
                total: p.total,
            })
            .collect(),
        history: export
            .days
            .iter()
            .filter(|d| d.hits > 0 || d.visitors.is_some_and(|v| v > 0))
            .map(|d| Day {
                date: d.date,
                hits: d.hits,
                visitors: d.visitors,
            })
            .collect(),
    }
}

/// Fetches a site's export.
///
/// # Errors
/// A [`ClientError`].
pub fn export(
    admin: SocketAddr,
    token: Option<&str>,
    site: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Export, ClientError> {
    let mut query = String::new();
    for (k, v) in [("from", from), ("to", to)] {
        if let Some(v) = v {
            query.push(if query.is_empty() { '?' } else { '&' });
            query.push_str(k);
            query.push('=');
            query.push_str(v);
        }
    }
    let path = format!("/admin/v1/sites/{site}/export{query}");
    let body = ok(request_with(admin, "GET", &path, b"", token)?)?;
    serde_json::from_slice(&body).map_err(|e| ClientError::Answer(e.to_string()))
}

/// An export as CSV: the daily series (`date,hits,visitors`), or with
/// `pages` the page totals (`page,total`).
pub fn export_csv(export: &Export, pages: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if pages {
        out.push_str("page,total\n");
        for p in &export.pages {
            let quoted = if p.page.contains([',', '"']) {
                format!("\"{}\"", p.page.replace('"', "\"\""))
            } else {
                p.page.clone()
            };
            let _ = writeln!(out, "{quoted},{}", p.total);
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

    #[test]
    fn history_csv_with_and_without_header_and_visitors() {
        let text = "date,hits,visitors\n2026-11-01,100,40\n\n2026-11-02, 80 ,\n2026-11-03,5\n";
        let days = parse_history("h.csv", text).unwrap();
        assert_eq!(days.len(), 3);
        assert_eq!(days[0].hits, 100);
        assert_eq!(days[0].visitors, Some(40));
        assert_eq!(days[1].visitors, None);
        assert_eq!(days[2].date, jiff::civil::Date::constant(2026, 11, 3));
    }

    #[test]
    fn history_csv_errors_name_the_line() {
        let err = parse_history("h.csv", "2026-11-01,100\n2026-13-01,5\n").unwrap_err();
        assert!(err.to_string().starts_with("h.csv:2:"), "{err}");
        let err = parse_history("h.csv", "2026-11-01,many\n").unwrap_err();
        assert!(err.to_string().contains("h.csv:1"), "{err}");
    }

    #[test]
    fn chunked_bodies_are_reassembled() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"zz\r\n").is_none());
    }

    #[test]
    fn export_csv_quotes_awkward_pages() {
        let e = Export {
            site: "demo".into(),
            exported_at: String::new(),
            total: 10,
            initial_total: 0,
            from: jiff::civil::Date::constant(2026, 11, 1),
            to: jiff::civil::Date::constant(2026, 11, 1),
            days: vec![],
            pages: vec![PageTotal {
                page: "/a,\"b\"".into(),
                total: 3,
            }],
        };
        assert_eq!(export_csv(&e, true), "page,total\n\"/a,\"\"b\"\"\",3\n");
    }
}
