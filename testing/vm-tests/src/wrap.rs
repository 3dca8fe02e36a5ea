// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail trace|inject -- COMMAND`: the exit status passed through, the
//! command started only once nofail counts (its maps counted exactly),
//! signals to nofail reaching the command first, the gate's exit 3, and
//! `--command-only` counting the command's own BPF maps while another
//! process makes maps meanwhile. The ground truths: the maps the command
//! makes (this binary's `--make-maps N`), the kernel's own program, map
//! and link ids, and the trigger's results.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use nofail_test_support::bpf;
use serde_json::Value;

use crate::harness::{Ctx, field, row};

/// This binary, for the guest's commands (`--make-maps N`).
fn me() -> Result<String> {
    Ok(std::env::current_exe()?.display().to_string())
}

/// Creates `n` BPF array maps of 1 MiB (each one vmalloc call from
/// `array_map_alloc`) and exits: the command nofail wraps.
pub fn make_maps(n: u64) -> Result<()> {
    for _ in 0..n {
        bpf::create_big_array_map()?;
    }
    Ok(())
}

/// `nofail <args> --json OUT -- sh -c SCRIPT`: its output, and its report
/// if it wrote one.
fn wrapped(ctx: &Ctx, name: &str, args: &[&str], script: &str) -> Result<(Output, Option<Value>)> {
    let json = ctx.out.join(format!("{name}.json"));
    let _ = std::fs::remove_file(&json);
    let out = Command::new(&ctx.nofail)
        .args(args)
        .arg("--json")
        .arg(&json)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .context("cannot run nofail")?;
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        println!("  [nofail] {line}");
    }
    let report = match std::fs::read_to_string(&json) {
        Ok(text) => Some(serde_json::from_str(&text)?),
        Err(_) => None,
    };
    Ok((out, report))
}

fn calls_at(report: &Value, symbol: &str) -> Result<u64> {
    field(row(report, symbol)?, "calls")
}

/// Nothing nofail loaded is left once it has exited: no program, map or
/// link created since `before`.
fn nothing_left(before: &bpf::Snapshot) -> Result<()> {
    let left = before.left_after(Duration::from_secs(5))?;
    ensure!(left.is_empty(), "left behind: {left}");
    Ok(())
}

/// The command's status is nofail's (0, 1, 42, killed by SIGKILL: 137),
/// the report is written each time, and the command's three maps are
/// counted exactly: it ran only once every program counted. A command
/// that cannot be found exits 127 with one line, having loaded nothing.
pub fn exit_status_passes_through(ctx: &Ctx) -> Result<()> {
    let before = bpf::Snapshot::take()?;
    let maker = me()?;
    for (tail, want) in [
        ("exit 0", 0),
        ("exit 1", 1),
        ("exit 42", 42),
        ("kill -KILL $$", 137),
    ] {
        let script = format!("{maker} --make-maps 3 && {tail}");
        let (out, report) = wrapped(ctx, "wrap_status", &["trace"], &script)?;
        ensure!(
            out.status.code() == Some(want),
            "`{tail}`: nofail exited {:?}, not {want}",
            out.status
        );
        let report = report.with_context(|| format!("`{tail}`: no report written"))?;
        let calls = calls_at(&report, nofail_test_support::bpf::array_map_caller()?)?;
        ensure!(calls == 3, "`{tail}`: {calls} map calls counted, not 3");
        println!("  `{tail}` -> exit {want}, 3 of 3 map calls counted");
    }
    let ((), (maps, progs)) = crate::harness::loaded_while(|| {
        let out = Command::new(&ctx.nofail)
            .args(["trace", "--", "no-such-command-nofail"])
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(127)
                && err.trim()
                    == "nofail: error: cannot run no-such-command-nofail: command not found",
            "a missing command: exit {:?}, {err:?}",
            out.status
        );
        Ok(())
    })?;
    ensure!(
        (maps, progs) == (0, 0),
        "a missing command loaded {progs} programs and {maps} maps"
    );
    nothing_left(&before)
}

/// SIGTERM to nofail goes to the command, which ends on it as it chooses
/// (here `exit 7` from its trap), then nofail writes its report and exits
/// 7; SIGINT to nofail ends an untrapping command by SIGINT: 130.
pub fn signals_reach_the_command_first(ctx: &Ctx) -> Result<()> {
    let before = bpf::Snapshot::take()?;
    let started = ctx.out.join("wrap_started");
    for (signal, trap, want) in [
        (libc::SIGTERM, "trap 'exit 7' TERM;", 7),
        (libc::SIGINT, "", 130),
    ] {
        let _ = std::fs::remove_file(&started);
        let json = ctx.out.join("wrap_signal.json");
        let _ = std::fs::remove_file(&json);
        let script = format!(
            "{trap} touch {}; while :; do sleep 0.1; done",
            started.display()
        );
        let mut child = Command::new(&ctx.nofail)
            .args(["trace", "--json"])
            .arg(&json)
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .spawn()?;
        wait_for(&started, Duration::from_secs(60))?;
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait()?;
        ensure!(
            status.code() == Some(want),
            "signal {signal}: nofail exited {status:?}, not {want}"
        );
        let report: Value = serde_json::from_str(
            &std::fs::read_to_string(&json).context("no report after the signal")?,
        )?;
        ensure!(report["callers"].is_array(), "a report without callers");
        println!("  signal {signal} to nofail -> the command ended, exit {want}, report written");
    }
    nothing_left(&before)
}

