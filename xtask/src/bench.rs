// SPDX-License-Identifier: MIT OR Apache-2.0
//! `cargo xtask bench`: what tracing costs per vmalloc call, measured by
//! `vm-tests --bench` (untraced, nofail kprobe, fentry and sentinel,
//! bpftrace, a process tracing nothing; interleaved, carryover-balanced
//! rounds) in two test-VM boots: under `-icount`
//! (guest instructions, the counted metric) and plain TCG (wall time).
//! `--arch arm64` measures the arm64 test kernel: its files carry
//! `-arm64` and its page is docs/benchmark-results-arm64.md.
//! Results: printed, and written to target/bench-{icount,wall}.json
//! (`-N` appended per run with `--runs N`, and the spread of the counted
//! metric between runs in target/bench-runs.json). The counted metric's
//! tables also go to docs/benchmark-results.md, headed with the build's
//! `git describe --always --dirty`, the date and the command, so that the
//! docs quote measured numbers rather than typed ones. `--jobs J` boots J
//! counted runs at once. `--kernel SPEC` measures another kernel than the
//! test kernel (`test+PATCH`, a build tree).
//!
//! `--compare A --compare B` measures a kernel change instead of tracing:
//! the untraced configuration alone, counted boots alone, A and B booted
//! alternately, each workload's cost per call on both, B − A and its
//! spread over the run pairs (`compare`); printed, and written to the
//! results page's own section "Kernel comparison", which a full run keeps.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{
    arch::Arch,
    kernels::{self, KernelSpec},
    setup,
    util::{self, workspace_root},
    variant, vm,
};

pub fn run(spec: &KernelSpec, runs: u32, jobs: u32, backdrop_threads: u32) -> Result<i32> {
    setup::ensure()?;
    let root = workspace_root();
    // The build measured: described before anything is built or written.
    let build = describe(&root);
    build_binaries(&root, spec.arch)?;
    let (kernel, ko) = kernel_and_trigger(spec)?;
    let boot_of = |n: u32, icount: bool| Boot {
        kernel: &kernel,
        ko: &ko,
        icount,
        tag: if runs > 1 {
            format!("-{n}")
        } else {
            String::new()
        },
    };
    let counted_boots: Vec<Boot> = (1..=runs).map(|n| boot_of(n, true)).collect();
    let counted = boot_all(&root, &counted_boots, jobs, backdrop_threads, &[])?;
    let between = if runs > 1 {
        let (table, spread) = spread(&counted)?;
        print!("{table}");
        let out = root.join(format!("target/bench-runs{}.json", arch_suffix(spec.arch)));
        std::fs::write(&out, serde_json::to_string_pretty(&spread)? + "\n")?;
        println!("xtask bench: spread between runs in {}", out.display());
        Some(spread)
    } else {
        None
    };
    let header = Header {
        build,
        date: today()?,
        command: format!(
            "cargo xtask bench --kernel {spec}{} --runs {runs} --jobs {jobs} --backdrop-threads {backdrop_threads}",
            arch_flag(spec.arch)
        ),
    };
    let md = root.join(results_md(spec.arch));
    // A kernel comparison on the page stays: its own command wrote it.
    let old = std::fs::read_to_string(&md).unwrap_or_default();
    let kept = section(&old, COMPARISON);
    std::fs::write(
        &md,
        markdown(&header, &kernel.label, &counted, between.as_ref(), kept)?,
    )?;
    println!("xtask bench: counted results in {}", md.display());
    // The counted results and their spread are written before the
    // wall-time boots: those are for comparison only, and one that fails
    // must not take the counted runs with it. One at a time: their clock
    // depends on what else the host runs.
    for n in 1..=runs {
        boot(&root, &boot_of(n, false), backdrop_threads, &[])?;
    }
    Ok(0)
}

