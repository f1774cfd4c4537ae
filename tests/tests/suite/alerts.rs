//! Alerts reach people: a real Alertmanager sees a lab finding fire and resolve, its
//! `runbook_url` annotation pointing at a runbook of this repository; a local receiver
//! checks the webhook payload (its `runbook_url` under a configured
//! `alerts.runbook_base_url`), its HMAC signature and retries; an https receiver
//! with a private CA is trusted through `ca_file` and refused without it; a dead sink never
//! slows detection; configuration errors are clear at start-up.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use watchdog_tests::{
    Daemon, NetNs, TempDir, alertmanager::Alertmanager, lab::Lab, poll_until,
    repo::resolve_repository_url, require_root, run_watchdog,
};

/// One request a [`Receiver`] got.
#[derive(Clone, Debug)]
struct Received {
    at: Instant,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// A local HTTP receiver answering the scripted statuses in order, then 200 (or, when
/// `silent`, accepting connections and never answering).
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(listener: TcpListener, script: Vec<u16>, silent: bool) -> Self {
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let got = got.clone();
            let stop = stop.clone();
            move || {
                let mut script = script.into_iter();
                let mut held = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let stream = match listener.accept() {
                        Ok((stream, _)) => stream,
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        Err(err) => panic!("accept: {err}"),
                    };
                    if silent {
                        held.push(stream);
                        continue;
                    }
                    stream.set_nonblocking(false).unwrap();
                    let Some(request) = read_request(&stream) else {
                        continue;
                    };
                    got.lock().unwrap().push(request);
                    let status = script.next().unwrap_or(200);
                    let mut stream = stream;
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} Scripted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            }
        });
        Self {
            addr,
            got,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_request(mut stream: &TcpStream) -> Option<Received> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(pos) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some(Received {
        at: Instant::now(),
        path,
        headers,
        body,
    })
}

const FAST: &str = "poll_interval = \"250ms\"\n[detect]\nclear_after = 2\n";

#[test]
fn alertmanager_shows_a_lab_finding_fire_and_resolve() {
    if !require_root("alertmanager_shows_a_lab_finding_fire_and_resolve") {
        return;
    }
    let lab = Lab::new(3);
    let ns = lab.node(0).ns();
    let am = Alertmanager::start(ns);
    let mut daemon = Daemon::start(
        ns,
        &format!(
            "{FAST}[alerts]\nrepeat_interval = \"5s\"\n[[alerts.sinks]]\nname = \"am\"\n\
             type = \"alertmanager\"\nurl = \"http://127.0.0.1:9093\"\nbackoff = \"200ms\"\n"
        ),
    );
    daemon.wait_ready();
    let flushed = Instant::now();
    lab.flush_fdb(0);
    let finding = daemon.wait_finding("vtep_collapse", "flannel.1", Duration::from_secs(20));
    let found = Instant::now();
    let is_ours = |alert: &serde_json::Value| alert["labels"]["kind"] == "vtep_collapse";
    let alert = poll_until(
        Duration::from_secs(20),
        "the vtep_collapse alert in Alertmanager",
        || am.alerts().into_iter().find(is_ours),
    );
    let in_am = Instant::now();
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "WatchdogVtepCollapse", "{alert:#}");
    assert_eq!(labels["subject"], finding.subject.as_str(), "{alert:#}");
    assert_eq!(labels["severity"], finding.severity.as_str(), "{alert:#}");
    assert!(
        labels["node"].as_str().is_some_and(|n| !n.is_empty()),
        "{alert:#}"
    );
    assert_eq!(alert["status"]["state"], "active", "{alert:#}");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("vtep_collapse")),
        "{alert:#}"
    );
    assert!(
        alert["generatorURL"]
            .as_str()
            .is_some_and(|u| u.ends_with("/api/v1/findings")),
        "{alert:#}"
    );
    // The default `alerts.runbook_base_url`: this repository's runbook for the kind.
    let runbook = alert["annotations"]["runbook_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no runbook_url annotation: {alert:#}"));
    assert!(
        runbook.ends_with("/blob/main/docs/runbooks/vtep_collapse.md"),
        "{runbook}"
    );
    let page = resolve_repository_url(runbook).unwrap_or_else(|e| panic!("{e}"));
    assert!(page.ends_with("docs/runbooks/vtep_collapse.md"), "{page:?}");
    eprintln!(
        "flush → finding {:?}, finding → in Alertmanager {:?}",
        found - flushed,
        in_am - found
    );

    lab.restore_fdb(0);
    let healed = Instant::now();
    poll_until(
        Duration::from_secs(30),
        "Alertmanager to show the alert resolved",
        || {
            let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
            let alerts = am.alerts();
            match alerts.iter().find(|a| is_ours(a)) {
                None => Some(()),
                // endsAt in the past: resolved (RFC 3339 UTC strings compare as times).
                Some(a) if a["endsAt"].as_str().is_some_and(|e| e <= now.as_str()) => Some(()),
                Some(_) => None,
            }
        },
    );
    eprintln!("heal → resolved in Alertmanager {:?}", healed.elapsed());
    let metrics = daemon.metrics();
    assert!(
        metrics.count(
            "watchdog_alerts_sent_total",
            &[("sink", "am"), ("state", "resolved")]
        ) >= 1,
        "{}\n{}",
        metrics.0,
        am.log()
    );
    assert!(daemon.findings().is_empty());
}

