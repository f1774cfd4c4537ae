//! The TC peer probe counts traffic per remote address exactly, and follows new interfaces.

use std::{net::UdpSocket, time::Duration};

use watchdog_tests::{Daemon, NetNs, ip, poll_until, require_root};

const PACKETS: &str = "watchdog_peer_packets_total";
const BYTES: &str = "watchdog_peer_bytes_total";

#[test]
fn counts_packets_and_bytes_per_peer_and_picks_up_new_interfaces() {
    if !require_root("counts_packets_and_bytes_per_peer_and_picks_up_new_interfaces") {
        return;
    }
    let node = NetNs::new("wd-peer");
    let remote = NetNs::new("wd-peer-remote");
    node.veth_to(&remote, ("wd0", "10.77.0.1/24"), ("wd1", "10.77.0.2/24"));

    let mut daemon = Daemon::start(&node, "[peers]\ninterfaces = [\"wd0\", \"wd9\"]\n");
    daemon.wait_ready();
    // A UDP echo in the remote namespace answers each datagram once.
    let echo: UdpSocket = remote.run(|| UdpSocket::bind("10.77.0.2:7000").unwrap());
    echo.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let responder = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        for _ in 0..25 {
            let (len, from) = echo.recv_from(&mut buf).expect("echo receive");
            echo.send_to(&buf[..len], from).expect("echo send");
        }
    });
    node.run(|| {
        let socket = UdpSocket::bind("10.77.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 256];
        for _ in 0..25 {
            socket.send_to(&[0u8; 100], "10.77.0.2:7000").unwrap();
            socket.recv_from(&mut buf).expect("echo reply");
        }
    });
    responder.join().unwrap();

    let peer = [("interface", "wd0"), ("peer", "10.77.0.2")];
    let tx = [peer[0], peer[1], ("direction", "tx")];
    let rx = [peer[0], peer[1], ("direction", "rx")];
    let metrics = poll_until(Duration::from_secs(10), "25 packets each way", || {
        let metrics = daemon.metrics();
        (metrics.count(PACKETS, &tx) >= 25 && metrics.count(PACKETS, &rx) >= 25).then_some(metrics)
    });
    assert_eq!(metrics.count(PACKETS, &tx), 25, "{}", metrics.0);
    assert_eq!(metrics.count(PACKETS, &rx), 25, "{}", metrics.0);
    // 100 bytes of payload + 8 UDP + 20 IPv4 + 14 Ethernet, as TC sees the frame.
    assert_eq!(metrics.count(BYTES, &tx), 25 * 142, "{}", metrics.0);
    assert_eq!(metrics.count(BYTES, &rx), 25 * 142, "{}", metrics.0);

    // An interface named in the config that appears later is attached without a restart.
    ip(&[
        "-n",
        node.name(),
        "link",
        "add",
        "wd9",
        "type",
        "veth",
        "peer",
        "name",
        "wd9p",
    ]);
    poll_until(
        Duration::from_secs(10),
        "the probe on the new interface",
        || {
            daemon
                .log()
                .contains("peer traffic probe attached interface=wd9")
                .then_some(())
        },
    );
    let metrics = daemon.metrics();
    assert_eq!(
        metrics.value("watchdog_probe_up", &[("probe", "peers")]),
        Some(1.0)
    );
    assert!(daemon.stop().success());
}
