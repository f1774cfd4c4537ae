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
    /// Audit this host once: load the probes and the network mirror, watch the traffic for
    /// a short window, print the findings, exit.
    ///
    /// Exit code 0: no findings; 1: findings; 2: the audit could not run. Silence-based
    /// findings (a destination that never answers) need traffic during the whole window.
    Check {
        /// Configuration file (as for `run`); only the probe and detector settings matter.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// How long to observe, e.g. 5s, 30s, 1m.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        window: std::time::Duration,
        /// Print the report as JSON (schema `watchdog.findings/v1`, as /api/v1/findings).
        #[arg(long)]
        json: bool,
    },
    /// Show or check configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Alert sinks.
    #[command(subcommand)]
    Alert(AlertCommand),
}

#[derive(Subcommand)]
enum AlertCommand {
    /// Send a clearly marked test alert (kind `test`, state `test`) to every configured
    /// sink, or to one, waiting for delivery with the sink's retries.
    ///
    /// Exit code 0: every sink accepted it; 1: some did not; 2: configuration error.
    Test {
        /// Configuration file with the `[[alerts.sinks]]`.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Only this sink (its `name`).
        #[arg(long, value_name = "NAME")]
        sink: Option<String>,
    },
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
    if let Command::Check {
        config,
        window,
        json,
    } = cli.command
    {
        return check(config, window, json);
    }
    if let Command::Alert(AlertCommand::Test { config, sink }) = cli.command {
        return alert_test(config, sink);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `watchdog check`: exit 0 clean, 1 findings, 2 error.
fn check(config: Option<PathBuf>, window: std::time::Duration, json: bool) -> ExitCode {
    let audit = || -> anyhow::Result<watchdog::findings::Report> {
        let config = Config::load(config.as_deref())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let report =
            runtime.block_on(watchdog::commands::check::audit(&config, window, |left| {
                eprint!("\robserving traffic: {}s left ", left.as_secs_f64().ceil());
            }))?;
        eprintln!();
        Ok(report)
    };
    match audit() {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("a report serializes")
                );
            } else {
                print!("{}", watchdog::commands::check::table(&report));
            }
            if report.findings.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// `watchdog alert test`: exit 0 all delivered, 1 some failed, 2 configuration error.
fn alert_test(config: Option<PathBuf>, only: Option<String>) -> ExitCode {
    let prepare = || -> anyhow::Result<_> {
        let config = Config::load(config.as_deref())?;
        let mut sinks = watchdog::sinks::alerts::resolve(&config.alerts)?;
        if let Some(name) = &only {
            let names: Vec<String> = sinks.iter().map(|s| s.name.clone()).collect();
            sinks.retain(|s| &s.name == name);
            if sinks.is_empty() {
                anyhow::bail!(
                    "--sink {name}: no such sink; configured: {}",
                    if names.is_empty() {
                        "none (add [[alerts.sinks]] to the config)".to_owned()
                    } else {
                        names.join(", ")
                    }
                );
            }
        } else if sinks.is_empty() {
            anyhow::bail!("no alert sinks configured; add [[alerts.sinks]] to the config");
        }
        Ok((config, sinks))
    };
    let (config, sinks) = match prepare() {
        Ok(ready) => ready,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    let node = watchdog::sources::kernel::procfs::node_name();
    let results = runtime.block_on(watchdog::sinks::alerts::send_test(
        &config.alerts,
        sinks,
        config.generator_url(),
        &node,
    ));
    let mut all_ok = true;
    for (spec, delivery) in results {
        let attempts = match delivery.attempts {
            1 => "1 attempt".to_owned(),
            n => format!("{n} attempts"),
        };
        match delivery.result {
            Ok(()) => println!(
                "{}: delivered ({} {}, {attempts})",
                spec.name,
                spec.kind.as_str(),
                spec.endpoint.redacted
            ),
            Err(why) => {
                all_ok = false;
                println!(
                    "{}: FAILED ({} {}, {attempts}): {why}",
                    spec.name,
                    spec.kind.as_str(),
                    spec.endpoint.redacted
                );
            }
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check { .. } | Command::Alert(_) => unreachable!("handled in main"),
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
            runtime.block_on(watchdog::commands::daemon::run(config, shutdown_signal()))?;
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
