//! One-shot repair (`watchdog repair plan|apply`): the overlay compared once with a
//! freshly read desired state (no grace: a person is asking, and every drift counts at
//! once), planned with no history and no traffic evidence (so nothing is deleted), and
//! the plan as text for people.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    history::History,
    plan::{Evidence, Inputs, Outcome, plan},
};
use crate::{
    config::repair::RepairConfig,
    model::{
        desired::{Model, State},
        net::Snapshot,
    },
    overlay::{Departed, Observed, compare_within},
};

/// The plan for `net` against `model` (a freshly read file: age zero) as node `own`.
pub fn plan_now(net: &Snapshot, model: &Model, own: &str, settings: &RepairConfig) -> Outcome {
    let model = Arc::new(model.clone());
    let observed = Observed::at_once(
        Arc::clone(&model),
        compare_within(
            net,
            &model,
            own,
            &Departed::default(),
            super::owned::bounds(settings),
        ),
    );
    let desired = State::Known {
        model,
        age: Duration::ZERO,
    };
    plan(&Inputs {
        net,
        desired: &desired,
        overlay: Some(&observed),
        settings,
        history: &History::default(),
        evidence: &Evidence::default(),
        now: Instant::now(),
    })
}

/// The plan as text for people: each operation as the command a person would type and
/// its inverse, then what is held and why.
pub fn render(outcome: &Outcome) -> String {
    let plan = match outcome {
        Outcome::NoPlan { reason } => return format!("no plan: {reason}\n"),
        Outcome::Planned(plan) => plan,
    };
    let mut text = format!(
        "repair plan for dev {} ({} expected objects, {} in the kernel): {} operation(s)\n",
        plan.device,
        plan.expected_objects,
        plan.kernel_objects,
        plan.ops.len()
    );
    if let Some(why) = &plan.refused {
        text.push_str(&format!("REFUSED: {why}\n"));
    }
    for (i, op) in plan.ops.iter().enumerate() {
        text.push_str(&format!(
            "{:>3}. {}\n     undo: {}\n     why:  {} (finding {} `{}`)\n",
            i + 1,
            op.command(),
            op.inverse().command(),
            op.why,
            op.finding_kind.as_str(),
            op.finding_subject
        ));
    }
    for held in &plan.held {
        text.push_str(&format!(
            "held: {}\n      why: {}\n",
            held.command, held.why
        ));
    }
    for held in &plan.working {
        text.push_str(&format!(
            "works, left alone: {}\n      why: {}\n",
            held.command, held.why
        ));
    }
    text
}
