// SPDX-License-Identifier: MIT OR Apache-2.0
//! `cargo xtask bench`: what tracing costs per vmalloc call, measured by
//! `vm-tests --bench` (untraced, nofail kprobe, fentry and sentinel,
//! bpftrace, a process tracing nothing; interleaved, carryover-balanced
//! rounds) in two test-VM boots: under `-icount`
//! (guest instructions, the counted metric) and plain TCG (wall time).
//! Results: printed, and written to target/bench-{icount,wall}.json
//! (`-N` appended per run with `--runs N`, and the spread of the counted
//! metric between runs in target/bench-runs.json). The counted metric's
//! tables also go to docs/benchmark-results.md, headed with the build's
//! `git describe --always --dirty`, the date and the command, so that the
//! docs quote measured numbers rather than typed ones. `--jobs J` boots J
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
    // The build measured: described before anything is built or written.
    let build = describe(&root);
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
    let between = if runs > 1 {
        let (table, spread) = spread(&counted)?;
        print!("{table}");
        let out = root.join("target/bench-runs.json");
        std::fs::write(&out, serde_json::to_string_pretty(&spread)? + "\n")?;
        println!("xtask bench: spread between runs in {}", out.display());
        Some(spread)
    } else {
        None
    };
    let header = Header {
        build,
        date: utc_date(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs(),
        ),
        command: format!(
            "cargo xtask bench --runs {runs} --jobs {jobs} --backdrop-threads {backdrop_threads}"
        ),
    };
    let md = root.join(RESULTS_MD);
    std::fs::write(&md, markdown(&header, &counted, between.as_ref())?)?;
    println!("xtask bench: counted results in {}", md.display());
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

/// Where `cargo xtask bench` writes the counted metric's tables.
const RESULTS_MD: &str = "docs/benchmark-results.md";

/// What the results page says about where its numbers came from.
struct Header {
    /// `git describe --always --dirty` of the tree that was built.
    build: String,
    /// The day the run ended, UTC, `YYYY-MM-DD`.
    date: String,
    /// The command line that produced the page.
    command: String,
}

fn describe(root: &std::path::Path) -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown (git describe failed)".into())
}

