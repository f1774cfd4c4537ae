//! The commands of the `watchdog` binary: each wires sources, detectors and sinks
//! together. This is the binary's edge: errors end here (printed with their causes, `anyhow`
//! allowed), and every other room may be imported.

pub mod alert;
pub mod check;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod repair;
pub mod repair_undo;

#[cfg(test)]
mod one_judgement;

use std::process::ExitCode;

use crate::sources::{
    kernel::{caps, procfs},
    probes::ProbeError,
};

/// Why a command that loads eBPF could not start (nothing is attached when these are
/// returned).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Not enough privileges.
    #[error(transparent)]
    Capabilities(#[from] caps::MissingCapabilities),
    /// The daemon's own network namespace could not be read.
    #[error("cannot read this process's network namespace (/proc/self/ns/net): {0}")]
    Netns(std::io::Error),
    /// The eBPF object did not load.
    #[error(transparent)]
    Probes(#[from] ProbeError),
}

/// Checks privileges and lifts the memlock limit: the start of every command that loads
/// eBPF. Returns this process's network namespace.
pub fn prepare() -> Result<u32, StartError> {
    prepare_for(caps::Needs::ALL)
}

/// As [`prepare`], with the capabilities `needs` says this configuration uses.
pub fn prepare_for(needs: caps::Needs) -> Result<u32, StartError> {
    caps::check(needs)?;
    raise_memlock_limit();
    procfs::own_netns().map_err(StartError::Netns)
}

/// A current-thread tokio runtime for one command.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Prints `error: <the error and its causes>`; returns `code`.
fn fail(err: &anyhow::Error, code: u8) -> ExitCode {
    eprintln!("error: {}", chain(err));
    ExitCode::from(code)
}

/// The error and its causes joined by `: `, each said once: many errors already name
/// their cause in their own message (`cannot read config file x: <the io error>`), and
/// anyhow's `{:#}` would print it again.
fn chain(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// Whether to colour a stream: only a terminal, and never when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
pub fn colour(is_terminal: bool) -> bool {
    colour_with(is_terminal, std::env::var_os("NO_COLOR").as_deref())
}

fn colour_with(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|value| value.is_empty())
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it where we may.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        let error = std::io::Error::last_os_error();
        if kernel_before(5, 11) {
            // Before 5.11 eBPF maps are charged to RLIMIT_MEMLOCK, not to the cgroup.
            tracing::warn!(
                "cannot lift RLIMIT_MEMLOCK ({error}): this kernel charges eBPF maps to it, \
                 so loading may fail; grant CAP_SYS_RESOURCE (the DaemonSet's \
                 deploy/kustomize/before-5.11 overlay, systemd: add it to \
                 AmbientCapabilities=) or raise the limit (LimitMEMLOCK=infinity)"
            );
        } else {
            tracing::debug!("cannot lift RLIMIT_MEMLOCK ({error}); not needed on 5.11 and later");
        }
    }
}

/// Whether the running kernel's version is below `major.minor` (false when unknown).
fn kernel_before(major: u32, minor: u32) -> bool {
    // SAFETY: uname fills the struct.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, writable struct.
    if unsafe { libc::uname(&mut name) } != 0 {
        return false;
    }
    // SAFETY: uname NUL-terminates its fields.
    let release = unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) };
    release_before(&release.to_string_lossy(), major, minor)
}

