//! What an import and an export are on the wire, and how an import reaches
//! the flusher: the admin routes (`http::owner::admin`) and the command
//! line (`cli`) both use these types, and the flusher, the store's only
//! writer, takes an [`ImportJob`] from its queue. They live here, below
//! `http`, so that the flusher never reaches up into the routes.

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
}

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
}
