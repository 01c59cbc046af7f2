//! The command line's work: what `luot import`, `luot export` and `luot
//! healthcheck` do, so that `main` only parses flags and picks exit codes.
//!
//! - [`client`]: the HTTP client these commands talk to a running luot with;
//! - [`import`]: reading the files, building an `ImportRequest`, sending it;
//! - [`export`]: fetching a site's export and writing it as JSON or CSV;
//! - [`healthcheck`]: asking the public listener whether luot is ready.
//!
//! It may use `config` (to find the listeners and the admin token) and the
//! admin routes' wire types in `http::admin`; it must not reach into the
//! server's state or a store: everything goes over HTTP to a running luot.

pub mod client;
pub mod export;
pub mod healthcheck;
pub mod import;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

pub use client::{ClientError, HttpClient};

use crate::config::{Config, ConfigError, ProcessEnv};

/// Why a command failed; each message is what the command prints.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a luot export: {source}", path.display())]
    NotAnExport {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A line of an input file, named `path:line`.
    #[error("{at}: {message}")]
    Input { at: String, message: String },
    #[error("--page-total {item}: {problem}")]
    PageTotal { item: String, problem: String },
    #[error("nothing to import: give --total, --page-total, --history or --from-export")]
    NothingToImport,
    #[error("--format {0}: expected json, csv, pages-csv or breakdowns-csv")]
    Format(String),
    #[error("cannot write the export as JSON: {0}")]
    Encode(serde_json::Error),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// A running luot's admin listener and the token it wants.
#[derive(Debug, Clone)]
pub struct AdminTarget {
    pub addr: SocketAddr,
    /// `server.metrics_token`, sent as a bearer token when it is set.
    pub token: Option<String>,
}

impl AdminTarget {
    /// The admin address (`admin`, else `server.admin_listen`; an
    /// unspecified address becomes 127.0.0.1) and token, from the
    /// configuration file (or `LUOT_CONFIG`) and the `LUOT_*` variables.
    ///
    /// # Errors
    /// [`CliError::Config`] when the configuration is invalid.
    pub fn resolve(config: Option<&Path>, admin: Option<SocketAddr>) -> Result<Self, CliError> {
        let config = Config::load(config, &ProcessEnv)?;
        let mut addr = admin.unwrap_or(config.server.admin_listen);
        if addr.ip().is_unspecified() {
            addr.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        let token = Some(config.server.metrics_token).filter(|t| !t.is_empty());
        Ok(Self { addr, token })
    }

    /// A client for this listener, with the admin commands' bounds.
    ///
    /// # Errors
    /// [`ClientError::Runtime`] when its runtime cannot start.
    pub fn client(&self) -> Result<HttpClient, ClientError> {
        HttpClient::new(self.addr, self.token.clone(), client::Bounds::ADMIN)
    }
}