/// `cargo xtask bench --compare A --compare B`: the untraced cost per call
/// of every workload on two kernels (a patch's cost on the fast path),
/// counted boots only, booted A B A B ... so that whatever drifts over
/// the session meets both kernels alike. The table is printed and written
/// to the results page's section of its own (`COMPARISON`).
pub fn compare(specs: &[KernelSpec], runs: u32, jobs: u32, backdrop_threads: u32) -> Result<i32> {
    let [base, other] = specs else {
        bail!(
            "--compare takes two kernels, the base first (--compare test --compare test+PATCH), not {}",
            specs.len()
        );
    };
    setup::ensure()?;
    let root = workspace_root();
    let build = describe(&root);
    build_binaries(&root, base.arch)?;
    let kernels = [kernel_and_trigger(base)?, kernel_and_trigger(other)?];
    if kernels[0].0.label == kernels[1].0.label {
        bail!("--compare: both kernels are {}", kernels[0].0.label);
    }
    let boots: Vec<Boot> = (1..=runs)
        .flat_map(|n| {
            kernels.iter().map(move |(kernel, ko)| Boot {
                kernel,
                ko,
                icount: true,
                tag: format!("-{}-{n}", kernel.label),
            })
        })
        .collect();
    let results = boot_all(&root, &boots, jobs, backdrop_threads, &["untraced"])?;
    // Boots alternate, the base's first.
    let (a, b): (Vec<Value>, Vec<Value>) = results
        .chunks(2)
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .unzip();
    let labels = [kernels[0].0.label.as_str(), kernels[1].0.label.as_str()];
    let rows = comparison(&a, &b)?;
    print!("{}", comparison_table(labels, &rows));
    let header = Header {
        build,
        date: today()?,
        command: format!(
            "cargo xtask bench --compare {base} --compare {other}{} --runs {runs} --jobs {jobs} --backdrop-threads {backdrop_threads}",
            arch_flag(base.arch)
        ),
    };
    let md = root.join(results_md(base.arch));
    let page = std::fs::read_to_string(&md).unwrap_or_else(|_| "# Benchmark results\n".into());
    let text = comparison_markdown(&header, labels, [&a, &b], &rows)?;
    std::fs::write(&md, splice(&page, COMPARISON, &text))?;
    println!("xtask bench: kernel comparison in {}", md.display());
    Ok(0)
}

/// x86-64: this machine's release builds (the guest shares its root).
/// arm64: the static aarch64 vm-tests and nofail the arm64 guests run.
fn build_binaries(root: &Path, arch: Arch) -> Result<()> {
    if arch != Arch::X86_64 {
        return crate::suite::build_for(arch);
    }
    util::run(
        std::process::Command::new("cargo")
            .args(["build", "--release", "-p", "nofail-user", "-p", "vm-tests"])
            .current_dir(root),
    )
}

/// The binaries a guest of `arch` runs: vm-tests and nofail.
fn binaries(root: &Path, arch: Arch) -> Result<(PathBuf, PathBuf)> {
    Ok(match arch {
        Arch::X86_64 => (
            root.join("target/release/vm-tests"),
            root.join("target/release/nofail"),
        ),
        other => (
            crate::suite::vm_tests_binary(other),
            crate::dist::binary_for(other)?,
        ),
    })
}

/// `--arch arm64` in the command a results page names; nothing for x86-64.
fn arch_flag(arch: Arch) -> String {
    match arch {
        Arch::X86_64 => String::new(),
        other => format!(" --arch {}", other.debian()),
    }
}

/// The kernel `spec` names and the trigger module built against it: the
/// vmalloc workloads are the trigger's calls. A guest of another
/// architecture sees the checkout and not this machine's root (where the
/// module is cached): the module is copied under target/.
fn kernel_and_trigger(spec: &KernelSpec) -> Result<(kernels::Kernel, PathBuf)> {
    let kernel = variant::ensure_spec(spec)?;
    if !kernel.name.has_trigger() {
        bail!(
            "{spec}: the benchmark needs the trigger module, built against test, test+PATCH or a kernel build tree DIR"
        );
    }
    let dir = workspace_root()
        .join("target/vm-results")
        .join(&kernel.label);
    let ko = crate::suite::trigger_for_guest(&kernel, &dir)?;
    Ok((kernel, ko))
}

