//! The owner's side: [`history`] (series and top lists over the store plus
//! this instance's unflushed days; `authorize`, the one read-token check),
//! [`breakdown`] (where hits came from and on what, over `read::breakdown`),
//! [`online`] (who reads the site now: the pages with the most readers),
//! [`panels`] (the dashboard's reading-now and breakdown panels),
//! [`dashboard`] (`/dashboard/{site}`, rendered server-side) and [`admin`]
//! (the admin listener's import and export, which `luot import` and
//! `luot export` talk to).
//!
//! May use what the router in `http` gives them (imported below, so each
//! names it as `super::…`), `flush::import` (the import queue and wire
//! types), `flush`'s period helpers, `site`, `count`, `store` (the trait)
//! and the bottom.

pub mod admin;
pub mod breakdown;
pub mod dashboard;
pub mod history;
pub mod online;
pub mod panels;

// What the owner's routes take from the router and its shared helpers.
use super::{ApiError, Body, State, constant_time_eq, document, json, lookup, text};