/// Where the webhook test's alerts link their runbooks (`alerts.runbook_base_url`, no
/// trailing slash: the watchdog adds it).
const RUNBOOKS: &str = "https://runbooks.example.org/net";

fn webhook_config(url: &str, extra: &str) -> String {
    format!(
        "{FAST}[alerts]\nrepeat_interval = \"1h\"\nrunbook_base_url = \"{RUNBOOKS}\"\n\
         [[alerts.sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{url}\"\n{extra}"
    )
}

#[test]
fn webhook_payload_signature_and_retries() {
    if !require_root("webhook_payload_signature_and_retries") {
        return;
    }
    let lab = Lab::new(3);
    let ns = lab.node(0).ns();
    let listener = ns.run(|| TcpListener::bind("127.0.0.1:8099").unwrap());
    let receiver = Receiver::start(listener, vec![500, 500, 500], false);
    let dir = TempDir::new("watchdog-hmac");
    let key = dir.path().join("hmac.key");
    std::fs::write(&key, "s3cret-key\n").unwrap();
    let mut daemon = Daemon::start(
        ns,
        &webhook_config(
            "http://127.0.0.1:8099/hooks/watchdog?token=TOKEN123",
            &format!(
                "secret_file = \"{}\"\nmax_retries = 5\nbackoff = \"100ms\"\n",
                key.display()
            ),
        ),
    );
    daemon.wait_ready();
    lab.flush_fdb(0);
    daemon.wait_finding("vtep_collapse", "flannel.1", Duration::from_secs(20));
    // A flushed FDB makes three findings (vtep_collapse and a stale_fdb `missing` per
    // remote node): three alerts, one message each. The first message gets 500 three
    // times, then 200; the sink task is serial, so its four attempts come first.
    let requests = poll_until(Duration::from_secs(20), "every alert delivered", || {
        let got = receiver.requests();
        let subjects = |r: &Received| r.json()["alerts"][0]["subject"].to_string();
        let mut distinct: Vec<String> = got.iter().map(subjects).collect();
        distinct.sort();
        distinct.dedup();
        (distinct.len() >= 3 && got.len() >= distinct.len() + 3).then_some(got)
    });
    let identity = |r: &Received| {
        let json = r.json();
        (
            json["alerts"][0]["kind"].to_string(),
            json["alerts"][0]["subject"].to_string(),
        )
    };
    let first = identity(&requests[0]);
    assert!(
        requests[..4].iter().all(|r| identity(r) == first),
        "the first alert is retried 4 times: {:#?}",
        requests.iter().map(identity).collect::<Vec<_>>()
    );
    // Accepted once each: no duplicates after the retried delivery.
    let accepted: Vec<_> = requests[3..].iter().map(identity).collect();
    let mut unique = accepted.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), accepted.len(), "duplicates: {accepted:#?}");
    assert!(accepted.iter().any(|(kind, _)| kind == "\"vtep_collapse\""));
    let metrics = poll_until(Duration::from_secs(20), "sent_total to count them", || {
        let m = daemon.metrics();
        (m.count(
            "watchdog_alerts_sent_total",
            &[("sink", "hook"), ("state", "firing")],
        ) == accepted.len() as u64)
            .then_some(m)
    });
    assert_eq!(
        metrics.series("watchdog_alerts_dropped_total", &[("sink", "hook")]),
        0
    );
    assert_eq!(
        metrics.series("watchdog_alerts_failed_total", &[("sink", "hook")]),
        0
    );
    assert_eq!(receiver.requests().len(), requests.len());
    let gaps: Vec<Duration> = requests[..4]
        .windows(2)
        .map(|w| w[1].at - w[0].at)
        .collect();
    eprintln!("retry gaps (backoff 100ms doubling, jitter 50–100 %): {gaps:?}");
    // Each retry waits at least half its backoff (100 ms, doubling): no retry comes early.
    // How close the gaps stay to the backoff is a bench figure (a busy machine stretches
    // them).
    for (retry, gap) in gaps.iter().enumerate() {
        let full = Duration::from_millis(100 << retry);
        assert!(
            *gap >= full / 2,
            "retry {retry} after {gap:?}, backoff {full:?}"
        );
    }
    for request in &requests {
        assert_eq!(request.path, "/hooks/watchdog?token=TOKEN123");
        let expected = watchdog::sinks::alerts::webhook::signature(b"s3cret-key", &request.body);
        assert_eq!(
            request.header("x-watchdog-signature"),
            Some(expected.as_str())
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        let json = request.json();
        assert_eq!(json["schema"], "watchdog.alert/v1", "{json:#}");
        assert_eq!(json["test"], false);
        assert!(json["node"].as_str().is_some_and(|n| !n.is_empty()));
        assert!(json["sent_at"].as_str().is_some());
        let alerts = json["alerts"].as_array().expect("alerts array");
        assert_eq!(alerts.len(), 1, "{json:#}");
        let alert = &alerts[0];
        assert_eq!(alert["state"], "firing");
        assert!(["vtep_collapse", "stale_fdb"].contains(&alert["kind"].as_str().unwrap()));
        assert!(
            alert["subject"]
                .as_str()
                .is_some_and(|s| s.contains("flannel.1"))
        );
        assert!(["warning", "critical"].contains(&alert["severity"].as_str().unwrap()));
        assert!(alert["evidence"].as_array().is_some_and(|e| !e.is_empty()));
        assert!(alert["first_seen"].as_str().is_some());
        assert!(alert["last_seen"].as_str().is_some());
        assert_eq!(alert["repeat"], false);
        assert_eq!(
            alert["runbook_url"],
            format!("{RUNBOOKS}/{}.md", alert["kind"].as_str().unwrap()),
            "{json:#}"
        );
    }
    // The token and the key appear nowhere in the log or the metrics.
    let log = daemon.log();
    assert!(
        !log.contains("TOKEN123") && !log.contains("s3cret"),
        "{log}"
    );
    assert!(!metrics.0.contains("TOKEN123"));

    // Healing sends `resolved` once, linking the same runbook.
    lab.restore_fdb(0);
    let resolved = poll_until(Duration::from_secs(20), "the resolved webhook", || {
        receiver
            .requests()
            .into_iter()
            .find(|r| r.json()["alerts"][0]["state"] == "resolved")
    });
    let alert = &resolved.json()["alerts"][0];
    assert_eq!(
        alert["runbook_url"],
        format!("{RUNBOOKS}/{}.md", alert["kind"].as_str().unwrap()),
        "{alert:#}"
    );
}

