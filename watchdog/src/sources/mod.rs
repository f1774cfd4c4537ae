//! Everything the daemon reads from the world: the eBPF probes and the netlink mirror,
//! started together, read together each cycle, and the active prober, which checks the
//! suspects the pipeline names. Sources produce model types (readings, snapshots, probe
//! results, status) and never write to a sink.

pub mod desired;
pub mod k8s;
pub mod kernel;
pub mod mirror;
pub mod pods;
pub mod prober;
pub mod probes;
pub mod reach;
pub mod stack;

use crate::{
    config::{Config, Namespaces},
    model::{counters::Reading, probe::Method, stack::StackRequest, status::SourceStatus},
    sources::{
        kernel::{btf::Btf, memory, tracefs::Tracefs},
        mirror::{Mirror, MirrorError},
        prober::Prober,
        probes::{KernelEnv, ProbeError, Probes, kfree_skb::Attribution},
        stack::StackReader,
    },
};

/// The probes, the mirror and the prober. Dropping it detaches the probes, stops the
/// mirror and abandons the probes in flight.
pub struct Sources {
    probes: Probes,
    prober: Prober,
    /// What explains netfilter, reverse-path and checksum drops, read when asked.
    stack: StackReader,
    mirror: Result<(Mirror, tokio::task::JoinHandle<Result<(), MirrorError>>), String>,
    /// The mirror generation the TC attachments were last synced with.
    links_synced: Option<u64>,
    /// Why the mirror's task ended, once it has (logged when first seen).
    mirror_stopped: Option<String>,
}

impl Drop for Sources {
    fn drop(&mut self) {
        if let Ok((_, task)) = &self.mirror {
            task.abort();
        }
    }
}

impl Sources {
    /// Finds tracefs and BTF, starts the mirror, loads and attaches the probes (the TC
    /// programs on the mirror's interfaces). A probe or the mirror failing is reported by
    /// [`Sources::status`]; only an eBPF object the kernel refuses is an error.
    pub async fn start(config: &Config, own_netns: u32) -> Result<Self, ProbeError> {
        memory::log_step("the config, the HTTP server and the desired-state source");
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
            // "node" is decided in userspace (which namespaces are behind the veths changes
            // with every pod); the kernel attributes every event to its namespace.
            filter_netns: (config.namespaces == Namespaces::Own).then_some(own_netns),
        };
        let probes = Probes::start(config, &env)?;
        drop(btf);
        // What loading the object allocated and freed goes back to the system.
        memory::release_free_heap();
        memory::log_step("the probes (loaded and attached)");
        let mirror = Mirror::start()
            .await
            .map_err(|err| format!("network mirror failed: {err}"));
        memory::log_step("the network mirror's first dump");
        match &mirror {
            Ok(_) => tracing::info!("network mirror loaded"),
            Err(why) => tracing::error!("{why}"),
        }
        let mut sources = Self {
            probes,
            prober: Prober::new(&config.prober).with_mtu(&config.mtu),
            stack: StackReader::new(config.probes.explain_drops),
            mirror,
            links_synced: None,
            mirror_stopped: None,
        };
        sources.sync_interfaces();
        Ok(sources)
    }

    /// The mirror, if it runs.
    pub fn mirror(&self) -> Option<&Mirror> {
        self.mirror.as_ref().ok().map(|(mirror, _)| mirror)
    }

    /// The active prober.
    pub fn prober(&mut self) -> &mut Prober {
        &mut self.prober
    }

    /// How every source is doing: probe states, kernel features, the mirror.
    pub fn status(&self) -> SourceStatus {
        let mirror_failure = match &self.mirror {
            Err(why) => Some(why.clone()),
            Ok(_) if self.mirror_stopped.is_some() => self.mirror_stopped.clone(),
            Ok((_, task)) if task.is_finished() => {
                Some("network mirror stopped (see the log)".into())
            }
            Ok((mirror, _)) => mirror.failure(),
        };
        let mut features = self.probes.features().to_vec();
        features.push(("ping_socket", self.prober.method() == Method::IcmpEcho));
        SourceStatus {
            probes: self.probes.status().to_vec(),
            features,
            netns_attribution: self
                .probes
                .kfree_skb()
                .is_some_and(|probe| *probe.attribution() == Attribution::PerNamespace),
            mirror_failure,
        }
    }

    /// What the next reads read of the stack's configuration (what explains the drops the
    /// last cycle saw); replaces the previous request.
    pub fn request_stack(&mut self, request: StackRequest) {
        self.stack.request(request);
    }

    /// Attaches the peer probe to interfaces that appeared and releases those that went
    /// (when the mirror saw a change since the last time), then reads every map and the
    /// stack's configuration asked for.
    pub fn read(&mut self) -> Reading {
        self.check_mirror();
        self.sync_interfaces();
        let mut reading = self.probes.read();
        reading.stack = self.stack.read();
        reading
    }

    /// Logs, once, why the mirror's task ended (its error would otherwise be lost with the
    /// task: the snapshot just stops changing) and keeps it for [`Sources::status`].
    fn check_mirror(&mut self) {
        if self.mirror_stopped.is_some() {
            return;
        }
        let Ok((_, task)) = &mut self.mirror else {
            return;
        };
        if !task.is_finished() {
            return;
        }
        let why = match futures::FutureExt::now_or_never(task) {
            None => return,
            Some(Ok(Ok(()))) => "network mirror stopped".to_owned(),
            Some(Ok(Err(err))) => format!("network mirror stopped: {err}"),
            Some(Err(join)) => format!("network mirror stopped: its task {join}"),
        };
        tracing::error!("{why}");
        self.mirror_stopped = Some(why);
    }

    /// Syncs the TC attachments with the mirror's links if the mirror changed.
    fn sync_interfaces(&mut self) {
        let Some(mirror) = self.mirror() else {
            self.probes.sync_interfaces(None);
            return;
        };
        let generation = mirror.generation();
        if self.links_synced == Some(generation) {
            return;
        }
        let links: Vec<(u32, String)> = mirror.with_snapshot(|net| {
            net.links()
                .map(|link| (link.index, link.name.clone()))
                .collect()
        });
        self.probes.sync_interfaces(Some(&links));
        self.links_synced = Some(generation);
    }
}
