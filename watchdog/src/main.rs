//! The `watchdog` command line: parses the arguments and hands over to
//! [`watchdog::commands`].

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use watchdog::commands;

/// The system allocator, which can refuse the kernel BTF aya would read at start-up (see
/// `sources::probes::loader`).
#[global_allocator]
static ALLOCATOR: watchdog::sources::probes::loader::Allocator =
    watchdog::sources::probes::loader::Allocator;

/// Finds where this node's kernel sends traffic into the void and names the route,
/// gateway or VXLAN FDB entry to fix; checks the overlay against the cluster's desired
/// state and can repair it.
///
/// What it finds: ghost routes and dead gateways (a route via a neighbour that never
/// answers), stale VXLAN FDB entries (a ghost VTEP) and a collapsed FDB, blackholed
/// traffic (packets out, nothing back), failing TCP destinations, ghost Service endpoints,
/// path-MTU black holes, routes over dead links or to blackholes, and an overlay that
/// differs from what the Nodes say (desired state). It watches the kernel's own data
/// plane (eBPF counters of drops, peers and TCP connects) next to a netlink mirror of
/// links, routes, neighbours and FDB.
///
/// The jobs: `run` the daemon (Prometheus /metrics, a JSON API, alerts); `check` this host
/// once and print a diagnosis; `repair plan|apply` the overlay to the desired state (a dry
/// run unless asked, journalled, verified, rolled back, undoable); `config default` shows
/// every setting.
///
/// Logging is controlled by RUST_LOG (default `info`; `warn` for `check` without -v),
/// e.g. RUST_LOG=watchdog=debug.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: watch this node continuously for ghost routes, dead gateways, stale
    /// VXLAN FDB entries and blackholed traffic; serve the findings on /metrics and
    /// /api/v1/findings, send alerts, and repair the overlay when configured.
    ///
    /// Attaches the eBPF probes and serves /metrics, /healthz, /readyz, /api/v1/findings
    /// and /api/v1/repairs. Needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (or root). Without --config the embedded
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
    /// Check this host once: is traffic going into the void here, and which route, gateway
    /// or FDB entry is to blame? Prints a diagnosis with the next step and runbook.
    ///
    /// Loads the probes and the network mirror, watches the traffic for a short window,
    /// judges it as the daemon does (the desired state included when configured), prints
    /// the findings and exits.
    ///
    /// Exit code 0: no findings; 1: findings; 2: the audit could not run. Silence-based
    /// findings (a destination that never answers) need traffic during the whole window.
    Check {
        /// Configuration file (as for `run`); only the probe and detector settings and
        /// `alerts.runbook_base_url` matter.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// How long to observe, e.g. 5s, 30s, 1m (1s to 24h).
        #[arg(long, default_value = "5s", value_parser = commands::check::parse_window)]
        window: std::time::Duration,
        /// Print the report as JSON (schema `watchdog.findings/v1`, as /api/v1/findings).
        #[arg(long)]
        json: bool,
        /// Log at `info` (default: warnings and errors only) unless RUST_LOG says otherwise.
        #[arg(long, short)]
        verbose: bool,
    },
    /// The cluster's view, from the Prometheus that scrapes every node's watchdog: which
    /// Node the others cannot reach through the overlay, which node reaches none.
    ///
    /// Prints the node × peer matrix of watchdog_peer_node_reachable (each node's probes
    /// to every other Node's flannel address) and the verdict of the shipped rules
    /// (WatchdogNodeUnreachableFromPeers: at least half of the reporting nodes, and at
    /// least 2, cannot reach a Node; WatchdogNodeIsolated: a node reaches none of its
    /// peers), e.g. "qx-b is unreachable from 2 of 2 nodes: check its Node annotation /
    /// its VTEP". Use it when many nodes report findings about one peer: one cause, named
    /// once.
    ///
    /// Exit code 0: healthy; 1: a verdict; 2: an error (Prometheus unreachable, no series).
    Cluster {
        /// The Prometheus to ask, e.g. http://prometheus-operated.monitoring:9090 (a path
        /// prefix is kept; https:// uses the system's public roots).
        #[arg(long, value_name = "URL")]
        prometheus: String,
        /// Print the matrix and the verdict as JSON (nodes, matrix, unreachable, isolated).
        #[arg(long)]
        json: bool,
    },
    /// Show every setting with its default, or check a configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Test the alert sinks (webhook, Alertmanager, Slack) with a marked test alert.
    #[command(subcommand)]
    Alert(AlertCommand),
    /// Repair this node's overlay (VXLAN FDB entries, neighbours, routes to pod subnets) to
    /// the desired state the Nodes describe: plan, apply (dry run unless --yes), journal,
    /// undo.
    ///
    /// Only objects the watchdog owns are touched, one journalled change at a time, each
    /// verified and rolled back to the exact before-state when it does not help.
    #[command(subcommand)]
    Repair(RepairCommand),
}

