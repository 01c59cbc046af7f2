//! What an import and an export are on the wire, and how an import reaches
//! the flusher: the admin routes (`http::owner::admin`) and the command
//! line (`cli`) both use these types, and the flusher, the store's only
//! writer, takes an [`ImportJob`] from its queue. They live here, below
//! `http`, so that the flusher never reaches up into the routes.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::Hasher;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::store::{Applied, SiteBatch, StoreError};

/// An import handed to the flusher, with where to send its outcome.
pub struct ImportJob {
    pub batch: SiteBatch,
    pub reply: oneshot::Sender<Result<Applied, StoreError>>,
}

/// The flusher's end of the import queue.
pub type ImportQueue = mpsc::Sender<ImportJob>;

/// What `luot import` sends.
#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    pub site: String,
    /// Derived from the imported file's content (16–64 hex digits).
    pub id: String,
    /// Added once to the site's total (a starting total carried over).
    #[serde(default)]
    pub total: Option<u64>,
    /// Starting totals of pages.
    #[serde(default)]
    pub pages: Vec<PageTotal>,
    /// Daily history: sets day, week and month figures and the series, not
    /// the total.
    #[serde(default)]
    pub history: Vec<Day>,
}

#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PageTotal {
    pub page: String,
    pub total: u64,
    /// The page's last title (an export carries it; an import keeps it
    /// as a beacon's would be).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Day {
    pub date: Date,
    pub hits: u64,
    #[serde(default)]
    pub visitors: Option<u64>,
    /// The day's breakdowns, as an export carries them (see
    /// [`ExportDay::breakdown`]). Left out of the request when empty, so
    /// an import without them keeps the id it always had.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub breakdown: Breakdowns,
}

/// A day's breakdowns: dimension name (`channel`, `source`, …) → value →
/// hits. Sorted maps, so the same figures always encode to the same bytes
/// (an import's id is a hash of them). `(other)` is carried as a value;
/// `(unknown)` is not stored, it is the day's hits the values do not hold.
pub type Breakdowns = BTreeMap<String, BTreeMap<String, u64>>;

/// A stable 64-bit content hash as hex, for import ids.
pub fn content_id(bytes: &[u8]) -> String {
    let mut h = siphasher::sip::SipHasher13::new_with_keys(0x696d_706f_7274, 0x6c75_6f74);
    h.write(bytes);
    let a = h.finish();
    h.write_u8(0xff);
    format!("{a:016x}{:016x}", h.finish())
}

/// What `luot export` receives (and `luot import --from-export` reads).
#[derive(Debug, Serialize, Deserialize)]
pub struct Export {
    pub site: String,
    pub exported_at: String,
    /// The total figure (with `initial_total`).
    pub total: u64,
    /// The site's configured `initial_total` (not in the store).
    pub initial_total: u64,
    pub from: Date,
    pub to: Date,
    pub days: Vec<ExportDay>,
    pub pages: Vec<PageTotal>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ExportDay {
    pub date: Date,
    pub hits: u64,
    pub visitors: Option<u64>,
    /// The site's breakdowns of the day, by every dimension, as of the
    /// last flush (absent in exports made before breakdowns existed, and
    /// for days without them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub breakdown: Breakdowns,
}

/// One CSV field (RFC 4180) of text that came from clients (a page, a
/// referrer host, a campaign), safe to open in a spreadsheet: a field
/// starting with `=`, `+`, `-`, `@`, a tab or a carriage return, which a
/// spreadsheet would take for a formula, gets a leading `'` (OWASP's
/// advice), and a field holding a comma, a quote, a line break or that
/// prefix is quoted, its quotes doubled.
pub fn csv_cell(text: &str) -> Cow<'_, str> {
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if !formula && !text.contains([',', '"', '\n', '\r']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 4);
    out.push('"');
    if formula {
        out.push('\'');
    }
    for c in text.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_cell("google"), "google");
        assert_eq!(csv_cell("(other)"), "(other)");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        for lead in ["+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            let cell = csv_cell(lead);
            assert!(cell.starts_with("\"'"), "{lead:?} → {cell}");
        }
        // A sign inside a value is harmless.
        assert_eq!(csv_cell("e-mail"), "e-mail");
    }
}
