//! luot — a high-throughput visitor counter service.
//!
//! # Layout
//!
//! One hit travels through the stages in this order, and each stage may use
//! only the stages listed after it (`tests/architecture.rs` holds the
//! table; ARCHITECTURE.md shows it):
//!
//! - [`app`]: wiring, tasks, shutdown. Only `app` spawns long-lived tasks;
//!   [`cli`]: what the `import`, `export` and `healthcheck` commands do,
//!   over HTTP to a running luot.
//! - [`http`]: the listeners, routes, limits, errors and CORS; the readers'
//!   faces (`http::faces`) and the owner's routes (`http::owner`).
//! - [`ingest`]: a beacon's fields, the client address, the bot guard,
//!   counting it; [`read`]: figures and breakdowns for readers; [`flush`]:
//!   batches, exactly-once application, retries, the write-ahead file,
//!   imports.
//! - [`site`]: the declared sites as a swappable snapshot and their state.
//! - [`count`]: the per-site state a hit touches: tally, ledger, visitors,
//!   rate limit, repeat-view filter.
//! - [`store`]: the store trait and its backends.
//! - At the bottom: [`config`] (which may use `period` and `page`),
//!   [`period`], [`page`], [`sketch`], [`metrics`], [`background`].
// One `unsafe` block, `background::short_slice` (a system call no crate
// wraps), allowed where it stands with its measurement.
#![deny(unsafe_code)]

pub mod app;
pub mod cli;

pub mod http;

pub mod flush;
pub mod ingest;
pub mod read;

pub mod site;

pub mod count;

pub mod store;

pub mod background;
pub mod config;
pub mod metrics;
pub mod page;
pub mod period;
pub mod sketch;
