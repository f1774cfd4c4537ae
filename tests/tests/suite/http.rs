//! The HTTP server under a connection flood: a cap, timeouts, bounded memory.

use std::{
    io::Read as _,
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use watchdog_tests::{Daemon, NetNs, poll_until, require_root, run_in};

/// No probes: the server alone is under test.
const NO_PROBES: &str = "[probes]\nkfree_skb = false\npeers = false\ntcp = false\n";

/// Opens `count` TCP connections to the daemon (inside its namespace) that send nothing.
fn idle_connections(ns: &NetNs, count: usize) -> Vec<TcpStream> {
    let addr: SocketAddr = "127.0.0.1:9477".parse().unwrap();
    run_in(&ns.path(), || {
        (0..count)
            .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect"))
            .collect()
    })
}

fn metric(daemon: &Daemon, name: &str) -> Option<f64> {
    let (status, body) = daemon.get("/metrics")?;
    (status == 200).then(|| watchdog_tests::Metrics(body).value(name, &[]))?
}

#[test]
fn a_flood_of_idle_connections_is_capped_timed_out_and_its_memory_returned() {
    if !require_root("a_flood_of_idle_connections_is_capped_timed_out_and_its_memory_returned") {
        return;
    }
    let ns = NetNs::new("wd-http");
    let config = format!(
        "{NO_PROBES}[http]\nmax_connections = 32\nheader_timeout = \"2s\"\nidle_timeout = \"30s\"\n"
    );
    let mut daemon = Daemon::start(&ns, &config);
    daemon.wait_serving();

    let flood = idle_connections(&ns, 2000);
    // The 32 held ones time out after 2 s; every other one was closed at once, so the
    // server still answers (within the 2 s header timeout of the slots it holds; the
    // deadline only allows for a busy machine). Its memory meanwhile is a bench figure.
    poll_until(Duration::from_secs(30), "/metrics during the flood", || {
        metric(&daemon, "watchdog_http_connections_rejected_total")
    });
    // Every flood connection was either refused on accept or held and then timed out
    // (a slot freed by a timeout takes a later one while the flood is still opening).
    let (status, body) = daemon.get("/metrics").expect("scrape");
    assert_eq!(status, 200);
    let metrics = watchdog_tests::Metrics(body);
    let rejected = metrics
        .value("watchdog_http_connections_rejected_total", &[])
        .unwrap();
    let timed_out = metrics
        .value(
            "watchdog_http_connections_timed_out_total",
            &[("timeout", "header")],
        )
        .unwrap();
    assert!(rejected >= 1000.0, "rejected {rejected}");
    assert!(
        rejected + timed_out >= 2000.0 - 32.0,
        "rejected {rejected}, timed out {timed_out}"
    );
    drop(flood);
    // Only the scrape itself is open.
    poll_until(Duration::from_secs(10), "connections back to 1", || {
        (metric(&daemon, "watchdog_http_connections")? <= 1.0).then_some(())
    });
    assert!(daemon.try_exit().is_none(), "{}", daemon.log());
}

#[test]
fn a_slow_header_is_closed_by_the_server_within_the_timeout() {
    if !require_root("a_slow_header_is_closed_by_the_server_within_the_timeout") {
        return;
    }
    let ns = NetNs::new("wd-slowhdr");
    let config = format!("{NO_PROBES}[http]\nheader_timeout = \"1s\"\nidle_timeout = \"30s\"\n");
    let mut daemon = Daemon::start(&ns, &config);
    daemon.wait_serving();
    let mut slow = idle_connections(&ns, 1).remove(0);
    let opened = Instant::now();
    // Slowloris: a request line, then one header byte at a time, never the blank line.
    use std::io::Write as _;
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 512];
    // A server that restarted the timeout on every byte would never close it: the deadline
    // is many timeouts long, for a busy machine; when it closes is a bench figure.
    let closed = loop {
        assert!(
            opened.elapsed() < Duration::from_secs(30),
            "still open after 30 s with header_timeout = 1s"
        );
        match slow.read(&mut buf) {
            Ok(_) => break opened.elapsed(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break opened.elapsed(),
            Err(_) => {
                // Timed out reading: trickle another byte (the peer may have closed).
                let _ = slow.write_all(b"X");
            }
        }
    };
    assert!(
        closed >= Duration::from_millis(900),
        "closed after {closed:?}"
    );
    let timed_out = poll_until(
        Duration::from_secs(30),
        "the header timeout counted",
        || {
            let (_, body) = daemon.get("/metrics")?;
            watchdog_tests::Metrics(body)
                .value(
                    "watchdog_http_connections_timed_out_total",
                    &[("timeout", "header")],
                )
                .filter(|n| *n >= 1.0)
        },
    );
    assert_eq!(timed_out, 1.0);
    assert!(daemon.try_exit().is_none(), "{}", daemon.log());
}

/// Liveness on its own listener (`health_listen`, the DaemonSet's probes): with every
/// slot of the API's listener held by silent connections, and more silent connections
/// on the health listener than it keeps, each probe is still answered.
#[test]
fn a_flood_of_idle_connections_never_fails_liveness() {
    if !require_root("a_flood_of_idle_connections_never_fails_liveness") {
        return;
    }
    let ns = NetNs::new("wd-health");
    let config = format!(
        "health_listen = \"127.0.0.1:9478\"\n{NO_PROBES}[http]\nmax_connections = 8\n\
         header_timeout = \"60s\"\nidle_timeout = \"60s\"\n"
    );
    let mut daemon = Daemon::start(&ns, &config);
    daemon.wait_serving();
    let health: SocketAddr = "127.0.0.1:9478".parse().unwrap();
    let _held = idle_connections(&ns, 100);
    let _held_too: Vec<TcpStream> = run_in(&ns.path(), || {
        (0..100)
            .map(|_| TcpStream::connect_timeout(&health, Duration::from_secs(5)).expect("connect"))
            .collect()
    });
    for _ in 0..5 {
        let answer = run_in(&ns.path(), || watchdog_tests::http_get(health, "/healthz"));
        assert_eq!(answer, Some((200, "ok\n".to_owned())), "{}", daemon.log());
    }
    // Only health there.
    let answer = run_in(&ns.path(), || {
        watchdog_tests::http_get(health, "/api/v1/findings")
    });
    assert_eq!(answer.map(|(status, _)| status), Some(404));
    assert!(daemon.try_exit().is_none(), "{}", daemon.log());
}

/// A CA, a server certificate for 127.0.0.1 it signed, a client certificate it signed
/// and one a stranger CA signed: PEM files in `dir`.
struct MtlsFiles {
    ca: std::path::PathBuf,
    server_cert: std::path::PathBuf,
    server_key: std::path::PathBuf,
    client_cert: std::path::PathBuf,
    client_key: std::path::PathBuf,
    stranger_cert: std::path::PathBuf,
    stranger_key: std::path::PathBuf,
}

fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, name);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// A leaf certificate `ca` signed, for `names`, with `usage`; (certificate, key) PEM.
fn leaf(
    ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    names: &[&str],
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, &**ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl MtlsFiles {
    fn write(dir: &std::path::Path) -> Self {
        let ours = ca("watchdog scrape CA");
        let stranger = ca("some other CA");
        let (server_cert, server_key) = leaf(
            &ours,
            &["127.0.0.1", "localhost"],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            &ours,
            &["prometheus"],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        );
        let (stranger_cert, stranger_key) = leaf(
            &stranger,
            &["prometheus"],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        );
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Self {
            ca: file("ca.pem", &ours.pem()),
            server_cert: file("server.pem", &server_cert),
            server_key: file("server-key.pem", &server_key),
            client_cert: file("client.pem", &client_cert),
            client_key: file("client-key.pem", &client_key),
            stranger_cert: file("stranger.pem", &stranger_cert),
            stranger_key: file("stranger-key.pem", &stranger_key),
        }
    }
}

/// GET `path` over TLS from 127.0.0.1:9477 in `ns`, trusting `ca`, presenting `client`
/// (certificate, key files) if any: the status and body, or why no answer came.
fn tls_get(
    ns: &NetNs,
    ca: &std::path::Path,
    client: Option<(&std::path::Path, &std::path::Path)>,
    path: &str,
) -> Result<(u16, String), String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    use std::io::Write as _;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(cert).unwrap()],
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let server_name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), server_name).unwrap();
    let addr: SocketAddr = "127.0.0.1:9477".parse().unwrap();
    let stream = run_in(&ns.path(), || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(5))
    })
    .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, stream);
    write!(tls, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).map_err(|e| e.to_string())?;
    let response = String::from_utf8_lossy(&response);
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {response:?}"))?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    Ok((status, body.unwrap_or_default()))
}

