//! A real Prometheus server (Debian's `prometheus`, installed by `cargo xtask setup`) run
//! inside a lab namespace, and its HTTP API.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{NetNs, TempDir, http_get, poll_until};

/// Where Prometheus listens inside its namespace.
pub const LISTEN: &str = "127.0.0.1:9090";

/// A Prometheus server inside a namespace; killed on drop.
pub struct Prometheus {
    child: Child,
    ns_path: std::path::PathBuf,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus in `ns` with `config` (prometheus.yml text) and the rule files
    /// `rules` (name, text), written next to it; `rule_files` in `config` may name them.
    pub fn start(ns: &NetNs, config: &str, rules: &[(&str, &str)]) -> Self {
        let dir = TempDir::new("watchdog-prometheus");
        for (name, text) in rules {
            std::fs::write(dir.path().join(name), text).expect("write rules");
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "prometheus"])
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={LISTEN}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (cargo xtask setup installs it)");
        Self {
            child,
            ns_path: ns.path(),
            _dir: dir,
        }
    }

    /// A scrape configuration for one job scraping `target` every second, with the static
    /// labels `labels` (e.g. `node: node-0`, as the ServiceMonitor's relabelling sets).
    pub fn scrape_config(job: &str, target: &str, labels: &str, rule_files: &[&str]) -> String {
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{}]\n\
             scrape_configs:\n  - job_name: {job}\n    static_configs:\n\
             \x20     - targets: ['{target}']\n        labels: {{{labels}}}\n",
            rule_files.join(", ")
        )
    }

    /// GET `path` from the HTTP API; the JSON answer, `None` if it did not answer 200.
    pub fn api(&self, path: &str) -> Option<serde_json::Value> {
        let addr = LISTEN.parse().expect("address");
        let (status, body) = crate::run_in(&self.ns_path, || http_get(addr, path))?;
        (status == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    /// Waits until the job `job` has been scraped successfully.
    pub fn wait_scraped(&self, job: &str) {
        let query = format!("up{{job=\"{job}\"}}");
        poll_until(Duration::from_secs(30), "Prometheus to scrape", || {
            let result = self.query(&query)?;
            (result.first()?["value"][1] == "1").then_some(())
        });
    }

    /// An instant query's result vector, `None` if the query failed.
    pub fn query(&self, expr: &str) -> Option<Vec<serde_json::Value>> {
        let answer = self.api(&format!("/api/v1/query?query={}", encode(expr)))?;
        result(&answer)
    }

    /// A range query from `start` to `end` with `step`: the result matrix (one entry per
    /// series), `None` if the query failed.
    pub fn query_range(
        &self,
        expr: &str,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> Option<Vec<serde_json::Value>> {
        let answer = self.api(&format!(
            "/api/v1/query_range?query={}&start={:.3}&end={:.3}&step={}",
            encode(expr),
            unix(start),
            unix(end),
            step.as_secs_f64()
        ))?;
        result(&answer)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn result(answer: &serde_json::Value) -> Option<Vec<serde_json::Value>> {
    (answer["status"] == "success")
        .then(|| answer["data"]["result"].as_array().cloned())
        .flatten()
}

/// Seconds since the epoch.
pub fn unix(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// Percent-encodes a query parameter (everything but unreserved characters).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
