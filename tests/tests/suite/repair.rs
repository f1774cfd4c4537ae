//! Repair on a real kernel: a Flannel-style lab, a NodeList file as the desired state, the
//! planner and the rtnetlink executor run inside a node's namespace. `apply` puts the
//! Node's objects back and nothing else changes; `dry_run` and `repair plan` change
//! nothing; a change whose verification fails is rolled back to the exact before-state.

use std::{
    collections::BTreeSet,
    net::TcpListener,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use watchdog::{
    commands::repair::execute_now,
    config::{Config, repair::Mode},
    model::{desired::Model, net::Snapshot},
    repair::{
        execute::{ExecError, Executor, Netlink},
        journal,
        oneshot::plan_now,
        op::{Action, Op},
        plan::Outcome,
        report::{Done, Report},
        world::FnWorld,
    },
    sources::{desired::file, mirror},
};
use watchdog_tests::{
    Daemon, NetNs, TempDir, daemon_binary,
    hook::Hook,
    lab::{
        Lab, MISSING_GATEWAY, RETIRED_VTEP, config_dump,
        nodes::{annotate, node_list, node_name, write_node_list},
        overlay_ip, underlay_ip, vtep_mac,
    },
    poll_until, require_root,
};

const PROBE: Duration = Duration::from_millis(300);

fn tool(ns: &NetNs, tool: &str, args: &[&str]) -> String {
    let output = Command::new(tool)
        .args(["-n", ns.name()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    assert!(
        output.status.success(),
        "{tool} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The node's configuration dump (see [`config_dump`]).
fn dump(ns: &NetNs) -> BTreeSet<String> {
    config_dump(ns)
}

fn diff(before: &BTreeSet<String>, after: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
    (
        before.difference(after).cloned().collect(),
        after.difference(before).cloned().collect(),
    )
}

/// Objects outside the owned set, each wrong in a way that could tempt a careless
/// planner: another VXLAN device with an FDB entry for node 1's VTEP MAC pointing at the
/// retired address, node 1's pod subnet via a dead gateway in another table, a blackhole
/// and a route with a foreign protocol outside the pod subnets.
fn add_unowned(ns: &NetNs) {
    for command in [
        "link add vx42 type vxlan id 42 local 192.168.77.10 dev eth0 dstport 4790 nolearning",
        "link set vx42 up",
        "neigh add 10.244.9.0 lladdr 02:00:00:00:00:09 dev vx42 nud permanent",
        "route add 10.244.1.0/24 via 192.168.77.98 dev eth0 onlink table 100",
        "route add blackhole 10.99.0.0/16",
        "route add 10.98.0.0/16 via 192.168.77.97 dev eth0 onlink proto 99",
    ] {
        let args: Vec<&str> = command.split_whitespace().collect();
        tool(ns, "ip", &args);
    }
    tool(
        ns,
        "bridge",
        &[
            "fdb",
            "append",
            &vtep_mac(1),
            "dev",
            "vx42",
            "dst",
            &RETIRED_VTEP.to_string(),
        ],
    );
}

struct Setup {
    dir: TempDir,
    nodes: PathBuf,
    config: Config,
}

impl Setup {
    fn new(lab: &Lab, verify_window: Duration) -> Self {
        let dir = TempDir::new("watchdog-repair");
        let nodes = dir.path().join("nodes.json");
        std::fs::write(&nodes, serde_json::to_vec_pretty(&lab.node_list()).unwrap()).unwrap();
        let mut config = Config::default();
        config.desired.node_name = node_name(0);
        config.repair.journal = dir.path().join("journal.jsonl");
        config.repair.verify_window = verify_window;
        Self { dir, nodes, config }
    }

    fn model(&self) -> Model {
        file::load(&self.nodes, 1 << 20).expect("the lab's NodeList loads")
    }

    /// The config file the CLI is given: this node's name and the journal.
    fn config_file(&self) -> PathBuf {
        let config = self.dir.path().join("watchdog.toml");
        std::fs::write(
            &config,
            format!(
                "[desired]\nnode_name = \"{}\"\n[repair]\njournal = \"{}\"\n",
                node_name(0),
                self.config.repair.journal.display()
            ),
        )
        .unwrap();
        config
    }

    /// `watchdog ARGS --config FILE [--nodes FILE]` inside `ns`: exit code, stdout, stderr.
    fn cli(&self, ns: &NetNs, args: &[&str], nodes: bool) -> (Option<i32>, String, String) {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns.name()])
            .arg(daemon_binary())
            .args(args)
            .arg("--config")
            .arg(self.config_file());
        if nodes {
            command.arg("--nodes").arg(&self.nodes);
        }
        let output = command.output().expect("run watchdog");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn journal(&self) -> Vec<journal::Record> {
        let (entries, bad) = journal::read(&self.config.repair.journal).unwrap();
        assert_eq!(bad, 0);
        journal::records(&entries)
    }
}

/// Plans inside `ns` and runs the plan in `mode`, with `evidence` as the extra check.
fn plan_and_run(
    ns: &NetNs,
    setup: &Setup,
    mode: Mode,
    evidence: fn(&Op, &Snapshot) -> Option<String>,
) -> (Vec<Op>, Vec<Report>) {
    let model = setup.model();
    let own = node_name(0);
    ns.run(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let net = mirror::dump().await.expect("dump the node's namespace");
            let plan = match plan_now(&net, &model, &own, &setup.config.repair) {
                Outcome::Planned(plan) => plan,
                Outcome::NoPlan { reason } => panic!("no plan: {reason}"),
            };
            assert_eq!(plan.refused, None, "{plan:?}");
            let reports = execute_now(&plan.ops, mode, &model, &own, &setup.config, evidence)
                .await
                .expect("the executor runs");
            (plan.ops, reports)
        })
    })
}

fn commands(ops: &[Op]) -> Vec<String> {
    ops.iter().map(Op::command).collect()
}

#[test]
fn apply_replaces_a_repointed_fdb_entry_with_the_public_ip_and_touches_nothing_else() {
    if !require_root("apply_replaces_a_repointed_fdb_entry") {
        return;
    }
    let lab = Lab::new(3);
    let ns = lab.node(0).ns();
    add_unowned(ns);
    lab.repoint_fdb(0, 1, RETIRED_VTEP);
    assert!(
        lab.probe(0, 1, PROBE).is_err(),
        "the fault must break 0 → 1"
    );
    let setup = Setup::new(&lab, Duration::from_secs(10));
    let before = dump(ns);

    let (ops, reports) = plan_and_run(ns, &setup, Mode::Apply, |_, _| None);

    let mac = vtep_mac(1);
    assert_eq!(
        commands(&ops),
        [format!(
            "bridge fdb replace {mac} dev flannel.1 dst {} self permanent",
            underlay_ip(1)
        )]
    );
    assert_eq!(ops[0].action, Action::Replace);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].done, Done::Verified, "{reports:?}");
    // Exactly one line changed: that FDB entry; the unowned objects are as they were.
    let (removed, added) = diff(&before, &dump(ns));
    assert_eq!(removed.len(), 1, "removed {removed:?}, added {added:?}");
    assert_eq!(added.len(), 1, "removed {removed:?}, added {added:?}");
    assert!(
        removed[0].starts_with(&format!("fdb: {mac} dev flannel.1 dst {RETIRED_VTEP} ")),
        "{removed:?}"
    );
    assert!(
        added[0].starts_with(&format!("fdb: {mac} dev flannel.1 dst {} ", underlay_ip(1))),
        "{added:?}"
    );
    poll_until(
        Duration::from_secs(10),
        "pod 0 → pod 1 after the repair",
        || lab.probe(0, 1, PROBE).ok(),
    );
    // Journalled before it was made; applied, then verified.
    let records = setup.journal();
    assert_eq!(records.len(), 1, "{records:?}");
    let outcomes: Vec<_> = records[0].verdicts.iter().map(|v| v.outcome).collect();
    assert_eq!(
        outcomes,
        [journal::Outcome::Applied, journal::Outcome::Verified]
    );
    assert_eq!(records[0].change.before, ops[0].before);
    drop(setup.dir);
}

