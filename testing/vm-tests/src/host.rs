// SPDX-License-Identifier: MIT OR Apache-2.0
//! `vm-tests --host`: the tracepoint mode on the CI machine's own kernel
//! (no kprobes, fentry refused: `auto` must choose tracepoints), exact
//! against ground truths the kernel keeps: BPF maps made here, XFS's
//! `xfs_buf_backing_vmalloc` tracepoint, and a live `nofail serve`.

use anyhow::{Context as _, Result, ensure};
use nofail_test_support::bpf;
use nofail_test_support::prom::sample;
use serde_json::Value;

use crate::{
    export::{Serve, scrape_after_maps},
    harness::{Ctx, Trace, field, row},
    real::{LoopFs, TpCount, xattr_files},
    scenarios::{Case, case},
};

pub fn all() -> Vec<Case> {
    vec![
        case("host_auto_chooses_tracepoints", auto_chooses_tracepoints),
        case("host_xfs_exact", xfs_exact),
        case("host_serve_live", serve_live),
    ]
}

fn all_tracepoint(report: &Value) -> Result<()> {
    let attached = report["attached"].as_array().cloned().unwrap_or_default();
    ensure!(!attached.is_empty(), "nothing attached");
    for a in &attached {
        ensure!(a["mode"] == "tracepoint", "not a tracepoint role: {a}");
    }
    ensure!(report["mode"] == "tracepoint", "mode {}", report["mode"]);
    Ok(())
}

/// Plain `nofail trace` (auto): tracepoints, and the maps this process
/// makes counted exactly at their caller; the warnings say what is not seen.
fn auto_chooses_tracepoints(ctx: &Ctx) -> Result<()> {
    const N: u64 = 7;
    let pid = std::process::id().to_string();
    let trace = Trace::start(ctx, "host_maps", &["--pid", &pid])?;
    for _ in 0..N {
        bpf::create_big_array_map()?;
    }
    let report = trace.finish()?;
    all_tracepoint(&report)?;
    let r = row(&report, "array_map_alloc")?;
    ensure!(
        r.get("calls").is_some() && field(r, "calls")? == N,
        "array_map_alloc: {} vmap areas for {N} maps",
        field(r, "calls")?
    );
    let warnings = report["warnings"].to_string();
    for blind in ["latency", "NULL returns", "injection"] {
        ensure!(
            warnings.contains(blind),
            "warnings do not say {blind}: {warnings}"
        );
    }
    Ok(())
}

/// XFS remote xattrs on a loop device: one vmap area per
/// `xfs_buf_backing_vmalloc` event, at `xfs_buf_alloc`.
fn xfs_exact(ctx: &Ctx) -> Result<()> {
    const FILES: usize = 5;
    let tp = TpCount::start("nofail_host_xfs", "xfs/xfs_buf_backing_vmalloc")?
        .ok_or_else(|| anyhow::anyhow!("this kernel's XFS has no xfs_buf_backing_vmalloc"))?;
    let fs = LoopFs::new("host_xfs", "xfs", 600, &["-f", "-q"])?;
    let pid = std::process::id().to_string();
    let trace = Trace::start(ctx, "host_xfs", &["--pid", &pid, "--caller", "xfs_*"])?;
    let work = xattr_files(&fs.mnt, "h", FILES);
    let report = trace.finish()?;
    let events = tp.finish()?;
    work?;
    all_tracepoint(&report)?;
    println!("  xfs_buf_backing_vmalloc events: {events}");
    ensure!(events >= FILES as u64, "only {events} events");
    let callers = report["callers"].as_array().context("no callers array")?;
    let total = nofail_test_support::json::sum(callers, "calls")?;
    let r = row(&report, "xfs_buf_alloc")?;
    ensure!(
        field(r, "calls")? == events && total == events,
        "xfs_buf_alloc {} / all rows {total} vmap areas, {events} events",
        field(r, "calls")?
    );
    Ok(())
}

/// `nofail serve` live: scraped while maps are made, the text parses
/// (promtool), the maps are counted, and series tracepoint mode cannot
/// count are absent rather than zero.
fn serve_live(ctx: &Ctx) -> Result<()> {
    let pid = std::process::id().to_string();
    let serve = Serve::start_with(ctx, &["--pid", &pid])?;
    let body = scrape_after_maps(ctx, serve, 3, "host_serve.prom")?;
    ensure!(body.contains("mode=\"tracepoint\""), "nofail_info mode");
    let calls = sample(&body, "nofail_vmalloc_calls_total", "array_map_alloc", "")?;
    ensure!(calls == 3.0, "array_map_alloc {calls} != 3");
    for absent in [
        "nofail_vmalloc_latency_seconds",
        "nofail_vmalloc_null_returns_total",
    ] {
        ensure!(
            !body.contains(absent),
            "{absent} exported in tracepoint mode"
        );
    }
    Ok(())
}