/// One benchmark boot.
struct Boot<'a> {
    kernel: &'a kernels::Kernel,
    ko: &'a Path,
    /// The counted metric (-icount: one guest nanosecond per guest
    /// instruction) or plain TCG wall time for comparison.
    icount: bool,
    /// Names its outputs: target/bench-{clock}{tag}.json and
    /// target/vm-results/bench-{clock}{tag}.
    tag: String,
}

impl Boot<'_> {
    fn clock(&self) -> &'static str {
        if self.icount { "icount" } else { "wall" }
    }

    fn out(&self, root: &Path) -> PathBuf {
        root.join(format!(
            "target/bench-{}{}{}.json",
            self.clock(),
            arch_suffix(self.kernel.arch),
            self.tag
        ))
    }
}

/// Runs the counted `boots`, `jobs` at a time, taking them in order, and
/// reads their results (in the same order). A guest instruction count
/// does not depend on what else the host runs.
fn boot_all(
    root: &Path,
    boots: &[Boot],
    jobs: u32,
    backdrop_threads: u32,
    configs: &[&str],
) -> Result<Vec<Value>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..(jobs as usize).min(boots.len()))
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    while let Some(b) =
                        boots.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                    {
                        boot(root, b, backdrop_threads, configs)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a benchmark boot panicked"))??;
        }
        Ok(())
    })?;
    boots
        .iter()
        .map(|b| {
            let path = b.out(root);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Ok(serde_json::from_str::<Value>(&text)?)
        })
        .collect()
}

/// One boot: `vm-tests --bench` with the configurations `configs` (all
/// when empty), its results in `b.out(root)`.
fn boot(root: &Path, b: &Boot, backdrop_threads: u32, configs: &[&str]) -> Result<()> {
    let (clock, tag) = (
        b.clock(),
        format!("{}{}", arch_suffix(b.kernel.arch), b.tag),
    );
    let out = b.out(root);
    let (vm_tests, nofail) = binaries(root, b.kernel.arch)?;
    let mut command: Vec<String> = vec![
        vm_tests.display().to_string(),
        "--nofail".into(),
        nofail.display().to_string(),
        "--trigger".into(),
        b.ko.display().to_string(),
        "--out".into(),
        root.join(format!("target/vm-results/bench-{clock}{tag}"))
            .display()
            .to_string(),
        "--bench".into(),
        out.display().to_string(),
    ];
    if !configs.is_empty() {
        command.extend(["--bench-configs".into(), configs.join(",")]);
    }
    println!("xtask bench: {clock} boot{tag} ({})", b.kernel.label);
    let started = std::time::Instant::now();
    let code = vm::run(&vm::Guest {
        kernel: b.kernel,
        cwd: root,
        command: &command,
        env: &[
            format!("NOFAIL_BENCH_CLOCK={clock}"),
            format!("NOFAIL_BENCH_THREADS={backdrop_threads}"),
        ],
        timeout: 5400,
        memory: 2048,
        icount: b.icount,
        cpus: 1,
        systemd: false,
    })?;
    if code != 0 {
        bail!("benchmark failed in the VM ({clock} boot{tag}, exit {code})");
    }
    println!(
        "xtask bench: results in {} ({} s)",
        out.display(),
        started.elapsed().as_secs()
    );
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

/// Where `cargo xtask bench` writes the counted metric's tables: a page
/// per architecture, as instruction counts of two instruction sets do not
/// compare.
fn results_md(arch: Arch) -> String {
    format!("docs/benchmark-results{}.md", arch_suffix(arch))
}

/// What names an architecture's outputs: nothing for x86-64 (as before
/// there was another), `-arm64` for arm64, as its kernels' labels.
fn arch_suffix(arch: Arch) -> String {
    match arch {
        Arch::X86_64 => String::new(),
        other => format!("-{}", other.debian()),
    }
}

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

/// Today, UTC, `YYYY-MM-DD`.
fn today() -> Result<String> {
    Ok(utc_date(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    ))
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
/// command and kernel (`label`) the numbers came from, each run's table
/// (what `vm-tests --bench` prints), with more than one run the spread
/// between runs (what `spread` prints), and last the page's kernel
/// comparison `kept` from before, if it had one.
fn markdown(
    header: &Header,
    label: &str,
    runs: &[Value],
    between: Option<&Value>,
    kept: Option<&str>,
) -> Result<String> {
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
        "Written by `{}`: every number on this page{} is what that run \
         measured, not a claim about any other build. The next run replaces \
         the page; do not edit it by hand. Method, configurations and \
         workloads: [benchmark.md](benchmark.md).\n\n",
        header.command,
        if kept.is_some() {
            " above the kernel comparison (which names the command that wrote it)"
        } else {
            ""
        }
    );
    md += "| | |\n| --- | --- |\n";
    md += &format!(
        "| build | `{}` (`git describe --always --dirty`) |\n",
        header.build
    );
    md += &format!("| date | {} (UTC) |\n", header.date);
    md += &format!("| kernel | {label} ({}) |\n", kernels.join(", "));
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
    Ok(match kept {
        Some(kept) => splice(&md, COMPARISON, kept),
        None => md,
    })
}

/// The heading of the results page's kernel comparison, which
/// `cargo xtask bench --compare` writes and a full run keeps.
const COMPARISON: &str = "## Kernel comparison";

/// Where the section under `heading` (a line of its own) starts and ends
/// in `page`: up to the next `## ` heading, or the end.
fn section_range(page: &str, heading: &str) -> Option<(usize, usize)> {
    let start = page.match_indices(heading).map(|(i, _)| i).find(|&i| {
        (i == 0 || page[..i].ends_with('\n'))
            && matches!(page[i + heading.len()..].chars().next(), None | Some('\n'))
    })?;
    let body = start + heading.len();
    let end = page[body..]
        .find("\n## ")
        .map_or(page.len(), |i| body + i + 1);
    Some((start, end))
}

/// The section of `page` under `heading`, heading included.
fn section<'a>(page: &'a str, heading: &str) -> Option<&'a str> {
    section_range(page, heading).map(|(start, end)| &page[start..end])
}

