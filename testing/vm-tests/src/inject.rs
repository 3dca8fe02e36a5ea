// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail inject` scenarios (test kernel). The ground truth is the
//! trigger's own view of each call (NULL or not, retries by hand) and the
//! kernel's program list, never nofail's own counters alone.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use nofail_test_support::bpf;
use serde_json::Value;

use crate::{
    harness::{self, Ctx, Trace, expect_fields, field},
    trigger::{self, Arm},
};

fn start(ctx: &Ctx, name: &str, extra: &[&str]) -> Result<Trace> {
    ctx.load_trigger()?;
    Trace::start_cmd(ctx, "inject", name, extra)
}

fn behaviour<'a>(report: &'a Value, symbol: &str) -> Result<&'a Value> {
    let prefix = format!("{symbol}+");
    report["injection"]["behaviour"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["caller"].as_str().is_some_and(|c| c.starts_with(&prefix)))
        .with_context(|| {
            format!(
                "no behaviour row for {symbol}: {}",
                report["injection"]["behaviour"]
            )
        })
}

/// An injection rule: `stage` failed in calls from `caller`, as `extra` says.
pub fn rule<'a>(stage: &'a str, caller: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    [&["--stage", stage, "--caller", caller][..], extra].concat()
}

/// The rule `--fail-first 3` in `stage` on `symbol`, by the `mode` mechanism.
pub fn fail_first_rule<'a>(stage: &'a str, symbol: &'a str, mode: &'a str) -> Vec<&'a str> {
    rule(stage, symbol, &["--fail-first", "3", "--inject-mode", mode])
}

/// --fail-first K on a NOFAIL site in one stage: exactly K failures, the
/// loop turns K times in that stage with a jiffy each, and the call
/// succeeds. `site` must be one whose first attempt leaves nothing behind
/// (for the mapping stage, the trigger's fresh-address-space site).
/// `mode` is the --inject-mode, checked in the report.
fn fail_first(ctx: &Ctx, stage: &str, site: &str, mode: &str) -> Result<()> {
    const K: u64 = 3;
    let hz = trigger::hz()?;
    let symbol = format!("site_{site}");
    let inj = start(
        ctx,
        &format!("inject_fail_first_{stage}_{mode}"),
        &fail_first_rule(stage, &symbol, mode),
    )?;
    let (run, report) = inj.around(|| trigger::run(site, 1, 64 << 10, Arm::Off))?;
    ensure!(
        run.null == 0 && run.calls == 1,
        "the NOFAIL call did not succeed: {run:?}"
    );
    // The ground truth outside nofail: the kernel's loop slept K times
    // (the trigger's kprobe on schedule_timeout_uninterruptible).
    ensure!(
        run.sleeps == K,
        "the kernel's loop slept {} times, not {K}",
        run.sleeps
    );
    ensure!(
        report["injection"]["counts"]["injected"] == K,
        "injected {} != {K}",
        report["injection"]["counts"]["injected"]
    );
    ensure!(
        report["injection"]["rule"]["mechanism"] == mode,
        "mechanism {}",
        report["injection"]["rule"]["mechanism"]
    );
    let b = behaviour(&report, &symbol)?;
    ensure!(
        b["nofail"] == true && b["still_looping"] == 0 && b["calls"] == 1,
        "{b}"
    );
    let (this, other) = match stage {
        "area" => ("area_retries", "mapping_retries"),
        _ => ("mapping_retries", "area_retries"),
    };
    ensure!(
        b[this] == K && b[other] == 0 && b["sleeps"] == K,
        "{this}/sleeps != {K}: {b}"
    );
    let stall = nofail_test_support::json::float(b, "stall_ms")?;
    ensure!(
        stall * 1e6 >= (K * 1_000_000_000 / hz) as f64,
        "stalled {stall} ms < {K} jiffies"
    );
    expect_fields(
        &report,
        &symbol,
        &[("injected", K), (this, K), (other, 0), ("max_retries", K)],
    )?;
    if stage == "mapping" {
        let pt = crate::harness::pt_total(crate::harness::row(&report, &symbol)?)?;
        ensure!(pt == K, "page-table failures {pt} != {K}");
    }
    Ok(())
}

