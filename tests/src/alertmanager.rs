//! A real Alertmanager (Debian's `prometheus-alertmanager`, installed by `cargo xtask
//! setup`) run inside a lab namespace on 127.0.0.1:9093, and its HTTP API.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{NetNs, TempDir, http_get, poll_until};

/// Where Alertmanager listens inside its namespace.
pub const LISTEN: &str = "127.0.0.1:9093";

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// Alertmanager inside a namespace; killed on drop.
pub struct Alertmanager {
    child: Child,
    ns_path: std::path::PathBuf,
    dir: TempDir,
}

impl Alertmanager {
    /// Starts Alertmanager in `ns` with one receiver that drops everything, grouping
    /// after 1 s; waits until it is ready.
    pub fn start(ns: &NetNs) -> Self {
        Self::start_with(ns, "")
    }

    /// As [`Alertmanager::start`], with `extra` appended to alertmanager.yml (e.g. the
    /// `inhibit_rules:` of `deploy/alertmanager/inhibit.yml`).
    pub fn start_with(ns: &NetNs, extra: &str) -> Self {
        assert!(
            Path::new(ALERTMANAGER).exists(),
            "{ALERTMANAGER} missing: run `cargo xtask setup` (installs prometheus-alertmanager)"
        );
        let dir = TempDir::new("watchdog-am");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: \"null\"\n  group_wait: 1s\n  group_interval: 1s\n\
                 receivers:\n  - name: \"null\"\n{extra}"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("am.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), ALERTMANAGER])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().display()))
            .arg(format!("--web.listen-address={LISTEN}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start alertmanager");
        let am = Self {
            child,
            ns_path: ns.path(),
            dir,
        };
        poll_until(Duration::from_secs(30), "Alertmanager to be ready", || {
            am.get("/-/ready")
                .filter(|(status, _)| *status == 200)
                .map(|_| ())
        });
        am
    }

    /// GET `path`: status and body, `None` if it did not answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let addr: SocketAddr = LISTEN.parse().unwrap();
        crate::run_in(&self.ns_path, || http_get(addr, path))
    }

    /// Every alert Alertmanager returns (active, silenced, inhibited, unprocessed).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let (status, body) = self.get("/api/v2/alerts").expect("GET /api/v2/alerts");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Vec<serde_json::Value>>(&body).expect("alerts JSON")
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("am.log")).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
