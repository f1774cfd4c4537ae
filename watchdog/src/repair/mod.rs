//! Repair: put the overlay's FDB entries, neighbours and routes back to what the Nodes say
//! (issue 11). `plan` (pure: findings + mirror + desired state → operations, guards and
//! the owned set), `object` (the objects as plain data, their commands), `journal` (every
//! change written before it is made), `execute` (rtnetlink), `engine` (plan → apply →
//! verify → roll back, cycle by cycle), `undo` (which change `repair undo` may revert),
//! and `event` (what the sinks are told).

pub mod daemon;
pub mod engine;
pub mod event;
pub mod execute;
pub mod history;
pub mod journal;
pub mod object;
pub mod oneshot;
pub mod op;
pub mod owned;
pub mod plan;
pub mod recover;
pub mod report;
pub mod undo;
pub mod world;
