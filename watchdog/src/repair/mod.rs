//! Repair: put the overlay's FDB entries, neighbours and routes back to what the Nodes
//! say, for the drifts of the overlay's comparison that lasted `desired.grace`. `plan`
//! (pure: drifts + mirror → operations, within `owned` and the guards, with each object's
//! `history`), `op` (an operation and its inverse), `object` (model objects with their
//! devices' names; the journal's JSON), `journal` (every change written before it is
//! made), `execute` (rtnetlink: apply, verify, roll back), `recover` (a crash's open
//! changes), `report` (how each went), `world` (the kernel and the evidence, as the
//! executor sees them), `engine` (plan → apply → verify → roll back, cycle by cycle),
//! `daemon` (the engine and the executor task in `watchdog run`), `oneshot` (`repair
//! plan|apply`), `undo` (`repair undo`), and `event` (what the sinks are told).

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
