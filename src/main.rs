//! The `luot` binary: command line, logging, exit codes — and nothing else.
//! Everything it runs lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use luot::config::{Config, LogFormat, ProcessEnv};

#[derive(Parser)]
#[command(
    name = "luot",
    version,
    about = "A high-throughput visitor counter service"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve {
        /// Configuration file, merged over the built-in defaults (also LUOT_CONFIG).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and print it (secrets masked), without starting.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Exit 0 when the running service answers /readyz (for container health checks).
    Healthcheck {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Import into a running luot (through its admin listener): a starting
    /// total, pages' starting totals, daily history from CSV, or an export.
    /// Importing the same thing twice changes nothing.
    Import {
        #[command(flatten)]
        admin: AdminArgs,
        /// The site to import into.
        #[arg(long)]
        site: String,
        /// Add this starting total to the site's total (e.g. an old counter's value).
        #[arg(long)]
        total: Option<u64>,
        /// A page's starting total, as PAGE=N (repeatable).
        #[arg(long = "page-total", value_name = "PAGE=N")]
        page_totals: Vec<String>,
        /// Daily history, CSV lines `date,hits[,visitors]`: sets day, week
        /// and month figures and the series, not the total.
        #[arg(long, value_name = "FILE")]
        history: Option<PathBuf>,
        /// A `luot export` JSON file to recreate (days, page totals, total).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["total", "history", "page_totals"])]
        from_export: Option<PathBuf>,
    },
    /// Export a site's daily series and page totals from a running luot.
    Export {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        site: String,
        /// First day (default: as far back as site days are kept).
        #[arg(long)]
        from: Option<String>,
        /// Last day (default: today in the site's zone).
        #[arg(long)]
        to: Option<String>,
        /// json (everything), csv (the daily series) or pages-csv (page totals).
        #[arg(long, default_value = "json")]
        format: String,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// How to reach a running luot's admin listener.
#[derive(clap::Args)]
struct AdminArgs {
    /// Configuration file (its server.admin_listen and metrics_token are used).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The admin listener's address (default: server.admin_listen).
    #[arg(long, value_name = "ADDR")]
    admin: Option<std::net::SocketAddr>,
}

impl AdminArgs {
    /// The admin address and token, from the flags and the configuration.
    fn resolve(&self) -> Result<(std::net::SocketAddr, Option<String>), String> {
        let config = Config::load(self.config.as_deref(), &ProcessEnv)
            .map_err(|e| format!("invalid configuration: {e}"))?;
        let mut addr = self.admin.unwrap_or(config.server.admin_listen);
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let token = Some(config.server.metrics_token).filter(|t| !t.is_empty());
        Ok((addr, token))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::Serve { config } => serve(config),
        Command::CheckConfig { config } => match Config::load(config.as_deref(), &ProcessEnv) {
            Ok(c) => {
                println!("{}", c.masked_json());
                eprintln!("configuration is valid: {} site(s)", c.sites.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("invalid configuration: {e}");
                ExitCode::from(2)
            }
        },
        Command::Healthcheck { config } => healthcheck(config),
        Command::Import {
            admin,
            site,
            total,
            page_totals,
            history,
            from_export,
        } => report(import(
            admin,
            site,
            total,
            page_totals,
            history,
            from_export,
        )),
        Command::Export {
            admin,
            site,
            from,
            to,
            format,
            output,
        } => report(export(admin, site, from, to, format, output)),
    }
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn import(
    admin: AdminArgs,
    site: String,
    total: Option<u64>,
    page_totals: Vec<String>,
    history: Option<PathBuf>,
    from_export: Option<PathBuf>,
) -> Result<(), String> {
    use luot::http::admin::{ImportRequest, PageTotal};
    let (addr, token) = admin.resolve()?;
    let read =
        |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut request = match &from_export {
        Some(path) => {
            let export: luot::http::admin::Export = serde_json::from_str(&read(path)?)
                .map_err(|e| format!("{}: not a luot export: {e}", path.display()))?;
            let mut r = luot::client::import_from_export(&export);
            r.site = site.clone();
            r
        }
        None => ImportRequest {
            site: site.clone(),
            total,
            ..ImportRequest::default()
        },
    };
    for item in &page_totals {
        let (page, n) = item
            .rsplit_once('=')
            .ok_or_else(|| format!("--page-total {item}: expected PAGE=N"))?;
        let total = n
            .parse()
            .map_err(|_| format!("--page-total {item}: `{n}` is not a number"))?;
        request.pages.push(PageTotal {
            page: page.to_string(),
            total,
        });
    }
    if let Some(path) = &history {
        let name = path.display().to_string();
        request.history =
            luot::client::parse_history(&name, &read(path)?).map_err(|e| e.to_string())?;
    }
    if request.total.is_none() && request.pages.is_empty() && request.history.is_empty() {
        return Err(
            "nothing to import: give --total, --page-total, --history or --from-export".into(),
        );
    }
    let answer =
        luot::client::import(addr, token.as_deref(), request).map_err(|e| e.to_string())?;
    println!("{answer}");
    Ok(())
}

fn export(
    admin: AdminArgs,
    site: String,
    from: Option<String>,
    to: Option<String>,
    format: String,
    output: Option<PathBuf>,
) -> Result<(), String> {
    let (addr, token) = admin.resolve()?;
    let export = luot::client::export(
        addr,
        token.as_deref(),
        &site,
        from.as_deref(),
        to.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    let text = match format.as_str() {
        "json" => serde_json::to_string_pretty(&export).map_err(|e| e.to_string())?,
        "csv" => luot::client::export_csv(&export, false),
        "pages-csv" => luot::client::export_csv(&export, true),
        other => return Err(format!("--format {other}: expected json, csv or pages-csv")),
    };
    match output {
        Some(path) => std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display())),
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_ansi(ansi)
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// glibc's mmap threshold, fixed (see [`limit_malloc_arenas`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: i32 = 128 * 1024;

/// Caps glibc's malloc at two arenas and fixes its mmap threshold.
///
/// By default every thread that allocates may get an arena of its own (up
/// to eight per core), and memory freed into one is not reused by another:
/// with the flusher's blocking threads coming and going, RSS grew with
/// fragmentation. Measured, memory phase of `benches/load.py` (growth from
/// 10,000 to 100,000 pages, three runs each): 366–476 bytes/page without,
/// 235–296 with; request throughput unchanged (the hot path allocates
/// nothing).
///
/// glibc also raises its mmap threshold (to up to 32 MiB) each time a
/// mapped block is freed, so the flusher's large transient vectors (a
/// batch's increments, the ledger's deltas: up to megabytes, once a second)
/// soon come from the heap, and the heap keeps their pages. A fixed
/// threshold (the default 128 KiB, which setting it stops glibc from
/// moving) maps them and gives them back when freed. Measured, same
/// memory phase, together with redb's cache (`store::embedded`): 8 MiB
/// cache, threshold left to glibc 285–325 bytes/page; threshold fixed
/// 276–283; 2 MiB cache alone 265; 4 MiB cache and threshold fixed
/// 162–170 (2 MiB: 149).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: `mallopt` only sets allocator parameters; it is called
    // before the runtime starts any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn serve(config_path: Option<PathBuf>) -> ExitCode {
    limit_malloc_arenas();
    let config = match Config::load(config_path.as_deref(), &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.server.log_format);
    tracing::info!(config = %config.masked_json(), "effective configuration");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let reload: luot::app::Reload =
        Box::new(move || Config::load(config_path.as_deref(), &ProcessEnv));
    let result = runtime.block_on(luot::app::run_reloadable(
        config,
        Some(reload),
        shutdown_signal(),
        |_| {},
    ));
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "luot could not start");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

fn healthcheck(config: Option<PathBuf>) -> ExitCode {
    use std::io::{Read, Write};
    let config = match Config::load(config.as_deref(), &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let mut addr = config.server.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let check = || -> std::io::Result<bool> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer.starts_with("HTTP/1.1 200"))
    };
    match check() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("{addr}: not ready");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