/// `page` with its section under `heading` replaced by `text` (which
/// starts with that heading), or `text` added at the end.
fn splice(page: &str, heading: &str, text: &str) -> String {
    let text = text.trim_end();
    match section_range(page, heading) {
        Some((start, end)) if end < page.len() => {
            format!("{}{text}\n\n{}", &page[..start], &page[end..])
        }
        Some((start, _)) => format!("{}{text}\n", &page[..start]),
        None => format!("{}\n\n{text}\n", page.trim_end()),
    }
}

/// Untraced insns (or ns) per call of `workload` in one `vm-tests
/// --bench` run: the mean of its rounds, which meet the same layouts on
/// every kernel.
fn untraced_per_call(run: &Value, workload: &str) -> Result<f64> {
    let rounds: Vec<f64> = run["configs"]
        .as_array()
        .context("configs")?
        .iter()
        .find(|c| c["name"] == "untraced")
        .context("no untraced configuration")?["workloads"]
        .as_array()
        .context("workloads")?
        .iter()
        .find(|w| w["workload"] == workload)
        .with_context(|| format!("no workload {workload}"))?["ns_per_call"]["rounds"]
        .as_array()
        .context("no per-round costs (a vm-tests from before --compare)")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    if rounds.is_empty() {
        bail!("{workload}: no rounds");
    }
    Ok(rounds.iter().sum::<f64>() / rounds.len() as f64)
}

/// One workload of a kernel comparison.
#[derive(Debug, PartialEq)]
struct Compared {
    workload: String,
    /// Per call on each kernel: the mean of its runs.
    a: f64,
    b: f64,
    /// B − A per run pair (run n of each, booted one after the other).
    per_run: Vec<f64>,
}

impl Compared {
    fn diff(&self) -> f64 {
        self.b - self.a
    }

    fn percent(&self) -> f64 {
        self.diff() / self.a * 100.0
    }

    fn spread(&self) -> (f64, f64) {
        self.per_run
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)))
    }
}

