//! The daemon's own keys: the HTTP server's limits, the per-peer probe, which namespaces
//! are reported, the probe switches.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

/// How many connections the HTTP server holds and for how long, and whether it speaks TLS.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// From a connection's opening (or its previous answer) to a request's last header;
    /// closes idle keep-alive connections too.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Without a byte read or written (a client that stops reading an answer).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// From accept to close, however busy.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// The server's certificate chain (PEM); empty: plain HTTP on `listen`.
    pub tls_cert_file: PathBuf,
    /// The server's private key (PEM); set with `tls_cert_file`.
    pub tls_key_file: PathBuf,
    /// CA certificates (PEM): only clients presenting a certificate one of them signed are
    /// answered (mutual TLS); needs `tls_cert_file`. Empty: any client.
    pub client_ca_file: PathBuf,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_lifetime: Duration::from_secs(300),
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            client_ca_file: PathBuf::new(),
        }
    }
}

/// Settings of the per-peer traffic probe (TC programs).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PeersConfig {
    /// Interfaces to watch; empty: every non-loopback interface of the daemon's namespace,
    /// including ones that appear later.
    pub interfaces: Vec<String>,
    /// UDP ports whose traffic is WireGuard (the peer is then the tunnel endpoint). At most
    /// `watchdog_common::MAX_WIREGUARD_PORTS` (4).
    pub wireguard_ports: Vec<u16>,
    /// How many peers `/metrics` shows (the busiest by packets sent).
    pub top_n: usize,
}

impl Default for PeersConfig {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            wireguard_ports: vec![51820, 41641],
            top_n: 20,
        }
    }
}

/// Which network namespaces' drops and TCP connects are reported.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Namespaces {
    /// Only the daemon's own network namespace (filtered in the kernel).
    Own,
    /// The daemon's own plus the namespaces at the other end of its veth interfaces: on a
    /// Kubernetes node the pods' (their host-side veths), in a lab of several "nodes" on
    /// one kernel only this node's.
    Node,
    /// Every namespace on the kernel.
    All,
}

impl Namespaces {
    /// The lowercase name used in the config and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Namespaces::Own => "own",
            Namespaces::Node => "node",
            Namespaces::All => "all",
        }
    }
}

/// Probe switches.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Probes {
    /// `skb:kfree_skb` drop counting.
    pub kfree_skb: bool,
    /// TC per-peer traffic counting.
    pub peers: bool,
    /// TCP connect outcomes per destination.
    pub tcp: bool,
    /// Read what explains netfilter, reverse-path and checksum drops of this node's traffic
    /// (the nftables ruleset over netlink, `rp_filter` sysctls, devices' offload features),
    /// while such drops are seen.
    pub explain_drops: bool,
}

impl Default for Probes {
    fn default() -> Self {
        Self {
            kfree_skb: true,
            peers: true,
            tcp: true,
            explain_drops: true,
        }
    }
}
