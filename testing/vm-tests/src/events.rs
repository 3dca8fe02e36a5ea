// SPDX-License-Identifier: MIT OR Apache-2.0
//! `--events` scenarios (test kernel): every event line checked against the
//! trigger's own view (which task got which NULL, how many times a loop
//! turned), the text lines against the JSON lines, and the drop count
//! against the failures the trigger saw.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

use crate::{
    harness::{Ctx, Trace},
    trigger::{self, Arm, Injector},
};

fn gettid() -> u64 {
    unsafe { libc::syscall(libc::SYS_gettid) as u64 }
}

/// The events a run wrote: its JSON lines, and its text lines of `kind`
/// (INJECTED, RETRY, STUCK) from stdout.
struct Events {
    json: Vec<Value>,
    text: Vec<String>,
}

fn events_of(json_path: &std::path::Path, stdout: &std::path::Path, kind: &str) -> Result<Events> {
    let json = std::fs::read_to_string(json_path)
        .with_context(|| format!("no --events-json file {}", json_path.display()))?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<Value>, _>>()?;
    let text = std::fs::read_to_string(stdout)?
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(kind))
        .map(str::to_string)
        .collect();
    Ok(Events { json, text })
}

/// A JSON field that must be there.
fn get<'a>(ev: &'a Value, name: &str) -> Result<&'a Value> {
    ev.get(name)
        .with_context(|| format!("event without {name}: {ev}"))
}

fn num(ev: &Value, name: &str) -> Result<u64> {
    get(ev, name)?
        .as_u64()
        .with_context(|| format!("{name} is not a number: {ev}"))
}

/// The report's health.events, every field present.
fn health(report: &Value) -> Result<(u64, u64, u64, u64, u64)> {
    let h = report["health"]
        .get("events")
        .with_context(|| format!("no health.events in the report: {}", report["health"]))?;
    Ok((
        num(h, "shown")?,
        num(h, "sent")?,
        num(h, "dropped")?,
        num(h, "over_rate")?,
        num(h, "ring_full")?,
    ))
}

fn start_inject(ctx: &Ctx, name: &str, extra: &[&str]) -> Result<(Trace, std::path::PathBuf)> {
    ctx.load_trigger()?;
    let json = ctx.out.join(format!("{name}.events.json"));
    let mut args = vec!["--events", "--events-json", json.to_str().context("path")?];
    args.extend_from_slice(extra);
    Ok((Trace::start_cmd(ctx, "inject", name, &args)?, json))
}

/// --fail-first 3 on a NOFAIL site: exactly 3 INJECTED lines, attempts 1,
/// 2, 3, from this task, at the site, in the stage asked for; in both
/// stages and with both mechanisms (kprobe override, fmod_ret); the area
/// run with --events-stack, each stack passing through the site.
pub fn fail_first_lines(ctx: &Ctx) -> Result<()> {
    for (stage, site, mode, stack) in [
        ("area", "vmalloc_nofail", "kprobe", true),
        ("mapping", "vmalloc_nofail_fresh", "fmod-ret", false),
    ] {
        let symbol = format!("site_{site}");
        let name = format!("events_fail_first_{stage}");
        let mut args = crate::inject::fail_first_rule(stage, &symbol, mode);
        if stack {
            args.push("--events-stack");
        }
        let (inj, json) = start_inject(ctx, &name, &args)?;
        let stdout = inj.stdout.clone();
        let tid = gettid();
        // The entry program leaves the name out without --comm; the event
        // must still carry it.
        let comm = std::fs::read_to_string("/proc/thread-self/comm")?;
        let comm = comm.trim_end();
        let (run, report) = inj.around(|| trigger::run(site, 1, 64 << 10, Arm::Off))?;
        ensure!(run.calls == 1 && run.null == 0, "{stage}: {run:?}");
        // Outside nofail: the kernel's loop slept once per failure.
        ensure!(
            run.sleeps == 3,
            "{stage}: the kernel slept {} times, not 3",
            run.sleeps
        );
        let ev = events_of(&json, &stdout, "INJECTED")?;
        ensure!(
            ev.json.len() == 3 && ev.text.len() == 3,
            "{stage}: {} JSON lines, {} text lines for --fail-first 3: {:?}",
            ev.json.len(),
            ev.text.len(),
            ev.text
        );
        for (i, e) in ev.json.iter().enumerate() {
            let caller = get(e, "caller")?.as_str().unwrap_or_default();
            ensure!(
                get(e, "event")? == "injected"
                    && num(e, "attempt")? == i as u64 + 1
                    && num(e, "tid")? == tid
                    && get(e, "comm")? == comm
                    && get(e, "stage")? == stage
                    && get(e, "nofail")? == true
                    && get(e, "rule")? == &serde_json::json!(["fail-first"])
                    && caller.starts_with(&format!("{symbol}+")),
                "{stage}: event {} is not attempt {} of tid {tid} at {symbol}: {e}",
                i + 1,
                i + 1
            );
            if stack {
                let frames = get(e, "stack")?.as_array().cloned().unwrap_or_default();
                ensure!(
                    frames.iter().any(|f| f
                        .as_str()
                        .is_some_and(|f| f.starts_with(&format!("{symbol}+")))),
                    "{stage}: stack of event {} does not pass through {symbol}: {e}",
                    i + 1
                );
            } else {
                ensure!(
                    e.get("stack").is_none(),
                    "a stack without --events-stack: {e}"
                );
            }
            let line = &ev.text[i];
            ensure!(
                line.contains(&format!(" attempt {} ", i + 1))
                    && line.contains(&format!("tid {tid} ({comm}) "))
                    && line.contains(caller),
                "{stage}: text line {} does not match its JSON line: {line}",
                i + 1
            );
        }
        let (shown, sent, dropped, _, _) = health(&report)?;
        ensure!(
            (shown, sent, dropped) == (3, 3, 0),
            "{stage}: health.events shown {shown} sent {sent} dropped {dropped}"
        );
    }
    Ok(())
}

