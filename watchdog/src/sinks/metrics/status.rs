//! `watchdog_probe_up`, `watchdog_netns_attribution`, `watchdog_kernel_feature`: how the
//! sources are doing.

use super::Metrics;
use crate::model::status::{ProbeState, SourceStatus};

impl Metrics {
    /// Publishes the sources' status.
    pub fn set_status(&self, status: &SourceStatus) {
        for probe in &status.probes {
            let up = matches!(probe.state, ProbeState::Attached);
            self.probe_up
                .get_or_create(&vec![("probe", probe.name.to_owned())])
                .set(i64::from(up));
            let unsupported = matches!(probe.state, ProbeState::Unsupported(_));
            self.probe_unsupported
                .get_or_create(&vec![("probe", probe.name.to_owned())])
                .set(i64::from(unsupported));
        }
        self.netns_attribution
            .set(i64::from(status.netns_attribution));
        for (feature, on) in &status.features {
            self.kernel_features
                .get_or_create(&vec![("feature", (*feature).to_owned())])
                .set(i64::from(*on));
        }
    }
}
