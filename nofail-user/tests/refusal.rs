// SPDX-License-Identifier: MIT OR Apache-2.0
//! On a kernel that refuses BPF tracing programs and has no kprobes (the
//! development machines: see README), `nofail trace` runs in tracepoint
//! mode (tests/../testing/vm-tests host scenarios); what that mode cannot
//! do must fail cleanly: one line naming the reason, a non-zero exit, and
//! no program left attached.

use std::{path::Path, process::Command};

fn kernel_has_kprobes() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe").exists()
}

fn nofail_programs_loaded() -> Option<usize> {
    let out = Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .matches("vmalloc_core")
            .count()
    })
}

#[test]
fn kprobe_mode_refuses_with_one_line_on_a_kernel_without_kprobes() {
    refuses(&["trace", "--mode", "kprobe", "--duration", "1s"], "kprobe");
}

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

fn refuses(args: &[&str], needle: &str) {
    if kernel_has_kprobes() {
        eprintln!("skipped: this kernel has kprobes, so the refusal path cannot be reached here");
        return;
    }
    let before = nofail_programs_loaded();
    let out = Command::new(env!("CARGO_BIN_EXE_nofail"))
        .args(args)
        .output()
        .expect("run nofail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "nofail trace succeeded on a refusing kernel: {stderr}"
    );
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
    let root = unsafe { libc_geteuid() } == 0;
    if root {
        assert!(stderr.contains(needle), "does not name {needle}: {stderr}");
    } else {
        assert!(stderr.contains("root"), "{stderr}");
    }
    assert_eq!(nofail_programs_loaded(), before, "programs left attached");
}

#[test]
fn bad_duration_is_one_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_nofail"))
        .args(["trace", "--duration", "5y"])
        .output()
        .expect("run nofail");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("invalid duration unit"), "{stderr}");
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
        (&["--stage", "area", "--fail-first", "-1"], "--fail-first"),
        (&["--stage", "area", "--every", "0"], "--every"),
        (
            &["--stage", "area", "--max-consecutive", "0"],
            "--max-consecutive",
        ),
        (&["--probability", "0.5"], "--stage"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_nofail"))
            .arg("inject")
            .args(args)
            .output()
            .expect("run nofail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// On a kernel without the injection options, inject refuses before it
/// attaches anything, naming what is missing; an unknown --caller is an
/// error on any kernel, also before anything is attached.
#[test]
fn inject_preflight_and_unknown_caller() {
    let before = nofail_programs_loaded();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_nofail"))
            .arg("inject")
            .args(args)
            .output()
            .expect("run nofail");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&[
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
    if !kernel_has_kprobes() {
        let (code, stderr) = run(&["--stage", "area", "--duration", "1s"]);
        assert_eq!(code, Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("cannot inject failures") && stderr.contains("CONFIG_KPROBES"),
            "{stderr}"
        );
        assert!(stderr.contains("cargo xtask vm --kernel test"), "{stderr}");
    }
    assert_eq!(nofail_programs_loaded(), before, "programs left attached");
}

/// Subsystem targets on the machine's own kernel (XFS built in, no module
/// support): a whole-subsystem glob is accepted by the filter (the run then
/// stops only at attaching, on this kernel), a module that is not loaded,
/// an empty list item and an out-of-range --chains are one-line errors.
#[test]
fn subsystem_targets_and_their_errors() {
    let run = |cmd: &str, args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_nofail"))
            .arg(cmd)
            .args(args)
            .args(["--duration", "1s"])
            .output()
            .expect("run nofail");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for cmd in ["trace", "inject"] {
        let stage: &[&str] = if cmd == "inject" {
            &["--stage", "area"]
        } else {
            &[]
        };
        let with = |extra: &[&'static str]| -> Vec<&'static str> { [stage, extra].concat() };
        let (code, stderr) = run(cmd, &with(&["--module", "no_such_module"]));
        assert_eq!(code, Some(1), "{cmd}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{cmd}: {stderr}");
        assert!(stderr.contains("not a loaded module"), "{cmd}: {stderr}");
        let (code, stderr) = run(cmd, &with(&["--caller", "xfs_buf_alloc,"]));
        assert_eq!(code, Some(1), "{cmd}: {stderr}");
        assert!(stderr.contains("empty pattern"), "{cmd}: {stderr}");
        for bad in ["0", "17", "x"] {
            let (code, stderr) = run(cmd, &with(&["--chains", bad]));
            assert_eq!(code, Some(2), "{cmd} --chains {bad}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{cmd} --chains {bad}: {stderr}");
        }
        if !kernel_has_kprobes() {
            // 'xfs_*' (thousands of functions) passes the filter; what
            // stops a kprobe run is this kernel's lack of kprobes.
            let (code, stderr) = run(
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
}
