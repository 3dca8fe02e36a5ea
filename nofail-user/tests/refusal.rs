// SPDX-License-Identifier: MIT OR Apache-2.0
//! On a kernel that refuses BPF tracing programs and has no kprobes (the
//! CI machine: see README), `nofail trace` runs in tracepoint mode
//! (testing/vm-tests host scenarios); what that mode cannot do must fail
//! cleanly: one line naming the reason, a non-zero exit, and nothing left
//! loaded, counted in the kernel's own program and map lists (bpf(2)).
//!
//! Preconditions (root, no kprobes) hold on the CI machine: with
//! `NOFAIL_CI=1` (set by .ci/run) a missing one fails the test; elsewhere
//! it prints `skipped: <reason>` and returns.

use std::{
    process::{Command, Stdio},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use nofail_test_support::{
    bpf::Snapshot,
    ci::{is_root, require},
    kernel::has_kprobes,
};

/// Tests that may load BPF objects run one at a time, so that one test's
/// objects are never counted as another's leftovers.
static BPF_OBJECTS: Mutex<()> = Mutex::new(());

fn nofail() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nofail"))
}

/// `nofail ARGS`: its exit code and what it printed on stderr.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = nofail().args(args).output().expect("run nofail");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stderr)
}

/// The lock and a snapshot of the kernel's objects, for a test that
/// counts them; `None` (skipped) without root, which reading them needs.
fn counting() -> Option<(MutexGuard<'static, ()>, Snapshot)> {
    let guard = BPF_OBJECTS.lock().unwrap_or_else(|e| e.into_inner());
    require(
        is_root(),
        "reading the kernel's BPF program and map lists needs root",
    )
    .then(|| (guard, Snapshot::take().unwrap()))
}

/// Objects the run left loaded (freed shortly after their last fd closes).
#[track_caller]
fn assert_nothing_left(before: &Snapshot, what: &str) {
    let left = before.left_after(Duration::from_secs(3)).unwrap();
    assert!(left.is_empty(), "{what}: left loaded: {left}");
}

