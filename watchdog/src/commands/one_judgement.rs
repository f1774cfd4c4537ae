//! One judgement, as the daemon wires it (`pipeline::judge`'s overlay comparison handed
//! to repair's planner): on the same kernel and the same Nodes, every operation the
//! planner makes answers a drift the detectors report as `overlay_drift` (same subject),
//! and every member's drift they report is planned or held.

use std::{collections::BTreeSet, sync::Arc, time::Instant};

use crate::{
    config::{DetectConfig, repair::RepairConfig},
    detect::{Inputs, Sample},
    findings::Kind,
    model::{
        desired::{Model, State},
        endpoints::EndpointView,
        net::{Link, Route, RouteKind, Snapshot, Update, Vxlan},
        probe::ProbeBook,
    },
    overlay::{
        About,
        fixture::{
            ETH0, FLANNEL, cluster, fdb, flannel_route, ip, mac, neighbour, node0, set_vtep_mac,
            vxlan_link_at,
        },
    },
    pipeline::{Context, Memory, judge},
    repair::{
        history::History,
        object::Object,
        plan::{self, Evidence, Outcome, Plan},
    },
};

/// What the detectors report as `overlay_drift` (subjects), and the planner's answer,
/// on one judgement of `net` against `model` (no grace: every drift has lasted).
fn both(net: &Snapshot, model: Model) -> (BTreeSet<String>, Outcome, BTreeSet<String>) {
    let desired = State::Known {
        model: Arc::new(model),
        age: std::time::Duration::ZERO,
    };
    let sample = Sample::default();
    let settings = DetectConfig::default();
    let probes = ProbeBook::default();
    let inputs = Inputs {
        net,
        now: &sample,
        then: &sample,
        recent: &sample,
        settings: &settings,
        probes: &probes,
    };
    let endpoints = EndpointView::default();
    let context = Context {
        desired: &desired,
        node: "node-0",
        endpoints: &endpoints,
    };
    let judgement = judge(
        &inputs,
        &context,
        &mut Memory::new(std::time::Duration::ZERO),
        Instant::now(),
    );
    let detected = judgement
        .candidates
        .iter()
        .filter(|c| c.kind == Kind::OverlayDrift)
        .map(|c| c.subject.clone())
        .collect();
    let overlay = judgement.overlay.as_ref();
    let outcome = plan::plan(&plan::Inputs {
        net,
        desired: &desired,
        overlay,
        settings: &RepairConfig::default(),
        history: &History::default(),
        evidence: &Evidence::default(),
        now: Instant::now(),
    });
    // The member drifts the comparison found, as the planner names their objects.
    let members = overlay
        .into_iter()
        .flat_map(|o| o.lasted())
        .filter(|d| matches!(d.about, About::Member(_)))
        .filter_map(|d| d.expected.as_ref())
        .map(|object| Object::of(net, object).key())
        .collect();
    (detected, outcome, members)
}

/// Every operation answers a reported drift; every member drift is planned or held.
fn agree(detected: &BTreeSet<String>, plan: &Plan, members: &BTreeSet<String>) {
    for op in &plan.ops {
        assert_eq!(op.finding_kind, Kind::OverlayDrift);
        assert!(
            detected.contains(&op.finding_subject),
            "{} answers `{}`, which the detectors do not report: {detected:?}",
            op.command(),
            op.finding_subject
        );
    }
    let handled: BTreeSet<&str> = plan
        .ops
        .iter()
        .map(|op| op.key.as_str())
        .chain(plan.held.iter().map(|h| h.key.as_str()))
        .collect();
    for key in members {
        assert!(
            handled.contains(key.as_str()),
            "{key} neither planned nor held: {plan:?}"
        );
    }
}

fn planned(outcome: Outcome) -> Plan {
    match outcome {
        Outcome::Planned(plan) => plan,
        Outcome::NoPlan { reason } => panic!("no plan: {reason}"),
    }
}