pub fn fail_first_area(ctx: &Ctx) -> Result<()> {
    fail_first(ctx, "area", "vmalloc_nofail", "kprobe")
}

pub fn fail_first_mapping(ctx: &Ctx) -> Result<()> {
    fail_first(ctx, "mapping", "vmalloc_nofail_fresh", "kprobe")
}

pub fn fail_first_area_fmod_ret(ctx: &Ctx) -> Result<()> {
    fail_first(ctx, "area", "vmalloc_nofail", "fmod-ret")
}

pub fn fail_first_mapping_fmod_ret(ctx: &Ctx) -> Result<()> {
    fail_first(ctx, "mapping", "vmalloc_nofail_fresh", "fmod-ret")
}

/// --times is one budget for the whole run: 4 tasks calling the plain site
/// at once on 2 CPUs get exactly 5 NULLs between them (the kernel side
/// takes the budget with an atomic fetch-and-add).
pub fn times_budget_exact_concurrent(ctx: &Ctx) -> Result<()> {
    const TIMES: u64 = 5;
    const TASKS: u64 = 4;
    const CALLS: u64 = 300;
    let inj = start(
        ctx,
        "inject_times_concurrent",
        &rule("area", "site_vmalloc", &["--times", "5"]),
    )?;
    let (before_calls, before_null) = trigger::totals()?;
    let work = || -> Result<()> {
        let dir = "/sys/kernel/debug/nofail_trigger";
        std::fs::write(format!("{dir}/size"), "8192")?;
        std::fs::write(format!("{dir}/count"), CALLS.to_string())?;
        std::fs::write(format!("{dir}/fail"), "0")?;
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| std::thread::spawn(move || std::fs::write(format!("{dir}/run"), "vmalloc")))
            .collect();
        for t in tasks {
            t.join()
                .map_err(|_| anyhow::anyhow!("thread panicked"))?
                .context("trigger run")?;
        }
        Ok(())
    };
    let ((), report) = inj.around(work)?;
    let (after_calls, after_null) = trigger::totals()?;
    ensure!(
        after_calls - before_calls == TASKS * CALLS,
        "{} calls made",
        after_calls - before_calls
    );
    ensure!(
        after_null - before_null == TIMES,
        "the trigger saw {} NULLs for --times {TIMES}",
        after_null - before_null
    );
    let counts = &report["injection"]["counts"];
    ensure!(
        counts["injected"] == TIMES,
        "injected {}",
        counts["injected"]
    );
    expect_fields(
        &report,
        "site_vmalloc",
        &[("injected", TIMES), ("null_returns", TIMES)],
    )
}

/// nofail never injects into its own process: with every array_map_alloc
/// call targeted, nofail's own array map (its guard self-check) goes
/// through and is not even eligible, while this process's map creation
/// gets ENOMEM.
pub fn own_process_exempt(ctx: &Ctx) -> Result<()> {
    let inj = start(
        ctx,
        "inject_own_process",
        &[
            "--stage",
            "area",
            "--caller",
            nofail_test_support::bpf::array_map_caller()?,
        ],
    )?;
    let startup = inj.startup.join("\n");
    let (created, report) = inj.around(|| Ok(bpf::create_big_array_map()))?;
    let err = created
        .err()
        .context("this process's map creation was not failed")?;
    ensure!(says_enomem(&format!("{err:#}")), "{err:#}");
    ensure!(
        startup.contains("own-process guard checked"),
        "nofail did not report its self-check: {startup}"
    );
    let counts = &report["injection"]["counts"];
    ensure!(
        counts["eligible"] == 1 && counts["injected"] == 1,
        "nofail's own allocation was eligible: {counts}"
    );
    expect_fields(
        &report,
        nofail_test_support::bpf::array_map_caller()?,
        &[("calls", 1), ("injected", 1)],
    )
}

