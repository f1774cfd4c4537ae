//! Kernel helpers: BTF, tracefs, capabilities, /proc.

pub mod btf;
pub mod caps;
pub mod procfs;
pub mod tracefs;
