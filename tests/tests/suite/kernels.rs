//! The kernel matrix: Debian's 5.10 (x86_64), 6.1 (arm64, TC through clsact) and 6.12
//! arm64 16 KiB-page kernels booted under qemu by `cargo xtask kernels`, the daemon inside
//! each. The guest reports what it measured; this test checks every number, the release
//! daemon's start-up peak and idle memory against their budgets included.
//!
//! Takes a few minutes (downloads once into target/kernels/). Skip it with
//! `WATCHDOG_SKIP_KERNELS=1` or `cargo xtask test --skip-kernels` (not under CI, where a
//! skip fails).

use std::path::Path;

use serde_json::Value;
use watchdog_tests::{
    TempDir,
    memory::{
        IDLE_ANON_BUDGET_KIB, IDLE_BUDGET_KIB, STARTUP_PEAK_BUDGET_KIB, daemonset_memory_mib,
    },
    require_root, skip_requested,
};

#[test]
fn daemon_works_on_debian_kernels_booted_under_qemu() {
    let test = "daemon_works_on_debian_kernels_booted_under_qemu";
    if skip_requested("WATCHDOG_SKIP_KERNELS", test) || !require_root(test) {
        return;
    }
    let dir = TempDir::new("kernels");
    let results_path = dir.path().join("results.json");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let status = watchdog_tests::cargo()
        .current_dir(root)
        .args(["xtask", "kernels", "--results"])
        .arg(&results_path)
        .status()
        .expect("run cargo xtask kernels");
    assert!(status.success(), "cargo xtask kernels failed: {status}");
    let results: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&results_path).unwrap()).unwrap();
    assert_eq!(results.len(), 3, "{results:#?}");
    for result in &results {
        check(result);
    }
}