/// --times 5 over 4 tasks calling at once: exactly 5 INJECTED lines, and
/// their thread ids are the ones the trigger saw get the NULLs.
pub fn times_concurrent_tids(ctx: &Ctx) -> Result<()> {
    const TASKS: usize = 4;
    const CALLS: u64 = 300;
    let (inj, json) = start_inject(
        ctx,
        "events_times_concurrent",
        &crate::inject::rule("area", "site_vmalloc", &["--times", "5"]),
    )?;
    let stdout = inj.stdout.clone();
    let dir = "/sys/kernel/debug/nofail_trigger";
    std::fs::write(format!("{dir}/null_tids"), "0")?;
    let work = || -> Result<Vec<u64>> {
        std::fs::write(format!("{dir}/size"), "8192")?;
        std::fs::write(format!("{dir}/count"), CALLS.to_string())?;
        std::fs::write(format!("{dir}/fail"), "0")?;
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                std::thread::spawn(move || -> Result<u64> {
                    std::fs::write(format!("{dir}/run"), "vmalloc")?;
                    Ok(gettid())
                })
            })
            .collect();
        tasks
            .into_iter()
            .map(|t| t.join().map_err(|_| anyhow::anyhow!("thread panicked"))?)
            .collect()
    };
    let (workers, _report) = inj.around(work)?;
    let mut truth: Vec<u64> = std::fs::read_to_string(format!("{dir}/null_tids"))?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    ensure!(
        truth.len() == 5,
        "the trigger saw {} NULLs for --times 5",
        truth.len()
    );
    let ev = events_of(&json, &stdout, "INJECTED")?;
    let mut tids: Vec<u64> = ev
        .json
        .iter()
        .map(|e| num(e, "tid"))
        .collect::<Result<_>>()?;
    truth.sort_unstable();
    tids.sort_unstable();
    ensure!(
        tids == truth && ev.text.len() == 5,
        "event tids {tids:?} ({} text lines), NULLs went to {truth:?}",
        ev.text.len()
    );
    let workers: BTreeSet<u64> = workers.into_iter().collect();
    ensure!(
        tids.iter().all(|t| workers.contains(t)),
        "event tids {tids:?} are not the worker threads {workers:?}"
    );
    let spent: BTreeSet<u64> = ev
        .json
        .iter()
        .map(|e| num(e, "times_spent"))
        .collect::<Result<_>>()?;
    ensure!(
        spent == (1..=5).collect(),
        "times_spent {spent:?} is not 1..=5"
    );
    Ok(())
}

/// --events-rate bound hit on purpose: 20 failures at 5 events per second.
/// Lines shown and dropped add up to the 20 NULLs the trigger saw.
pub fn dropped_exact(ctx: &Ctx) -> Result<()> {
    const TIMES: u64 = 20;
    let (inj, json) = start_inject(
        ctx,
        "events_dropped",
        &[
            "--stage",
            "area",
            "--caller",
            "site_vmalloc",
            "--times",
            "20",
            "--events-rate",
            "5",
        ],
    )?;
    let stdout = inj.stdout.clone();
    let (run, report) = inj.around(|| trigger::run("vmalloc", 50, 8192, Arm::Off))?;
    ensure!(run.null == TIMES, "the trigger saw {} NULLs", run.null);
    let ev = events_of(&json, &stdout, "INJECTED")?;
    let (shown, sent, dropped, over_rate, ring_full) = health(&report)?;
    ensure!(
        shown == ev.json.len() as u64 && shown == ev.text.len() as u64 && sent == shown,
        "shown {shown}, sent {sent}, {} JSON lines, {} text lines",
        ev.json.len(),
        ev.text.len()
    );
    ensure!(
        shown >= 5
            && dropped > 0
            && shown + dropped == TIMES
            && over_rate == dropped
            && ring_full == 0,
        "{shown} shown + {dropped} dropped ({over_rate} over rate, {ring_full} ring full) != {TIMES} NULLs"
    );
    let text = std::fs::read_to_string(&stdout)?;
    ensure!(
        text.contains(&format!(
            "events: {shown} shown, {dropped} dropped ({over_rate} over --events-rate 5/s, 0 with the ring buffer full)"
        )),
        "no tally line in the output"
    );
    Ok(())
}

