//! The one judgement: every detector, composed once. The daemon's cycle and `watchdog
//! check` both call [`judge`], so they give one verdict on one state; repair plans from
//! the overlay comparison it returns.

use std::time::{Duration, Instant};

use crate::{
    detect::{self, Inputs, endpoints},
    findings::Candidate,
    model::{desired::State, endpoints::EndpointView},
    overlay::{self, Observed},
};

/// What the detectors judge besides the kernel (the mirror and the counters in
/// [`Inputs`]).
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The desired state: the overlay detectors run only while it is known.
    pub desired: &'a State,
    /// This node's name among the Nodes.
    pub node: &'a str,
    /// Service endpoints and the running pods' addresses (ghost endpoints, Services
    /// named).
    pub endpoints: &'a EndpointView,
}

/// What the detectors carry from one look to the next: since when each overlay drift
/// and each ghost endpoint has been seen (both must last `desired.grace`), and the Nodes
/// that left.
#[derive(Debug)]
pub struct Memory {
    overlay: overlay::Memory,
    ghosts: endpoints::Memory,
}

impl Memory {
    /// Overlay drifts and ghost endpoints must last `grace` to count.
    pub fn new(grace: Duration) -> Self {
        Self {
            overlay: overlay::Memory::new(grace),
            ghosts: endpoints::Memory::new(grace),
        }
    }
}

/// One judgement.
#[derive(Debug)]
pub struct Judgement {
    /// Every detector's candidates, the Nodes and Services behind them named.
    pub candidates: Vec<Candidate>,
    /// The overlay compared with the desired state, and which drifts lasted the grace
    /// (`None` while the desired state is unknown): what repair plans from.
    pub overlay: Option<Observed>,
}

/// Every detector over `inputs` at `at`: the kernel's own (routes, gateways, FDB, traffic,
/// TCP, MTU), the overlay against the desired state (drifts that lasted the grace, stale
/// annotations), ghost endpoints in this node's pod subnet; then the Nodes behind every
/// candidate and the Services behind failing destinations.
pub fn judge(
    inputs: &Inputs<'_>,
    context: &Context<'_>,
    memory: &mut Memory,
    at: Instant,
) -> Judgement {
    let mut candidates = detect::detect(inputs);
    let observed = memory
        .overlay
        .observe(inputs.net, context.desired, context.node, at);
    if let Some(observed) = &observed {
        candidates.extend(detect::overlay::detect(inputs, observed));
    }
    let model = context.desired.model();
    // Ghost endpoints in this node's pod subnet (from the Nodes, while known).
    let subnet = model
        .and_then(|model| model.nodes.get(context.node))
        .and_then(|node| node.pod_subnet);
    candidates.extend(endpoints::ghost_endpoints(
        context.endpoints,
        inputs.net,
        subnet,
        context.node,
        &mut memory.ghosts,
        at,
    ));
    if let Some(model) = model {
        detect::overlay::name_nodes(&mut candidates, model, memory.overlay.departed());
    }
    endpoints::name_services(&mut candidates, context.endpoints);
    Judgement {
        candidates,
        overlay: observed,
    }
}
