// SPDX-License-Identifier: MIT OR Apache-2.0
//! Tracepoint mode (`--mode tracepoint`) against the full mode, both
//! attached at once to the same work: the trigger's forced NOFAIL retries
//! (the kernel's own fault injection decides how many) and BPF map
//! creation. On stock kernels, the maps alone.

use anyhow::{Result, ensure};
use nofail_test_support::{bpf, outcome::skip};

use crate::{
    harness::{Ctx, Trace, field, row, same_fields},
    trigger::{self, Arm, Injector},
};

/// Per stage, the same retries, sleeps and requested jiffies as the full
/// mode, at the same callers; calls equal where every call gets a vmap area.
pub fn matches_full_mode(ctx: &Ctx) -> Result<()> {
    const K: u64 = 3;
    const PLAIN: u64 = 40;
    ctx.load_trigger()?;
    // fentry: a kretprobe on vmalloc's core would replace the return
    // address the tracepoint mode looks for (it reports those as
    // caller_unread); fexit leaves it in place.
    let full = Trace::start(ctx, "tp_full", &["--mode", "fentry"])?;
    let tp = Trace::start(ctx, "tp_tracepoint", &["--mode", "tracepoint"])?;
    let plain = trigger::run("vmalloc", PLAIN, 64 << 10, Arm::Off)?;
    let (area, left) =
        trigger::run_injected(Injector::ShouldFailslab, K, "vmalloc_nofail", 1, 64 << 10)?;
    let mapped = trigger::run_mapping_injected(64 << 10, 1, 0);
    let map_left = Injector::FailPageAlloc.remaining();
    Injector::FailPageAlloc.disarm()?;
    let tp = tp.finish()?;
    let full = full.finish()?;
    ensure!(plain.calls == PLAIN && area.null == 0 && left == 0);
    ensure!(mapped?.is_some_and(|s| s.success()) && map_left? == 0);
    for a in tp["attached"].as_array().into_iter().flatten() {
        ensure!(a["mode"] == "tracepoint", "not a tracepoint role: {a}");
    }
    let fields = [
        "area_retries",
        "mapping_retries",
        "sleeps",
        "sleep_jiffies",
        "area_failures",
        "mapping_failures",
    ];
    for (site, calls) in [
        ("site_vmalloc", PLAIN),
        ("site_vmalloc_nofail", 1),
        ("site_vmalloc_nofail_fresh", 1),
    ] {
        let (f, t) = (row(&full, site)?, row(&tp, site)?);
        let mut line = format!(
            "  {site}: calls {} / {}",
            field(f, "calls")?,
            field(t, "calls")?
        );
        line += &same_fields(&full, &tp, "tracepoint", site, &fields)?;
        let (a, b) = (field(f, "slept_ns")?, field(t, "slept_ns")?);
        println!("{line}, slept_ns {a} / {b} (full / tracepoint)");
        ensure!(field(f, "calls")? == calls, "{site}: full calls");
        ensure!(field(t, "calls")? == calls, "{site}: tracepoint vmap areas");
        // Timer start to expiry versus the sleep function's entry to exit:
        // the tracepoint misses only the wake-up.
        ensure!(b <= a && b * 2 >= a, "{site}: slept {b} ns against {a} ns");
    }
    // The ground truth, not only agreement.
    let t = row(&tp, "site_vmalloc_nofail")?;
    ensure!(field(t, "area_retries")? == K && field(t, "sleeps")? == K);
    let t = row(&tp, "site_vmalloc_nofail_fresh")?;
    ensure!(field(t, "mapping_retries")? == 1 && field(t, "area_retries")? == 0);
    Ok(())
}

/// Tracepoint mode alone on the endless mapping loop: the call stays in
/// the in-flight view with its caller and is flagged stuck once older than
/// --stuck-after (own boot: the task spins until power-off).
pub fn stuck_call_in_flight(ctx: &Ctx) -> Result<()> {
    ctx.load_trigger()?;
    trigger::prime_fresh_slot()?;
    let trace = Trace::start(
        ctx,
        "tp_stuck",
        &["--mode", "tracepoint", "--stuck-after", "500ms"],
    )?;
    let report = trigger::spin_mapping_loop(|| trace.finish())?;
    crate::harness::spinning_call(&report)?;
    Ok(())
}

/// Every kernel: BPF array maps made here, counted at their caller.
pub fn counts_maps(ctx: &Ctx) -> Result<()> {
    const N: u64 = 7;
    if !["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|d| std::path::Path::new(&format!("{d}/events/vmalloc/alloc_vmap_area")).exists())
    {
        return Err(skip(
            "this kernel has no vmalloc:alloc_vmap_area tracepoint",
        ));
    }
    // Before the trace: finding it creates a map.
    let caller = bpf::array_map_caller()?;
    let trace = Trace::start(ctx, "tp_maps", &["--mode", "tracepoint"])?;
    for _ in 0..N {
        bpf::create_big_array_map()?;
    }
    let report = trace.finish()?;
    let r = row(&report, caller)?;
    let calls = field(r, "calls")?;
    ensure!(
        r.get("calls").is_some() && calls == N,
        "vmap areas {calls} != {N}"
    );
    ensure!(field(r, "sleeps")? == 0 && field(r, "area_failures")? == 0);
    ensure!(report["health"]["callers_full"] == 0);
    Ok(())
}
