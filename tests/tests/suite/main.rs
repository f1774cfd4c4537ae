//! The integration suite: every test of the lab, the daemon binary, the deploy files and
//! the docs, in one test binary (one link of the daemon's library instead of one per file).
//! A module per area; run one with its path as the filter, e.g.
//! `cargo test -p watchdog-tests --test suite -- drops::`.

mod alerts;
mod causes;
mod check;
mod cli;
mod dashboard;
mod deploy;
mod desired;
mod docs;
mod drops;
mod http;
mod image;
mod kernels;
mod lab;
mod mirror;
mod mtu;
mod overlay;
mod peers;
mod pods;
mod repair;
mod scenarios;
mod soak;
mod tcp;