/// The control: the count sees nofail's programs while a tracepoint-mode
/// run is attached (this kernel has the tracepoints), and none after it.
#[test]
fn object_count_sees_nofail_attached_and_gone() {
    let Some((_bpf, before)) = counting() else {
        return;
    };
    let mut child = nofail()
        .args(["trace", "--mode", "tracepoint", "--duration", "30s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(25);
    let seen = loop {
        let now = before.created_since().unwrap();
        if !now.programs.is_empty() || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(
        !seen.programs.is_empty() && !seen.maps.is_empty(),
        "no nofail program or map counted while it traced: {seen}"
    );
    assert!(status.success(), "nofail trace --mode tracepoint: {status}");
    assert_nothing_left(&before, "after a tracepoint-mode run");
}

#[test]
fn kprobe_mode_refuses_with_one_line_on_a_kernel_without_kprobes() {
    if !require(
        !has_kprobes(),
        "this kernel has kprobes, so the refusal path cannot be reached",
    ) {
        return;
    }
    refuses(&["trace", "--mode", "kprobe", "--duration", "1s"], "kprobe");
}

/// Tracepoint mode attaches, then refuses what it cannot see: every
/// program detached and every map freed again.
#[test]
fn nofail_only_refused_in_tracepoint_mode() {
    refuses(
        &[
            "trace",
            "--mode",
            "tracepoint",
            "--nofail-only",
            "--duration",
            "1s",
        ],
        "--nofail-only",
    );
}

#[test]
fn events_refused_in_tracepoint_mode() {
    refuses(
        &[
            "trace",
            "--mode",
            "tracepoint",
            "--events",
            "--duration",
            "1s",
        ],
        "--events needs the full mode",
    );
}

/// `args` fail with one line naming `needle`, exit 1, nothing left loaded.
fn refuses(args: &[&str], needle: &str) {
    let Some((_bpf, before)) = counting() else {
        return;
    };
    let (code, stderr) = run(args);
    assert_eq!(code, Some(1), "{args:?}: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "expected one line, got:\n{stderr}"
    );
    assert!(stderr.starts_with("nofail: error: "), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert!(stderr.contains(needle), "does not name {needle}: {stderr}");
    assert_nothing_left(&before, &format!("{args:?}"));
}

#[test]
fn bad_duration_is_one_clear_error() {
    let (code, stderr) = run(&["trace", "--duration", "5y"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("invalid duration unit"), "{stderr}");
}

/// Every duration flag goes through one parser: a duration beyond the
/// kernel's u64 nanoseconds is a usage error (exit 2, one line), not a
/// panic (exit 101) nor a value that wraps.
#[test]
fn durations_too_long_are_usage_errors_on_every_flag() {
    for args in [
        &["trace", "--duration", "99999999999999999999h"][..],
        &["trace", "--interval", "99999999999999999999h"],
        &["trace", "--stuck-after", "5124096h"],
        &["trace", "--retry-window", "18446744074s"],
        &["serve", "--stuck-after", "99999999999999999999h"],
        &[
            "inject",
            "--stage",
            "area",
            "--duration",
            "99999999999999999999h",
        ],
    ] {
        let (code, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("is too long"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Bad injection rules fail in argument parsing, before anything is
/// loaded: one line, exit 2.
#[test]
fn bad_inject_rules_are_one_line_errors() {
    for (args, needle) in [
        (&["--stage", "pagetable"][..], "invalid value 'pagetable'"),
        (
            &["--stage", "area", "--probability", "1.5"],
            "probability must be a number from 0 to 1",
        ),
        (&["--stage", "area", "--times", "-3"], "--times"),
        (&["--stage", "area", "--times", "0"], "--times"),
        (
            &["--stage", "area", "--probability", "0"],
            "probability must be a number from 0 to 1, 0 excluded",
        ),
        (&["--stage", "area", "--fail-first", "-1"], "--fail-first"),
        (&["--stage", "area", "--every", "0"], "--every"),
        (
            &["--stage", "area", "--max-consecutive", "0"],
            "--max-consecutive",
        ),
        (&["--probability", "0.5"], "--stage"),
    ] {
        let (code, stderr) = run(&[&["inject"], args].concat());
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// Flags that would be accepted and then mean nothing are refused in
/// argument parsing: `--pid 0` (it read as "no filter"), `--svg-callers`
/// without `--svg`, `--events-rate` without any `--events*` output. One
/// line, exit 2, nothing loaded.
#[test]
fn flags_that_would_mean_nothing_are_usage_errors() {
    let report = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testing/reports/export_live.json"
    );
    for (args, needle) in [
        (&["trace", "--pid", "0"][..], "--pid"),
        (&["serve", "--pid", "0"], "--pid"),
        (&["inject", "--stage", "area", "--pid", "0"], "--pid"),
        (&["report", report, "--svg-callers", "3"], "--svg"),
        (&["trace", "--events-rate", "5"], "--events"),
        (
            &["inject", "--stage", "area", "--events-rate", "5"],
            "--events",
        ),
    ] {
        let (code, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    // With what they need, the same flags parse: the report is printed.
    let svg = std::env::temp_dir().join(format!("nofail-refusal-{}.svg", std::process::id()));
    let out = nofail()
        .args(["report", report, "--svg-callers", "3", "--svg"])
        .arg(&svg)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&svg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `NOFAIL_KERNEL_CONFIG` naming a file that is not there is an error
/// (it read as "no config"), before anything is loaded, in every command
/// that reads the kernel's config.
#[test]
fn kernel_config_variable_naming_a_missing_file_is_an_error() {
    let Some((_bpf, before)) = counting() else {
        return;
    };
    for args in [
        &["doctor"][..],
        &["trace", "--duration", "1s"],
        &["inject", "--stage", "area", "--duration", "1s"],
    ] {
        let out = nofail()
            .args(args)
            .env("NOFAIL_KERNEL_CONFIG", "/nonexistent/config-nofail")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with(
                "nofail: error: NOFAIL_KERNEL_CONFIG names /nonexistent/config-nofail"
            ),
            "{args:?}: {stderr}"
        );
    }
    assert_nothing_left(&before, "NOFAIL_KERNEL_CONFIG refusals");
}

/// On a kernel without the injection options, inject refuses before it
/// attaches anything, naming what is missing; an unknown --caller is an
/// error on any kernel, also before anything is attached.
#[test]
fn inject_preflight_and_unknown_caller() {
    let Some((_bpf, before)) = counting() else {
        return;
    };
    let (code, stderr) = run(&[
        "inject",
        "--stage",
        "area",
        "--caller",
        "no_such_function_*",
        "--duration",
        "1s",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("matches no kernel function"), "{stderr}");
    if require(
        !has_kprobes(),
        "this kernel has kprobes: the no-injection refusal is checked in the VM",
    ) {
        let (code, stderr) = run(&["inject", "--stage", "area", "--duration", "1s"]);
        assert_eq!(code, Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("cannot inject failures") && stderr.contains("CONFIG_KPROBES"),
            "{stderr}"
        );
        assert!(stderr.contains("cargo xtask vm --kernel test"), "{stderr}");
    }
    assert_nothing_left(&before, "inject refusals");
}

/// Subsystem targets on the machine's own kernel (XFS built in, no module
/// support): a whole-subsystem glob is accepted by the filter (the run then
/// stops only at attaching, on this kernel), a module that is not loaded,
/// an empty list item and an out-of-range --chains are one-line errors.
#[test]
fn subsystem_targets_and_their_errors() {
    let Some((_bpf, before)) = counting() else {
        return;
    };
    let run_1s = |cmd: &str, args: &[&str]| run(&[&[cmd], args, &["--duration", "1s"]].concat());
    for cmd in ["trace", "inject"] {
        let stage: &[&str] = if cmd == "inject" {
            &["--stage", "area"]
        } else {
            &[]
        };
        let with = |extra: &[&'static str]| -> Vec<&'static str> { [stage, extra].concat() };
        let (code, stderr) = run_1s(cmd, &with(&["--module", "no_such_module"]));
        assert_eq!(code, Some(1), "{cmd}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{cmd}: {stderr}");
        assert!(stderr.contains("not a loaded module"), "{cmd}: {stderr}");
        let (code, stderr) = run_1s(cmd, &with(&["--caller", "xfs_buf_alloc,"]));
        assert_eq!(code, Some(1), "{cmd}: {stderr}");
        assert!(stderr.contains("empty pattern"), "{cmd}: {stderr}");
        for bad in ["0", "17", "x"] {
            let (code, stderr) = run_1s(cmd, &with(&["--chains", bad]));
            assert_eq!(code, Some(2), "{cmd} --chains {bad}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{cmd} --chains {bad}: {stderr}");
        }
        if require(
            !has_kprobes(),
            "this kernel has kprobes: a kprobe run of 'xfs_*' would attach",
        ) {
            // 'xfs_*' (thousands of functions) passes the filter; what
            // stops a kprobe run is this kernel's lack of kprobes.
            let (code, stderr) = run_1s(
                cmd,
                &with(&["--caller", "xfs_*,ext4_*", "--mode", "kprobe"]),
            );
            assert_eq!(code, Some(1), "{cmd}: {stderr}");
            let lines: Vec<&str> = stderr.lines().collect();
            assert_eq!(lines.len(), 2, "{cmd}: {stderr}");
            assert!(
                lines[0].starts_with("nofail: --caller \"xfs_*,ext4_*\": ")
                    && lines[0].contains(" functions in "),
                "{cmd}: {stderr}"
            );
            // This kernel's refusal (trace) or missing injection support
            // (inject), never the filter.
            assert!(
                lines[1].starts_with("nofail: error: ") && !lines[1].contains("--caller"),
                "{cmd}: {stderr}"
            );
        }
    }
    assert_nothing_left(&before, "subsystem target runs");
}
