//! `cargo xtask bench memory`: the daemon's memory, row by row (`watchdog_tests::memory`:
//! the start-up peak and idle with the embedded default, after a churn of pods, watching
//! Nodes, with the DaemonSet's Pods and EndpointSlices), on this host and inside the
//! kernel matrix's qemu guests, side by side with an earlier revision's daemon.
//!
//! The rows run in the `memory_guest` helper, the same program on this host and as a
//! guest's init program: one process per row and daemon, the daemons' order alternating.
//! The release daemons are copied (and synced to disk, so neither runs from dirty page
//! cache) under `target/bench-memory/`. The baseline is built from a `git archive` of its
//! revision with this tree's target directory (its dependencies are shared).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::Value;
use watchdog_tests::memory::{
    Figures, IDLE_ANON_BUDGET_KIB, IDLE_BUDGET_KIB, LIMIT_MARGIN, NODES_BUDGET_COUNT,
    NODES_BUDGET_KIB, PODS_BUDGET_COUNT, RECORD, RECORD_TOLERANCE, RECORD_TOLERANCE_MIN_KIB,
    REQUEST_MARGIN, ROWS, STARTUP_PEAK_BUDGET_KIB, limit_floor_mib, request_mib, steady_kib,
};

use crate::{
    kernels::{self, Arch, MATRIX},
    util,
};

/// What to measure, as the command line says it.
#[derive(Clone)]
pub struct Options {
    pub baseline: Option<String>,
    pub idle: u64,
    pub churn: u64,
    pub nodes: usize,
    pub pods: usize,
    pub connections: usize,
    pub rounds: u32,
    /// `host` and/or kernel matrix names.
    pub on: Vec<String>,
    /// Write this host's figures to [`RECORD`] (else: check them against it).
    pub record: bool,
    /// Measure this x86_64 daemon binary instead of building the working tree's.
    pub binary: Option<PathBuf>,
    /// Measure nothing: print (and check or record) the results of an earlier run, the
    /// raw `target/bench-memory/results.json` or a `memory_guest run` output on this host.
    pub from_results: Option<PathBuf>,
}

/// One daemon binary to measure.
struct Daemon {
    label: &'static str,
    /// What it was built from.
    revision: String,
    /// Per architecture.
    paths: Vec<(Arch, PathBuf)>,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    if let Some(file) = &options.from_results {
        return from_results(options, file);
    }
    if options.on.is_empty() {
        bail!("--on names no place: use host and/or {}", kernel_names());
    }
    let mut kernels = Vec::new();
    for place in options.on.iter().filter(|p| *p != "host") {
        let kernel = MATRIX
            .iter()
            .find(|k| k.name == place)
            .with_context(|| format!("--on {place}: neither host nor {}", kernel_names()))?;
        kernels.push(*kernel);
    }
    let mut arches = Vec::new();
    if options.on.iter().any(|p| p == "host") {
        arches.push(Arch::Amd64);
    }
    for kernel in &kernels {
        if !arches.contains(&kernel.arch) {
            arches.push(kernel.arch);
        }
    }
    if options.record
        && (!options.on.iter().any(|p| p == "host")
            || options.nodes != NODES_BUDGET_COUNT
            || options.pods != PODS_BUDGET_COUNT)
    {
        bail!(
            "--record writes this host's figures with {NODES_BUDGET_COUNT} Nodes and \
             {PODS_BUDGET_COUNT} Pods: --on must name host, without --quick, --nodes or --pods"
        );
    }
    if std::env::consts::ARCH != "x86_64" {
        bail!("bench memory runs on an x86_64 host (the arm64 kernels boot under TCG)");
    }
    if !kernels.is_empty() {
        crate::setup::kernel_matrix_tools()?;
    }
    if options.binary.is_some() && arches != [Arch::Amd64] {
        bail!("--binary is an x86_64 daemon: measure it with --on host only");
    }
    let daemons = build(
        options.baseline.as_deref(),
        &arches,
        options.binary.as_deref(),
    )?;
    let mut guests = Vec::new();
    for &arch in &arches {
        crate::setup::build_tools(arch.rust_target())?;
        guests.push((arch, kernels::build_helper(arch, "memory_guest")?));
    }
    let guest = |arch: Arch| &guests.iter().find(|(a, _)| *a == arch).expect("built").1;
    let settings = [
        ("--idle", options.idle.to_string()),
        ("--churn", options.churn.to_string()),
        ("--nodes", options.nodes.to_string()),
        ("--pods", options.pods.to_string()),
        ("--connections", options.connections.to_string()),
        ("--rounds", options.rounds.to_string()),
    ];

