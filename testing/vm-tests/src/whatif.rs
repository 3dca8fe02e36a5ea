// SPDX-License-Identifier: MIT OR Apache-2.0
//! `--what-if` against real exhaustion: the trigger fills a vmalloc window
//! it owns until a NOFAIL call into it fails in the area stage, and frees
//! at a retry sleep it picks; its own probes give the time of every sleep,
//! wake and free (ktime_get_ns, the clock nofail reads).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use nofail_test_support::timed::{Series, Timed};

use crate::{
    harness::{Ctx, Trace, field, row},
    trigger::{self, Injector},
};

const DIR: &str = "/sys/kernel/debug/nofail_trigger";

/// How far nofail's wake delay may stray from what the trigger's clock
/// saw: both read ktime, at probes a few microseconds apart.
const SLACK: u64 = 200_000;

/// What `exhaust_results` says of the last exhaustion run.
#[derive(Debug)]
struct Exhaust {
    ok: u64,
    window: u64,
    decoys_freed: u64,
    sleeps: u64,
    free_start_ns: u64,
    free_end_ns: u64,
    /// When the NOFAIL call returned (0 if it has not).
    ret_ns: u64,
    /// (sleep entry, wake) per retry sleep, in order.
    sleeps_at: Vec<(u64, u64)>,
}

impl Exhaust {
    /// The retry sleep (1-based) the trigger's free fell inside, if it
    /// fell inside one entirely.
    fn free_inside(&self) -> Option<usize> {
        self.sleeps_at
            .iter()
            .position(|&(s, w)| s < self.free_start_ns && self.free_end_ns < w)
            .map(|i| i + 1)
    }
}

fn start(cmd: &str) -> Result<()> {
    std::fs::write(format!("{DIR}/exhaust"), cmd).with_context(|| format!("exhaust {cmd:?}"))
}

