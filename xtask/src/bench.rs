// SPDX-License-Identifier: MIT OR Apache-2.0
//! `cargo xtask bench`: what tracing costs per vmalloc call, measured by
//! `vm-tests --bench` (untraced, nofail kprobe, fentry and sentinel,
//! bpftrace, a process tracing nothing; interleaved, carryover-balanced
//! rounds) in two test-VM boots: under `-icount`
//! (guest instructions, the counted metric) and plain TCG (wall time).
//! Results: printed, and written to target/bench-{icount,wall}.json
//! (`-N` appended per run with `--runs N`, and the spread of the counted
//! metric between runs in target/bench-runs.json). `--jobs J` boots J
//! counted runs at once.

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{
    kernels::{self, KernelName},
    setup, trigger,
    util::{self, workspace_root},
    vm,
};

pub fn run(runs: u32, jobs: u32, backdrop_threads: u32) -> Result<i32> {
    setup::ensure()?;
    let root = workspace_root();
    util::run(
        std::process::Command::new("cargo")
            .args(["build", "--release", "-p", "nofail-user", "-p", "vm-tests"])
            .current_dir(&root),
    )?;
    let kernel = kernels::ensure(KernelName::Test)?;
    let ko = trigger::build(&kernel)?;
    let suffix = |n: u32| {
        if runs > 1 {
            format!("-{n}")
        } else {
            String::new()
        }
    };
    // The counted boots, `jobs` at a time: a guest instruction count does
    // not depend on what else the host runs. The wall-time boots after
    // them, one at a time, as their clock does.
    let next = std::sync::atomic::AtomicU32::new(1);
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..jobs.min(runs))
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if n > runs {
                            return Ok(());
                        }
                        boot(&root, &kernel, &ko, true, &suffix(n), backdrop_threads)?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a benchmark boot panicked"))??;
        }
        Ok(())
    })?;
    let counted = (1..=runs)
        .map(|n| {
            let path = root.join(format!("target/bench-icount{}.json", suffix(n)));
            Ok(serde_json::from_str::<Value>(&std::fs::read_to_string(
                &path,
            )?)?)
        })
        .collect::<Result<Vec<_>>>()?;
    if runs > 1 {
        let (table, spread) = spread(&counted)?;
        print!("{table}");
        let out = root.join("target/bench-runs.json");
        std::fs::write(&out, serde_json::to_string_pretty(&spread)? + "\n")?;
        println!("xtask bench: spread between runs in {}", out.display());
    }
    // The counted results and their spread are written before the
    // wall-time boots: those are for comparison only, and one that fails
    // must not take the counted runs with it.
    for n in 1..=runs {
        boot(&root, &kernel, &ko, false, &suffix(n), backdrop_threads)?;
    }
    Ok(0)
}

/// One boot of a run: the counted metric (-icount: one guest nanosecond
/// per guest instruction) or plain TCG wall time for comparison.
fn boot(
    root: &std::path::Path,
    kernel: &kernels::Kernel,
    ko: &std::path::Path,
    icount: bool,
    suffix: &str,
    backdrop_threads: u32,
) -> Result<()> {
    let clock = if icount { "icount" } else { "wall" };
    let out = root.join(format!("target/bench-{clock}{suffix}.json"));
    let command: Vec<String> = vec![
        root.join("target/release/vm-tests").display().to_string(),
        "--nofail".into(),
        root.join("target/release/nofail").display().to_string(),
        "--trigger".into(),
        ko.display().to_string(),
        "--out".into(),
        root.join(format!("target/vm-results/bench-{clock}{suffix}"))
            .display()
            .to_string(),
        "--bench".into(),
        out.display().to_string(),
    ];
    println!("xtask bench: {clock} boot{suffix}");
    let code = vm::run(&vm::Guest {
        kernel,
        cwd: root,
        command: &command,
        env: &[
            format!("NOFAIL_BENCH_CLOCK={clock}"),
            format!("NOFAIL_BENCH_THREADS={backdrop_threads}"),
        ],
        timeout: 5400,
        memory: 2048,
        icount,
        cpus: 1,
    })?;
    if code != 0 {
        bail!("benchmark failed in the VM ({clock} boot{suffix}, exit {code})");
    }
    println!("xtask bench: results in {}", out.display());
    Ok(())
}

/// Per configuration and workload, the counted metric's added instructions
/// per call (median of each run's rounds) in every run, with min–max; and
/// each nofail full-mode configuration's added cost as a ratio of
/// bpftrace's, per run.
fn spread(runs: &[Value]) -> Result<(String, Value)> {
    let added = |run: &Value, config: &str, workload: &str| -> Option<f64> {
        run["configs"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == config)?["workloads"]
            .as_array()?
            .iter()
            .find(|w| w["workload"] == workload)?["added_ns_per_call_median"]
            .as_f64()
    };
    let first = runs.first().context("no runs")?;
    let mut table = format!(
        "{:<16} {:<17} {:>28} {:>22}\n",
        "CONFIG", "WORKLOAD", "ADDED INSNS/CALL per run", "SPREAD min-max"
    );
    let mut rows = Vec::new();
    for config in first["configs"].as_array().context("configs")? {
        let name = config["name"].as_str().unwrap_or_default();
        for w in config["workloads"].as_array().context("workloads")? {
            let workload = w["workload"].as_str().unwrap_or_default();
            let per_run: Vec<f64> = runs
                .iter()
                .filter_map(|r| added(r, name, workload))
                .collect();
            let (lo, hi) = per_run
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
            let vs_bpftrace: Vec<Option<f64>> = runs
                .iter()
                .map(|r| {
                    let b = added(r, "bpftrace", workload)?;
                    (b > 0.0).then(|| added(r, name, workload).unwrap_or(0.0) / b)
                })
                .collect();
            table += &format!(
                "{:<16} {:<17} {:>28} {:>22}\n",
                name,
                workload,
                per_run
                    .iter()
                    .map(|v| format!("{v:.0}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                format!("{lo:.0}–{hi:.0}")
            );
            if name.starts_with("nofail") && !workload.starts_with("bpf_map") {
                table += &format!(
                    "{:<16} {:<17} {:>28}\n",
                    "",
                    "  x bpftrace",
                    vs_bpftrace
                        .iter()
                        .map(|r| r.map_or("-".into(), |r| format!("{r:.2}")))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
            rows.push(json!({
                "config": name, "workload": workload,
                "added_insns_per_call": per_run, "min": lo, "max": hi,
                "ratio_to_bpftrace": vs_bpftrace,
            }));
        }
    }
    Ok((table, json!({ "runs": runs.len(), "rows": rows })))
}
