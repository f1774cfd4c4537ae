//! Repair: planning and executing fixes for findings (issue 11). For now only the event
//! types the executor will report, so sinks depend on repair and never the other way.

pub mod event;
