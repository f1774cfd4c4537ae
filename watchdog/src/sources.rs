//! Everything the daemon reads from the kernel: the eBPF probes and the netlink mirror,
//! started together, read together each cycle.

use crate::{
    btf::Btf,
    config::{Config, Namespaces},
    detect::Sample,
    metrics::Metrics,
    mirror::{Mirror, MirrorError},
    pipeline,
    probes::{KernelEnv, ProbeError, ProbeState, Probes, kfree_skb::Attribution},
    tracefs::Tracefs,
};

/// The probes and the mirror. Dropping it detaches the probes and stops the mirror.
pub struct Sources {
    /// The eBPF probes.
    pub probes: Probes,
    mirror: Result<(Mirror, tokio::task::JoinHandle<Result<(), MirrorError>>), String>,
    own_netns: u32,
    label_netns: bool,
}

impl Drop for Sources {
    fn drop(&mut self) {
        if let Ok((_, task)) = &self.mirror {
            task.abort();
        }
    }
}

impl Sources {
    /// Finds tracefs and BTF, loads and attaches the probes, starts the mirror. A probe or
    /// the mirror failing is reported by [`Sources::failures`]; only an eBPF object the
    /// kernel refuses is an error.
    pub async fn start(config: &Config, own_netns: u32) -> Result<Self, ProbeError> {
        let tracefs = match &config.tracefs_path {
            Some(path) => Tracefs::at(path.clone()),
            None => Tracefs::locate(),
        };
        let tracefs = tracefs
            .inspect_err(|err| tracing::error!("tracepoints unavailable: {err}"))
            .ok();
        let btf = config.btf_path().and_then(|path| {
            Btf::from_file(path)
                .inspect_err(|err| tracing::warn!("running without kernel BTF: {err}"))
                .ok()
        });
        if config.btf_path().is_none() {
            tracing::warn!("running without kernel BTF: btf_path is empty in the config");
        }
        let env = KernelEnv {
            tracefs: tracefs.as_ref(),
            btf: btf.as_ref(),
            filter_netns: (config.namespaces == Namespaces::Own).then_some(own_netns),
        };
        let probes = Probes::start(config, &env)?;
        // The BTF (several MiB parsed) is only needed to plan the probes: give it back to
        // the system, not just to the allocator, so the idle daemon stays small.
        drop(btf);
        release_free_heap();
        let mirror = Mirror::start()
            .await
            .map_err(|err| format!("network mirror failed: {err}"));
        match &mirror {
            Ok(_) => tracing::info!("network mirror loaded"),
            Err(why) => tracing::error!("{why}"),
        }
        let label_netns = config.namespaces == Namespaces::All
            && probes
                .kfree_skb()
                .is_some_and(|probe| *probe.attribution() == Attribution::PerNamespace);
        Ok(Self {
            probes,
            mirror,
            own_netns,
            label_netns,
        })
    }

    /// The mirror, if it runs.
    pub fn mirror(&self) -> Option<&Mirror> {
        self.mirror.as_ref().ok().map(|(mirror, _)| mirror)
    }

    /// What is not working: failed probes (not those this kernel cannot run), a failed or
    /// stopped mirror.
    pub fn failures(&self) -> Vec<String> {
        let mut failures: Vec<String> = self
            .probes
            .status()
            .iter()
            .filter(|status| matches!(status.state, ProbeState::Failed(_)))
            .map(ToString::to_string)
            .collect();
        match &self.mirror {
            Err(why) => failures.push(why.clone()),
            Ok((_, task)) if task.is_finished() => {
                failures.push("network mirror stopped (see the log)".into());
            }
            Ok(_) => {}
        }
        failures
    }

    /// Exports probe and mirror status to `metrics`.
    pub fn publish_status(&self, metrics: &Metrics) {
        for status in self.probes.status() {
            let up = matches!(status.state, ProbeState::Attached);
            metrics
                .probe_up
                .get_or_create(&vec![("probe", status.name.to_owned())])
                .set(i64::from(up));
            let unsupported = matches!(status.state, ProbeState::Unsupported(_));
            metrics
                .probe_unsupported
                .get_or_create(&vec![("probe", status.name.to_owned())])
                .set(i64::from(unsupported));
        }
        let attributed = self
            .probes
            .kfree_skb()
            .is_some_and(|probe| *probe.attribution() == Attribution::PerNamespace);
        metrics.netns_attribution.set(i64::from(attributed));
        for (feature, on) in self.probes.features() {
            metrics
                .kernel_features
                .get_or_create(&vec![("feature", (*feature).to_owned())])
                .set(i64::from(*on));
        }
        if let Some(mirror) = self.mirror() {
            metrics.attach_mirror(mirror.counters());
        }
    }

    /// Attaches to new interfaces, reads every map, publishes the counters to `metrics`
    /// (top `top_n` series) and returns the detectors' sample; `ok` is false if a map read
    /// failed.
    pub fn read(&mut self, metrics: &Metrics, top_n: usize) -> (Sample, bool) {
        self.probes.sync_interfaces();
        let mut ok = true;
        let drops = keep(metrics, &mut ok, "drop", self.probes.read_drops());
        let peers = keep(metrics, &mut ok, "peer", self.probes.read_peers());
        let connects = keep(metrics, &mut ok, "TCP", self.probes.read_connects());
        let kfree = self.probes.kfree_skb().zip(drops.as_ref());
        if let Some((probe, drops)) = kfree {
            metrics.set_drops(probe, drops, self.label_netns, top_n);
        }
        if let Some(peers) = &peers {
            metrics.set_peers(peers, top_n);
        }
        if let Some(connects) = &connects {
            metrics.set_connects(connects, top_n);
        }
        // The peer reading moves into the sample: it is the largest map, read every poll.
        let sample = pipeline::sample(self.own_netns, kfree, peers, connects.as_ref());
        (sample, ok)
    }
}

/// A map reading's value; a failed read is counted, logged and clears `ok` (the other
/// maps are still read).
fn keep<T>(
    metrics: &Metrics,
    ok: &mut bool,
    what: &str,
    read: Option<Result<T, aya::maps::MapError>>,
) -> Option<T> {
    match read? {
        Ok(value) => Some(value),
        Err(err) => {
            metrics.map_read_errors.inc();
            tracing::warn!("reading the {what} counters failed: {err}");
            *ok = false;
            None
        }
    }
}

/// Returns freed heap pages to the kernel (glibc keeps them otherwise).
fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}
