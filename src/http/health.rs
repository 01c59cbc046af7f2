//! Health: the `/healthz` answer ([`Health`]), `/readyz` ([`readyz`]: ready,
//! and the store answering a ping within a second) and the readiness flag
//! that `app` raises once start-up is complete and lowers when draining
//! begins ([`set_ready`]).

use std::sync::atomic::Ordering;

use hyper::{Response, StatusCode};
use serde::Serialize;

use super::answer::json;
use super::{Body, State};
use crate::store::Store;

#[derive(Serialize)]
pub(super) struct Health {
    pub(super) status: &'static str,
}

pub(super) async fn readyz(state: &State) -> Response<Body> {
    #[derive(Serialize)]
    struct Ready<'a> {
        ready: bool,
        store: &'a str,
        reason: Option<&'a str>,
    }
    let reason = if !state.ready.load(Ordering::Acquire) {
        Some("starting or draining")
    } else {
        match tokio::time::timeout(std::time::Duration::from_secs(1), state.store.ping()).await {
            Ok(Ok(())) => None,
            _ => Some("store unreachable"),
        }
    };
    let status = if reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        &Ready {
            ready: reason.is_none(),
            store: state.store.kind(),
            reason,
        },
    )
}

/// Marks the service not ready (draining).
pub fn set_ready(state: &State, ready: bool) {
    state.ready.store(ready, Ordering::Release);
}
