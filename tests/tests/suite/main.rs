//! The integration suite: every test of the lab, the daemon binary, the deploy files and
//! the docs, in one test binary (one link of the daemon's library instead of one per file).
//! A module per area; run one with its path as the filter, e.g.
//! `cargo test --workspace --test suite -- drops::`.
//!
//! The tests run in parallel: a lab test's namespaces are its own, and its daemon counts
//! only its own namespace. A test whose daemon counts every namespace starts with
//! `watchdog_tests::isolation::alone()` and runs with no other lab test. A test that cannot
//! run says why through `watchdog_tests::skip`, which fails under CI (`meta` checks that).

mod alerts;
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
mod meta;
mod mirror;
mod mtu;
mod overlay;
mod peers;
mod pods;
mod repair;
mod scenarios;
mod soak;
mod tcp;
