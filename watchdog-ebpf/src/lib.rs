//! Empty library target: lets `watchdog` list this crate as a build-dependency so cargo
//! rebuilds the embedded eBPF object when these sources change.
#![no_std]