/// --times 1 on the plain site: the trigger sees exactly one NULL, which
/// the report calls NULL returned and absorbed (nothing calls again from
/// that site within the retry window); later calls pass (budget spent).
pub fn times_one_plain(ctx: &Ctx) -> Result<()> {
    let inj = start(
        ctx,
        "inject_times_one",
        &rule(
            "area",
            "site_vmalloc",
            &["--times", "1", "--retry-window", "50ms"],
        ),
    )?;
    let first = trigger::run("vmalloc", 1, 64 << 10, Arm::Off);
    std::thread::sleep(Duration::from_millis(300));
    let later = trigger::run("vmalloc", 2, 64 << 10, Arm::Off);
    let report = inj.finish()?;
    let (first, later) = (first?, later?);
    ensure!(
        first.null == 1 && later.null == 0,
        "trigger saw {first:?} then {later:?}"
    );
    let b = behaviour(&report, "site_vmalloc")?;
    ensure!(
        b["injected"] == 1
            && b["null_returned"] == 1
            && b["absorbed"] == 1
            && b["open_coded_retries"] == 0,
        "{b}"
    );
    ensure!(
        field(&report["injection"]["counts"], "skipped_budget")? >= 2,
        "budget skips: {}",
        report["injection"]["counts"]
    );
    Ok(())
}

/// A caller that retries by hand (the trigger's memalloc_retry_wait loop)
/// given 2 NULLs: reported as retried by hand, twice, with its sleeps.
pub fn retried_by_hand(ctx: &Ctx) -> Result<()> {
    let inj = start(
        ctx,
        "inject_by_hand",
        &[
            "--stage",
            "area",
            "--caller",
            "site_vmalloc_retry",
            "--times",
            "2",
        ],
    )?;
    let (run, report) = inj.around(|| trigger::run("vmalloc_retry", 1, 64 << 10, Arm::Off))?;
    ensure!(run.null == 0 && run.retries == 2, "trigger: {run:?}");
    let b = behaviour(&report, "site_vmalloc_retry")?;
    ensure!(
        b["open_coded_retries"] == 2
            && b["null_returned"] == 2
            && b["open_coded_retry_sleeps"] == 2,
        "{b}"
    );
    ensure!(b["absorbed"] == 0, "{b}");
    Ok(())
}

/// The mapping stage of a plain vmalloc: one page-table page failed
/// (--times 1) in a 64 MiB call that needs new page tables (the trigger's
/// fresh-address-space site: earlier scenarios leave page tables wherever
/// plain calls went): the call
/// returns NULL, counted as a mapping-stage failure with its page-table
/// level. (NOFAIL calls are not used here: a mapping failure after part of
/// the range was mapped loops forever, see mapping_stage_failure_counted.)
pub fn mapping_stage_plain(ctx: &Ctx) -> Result<()> {
    let inj = start(
        ctx,
        "inject_mapping",
        &[
            "--stage",
            "mapping",
            "--caller",
            "site_vmalloc_fresh",
            "--no-nofail",
            "--times",
            "1",
            "--retry-window",
            "50ms",
        ],
    )?;
    let (run, report) = inj.around(|| trigger::run("vmalloc_fresh", 1, 64 << 20, Arm::Off))?;
    ensure!(
        report["injection"]["counts"]["injected"] == 1,
        "injected {}",
        report["injection"]["counts"]["injected"]
    );
    ensure!(run.null == 1, "trigger saw {} NULLs", run.null);
    let b = behaviour(&report, "site_vmalloc_fresh")?;
    ensure!(b["null_returned"] == 1 && b["absorbed"] == 1, "{b}");
    let row = crate::harness::row(&report, "site_vmalloc_fresh")?;
    let pt = crate::harness::pt_total(row)?;
    ensure!(pt == 1, "page-table failures {pt} != 1");
    expect_fields(
        &report,
        "site_vmalloc_fresh",
        &[
            ("mapping_failures", 1),
            ("mapping_retries", 0),
            ("area_failures", 0),
        ],
    )
}