#[test]
fn with_a_client_ca_only_clients_it_signed_are_answered_and_prometheus_scrapes_over_mtls() {
    if !require_root(
        "with_a_client_ca_only_clients_it_signed_are_answered_and_prometheus_scrapes_over_mtls",
    ) {
        return;
    }
    let dir = watchdog_tests::TempDir::new("watchdog-mtls");
    let pki = MtlsFiles::write(dir.path());
    let ns = NetNs::new("wd-mtls");
    // Health stays plain HTTP on its own listener (the kubelet's probes).
    let config = format!(
        "health_listen = \"127.0.0.1:9478\"\n{NO_PROBES}[http]\ntls_cert_file = {:?}\n\
         tls_key_file = {:?}\nclient_ca_file = {:?}\n",
        pki.server_cert, pki.server_key, pki.ca
    );
    let mut daemon = Daemon::start(&ns, &config);
    let health: SocketAddr = "127.0.0.1:9478".parse().unwrap();
    poll_until(Duration::from_secs(30), "the health listener", || {
        assert!(daemon.try_exit().is_none(), "{}", daemon.log());
        run_in(&ns.path(), || watchdog_tests::http_get(health, "/healthz"))
    });

    // A good certificate: /metrics.
    let (status, body) = tls_get(
        &ns,
        &pki.ca,
        Some((&pki.client_cert, &pki.client_key)),
        "/metrics",
    )
    .expect("an answer with the CA's client certificate");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("watchdog_build_info"), "{body}");
    // No certificate, a stranger's certificate, plain HTTP: no answer at all.
    let none = tls_get(&ns, &pki.ca, None, "/metrics");
    assert!(none.is_err(), "answered without a certificate: {none:?}");
    let stranger = tls_get(
        &ns,
        &pki.ca,
        Some((&pki.stranger_cert, &pki.stranger_key)),
        "/api/v1/findings",
    );
    assert!(
        stranger.is_err(),
        "answered a stranger's certificate: {stranger:?}"
    );
    assert_eq!(daemon.get("/metrics"), None, "answered plain HTTP");

    // A real Prometheus: the job with the client certificate is up, the one without is
    // down, and the daemon counted the refusals.
    let prometheus = watchdog_tests::prometheus::Prometheus::start(
        &ns,
        &format!(
            "global:\n  scrape_interval: 1s\n\
             scrape_configs:\n\
             \x20 - job_name: mtls\n    scheme: https\n\
             \x20   tls_config: {{ca_file: {ca:?}, cert_file: {cert:?}, key_file: {key:?}}}\n\
             \x20   static_configs: [{{targets: ['127.0.0.1:9477']}}]\n\
             \x20 - job_name: nocert\n    scheme: https\n\
             \x20   tls_config: {{ca_file: {ca:?}}}\n\
             \x20   static_configs: [{{targets: ['127.0.0.1:9477']}}]\n",
            ca = pki.ca,
            cert = pki.client_cert,
            key = pki.client_key,
        ),
        &[],
    );
    prometheus.wait_scraped("mtls");
    let refused = poll_until(
        Duration::from_secs(30),
        "Prometheus to see the daemon's refusals",
        || {
            let nocert = prometheus.query("up{job=\"nocert\"}")?;
            if nocert.first()?["value"][1] != "0" {
                return None;
            }
            let failed =
                prometheus.query("watchdog_http_tls_handshakes_failed_total{job=\"mtls\"}")?;
            let failed: f64 = failed.first()?["value"][1].as_str()?.parse().ok()?;
            (failed >= 3.0).then_some(failed)
        },
    );
    assert!(refused >= 3.0);
    drop(prometheus);
    assert!(daemon.try_exit().is_none(), "{}", daemon.log());
}

