//! Plain data shared between the stages. Imports nothing else of the crate.

pub mod net;
