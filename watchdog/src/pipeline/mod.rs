//! One detection cycle: kernel counters → sample → window history → detectors (with the
//! network mirror) → findings tracker. Data flows one way; sinks read the result.

mod cycle;
mod history;
mod sample;

use std::sync::{Arc, RwLock};

pub use self::{
    cycle::{Cycle, Pipeline, candidates},
    history::History,
    sample::{client_totals, sample, this_node, without_destinations},
};
use crate::findings::Finding;

/// The findings the sinks read (API, metrics), replaced after each cycle.
pub type SharedFindings = Arc<RwLock<Vec<Finding>>>;