/// Scoped by --pid: one process creating a 16 MiB BPF array map gets the
/// area stage failed, its bpf(2) returns ENOMEM and the report says "error
/// to userspace via bpf"; a second process doing the same at the same time
/// is not touched.
pub fn bpf_map_error_to_userspace(ctx: &Ctx) -> Result<()> {
    use std::io::Write as _;
    let spawn = |name: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("read go; exec bpftool map create /sys/fs/bpf/{name} type array key 4 value 4096 entries 4096 name {name}")])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
    };
    let (mut target, mut other) = (spawn("inj_target")?, spawn("inj_other")?);
    let pid = target.id().to_string();
    let inj = start(
        ctx,
        "inject_bpf_map",
        &[
            "--stage",
            "area",
            "--pid",
            &pid,
            "--caller",
            nofail_test_support::bpf::array_map_caller()?,
        ],
    )?;
    for child in [&mut target, &mut other] {
        child.stdin.take().expect("piped").write_all(b"go\n")?;
    }
    let (t, o) = (target.wait_with_output()?, other.wait_with_output()?);
    let report = inj.finish()?;
    let t_err = String::from_utf8_lossy(&t.stderr);
    ensure!(
        !t.status.success() && says_enomem(&t_err),
        "targeted bpf(2) did not fail with ENOMEM: {t_err}"
    );
    ensure!(
        o.status.success(),
        "the other process was touched: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let b = behaviour(&report, nofail_test_support::bpf::array_map_caller()?)?;
    ensure!(
        b["error_to_userspace"] == 1 && b["syscalls"]["bpf"] == 1 && b["absorbed"] == 0,
        "{b}"
    );
    let _ = std::fs::remove_file("/sys/fs/bpf/inj_other");
    Ok(())
}

/// --dry-run counts what it would fail and fails nothing.
pub fn dry_run_fails_nothing(ctx: &Ctx) -> Result<()> {
    let inj = start(
        ctx,
        "inject_dry_run",
        &["--stage", "area", "--caller", "site_vmalloc", "--dry-run"],
    )?;
    let (run, report) = inj.around(|| trigger::run("vmalloc", 4, 64 << 10, Arm::Off))?;
    ensure!(run.null == 0, "a dry run failed {} calls", run.null);
    // Each call's area stage makes two slab allocations (vm_struct, vmap_area).
    ensure!(
        field(&report["injection"]["counts"], "injected")? >= 4,
        "would-inject count: {}",
        report["injection"]["counts"]
    );
    expect_fields(
        &report,
        "site_vmalloc",
        &[("calls", 4), ("null_returns", 0)],
    )
}

// On a stock kernel (no CONFIG_BPF_KPROBE_OVERRIDE) inject refuses before
// attaching anything, in one line naming what is missing. On the kernel
// where injection works, every bad rule is still one line, a non-zero
// exit, and nothing loaded: the rules are checked before the object is
// loaded (harness::loaded_while).
pub fn bad_rules_attach_nothing(ctx: &Ctx) -> Result<()> {
    ctx.load_trigger()?;
    // The control: a good rule does load nofail's maps and programs.
    let (out, (maps, progs)) = harness::loaded_while(|| {
        Ok(std::process::Command::new(&ctx.nofail)
            .args(["inject", "--stage", "area", "--duration", "10ms"])
            .output()?)
    })?;
    ensure!(
        out.status.success() && maps > 0 && progs > 0,
        "control run: {:?}, {maps} maps, {progs} programs: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    for (args, code, needle) in [
        (
            &["--stage", "pagetable"][..],
            2,
            "invalid value 'pagetable'",
        ),
        (
            &["--stage", "area", "--probability", "1.5"],
            2,
            "from 0 to 1",
        ),
        (&["--stage", "area", "--times", "-3"], 2, "--times"),
        (
            &["--stage", "area", "--fail-first", "-1"],
            2,
            "--fail-first",
        ),
        (
            &["--stage", "area", "--inject-mode", "uprobe"],
            2,
            "invalid value 'uprobe'",
        ),
        (
            &["--stage", "area", "--caller", "no_such_function_xyz"],
            1,
            "no_such_function_xyz",
        ),
    ] {
        let (out, (maps, progs)) = harness::loaded_while(|| {
            Ok(std::process::Command::new(&ctx.nofail)
                .arg("inject")
                .args(args)
                .args(["--duration", "5s"])
                .output()?)
        })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(code) && stderr.lines().count() == 1,
            "{args:?}: exit {:?}: {stderr}",
            out.status.code()
        );
        ensure!(stderr.contains(needle), "{args:?}: {stderr}");
        ensure!(
            maps == 0 && progs == 0,
            "{args:?}: nofail created {maps} maps and {progs} programs before refusing"
        );
    }
    Ok(())
}