/// Whether a kernel release string (`5.10.0-32-amd64`) is below `major.minor`.
fn release_before(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) < (major, minor),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Node that patched itself with hostile annotations, read as the daemon reads a
    /// NodeList (the API's objects go through the same conversion), its value in a
    /// finding as the stale-annotation detector words it, through every sink: no control
    /// character anywhere (no forged log line), bounded, and Slack's mentions and links
    /// escaped.
    #[test]
    fn hostile_annotations_reach_no_sink_raw() {
        use crate::{
            findings::{Candidate, Finding, Kind, Report, Severity},
            sinks::alerts::{Context, alertmanager, event::Alert, slack, webhook},
            sources::desired::{convert, file::parse_nodes},
        };
        let hostile = "<!channel> <https://evil.example|click> `x`\u{1b}[2J\n\
                       2026-12-06T00:00:00Z WARN forged\u{202e}"
            .to_owned()
            + &"y".repeat(5000);
        let list = serde_json::json!({"kind": "NodeList", "items": [{
            "metadata": {"name": "node-1\nforged", "annotations": {
                "flannel.alpha.coreos.com/public-ip-overwrite": hostile,
                "flannel.alpha.coreos.com/public-ip": "192.168.1.2",
            }},
        }]});
        let model = convert::model(&parse_nodes(&list.to_string()).unwrap());
        let (name, node) = model.nodes.iter().next().unwrap();
        let value = node.public_ip_overwrite.clone().unwrap();
        let finding = Finding {
            candidate: Candidate::new(
                Kind::StaleAnnotation,
                format!("node {name} annotation public-ip-overwrite={value}"),
                Severity::Warning,
            )
            .with("node", name.as_str())
            .with("overwrite", value.as_str()),
            first_seen: std::time::SystemTime::UNIX_EPOCH,
            last_seen: std::time::SystemTime::UNIX_EPOCH,
        };
        let ctx = Context {
            node: "node-a",
            generator_url: "http://127.0.0.1:9477/api/v1/findings",
            runbook_base: "https://example.com/runbooks/",
            repeat_interval: std::time::Duration::from_secs(60),
            now: std::time::SystemTime::UNIX_EPOCH,
        };
        let alerts = [Alert::firing(&finding, false)];
        let json = |bytes: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&bytes).unwrap();
        let report = serde_json::to_value(Report::new("node-a", vec![finding.clone()])).unwrap();
        let log_line = format!("finding: {}", finding.candidate.subject);
        let outputs = [
            ("webhook", json(webhook::body(&ctx, &alerts))),
            ("alertmanager", json(alertmanager::body(&ctx, &alerts))),
            ("slack", json(slack::body(&ctx, &alerts))),
            ("findings API", report),
            ("log", serde_json::json!(log_line)),
        ];
        fn strings(value: &serde_json::Value, out: &mut Vec<String>) {
            match value {
                serde_json::Value::String(text) => out.push(text.clone()),
                serde_json::Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
                serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| {
                    out.push(k.clone());
                    strings(v, out);
                }),
                _ => {}
            }
        }
        for (sink, output) in &outputs {
            let mut texts = Vec::new();
            strings(output, &mut texts);
            for text in texts {
                // Slack's text is one message of several lines, its own.
                let text = if *sink == "slack" {
                    text.replace('\n', " ")
                } else {
                    text
                };
                assert!(
                    !text.chars().any(|c| c.is_control() || c == '\u{202e}'),
                    "{sink}: {text:?}"
                );
                assert!(text.len() < 4096, "{sink}: {} bytes", text.len());
            }
        }
        let slack_text = outputs[2].1["text"].as_str().unwrap();
        assert!(!slack_text.contains("<!channel>") && !slack_text.contains("<https"));
        assert!(slack_text.contains("&lt;!channel&gt;"), "{slack_text}");
        // Alertmanager's subject label: the cleaned value, bounded.
        let subject = outputs[1].1[0]["labels"]["subject"].as_str().unwrap();
        assert!(
            subject.starts_with("node node-1forged annotation"),
            "{subject}"
        );
    }

    /// A Node that patched itself hostile (control characters, a Slack mention, a link, a
    /// forged log line, 10 kB values) read as the daemon reads a NodeList, judged by the
    /// real stale-annotation detector: its findings' subject and evidence, the daemon's
    /// log line and the Slack text carry the values cleaned and capped.
    #[test]
    fn a_hostile_node_through_the_stale_annotation_detector() {
        use crate::{
            config::detect::DetectConfig,
            detect::{Inputs, Sample, overlay::stale_annotation},
            findings::Finding,
            model::{desired::MAX_QUOTED, net::Snapshot, probe::ProbeBook},
            overlay::doubts,
            sinks::alerts::{Context, event::Alert, slack},
            sources::desired::{convert, file::parse_nodes},
        };
        let hostile = |tail: &str| {
            format!(
                "<!channel> <https://evil.example|click>\u{1b}[2J\r\n\
                 2026-12-06T00:00:00Z WARN forged line\u{202e}{}",
                tail.repeat(10_000)
            )
        };
        let list = serde_json::json!({"kind": "NodeList", "items": [{
            "metadata": {"name": "node-1", "annotations": {
                "flannel.alpha.coreos.com/public-ip": hostile("1"),
                "flannel.alpha.coreos.com/public-ip-overwrite": hostile("2"),
                "flannel.alpha.coreos.com/backend-data": hostile("3"),
                "flannel.alpha.coreos.com/backend-type": "vxlan",
                "flannel.alpha.coreos.com/kube-subnet-manager": "true",
            }},
            "spec": {"podCIDR": "10.244.1.0/24"},
        }]});
        let model = convert::model(&parse_nodes(&list.to_string()).unwrap());
        let settings = DetectConfig::default();
        let (sample, net, probes) = (Sample::default(), Snapshot::default(), ProbeBook::default());
        let inputs = Inputs {
            net: &net,
            now: &sample,
            then: &sample,
            recent: &sample,
            settings: &settings,
            probes: &probes,
        };
        let candidates = stale_annotation(&inputs, &model, &doubts(&model));
        // The invalid Node, and its overwrite differing from its public-ip.
        assert_eq!(candidates.len(), 2, "{candidates:#?}");
        let clean = |text: &str| !text.chars().any(|c| c.is_control() || c == '\u{202e}');
        for candidate in &candidates {
            let finding = Finding {
                candidate: candidate.clone(),
                first_seen: std::time::SystemTime::UNIX_EPOCH,
                last_seen: std::time::SystemTime::UNIX_EPOCH,
            };
            let subject = &candidate.subject;
            assert!(clean(subject), "{subject:?}");
            assert!(subject.chars().count() < 400, "{subject}");
            for evidence in &candidate.evidence {
                assert!(
                    clean(&evidence.value),
                    "{}: {:?}",
                    evidence.name,
                    evidence.value
                );
                // A value is quoted at most MAX_QUOTED characters, then its length: no
                // longer run of a 10 kB value's filler, and a text of a few quotes.
                for filler in ["1", "2", "3"] {
                    assert!(!evidence.value.contains(&filler.repeat(MAX_QUOTED + 1)));
                }
                assert!(
                    evidence.value.chars().count() < 1200,
                    "{}: {} characters",
                    evidence.name,
                    evidence.value.chars().count()
                );
            }
            let line = daemon::fired_message(&finding);
            assert!(clean(&line) && line.chars().count() < 2000, "{line:?}");
            assert!(!line.contains("\nforged") && line.contains("WARN forged line"));
            let ctx = Context {
                node: "node-a",
                generator_url: "http://127.0.0.1:9477/api/v1/findings",
                runbook_base: "https://example.com/runbooks/",
                repeat_interval: std::time::Duration::from_secs(60),
                now: std::time::SystemTime::UNIX_EPOCH,
            };
            let body: serde_json::Value =
                serde_json::from_slice(&slack::body(&ctx, &[Alert::firing(&finding, false)]))
                    .unwrap();
            let text = body["text"].as_str().unwrap();
            assert!(
                !text.contains("<!channel>") && !text.contains("<https"),
                "{text}"
            );
            assert!(text.contains("&lt;!channel&gt;"), "{text}");
        }
        let problems: Vec<&str> = candidates[0]
            .evidence
            .iter()
            .filter(|e| e.name == "problem")
            .map(|e| e.value.as_str())
            .collect();
        // What was wrong with each annotation, the value quoted capped with its length.
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].contains("public-ip `<!channel> <https://evil.example|click>[2J")
                && problems[0].contains("… (1024 characters)` is not an IPv4 address"),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].contains("backend-data `<!channel>"),
            "{}",
            problems[1]
        );
        assert!(
            candidates[1]
                .subject
                .contains("public-ip-overwrite=<!channel>")
        );
        assert!(candidates[1].subject.ends_with("… (1024 characters)"));
    }

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(release_before("5.10.0-32-amd64", 5, 11));
        assert!(!release_before("5.11.0", 5, 11));
        assert!(!release_before("6.1.0-50-arm64", 5, 11));
        assert!(release_before("4.19.0-rpi", 5, 11));
        assert!(!release_before("garbage", 5, 11));
    }

    #[test]
    fn every_cause_is_said_once() {
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        // A thiserror message that embeds its `source`.
        let err = anyhow::Error::from(crate::config::ConfigError::Read {
            path: "/x.toml".into(),
            source: io(),
        });
        assert_eq!(format!("{err:#}").matches("entity not found").count(), 2);
        let text = chain(&err);
        assert_eq!(text.matches("entity not found").count(), 1, "{text}");
        assert_eq!(text, "cannot read config file /x.toml: entity not found");
        // Context that does not repeat its cause keeps it.
        let err = anyhow::Error::from(io()).context("cannot start");
        assert_eq!(chain(&err), "cannot start: entity not found");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour_with(true, None));
        assert!(colour_with(true, Some(OsStr::new(""))));
        assert!(!colour_with(true, Some(OsStr::new("1"))));
        assert!(!colour_with(false, None));
    }
}
