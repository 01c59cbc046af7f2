//! The faces readers see, one file each: [`snippet`] (`/luot.js`, the
//! beacon script), [`widget`] (`/widget/{site}`, an HTML page to embed),
//! [`badge`] (`/badge/{site}.svg`), [`busuanzi`] (`/busuanzi`, the JSONP
//! API of the service of that name, whose hit is an ordinary beacon) and
//! [`figures`] (figures as JSON, written straight into the answer) and
//! [`ignore`] (`/ignore/{site}`, the page that leaves an editor's own
//! visits out) and [`top`] (`/widget/{site}/top`, a most-read box to
//! embed, which reads its list through `owner::history`).
//!
//! They read figures and never count, except `busuanzi`. May use what the
//! router in `http` gives them (imported below, so each face names it as
//! `super::…`), `ingest` (beacon types), `count::ledger` (figures) and the
//! bottom; never a store.

pub mod badge;
pub mod busuanzi;
pub mod figures;
pub mod ignore;
pub mod snippet;
pub mod top;
pub mod widget;

// What the faces take from the router and its shared helpers.
use super::{ApiError, Body, State, count_beacon, document, header_str, lookup, sender, text};