#[test]
fn dry_run_and_the_cli_change_nothing() {
    if !require_root("dry_run_and_the_cli_change_nothing") {
        return;
    }
    let lab = Lab::new(3);
    let ns = lab.node(0).ns();
    add_unowned(ns);
    lab.repoint_fdb(0, 2, RETIRED_VTEP);
    let setup = Setup::new(&lab, Duration::from_secs(10));
    let before = dump(ns);

    let (ops, reports) = plan_and_run(ns, &setup, Mode::DryRun, |_, _| None);
    assert_eq!(ops.len(), 1, "{:?}", commands(&ops));
    assert!(
        reports.iter().all(|r| r.done == Done::DryRun),
        "{reports:?}"
    );
    assert_eq!(dump(ns), before);
    assert!(
        !setup.config.repair.journal.exists(),
        "a dry run journals nothing"
    );

    // The CLI: `repair plan` prints the command and its inverse (exit 1: a plan);
    // `repair apply` without --yes is a dry run.
    let cli = |args: &[&str]| setup.cli(ns, args, true);
    let mac = vtep_mac(2);
    let (code, stdout, stderr) = cli(&["repair", "plan"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "bridge fdb replace {mac} dev flannel.1 dst {} self permanent",
            underlay_ip(2)
        )) && stdout.contains(&format!(
            "undo: bridge fdb replace {mac} dev flannel.1 dst {RETIRED_VTEP} self permanent"
        )),
        "{stdout}"
    );
    let (code, stdout, stderr) = cli(&["repair", "plan", "--json"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["state"], "planned");
    assert_eq!(json["ops"][0]["action"], "replace");
    let (code, stdout, stderr) = cli(&["repair", "apply"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("dry run: nothing changed"), "{stdout}");
    assert_eq!(
        dump(ns),
        before,
        "repair plan / apply without --yes changed the kernel"
    );
    assert!(lab.probe(0, 2, PROBE).is_err(), "the fault is still there");
}

#[test]
fn a_failed_verification_rolls_back_to_the_exact_prior_state() {
    if !require_root("a_failed_verification_rolls_back") {
        return;
    }
    let lab = Lab::new(3);
    let ns = lab.node(0).ns();
    add_unowned(ns);
    // Three of node 1's objects wrong at once: one unit of three operations.
    lab.repoint_fdb(0, 1, RETIRED_VTEP);
    tool(
        ns,
        "ip",
        &["neigh", "del", "10.244.1.0", "dev", "flannel.1"],
    );
    tool(
        ns,
        "ip",
        &["route", "replace", "blackhole", "10.244.1.0/24"],
    );
    let setup = Setup::new(&lab, Duration::from_secs(1));
    let before = dump(ns);

    let (ops, reports) = plan_and_run(ns, &setup, Mode::Apply, |_, _| {
        Some("forced by the test".into())
    });

    assert_eq!(
        commands(&ops),
        [
            format!(
                "bridge fdb replace {} dev flannel.1 dst {} self permanent",
                vtep_mac(1),
                underlay_ip(1)
            ),
            format!(
                "ip neigh add 10.244.1.0 lladdr {} dev flannel.1 nud permanent",
                vtep_mac(1)
            ),
            "ip route replace 10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink proto boot \
             table main"
                .to_owned(),
        ]
    );
    assert!(
        reports.iter().all(
            |r| matches!(&r.done, Done::RolledBack(why) if why.contains("forced by the test"))
        ),
        "{reports:?}"
    );
    assert_eq!(
        dump(ns),
        before,
        "the rollback did not restore the exact before-state"
    );
    // Journal: three changes, then their three rollbacks in reverse order.
    let records = setup.journal();
    let summary: Vec<(
        journal::Origin,
        Option<u64>,
        String,
        Option<journal::Outcome>,
    )> = records
        .iter()
        .map(|r| {
            (
                r.change.origin,
                r.change.reverts,
                r.change.key.clone(),
                r.outcome(),
            )
        })
        .collect();
    let ids: Vec<u64> = records.iter().map(|r| r.change.id).collect();
    let keys: Vec<String> = ops.iter().map(|op| op.key.clone()).collect();
    use journal::{Origin::*, Outcome::*};
    assert_eq!(
        summary,
        [
            (Repair, None, keys[0].clone(), Some(RolledBack)),
            (Repair, None, keys[1].clone(), Some(RolledBack)),
            (Repair, None, keys[2].clone(), Some(RolledBack)),
            (Rollback, Some(ids[2]), keys[2].clone(), Some(Verified)),
            (Rollback, Some(ids[1]), keys[1].clone(), Some(Verified)),
            (Rollback, Some(ids[0]), keys[0].clone(), Some(Verified)),
        ]
    );
}

#[test]
fn undo_restores_the_before_state_exactly_and_refuses_what_it_must_not_undo() {
    if !require_root("undo_restores_the_before_state_exactly") {
        return;
    }
    let lab = Lab::new(3);
    let ns = lab.node(0).ns();
    add_unowned(ns);
    lab.repoint_fdb(0, 1, RETIRED_VTEP);
    let setup = Setup::new(&lab, Duration::from_secs(10));
    let before = dump(ns);
    let mac = vtep_mac(1);

    let (code, stdout, stderr) = setup.cli(ns, &["repair", "apply", "--yes"], true);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_ne!(dump(ns), before, "apply changed nothing");
    assert!(lab.probe(0, 1, PROBE).is_ok(), "0 → 1 after the repair");

    // `undo --last`: the exact before-state, journalled as change 2 reverting change 1.
    let (code, stdout, stderr) = setup.cli(ns, &["repair", "undo", "--last"], false);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "undone: change 1 by change 2: bridge fdb replace {mac} dev flannel.1 dst \
             {RETIRED_VTEP} self permanent"
        )),
        "{stdout}"
    );
    assert_eq!(
        dump(ns),
        before,
        "undo did not restore the exact before-state"
    );

    // Refusals change nothing and exit 1.
    for (args, why) in [
        (&["repair", "undo", "--last"][..], "nothing to undo"),
        (&["repair", "undo", "1"][..], "change 1 was already undone"),
        (
            &["repair", "undo", "2"][..],
            "change 2 is a undo of change 1",
        ),
        (
            &["repair", "undo", "42"][..],
            "change 42 is not in the journal",
        ),
    ] {
        let (code, stdout, stderr) = setup.cli(ns, args, false);
        assert_eq!(code, Some(1), "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
    assert_eq!(dump(ns), before);

    // `repair journal --json`: one line per change, with its origin and outcome.
    let (code, stdout, stderr) = setup.cli(ns, &["repair", "journal", "--json"], false);
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(
        (&lines[0]["id"], &lines[0]["origin"], &lines[0]["outcome"]),
        (
            &Value::from(1),
            &Value::from("repair"),
            &Value::from("undone")
        )
    );
    assert_eq!(
        (&lines[1]["id"], &lines[1]["origin"], &lines[1]["reverts"]),
        (&Value::from(2), &Value::from("undo"), &Value::from(1))
    );
    assert_eq!(lines[1]["outcome"], "verified");
    assert_eq!(
        lines[1]["command"],
        format!("bridge fdb replace {mac} dev flannel.1 dst {RETIRED_VTEP} self permanent")
    );
    let (code, stdout, _) = setup.cli(ns, &["repair", "journal"], false);
    assert_eq!(code, Some(0));
    let text: Vec<&str> = stdout.lines().collect();
    assert_eq!(text.len(), 3, "{stdout}");
    assert!(
        text[0].contains("ORIGIN") && text[0].contains("OUTCOME"),
        "{stdout}"
    );
    assert!(
        text[1].contains(" repair ") && text[1].contains(" undone "),
        "{stdout}"
    );
    assert!(
        text[2].contains(" undo ") && text[2].ends_with("self permanent (reverts 1)"),
        "{stdout}"
    );

    // Repaired again (change 3), then someone else changes the entry: undo refuses.
    let (code, stdout, stderr) = setup.cli(ns, &["repair", "apply", "--yes"], true);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    tool(
        ns,
        "bridge",
        &[
            "fdb",
            "replace",
            &mac,
            "dev",
            "flannel.1",
            "dst",
            "192.168.77.96",
            "self",
            "permanent",
        ],
    );
    let by_hand = dump(ns);
    let (code, stdout, stderr) = setup.cli(ns, &["repair", "undo", "--last"], false);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("was changed since change 3 by someone else")
            && stderr.contains("dst 192.168.77.96"),
        "{stderr}"
    );
    assert_eq!(dump(ns), by_hand, "a refused undo changed the kernel");
    assert_eq!(setup.journal().len(), 3, "a refused undo journals nothing");
}