    let mut results = Vec::new();
    if options.on.iter().any(|p| p == "host") {
        eprintln!("bench memory: this host");
        let mut command = Command::new(guest(Arch::Amd64));
        command.arg("run").arg("--steps");
        for daemon in &daemons {
            command.arg("--daemon").arg(format!(
                "{}={}",
                daemon.label,
                path(daemon, Arch::Amd64).display()
            ));
        }
        for (name, value) in &settings {
            command.arg(name).arg(value);
        }
        let out = util::output(&mut command)?;
        results.push(("host".to_owned(), parse(&out)?));
    }
    for kernel in &kernels {
        eprintln!("bench memory: {} under qemu", kernel.name);
        let mut files: Vec<(&Path, String)> = vec![(guest(kernel.arch), "memory_guest".into())];
        let mut program = "/memory_guest run".to_owned();
        for daemon in &daemons {
            let name = format!("watchdog-{}", daemon.label);
            program.push_str(&format!(" --daemon {}=/{name}", daemon.label));
            files.push((path(daemon, kernel.arch), name));
        }
        for (name, value) in &settings {
            program.push_str(&format!(" {name} {value}"));
        }
        let files: Vec<(&Path, &str)> = files.iter().map(|(p, n)| (*p, n.as_str())).collect();
        // Each row starts a daemon per binary; under TCG a start takes up to a minute.
        let per_daemon = 4 * (options.idle + 120) + options.churn;
        let timeout = Duration::from_secs(
            300 + per_daemon * daemons.len() as u64 * u64::from(options.rounds),
        );
        // A guest that fails is reported with the others' results.
        let result = kernels::boot(kernel, &files, &program, "WATCHDOG-MEMORY-RESULT ", timeout)
            .unwrap_or_else(|err| serde_json::json!({"errors": [format!("{err:#}")]}));
        results.push((kernel.name.to_owned(), result));
    }

    let saved = util::root().join("target/bench-memory/results.json");
    let all: serde_json::Map<String, Value> = results.iter().cloned().collect();
    fs::write(&saved, serde_json::to_string_pretty(&all)?)?;
    eprintln!("bench memory: the raw results in {}", saved.display());
    report(options, &daemons, &results)
}

/// `--from-results`: the daemons and rows of an earlier run, reported again.
fn from_results(options: &Options, file: &Path) -> anyhow::Result<()> {
    let text = fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
    let results: Vec<(String, Value)> = match parse(&text) {
        Ok(host) => vec![("host".to_owned(), host)],
        Err(_) => serde_json::from_str::<serde_json::Map<String, Value>>(&text)
            .with_context(|| {
                format!(
                    "{}: neither results.json nor memory_guest's output",
                    file.display()
                )
            })?
            .into_iter()
            .collect(),
    };
    let mut daemons = Vec::new();
    for (label, arch) in [("current", Arch::Amd64), ("baseline", Arch::Amd64)] {
        let path = results.iter().find_map(|(_, r)| {
            r["daemons"]
                .as_array()?
                .iter()
                .find(|d| d["label"] == label)?["path"]
                .as_str()
                .map(PathBuf::from)
        });
        if let Some(path) = path {
            daemons.push(Daemon {
                label,
                revision: format!("{} (from {})", path.display(), file.display()),
                paths: vec![(arch, path)],
            });
        }
    }
    if daemons.first().is_none_or(|d| d.label != "current") {
        bail!("{}: no daemon labelled current", file.display());
    }
    report(options, &daemons, &results)
}

