//! Runbook links: the page of `docs/runbooks/` each finding and each alert points at,
//! under `alerts.runbook_base_url` ([`crate::config::AlertsConfig::runbook_base`]).
//!
//! - a finding (firing, resolved; `watchdog check`): `<kind>.md`;
//! - a repair or rollback: the kind's `Fix` section, `<kind>.md#fix`;
//! - a test alert: `watchdog.md#watchdogtest`.

use crate::findings::Kind;

/// The page of a test alert (`watchdog alert test`).
pub const TEST_PAGE: &str = "watchdog.md#watchdogtest";

/// The runbook of a finding kind: `<base><kind>.md`.
pub fn finding(base: &str, kind: Kind) -> String {
    format!("{base}{}.md", kind.as_str())
}

/// The page for what an alert is about, by its state's name (`firing`, `resolved`, `test`,
/// `repair`, `rollback`) and kind (a finding kind's name, or `test`).
pub fn page(state: &str, kind: &str) -> String {
    match state {
        "test" => TEST_PAGE.to_owned(),
        "repair" | "rollback" => format!("{kind}.md#fix"),
        _ => format!("{kind}.md"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages() {
        assert_eq!(
            finding("https://x/docs/runbooks/", Kind::StaleFdb),
            "https://x/docs/runbooks/stale_fdb.md"
        );
        assert_eq!(page("firing", "stale_fdb"), "stale_fdb.md");
        assert_eq!(page("resolved", "ghost_gateway"), "ghost_gateway.md");
        assert_eq!(page("repair", "stale_fdb"), "stale_fdb.md#fix");
        assert_eq!(page("rollback", "stale_fdb"), "stale_fdb.md#fix");
        assert_eq!(page("test", "test"), "watchdog.md#watchdogtest");
    }
}