#[derive(Subcommand)]
enum RepairCommand {
    /// Print the repair plan: each operation as the `ip`/`bridge` command a person would
    /// type, with its inverse; nothing is changed.
    ///
    /// Exit code 0: nothing to do; 1: a plan printed; 2: no plan possible or an error.
    Plan {
        /// Configuration file (the `[repair]`, `[detect]` and `[desired]` settings).
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The desired state: a NodeList (`kubectl get nodes -o json|yaml`); default
        /// `desired.path` when `[desired] source = "file"`.
        #[arg(long, value_name = "FILE")]
        nodes: Option<PathBuf>,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the plan and, with --yes, apply it once: every change journalled, verified,
    /// and rolled back to the exact before-state when it does not help. Without --yes
    /// this is a dry run.
    ///
    /// Exit code 0: nothing to do or everything verified; 1: refused, rolled back or
    /// failed; 2: no plan possible or an error. Needs CAP_NET_ADMIN.
    Apply {
        /// Configuration file (as for `plan`).
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The desired state (as for `plan`).
        #[arg(long, value_name = "FILE")]
        nodes: Option<PathBuf>,
        /// Really change the kernel.
        #[arg(long)]
        yes: bool,
    },
    /// Undo one journalled repair: restore the object exactly as it was before the change,
    /// itself journalled (origin `undo`, with its own id).
    ///
    /// Only a repair that was verified and not undone yet, with no later repair of the same
    /// object, and only while the kernel still shows exactly what it left (otherwise
    /// someone else changed the object since and nothing is done). Stop the daemon or set
    /// its `[repair] mode` to "dry_run" first: the journal is used by one process at a
    /// time, and a daemon in "apply" would repair the object again.
    ///
    /// Exit code 0: restored; 1: refused, nothing changed (unknown id, already undone, not
    /// in effect, changed since); 2: an error, or the kernel refused the undo or does not
    /// show it (journalled as failed). Needs CAP_NET_ADMIN.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "last"])))]
    Undo {
        /// The change's id (`watchdog repair journal` lists them).
        #[arg(value_name = "ID")]
        id: Option<u64>,
        /// The latest repair that is verified and not undone.
        #[arg(long)]
        last: bool,
        /// Configuration file (`repair.journal`, `repair.verify_window`).
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print the repair journal: id, time, origin (`repair`, `rollback`, `undo`), outcome
    /// (the last verdict) and the change as the `ip`/`bridge` command, oldest first.
    ///
    /// Exit code 0 (an absent journal prints nothing); 2: the journal cannot be read.
    Journal {
        /// Configuration file (`repair.journal`).
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// One JSON object per line: the change (as in /api/v1/repairs), its `verdicts` and
        /// `outcome`.
        #[arg(long)]
        json: bool,
    },
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
    let quiet = matches!(cli.command, Command::Check { verbose: false, .. });
    init_logging(if quiet { "warn" } else { "info" });
    match cli.command {
        Command::Run { config, listen } => commands::daemon::main(config, listen),
        Command::Check {
            config,
            window,
            json,
            verbose: _,
        } => commands::check::main(config, window, json),
        Command::Cluster { prometheus, json } => commands::cluster::main(&prometheus, json),
        Command::Config(ConfigCommand::Default) => commands::config::default(),
        Command::Config(ConfigCommand::Check { file }) => commands::config::check(&file),
        Command::Alert(AlertCommand::Test { config, sink }) => commands::alert::test(config, sink),
        Command::Repair(RepairCommand::Plan {
            config,
            nodes,
            json,
        }) => commands::repair::plan_main(config, nodes, json),
        Command::Repair(RepairCommand::Apply { config, nodes, yes }) => {
            commands::repair::apply_main(config, nodes, yes)
        }
        Command::Repair(RepairCommand::Undo {
            id,
            last: _,
            config,
        }) => {
            let which = id.map_or(watchdog::repair::undo::Which::Last, |id| {
                watchdog::repair::undo::Which::Id(id)
            });
            commands::repair_undo::undo_main(config, which)
        }
        Command::Repair(RepairCommand::Journal { config, json }) => {
            commands::repair_undo::journal_main(config, json)
        }
    }
}

/// Logs to stderr, filtered by RUST_LOG, else at `default`; coloured like any output.
fn init_logging(default: &str) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    fmt()
        .with_env_filter(filter)
        .with_ansi(commands::colour(std::io::IsTerminal::is_terminal(
            &std::io::stderr(),
        )))
        .with_writer(std::io::stderr)
        .init();
}