/// Prints the rows, fails on a failed row, records or checks this host's figures.
fn report(
    options: &Options,
    daemons: &[Daemon],
    results: &[(String, Value)],
) -> anyhow::Result<()> {
    let mut options = options.clone();
    // The settings the rows ran with (an earlier run's, with --from-results).
    if let Some(settings) = results
        .iter()
        .find(|(place, _)| place == "host")
        .and_then(|(_, host)| host["settings"].as_object())
    {
        let get = |key: &str| settings.get(key).and_then(Value::as_u64);
        options.nodes = get("nodes").map_or(options.nodes, |n| n as usize);
        options.pods = get("pods").map_or(options.pods, |n| n as usize);
        options.idle = get("idle_s").unwrap_or(options.idle);
        options.churn = get("churn_s").unwrap_or(options.churn);
        options.connections = get("connections").map_or(options.connections, |n| n as usize);
        options.rounds = get("rounds").map_or(options.rounds, |n| n as u32);
    }
    let options = &options;
    print(options, daemons, results);
    let failed: Vec<String> = results
        .iter()
        .flat_map(|(place, r)| {
            r["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |e| format!("{place}: {}", e.as_str().unwrap_or_default()))
        })
        .collect();
    if !failed.is_empty() {
        bail!("rows failed:\n{}", failed.join("\n"));
    }
    if let Some((_, host)) = results.iter().find(|(place, _)| place == "host") {
        if options.record {
            record(options, host, &daemons[0].revision)?;
        } else {
            check_record(options, host)?;
        }
    }
    Ok(())
}

/// The current daemon's figures of `row` (medians of the rounds).
fn figures(result: &Value, row: &str) -> Option<Figures> {
    let cells = cells(result, row, "current");
    let field = |name: &str| median(&cells, name).map(|(value, _)| value);
    Some(Figures {
        resident_kib: field("resident_kib")?,
        peak_kib: field("peak_kib")?,
        anon_kib: field("anon_kib")?,
        file_kib: field("file_kib")?,
        shmem_kib: field("shmem_kib")?,
        threads: field("threads")?,
    })
}

/// The rows the DaemonSet's resources come from: default, nodes, pods.
fn sources(result: &Value) -> Option<(Figures, Figures, Figures)> {
    Some((
        figures(result, "default")?,
        figures(result, "nodes")?,
        figures(result, "pods")?,
    ))
}

/// The highest peak of any row.
fn highest_peak(result: &Value) -> u64 {
    ["default", "churn", "nodes", "pods", "connections"]
        .iter()
        .filter_map(|row| median(&cells(result, row, "current"), "peak_kib"))
        .map(|(peak, _)| peak)
        .max()
        .unwrap_or(0)
}

/// Writes [`RECORD`]: this host's rows, the steady state and the highest peak, and the
/// request and lowest limit they give.
fn record(options: &Options, host: &Value, revision: &str) -> anyhow::Result<()> {
    if options.nodes != NODES_BUDGET_COUNT || options.pods != PODS_BUDGET_COUNT {
        bail!(
            "--record: these rows ran with {} Nodes and {} Pods, the record is of \
             {NODES_BUDGET_COUNT} and {PODS_BUDGET_COUNT}",
            options.nodes,
            options.pods
        );
    }
    let (idle, nodes, pods) =
        sources(host).context("--record: a row of default, nodes, pods is missing")?;
    let steady = steady_kib(&idle, &nodes, &pods);
    let peak = highest_peak(host);
    let rows: serde_json::Map<String, Value> = ["default", "churn", "nodes", "pods", "connections"]
        .iter()
        .filter_map(|row| Some((row.to_string(), figures(host, row)?.to_json())))
        .collect();
    let record = serde_json::json!({
        "about": "written by `cargo xtask bench memory --record` (this host, the current daemon, \
                  medians of the rounds, KiB); tests/tests/suite/deploy.rs holds the DaemonSet's \
                  memory and docs/deploy.md to it, and every other bench run on this host fails \
                  when the daemon grew past it",
        "daemon": revision,
        "kernel": host["kernel"],
        "machine": host["machine"],
        "settings": {
            "seconds": options.idle,
            "churn_seconds": options.churn,
            "nodes": options.nodes,
            "pods": options.pods,
            "connections": options.connections,
            "rounds": options.rounds,
        },
        "rows": rows,
        "steady_kib": steady,
        "peak_kib": peak,
        "request_mib": request_mib(steady),
        "limit_floor_mib": limit_floor_mib(peak),
    });
    let path = util::root().join(RECORD);
    fs::write(&path, serde_json::to_string_pretty(&record)? + "\n")?;
    eprintln!(
        "bench memory: recorded in {} (request {}Mi, limit at least {}Mi): \
         `cargo test --workspace --test suite -- deploy::` says what else must change",
        path.display(),
        request_mib(steady),
        limit_floor_mib(peak)
    );
    Ok(())
}

/// Fails when this host's figures passed [`RECORD`]'s by more than the tolerance: the
/// start-up peak, idle (VmRSS, RssAnon), and the steady state with the DaemonSet's sources
/// (a reduced run serves fewer objects, so its steady state can only be lower).
fn check_record(options: &Options, host: &Value) -> anyhow::Result<()> {
    let path = util::root().join(RECORD);
    let Ok(text) = fs::read_to_string(&path) else {
        eprintln!("bench memory: no {RECORD} to check against");
        return Ok(());
    };
    let recorded: Value =
        serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
    if recorded["machine"] != host["machine"] {
        eprintln!("bench memory: {RECORD} is of another machine kind; not checked");
        return Ok(());
    }
    let allowed =
        |kib: u64| kib + ((kib as f64 * RECORD_TOLERANCE) as u64).max(RECORD_TOLERANCE_MIN_KIB);
    let mut checks: Vec<(&str, Option<u64>, Option<u64>)> = Vec::new();
    let idle = figures(host, "default");
    checks.push((
        "start-up peak (VmHWM)",
        idle.map(|f| f.peak_kib),
        recorded["rows"]["default"]["peak_kib"].as_u64(),
    ));
    checks.push((
        "idle (VmRSS)",
        idle.map(|f| f.resident_kib),
        recorded["rows"]["default"]["resident_kib"].as_u64(),
    ));
    checks.push((
        "idle (RssAnon)",
        idle.map(|f| f.anon_kib),
        recorded["rows"]["default"]["anon_kib"].as_u64(),
    ));
    // More objects than recorded may take more memory: then only idle is checked.
    let fewer = |key: &str, count: usize| {
        recorded["settings"][key]
            .as_u64()
            .is_some_and(|n| count as u64 <= n)
    };
    if fewer("nodes", options.nodes) && fewer("pods", options.pods) {
        checks.push((
            "steady state with the DaemonSet's sources",
            sources(host).map(|(i, n, p)| steady_kib(&i, &n, &p)),
            recorded["steady_kib"].as_u64(),
        ));
    }
    let mut over = Vec::new();
    for (what, now, then) in checks {
        let (Some(now), Some(then)) = (now, then) else {
            continue;
        };
        let verdict = if now <= allowed(then) {
            "within"
        } else {
            "OVER"
        };
        eprintln!(
            "bench memory: {what} {now} KiB, recorded {then} KiB (at most {} KiB): {verdict}",
            allowed(then)
        );
        if now > allowed(then) {
            over.push(format!("{what}: {now} KiB, recorded {then} KiB"));
        }
    }
    if !over.is_empty() {
        bail!(
            "the daemon grew past {RECORD} by more than {}% (or {RECORD_TOLERANCE_MIN_KIB} KiB):\n{}\n\
             if that is meant, run `cargo xtask bench memory --on host --record` and update the \
             DaemonSet's resources (`cargo test --workspace --test suite -- deploy::` says which)",
            (RECORD_TOLERANCE * 100.0) as u32,
            over.join("\n")
        );
    }
    Ok(())
}

fn kernel_names() -> String {
    MATRIX.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

fn path(daemon: &Daemon, arch: Arch) -> &Path {
    &daemon
        .paths
        .iter()
        .find(|(a, _)| *a == arch)
        .expect("built")
        .1
}

/// The `WATCHDOG-MEMORY-RESULT` line of `out`.
fn parse(out: &str) -> anyhow::Result<Value> {
    let line = out
        .lines()
        .find_map(|line| line.strip_prefix("WATCHDOG-MEMORY-RESULT "))
        .context("memory_guest printed no result")?;
    Ok(serde_json::from_str(line)?)
}

/// Builds the baseline's daemons (first: its build moves `target/*/release/watchdog`),
/// then this tree's, for each architecture; copies each under `target/bench-memory/`.
fn build(
    baseline: Option<&str>,
    arches: &[Arch],
    binary: Option<&Path>,
) -> anyhow::Result<Vec<Daemon>> {
    let root = util::root();
    let store = |label: &str, arch: Arch, built: &Path| -> anyhow::Result<PathBuf> {
        let dir = root
            .join("target/bench-memory")
            .join(label)
            .join(arch.debian());
        fs::create_dir_all(&dir)?;
        let copy = dir.join("watchdog");
        fs::copy(built, &copy)
            .with_context(|| format!("cannot copy {} to {}", built.display(), copy.display()))?;
        fs::File::open(&copy)?.sync_all()?;
        Ok(copy)
    };
    let mut daemons = Vec::new();
    if let Some(rev) = baseline {
        let (commit, src) = crate::bench::baseline_source(rev)?;
        distinguish(&src)?;
        let mut paths = Vec::new();
        for &arch in arches {
            crate::setup::build_tools(arch.rust_target())?;
            eprintln!(
                "xtask: building the daemon of {rev} ({}, release, {})",
                &commit[..12],
                arch.debian()
            );
            let built = util::build_release_of(&src, arch.rust_target())?;
            paths.push((
                arch,
                store(&format!("baseline-{}", &commit[..12]), arch, &built)?,
            ));
        }
        daemons.push(Daemon {
            label: "baseline",
            revision: format!("{rev} ({})", &commit[..12]),
            paths,
        });
    }
    let mut paths = Vec::new();
    for &arch in arches {
        let built = match binary {
            Some(binary) => binary.to_owned(),
            None => {
                crate::setup::build_tools(arch.rust_target())?;
                util::build_release(arch.rust_target())?
            }
        };
        paths.push((arch, store("current", arch, &built)?));
    }
    // A baseline identical to this tree's daemon measures nothing (e.g. an artifact cargo
    // took for this tree's that a baseline built before the two were told apart).
    for baseline in &daemons {
        for (arch, path) in &paths {
            let theirs = &baseline
                .paths
                .iter()
                .find(|(a, _)| a == arch)
                .expect("built")
                .1;
            if fs::read(path)? == fs::read(theirs)? {
                bail!(
                    "the {} daemon of {} is byte for byte this tree's; if the two sources differ, \
                     `cargo clean -p watchdog -p watchdog-common --release` (with --target for \
                     arm64) and run again",
                    arch.debian(),
                    baseline.revision
                );
            }
        }
    }
    daemons.insert(
        0,
        Daemon {
            label: "current",
            revision: match binary {
                Some(binary) => format!("{} (--binary)", binary.display()),
                None => format!("the working tree at {}", util::revision()),
            },
            paths,
        },
    );
    Ok(daemons)
}

/// Gives the baseline's workspace another version (`-baseline`): cargo names a workspace
/// crate's artifacts by its name and version, not its path, so the baseline built in this
/// tree's target directory would otherwise share (and reuse) this tree's `watchdog`
/// artifacts. The dependencies are shared either way.
fn distinguish(src: &Path) -> anyhow::Result<()> {
    let manifest = src.join("Cargo.toml");
    let text = fs::read_to_string(&manifest)?;
    let mut in_package = false;
    let mut changed = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with('[') {
            in_package = line.trim() == "[workspace.package]";
        }
        match line.strip_prefix("version = \"") {
            Some(rest) if in_package && !changed => {
                let version = rest.trim_end_matches('"');
                let marked = if version.contains("baseline") {
                    version.to_owned()
                } else if version.contains('-') {
                    format!("{version}.baseline")
                } else {
                    format!("{version}-baseline")
                };
                out.push_str(&format!("version = \"{marked}\"\n"));
                changed = true;
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if !changed {
        bail!(
            "{}: no version in [workspace.package] to tell the baseline's artifacts apart",
            manifest.display()
        );
    }
    fs::write(&manifest, out)?;
    Ok(())
}

/// A row's figures for `label` at one place: each round's.
fn cells<'a>(result: &'a Value, row: &str, label: &str) -> Vec<&'a Value> {
    result["rows"][row][label]
        .as_array()
        .map(|rounds| rounds.iter().collect())
        .unwrap_or_default()
}

/// The median of `field` over the rounds, and the rounds' spread (max - min).
fn median(cells: &[&Value], field: &str) -> Option<(u64, u64)> {
    let mut values: Vec<u64> = cells.iter().filter_map(|c| c[field].as_u64()).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let spread = values[values.len() - 1] - values[0];
    Some((values[values.len() / 2], spread))
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn print(options: &Options, daemons: &[Daemon], results: &[(String, Value)]) {
    println!(
        "daemon memory (release builds), {} round(s), the daemons' order alternating row by row:",
        options.rounds
    );
    for daemon in daemons {
        for (arch, path) in &daemon.paths {
            let bytes = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            println!(
                "  {:<8} {} ({}): {} ({} MiB)",
                daemon.label,
                daemon.revision,
                arch.debian(),
                path.display(),
                mib(bytes / 1024)
            );
        }
    }
    println!(
        "  settings: observed {} s once ready (and its sources listed), /metrics read every \
         {} s; churn {} s; {} Nodes; {} Pods ({} EndpointSlices of 10); {} idle connections",
        options.idle,
        watchdog_tests::memory::SCRAPE_EVERY.as_secs(),
        options.churn,
        options.nodes,
        options.pods,
        options.pods.div_ceil(10),
        options.connections
    );
    for (name, what) in ROWS {
        println!("  row {name}: {what}");
    }
    // Every resident figure with its parts: RssAnon (heap, stacks, written data) is what
    // the daemon allocated; RssFile and RssShmem are mapped files (its executable; from
    // tmpfs in the guests), clean pages the kernel can take back and read again.
    let mut rows: Vec<(&str, &str, &str)> = Vec::new();
    let parts = |rows: &mut Vec<(&'static str, &'static str, &'static str)>, row| {
        rows.extend([
            (row, "anon_kib", "  RssAnon"),
            (row, "file_kib", "  RssFile"),
            (row, "shmem_kib", "  RssShmem"),
            (row, "threads", "  threads (a count)"),
        ]);
    };
    rows.push(("default", "peak_kib", "start-up peak (VmHWM)"));
    rows.push(("default", "resident_kib", "idle (VmRSS)"));
    parts(&mut rows, "default");
    for (row, title) in [
        ("churn", "after the churn (VmRSS)"),
        ("nodes", "watching the Nodes (VmRSS)"),
        ("pods", "with the Pods (VmRSS)"),
    ] {
        rows.push((row, "resident_kib", title));
        parts(&mut rows, row);
        rows.push((row, "peak_kib", "  its peak (VmHWM)"));
    }
    rows.push((
        "connections",
        "resident_kib",
        "holding the connections (VmRSS)",
    ));
    rows.push(("connections", "anon_kib", "  RssAnon"));
    rows.push(("connections", "file_kib", "  RssFile"));
    rows.push(("connections", "peak_kib", "  its peak (VmHWM)"));
    rows.push(("connections", "after_kib", "  VmRSS after they closed"));
    rows.push((
        "connections",
        "metrics_answered_ms",
        "  /metrics answered (ms, a time)",
    ));
    for (place, result) in results {
        println!(
            "\n{place}: kernel {}, {}, {} KiB pages (MiB unless said; median of the rounds, ± \
             their spread)",
            result["kernel"].as_str().unwrap_or("?"),
            result["machine"].as_str().unwrap_or("?"),
            result["page_size"].as_u64().unwrap_or(0) / 1024,
        );
        let mut header = format!("  {:<33}", "");
        for daemon in daemons {
            header.push_str(&format!(" {:>14}", daemon.label));
        }
        if daemons.len() == 2 {
            header.push_str(&format!(" {:>9}", "ratio"));
        }
        println!("{header}");
        for &(row, field, title) in &rows {
            let mut line = format!("  {title:<33}");
            let mut medians = Vec::new();
            for daemon in daemons {
                let cells = cells(result, row, daemon.label);
                let Some((value, spread)) = median(&cells, field) else {
                    line.push_str(&format!(" {:>14}", "-"));
                    continue;
                };
                medians.push(value);
                let count = field.ends_with("_ms") || field == "threads";
                let shown = if count { value.to_string() } else { mib(value) };
                let spread = match cells.len() {
                    1 => String::new(),
                    _ if count => format!(" ±{spread}"),
                    _ => format!(" ±{}", mib(spread)),
                };
                line.push_str(&format!(" {:>14}", format!("{shown}{spread}")));
            }
            if let [now, before] = medians[..] {
                line.push_str(&format!(" {:>9.2}", now as f64 / before.max(1) as f64));
            }
            println!("{line}");
        }
        if let Some(churned) = cells(result, "churn", "current")
            .first()
            .and_then(|c| c["pods_created"].as_u64())
        {
            println!("  (the churn created and removed {churned} pod namespaces per daemon)");
        }
        let current = |row: &str, field: &str| median(&cells(result, row, "current"), field);
        let verdict = |value: u64, budget: u64| if value < budget { "within" } else { "OVER" };
        let mut budgets = Vec::new();
        if let Some((peak, _)) = current("default", "peak_kib") {
            budgets.push(format!(
                "start-up peak (VmHWM) {} < {}: {}",
                mib(peak),
                mib(STARTUP_PEAK_BUDGET_KIB),
                verdict(peak, STARTUP_PEAK_BUDGET_KIB)
            ));
        }
        if let Some((idle, _)) = current("default", "resident_kib") {
            budgets.push(format!(
                "idle (VmRSS, the kernel test's) {} < {}: {}",
                mib(idle),
                mib(IDLE_BUDGET_KIB),
                verdict(idle, IDLE_BUDGET_KIB)
            ));
        }
        if let Some((anon, _)) = current("default", "anon_kib") {
            budgets.push(format!(
                "idle (RssAnon, the kernel test's) {} < {}: {}",
                mib(anon),
                mib(IDLE_ANON_BUDGET_KIB),
                verdict(anon, IDLE_ANON_BUDGET_KIB)
            ));
        }
        if let Some((nodes, _)) = current("nodes", "resident_kib") {
            budgets.push(if options.nodes == NODES_BUDGET_COUNT {
                format!(
                    "{NODES_BUDGET_COUNT} Nodes (VmRSS) {} < {}: {}",
                    mib(nodes),
                    mib(NODES_BUDGET_KIB),
                    verdict(nodes, NODES_BUDGET_KIB)
                )
            } else {
                format!(
                    "{} Nodes: not the budget's {NODES_BUDGET_COUNT} (--nodes)",
                    options.nodes
                )
            });
        }
        if !budgets.is_empty() {
            println!("  budgets (current, MiB): {}", budgets.join("; "));
        }
        if let Some(steps) = result["steps"].as_array().filter(|s| !s.is_empty()) {
            println!("  start-up step by step (current; resident, peak so far):");
            for step in steps {
                println!(
                    "    after {:<62} {:>6} {:>6}",
                    step[0].as_str().unwrap_or("?"),
                    mib(step[1].as_u64().unwrap_or(0)),
                    mib(step[2].as_u64().unwrap_or(0))
                );
            }
        }
    }
    suggest(options, results);
}

/// The DaemonSet's memory request and limit from the current daemon's rows.
fn suggest(options: &Options, results: &[(String, Value)]) {
    let mut steady = 0u64;
    let mut peak = 0u64;
    for (_, result) in results {
        if let Some((idle, nodes, pods)) = sources(result) {
            steady = steady.max(steady_kib(&idle, &nodes, &pods));
        }
        peak = peak.max(highest_peak(result));
    }
    if steady == 0 {
        return;
    }
    println!(
        "\nDaemonSet resources from these rows (deploy/kustomize/base/daemonset.yaml): \
         requests.memory {}Mi = {REQUEST_MARGIN} x the steady state with {} Nodes \
         and {} Pods ({} MiB: the Nodes row plus the RssAnon the Pods row adds to idle, the \
         executable's pages once); limits.memory at least {}Mi = {LIMIT_MARGIN} x the highest \
         peak of any row ({} MiB)",
        request_mib(steady),
        options.nodes,
        options.pods,
        mib(steady),
        limit_floor_mib(peak),
        mib(peak)
    );
}