#[test]
fn a_healthy_node_has_nothing_to_report_or_plan() {
    let (detected, outcome, _) = both(&node0(), cluster());
    assert!(detected.is_empty(), "{detected:?}");
    assert!(planned(outcome).ops.is_empty());
}

/// A fault: its name and how to inject it into node-0's kernel.
type Fault = (&'static str, fn(&mut Snapshot));

#[test]
fn each_fault_is_reported_and_planned_as_the_same_drift() {
    let faults: [Fault; 4] = [
        ("repointed FDB entry", |net| {
            net.apply(Update::NewFdb(fdb(1, "10.67.0.5")))
        }),
        ("removed neighbour, ghost route", |net| {
            net.apply(Update::DelNeighbour(neighbour(2)));
            net.apply(Update::NewRoute(Route {
                gateway: Some(ip("192.168.77.98")),
                oif: Some(ETH0),
                ..Route::unicast("10.244.1.0/24".parse().unwrap())
            }));
        }),
        ("flushed FDB", |net| {
            net.apply(Update::DelFdb(fdb(1, "192.168.77.11")));
            net.apply(Update::DelFdb(fdb(2, "192.168.77.12")));
        }),
        ("Flannel's route at another metric", |net| {
            net.apply(Update::DelRoute(flannel_route(2)));
            net.apply(Update::NewRoute(Route {
                kind: RouteKind::Blackhole,
                gateway: None,
                oif: None,
                onlink: false,
                priority: 50,
                ..flannel_route(2)
            }));
        }),
    ];
    for (fault, inject) in faults {
        let mut net = node0();
        inject(&mut net);
        let (detected, outcome, members) = both(&net, cluster());
        assert!(!detected.is_empty(), "{fault}: nothing reported");
        let plan = planned(outcome);
        assert!(!plan.ops.is_empty(), "{fault}: nothing planned");
        assert_eq!(plan.ops.len(), members.len(), "{fault}: {plan:?}");
        agree(&detected, &plan, &members);
    }
}

#[test]
fn a_departed_nodes_leftovers_are_reported_and_held_not_deleted_at_once() {
    let mut model = cluster();
    model.nodes.remove("node-2");
    let (detected, outcome, members) = both(&node0(), model);
    assert_eq!(detected.len(), 3, "{detected:?}");
    let plan = planned(outcome);
    assert!(plan.ops.is_empty(), "{plan:?}");
    assert_eq!(plan.held.len(), 3, "{plan:?}");
    agree(&detected, &plan, &members);
}

#[test]
fn flannel_1_missing_beside_flannel_v6_1_is_one_finding_and_no_plan() {
    let mut net = node0();
    net.apply(Update::DelLink(FLANNEL));
    net.apply(Update::NewLink(Link {
        vxlan: Some(Vxlan {
            local: Some(ip("fd00:77::10")),
            ..vxlan_link_at(9, 1, "flannel-v6.1").vxlan.unwrap()
        }),
        ..vxlan_link_at(9, 1, "flannel-v6.1")
    }));
    let (detected, outcome, _) = both(&net, cluster());
    assert_eq!(
        detected,
        BTreeSet::from(["dev flannel.1".to_owned()]),
        "one finding: the device is missing"
    );
    assert!(
        matches!(&outcome, Outcome::NoPlan { reason } if reason.contains("no VXLAN device")),
        "{outcome:?}"
    );
}

#[test]
fn objects_the_nodes_contradict_themselves_about_are_reported_and_held() {
    let mut model = cluster();
    set_vtep_mac(&mut model, "node-2", mac(1));
    let (detected, outcome, members) = both(&node0(), model);
    let plan = planned(outcome);
    assert!(
        plan.ops
            .iter()
            .all(|op| !op.key.contains("02:fa:00:00:00:01"))
    );
    assert!(
        plan.held.iter().any(|h| h.why.contains("share VtepMAC")),
        "{plan:?}"
    );
    agree(&detected, &plan, &members);
}