/// Seconds since the epoch as a UTC calendar date (days to civil date,
/// Howard Hinnant's algorithm).
fn utc_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The counted runs as markdown: a header saying which build, date,
/// command and kernel the numbers came from, each run's table (what
/// `vm-tests --bench` prints) and, with more than one run, the spread
/// between runs (what `spread` prints).
fn markdown(header: &Header, runs: &[Value], between: Option<&Value>) -> Result<String> {
    let first = runs.first().context("no runs")?;
    let unit = if first["clock"] == "icount" {
        "insns"
    } else {
        "ns"
    };
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let mut kernels: Vec<String> = runs.iter().map(|r| text(&r["kernel"])).collect();
    kernels.dedup();
    let mut md = String::from("# Benchmark results\n\n");
    md += &format!(
        "Written by `{}`: every number on this page is what that run \
         measured, not a claim about any other build. The next run replaces \
         the page; do not edit it by hand. Method, configurations and \
         workloads: [benchmark.md](benchmark.md).\n\n",
        header.command
    );
    md += "| | |\n| --- | --- |\n";
    md += &format!(
        "| build | `{}` (`git describe --always --dirty`) |\n",
        header.build
    );
    md += &format!("| date | {} (UTC) |\n", header.date);
    md += &format!("| kernel | {} |\n", kernels.join(", "));
    md += &format!(
        "| clock | {} |\n",
        if unit == "insns" {
            "QEMU `-icount shift=0,sleep=off`: one guest nanosecond per guest instruction"
        } else {
            "wall time (plain TCG)"
        }
    );
    md += &format!("| rounds per run | {} |\n", text(&first["rounds"]));
    md += &format!("| runs | {} |\n", runs.len());
    for (n, run) in runs.iter().enumerate() {
        md += &format!(
            "\n## Run {}\n\nBackdrop: {} idle threads, {} vmalloc areas.\n\n",
            n + 1,
            text(&run["backdrop"]["threads"]),
            text(&run["backdrop"]["vmalloc_areas"])
        );
        md += &format!(
            "| config | workload | {unit}/call | added | overhead median [min–max] | counted |\n\
             | --- | --- | ---: | ---: | ---: | ---: |\n"
        );
        let configs = run["configs"].as_array().context("configs")?;
        for c in configs {
            for w in c["workloads"].as_array().context("workloads")? {
                let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
                let o = &w["overhead"];
                let counted = match (w["calls_counted"].as_u64(), w["calls_made"].as_u64()) {
                    (Some(c), Some(m)) => format!("{c}/{m}"),
                    _ => "-".into(),
                };
                md += &format!(
                    "| {} | {} | {:.0} | {:.0} | {:.1} % [{:.1}–{:.1} %] | {} |\n",
                    text(&c["name"]),
                    text(&w["workload"]),
                    num(&w["ns_per_call"]["median"]),
                    num(&w["added_ns_per_call_median"]),
                    num(&o["median"]) * 100.0,
                    num(&o["min"]) * 100.0,
                    num(&o["max"]) * 100.0,
                    counted
                );
            }
        }
        md += "\n| config | program runs per call | program time per call | skipped runs |\n\
               | --- | ---: | ---: | ---: |\n";
        for c in configs {
            md += &format!(
                "| {} | {:.2} | {:.0} ns | {} |\n",
                text(&c["name"]),
                c["program_runs_per_call"].as_f64().unwrap_or(f64::NAN),
                c["program_ns_per_call"].as_f64().unwrap_or(f64::NAN),
                text(&c["skipped_runs"])
            );
        }
    }
    if let Some(between) = between {
        md += &format!(
            "\n## Between runs\n\nAdded {unit} per call (median of each run's rounds), \
             and nofail's added cost as a multiple of bpftrace's in the same run.\n\n\
             | config | workload | added per run | min–max | × bpftrace per run |\n\
             | --- | --- | ---: | ---: | ---: |\n"
        );
        for row in between["rows"].as_array().context("rows")? {
            let list = |v: &Value, digits: usize| {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| x.as_f64().map_or("-".into(), |x| format!("{x:.digits$}")))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let name = text(&row["config"]);
            let workload = text(&row["workload"]);
            let ratio = if name.starts_with("nofail") && !workload.starts_with("bpf_map") {
                list(&row["ratio_to_bpftrace"], 2)
            } else {
                "".into()
            };
            md += &format!(
                "| {name} | {workload} | {} | {:.0}–{:.0} | {ratio} |\n",
                list(&row["added_insns_per_call"], 0),
                row["min"].as_f64().unwrap_or(f64::NAN),
                row["max"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One run as `vm-tests --bench` writes it: two configurations, one
    /// workload.
    fn run(kprobe_ns: f64, bpftrace_ns: f64) -> Value {
        let workload = |ns: f64, added: f64, counted: Option<u64>| {
            json!({
                "workload": "vmalloc_8k", "calls_per_run": 4000,
                "ns_per_call": {"median": ns, "min": ns - 10.0, "max": ns + 10.0},
                "added_ns_per_call_median": added,
                "overhead": {"median": added / 4000.0, "min": 0.0, "max": added / 3900.0},
                "calls_counted": counted, "calls_made": 24000,
            })
        };
        json!({
            "clock": "icount", "kernel": "7.2.13", "rounds": 6,
            "backdrop": {"threads": 500, "vmalloc_areas": 587},
            "configs": [
                {"name": "untraced", "workloads": [workload(4000.0, 0.0, None)],
                 "program_runs_per_call": 0.0, "program_ns_per_call": 0.0, "skipped_runs": 0},
                {"name": "nofail_kprobe", "workloads": [workload(4000.0 + kprobe_ns, kprobe_ns, Some(24000))],
                 "program_runs_per_call": 2.1, "program_ns_per_call": 998.4, "skipped_runs": 0},
                {"name": "bpftrace", "workloads": [workload(4000.0 + bpftrace_ns, bpftrace_ns, Some(24000))],
                 "program_runs_per_call": 0.0, "program_ns_per_call": 0.0, "skipped_runs": 0},
            ],
            "table": "",
        })
    }

    fn header() -> Header {
        Header {
            build: "717fba2-dirty".into(),
            date: "2026-11-27".into(),
            command: "cargo xtask bench --runs 2 --jobs 2 --backdrop-threads 500".into(),
        }
    }

    #[test]
    fn results_page_from_two_runs() {
        let runs = [run(1694.0, 4004.0), run(1720.0, 4000.0)];
        let (_, between) = spread(&runs).unwrap();
        let md = markdown(&header(), &runs, Some(&between)).unwrap();
        let run_table = "\
| config | workload | insns/call | added | overhead median [min–max] | counted |
| --- | --- | ---: | ---: | ---: | ---: |
| untraced | vmalloc_8k | 4000 | 0 | 0.0 % [0.0–0.0 %] | - |
| nofail_kprobe | vmalloc_8k | 5694 | 1694 | 42.4 % [0.0–43.4 %] | 24000/24000 |
| bpftrace | vmalloc_8k | 8004 | 4004 | 100.1 % [0.0–102.7 %] | 24000/24000 |

| config | program runs per call | program time per call | skipped runs |
| --- | ---: | ---: | ---: |
| untraced | 0.00 | 0 ns | 0 |
| nofail_kprobe | 2.10 | 998 ns | 0 |
| bpftrace | 0.00 | 0 ns | 0 |
";
        let expected = format!(
            "\
# Benchmark results

Written by `cargo xtask bench --runs 2 --jobs 2 --backdrop-threads 500`: every number on this page is what that run measured, not a claim about any other build. The next run replaces the page; do not edit it by hand. Method, configurations and workloads: [benchmark.md](benchmark.md).

| | |
| --- | --- |
| build | `717fba2-dirty` (`git describe --always --dirty`) |
| date | 2026-11-27 (UTC) |
| kernel | 7.2.13 |
| clock | QEMU `-icount shift=0,sleep=off`: one guest nanosecond per guest instruction |
| rounds per run | 6 |
| runs | 2 |

## Run 1

Backdrop: 500 idle threads, 587 vmalloc areas.

{run_table}
## Run 2

Backdrop: 500 idle threads, 587 vmalloc areas.

{}
## Between runs

Added insns per call (median of each run's rounds), and nofail's added cost as a multiple of bpftrace's in the same run.

| config | workload | added per run | min–max | × bpftrace per run |
| --- | --- | ---: | ---: | ---: |
| untraced | vmalloc_8k | 0 0 | 0–0 |  |
| nofail_kprobe | vmalloc_8k | 1694 1720 | 1694–1720 | 0.42 0.43 |
| bpftrace | vmalloc_8k | 4004 4000 | 4000–4004 |  |
",
            run_table
                .replace("5694 | 1694 | 42.4 % [0.0–43.4 %]", "5720 | 1720 | 43.0 % [0.0–44.1 %]")
                .replace("8004 | 4004 | 100.1 % [0.0–102.7 %]", "8000 | 4000 | 100.0 % [0.0–102.6 %]")
        );
        assert_eq!(md, expected);
    }

    #[test]
    fn one_run_has_no_spread_section() {
        let md = markdown(&header(), &[run(1694.0, 4004.0)], None).unwrap();
        assert!(md.contains("| runs | 1 |"));
        assert!(md.contains("## Run 1\n"));
        assert!(!md.contains("## Run 2"));
        assert!(!md.contains("Between runs"));
    }

    #[test]
    fn dates_are_utc_calendar_days() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_825_600), "2000-02-29");
        assert_eq!(utc_date(1_795_737_600 + 86_399), "2026-11-27");
    }
}
