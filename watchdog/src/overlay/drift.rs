//! What a comparison finds: one [`Drift`] per object the kernel has otherwise than the
//! Nodes say, with the Node it concerns, what the kernel has and what is expected.

use std::net::IpAddr;

use super::RemoteObjects;
use crate::model::{
    desired::{Mac, Node},
    net::Object,
};

/// How this node's own VXLAN device differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceDrift {
    /// No link has the cluster's VNI.
    Missing,
    /// Administratively down.
    Down,
    /// Its MAC is not this node's VtepMAC (`None`: it has none).
    Mac(Option<Mac>),
    /// Its local address is not this node's `public-ip` (`None`: it has none).
    Local(Option<IpAddr>),
}

/// Who an object no Node accounts for belonged to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A Node that left the desired state while this process watched (Flannel removes a
    /// Node's objects only when its own watch sees the deletion).
    Departed(Node),
    /// An FDB entry for a MAC no Node has, towards a member's `public-ip`: the entry for
    /// its old VTEP MAC (a restarted flanneld writes a new one and never removes the old).
    OldVtepOf(String),
    /// Nobody known.
    Nobody,
}

impl Owner {
    /// The Node's name, if one is known.
    pub fn node(&self) -> Option<&str> {
        match self {
            Owner::Departed(node) => Some(&node.name),
            Owner::OldVtepOf(name) => Some(name),
            Owner::Nobody => None,
        }
    }
}

/// What a drift is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum About {
    /// This node's VXLAN device.
    Device(DeviceDrift),
    /// One of a member's objects: missing (no `kernel`) or different.
    Member(RemoteObjects),
    /// An object on the device that no Node accounts for (no `expected`).
    Leftover(Owner),
}

/// One object the kernel has otherwise than the Nodes say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    /// The object in `ip`/`bridge` terms, as a finding names it
    /// (`fdb 02:fa:… dev flannel.1 dst 10.67.0.5`, `route … missing`): the drift's
    /// identity from one comparison to the next.
    pub subject: String,
    /// The Node it concerns: this node for its device, the member, the owner of a
    /// leftover (`None`: nobody known).
    pub node: Option<String>,
    /// What it is about, with what the wording needs.
    pub about: About,
    /// What the kernel has (`None`: nothing; always `None` for the device).
    pub kernel: Option<Object>,
    /// What the Nodes say it must be (`None`: nothing; always `None` for the device).
    pub expected: Option<Object>,
}

impl Drift {
    /// True for an object no Node accounts for.
    pub fn is_leftover(&self) -> bool {
        matches!(self.about, About::Leftover(_))
    }
}
