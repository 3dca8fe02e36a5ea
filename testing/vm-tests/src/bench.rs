//! `vm-tests --bench FILE`: calls/s of the trigger's vmalloc(64 KiB)+vfree
//! loop untraced, under `nofail trace` (fentry and kprobe modes) and under
//! an equivalent bpftrace script doing the same per-caller aggregation.
//! Ratios come from one boot; nothing here asserts a wall-clock limit.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, ensure};
use serde_json::json;

use crate::{
    harness::{Ctx, Trace, field, row},
    trigger,
};

const CALLS: u64 = 20_000;
const ROUNDS: usize = 3;
const SIZE: u64 = 64 << 10;

/// Per-caller calls, NOFAIL calls, NULL returns and latency, as nofail's
/// vmalloc-core programs keep them. Debian's bpftrace (0.17) refuses kfunc
/// on functions with more than six parameters, so it uses kprobes and reads
/// the stack-passed `caller` (argument 9) as nofail's kprobe mode does.
const BPFTRACE: &str = r#"
kprobe:__vmalloc_node_range_noprof {
    @start[tid] = nsecs; @caller[tid] = *(uint64 *)(reg("sp") + 24); @nf[tid] = arg4 & 0x8000;
}
kretprobe:__vmalloc_node_range_noprof /@start[tid]/ {
    $c = ksym(@caller[tid]);
    @calls[$c] = count();
    @lat[$c] = sum(nsecs - @start[tid]);
    if (@nf[tid]) { @nofail[$c] = count(); }
    if (retval == 0) { @null[$c] = count(); }
    delete(@start[tid]); delete(@caller[tid]); delete(@nf[tid]);
}
"#;

/// Median calls/s over ROUNDS runs of CALLS calls.
fn measure() -> Result<f64> {
    let mut rates = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let r = trigger::run("vmalloc", CALLS, SIZE, trigger::Arm::Off)?;
        ensure!(r.calls == CALLS && r.null == 0, "trigger run: {r:?}");
        rates.push(CALLS as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[ROUNDS / 2])
}

fn with_nofail(ctx: &Ctx, mode: &str) -> Result<f64> {
    let trace = Trace::start(ctx, &format!("bench_{mode}"), &["--mode", mode])?;
    let rate = measure();
    let report = trace.finish()?;
    let rate = rate?;
    let seen = field(row(&report, "site_vmalloc")?, "calls");
    println!(
        "  nofail {mode}: counted {seen} of {} calls",
        CALLS * ROUNDS as u64
    );
    Ok(rate)
}

fn with_bpftrace() -> Result<f64> {
    let mut child = Command::new("bpftrace")
        .args(["-e", BPFTRACE])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot run bpftrace")?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    loop {
        let line = lines.next().context("bpftrace exited before attaching")??;
        if line.starts_with("Attaching") {
            break;
        }
    }
    let rate = measure();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let maps: Vec<String> = lines.map_while(Result::ok).collect();
    child.wait()?;
    let calls = maps
        .iter()
        .find(|l| l.starts_with("@calls[") && l.contains("site_vmalloc"))
        .cloned();
    println!(
        "  bpftrace: {}",
        calls.unwrap_or_else(|| "no @calls line for site_vmalloc".into())
    );
    rate
}

pub fn run(ctx: &Ctx, out: &std::path::Path) -> Result<()> {
    ctx.load_trigger()?;
    trigger::run("vmalloc", 1000, SIZE, trigger::Arm::Off)?; // warm up
    // Each traced configuration is compared with an untraced measurement
    // taken right before it: the guest's vmalloc speed drifts over a run
    // (vmap area reuse, lazy purging), which a single baseline would hide.
    let mut results = Vec::new();
    for (name, traced) in [
        (
            "nofail_fentry",
            &(|| with_nofail(ctx, "fentry")) as &dyn Fn() -> Result<f64>,
        ),
        ("nofail_kprobe", &|| with_nofail(ctx, "kprobe")),
        ("bpftrace", &with_bpftrace),
    ] {
        let base = measure()?;
        let rate = traced()?;
        results.push((name, base, rate, base / rate - 1.0));
    }
    println!(
        "{:<16} {:>14} {:>14} {:>10}",
        "CONFIG", "UNTRACED/S", "TRACED/S", "OVERHEAD"
    );
    for (name, base, rate, overhead) in &results {
        println!(
            "{name:<16} {base:>14.0} {rate:>14.0} {:>9.1}%",
            overhead * 100.0
        );
    }
    let overhead = |n: &str| results.iter().find(|r| r.0 == n).map_or(f64::NAN, |r| r.3);
    let ratio = overhead("bpftrace") / overhead("nofail_fentry");
    println!("bpftrace overhead / nofail fentry overhead = {ratio:.2}");
    let json = json!({
        "workload": format!("trigger vmalloc({SIZE})+vfree, {CALLS} calls x {ROUNDS} rounds (median), untraced baseline measured right before each"),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim(),
        "configs": results.iter().map(|(name, base, rate, overhead)| json!({
            "name": name, "untraced_calls_per_s": base, "traced_calls_per_s": rate, "overhead": overhead,
        })).collect::<Vec<_>>(),
        "bpftrace_over_nofail_fentry_overhead": ratio,
    });
    std::fs::write(out, serde_json::to_string_pretty(&json)? + "\n")?;
    Ok(())
}
