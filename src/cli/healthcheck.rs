//! `luot healthcheck`: asks the public listener's `/readyz` whether this
//! luot is ready, within a few seconds, for a container's health check.
//! It reads the configuration it is given and nothing else; the exit code
//! is `main`'s.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use hyper::Method;

use super::client::{Bounds, ClientError, HttpClient};
use crate::config::Config;

/// Why the service is not healthy, as the command prints it.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// It answered `/readyz` with something other than 200.
    #[error("{addr}: not ready")]
    NotReady { addr: SocketAddr },
    /// It could not be asked.
    #[error("{addr}: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
}

/// The address to ask: `server.listen`, with an unspecified address
/// replaced by the loopback address of the same family.
pub fn address(config: &Config) -> SocketAddr {
    let mut addr = config.server.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            Ipv4Addr::LOCALHOST.into()
        } else {
            Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}

/// Asks `GET /readyz` on the configured public listener (connect within
/// 2 s, the whole answer within 5 s).
///
/// # Errors
/// [`HealthError::NotReady`] for any status but 200,
/// [`HealthError::Unreachable`] when no answer came.
pub fn check(config: &Config) -> Result<(), HealthError> {
    let addr = address(config);
    let unreachable = |error| HealthError::Unreachable {
        addr,
        reason: match error {
            // The address is said once, before the socket's own words.
            ClientError::Connect { reason, .. } => reason,
            other => other.to_string(),
        },
    };
    let client = HttpClient::new(addr, None, Bounds::HEALTH).map_err(unreachable)?;
    let answer = client
        .request(Method::GET, "/readyz", Vec::new())
        .map_err(unreachable)?;
    if answer.status == 200 {
        Ok(())
    } else {
        Err(HealthError::NotReady { addr })
    }
}
