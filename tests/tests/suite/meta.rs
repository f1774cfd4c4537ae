//! The suite's own promise: under CI (`CI` set) a test that cannot run fails; elsewhere it
//! says `SKIPPED` and passes. Each case runs one test of this binary again in a child
//! process, with the condition that makes it skip, once with `CI` and once without.

use std::{
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    process::Command,
    time::Duration,
};

use watchdog_tests::{TempDir, poll_until};

/// `nobody`: a user that is not root.
const NOBODY: u32 = 65534;

/// Runs this binary's test `name` alone, with `env` set, `CI` set or not, as `uid`;
/// returns whether it passed, and its output.
fn run_one(name: &str, ci: bool, env: &[(&str, &str)], uid: Option<u32>) -> (bool, String) {
    // A copy every user may run (the checkout may sit under a directory only root enters).
    let dir = TempDir::new("wd-meta");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.path().join("suite");
    std::fs::copy(std::env::current_exe().expect("the suite's path"), &binary).unwrap();
    let mut command = Command::new(&binary);
    command
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env_remove("CI")
        .env_remove("WATCHDOG_SKIP_KERNELS")
        .env_remove("WATCHDOG_SKIP_IMAGE")
        .envs(env.iter().copied())
        .current_dir(dir.path());
    if ci {
        command.env("CI", "true");
    }
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    // Another test's child may still hold the copy's write descriptor between its fork
    // and exec (ETXTBSY): try again.
    let output = poll_until(
        Duration::from_secs(10),
        "the copy to be executable",
        || match command.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => None,
            other => Some(other.expect("run the suite binary")),
        },
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("running 1 test"),
        "{name} is not a test of this binary:\n{text}"
    );
    (output.status.success(), text)
}

/// `name` skipped for `why` (found in its output): fails under CI, passes with `SKIPPED`
/// elsewhere.
fn skips_loudly(name: &str, env: &[(&str, &str)], uid: Option<u32>, why: &str) {
    let (passed, text) = run_one(name, true, env, uid);
    assert!(!passed, "{name} passed under CI without running:\n{text}");
    assert!(text.contains(why) && text.contains("CI is set"), "{text}");
    let (passed, text) = run_one(name, false, env, uid);
    assert!(passed, "{name} failed outside CI:\n{text}");
    let function = name.rsplit("::").next().unwrap();
    assert!(
        text.contains(&format!("SKIPPED {function}: {why}")),
        "{text}"
    );
}

#[test]
fn the_kernel_matrix_skipped_fails_under_ci() {
    skips_loudly(
        "kernels::daemon_works_on_debian_kernels_booted_under_qemu",
        &[("WATCHDOG_SKIP_KERNELS", "1")],
        None,
        "WATCHDOG_SKIP_KERNELS is set",
    );
}

#[test]
fn the_image_tests_skipped_fail_under_ci() {
    skips_loudly(
        "image::the_amd64_image_runs_with_exactly_the_daemonsets_privileges",
        &[("WATCHDOG_SKIP_IMAGE", "1")],
        None,
        "WATCHDOG_SKIP_IMAGE is set",
    );
}

#[test]
fn a_lab_test_without_root_fails_under_ci() {
    if !watchdog_tests::require_root("a_lab_test_without_root_fails_under_ci") {
        return;
    }
    skips_loudly(
        "drops::counts_drops_by_reason_in_its_own_namespace_only",
        &[],
        Some(NOBODY),
        "needs root",
    );
}
