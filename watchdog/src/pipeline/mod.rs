//! One detection cycle: kernel counters → sample → window history → the one judgement
//! ([`judge`]: every detector, with the network mirror and the desired state) → findings
//! tracker. Data flows one way; sinks and repair read the result.

mod cycle;
mod history;
mod judge;
mod sample;
mod series;

use std::sync::{Arc, RwLock};

pub use self::{
    cycle::{Cycle, Pipeline},
    history::{History, Window},
    judge::{Context, Judgement, Memory, judge},
    sample::{client_totals, on_existing_interfaces, sample, this_node, without_destinations},
};
use crate::findings::Finding;

/// The findings the sinks read (API, metrics), replaced after each cycle.
pub type SharedFindings = Arc<RwLock<Vec<Finding>>>;
