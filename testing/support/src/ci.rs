// SPDX-License-Identifier: MIT OR Apache-2.0
//! Preconditions of tests that need a particular machine. `.ci/run` sets
//! `NOFAIL_CI=1`: the CI machine has every precondition (root, a kernel
//! without kprobes), so one missing there is a failure. Elsewhere (a
//! developer's laptop) the test says `skipped: <reason>` and returns.

use std::io::Write as _;

/// Whether this run is on the CI machine (`NOFAIL_CI` set, not "0").
pub fn on_ci() -> bool {
    std::env::var_os("NOFAIL_CI").is_some_and(|v| !v.is_empty() && v != "0")
}

/// A precondition that does not hold: panics on CI, else prints
/// `skipped: <reason>` (straight to stderr, past libtest's capture, so a
/// plain `cargo test` shows it).
#[track_caller]
pub fn skip_or_fail(reason: &str) {
    assert!(
        !on_ci(),
        "NOFAIL_CI is set, so this must run here, but: {reason}"
    );
    let _ = writeln!(std::io::stderr(), "skipped: {reason}");
}

/// `holds`, or `skip_or_fail(reason)` and false.
#[track_caller]
pub fn require(holds: bool, reason: &str) -> bool {
    if !holds {
        skip_or_fail(reason);
    }
    holds
}

/// Effective user id 0.
pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}
