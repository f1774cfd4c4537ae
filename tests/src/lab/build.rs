//! Building the lab: namespaces, veths, the underlay bridge, `flannel.1`, `cni0`, routes,
//! neighbours, FDB entries, and each pod's responder.

use std::{
    net::{TcpListener, UdpSocket},
    sync::atomic::Ordering,
    time::Duration,
};

use super::{
    ECHO_PORT, Lab, MAX_NODES, MIN_NODES, Node, OVERLAY_MTU, TCP_PORT, VXLAN_DEV, VXLAN_PORT,
    gateway_ip,
    netns::{Background, batch, write_sysctl},
    overlay_ip, pod_cidr, pod_ip, underlay_ip, vtep_mac,
};
use crate::NetNs;

impl Lab {
    /// Builds a lab of `nodes` nodes (2..=6), all pods reachable from each other.
    ///
    /// Panics (after tearing down what it built) if a step fails.
    pub fn new(nodes: usize) -> Self {
        assert!(
            (MIN_NODES..=MAX_NODES).contains(&nodes),
            "a lab has {MIN_NODES}..={MAX_NODES} nodes, not {nodes}"
        );
        let underlay = NetNs::new("wdl-ul");
        batch(
            "ip",
            Some(&underlay),
            &[
                "link add br-ul type bridge".into(),
                "link set br-ul up".into(),
            ],
        );

        // Namespaces first, so a failure below drops them all.
        let mut namespaces = Vec::with_capacity(nodes);
        for i in 0..nodes {
            let ns = NetNs::new(&format!("wdl-n{i}"));
            let pod = NetNs::new(&format!("wdl-p{i}"));
            ns.run(|| {
                write_sysctl("net/ipv4/ip_forward", "1");
                write_sysctl("net/ipv4/conf/all/rp_filter", "0");
                write_sysctl("net/ipv4/conf/default/rp_filter", "0");
                // IPv6 router and neighbour solicitations would only add noise.
                write_sysctl("net/ipv6/conf/default/disable_ipv6", "1");
            });
            pod.run(|| write_sysctl("net/ipv6/conf/default/disable_ipv6", "1"));
            namespaces.push((ns, pod));
        }

        // Both veth pairs of every node, created directly in their namespaces.
        let mut root = Vec::new();
        for (i, (ns, pod)) in namespaces.iter().enumerate() {
            root.push(format!(
                "link add name eth0 netns {} type veth peer name n{i} netns {}",
                ns.name(),
                underlay.name()
            ));
            root.push(format!(
                "link add name veth0 netns {} type veth peer name eth0 netns {}",
                ns.name(),
                pod.name()
            ));
        }
        batch("ip", None, &root);
        let ports: Vec<String> = (0..nodes)
            .flat_map(|i| {
                [
                    format!("link set n{i} master br-ul"),
                    format!("link set n{i} up"),
                ]
            })
            .collect();
        batch("ip", Some(&underlay), &ports);

        let mut built = Vec::with_capacity(nodes);
        for (i, (ns, pod)) in namespaces.into_iter().enumerate() {
            let remotes: Vec<usize> = (0..nodes).filter(|&j| j != i).collect();
            let mut commands = vec![
                "link set eth0 up".to_owned(),
                format!("addr add {}/24 dev eth0", underlay_ip(i)),
                format!(
                    "link add {VXLAN_DEV} type vxlan id 1 local {} dev eth0 dstport {VXLAN_PORT} nolearning",
                    underlay_ip(i)
                ),
                format!(
                    "link set {VXLAN_DEV} address {} mtu {OVERLAY_MTU}",
                    vtep_mac(i)
                ),
                format!("addr add {}/32 dev {VXLAN_DEV}", overlay_ip(i)),
                format!("link set {VXLAN_DEV} up"),
                "link add cni0 type bridge".to_owned(),
                format!("link set veth0 mtu {OVERLAY_MTU} master cni0 up"),
                format!("addr add {}/24 dev cni0", gateway_ip(i)),
                format!("link set cni0 mtu {OVERLAY_MTU} up"),
            ];
            for &j in &remotes {
                commands.push(format!(
                    "neigh replace {} lladdr {} dev {VXLAN_DEV} nud permanent",
                    overlay_ip(j),
                    vtep_mac(j)
                ));
                commands.push(format!(
                    "route replace {} via {} dev {VXLAN_DEV} onlink",
                    pod_cidr(j),
                    overlay_ip(j)
                ));
            }
            batch("ip", Some(&ns), &commands);
            let fdb: Vec<String> = remotes
                .iter()
                .map(|&j| {
                    format!(
                        "fdb append {} dev {VXLAN_DEV} dst {}",
                        vtep_mac(j),
                        underlay_ip(j)
                    )
                })
                .collect();
            batch("bridge", Some(&ns), &fdb);
            batch(
                "ip",
                Some(&pod),
                &[
                    format!("link set eth0 mtu {OVERLAY_MTU} up"),
                    format!("addr add {}/24 dev eth0", pod_ip(i)),
                    format!("route add default via {}", gateway_ip(i)),
                ],
            );
            let responder = responder(&pod, i);
            built.push(Some(Node {
                index: i,
                responder,
                pod,
                ns,
            }));
        }
        Self {
            nodes: built,
            underlay,
        }
    }
}

/// The pod's responder: UDP echo on [`ECHO_PORT`], TCP accept-and-close on [`TCP_PORT`].
fn responder(pod: &NetNs, index: usize) -> Background {
    Background::spawn(
        pod,
        format!("the responder of pod {index}"),
        || {
            let udp = UdpSocket::bind(("0.0.0.0", ECHO_PORT))?;
            udp.set_read_timeout(Some(Duration::from_millis(50)))?;
            let tcp = TcpListener::bind(("0.0.0.0", TCP_PORT))?;
            tcp.set_nonblocking(true)?;
            Ok((udp, tcp))
        },
        |(udp, tcp), stop| {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((len, peer)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(&buf[..len], peer);
                }
                while let Ok((connection, _)) = tcp.accept() {
                    drop(connection);
                }
            }
        },
    )
}