/// Every number one kernel reported.
fn check(r: &Value) {
    let name = r["name"].as_str().unwrap_or("?");
    let context = || serde_json::to_string_pretty(r).unwrap();
    assert_eq!(
        r["errors"],
        Value::Array(Vec::new()),
        "{name}: {}",
        context()
    );
    let release = r["kernel"].as_str().unwrap_or_default();
    let (major, minor) = release
        .split_once('.')
        .and_then(|(a, b)| {
            Some((
                a.parse::<u32>().ok()?,
                b.split(['.', '-']).next()?.parse::<u32>().ok()?,
            ))
        })
        .unwrap_or_else(|| panic!("{name}: kernel release {release:?}"));
    let expected_release = name.split('-').next().unwrap();
    assert_eq!(
        format!("{major}.{minor}"),
        expected_release,
        "{name}: booted {release}"
    );
    assert!(
        r["ready_ms"].as_u64().is_some(),
        "{name}: never ready: {}",
        context()
    );

    // Every probe attached on every kernel of the matrix (tcp on 5.10 through the
    // v4-mapped fallback).
    for probe in ["kfree_skb", "peers", "tcp"] {
        assert_eq!(
            r["probe_up"][probe],
            1.0,
            "{name}: probe {probe}: {}",
            context()
        );
        assert_eq!(
            r["probe_unsupported"][probe],
            0.0,
            "{name}: probe {probe}: {}",
            context()
        );
    }
    let feature = |f: &str| r["features"][f].as_f64() == Some(1.0);
    let at_least = |a: u32, b: u32| (major, minor) >= (a, b);
    assert_eq!(feature("tcx"), at_least(6, 6), "{name}: tcx: {}", context());
    assert_eq!(
        feature("kfree_skb_reason"),
        at_least(5, 17),
        "{name}: {}",
        context()
    );
    assert_eq!(
        feature("tcp_retransmit_family"),
        major >= 6,
        "{name}: {}",
        context()
    );
    assert!(feature("tracefs"), "{name}: {}", context());

    // Exact drop counts from the known burst.
    let reason = if at_least(5, 17) {
        "NO_SOCKET"
    } else {
        "UNKNOWN"
    };
    assert_eq!(r["drops"]["reason"], reason, "{name}: {}", context());
    assert_eq!(
        r["drops"]["counted"],
        r["drops"]["sent"],
        "{name}: drops: {}",
        context()
    );
    // Exact per-peer packet counts each way over the veth pair.
    let sent = &r["peers"]["sent"];
    assert_eq!(&r["peers"]["answered"], sent, "{name}: {}", context());
    assert_eq!(&r["peers"]["tx"], sent, "{name}: peers tx: {}", context());
    assert_eq!(&r["peers"]["rx"], sent, "{name}: peers rx: {}", context());
    // One connect whose SYN-ACKs vanish: attempted, failed, its SYN retransmitted (the
    // tcp probe's retransmit tracepoint on 5.10 has no family field).
    let tcp = &r["peers"]["tcp"];
    assert_eq!(tcp["connected"], false, "{name}: {}", context());
    assert_eq!(tcp["attempted"], 1, "{name}: {}", context());
    assert_eq!(tcp["failed"], 1, "{name}: {}", context());
    assert!(
        tcp["syn_retransmits"].as_u64() >= Some(1),
        "{name}: {}",
        context()
    );
    // The ghost VTEP named; the healthy VTEP of the working pair not.
    assert_eq!(
        r["ghost_vtep"]["overlay_ping"],
        true,
        "{name}: {}",
        context()
    );
    assert_eq!(r["ghost_vtep"]["named"], true, "{name}: {}", context());
    assert_eq!(
        r["ghost_vtep"]["healthy_vtep_named"],
        false,
        "{name}: {}",
        context()
    );
    // Clean shutdown.
    assert_eq!(r["shutdown"]["exit_code"], 0, "{name}: {}", context());
    assert_eq!(r["shutdown"]["detached"], true, "{name}: {}", context());
    if name.ends_with("-16k") {
        assert_eq!(r["page_size"], 16384, "{name}: {}", context());
    }
    // The working daemon (every namespace watched, after the scenarios) fits in the
    // DaemonSet's memory request: what the scheduler reserves for it on every node.
    let request_kib = daemonset_memory_mib().0 * 1024;
    let working = r["rss_kib"].as_u64();
    assert!(
        working.is_some_and(|kib| kib < request_kib),
        "{name}: VmRSS after the scenarios {working:?} KiB, the DaemonSet's request \
         {request_kib} KiB: {}",
        context()
    );
    // The footprint with the embedded default config (release build): the start-up peak
    // (VmHWM) and the idle memory within their budgets.
    let footprint = &r["footprint"];
    let peak = footprint["peak_kib"].as_u64();
    assert!(
        peak.is_some_and(|kib| kib < STARTUP_PEAK_BUDGET_KIB),
        "{name}: start-up peak {peak:?} KiB, budget {STARTUP_PEAK_BUDGET_KIB} KiB: {footprint}"
    );
    // Idle: the resident memory (VmRSS, mostly the executable's clean code pages) and,
    // within it, the anonymous memory (RssAnon: what the daemon allocated, which nothing
    // but the daemon can give back).
    let resident = footprint["resident_kib"].as_u64();
    assert!(
        resident.is_some_and(|kib| kib < IDLE_BUDGET_KIB),
        "{name}: idle VmRSS {resident:?} KiB, budget {IDLE_BUDGET_KIB} KiB: {footprint}"
    );
    let idle = footprint["anon_kib"].as_u64();
    assert!(
        idle.is_some_and(|kib| kib < IDLE_ANON_BUDGET_KIB),
        "{name}: idle RssAnon {idle:?} KiB, budget {IDLE_ANON_BUDGET_KIB} KiB: {footprint}"
    );
    // The guest read every attached program's size (the per-architecture cost figure).
    for program in ["kfree_skb", "peers_egress", "peers_ingress"] {
        let size = &r["programs"][program];
        assert!(
            size["xlated_insns"].as_u64().is_some_and(|n| n > 0)
                && size["jited_bytes"].as_u64().is_some_and(|n| n > 0),
            "{name}: {program}: {size}; {}",
            context()
        );
    }
}
