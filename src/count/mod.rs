//! Counting: the per-site state the hot path touches, below the site that
//! owns it.
//!
//! - [`tally`]: the lock-free pending deltas a hit increments and the
//!   flusher takes;
//! - [`breakdown`]: the same for the hit's dimensions (channel, source,
//!   campaign, browser, system, device, country), bounded per day;
//! - [`ledger`]: the last store reading plus this instance's deltas not in
//!   it yet (open and frozen batches), what readers compose figures from;
//! - [`titles`]: the last title seen of each page, for the next flush;
//! - [`visitor`]: visitor identity, the online ring, the visitor batcher;
//! - [`page_online`]: each page's readers now and the ranking of pages by
//!   them, bounded by the pages read in the window;
//! - [`limit`], [`dedupe`]: the per-client state of the rate limit and the
//!   repeat-view filter.
//!
//! `tally` and `ledger` know each other (a tally cell keeps a page's
//! latest ledger reading, [`ledger::Stored`]), which is why they share this
//! module. May use: `store` (its key and batch types), and the bottom
//! (`config`, `period`, `page`, `sketch`, `metrics`, `background`). Knows
//! nothing of sites, HTTP or the flusher.

pub mod breakdown;
pub mod dedupe;
pub mod ledger;
pub mod limit;
pub mod page_online;
pub mod tally;
pub mod titles;
pub mod visitor;