/// Per workload of the first run, the untraced cost on kernels A and B,
/// from runs paired by index.
fn comparison(a: &[Value], b: &[Value]) -> Result<Vec<Compared>> {
    if a.is_empty() || a.len() != b.len() {
        bail!("{} runs of A against {} of B", a.len(), b.len());
    }
    let untraced = a[0]["configs"]
        .as_array()
        .context("configs")?
        .iter()
        .find(|c| c["name"] == "untraced")
        .context("no untraced configuration")?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    untraced["workloads"]
        .as_array()
        .context("workloads")?
        .iter()
        .map(|w| {
            let workload = w["workload"].as_str().context("workload name")?;
            let per_kernel = |runs: &[Value]| -> Result<Vec<f64>> {
                runs.iter()
                    .map(|r| untraced_per_call(r, workload))
                    .collect()
            };
            let (on_a, on_b) = (per_kernel(a)?, per_kernel(b)?);
            Ok(Compared {
                workload: workload.into(),
                a: mean(&on_a),
                b: mean(&on_b),
                per_run: on_b.iter().zip(&on_a).map(|(b, a)| b - a).collect(),
            })
        })
        .collect()
}

fn signed_list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:+.1}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The comparison as `cargo xtask bench --compare` prints it.
fn comparison_table(labels: [&str; 2], rows: &[Compared]) -> String {
    let mut t = format!(
        "untraced insns per call, mean of each run's rounds; A: {}, B: {}\n",
        labels[0], labels[1]
    );
    t += &format!(
        "{:<17} {:>10} {:>10} {:>9} {:>9} {:>16}  B-A PER RUN\n",
        "WORKLOAD", "A", "B", "B-A", "% OF A", "SPREAD min–max"
    );
    for r in rows {
        let (lo, hi) = r.spread();
        t += &format!(
            "{:<17} {:>10.1} {:>10.1} {:>+9.1} {:>+8.2}% {:>16}  {}\n",
            r.workload,
            r.a,
            r.b,
            r.diff(),
            r.percent(),
            format!("{lo:+.1} – {hi:+.1}"),
            signed_list(&r.per_run)
        );
    }
    t
}

