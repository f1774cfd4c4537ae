//! The Flannel overlay, compared once: what the Nodes say this node must have (its VXLAN
//! device, and per other member the FDB entry, neighbour and route flanneld programs:
//! [`expected`]), which link is that device ([`vxlan_device`], the one rule), and how the
//! kernel differs ([`compare`] → a [`Comparison`] of [`Drift`]s, objects no Node accounts
//! for included, and the [`Doubt`]s the Nodes raise about themselves). [`Memory`] keeps
//! since when each drift is seen and the Nodes that left.
//!
//! Pure: `model` data in, plain data out; no kernel, no clock but the one handed in.
//! `detect` turns a drift that lasted `desired.grace` into an `overlay_drift` finding (its
//! wording); `repair` turns the same drift into operations (its guards, order and
//! history). Both read one [`Observed`] comparison, so they cannot disagree.

mod compare;
mod device;
mod drift;
mod expected;
mod memory;
mod sanity;

#[cfg(test)]
pub(crate) mod fixture;
#[cfg(test)]
mod tests;

pub use self::{
    compare::{Comparison, compare, fdb_entry, subnet_route},
    device::vxlan_device,
    drift::{About, DeviceDrift, Drift, Owner},
    expected::{Expected, LocalObjects, RemoteObjects, expected, flannel_route},
    memory::{Departed, Memory, Observed},
    sanity::{Doubt, doubts},
};
