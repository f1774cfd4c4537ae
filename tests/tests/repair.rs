//! Repair on a real kernel: a Flannel-style lab, a NodeList file as the desired state, the
//! planner and the rtnetlink executor run inside a node's namespace. `apply` puts the
//! Node's objects back and nothing else changes; `dry_run` and `repair plan` change
//! nothing; a change whose verification fails is rolled back to the exact before-state.

use std::{collections::BTreeSet, path::PathBuf, process::Command, time::Duration};

use watchdog::{
    commands::repair::{execute_now, plan_now},
    config::{Config, repair::Mode},
    model::{desired::Model, net::Snapshot},
    repair::{
        execute::{Done, Report},
        journal,
        plan::{Action, Op, Outcome},
    },
    sources::{desired::file, mirror},
};
use watchdog_tests::{
    NetNs, TempDir, daemon_binary,
    lab::{Lab, RETIRED_VTEP, nodes::node_name, underlay_ip, vtep_mac},
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

/// Every table's routes (both families, with details), the rules, the permanent and
/// static neighbours and the FDB entries that are configuration (not learned), one line
/// each, labelled. Learned FDB entries and dynamic neighbours come and go with traffic,
/// not with repair, and are left out.
fn dump(ns: &NetNs) -> BTreeSet<String> {
    let mut lines = BTreeSet::new();
    for (label, t, args) in [
        (
            "route4",
            "ip",
            &["-d", "-4", "route", "show", "table", "all"][..],
        ),
        (
            "route6",
            "ip",
            &["-d", "-6", "route", "show", "table", "all"][..],
        ),
        ("rule4", "ip", &["-4", "rule", "show"][..]),
        ("rule6", "ip", &["-6", "rule", "show"][..]),
        ("neigh", "ip", &["neigh", "show"][..]),
        ("fdb", "bridge", &["fdb", "show"][..]),
    ] {
        for line in tool(ns, t, args).lines() {
            let configured = match label {
                "neigh" => line.contains("PERMANENT") || line.contains("NOARP"),
                "fdb" => {
                    line.contains("permanent") || line.contains("static") || line.contains(" dst ")
                }
                _ => true,
            };
            if configured {
                lines.insert(format!("{label}: {}", line.trim_end()));
            }
        }
    }
    lines
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
            let plan = match plan_now(&net, &model, &own, &setup.config) {
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
    let config = setup.dir.path().join("watchdog.toml");
    std::fs::write(
        &config,
        format!(
            "[desired]\nnode_name = \"{}\"\n[repair]\njournal = \"{}\"\n",
            node_name(0),
            setup.config.repair.journal.display()
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let output = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(daemon_binary())
            .args(args)
            .args(["--config", config.to_str().unwrap()])
            .args(["--nodes", setup.nodes.to_str().unwrap()])
            .output()
            .expect("run watchdog");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
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