/// Flushes node 0's FDB and waits for the finding: 20 s, far less than one delivery
/// attempt to the dead sink below, so a cycle that waited for an alert would miss it. How
/// long it takes (with and without a dead sink) is a bench figure.
fn flush_and_find(lab: &Lab, daemon: &Daemon) {
    lab.flush_fdb(0);
    daemon.wait_finding("vtep_collapse", "flannel.1", Duration::from_secs(20));
}

#[test]
fn a_dead_sink_drops_and_counts_but_never_slows_detection() {
    if !require_root("a_dead_sink_drops_and_counts_but_never_slows_detection") {
        return;
    }
    let lab = Lab::new(3);
    let ns = lab.node(0).ns();
    // A sink that accepts connections and never answers: every attempt hangs for the
    // whole 120 s timeout.
    let listener = ns.run(|| TcpListener::bind("127.0.0.1:8099").unwrap());
    let _receiver = Receiver::start(listener, vec![], true);
    let mut daemon = Daemon::start(
        ns,
        &format!(
            "{FAST}[alerts]\nrepeat_interval = \"1s\"\n[[alerts.sinks]]\nname = \"dead\"\n\
             type = \"webhook\"\nurl = \"http://127.0.0.1:8099/\"\ntimeout = \"120s\"\n\
             queue = 2\nmax_retries = 20\nbackoff = \"1s\"\n"
        ),
    );
    daemon.wait_ready();
    flush_and_find(&lab, &daemon);
    // The finding stays active, so its repeats (every second) pile up in the bounded
    // queue behind the hanging attempt.
    let metrics = poll_until(Duration::from_secs(30), "dropped alerts", || {
        let m = daemon.metrics();
        (m.series("watchdog_alerts_dropped_total", &[("sink", "dead")]) >= 2).then_some(m)
    });
    let depth = metrics.series("watchdog_alerts_queue_depth", &[("sink", "dead")]);
    assert!(depth <= 2, "queue depth {depth} above its capacity 2");
    assert_eq!(
        metrics.series(
            "watchdog_alerts_sent_total",
            &[("sink", "dead"), ("state", "firing")]
        ),
        0
    );
    // Detection keeps its pace while the sink hangs with a full queue: the finding
    // resolves, and a second flush is found again within the same deadline.
    lab.restore_fdb(0);
    poll_until(Duration::from_secs(20), "the finding to resolve", || {
        daemon.findings().is_empty().then_some(())
    });
    flush_and_find(&lab, &daemon);
    lab.restore_fdb(0);
}