fn wait_for(file: &Path, limit: Duration) -> Result<()> {
    let t = Instant::now();
    while !file.exists() {
        ensure!(t.elapsed() < limit, "{} did not appear", file.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The cgroup2 mount, mounted at /sys/fs/cgroup if the guest has none.
fn cgroup2() -> Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    if let Some(dir) = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    }) {
        return Ok(dir);
    }
    let status = Command::new("mount")
        .args(["-t", "cgroup2", "none", "/sys/fs/cgroup"])
        .status()?;
    ensure!(status.success(), "cannot mount cgroup2 on /sys/fs/cgroup");
    Ok(PathBuf::from("/sys/fs/cgroup"))
}

/// `--command-only`: the command's maps and its children's (2 + 3), not
/// the maps another process makes all the while (counted, and at least
/// as many, so an unfiltered count could not pass); the report names the
/// cgroup; the cgroup is gone afterwards; nothing left attached.
pub fn command_only_counts_the_commands_maps(ctx: &Ctx) -> Result<()> {
    let before = bpf::Snapshot::take()?;
    let root = cgroup2()?;
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicU64::new(0));
    let other = {
        let (stop, made) = (stop.clone(), made.clone());
        std::thread::spawn(move || -> Result<()> {
            while !stop.load(Ordering::SeqCst) {
                bpf::create_big_array_map()?;
                made.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        })
    };
    let maker = me()?;
    // Slow enough that the other process makes maps meanwhile.
    let script = format!("{maker} --make-maps 2 & sleep 1; {maker} --make-maps 3; wait; sleep 1");
    let at_start = made.load(Ordering::SeqCst);
    let result = wrapped(
        ctx,
        "wrap_command_only",
        &["trace", "--command-only"],
        &script,
    );
    let meanwhile = made.load(Ordering::SeqCst) - at_start;
    stop.store(true, Ordering::SeqCst);
    other.join().expect("map thread")?;
    let (out, report) = result?;
    ensure!(out.status.success(), "nofail exited {:?}", out.status);
    let report = report.context("no report")?;
    let calls = calls_at(&report, nofail_test_support::bpf::array_map_caller()?)?;
    ensure!(
        meanwhile >= 5,
        "the other process made only {meanwhile} maps meanwhile: the check proves nothing"
    );
    ensure!(
        calls == 5,
        "{calls} map calls counted under --command-only, not the command's 5 (another process made {meanwhile} meanwhile)"
    );
    let cgroup = report["filters"]["cgroup"]
        .as_str()
        .context("the report does not name the command's cgroup")?;
    ensure!(
        Path::new(cgroup).starts_with(&root) && !Path::new(cgroup).exists(),
        "the cgroup {cgroup} is not below {} or was left behind",
        root.display()
    );
    println!(
        "  5 of 5 of the command's map calls counted; {meanwhile} made meanwhile by another process, none counted"
    );
    nothing_left(&before)
}

/// On the test kernel: `inject --command-only -- COMMAND` whose command drives the
/// trigger's NOFAIL call with its first 3 attempts failed (3 retries, p99
/// bucket bound 3). A gate of p99 <= 1 fails: exit 3 and one gate line;
/// the command failing as well wins (exit 5, the gate line still said);
/// a gate of p99 <= 3 passes: exit 0.
pub fn gate_exits_3(ctx: &Ctx) -> Result<()> {
    ctx.load_trigger()?;
    let d = "/sys/kernel/debug/nofail_trigger";
    let drive = format!(
        "echo 65536 > {d}/size && echo 1 > {d}/count && echo 0 > {d}/fail && echo vmalloc_nofail > {d}/run"
    );
    // --command-only: the trigger's call is made by the command's shell
    // (its debugfs write), so it is counted and failed inside the cgroup.
    cgroup2()?;
    let rule = [
        "inject",
        "--command-only",
        "--stage",
        "area",
        "--caller",
        "site_vmalloc_nofail",
        "--fail-first",
        "3",
        "--fail-if-p99-retries-above",
    ];
    for (limit, tail, want, gate_line) in [
        ("1", "true", 3, true),
        ("1", "exit 5", 5, true),
        ("3", "true", 0, false),
    ] {
        let args: Vec<&str> = rule.iter().copied().chain([limit]).collect();
        let (out, report) = wrapped(ctx, "wrap_gate", &args, &format!("{drive} && {tail}"))?;
        let err = String::from_utf8_lossy(&out.stderr);
        let gates: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("nofail: gate: "))
            .collect();
        ensure!(
            out.status.code() == Some(want),
            "p99 <= {limit}, `{tail}`: exit {:?}, not {want}",
            out.status
        );
        ensure!(
            gates.len() == usize::from(gate_line),
            "p99 <= {limit}, `{tail}`: gate lines {gates:?}"
        );
        let report = report.context("no report")?;
        ensure!(
            report["injection"]["counts"]["injected"] == 3,
            "injected {}",
            report["injection"]["counts"]["injected"]
        );
        ensure!(
            field(row(&report, "site_vmalloc_nofail")?, "area_retries")? == 3,
            "not 3 area retries"
        );
        println!("  p99 <= {limit}, `{tail}` -> exit {want} {gates:?}");
    }
    Ok(())
}