#[test]
fn a_journal_that_fails_after_a_change_was_sent_leaves_nothing_half_done() {
    if !require_root("a_journal_that_fails_after_a_change_was_sent") {
        return;
    }
    let lab = Lab::new(3);
    let ns = lab.node(0).ns();
    add_unowned(ns);
    lab.repoint_fdb(0, 1, RETIRED_VTEP);
    let setup = Setup::new(&lab, Duration::from_secs(5));
    let before = dump(ns);
    let model = setup.model();
    let own = node_name(0);
    let path = setup.config.repair.journal.clone();
    let err = ns.run(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let net = mirror::dump().await.unwrap();
            let Outcome::Planned(plan) = plan_now(&net, &model, &own, &setup.config.repair) else {
                panic!("no plan")
            };
            assert_eq!(plan.ops.len(), 1, "{:?}", commands(&plan.ops));
            // A journal whose second write fails: past its 1-byte cap it rotates, and
            // `<journal>.1` is a directory, so the rename fails. The change is written,
            // sent and shown; its `applied` verdict cannot be written.
            let mut journal = journal::Journal::open(&path, 1).unwrap();
            std::fs::create_dir_all(journal::rotated(&path).join("in-the-way")).unwrap();
            let mut netlink = Netlink::open().unwrap();
            let mut world = FnWorld {
                read: || async { mirror::dump().await.map_err(|e| e.to_string()) },
                evidence: |_: &Op, _: &Snapshot| None,
            };
            let mut executor = Executor {
                mode: Mode::Apply,
                settings: &setup.config.repair,
                verify_window: Duration::from_secs(5),
                poll: Duration::from_millis(50),
                netlink: Some(&mut netlink),
                journal: Some(&mut journal),
                world: &mut world,
            };
            executor
                .run(&plan.ops)
                .await
                .expect_err("the journal failed")
        })
    });
    // The second write (the `applied` verdict) failed: it comes only once the kernel
    // showed the change.
    assert!(
        matches!(err, ExecError::Journal(_)) && err.to_string().contains("cannot rotate it"),
        "{err}"
    );
    assert_eq!(
        dump(ns),
        before,
        "the change sent before the journal failed was not rolled back"
    );
    // The change is journalled and open; the next start finds the kernel as before and
    // journals it `not_applied`.
    std::fs::remove_dir_all(journal::rotated(&path)).unwrap();
    let open = setup.journal();
    assert_eq!(open.len(), 1, "{open:?}");
    assert!(open[0].is_open(), "{open:?}");
    let reports = ns.run(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(execute_now(
            &[],
            Mode::Apply,
            &model,
            &own,
            &setup.config,
            |_, _| None,
        ))
    });
    let reports = reports.expect("recovery runs");
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(
        matches!(reports[0].done, Done::NotApplied(_)),
        "{reports:?}"
    );
    assert_eq!(
        setup.journal()[0].outcome(),
        Some(journal::Outcome::NotApplied)
    );
    assert_eq!(dump(ns), before);
}

// ---------------------------------------------------------------------------------------
// The daemon with `[repair] mode`: the NodeList file as the desired state, 250 ms cycles,
// traffic running between the pods.

/// 250 ms cycles.
const POLL: Duration = Duration::from_millis(250);
/// Pass/fail deadline for something the daemon must do (not a measurement).
const DEADLINE: Duration = Duration::from_secs(30);
/// Fault → traffic restored, as the issue asks.
const RESTORED_WITHIN: Duration = Duration::from_secs(10);

/// A 3-node lab with unowned objects in node 0, the NodeList file written (`items`, the
/// lab's Nodes unless given), the daemon on node 0 in `mode`, ready and knowing the
/// desired state.
struct Running {
    daemon: Daemon,
    config: String,
    journal: PathBuf,
    lab: Lab,
    dir: TempDir,
}

fn daemon_config(dir: &TempDir, mode: &str, verify_window: &str, extra: &str) -> String {
    format!(
        "poll_interval = \"{}ms\"\n[detect]\nwindow = \"3s\"\n[desired]\nnode_name = \"{}\"\n\
         grace = \"1s\"\nsource = \"file\"\npath = \"{}\"\nfile_poll = \"200ms\"\n\
         [repair]\nmode = \"{mode}\"\njournal = \"{}\"\nverify_window = \"{verify_window}\"\n\
         {extra}",
        POLL.as_millis(),
        node_name(0),
        dir.path().join("nodes.json").display(),
        dir.path().join("journal.jsonl").display(),
    )
}

fn running(
    mode: &str,
    verify_window: &str,
    extra: &str,
    items: Option<fn(&Lab) -> Vec<Value>>,
) -> Running {
    running_with(mode, verify_window, extra, items, |_, _| {})
}

/// [`running`], with `prepare` run on the lab (and the directory) before the daemon starts.
fn running_with(
    mode: &str,
    verify_window: &str,
    extra: &str,
    items: Option<fn(&Lab) -> Vec<Value>>,
    prepare: impl FnOnce(&Lab, &TempDir),
) -> Running {
    let lab = Lab::new(3);
    lab.check_pod_connectivity()
        .expect("the lab works before injection");
    add_unowned(lab.node(0).ns());
    let dir = TempDir::new("watchdog-repair-daemon");
    let list = match items {
        Some(items) => node_list(items(&lab)),
        None => lab.node_list(),
    };
    write_node_list(&dir.path().join("nodes.json"), &list);
    prepare(&lab, &dir);
    let config = daemon_config(&dir, mode, verify_window, extra);
    let mut daemon = Daemon::start(lab.node(0).ns(), &config);
    daemon.wait_ready();
    wait_desired(&daemon);
    Running {
        daemon,
        config,
        journal: dir.path().join("journal.jsonl"),
        lab,
        dir,
    }
}

fn wait_desired(daemon: &Daemon) {
    poll_until(DEADLINE, "the desired state known", || {
        let metrics = daemon.metrics();
        (metrics.value("watchdog_desired_up", &[("source", "file")]) == Some(1.0)
            && metrics.count("watchdog_desired_nodes", &[]) == 3)
            .then_some(())
    });
}

