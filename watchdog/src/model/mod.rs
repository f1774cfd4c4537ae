//! Plain data shared between the stages: the network model the mirror keeps, the kernel
//! counter readings, active probe requests and results, the kernel's filtering and offload
//! configuration, the sources' status. Imports
//! nothing else of the crate and no kernel, netlink or async types, so every stage can use
//! it and tests can build it by hand.

pub mod counters;
pub mod desired;
pub mod endpoints;
pub mod net;
pub mod pods;
pub mod probe;
pub mod reach;
pub mod stack;
pub mod status;