pub fn refused_without_injection_support(ctx: &Ctx) -> Result<()> {
    for (mode, needle) in [
        ("auto", "CONFIG_BPF_KPROBE_OVERRIDE"),
        // Debian leaves CONFIG_FUNCTION_ERROR_INJECTION off as well.
        ("fmod-ret", "fmod_ret needs CONFIG_FUNCTION_ERROR_INJECTION"),
    ] {
        // The kernel's config (passed in by xtask) already says no, so
        // nofail must refuse without loading anything at all.
        let (out, (maps, progs)) = harness::loaded_while(|| {
            Ok(std::process::Command::new(&ctx.nofail)
                .args(["inject", "--stage", "area", "--inject-mode", mode])
                .args(["--duration", "1s"])
                .output()?)
        })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(1) && stderr.lines().count() == 1,
            "{mode}: exit {:?}: {stderr}",
            out.status.code()
        );
        ensure!(
            stderr.contains(needle) && stderr.contains("--kernel test"),
            "{mode}: {stderr}"
        );
        ensure!(
            maps == 0 && progs == 0,
            "{mode}: {maps} maps and {progs} programs loaded before refusing"
        );
    }
    Ok(())
}

/// --fail-first above --max-consecutive: the guard lets the NOFAIL call
/// through after max-consecutive failures.
pub fn guard_ends_nofail_loop(ctx: &Ctx) -> Result<()> {
    let inj = start(
        ctx,
        "inject_guard",
        &[
            "--stage",
            "area",
            "--caller",
            "site_vmalloc_nofail",
            "--fail-first",
            "20",
            "--max-consecutive",
            "4",
        ],
    )?;
    let (run, report) = inj.around(|| trigger::run("vmalloc_nofail", 1, 64 << 10, Arm::Off))?;
    ensure!(run.null == 0 && run.calls == 1, "{run:?}");
    ensure!(
        report["injection"]["counts"]["injected"] == 4,
        "injected {} != 4",
        report["injection"]["counts"]["injected"]
    );
    ensure!(
        field(&report["injection"]["counts"], "skipped_guard")? >= 1,
        "{}",
        report["injection"]["counts"]
    );
    expect_fields(
        &report,
        "site_vmalloc_nofail",
        &[("area_retries", 4), ("calls", 1)],
    )
}

/// kill -9 in the middle of an unbounded injection: the BPF links die with
/// the process, nothing stays attached, the next allocations succeed.
pub fn kill_9_detaches(ctx: &Ctx) -> Result<()> {
    kill_9(ctx, "kprobe")
}

pub fn kill_9_detaches_fmod_ret(ctx: &Ctx) -> Result<()> {
    kill_9(ctx, "fmod-ret")
}

fn kill_9(ctx: &Ctx, mode: &str) -> Result<()> {
    ctx.load_trigger()?;
    // Ground truth: the kernel's own program and map lists.
    let before = bpf::Snapshot::take()?;
    let inj = start(
        ctx,
        &format!("inject_kill_{mode}"),
        &[
            "--stage",
            "area",
            "--caller",
            "site_vmalloc",
            "--inject-mode",
            mode,
        ],
    )?;
    let during = trigger::run("vmalloc", 2, 64 << 10, Arm::Off)?;
    ensure!(during.null == 2, "injection was not active: {during:?}");
    let running = before.created_since()?;
    ensure!(
        !running.programs.is_empty(),
        "no program loaded while nofail ran: {running}"
    );
    unsafe { libc::kill(inj.pid() as i32, libc::SIGKILL) };
    let status = inj.wait()?;
    ensure!(!status.success(), "nofail survived SIGKILL");
    // Teardown is deferred (RCU, work queues): give it a moment.
    let left = before.left_after(Duration::from_secs(5))?;
    ensure!(left.is_empty(), "still loaded after kill -9: {left}");
    let after = trigger::run("vmalloc", 3, 64 << 10, Arm::Off)?;
    ensure!(
        after.null == 0,
        "allocations still fail after kill -9: {after:?}"
    );
    Ok(())
}

/// ENOMEM as a program printed it: glibc's strerror() (bpftool), musl's
/// (the static vm-tests), or std's `(os error 12)`.
fn says_enomem(text: &str) -> bool {
    ["Cannot allocate memory", "Out of memory", "(os error 12)"]
        .iter()
        .any(|s| text.contains(s))
}