/// trace --events: a NOFAIL call whose area stage fails K times shows K
/// RETRY lines, attempts 1..K, and one STUCK line once it is older than
/// --stuck-after.
pub fn trace_each_retry_and_stuck(ctx: &Ctx) -> Result<()> {
    ctx.load_trigger()?;
    let hz = trigger::hz()?;
    let k = hz / 2; // half a second of one-jiffy sleeps
    let json = ctx.out.join("events_trace.events.json");
    let trace = Trace::start(
        ctx,
        "events_trace",
        &[
            "--events",
            "--events-json",
            json.to_str().context("path")?,
            "--stuck-after",
            "200ms",
        ],
    )?;
    let stdout = trace.stdout.clone();
    let tid = gettid();
    let (run, left) =
        trigger::run_injected(Injector::ShouldFailslab, k, "vmalloc_nofail", 1, 64 << 10)?;
    let report = trace.finish()?;
    ensure!(run.null == 0 && left == 0, "{run:?}, {left} left");
    let retries = events_of(&json, &stdout, "RETRY")?;
    let mine: Vec<&Value> = retries
        .json
        .iter()
        .filter(|e| e["event"] == "retry")
        .collect();
    ensure!(
        mine.len() as u64 == k && retries.text.len() as u64 == k,
        "{} retry events ({} text lines) for {k} forced retries",
        mine.len(),
        retries.text.len()
    );
    for (i, e) in mine.iter().enumerate() {
        ensure!(
            num(e, "attempt")? == i as u64 + 1
                && num(e, "tid")? == tid
                && get(e, "stage")? == "area"
                && num(e, "sleep_jiffies")? == 1
                && get(e, "caller")?
                    .as_str()
                    .is_some_and(|c| c.starts_with("site_vmalloc_nofail+")),
            "retry event {} is not attempt {} in the area stage: {e}",
            i + 1,
            i + 1
        );
    }
    let stuck = events_of(&json, &stdout, "STUCK")?;
    let stuck_json: Vec<&Value> = stuck
        .json
        .iter()
        .filter(|e| e["event"] == "stuck")
        .collect();
    ensure!(
        stuck_json.len() == 1 && stuck.text.len() == 1,
        "{} STUCK events ({} text lines), want 1",
        stuck_json.len(),
        stuck.text.len()
    );
    let s = stuck_json[0];
    ensure!(
        num(s, "tid")? == tid && num(s, "age_ns")? >= 200_000_000 && num(s, "failures")? < k,
        "STUCK event: {s}"
    );
    let (shown, _, dropped, _, _) = health(&report)?;
    ensure!(
        shown == k + 1 && dropped == 0,
        "health.events shown {shown} dropped {dropped}, want {} and 0",
        k + 1
    );
    Ok(())
}

/// Without --events the event paths are not in the loaded programs (the
/// verifier removed them: the loaded injector is shorter), no events are
/// reported, and the health has no events entry.
pub fn off_removes_paths(ctx: &Ctx) -> Result<()> {
    let insns = |report: &Value, program: &str| -> Result<u64> {
        report["health"]["programs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["program"] == program)
            .with_context(|| format!("{program} not in health.programs"))
            .and_then(|p| num(p, "insns"))
    };
    let rule = crate::inject::rule(
        "area",
        "site_vmalloc",
        &["--times", "1", "--inject-mode", "kprobe"],
    );
    ctx.load_trigger()?;
    let off = Trace::start_cmd(ctx, "inject", "events_off", &rule)?;
    let stdout_off = off.stdout.clone();
    let (_, report_off) = off.around(|| trigger::run("vmalloc", 2, 8192, Arm::Off))?;
    let (on, _) = start_inject(ctx, "events_on", &rule)?;
    let (_, report_on) = on.around(|| trigger::run("vmalloc", 2, 8192, Arm::Off))?;
    ensure!(
        report_off["health"].get("events").is_none(),
        "health.events without --events: {}",
        report_off["health"]
    );
    let text = std::fs::read_to_string(stdout_off)?;
    ensure!(
        !text
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("INJECTED")),
        "event lines without --events"
    );
    let mut checked = 0;
    for program in [
        "inject_failslab",
        "retry_sleep_kprobe",
        "retry_sleep_fentry",
    ] {
        let (a, b) = match (insns(&report_off, program), insns(&report_on, program)) {
            (Ok(a), Ok(b)) => (a, b),
            // The tracer loads one of the two sleep programs.
            _ if program.starts_with("retry_sleep") => continue,
            (a, b) => {
                a?;
                b?;
                unreachable!()
            }
        };
        checked += 1;
        ensure!(
            a > 0 && a < b,
            "{program}: {a} instructions loaded without --events, {b} with"
        );
        println!("  {program}: {a} instructions without --events, {b} with");
    }
    ensure!(checked == 2, "no retry sleep program in health.programs");
    Ok(())
}