#[test]
fn a_bad_tls_file_stops_the_daemon_with_the_key_and_the_file_named() {
    if !require_root("a_bad_tls_file_stops_the_daemon_with_the_key_and_the_file_named") {
        return;
    }
    let dir = watchdog_tests::TempDir::new("watchdog-badtls");
    let pki = MtlsFiles::write(dir.path());
    let not_pem = dir.path().join("ca-garbage.pem");
    std::fs::write(&not_pem, "this is not PEM\n").unwrap();
    let missing = dir.path().join("missing-key.pem");
    let ns = NetNs::new("wd-badtls");
    for (cert, key, ca, named) in [
        (
            &pki.server_cert,
            &missing,
            &pki.ca,
            ("http.tls_key_file", &missing),
        ),
        (
            &pki.server_cert,
            &pki.server_key,
            &not_pem,
            ("http.client_ca_file", &not_pem),
        ),
    ] {
        let config = format!(
            "{NO_PROBES}[http]\ntls_cert_file = {cert:?}\ntls_key_file = {key:?}\n\
             client_ca_file = {ca:?}\n"
        );
        let mut daemon = Daemon::start(&ns, &config);
        let status = poll_until(Duration::from_secs(30), "the daemon to exit", || {
            daemon.try_exit()
        });
        assert!(!status.success());
        let log = daemon.log();
        let expected = format!("{} = {:?}", named.0, named.1);
        assert!(log.contains(&expected), "{expected} not in:\n{log}");
    }
}
