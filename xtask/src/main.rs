//! Project tasks: `cargo xtask setup | run | build | test | bench | dashboard`.
//!
//! Every task that needs the toolchain runs `setup` first, so a fresh machine needs no
//! separate installation step.

mod bench;
mod setup;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "watchdog project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what this machine lacks to build and test: Debian packages, the rust-src
    /// component, and bpf-linker built against rustc's own LLVM. Idempotent; a second run
    /// takes seconds.
    Setup,
    /// Install the build tools, build the daemon (release) and run it with the embedded default config on
    /// this host (serves http://127.0.0.1:9477/metrics). Needs root.
    Run {
        /// Arguments after `watchdog run`, e.g. `-- --listen 127.0.0.1:9000`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the release daemon (eBPF object embedded) for this host or another target,
    /// installing only the build tools it needs: `--target aarch64-unknown-linux-gnu` is the
    /// Raspberry Pi 4/5 binary, linked with Debian's gcc-aarch64-linux-gnu.
    Build {
        /// Rust target triple, e.g. aarch64-unknown-linux-gnu; default: this host.
        #[arg(long)]
        target: Option<String>,
    },
    /// Set up, then run the whole test suite (unit and kernel integration tests; needs root).
    Test {
        /// Extra arguments for `cargo test`, e.g. `-- --nocapture`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks: ratios measured side by side in one run.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Write the Grafana dashboard's ConfigMap (deploy/kustomize/base/grafana-dashboard.yaml)
    /// from deploy/grafana/watchdog.json, after editing the JSON.
    Dashboard,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Run { args } => {
            setup::build_tools(None)?;
            let binary = util::build_daemon()?;
            let mut command = std::process::Command::new(&binary);
            command.arg("run").args(args);
            util::exec(command)
        }
        Task::Build { target } => {
            setup::build_tools(target.as_deref())?;
            let binary = util::build_release(target.as_deref())?;
            let size = std::fs::metadata(&binary)?.len();
            println!("{} ({:.1} MiB)", binary.display(), size as f64 / 1048576.0);
            Ok(())
        }
        Task::Test { args } => {
            setup::run()?;
            let mut command = util::cargo();
            command.args(["test", "--workspace"]).args(args);
            util::status(&mut command)
        }
        Task::Bench(bench) => {
            setup::run()?;
            bench.run()
        }
        Task::Dashboard => {
            use watchdog_tests::repo as deploy;
            let json = std::fs::read_to_string(deploy::dashboard_json())?;
            serde_json::from_str::<serde_json::Value>(&json)
                .map_err(|e| anyhow::anyhow!("{}: {e}", deploy::dashboard_json().display()))?;
            let path = deploy::dashboard_configmap();
            std::fs::write(&path, deploy::render_dashboard_configmap(&json))?;
            println!("wrote {}", path.display());
            Ok(())
        }
    }
}
