//! The `luot` binary: command line, logging, exit codes — and nothing else
//! (besides glibc's malloc settings, which must precede every thread).
//! Everything it runs lives in the library; the commands' work in
//! `luot::cli`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use luot::cli::export::ExportCommand;
use luot::cli::import::ImportCommand;
use luot::cli::{self, AdminTarget, CliError};
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
        /// json (everything), csv (the daily series), pages-csv (page totals)
        /// or breakdowns-csv (the daily breakdowns).
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
    fn resolve(&self) -> Result<AdminTarget, CliError> {
        AdminTarget::resolve(self.config.as_deref(), self.admin)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::Serve { config } => serve(config),
        Command::CheckConfig { config } => check_config(config),
        Command::Healthcheck { config } => healthcheck(config),
        Command::Import {
            admin,
            site,
            total,
            page_totals,
            history,
            from_export,
        } => {
            let command = ImportCommand {
                site,
                total,
                page_totals,
                history,
                from_export,
            };
            let answer = admin.resolve().and_then(|t| cli::import::run(&t, &command));
            report(answer.map(|answer| println!("{answer}")))
        }
        Command::Export {
            admin,
            site,
            from,
            to,
            format,
            output,
        } => {
            let command = ExportCommand {
                site,
                from,
                to,
                format,
                output,
            };
            report(admin.resolve().and_then(|t| cli::export::run(&t, &command)))
        }
    }
}

/// Exit 1 with the error on standard error, or 0.
fn report(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration, or exit 2 with why not.
fn load_config(path: Option<&Path>) -> Result<Config, ExitCode> {
    Config::load(path, &ProcessEnv).map_err(|e| {
        eprintln!("invalid configuration: {e}");
        ExitCode::from(2)
    })
}

fn check_config(path: Option<PathBuf>) -> ExitCode {
    match load_config(path.as_deref()) {
        Ok(c) => {
            println!("{}", c.masked_json());
            eprintln!("configuration is valid: {} site(s)", c.sites.len());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// Exit 0 when ready, 1 when not (or unreachable), 2 for a bad configuration.
fn healthcheck(path: Option<PathBuf>) -> ExitCode {
    let config = match load_config(path.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli::healthcheck::check(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
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
    let config = match load_config(config_path.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
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
