//! luot — a high-throughput visitor counter service.
//!
//! # Layout
//!
//! One hit travels through the modules in this order; dependencies point the
//! same way (HTTP → counting → flush → store; config and metrics below all):
//!
//! - [`http`]: the listeners, routes, limits, errors and CORS;
//! - [`ingest`]: a beacon's fields, the client address, counting it;
//! - [`sites`]: the declared sites as a swappable snapshot and their state;
//! - [`page`], [`period`], [`visitor`], [`sketch`]: what a page, a local day
//!   and a visitor are, and distinct counting;
//! - [`tally`]: the lock-free pending deltas the hot path increments;
//! - [`ledger`]: store readings plus unflushed deltas, for reads;
//! - [`flush`]: batches, exactly-once application, retries;
//! - [`store`]: the store trait and its backends;
//! - [`config`], [`metrics`], [`background`]: at the bottom;
//! - [`app`]: wiring, tasks, shutdown. Only `app` spawns long-lived tasks.
//! - [`cli`]: what the `import`, `export` and `healthcheck` commands do,
//!   over HTTP to a running luot.
// One `unsafe` block, `background::short_slice` (a system call no crate
// wraps), allowed where it stands with its measurement.
#![deny(unsafe_code)]

pub mod app;
pub mod background;
pub mod cli;
pub mod config;
pub mod count;
pub mod flush;
pub mod http;

pub mod ingest;
pub mod metrics;
pub mod page;
pub mod period;
pub mod read;
pub mod site;
pub mod sketch;
pub mod store;
