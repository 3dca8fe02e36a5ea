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
        case(
            "host_chains_refused_in_tracepoint_mode",
            chains_refused_in_tracepoint_mode,
        ),
        case("host_xfs_exact", xfs_exact),
        case("host_serve_live", serve_live),
        case("host_serve_labels_stick", serve_labels_stick),
        case(
            "host_service_command_line_under_its_capabilities",
            crate::export::service_command_line_under_its_capabilities,
        ),
        case(
            "host_wrap_exit_status_passes_through",
            crate::wrap::exit_status_passes_through,
        ),
        case(
            "host_wrap_signals_reach_the_command_first",
            crate::wrap::signals_reach_the_command_first,
        ),
        case(
            "host_wrap_command_only_counts_the_commands_maps",
            crate::wrap::command_only_counts_the_commands_maps,
        ),
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

/// `--chains` needs each call's exit, which tracepoint mode has no hook
/// for: refused in one line, exit 1.
fn chains_refused_in_tracepoint_mode(ctx: &Ctx) -> Result<()> {
    let out = std::process::Command::new(&ctx.nofail)
        .args(["trace", "--mode", "tracepoint", "--chains", "3"])
        .args(["--duration", "5s"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1)
            && stderr
                .lines()
                .last()
                .is_some_and(|l| l.contains("--chains needs the full mode")),
        "exit {:?}: {stderr}",
        out.status.code()
    );
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

/// Every caller's calls counter in a scrape.
fn calls_by_caller(body: &str) -> std::collections::BTreeMap<String, f64> {
    body.lines()
        .filter_map(|l| l.strip_prefix("nofail_vmalloc_calls_total{caller=\""))
        .filter_map(|l| {
            let (caller, rest) = l.split_once('"')?;
            Some((caller.to_string(), rest.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// `nofail serve --top 1` scraped by a real Prometheus server while the
/// order of its callers changes: array maps first (array_map_alloc gets
/// the one label), then more preallocated hash maps (prealloc_init's site
/// overtakes it). The label stays where it was, no series goes down in
/// any scrape (checked here every 300 ms, and by Prometheus' `resets()`
/// over the whole run), and the last values equal the ground truth: the
/// maps this process made (one vmalloc each, at array_map_alloc and at
/// htab_map_alloc, the only call sites selected).
fn serve_labels_stick(ctx: &Ctx) -> Result<()> {
    const ARRAYS: u64 = 3;
    const HASHES: u64 = 6;
    let pid = std::process::id().to_string();
    let serve = Serve::start_with(
        ctx,
        &[
            "--pid",
            &pid,
            "--caller",
            "array_map_alloc,htab_map_alloc",
            "--top",
            "1",
        ],
    )?;
    let dir = ctx.out.join("host_labels_prometheus");
    let _ = std::fs::remove_dir_all(&dir);
    let prometheus = nofail_test_support::prom::Server::start(serve.port, &dir)?;
    let scrapes = std::sync::Mutex::new(Vec::new());
    let done = std::sync::atomic::AtomicBool::new(false);
    let work = std::thread::scope(|s| -> Result<()> {
        let watcher = s.spawn(|| -> Result<()> {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let (code, body) = nofail_test_support::http::http_get(serve.port, "/metrics")?;
                ensure!(code == 200, "scrape answered {code}");
                scrapes.lock().expect("lock").push(calls_by_caller(&body));
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
            Ok(())
        });
        let settle = || std::thread::sleep(std::time::Duration::from_secs(3));
        settle();
        for _ in 0..ARRAYS {
            bpf::create_big_array_map()?;
        }
        settle();
        for _ in 0..HASHES {
            drop(bpf::hash_map(8192, 256)?);
        }
        settle();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        watcher.join().expect("watcher")
    });
    work?;
    // Prometheus has scraped through the change: its view of the run.
    let resets = prometheus.query_until(
        "resets(nofail_vmalloc_calls_total[10m])",
        std::time::Duration::from_secs(60),
    )?;
    let last = prometheus.query_until(
        "nofail_vmalloc_calls_total",
        std::time::Duration::from_secs(60),
    )?;
    drop(prometheus);
    serve.stop()?;

    let scrapes = scrapes.into_inner().expect("lock");
    ensure!(scrapes.len() > 10, "only {} scrapes", scrapes.len());
    // Monotonic and sticky in every scrape we took.
    let mut named: Option<String> = None;
    for pair in scrapes.windows(2) {
        for (caller, v) in &pair[0] {
            let next = pair[1].get(caller).copied();
            ensure!(
                next.is_some_and(|n| n >= *v),
                "{caller} went from {v} to {next:?} between scrapes"
            );
        }
    }
    for s in &scrapes {
        let own: Vec<&String> = s.keys().filter(|c| *c != "other").collect();
        ensure!(
            own.len() <= 1,
            "more than one named caller with --top 1: {own:?}"
        );
        if let Some(c) = own.first() {
            ensure!(
                named.get_or_insert_with(|| c.to_string()) == *c,
                "the label moved from {named:?} to {c}"
            );
        }
    }
    let final_scrape = scrapes.last().context("no scrape")?;
    let array = final_scrape
        .iter()
        .find(|(c, _)| c.starts_with("array_map_alloc+"))
        .map(|(_, v)| *v);
    let total: f64 = final_scrape.values().sum();
    println!(
        "  {} scrapes; named {named:?}; last {final_scrape:?}",
        scrapes.len()
    );
    ensure!(
        array == Some(ARRAYS as f64),
        "array_map_alloc kept its label with {ARRAYS} calls: {array:?}"
    );
    // The order did change (a top 1 picked anew would now name
    // htab_map_alloc), and nothing is lost.
    let other = final_scrape.get("other").copied().unwrap_or(0.0);
    ensure!(
        other == HASHES as f64 && total == (ARRAYS + HASHES) as f64,
        "other {other} for {HASHES} hash maps, all series {total}"
    );
    // And Prometheus agrees: no reset in any series, same last values.
    for (labels, v) in &resets {
        ensure!(*v == 0.0, "resets() = {v} for {labels}");
    }
    ensure!(
        resets.len() == final_scrape.len(),
        "resets over {} series",
        resets.len()
    );
    let prom_total: f64 = last.iter().map(|(_, v)| v).sum();
    ensure!(
        prom_total == total,
        "Prometheus' last values sum {prom_total}, scrape {total}"
    );
    Ok(())
}