fn records_at(path: &std::path::Path) -> Vec<journal::Record> {
    match journal::read(path) {
        Ok((entries, _)) => journal::records(&entries),
        Err(_) => Vec::new(),
    }
}

/// Waits until `watchdog_repairs_total{outcome}` is `n`; fails with the log and metrics.
/// The family is exported from the first repair operation on (an empty family is not).
fn wait_repairs(daemon: &Daemon, outcome: &str, n: u64) {
    let deadline = Instant::now() + DEADLINE;
    while !daemon.metrics().declares("watchdog_repairs_total") || repairs(daemon, outcome) != n {
        assert!(
            Instant::now() < deadline,
            "watchdog_repairs_total{{outcome={outcome}}} is not {n} after {DEADLINE:?}\n{}\n{}",
            daemon.metrics().0,
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `watchdog_repairs_total{outcome}` summed over the object kinds (0 for a kind without
/// that outcome; the family itself must be there, so read it once a repair happened).
fn repairs(daemon: &Daemon, outcome: &str) -> u64 {
    let metrics = daemon.metrics();
    ["fdb", "neighbour", "route"]
        .iter()
        .map(|kind| {
            metrics.count(
                "watchdog_repairs_total",
                &[("kind", kind), ("outcome", outcome)],
            )
        })
        .sum()
}

/// Waits until pod 0 reaches pod `to` again; returns the time since `fault`.
fn restored(lab: &Lab, to: usize, fault: Instant, daemon: &Daemon) -> Duration {
    let deadline = fault + RESTORED_WITHIN;
    loop {
        if lab.probe(0, to, PROBE).is_ok() {
            return fault.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "pod 0 → pod {to} not restored {RESTORED_WITHIN:?} after the fault\n{}",
            daemon.log()
        );
    }
}

/// With the daemon running: injects `fault`, which must break pod 0 → pod `to`, waits for
/// that traffic to flow again (within [`RESTORED_WITHIN`]) and for the daemon to count
/// `applied` changes in all; returns fault → traffic restored.
fn repaired(
    r: &Running,
    to: usize,
    applied: u64,
    label: &str,
    fault: impl FnOnce(&Lab),
) -> Duration {
    let start = Instant::now();
    fault(&r.lab);
    assert!(
        r.lab.probe(0, to, PROBE).is_err(),
        "{label}: the fault breaks 0 → {to}"
    );
    let took = restored(&r.lab, to, start, &r.daemon);
    println!("{label}: traffic restored after {took:?}");
    wait_repairs(&r.daemon, "applied", applied);
    took
}

#[test]
fn daemon_apply_repairs_a_repointed_fdb_entry_and_a_ghost_route_with_traffic_running() {
    if !require_root("daemon_apply_repairs") {
        return;
    }
    let r = running("apply", "5s", "", None);
    let ns = r.lab.node(0).ns();
    let _streams = [r.lab.udp_stream(0, 1, 20), r.lab.udp_stream(0, 2, 20)];
    let healthy = dump(ns);

    // 1. FDB entry repointed at a retired address.
    repaired(&r, 1, 1, "fdb repointed", |lab| {
        lab.repoint_fdb(0, 1, RETIRED_VTEP)
    });
    // The FDB entry is as before the fault; the only other difference is the fault's own
    // permanent neighbour for the retired address on the underlay (not repair's).
    let ghost = format!("neigh: {RETIRED_VTEP} dev eth0 ");
    let (removed, added) = diff(&healthy, &dump(ns));
    assert!(removed.is_empty(), "removed {removed:?}, added {added:?}");
    assert!(
        added.len() == 1 && added[0].starts_with(&ghost),
        "removed {removed:?}, added {added:?}"
    );
    let healthy = dump(ns);

    // 2. The route to node 2's pod subnet replaced by a ghost gateway on the underlay.
    repaired(&r, 2, 2, "ghost gateway", |lab| {
        lab.route_via_missing_gateway(0, &format!("{}/24", overlay_ip(2)), MISSING_GATEWAY)
    });
    // Everything is as before the faults: the two objects repaired, nothing else changed
    // (the unowned objects included).
    assert_eq!(dump(ns), healthy);
    let metrics = r.daemon.metrics();
    for (kind, n) in [("fdb", 1), ("route", 1)] {
        assert_eq!(
            metrics.count(
                "watchdog_repairs_total",
                &[("kind", kind), ("outcome", "applied")]
            ),
            n,
            "{}",
            metrics.0
        );
    }
    assert_eq!(repairs(&r.daemon, "rolled_back"), 0);
    // The journal (and the API): two changes, each applied then verified.
    let records = records_at(&r.journal);
    let outcomes: Vec<_> = records
        .iter()
        .map(|rec| (rec.change.origin, rec.outcome()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (journal::Origin::Repair, Some(journal::Outcome::Verified)),
            (journal::Origin::Repair, Some(journal::Outcome::Verified)),
        ]
    );
    let (status, body) = r
        .daemon
        .get("/api/v1/repairs")
        .expect("GET /api/v1/repairs");
    assert_eq!(status, 200, "{body}");
    let api: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api["schema"], "watchdog.repairs/v1");
    let listed = api["repairs"].as_array().expect("repairs array");
    assert_eq!(listed.len(), 2, "{api:#}");
    assert_eq!(listed[1]["action"], "replace");
    assert!(
        listed[1]["command"]
            .as_str()
            .unwrap()
            .starts_with(&format!("ip route replace {}/24 via", overlay_ip(2))),
        "{api:#}"
    );
    assert_eq!(listed[1]["verdicts"][1]["outcome"], "verified", "{api:#}");
    drop(r.dir);
}

/// A fault: its name, the pod it cuts pod 0 from, how to inject it.
type Fault<'a> = (&'a str, usize, &'a dyn Fn(&Lab));

#[test]
fn daemon_apply_repairs_a_deleted_fdb_entry_a_removed_neighbour_and_a_removed_route() {
    if !require_root("daemon_apply_repairs_a_deleted_fdb_entry") {
        return;
    }
    let r = running("apply", "5s", "", None);
    let ns = r.lab.node(0).ns();
    let _streams = [r.lab.udp_stream(0, 1, 20), r.lab.udp_stream(0, 2, 20)];
    let healthy = dump(ns);
    let faults: [Fault; 3] = [
        ("fdb entry deleted", 1, &|lab| {
            let dst = underlay_ip(1).to_string();
            tool(
                lab.node(0).ns(),
                "bridge",
                &["fdb", "del", &vtep_mac(1), "dev", "flannel.1", "dst", &dst],
            );
        }),
        ("neighbour removed", 2, &|lab| {
            let ip = overlay_ip(2).to_string();
            tool(
                lab.node(0).ns(),
                "ip",
                &["neigh", "del", &ip, "dev", "flannel.1"],
            );
        }),
        ("route removed", 1, &|lab| {
            let prefix = format!("{}/24", overlay_ip(1));
            tool(lab.node(0).ns(), "ip", &["route", "del", &prefix]);
        }),
    ];
    for (n, (label, to, fault)) in faults.into_iter().enumerate() {
        repaired(&r, to, n as u64 + 1, label, fault);
        // Put back exactly: every dump (the unowned objects included) as it was.
        assert_eq!(
            dump(ns),
            healthy,
            "{label}: the dumps differ after the repair"
        );
    }
    let metrics = r.daemon.metrics();
    for kind in ["fdb", "neighbour", "route"] {
        assert_eq!(
            metrics.count(
                "watchdog_repairs_total",
                &[("kind", kind), ("outcome", "applied")]
            ),
            1,
            "{kind}: {}",
            metrics.0
        );
    }
    let records = records_at(&r.journal);
    let summary: Vec<_> = records
        .iter()
        .map(|rec| (rec.change.origin, rec.outcome()))
        .collect();
    use journal::{Origin::Repair, Outcome::Verified};
    assert_eq!(summary, [(Repair, Some(Verified)); 3], "{}", r.daemon.log());
    // Adds; the neighbour is a replace when traffic made the kernel create an unresolved
    // entry for it first.
    assert_eq!(records[0].change.action, Action::Add);
    assert_ne!(records[1].change.action, Action::Delete);
    assert_eq!(records[2].change.action, Action::Add);
    assert_eq!(repairs(&r.daemon, "rolled_back"), 0);
}

#[test]
fn daemon_leaves_an_entry_another_writer_keeps_putting_back_with_a_conflict() {
    if !require_root("daemon_leaves_an_entry_another_writer_keeps_putting_back") {
        return;
    }
    let r = running("apply", "5s", "", None);
    let ns = r.lab.node(0).ns();
    let _streams = [r.lab.udp_stream(0, 1, 20)];
    r.lab.repoint_fdb(0, 1, RETIRED_VTEP);
    // Another writer: puts the wrong entry back every 100 ms.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, ns) = (stop.clone(), ns.name().to_owned());
        let (mac, dst) = (vtep_mac(1), RETIRED_VTEP.to_string());
        std::thread::spawn(move || {
            let mut writes = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = Command::new("bridge")
                    .args([
                        "-n",
                        &ns,
                        "fdb",
                        "replace",
                        &mac,
                        "dev",
                        "flannel.1",
                        "dst",
                        &dst,
                    ])
                    .args(["self", "permanent"])
                    .status()
                    .expect("run bridge");
                assert!(status.success());
                writes += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            writes
        })
    };
    let key = format!("fdb {} dev flannel.1", vtep_mac(1));
    let finding = r.daemon.wait_finding("repair_conflict", &key, DEADLINE);
    assert!(
        finding.evidence("reason")[0].contains("another writer")
            || finding.evidence("reason")[0].contains("written back"),
        "{finding:?}"
    );
    // The writer keeps going for a while longer: the daemon does not fight it.
    let since = Instant::now();
    poll_until(DEADLINE, "five more seconds of the other writer", || {
        (since.elapsed() >= Duration::from_secs(5)).then_some(())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.join().expect("the writer thread");
    assert!(writes >= 20, "the writer wrote {writes} times");
    // Bounded: one repair of the entry, nothing rolled back, nothing more.
    let records = records_at(&r.journal);
    let summary: Vec<_> = records
        .iter()
        .map(|rec| (rec.change.origin, rec.change.key.clone()))
        .collect();
    assert_eq!(
        summary,
        [(journal::Origin::Repair, key.clone())],
        "{}",
        r.daemon.log()
    );
    assert!(
        matches!(
            records[0].outcome(),
            Some(journal::Outcome::Conflict | journal::Outcome::Verified)
        ),
        "{records:?}"
    );
    assert_eq!(repairs(&r.daemon, "rolled_back"), 0);
    // Still the other writer's entry: left alone.
    assert!(
        dump(ns).contains(&format!(
            "fdb: {} dev flannel.1 dst {RETIRED_VTEP} self permanent",
            vtep_mac(1)
        )),
        "{:?}",
        dump(ns)
    );
}

#[test]
fn daemon_dry_run_alerts_and_changes_nothing() {
    if !require_root("daemon_dry_run_alerts_and_changes_nothing") {
        return;
    }
    let hook_config = "[alerts]\n[[alerts.sinks]]\nname = \"hook\"\ntype = \"webhook\"\n\
                       url = \"http://127.0.0.1:8198/hook\"\n";
    let r = running("dry_run", "5s", hook_config, None);
    let ns = r.lab.node(0).ns();
    let listener = ns.run(|| TcpListener::bind("127.0.0.1:8198").unwrap());
    let hook = Hook::start(listener);
    let _streams = [r.lab.udp_stream(0, 1, 20), r.lab.udp_stream(0, 2, 20)];
    r.lab.repoint_fdb(0, 1, RETIRED_VTEP);
    r.lab
        .route_via_missing_gateway(0, &format!("{}/24", overlay_ip(2)), MISSING_GATEWAY);
    let before = dump(ns);
    let alerts = poll_until(DEADLINE, "two dry-run repair alerts", || {
        let alerts: Vec<Value> = hook
            .alerts()
            .into_iter()
            .filter(|a| a["state"] == "repair" && a["outcome"] == "dry_run")
            .collect();
        (alerts.len() >= 2).then_some(alerts)
    });
    let actions: BTreeSet<&str> = alerts.iter().filter_map(|a| a["action"].as_str()).collect();
    assert!(
        actions.contains(
            format!(
                "bridge fdb replace {} dev flannel.1 dst {} self permanent",
                vtep_mac(1),
                underlay_ip(1)
            )
            .as_str()
        ),
        "{actions:?}"
    );
    assert!(
        actions
            .iter()
            .any(|a| a.starts_with(&format!("ip route replace {}/24 via", overlay_ip(2)))),
        "{actions:?}"
    );
    let metrics = r.daemon.metrics();
    assert_eq!(
        metrics.count(
            "watchdog_repairs_total",
            &[("kind", "fdb"), ("outcome", "dry_run")]
        ),
        1,
        "each planned operation is reported once: {}",
        metrics.0
    );
    // A few more cycles: still nothing changed, nothing journalled, no more alerts.
    let cycles = Instant::now();
    poll_until(DEADLINE, "ten more cycles", || {
        (cycles.elapsed() >= POLL * 10).then_some(())
    });
    assert_eq!(dump(ns), before, "dry_run changed the kernel");
    assert!(!r.journal.exists(), "dry_run journals nothing");
    assert_eq!(repairs(&r.daemon, "dry_run"), 2);
    assert_eq!(repairs(&r.daemon, "applied"), 0);
    assert!(
        r.lab.probe(0, 1, PROBE).is_err(),
        "the fault is still there"
    );
}

#[test]
fn daemon_rolls_back_an_add_to_a_dead_address_exactly_and_does_not_loop() {
    if !require_root("daemon_rolls_back_an_add_to_a_dead_address") {
        return;
    }
    // The file says node 2's public-ip is a retired address and its FDB entry is gone:
    // the add the Node asks for gets no answer and is rolled back.
    let r = running_with("apply", "2s", "", Some(dead_public_ip_items), |lab, _| {
        del_fdb(lab, 2)
    });
    let ns = r.lab.node(0).ns();
    let stream = r.lab.udp_stream(0, 1, 20);
    let before = dump(ns);
    wait_repairs(&r.daemon, "rolled_back", 1);
    assert_eq!(
        dump(ns),
        before,
        "the rollback restores the exact before-state"
    );
    let records = records_at(&r.journal);
    let summary: Vec<_> = records
        .iter()
        .map(|rec| (rec.change.origin, rec.change.key.clone(), rec.outcome()))
        .collect();
    let key = format!("fdb {} dev flannel.1", vtep_mac(2));
    use journal::{Origin::*, Outcome::*};
    assert_eq!(
        summary,
        [
            (Repair, key.clone(), Some(RolledBack)),
            (Rollback, key.clone(), Some(Verified)),
        ]
    );
    assert!(
        records[0]
            .verdicts
            .iter()
            .any(|v| v.detail.contains("does not answer")),
        "rolled back for want of positive evidence: {records:?}"
    );
    // No loop: the object backs off (6 verify windows) — over the next 8 s nothing more.
    let since = Instant::now();
    poll_until(DEADLINE, "eight more seconds", || {
        (since.elapsed() >= Duration::from_secs(8)).then_some(())
    });
    assert_eq!(records_at(&r.journal).len(), 2, "{}", r.daemon.log());
    assert_eq!(dump(ns), before);
    assert_lossless("add to a dead address: 0 -> 1", stream);
}

#[test]
fn daemon_leaves_a_working_fdb_entry_when_the_public_ip_is_edited_to_an_old_address() {
    if !require_root("daemon_leaves_a_working_fdb_entry") {
        return;
    }
    // Case 2 of issue 22: node 2's public-ip edited to an old address while the kernel's
    // entry (to its real address) carries traffic. Never replaced; a stale_annotation.
    let r = running("apply", "2s", "", Some(dead_public_ip_items));
    let ns = r.lab.node(0).ns();
    let streams = [r.lab.udp_stream(0, 2, 20), r.lab.udp_stream(0, 1, 20)];
    let before = dump(ns);
    let key = format!("fdb {} dev flannel.1", vtep_mac(2));
    let finding = r.daemon.wait_finding(
        "stale_annotation",
        &format!("node node-2: the kernel's {key} works, the annotation does not"),
        DEADLINE,
    );
    assert!(
        finding.evidence("problem")[0].contains("the kernel's entry works"),
        "{finding:?}"
    );
    // Several more cycles (past a verify window and a backoff's worth): still nothing.
    let since = Instant::now();
    poll_until(DEADLINE, "six more seconds", || {
        (since.elapsed() >= Duration::from_secs(6)).then_some(())
    });
    assert_eq!(dump(ns), before, "nothing changed\n{}", r.daemon.log());
    assert!(records_at(&r.journal).is_empty(), "nothing journalled");
    let [to2, to1] = streams;
    assert_lossless("public-ip edited: 0 -> 2", to2);
    assert_lossless("public-ip edited: 0 -> 1", to1);
}

#[test]
fn daemon_never_touches_the_underlay_for_a_node_claiming_it_as_its_pod_subnet() {
    if !require_root("daemon_never_touches_the_underlay") {
        return;
    }
    // Case 1 of issue 22: node 2's podCIDR is the underlay subnet, then a /8 over it.
    let underlay_items = |lab: &Lab| -> Vec<Value> {
        let mut items: Vec<Value> = lab.nodes().map(|n| n.node_object()).collect();
        items[2]["spec"]["podCIDR"] = serde_json::json!("192.168.77.0/24");
        items[2]["spec"]["podCIDRs"] = serde_json::json!(["192.168.77.0/24"]);
        items
    };
    let r = running("apply", "2s", "", Some(underlay_items));
    let ns = r.lab.node(0).ns();
    let streams = [r.lab.udp_stream(0, 1, 20), r.lab.udp_stream(0, 2, 20)];
    let before = dump(ns);
    let finding = r.daemon.wait_finding(
        "stale_annotation",
        "node node-2 pod subnet 192.168.77.0/24",
        DEADLINE,
    );
    assert!(
        finding.evidence("problem")[0].contains("overlaps the underlay 192.168.77.0/24"),
        "{finding:?}"
    );
    let mut items: Vec<Value> = r.lab.nodes().map(|n| n.node_object()).collect();
    items[2]["spec"]["podCIDR"] = serde_json::json!("192.0.0.0/8");
    items[2]["spec"]["podCIDRs"] = serde_json::json!(["192.0.0.0/8"]);
    write_node_list(&r.dir.path().join("nodes.json"), &node_list(items));
    let finding = r.daemon.wait_finding(
        "stale_annotation",
        "node node-2 pod subnet 192.0.0.0/8",
        DEADLINE,
    );
    assert!(
        finding.evidence("problem")[0].contains("wider than /16"),
        "{finding:?}"
    );
    let since = Instant::now();
    poll_until(DEADLINE, "five more seconds", || {
        (since.elapsed() >= Duration::from_secs(5)).then_some(())
    });
    assert_eq!(dump(ns), before, "nothing changed\n{}", r.daemon.log());
    assert!(records_at(&r.journal).is_empty(), "nothing journalled");
    let [to1, to2] = streams;
    assert_lossless("pod subnet = underlay: 0 -> 1", to1);
    assert_lossless("pod subnet = underlay: 0 -> 2", to2);
}

#[test]
fn forged_journal_lines_outside_the_owned_set_are_refused_by_undo_and_at_start() {
    if !require_root("forged_journal_lines_are_refused") {
        return;
    }
    // Case 3 of issue 22: a verified repair and an unfinished rollback whose objects are
    // the underlay's connected route, the second pointing it into the VXLAN device.
    let lab = Lab::new(3);
    lab.check_pod_connectivity()
        .expect("the lab works before injection");
    let ns = lab.node(0).ns();
    add_unowned(ns);
    let dir = TempDir::new("watchdog-repair-forged");
    write_node_list(&dir.path().join("nodes.json"), &lab.node_list());
    let path = dir.path().join("journal.jsonl");
    let (kernel, forged) = ns.run(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let net = mirror::dump().await.unwrap();
            let dst: watchdog::model::net::Prefix = "192.168.77.0/24".parse().unwrap();
            let route = net
                .routes()
                .find(|r| r.dst == dst && r.table == watchdog::model::net::TABLE_MAIN)
                .expect("the underlay's connected route")
                .clone();
            let flannel = net.link_by_name("flannel.1").unwrap().index;
            let bad = watchdog::model::net::Route {
                gateway: Some("10.244.1.0".parse().unwrap()),
                oif: Some(flannel),
                onlink: true,
                ..watchdog::model::net::Route::unicast(dst)
            };
            let of = |r: watchdog::model::net::Route| {
                watchdog::repair::object::Object::of(&net, &watchdog::model::net::Object::Route(r))
            };
            (of(route), of(bad))
        })
    });
    let mut journal = journal::Journal::open(&path, 1 << 20).unwrap();
    let now = std::time::SystemTime::now();
    let finding = (watchdog::findings::Kind::OverlayDrift, "forged");
    // 1: a "verified repair" whose undo would put the forged route in.
    let repair = Op::between(
        Some(forged.clone()),
        Some(kernel.clone()),
        "node-1",
        finding,
        "forged".into(),
    );
    let c1 = journal
        .change(&repair, journal::Origin::Repair, None, 1, now)
        .unwrap();
    journal
        .verdict(c1.id, journal::Outcome::Verified, "forged", now)
        .unwrap();
    drop(journal);
    let stream = lab.udp_stream(0, 1, 20);
    let before = dump(ns);
    let config = daemon_config(
        &dir,
        "apply",
        "2s",
        "[repair.protect]\nprefixes = [\"192.168.77.0/24\"]\n",
    );
    let config_file = dir.path().join("watchdog.toml");
    std::fs::write(&config_file, &config).unwrap();
    let undo = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(daemon_binary())
        .args(["repair", "undo", &c1.id.to_string(), "--config"])
        .arg(&config_file)
        .output()
        .unwrap();
    let stdout =
        String::from_utf8_lossy(&undo.stdout).into_owned() + &String::from_utf8_lossy(&undo.stderr);
    assert_eq!(undo.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("outside the owned set"), "{stdout}");
    assert_eq!(dump(ns), before, "undo sent nothing");
    // 2: an unfinished rollback that would point the underlay into flannel.1.
    let mut journal = journal::Journal::open(&path, 1 << 20).unwrap();
    let rollback = Op::between(
        Some(kernel.clone()),
        Some(forged.clone()),
        "node-1",
        finding,
        "forged".into(),
    );
    let c2 = journal
        .change(&rollback, journal::Origin::Rollback, Some(c1.id), 2, now)
        .unwrap();
    drop(journal);
    let mut daemon = Daemon::start(ns, &config);
    daemon.wait_ready();
    let records = poll_until(DEADLINE, "the forged rollback settled", || {
        let records = records_at(&path);
        let r2 = records.iter().find(|r| r.change.id == c2.id)?;
        r2.outcome().is_some().then_some(records)
    });
    let r2 = records.iter().find(|r| r.change.id == c2.id).unwrap();
    assert_eq!(r2.outcome(), Some(journal::Outcome::Refused), "{records:?}");
    assert!(
        r2.verdicts[0].detail.contains("outside the owned set"),
        "{records:?}"
    );
    // A few more cycles: nothing sent, ever.
    let since = Instant::now();
    poll_until(DEADLINE, "three more seconds", || {
        (since.elapsed() >= Duration::from_secs(3)).then_some(())
    });
    assert_eq!(dump(ns), before, "nothing changed\n{}", daemon.log());
    assert_lossless("forged journal: 0 -> 1", stream);
    drop(daemon);
    drop(lab);
    drop(dir);
}

#[test]
fn a_journal_that_is_a_symlink_is_refused_and_nothing_is_written_through_it() {
    if !require_root("a_journal_that_is_a_symlink") {
        return;
    }
    // Case 4 of issue 22.
    let target = std::sync::OnceLock::new();
    let r = running_with("apply", "2s", "", None, |_, dir| {
        let file = dir.path().join("elsewhere");
        std::fs::write(&file, b"precious\n").unwrap();
        std::os::unix::fs::symlink(&file, dir.path().join("journal.jsonl")).unwrap();
        target.set(file).unwrap();
    });
    let finding = r.daemon.wait_finding("repair_refused", "repair", DEADLINE);
    assert!(
        finding.evidence("reason")[0].contains("is a symbolic link"),
        "{finding:?}"
    );
    r.lab.repoint_fdb(0, 1, RETIRED_VTEP);
    let since = Instant::now();
    poll_until(DEADLINE, "three more seconds", || {
        (since.elapsed() >= Duration::from_secs(3)).then_some(())
    });
    assert_eq!(
        std::fs::read(target.get().unwrap()).unwrap(),
        b"precious\n",
        "nothing written through the link"
    );
    assert!(
        r.lab.probe(0, 1, PROBE).is_err(),
        "nothing repaired without a journal"
    );
}

/// The lab's Nodes without node 2 (it left the cluster).
fn without_node_2(lab: &Lab) -> Value {
    node_list(
        lab.nodes()
            .filter(|n| n.index() != 2)
            .map(|n| n.node_object())
            .collect(),
    )
}

#[test]
fn daemon_deletes_a_departed_nodes_leftovers_and_undo_puts_them_back_exactly() {
    if !require_root("daemon_deletes_a_departed_nodes_leftovers") {
        return;
    }
    // The default max_fraction (0.5): three deletes of the six overlay objects node 0 has
    // (node 1's three and node 2's leftovers), though node 0 expects only three.
    let mut r = running("apply", "2s", "delete_after = \"3s\"\n", None);
    let ns = r.lab.node(0).ns().name().to_owned();
    let stream = r.lab.udp_stream(0, 1, 20);
    let before = dump(r.lab.node(0).ns());
    // Node 2 leaves the cluster: its Node first, then the machine.
    write_node_list(&r.dir.path().join("nodes.json"), &without_node_2(&r.lab));
    r.lab.remove_node(2);
    let left = Instant::now();
    wait_repairs(&r.daemon, "applied", 3);
    println!("node removed -> leftovers deleted: {:?}", left.elapsed());
    let node0 = r.lab.node(0).ns();
    let (removed, added) = diff(&before, &dump(node0));
    assert!(added.is_empty(), "added {added:?}");
    assert_eq!(removed.len(), 3, "{removed:?}");
    for what in [
        "10.244.2.0/24 via 10.244.2.0 dev flannel.1".to_string(),
        format!("10.244.2.0 dev flannel.1 lladdr {}", vtep_mac(2)),
        format!("{} dev flannel.1 dst {}", vtep_mac(2), underlay_ip(2)),
    ] {
        assert!(
            removed.iter().any(|line| line.contains(&what)),
            "{what} not deleted: {removed:?}"
        );
    }
    let records = records_at(&r.journal);
    assert!(
        records
            .iter()
            .all(|rec| rec.change.action == Action::Delete && rec.change.before.is_some()),
        "{records:?}"
    );
    // A client of that subnet gets an immediate error (network unreachable), where the
    // leftovers had it wait for a timeout. (An ICMP error that arrives while connect()
    // still holds the socket is only a soft error to TCP: that attempt times out, so
    // not every attempt is counted.)
    let report = r
        .lab
        .tcp_connect_attempts(0, watchdog_tests::lab::pod_ip(2), 8080, 5);
    println!("connects to the departed node's pod: {report:?}");
    assert!(report.other >= 1 && report.succeeded == 0, "{report:?}");

    assert_lossless("node removed: 0 -> 1", stream);
    // `repair undo` (the daemon stopped: it holds the journal) puts all three back.
    let Running {
        daemon,
        config,
        lab,
        dir,
        ..
    } = r;
    drop(daemon);
    let config_file = dir.path().join("watchdog.toml");
    std::fs::write(&config_file, &config).unwrap();
    for _ in 0..3 {
        let undo = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(daemon_binary())
            .args(["repair", "undo", "--last", "--config"])
            .arg(&config_file)
            .output()
            .unwrap();
        assert_eq!(
            undo.status.code(),
            Some(0),
            "{}{}",
            String::from_utf8_lossy(&undo.stdout),
            String::from_utf8_lossy(&undo.stderr)
        );
    }
    assert_eq!(
        dump(lab.node(0).ns()),
        before,
        "undo restores all three exactly"
    );
    drop(lab);
    drop(dir);
}

#[test]
fn daemon_holds_a_leftover_whose_vtep_still_answers() {
    if !require_root("daemon_holds_a_leftover_whose_vtep_still_answers") {
        return;
    }
    let r = running(
        "apply",
        "2s",
        "delete_after = \"2s\"\nmax_fraction = 1.0\n",
        None,
    );
    let ns = r.lab.node(0).ns();
    let stream = r.lab.udp_stream(0, 1, 20);
    let before = dump(ns);
    // Node 2's Node is gone, the machine is not: its VTEP answers.
    write_node_list(&r.dir.path().join("nodes.json"), &without_node_2(&r.lab));
    let finding = r.daemon.wait_finding(
        "stale_annotation",
        "node node-2: the kernel's route 10.244.2.0/24 table main works, the annotation does \
         not",
        DEADLINE,
    );
    assert!(
        finding.evidence("problem")[0].contains("answers"),
        "{finding:?}"
    );
    let since = Instant::now();
    poll_until(DEADLINE, "four more seconds", || {
        (since.elapsed() >= Duration::from_secs(4)).then_some(())
    });
    assert_eq!(dump(ns), before, "held, not deleted\n{}", r.daemon.log());
    assert!(records_at(&r.journal).is_empty(), "nothing journalled");
    assert!(r.lab.probe(0, 2, PROBE).is_ok(), "0 -> 2 still works");
    assert_lossless("leftover that answers: 0 -> 1", stream);
}

/// Deletes node 0's FDB entry for node `j`.
fn del_fdb(lab: &Lab, j: usize) {
    let dst = underlay_ip(j).to_string();
    tool(
        lab.node(0).ns(),
        "bridge",
        &["fdb", "del", &vtep_mac(j), "dev", "flannel.1", "dst", &dst],
    );
}

/// Stops `stream` and asserts no datagram was lost (one may be in flight at the stop);
/// prints the figures.
fn assert_lossless(label: &str, stream: watchdog_tests::lab::UdpStream) {
    let stats = stream.stop();
    let lost = stats.sent.saturating_sub(stats.replies);
    println!(
        "{label}: {} sent, {} answered, {lost} unanswered (1 may be in flight at the stop)",
        stats.sent, stats.replies
    );
    assert!(
        lost <= 1 && stats.send_errors == 0,
        "{label}: packets lost on a working path: {stats:?}"
    );
}

/// The lab's Nodes, node 2's `public-ip` a retired address (a wrong desired state).
fn dead_public_ip_items(lab: &Lab) -> Vec<Value> {
    let mut items: Vec<Value> = lab.nodes().map(|n| n.node_object()).collect();
    annotate(&mut items[2], "public-ip", &RETIRED_VTEP.to_string());
    items
}

#[test]
fn daemon_refuses_a_plan_over_max_fraction() {
    if !require_root("daemon_refuses_a_plan_over_max_fraction") {
        return;
    }
    // 6 expected objects, at most 25 %: two operations are too many.
    let r = running("apply", "5s", "max_fraction = 0.25\n", None);
    let ns = r.lab.node(0).ns();
    r.lab.repoint_fdb(0, 1, RETIRED_VTEP);
    r.lab.repoint_fdb(0, 2, RETIRED_VTEP);
    let before = dump(ns);
    let finding =
        r.daemon
            .wait_finding("repair_refused", "repair plan for dev flannel.1", DEADLINE);
    let reason = finding.evidence("reason");
    assert!(
        reason[0].contains("repair.max_fraction = 25 %"),
        "{finding:?}"
    );
    assert_eq!(finding.evidence("operations"), ["2"]);
    assert_eq!(repairs(&r.daemon, "refused"), 2);
    assert_eq!(repairs(&r.daemon, "applied"), 0);
    assert_eq!(dump(ns), before, "a refused plan changes nothing");
    assert!(records_at(&r.journal).is_empty(), "nothing journalled");
}

#[test]
fn daemon_killed_during_verification_is_reconciled_at_restart() {
    if !require_root("daemon_killed_during_verification") {
        return;
    }
    let r = running_with("apply", "6s", "", Some(dead_public_ip_items), |lab, _| {
        del_fdb(lab, 2)
    });
    let before = dump(r.lab.node(0).ns());
    // The change is journalled and made; its verification (which would fail) runs.
    poll_until(DEADLINE, "a change applied and not yet judged", || {
        let records = records_at(&r.journal);
        (records.len() == 1 && records[0].outcome() == Some(journal::Outcome::Applied))
            .then_some(())
    });
    // SIGKILL (Child::kill).
    let Running {
        daemon,
        config,
        journal: path,
        lab,
        dir,
    } = r;
    drop(daemon);
    let after_crash = dump(lab.node(0).ns());
    assert_ne!(
        after_crash, before,
        "the change was in the kernel at the crash"
    );
    let records = records_at(&path);
    assert_eq!(records[0].verdicts.len(), 1, "{records:?}");
    // Restart: the open change is verified again, fails, and is rolled back.
    let mut daemon = Daemon::start(lab.node(0).ns(), &config);
    daemon.wait_ready();
    poll_until(DEADLINE, "the interrupted change settled", || {
        let records = records_at(&path);
        (records.first()?.outcome() == Some(journal::Outcome::RolledBack)).then_some(())
    });
    assert_eq!(
        dump(ns_of(&lab)),
        before,
        "reconciled to the exact before-state"
    );
    let records = records_at(&path);
    assert_eq!(records[1].change.origin, journal::Origin::Rollback);
    assert_eq!(records[1].change.reverts, Some(records[0].change.id));
    assert_eq!(records[1].outcome(), Some(journal::Outcome::Verified));
    assert!(
        records[0].verdicts[1].detail.contains("after a restart"),
        "{records:?}"
    );
    // The daemon goes before the lab and its directory.
    drop(daemon);
    drop(lab);
    drop(dir);
}

fn ns_of(lab: &Lab) -> &NetNs {
    lab.node(0).ns()
}

#[test]
fn a_change_journalled_but_never_sent_is_not_applied_after_a_restart_then_repaired() {
    if !require_root("a_change_journalled_but_never_sent") {
        return;
    }
    // The state a SIGKILL between the journal write and the netlink request leaves: the
    // change journalled (fsync'd), the kernel unchanged. Made here with the journal's own
    // API (the daemon's first step), so the test does not race a kill against a send.
    let lab = Lab::new(3);
    lab.check_pod_connectivity()
        .expect("the lab works before injection");
    let ns = lab.node(0).ns();
    add_unowned(ns);
    lab.repoint_fdb(0, 1, RETIRED_VTEP);
    let dir = TempDir::new("watchdog-repair-unsent");
    write_node_list(&dir.path().join("nodes.json"), &lab.node_list());
    let path = dir.path().join("journal.jsonl");
    let mut setup_config = Config::default();
    setup_config.desired.node_name = node_name(0);
    let model = file::load(&dir.path().join("nodes.json"), 1 << 20).unwrap();
    let own = node_name(0);
    let ops = ns.run(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let net = mirror::dump().await.unwrap();
            match plan_now(&net, &model, &own, &setup_config.repair) {
                Outcome::Planned(plan) => plan.ops,
                Outcome::NoPlan { reason } => panic!("no plan: {reason}"),
            }
        })
    });
    assert_eq!(ops.len(), 1, "{:?}", commands(&ops));
    let mut journal = journal::Journal::open(&path, 1 << 20).unwrap();
    let unsent = journal
        .change(
            &ops[0],
            journal::Origin::Repair,
            None,
            1,
            std::time::SystemTime::now(),
        )
        .unwrap();
    drop(journal);
    let before = dump(ns);

    // The daemon starts: the open change is journalled `not_applied` (the kernel still
    // has the before-state), then the fault is planned and repaired afresh.
    let _streams = [lab.udp_stream(0, 1, 20)];
    let config = daemon_config(&dir, "apply", "5s", "");
    let mut daemon = Daemon::start(ns, &config);
    daemon.wait_ready();
    poll_until(
        DEADLINE,
        "the unsent change settled and a new one verified",
        || {
            let records = records_at(&path);
            (records.len() == 2 && records[1].outcome() == Some(journal::Outcome::Verified))
                .then_some(records)
        },
    );
    let records = records_at(&path);
    assert_eq!(records[0].change.id, unsent.id);
    assert_eq!(
        records[0].outcome(),
        Some(journal::Outcome::NotApplied),
        "{records:?}"
    );
    assert!(
        records[0].verdicts[0].detail.contains("after a restart"),
        "{records:?}"
    );
    assert_eq!(records[1].change.origin, journal::Origin::Repair);
    assert_eq!(records[1].change.command, unsent.command);
    poll_until(RESTORED_WITHIN, "pod 0 → pod 1 after the repair", || {
        lab.probe(0, 1, PROBE).ok()
    });
    // Nothing half-done: the FDB entry is the Node's, everything else as before (the
    // fault's own ghost neighbour on the underlay included).
    let (removed, added) = diff(&before, &dump(ns));
    assert_eq!(removed.len(), 1, "removed {removed:?}, added {added:?}");
    assert_eq!(added.len(), 1, "removed {removed:?}, added {added:?}");
    assert!(
        added[0].starts_with(&format!(
            "fdb: {} dev flannel.1 dst {} ",
            vtep_mac(1),
            underlay_ip(1)
        )),
        "{added:?}"
    );
    drop(daemon);
    drop(lab);
    drop(dir);
}