#[test]
fn alert_config_errors_are_clear_at_start_up() {
    let dir = TempDir::new("watchdog-alert-cfg");
    let bad_url = dir.path().join("bad-url.toml");
    std::fs::write(
        &bad_url,
        "[[alerts.sinks]]\nname = \"a\"\ntype = \"slack\"\nurl = \"http://ok/\"\n\
         [[alerts.sinks]]\nname = \"b\"\ntype = \"webhook\"\nurl = \"htp://x/SECRET\"\n",
    )
    .unwrap();
    let (code, _, stderr) = run_watchdog(&["run", "--config", bad_url.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("alerts.sinks[1].url: `htp://x/…` is not an http(s) URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("SECRET"), "{stderr}");

    let missing = dir.path().join("missing-secret.toml");
    std::fs::write(
        &missing,
        "[[alerts.sinks]]\nname = \"a\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\n\
         secret_file = \"/nonexistent/watchdog-hmac.key\"\n",
    )
    .unwrap();
    let (code, _, stderr) = run_watchdog(&["run", "--config", missing.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("alerts.sinks[0].secret_file")
            && stderr.contains("/nonexistent/watchdog-hmac.key"),
        "{stderr}"
    );
    assert!(!stderr.contains("attached"), "{stderr}");
    // `alert test`: configuration errors exit 2.
    let (code, _, stderr) = run_watchdog(&["alert", "test", "--config", missing.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = run_watchdog(&[
        "alert",
        "test",
        "--config",
        bad_url.to_str().unwrap(),
        "--sink",
        "nope",
    ]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn alert_test_reports_per_sink() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let receiver = Receiver::start(listener, vec![], false);
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let dir = TempDir::new("watchdog-alert-test");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[[alerts.sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{a}/h\"\n\
             [[alerts.sinks]]\nname = \"chat\"\ntype = \"slack\"\nurl = \"http://{a}/s\"\n\
             [[alerts.sinks]]\nname = \"down\"\ntype = \"webhook\"\nurl = \"http://{closed_addr}/\"\n\
             max_retries = 1\nbackoff = \"10ms\"\n",
            a = receiver.addr
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (code, stdout, stderr) = run_watchdog(&["alert", "test", "--config", config]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("hook: delivered"), "{stdout}");
    assert!(stdout.contains("chat: delivered"), "{stdout}");
    assert!(
        stdout.contains("down: FAILED") && stdout.contains("2 attempts"),
        "{stdout}"
    );
    let (code, stdout, stderr) =
        run_watchdog(&["alert", "test", "--config", config, "--sink", "hook"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let requests = receiver.requests();
    let hooks: Vec<_> = requests.iter().filter(|r| r.path == "/h").collect();
    assert_eq!(hooks.len(), 2);
    let json = hooks[0].json();
    assert_eq!(json["test"], true);
    assert_eq!(json["alerts"][0]["state"], "test");
    assert!(
        json["alerts"][0]["subject"]
            .as_str()
            .unwrap()
            .starts_with("watchdog alert test from ")
    );
    // The test alert links its own section of the watchdog's runbook, in this repository.
    let runbook = json["alerts"][0]["runbook_url"]
        .as_str()
        .expect("runbook_url");
    assert!(
        runbook.ends_with("/docs/runbooks/watchdog.md#watchdogtest"),
        "{runbook}"
    );
    resolve_repository_url(runbook).unwrap_or_else(|e| panic!("{e}"));
    let slack = requests
        .iter()
        .find(|r| r.path == "/s")
        .expect("slack post");
    let text = slack.json()["text"].as_str().unwrap().to_owned();
    assert!(
        text.starts_with("[TEST] watchdog alert test from "),
        "{text}"
    );
    assert!(
        text.ends_with(&format!("\n    runbook: {runbook}")),
        "{text}"
    );
}

/// A throwaway CA and a server certificate for `localhost` and 127.0.0.1 it signed.
struct TestPki {
    ca_pem: String,
    server_cert: rustls::pki_types::CertificateDer<'static>,
    server_key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl TestPki {
    fn new() -> Self {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "watchdog test CA");
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let server =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap()
                .signed_by(&key, &*ca)
                .unwrap();
        Self {
            ca_pem: ca.pem(),
            server_cert: server.der().clone(),
            server_key: rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }
}

/// An https receiver on 127.0.0.1 (tokio-rustls) answering 200 to every request; counts
/// TLS handshakes that failed (e.g. the client did not trust the certificate).
struct TlsReceiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    failed_handshakes: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsReceiver {
    async fn start(pki: &TestPki) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![pki.server_cert.clone()], pki.server_key.clone_key())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let failed_handshakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = tokio::spawn({
            let got = got.clone();
            let failed_handshakes = failed_handshakes.clone();
            async move {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let acceptor = acceptor.clone();
                    let got = got.clone();
                    let failed_handshakes = failed_handshakes.clone();
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(stream).await else {
                            failed_handshakes.fetch_add(1, Ordering::Relaxed);
                            return;
                        };
                        let Some(request) = read_request_async(&mut tls).await else {
                            return;
                        };
                        got.lock().unwrap().push(request);
                        use tokio::io::AsyncWriteExt as _;
                        let _ = tls
                            .write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                            )
                            .await;
                        let _ = tls.shutdown().await;
                    });
                }
            }
        });
        Self {
            addr,
            got,
            failed_handshakes,
            task,
        }
    }

    fn requests(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    fn failed_handshakes(&self) -> usize {
        self.failed_handshakes.load(Ordering::Relaxed)
    }
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// [`read_request`] for an async stream.
async fn read_request_async<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<Received> {
    use tokio::io::AsyncReadExt as _;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            data.extend_from_slice(&buf[..n]);
            let Some(head_end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
            let mut lines = head.split("\r\n");
            let path = lines.next()?.split(' ').nth(1)?.to_owned();
            let headers: Vec<(String, String)> = lines
                .filter_map(|line| line.split_once(':'))
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .collect();
            let length: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            if data.len() >= head_end + 4 + length {
                return Some(Received {
                    at: Instant::now(),
                    path,
                    headers,
                    body: data[head_end + 4..head_end + 4 + length].to_vec(),
                });
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .ok()
        .flatten()
}

/// Polls `check` every 20 ms (without blocking the runtime) until it returns `Some`.
async fn poll_async<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_sink_trusts_its_ca_file_and_refuses_an_unknown_ca() {
    let pki = TestPki::new();
    let receiver = TlsReceiver::start(&pki).await;
    let port = receiver.addr.port();
    // Accepts TCP, never answers: the TLS handshake itself has to time out.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_receiver = Receiver::start(silent, vec![], true);
    let dir = TempDir::new("watchdog-tls");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let key = dir.path().join("hmac.key");
    std::fs::write(&key, "s3cret-key\n").unwrap();
    let config_text = format!(
        "[[alerts.sinks]]\nname = \"private\"\ntype = \"webhook\"\n\
         url = \"https://localhost:{port}/hook?token=TOKEN123\"\nca_file = \"{ca}\"\n\
         secret_file = \"{key}\"\nmax_retries = 1\nbackoff = \"10ms\"\n\
         [[alerts.sinks]]\nname = \"untrusted\"\ntype = \"webhook\"\n\
         url = \"https://127.0.0.1:{port}/hook?token=TOKEN123\"\n\
         max_retries = 2\nbackoff = \"10ms\"\n",
        ca = ca.display(),
        key = key.display(),
    );

    // In-process: the dispatcher's queue, delivery task and metrics.
    let config =
        watchdog::config::Config::from_text(Path::new("alerts.toml"), &config_text).unwrap();
    let sinks = watchdog::sinks::alerts::resolve(&config.alerts).unwrap();
    let metrics = watchdog::sinks::metrics::Metrics::new();
    let mut alerts = watchdog::sinks::alerts::Alerts::start(
        &config.alerts,
        sinks,
        String::new(),
        "node-tls",
        metrics.alerts.clone(),
    );
    alerts.report(&watchdog::repair::event::RepairEvent::Repair(
        watchdog::repair::event::RepairReport {
            kind: watchdog::findings::Kind::StaleFdb,
            subject: "fdb 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.99".into(),
            action: "bridge fdb replace 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.12".into(),
            outcome: watchdog::repair::event::RepairOutcome::Applied,
            evidence: vec![],
            at: std::time::SystemTime::now(),
        },
    ));
    let scrape = poll_async(
        Duration::from_secs(20),
        "delivery to `private`, failure of `untrusted`",
        || {
            let m = watchdog_tests::Metrics(metrics.encode());
            (m.count(
                "watchdog_alerts_sent_total",
                &[("sink", "private"), ("state", "repair")],
            ) == 1
                && m.count("watchdog_alerts_failed_total", &[("sink", "untrusted")]) == 1)
                .then_some(m)
        },
    )
    .await;
    assert_eq!(
        scrape.series("watchdog_alerts_failed_total", &[("sink", "private")]),
        0
    );
    assert_eq!(
        scrape.series(
            "watchdog_alerts_sent_total",
            &[("sink", "untrusted"), ("state", "repair")]
        ),
        0
    );
    assert!(!scrape.0.contains("TOKEN123"));
    // One request got through (the trusted sink's); the untrusted sink's three attempts
    // (1 + max_retries 2) all ended in the handshake.
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    // The receiver sees a refused handshake end after the client has given up on it: wait
    // for the third (the client's failure count above is already final).
    poll_async(
        Duration::from_secs(20),
        "the receiver saw the untrusted sink's three handshakes fail",
        || (receiver.failed_handshakes() >= 3).then_some(()),
    )
    .await;
    assert_eq!(receiver.failed_handshakes(), 3);
    let request = &requests[0];
    assert_eq!(request.path, "/hook?token=TOKEN123");
    assert_eq!(
        request.header("host"),
        Some(format!("localhost:{port}").as_str())
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    let expected = watchdog::sinks::alerts::webhook::signature(b"s3cret-key", &request.body);
    assert_eq!(
        request.header("x-watchdog-signature"),
        Some(expected.as_str())
    );
    let json = request.json();
    assert_eq!(json["schema"], "watchdog.alert/v1", "{json:#}");
    assert_eq!(json["node"], "node-tls");
    assert_eq!(json["alerts"][0]["state"], "repair");
    assert_eq!(json["alerts"][0]["kind"], "stale_fdb");

    // The binary: `alert test` reports each sink, with why the untrusted one failed; a
    // server that never completes the handshake times out.
    let config_file = dir.path().join("tls.toml");
    std::fs::write(
        &config_file,
        format!(
            "{config_text}[[alerts.sinks]]\nname = \"silent\"\ntype = \"webhook\"\n\
             url = \"https://127.0.0.1:{}/\"\ntimeout = \"300ms\"\nmax_retries = 0\n",
            silent_receiver.addr.port()
        ),
    )
    .unwrap();
    let config_file = config_file.to_str().unwrap().to_owned();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run_watchdog(&["alert", "test", "--config", &config_file])
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("private: delivered"), "{stdout}");
    assert!(
        stdout.contains("untrusted: FAILED")
            && stdout.contains("3 attempts")
            && stdout.contains("invalid peer certificate: UnknownIssuer"),
        "{stdout}"
    );
    assert!(
        stdout.contains("silent: FAILED") && stdout.contains("no answer within 300ms"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("TOKEN123") && !stderr.contains("TOKEN123"),
        "{stdout}{stderr}"
    );
    let tested = receiver.requests();
    assert_eq!(tested.len(), 2);
    assert_eq!(tested[1].json()["test"], true);
    assert_eq!(receiver.failed_handshakes(), 6);
}

#[test]
fn missing_ca_file_is_a_start_up_error() {
    let dir = TempDir::new("watchdog-ca-cfg");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[[alerts.sinks]]\nname = \"a\"\ntype = \"webhook\"\n\
         url = \"https://hooks.example/SECRET\"\nca_file = \"/nonexistent/watchdog-ca.pem\"\n",
    )
    .unwrap();
    let (code, _, stderr) = run_watchdog(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("alerts.sinks[0].ca_file: cannot read /nonexistent/watchdog-ca.pem"),
        "{stderr}"
    );
    assert!(!stderr.contains("SECRET"), "{stderr}");
}

#[test]
fn an_unreachable_sink_is_not_a_finding_about_itself() {
    if !require_root("an_unreachable_sink_is_not_a_finding_about_itself") {
        return;
    }
    let ns = NetNs::new("wd-own-sink");
    // Nothing listens on 7102: every delivery attempt is refused.
    let mut daemon = Daemon::start(
        &ns,
        &format!(
            "{FAST}window = \"2s\"\n[alerts]\nrepeat_interval = \"1s\"\n\
             [[alerts.sinks]]\nname = \"down\"\ntype = \"webhook\"\n\
             url = \"http://127.0.0.1:7102/\"\ntimeout = \"1s\"\nmax_retries = 2\n\
             backoff = \"50ms\"\n"
        ),
    );
    daemon.wait_ready();
    // A real finding to alert on, kept active (its alert repeats every second): connects
    // refused by another port.
    let refuse = || {
        ns.run(|| TcpStream::connect("127.0.0.1:7101").expect_err("nothing listens on 7101"));
    };
    for _ in 0..5 {
        refuse();
    }
    daemon.wait_finding(
        "failing_tcp_destination",
        "127.0.0.1:7101",
        Duration::from_secs(20),
    );
    // The daemon's own attempts to deliver it fail, and the TCP probe sees them.
    let refused = || {
        refuse();
        daemon.metrics().count(
            "watchdog_tcp_connects_total",
            &[
                ("peer", "127.0.0.1"),
                ("port", "7102"),
                ("outcome", "failed"),
            ],
        )
    };
    let first = poll_until(Duration::from_secs(20), "refused deliveries", || {
        let n = refused();
        (n >= 6).then_some(n)
    });
    // Six more refusals: more than min_failed_connects (3) within one window, over more
    // than `confirm` (2) cycles of 250 ms.
    poll_until(Duration::from_secs(20), "more refused deliveries", || {
        (refused() >= first + 6).then_some(())
    });
    let findings = daemon.findings();
    assert!(
        !findings
            .iter()
            .any(|f| f.subject.contains("127.0.0.1:7102")),
        "the daemon raised a finding on its own alert sink: {findings:#?}"
    );
    assert!(daemon.stop().success());
}
