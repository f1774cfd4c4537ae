//! Interface addresses (RTM_NEWADDR).

use super::Prefix;

/// An interface address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// The interface it is on.
    pub ifindex: u32,
    /// The address with its prefix length (e.g. 10.0.0.1/24, host bits kept).
    pub prefix: Prefix,
}
