//! Project tasks: `cargo xtask setup | run | build | test | bench | dashboard`.
//!
//! Every task that needs the toolchain runs `setup` first, so a fresh machine needs no
//! separate installation step.

mod bench;
mod bench_alerts;
mod bench_causes;
mod bench_desired;
mod bench_memory;
mod bench_mtu;
mod bench_pods;
mod bench_repair;
mod image;
mod kernels;
mod seccomp;
mod setup;
mod test;
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
    /// only checks (under a second).
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
    /// Set up, then run the whole test suite (unit and kernel integration tests, the kernel
    /// matrix under qemu; needs root): `cargo test --workspace --no-fail-fast`, then one
    /// line per test binary (passed, failed, ignored, time).
    Test {
        /// Skip the kernel matrix (Debian 5.10/6.1/6.12-16K booted under qemu, a few
        /// minutes); the same as WATCHDOG_SKIP_KERNELS=1.
        #[arg(long)]
        skip_kernels: bool,
        /// Extra arguments for `cargo test`, e.g. `-- --nocapture`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The release builds the lab tests need (both daemons, the guest helpers); `test`
    /// starts it in the background.
    #[command(hide = true)]
    Prebuild,
    /// Boot Debian's kernels (5.10 x86_64, 6.1 arm64, 6.12 arm64 16K pages) under qemu with
    /// the daemon in an initramfs; print what each measured. `tests/tests/suite/kernels.rs`
    /// asserts on the results.
    Kernels {
        /// Only these kernels (by name: 5.10-amd64, 6.1-arm64, 6.12-arm64-16k).
        #[arg(long)]
        only: Vec<String>,
        /// Where to write the results (JSON); default target/kernels/results.json.
        #[arg(long)]
        results: Option<std::path::PathBuf>,
    },
    /// Build the container images localhost/watchdog:<version>-amd64 and -arm64 (FROM
    /// scratch: the binary and exactly its libraries) with buildah, and the manifest list
    /// localhost/watchdog:<version> naming both; optionally push the list or save it.
    Image {
        /// Only these architectures (amd64, arm64).
        #[arg(long)]
        arch: Vec<String>,
        /// The manifest list's name (each architecture's image is `<name>-<arch>`).
        #[arg(long, default_value_t = image::default_name())]
        name: String,
        /// Push the manifest list and both images: `REGISTRY/NAME:TAG` (a registry), or
        /// any containers-transport reference (`oci:DIR:TAG`, `dir:DIR`, `docker://…`).
        #[arg(long, value_name = "REGISTRY/NAME:TAG")]
        push: Option<String>,
        /// Push over plain HTTP without TLS verification (a registry on localhost).
        #[arg(long, requires = "push")]
        insecure: bool,
        /// Write a multi-architecture OCI archive that `k3s ctr images import`, `ctr -n
        /// k8s.io images import` and `podman load` read: the image is named `--name` there.
        #[arg(long, value_name = "FILE")]
        save: Option<std::path::PathBuf>,
    },
    /// Render deploy/seccomp/watchdog.json (the narrow profile for runtimes whose default
    /// stops the daemon) as the Security Profiles Operator's SeccompProfile of
    /// deploy/kustomize/localhost-seccomp; with --strace, first record it anew.
    Seccomp {
        /// `strace -f -c -o FILE` summaries of the daemon's runs: the profile becomes
        /// exactly the calls they name, plus the few every run needs (xtask/src/seccomp.rs).
        #[arg(long, value_name = "FILE")]
        strace: Vec<std::path::PathBuf>,
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
        Task::Test { skip_kernels, args } => {
            setup::run()?;
            let mut command = util::cargo();
            command
                .args(["test", "--workspace", "--no-fail-fast"])
                .args(&args);
            if skip_kernels {
                command.env("WATCHDOG_SKIP_KERNELS", "1");
            }
            if std::env::var_os("RUST_TEST_THREADS").is_none() {
                command.env("RUST_TEST_THREADS", test::THREADS);
            }
            let prebuild = if test::runs_everything(&args) {
                Some(test::Prebuild::start()?)
            } else {
                None
            };
            test::run(command, prebuild)
        }
        Task::Prebuild => test::prebuild(),
        Task::Image {
            arch,
            name,
            push,
            insecure,
            save,
        } => {
            setup::kernel_matrix_tools()?;
            let list = image::run(&arch, &name)?;
            if let Some(destination) = push {
                image::push(&list, &destination, insecure)?;
            }
            if let Some(file) = save {
                image::save(&list, &file)?;
            }
            Ok(())
        }
        Task::Seccomp { strace } => seccomp::run(&strace),
        Task::Kernels { only, results } => {
            setup::kernel_matrix_tools()?;
            kernels::run(&only, results)
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