/// Waits for the trigger's thread to get its memory and end.
fn finished() -> Result<Exhaust> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(format!("{DIR}/exhaust"))?;
        let head = text.lines().next().unwrap_or_default();
        let get = |name: &str| -> Result<u64> {
            head.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .with_context(|| format!("no {name} in {head:?}"))?
                .parse::<i64>()
                .map(|v| v.max(0) as u64)
                .context("bad number")
        };
        if get("done")? == 1 {
            let sleeps_at = text
                .lines()
                .filter_map(|l| {
                    let mut w = l.strip_prefix("sleep ")?.split_whitespace();
                    Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
                })
                .collect();
            return Ok(Exhaust {
                ok: get("ok")?,
                window: get("window")?,
                decoys_freed: get("decoys_freed")?,
                sleeps: get("sleeps")?,
                free_start_ns: get("free_start_ns")?,
                free_end_ns: get("free_end_ns")?,
                ret_ns: get("ret_ns")?,
                sleeps_at,
            });
        }
        if Instant::now() > deadline {
            bail!("the exhaustion thread is still looping after 60 s: {head}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One area-stage exhaustion run with no trace of its own (the pressure
/// scenario's services watch it): the window call's retry sleeps, counted
/// by the trigger, and whether it got its memory.
pub fn exhaust_area(decoys: u64, free_at: u64) -> Result<(u64, bool)> {
    start(&format!("area 16 {decoys} {free_at}"))?;
    let ex = finished()?;
    Ok((ex.sleeps, ex.ok == 1))
}

/// One area-stage exhaustion run under `nofail trace --what-if`; `decoys`
/// areas outside the window are freed in the first retry sleeps, one of
/// the window at sleep `free_at`. Retried (up to 3 runs) when the
/// trigger's free did not fall entirely inside that sleep: the truth is
/// then not known exactly.
fn area_run(ctx: &Ctx, name: &str, decoys: u64, free_at: u64) -> Result<()> {
    ctx.load_trigger()?;
    let hz = trigger::hz()?;
    let jiffy = 1_000_000_000 / hz;
    for attempt in 1..=3 {
        let trace = Trace::start(ctx, &format!("{name}_{attempt}"), &["--what-if"])?;
        start(&format!("area 16 {decoys} {free_at}"))?;
        let ex = finished();
        let report = trace.finish()?;
        let ex = ex?;
        ensure!(
            ex.ok == 1 && ex.window >= 2,
            "the window call failed: {ex:?}"
        );
        ensure!(
            ex.decoys_freed == decoys,
            "{} of {decoys} decoys freed",
            ex.decoys_freed
        );
        let r = ex.sleeps;
        let inside = ex.free_inside();
        if inside != Some(r as usize) {
            println!(
                "  (run {attempt}: the window's free fell {} of {r} sleeps; running again)",
                inside.map_or("outside".to_string(), |i| format!("inside sleep {i}"))
            );
            continue;
        }
        let row = row(&report, "site_vmalloc_nofail_window")?;
        let got = |f: &str| field(row, f);
        ensure!(
            r == free_at
                && got("area_retries")? == r
                && got("area_failures")? == r
                && got("sleeps")? == r
                && got("calls")? == 1,
            "kernel: {r} retry sleeps (free at {free_at}); nofail: {row}"
        );
        let (futile, freed) = (got("futile_retries")?, got("freed_retries")?);
        ensure!(
            futile == r - 1 && freed == 1,
            "{futile} futile and {freed} freed of {r} retries; want {} and 1",
            r - 1
        );
        let (_, wake) = ex.sleeps_at[r as usize - 1];
        let delay = got("wake_delay_ns")?;
        let (lo, hi) = (wake - ex.free_end_ns, wake - ex.free_start_ns);
        ensure!(
            delay + SLACK >= lo && delay <= hi + SLACK,
            "wake delay {delay} ns; the trigger saw the free {lo}..{hi} ns before the wake"
        );
        // Under TCG a one-jiffy sleep itself lasts several jiffies (the
        // guest's timer interrupt comes late), so the bound is the sleep's
        // own length, as the trigger measured it; the jiffy is printed.
        let (sleep_at, _) = ex.sleeps_at[r as usize - 1];
        ensure!(
            delay > 0 && delay <= wake - sleep_at + SLACK,
            "wake delay {delay} ns is longer than the sleep it ended ({} ns)",
            wake - sleep_at
        );
        let (slept, whatif) = (got("slept_ns")?, got("whatif_slept_ns")?);
        ensure!(
            whatif < slept && slept - whatif >= delay.saturating_sub(SLACK),
            "what-if {whatif} ns against {slept} ns slept, wake delay {delay} ns"
        );
        let hists = &row["histograms"];
        ensure!(
            hists["wake_delay_ns"]["buckets"]
                .as_array()
                .is_some_and(|b| b
                    .iter()
                    .map(|b| b["count"].as_u64().unwrap_or(0))
                    .sum::<u64>()
                    == 1),
            "wake delay histogram: {}",
            hists["wake_delay_ns"]
        );
        // The run whose truth is known is the one kept (testing/reports).
        std::fs::copy(
            ctx.out.join(format!("{name}_{attempt}.json")),
            ctx.out.join(format!("{name}.json")),
        )?;
        println!(
            "  ({r} retries, {futile} futile; free {:.2} ms into sleep {r} of {:.2} ms, wake delay {:.2} ms = {:.2} jiffies; slept {:.1} ms, what-if {:.1} ms)",
            (ex.free_start_ns - sleep_at) as f64 / 1e6,
            (wake - sleep_at) as f64 / 1e6,
            delay as f64 / 1e6,
            delay as f64 / jiffy as f64,
            slept as f64 / 1e6,
            whatif as f64 / 1e6
        );
        return Ok(());
    }
    bail!("in 3 runs the trigger's free never fell inside the retry sleep it was queued in")
}

/// A NOFAIL call into a full window, one reservation freed at the 5th
/// retry sleep: 5 retries, the first 4 futile, a wake delay within a
/// jiffy of the free.
pub fn area_exhaustion_one_free(ctx: &Ctx) -> Result<()> {
    area_run(ctx, "whatif_area", 0, 5)
}

/// The same with vmap areas outside the window freed in the first 4
/// sleeps: nothing the call can use, so those retries are futile too.
pub fn area_exhaustion_irrelevant_frees(ctx: &Ctx) -> Result<()> {
    area_run(ctx, "whatif_decoys", 4, 6)
}

/// Mapping stage: fail_page_alloc fails the first page-table page of 4
/// attempts of a NOFAIL call in fresh address space; the trigger frees a
/// page it held in the 2nd retry sleep. Page frees are constant on a
/// live kernel, so only that retry's verdict is known: not futile.
pub fn mapping_page_frees(ctx: &Ctx) -> Result<()> {
    const K: u64 = 4;
    ctx.load_trigger()?;
    for attempt in 1..=3 {
        let trace = Trace::start(ctx, &format!("whatif_mapping_{attempt}"), &["--what-if"])?;
        Injector::FailPageAlloc.arm(K)?;
        let run = start("mapping 2").and_then(|_| finished());
        let left = Injector::FailPageAlloc.remaining();
        Injector::FailPageAlloc.disarm()?;
        let report = trace.finish()?;
        let ex = run?;
        ensure!(
            ex.ok == 1 && left? == 0,
            "the call failed or fail_page_alloc had budget left: {ex:?}"
        );
        if ex.free_inside() != Some(2) {
            println!("  (run {attempt}: the page free fell outside sleep 2; running again)");
            continue;
        }
        let row = row(&report, "site_vmalloc_nofail_fresh")?;
        let got = |f: &str| field(row, f);
        ensure!(
            ex.sleeps == K && got("mapping_retries")? == K && got("sleeps")? == K,
            "kernel: {} retry sleeps for {K} failed page-table pages; nofail: {row}",
            ex.sleeps
        );
        let (futile, freed) = (got("futile_retries")?, got("freed_retries")?);
        ensure!(
            futile + freed == K && freed >= 1,
            "{futile} futile + {freed} freed for {K} retries (the trigger freed a page in sleep 2)"
        );
        let (slept, whatif, delay) = (
            got("slept_ns")?,
            got("whatif_slept_ns")?,
            got("wake_delay_ns")?,
        );
        ensure!(
            whatif <= slept,
            "what-if {whatif} ns above {slept} ns slept"
        );
        println!(
            "  ({K} retries: {futile} futile, {freed} after a page free; wake delay {:.2} ms in all; slept {:.1} ms, what-if {:.2} ms)",
            delay as f64 / 1e6,
            slept as f64 / 1e6,
            whatif as f64 / 1e6
        );
        return Ok(());
    }
    bail!("in 3 runs the trigger's page free never fell inside the 2nd retry sleep")
}

/// Milliseconds from the first retry sleep to the trigger's free in the
/// timed runs: several stock sleeps (a jiffy lasts 4 ms at HZ=250, longer
/// under TCG), well inside the patch's 100 ms backstop.
const FREE_AFTER_MS: u64 = 40;

/// Timed runs per kind: the comparison takes their medians.
const RUNS: usize = 3;

/// `RUNS` timed runs, each checked by `check`, written as the kind's
/// series (`timed_<kind>.json`).
fn series(
    ctx: &Ctx,
    kind: &'static str,
    cmd: &str,
    site: &str,
    inject: u64,
    check: impl Fn(&Timed) -> Result<()>,
) -> Result<Series> {
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let t = timed(ctx, kind, cmd, site, inject)?;
        check(&t)?;
        runs.push(t);
    }
    let s = Series {
        kind: kind.into(),
        runs,
    };
    std::fs::write(
        ctx.out.join(format!("timed_{kind}.json")),
        serde_json::to_string_pretty(&s)?,
    )?;
    Ok(s)
}

/// One timed run under `nofail trace --what-if`: `cmd` is the trigger's
/// exhaust command, `site` the caller. Runs again (up to 3 times) when
/// the free did not land inside a retry sleep (the truth is then not
/// exact) or came after the patch's backstop time (the host held the
/// guest up). `inject`: fail_page_alloc's budget (mapping stage), 0 for the
/// area stage, whose one relevant free is the trigger's: there nofail's
/// wake delay must be the trigger's.
fn timed(ctx: &Ctx, kind: &'static str, cmd: &str, site: &str, inject: u64) -> Result<Timed> {
    ctx.load_trigger()?;
    let hz = trigger::hz()?;
    for attempt in 1..=3 {
        let trace = Trace::start(ctx, &format!("timed_{kind}_{attempt}"), &["--what-if"])?;
        if inject > 0 {
            Injector::FailPageAlloc.arm(inject)?;
        }
        let run = start(cmd).and_then(|_| finished());
        if inject > 0 {
            let left = Injector::FailPageAlloc.remaining();
            Injector::FailPageAlloc.disarm()?;
            ensure!(left? == 0, "fail_page_alloc had budget left");
        }
        let report = trace.finish()?;
        let ex = run?;
        ensure!(
            ex.ok == 1 && ex.ret_ns > 0,
            "the NOFAIL call failed: {ex:?}"
        );
        let Some(inside) = ex.free_inside() else {
            println!("  (run {attempt}: the free fell between retry sleeps; running again)");
            continue;
        };
        // The host held the guest up (TCG): the trigger's timer fired
        // later than the patch's backstop would have, so the two expired
        // together and the run cannot tell which woke the task (seen once
        // in CI: the free 110.4 ms in, 40 ms asked).
        let free_after = ex.free_start_ns - ex.sleeps_at[0].0;
        if free_after >= BACKSTOP_NS {
            println!(
                "  (run {attempt}: the free came {:.1} ms after the first sleep, past the backstop's {} ms: the guest was held up; running again)",
                free_after as f64 / 1e6,
                BACKSTOP_NS / 1_000_000
            );
            continue;
        }
        let row = row(&report, site)?;
        let got = |f: &str| field(row, f);
        let retries = got("area_retries")? + got("mapping_retries")?;
        ensure!(
            retries == ex.sleeps && got("sleeps")? == ex.sleeps && got("calls")? == 1,
            "kernel: {} retry sleeps; nofail: {row}",
            ex.sleeps
        );
        let (futile, freed) = (got("futile_retries")?, got("freed_retries")?);
        ensure!(
            futile + freed == retries,
            "{futile} futile + {freed} freed != {retries} retries"
        );
        let (_, wake) = ex.sleeps_at[inside - 1];
        let first_sleep = ex.sleeps_at[0].0;
        let delay = got("wake_delay_ns")?;
        let (lo, hi) = (wake - ex.free_end_ns, wake - ex.free_start_ns);
        ensure!(
            inject > 0 || (delay + SLACK >= lo && delay <= hi + SLACK),
            "nofail's wake delay {delay} ns; the trigger saw the free {lo}..{hi} ns before the wake"
        );
        let t = Timed {
            kind: kind.into(),
            hz,
            free_after_ns: ex.free_start_ns - first_sleep,
            retries,
            futile,
            freed,
            stall_ns: ex.ret_ns - first_sleep,
            slept_ns: got("slept_ns")?,
            whatif_slept_ns: got("whatif_slept_ns")?,
            wake_delay_ns: delay,
            truth_wake_delay_ns: lo,
        };
        println!(
            "  ({retries} retries, {futile} futile; free {:.1} ms after the first sleep, in sleep {inside}; stall {:.1} ms, --what-if predicts {:.1} ms; wake delay {:.2} ms)",
            t.free_after_ns as f64 / 1e6,
            t.stall_ns as f64 / 1e6,
            t.predicted_stall_ns() as f64 / 1e6,
            t.truth_wake_delay_ns as f64 / 1e6
        );
        return Ok(t);
    }
    bail!("in 3 runs the trigger's free never fell inside a retry sleep before the backstop's time")
}

/// The window freed once per run, `FREE_AFTER_MS` in, and `decoys`
/// areas outside it before that; `check` judges each run.
fn area_series(
    ctx: &Ctx,
    kind: &'static str,
    decoys: u64,
    check: impl Fn(&Timed) -> Result<()>,
) -> Result<Series> {
    series(
        ctx,
        kind,
        &format!("area_timed 16 {decoys} {}", FREE_AFTER_MS * 1000),
        "site_vmalloc_nofail_window",
        0,
        |t| {
            freed_on_time(t, FREE_AFTER_MS)?;
            ensure!(
                t.freed == 1,
                "{} retries after a relevant free; the window was freed once",
                t.freed
            );
            check(t)
        },
    )
}

/// The trigger's free came no earlier than asked (an hrtimer sleep never
/// ends early; a free at once means the trigger lost the first sleep's
/// time).
fn freed_on_time(t: &Timed, after_ms: u64) -> Result<()> {
    ensure!(
        t.free_after_ns >= after_ms * 1_000_000,
        "the trigger freed {} ns after the first retry sleep, before the {after_ms} ms asked",
        t.free_after_ns
    );
    Ok(())
}

/// Page-table pages fail_page_alloc fails in the timed mapping run, and
/// when the trigger frees its page: inside the first retry sleep.
const MAPPING_FAILS: u64 = 4;
const MAPPING_FREE_AFTER_MS: u64 = 5;

/// Stock kernel: every retry before the free is futile, the one after it
/// is not.
fn stock_loop(t: &Timed) -> Result<()> {
    ensure!(
        t.retries >= 2 && t.futile == t.retries - 1,
        "stock: {} retries, {} futile; want every retry before the free futile",
        t.retries,
        t.futile
    );
    Ok(())
}

/// Stock kernel: the window freed 40 ms after the first failure.
pub fn timed_area_stock(ctx: &Ctx) -> Result<()> {
    area_series(ctx, "area", 0, stock_loop).map(|_| ())
}

/// Stock kernel: 4 areas outside the window freed before it; the retries
/// they fall in are futile all the same.
pub fn timed_decoys_stock(ctx: &Ctx) -> Result<()> {
    area_series(ctx, "decoys", 4, stock_loop).map(|_| ())
}

/// Mapping stage, either kernel (the patch keeps its one-jiffy sleep):
/// fail_page_alloc fails 4 page-table pages, a page is freed 5 ms in.
pub fn timed_mapping_any(ctx: &Ctx) -> Result<()> {
    series(
        ctx,
        "mapping",
        &format!("mapping_timed {}", MAPPING_FREE_AFTER_MS * 1000),
        "site_vmalloc_nofail_fresh",
        MAPPING_FAILS,
        |t| {
            freed_on_time(t, MAPPING_FREE_AFTER_MS)?;
            ensure!(
                t.retries == MAPPING_FAILS,
                "{} retries for {MAPPING_FAILS} failed page-table pages",
                t.retries
            );
            Ok(())
        },
    )
    .map(|_| ())
}

/// The patch's backstop (`VMAP_NOFAIL_WAIT`, HZ / 10).
const BACKSTOP_NS: u64 = 100_000_000;

/// Patched kernel, each run: one wait, ended by the free and not by the
/// backstop (the free is not futile, the stall is shorter than the
/// backstop).
fn patched_run(t: &Timed) -> Result<()> {
    ensure!(
        t.retries == 1 && t.futile == 0 && t.stall_ns < BACKSTOP_NS,
        "patched: {} retries, {} futile, stall {} ns; want one wait ended by the free",
        t.retries,
        t.futile,
        t.stall_ns
    );
    Ok(())
}

/// The bound on the patched wake: a task woken by a free runs again
/// within a jiffy of the free's end. The wake makes it runnable at once;
/// what is left is the freeing thread's return and a context switch on a
/// guest CPU, where a stock loop waits for its jiffy to end. Judged on
/// the median: a run under TCG can lose milliseconds to the host.
fn patched_wake(s: &Series) -> Result<()> {
    let bound = s.runs.first().map_or(0, Timed::jiffy_ns);
    let delay = s.median(|t| t.truth_wake_delay_ns);
    ensure!(
        delay < bound,
        "patched: woken {delay} ns after the free (median), not within a jiffy ({bound} ns)"
    );
    Ok(())
}

/// Patched kernel, the stock scenario's timing.
pub fn event_wait_area(ctx: &Ctx) -> Result<()> {
    patched_wake(&area_series(ctx, "area", 0, patched_run)?)
}

/// Patched kernel with decoys: frees outside the window do not wake the
/// task (the wake function checks the range), so still one wait.
pub fn event_wait_decoys(ctx: &Ctx) -> Result<()> {
    patched_wake(&area_series(ctx, "decoys", 4, patched_run)?)
}