/// The results page's kernel comparison section: where the numbers came
/// from (`header`, the kernels, each run's backdrop) and the table.
fn comparison_markdown(
    header: &Header,
    labels: [&str; 2],
    runs: [&[Value]; 2],
    rows: &[Compared],
) -> Result<String> {
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let first = runs[0].first().context("no runs")?;
    let unit = if first["clock"] == "icount" {
        "insns"
    } else {
        "ns"
    };
    let mut md = format!("{COMPARISON}\n\n");
    md += &format!(
        "Written by `{}`: the untraced configuration alone on two kernels, \
         counted boots only, booted alternately (A B A B ...). Every number \
         in this section is what that run measured, not a claim about any \
         other build; the next comparison replaces the section.\n\n",
        header.command
    );
    md += "| | |\n| --- | --- |\n";
    md += &format!(
        "| build | `{}` (`git describe --always --dirty`) |\n",
        header.build
    );
    md += &format!("| date | {} (UTC) |\n", header.date);
    for (name, (label, kernel_runs)) in ["A", "B"].iter().zip(labels.iter().zip(runs)) {
        let first = kernel_runs.first().context("no runs")?;
        md += &format!(
            "| kernel {name} | `{label}` ({}) |\n",
            text(&first["kernel"])
        );
    }
    md += "| clock | QEMU `-icount shift=0,sleep=off`: one guest nanosecond per guest instruction |\n";
    md += &format!("| runs per kernel | {} |\n", runs[0].len());
    md += &format!("| rounds per run | {} |\n", text(&first["rounds"]));
    md += &format!(
        "| backdrop | {} idle threads |\n",
        text(&first["backdrop"]["threads"])
    );
    for (name, kernel_runs) in ["A", "B"].iter().zip(runs) {
        md += &format!(
            "| vmalloc areas per run, {name} | {} |\n",
            kernel_runs
                .iter()
                .map(|r| text(&r["backdrop"]["vmalloc_areas"]))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    md += &format!(
        "\nA and B are {unit} per call, each run's the mean of its rounds (every \
         round meets the same layouts on both kernels), averaged over the runs. \
         B − A per run is run n of B against run n of A; its min–max is the \
         spread a difference has to stand out from.\n\n"
    );
    md += &format!(
        "| workload | A: `{}` | B: `{}` | B − A | % of A | B − A min–max | B − A per run |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        labels[0], labels[1]
    );
    for r in rows {
        let (lo, hi) = r.spread();
        md += &format!(
            "| {} | {:.1} | {:.1} | {:+.1} | {:+.2} % | {lo:+.1} – {hi:+.1} | {} |\n",
            r.workload,
            r.a,
            r.b,
            r.diff(),
            r.percent(),
            signed_list(&r.per_run)
        );
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
        let md = markdown(&header(), "test", &runs, Some(&between), None).unwrap();
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
| kernel | test (7.2.13) |
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
        let md = markdown(&header(), "test", &[run(1694.0, 4004.0)], None, None).unwrap();
        assert!(md.contains("| runs | 1 |"));
        assert!(md.contains("## Run 1\n"));
        assert!(!md.contains("## Run 2"));
        assert!(!md.contains("Between runs"));
    }

    #[test]
    fn a_full_run_keeps_the_kernel_comparison() {
        let kept =
            "## Kernel comparison\n\nWritten by `cargo xtask bench --compare a --compare b`.\n";
        let md = markdown(&header(), "test", &[run(1694.0, 4004.0)], None, Some(kept)).unwrap();
        assert!(md.contains("every number on this page above the kernel comparison (which names the command that wrote it) is"));
        assert!(
            md.ends_with(&format!("| bpftrace | 0.00 | 0 ns | 0 |\n\n{kept}")),
            "{md}"
        );
        assert_eq!(section(&md, COMPARISON), Some(kept));
    }

    #[test]
    fn sections_are_found_and_replaced_whole() {
        let page = "# R\n\n## Run 1\n\nx\n\n## Kernel comparison\n\nold\n\n## Later\n\ny\n";
        assert_eq!(
            section(page, COMPARISON),
            Some("## Kernel comparison\n\nold\n\n")
        );
        let new = "## Kernel comparison\n\nnew\n";
        assert_eq!(
            splice(page, COMPARISON, new),
            "# R\n\n## Run 1\n\nx\n\n## Kernel comparison\n\nnew\n\n## Later\n\ny\n"
        );
        // Last on the page, it runs to the end.
        let last = "# R\n\n## Kernel comparison\n\nold\n";
        assert_eq!(
            section(last, COMPARISON),
            Some("## Kernel comparison\n\nold\n")
        );
        assert_eq!(
            splice(last, COMPARISON, new),
            "# R\n\n## Kernel comparison\n\nnew\n"
        );
        // Absent, or only named in passing, it is added at the end.
        let none = "# R\n\nSee ## Kernel comparison below.\n## Kernel comparisons\n";
        assert_eq!(section(none, COMPARISON), None);
        assert_eq!(
            splice(none, COMPARISON, new),
            format!("{}\n\n{new}", none.trim_end())
        );
    }

    /// An untraced-only run as `vm-tests --bench --bench-configs untraced`
    /// writes it, with these per-round costs of two workloads.
    fn untraced_run(areas: u64, k64: &[f64], k8: &[f64]) -> Value {
        let workload = |name: &str, rounds: &[f64]| {
            json!({
                "workload": name,
                "ns_per_call": {"median": rounds[0], "min": 0.0, "max": 0.0, "rounds": rounds},
                "added_ns_per_call_median": 0.0,
            })
        };
        json!({
            "clock": "icount", "kernel": "7.2.13", "rounds": 2,
            "backdrop": {"threads": 500, "vmalloc_areas": areas},
            "configs": [{"name": "untraced", "workloads": [
                workload("vmalloc_64k", k64), workload("vmalloc_8k", k8),
            ]}],
        })
    }

    fn compared() -> (Vec<Value>, Vec<Value>, Vec<Compared>) {
        let a = vec![
            untraced_run(587, &[8000.0, 8002.0], &[4000.0, 4002.0]),
            untraced_run(587, &[8010.0, 8010.0], &[4004.0, 4000.0]),
        ];
        let b = vec![
            untraced_run(587, &[8003.0, 8007.0], &[4001.0, 4003.0]),
            untraced_run(588, &[8020.0, 8022.0], &[4010.0, 4002.0]),
        ];
        let rows = comparison(&a, &b).unwrap();
        (a, b, rows)
    }

    #[test]
    fn comparison_pairs_runs_and_means_rounds() {
        let (_, _, rows) = compared();
        assert_eq!(
            rows,
            [
                Compared {
                    workload: "vmalloc_64k".into(),
                    a: 8005.5,
                    b: 8013.0,
                    per_run: vec![4.0, 11.0],
                },
                Compared {
                    workload: "vmalloc_8k".into(),
                    a: 4001.5,
                    b: 4004.0,
                    per_run: vec![1.0, 4.0],
                },
            ]
        );
        assert_eq!(rows[0].diff(), 7.5);
        assert_eq!(rows[1].spread(), (1.0, 4.0));
        assert!((rows[1].percent() - 2.5 / 4001.5 * 100.0).abs() < 1e-12);
        let one = [untraced_run(1, &[1.0], &[1.0])];
        assert!(comparison(&one, &[]).is_err());
        let old = json!({"configs": [{"name": "untraced", "workloads": [
            {"workload": "vmalloc_8k", "ns_per_call": {"median": 1.0}}]}]});
        let err = comparison(std::slice::from_ref(&old), std::slice::from_ref(&old))
            .unwrap_err()
            .to_string();
        assert!(err.contains("per-round"), "{err}");
    }

    #[test]
    fn comparison_table_and_section() {
        let (a, b, rows) = compared();
        let labels = ["test", "test+p"];
        assert_eq!(
            comparison_table(labels, &rows),
            "\
untraced insns per call, mean of each run's rounds; A: test, B: test+p
WORKLOAD                   A          B       B-A    % OF A   SPREAD min–max  B-A PER RUN
vmalloc_64k           8005.5     8013.0      +7.5    +0.09%     +4.0 – +11.0  +4.0 +11.0
vmalloc_8k            4001.5     4004.0      +2.5    +0.06%      +1.0 – +4.0  +1.0 +4.0
"
        );
        let header = Header {
            build: "abc1234".into(),
            date: "2026-12-07".into(),
            command: "cargo xtask bench --compare test --compare test+p --runs 2 --jobs 1 --backdrop-threads 500".into(),
        };
        let md = comparison_markdown(&header, labels, [&a, &b], &rows).unwrap();
        assert_eq!(
            md,
            "\
## Kernel comparison

Written by `cargo xtask bench --compare test --compare test+p --runs 2 --jobs 1 --backdrop-threads 500`: the untraced configuration alone on two kernels, counted boots only, booted alternately (A B A B ...). Every number in this section is what that run measured, not a claim about any other build; the next comparison replaces the section.

| | |
| --- | --- |
| build | `abc1234` (`git describe --always --dirty`) |
| date | 2026-12-07 (UTC) |
| kernel A | `test` (7.2.13) |
| kernel B | `test+p` (7.2.13) |
| clock | QEMU `-icount shift=0,sleep=off`: one guest nanosecond per guest instruction |
| runs per kernel | 2 |
| rounds per run | 2 |
| backdrop | 500 idle threads |
| vmalloc areas per run, A | 587 587 |
| vmalloc areas per run, B | 587 588 |

A and B are insns per call, each run's the mean of its rounds (every round meets the same layouts on both kernels), averaged over the runs. B − A per run is run n of B against run n of A; its min–max is the spread a difference has to stand out from.

| workload | A: `test` | B: `test+p` | B − A | % of A | B − A min–max | B − A per run |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
| vmalloc_64k | 8005.5 | 8013.0 | +7.5 | +0.09 % | +4.0 – +11.0 | +4.0 +11.0 |
| vmalloc_8k | 4001.5 | 4004.0 | +2.5 | +0.06 % | +1.0 – +4.0 | +1.0 +4.0 |
"
        );
        // On the page, between what was there before and after.
        let page = format!("# Benchmark results\n\nhand-typed\n\n{md}");
        assert_eq!(splice(&page, COMPARISON, &md), page);
    }

    #[test]
    fn dates_are_utc_calendar_days() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_825_600), "2000-02-29");
        assert_eq!(utc_date(1_795_737_600 + 86_399), "2026-11-27");
    }
}
