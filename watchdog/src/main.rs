//! The `watchdog` command line.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use watchdog::config::{Config, DEFAULT_CONFIG};

/// Node-local eBPF network watchdog: counts the packets the kernel drops, by the kernel's
/// own reason, and serves them to Prometheus.
///
/// Logging is controlled by RUST_LOG (default `info`), e.g. RUST_LOG=watchdog=debug.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: attach the probes and serve /metrics, /healthz and /readyz.
    ///
    /// Needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (or root). Without --config the embedded
    /// default configuration is used (print it with `watchdog config default`).
    /// SIGTERM or SIGINT detaches every probe and exits.
    Run {
        /// Configuration file (TOML: *.toml, or YAML: *.yaml/*.yml); keys it lacks keep their
        /// default.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Address to serve on, overriding `listen` in the config
        /// (default 127.0.0.1:9477).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<SocketAddr>,
    },
    /// Show or check configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the embedded default configuration (TOML, with comments).
    Default,
    /// Check a configuration file and print the effective configuration; exit 1 if invalid.
    Check {
        /// The file to check.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Config(ConfigCommand::Default) => {
            print!("{DEFAULT_CONFIG}");
            Ok(())
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let config = Config::load(Some(&file))?;
            println!("{file}: valid\n{config:#?}", file = file.display());
            Ok(())
        }
        Command::Run { config, listen } => {
            let mut config = Config::load(config.as_deref())?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(watchdog::daemon::run(config, shutdown_signal()))?;
            Ok(())
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

fn init_logging() {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}
