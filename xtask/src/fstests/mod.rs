// SPDX-License-Identifier: MIT OR Apache-2.0
//! `cargo xtask fstests`: fstests on XFS in the test-kernel VM, untraced,
//! under `nofail trace` and under `nofail inject`, with the kernel's own
//! counts beside nofail's (docs/fstests.md).
//!
//! Each run is one boot (`testing/fstests/guest.sh`): two loop devices
//! over files in tmpfs, XFS made with 64 KiB directory blocks, fstests run
//! from its built tree (read only, over the shared host root), results
//! written to `target/fstests/<label>/<run>/`, read back here.

pub mod build;
mod check;
mod parse;
mod table;

use std::{path::Path, time::Instant};

use anyhow::{Context as _, Result, bail};

use crate::{
    kernels::{Kernel, KernelSpec},
    util::workspace_root,
    variant, vm,
};

use self::{
    check::Check,
    parse::{NofailReport, Summary, TestResult, XfsStats},
};

/// The set `cargo xtask ci` runs (and `cargo xtask fstests` without
/// tests): directories (generic/736: renames in a large directory while
/// it is read, 64 KiB directory blocks here), xattrs (generic/117: serial fsstress
/// runs writing extended attributes, the set's vmalloc calls: remote
/// values in vmalloc'd buffers), the log (generic/052: a shutdown, then
/// log recovery on mount) and mount (generic/050: mount, remount and
/// unmount on a read-only block device). docs/fstests.md gives the
/// measured times.
pub const CI_TESTS: &[&str] = &["generic/050", "generic/052", "generic/117", "generic/736"];

/// The longer set (`--long`), what fits in about an hour for the three
/// runs under TCG: the CI set, the twelve tests issue #27 measured
/// (directories, metadata, xattrs; generic/001 about 2 minutes, xfs/432
/// about 3.5), remote xattr values (generic/020, xfs/021), mount
/// (generic/067, 491) and log recovery of unlinked inodes (generic/417).
/// fstests' groups dir, attr and mount together (103 tests) ran 10 tests
/// in 16 minutes untraced (generic/037 alone 554 s): hours for three runs.
pub const LONG_TESTS: &[&str] = &[
    "generic/001",
    "generic/002",
    "generic/006",
    "generic/007",
    "generic/011",
    "generic/020",
    "generic/050",
    "generic/052",
    "generic/067",
    "generic/070",
    "generic/117",
    "generic/257",
    "generic/417",
    "generic/471",
    "generic/491",
    "generic/637",
    "generic/736",
    "xfs/001",
    "xfs/021",
    "xfs/432",
];

/// nofail inject's rule unless one is given after `--`
/// (docs/fstests.md says why).
pub const DEFAULT_RULE: &[&str] = &["--stage", "area", "--probability", "0.05"];

/// Call chain depth nofail folds the calls that mattered by: deep enough
/// to see past `xfs_buf_get_map` to who asked for the buffer.
const CHAIN_DEPTH: &str = "6";

/// Guest memory: fstests' devices live in a 3 GiB tmpfs.
const MEMORY_MIB: u32 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RunKind {
    /// fstests alone: nothing of nofail's, no trace instance.
    Untraced,
    /// Under `nofail trace --caller 'xfs_*' --`.
    Trace,
    /// Under `nofail inject --caller 'xfs_*' RULE --`.
    Inject,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Untraced => "untraced",
            RunKind::Trace => "trace",
            RunKind::Inject => "inject",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct FstestsArgs {
    /// The kernel to boot (XFS, loop devices and, for the realistic mode,
    /// fail_page_alloc built in: the test kernel has them).
    #[arg(long, default_value = "test")]
    pub kernel: KernelSpec,
    /// Run an fstests group (`./check -g GROUP`; repeatable) instead of
    /// TESTS.
    #[arg(long, conflicts_with = "tests")]
    pub group: Vec<String>,
    /// The longer set (20 tests, about an hour for the three runs; see
    /// docs/fstests.md).
    #[arg(long, conflicts_with_all = ["tests", "group"])]
    pub long: bool,
    /// The realistic mode: every page allocation of order MIN_ORDER or
    /// more under xfs_buf_alloc fails (the kernel's fail_page_alloc with
    /// its stack filter), as on a machine too fragmented to give XFS its
    /// high-order folios: XFS falls back to vmalloc for every buffer
    /// larger than a page (1), or of 64 KiB and more (4). Applies to all
    /// three runs.
    #[arg(long, value_name = "MIN_ORDER", num_args = 0..=1, require_equals = true,
          default_missing_value = "1", value_parser = clap::value_parser!(u32).range(1..=10))]
    pub realistic: Option<u32>,
    /// The runs to make, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "untraced,trace,inject"
    )]
    pub runs: Vec<RunKind>,
    /// Wall-clock limit per run in seconds, boot included (default: 300
    /// plus 300 per test; 6 hours for a group).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Keep this set's runs apart: they go to
    /// target/fstests/KERNEL[-realisticN]-NAME/ (runs of the same label
    /// replace each other's files).
    #[arg(long)]
    pub name: Option<String>,
    /// Boot nothing: print the table again from the files the runs of
    /// the same set (kernel, --realistic, --name, --runs) left.
    #[arg(long)]
    pub reread: bool,
    /// Tests to run (e.g. generic/006 xfs/432); the CI set when neither
    /// tests nor --group are given.
    pub tests: Vec<String>,
    /// nofail inject's rule, after `--` (default `--stage area
    /// --probability 0.05`); `--caller 'xfs_*'`, `--chains` and `--json`
    /// are added.
    #[arg(last = true, value_name = "NOFAIL_FLAGS")]
    pub nofail: Vec<String>,
}

/// What to run, however it was asked for.
pub struct Plan {
    /// What `./check` is given: tests, or `-g GROUP`s.
    pub check_args: Vec<String>,
    pub realistic: Option<u32>,
    pub runs: Vec<RunKind>,
    pub rule: Vec<String>,
    pub timeout: u64,
    pub name: Option<String>,
    /// Read the runs an earlier invocation left instead of booting.
    pub reread: bool,
}

impl Plan {
    pub fn from_args(args: &FstestsArgs) -> Self {
        let (check_args, timeout) = if !args.group.is_empty() {
            let g = args
                .group
                .iter()
                .flat_map(|g| ["-g".to_string(), g.clone()])
                .collect();
            (g, 6 * 3600)
        } else {
            let tests: Vec<String> = if args.long {
                LONG_TESTS.iter().map(|s| s.to_string()).collect()
            } else if args.tests.is_empty() {
                CI_TESTS.iter().map(|s| s.to_string()).collect()
            } else {
                args.tests.clone()
            };
            let t = 300 + 300 * tests.len() as u64;
            (tests, t)
        };
        Self {
            check_args,
            realistic: args.realistic,
            runs: args.runs.clone(),
            rule: if args.nofail.is_empty() {
                DEFAULT_RULE.iter().map(|s| s.to_string()).collect()
            } else {
                args.nofail.clone()
            },
            timeout: args.timeout.unwrap_or(timeout),
            name: args.name.clone(),
            reread: args.reread,
        }
    }

    /// The CI set, all three runs, the default rule.
    pub fn ci() -> Self {
        Self {
            check_args: CI_TESTS.iter().map(|s| s.to_string()).collect(),
            realistic: None,
            runs: vec![RunKind::Untraced, RunKind::Trace, RunKind::Inject],
            rule: DEFAULT_RULE.iter().map(|s| s.to_string()).collect(),
            timeout: 900,
            name: Some("ci".into()),
            reread: false,
        }
    }

    /// The directory under target/fstests/ this plan's runs write to.
    fn label(&self, kernel: &Kernel) -> String {
        let mut label = kernel.label.clone();
        if let Some(order) = self.realistic {
            label += &format!("-realistic{order}");
        }
        if let Some(name) = &self.name {
            label += &format!("-{name}");
        }
        label
    }
}

/// `cargo xtask fstests`.
pub fn cmd(args: FstestsArgs) -> Result<i32> {
    if let Some(name) = &args.name
        && (name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
    {
        bail!("--name {name:?}: letters, digits, '-', '_' and '.' only");
    }
    crate::setup::ensure()?;
    let plan = Plan::from_args(&args);
    let kernel = variant::ensure_spec(&args.kernel)?;
    Ok(if run(&kernel, &plan)? { 0 } else { 1 })
}

/// One run's guest, and what it left.
pub struct Run {
    pub kind: RunKind,
    /// The guest's exit status (vm::EXIT_* for a timeout, crash or hang).
    pub guest_status: i32,
    pub secs: f64,
    pub summary: Summary,
    pub results: Result<Vec<TestResult>>,
    pub stats: Result<(XfsStats, XfsStats)>,
    /// nofail's report (traced runs).
    pub report: Option<Result<NofailReport>>,
    /// Failed slab allocations per call site (traced runs).
    pub failed_slab: Option<Result<Vec<(String, u64)>>>,
    /// Kernel log lines that speak of trouble (WARNING, BUG, a hung task...).
    pub kernel_log: Vec<String>,
}

/// Builds, boots one guest per run, prints the table; true when the
/// untraced run passed and every exactness check holds.
pub fn run(kernel: &Kernel, plan: &Plan) -> Result<bool> {
    let root = workspace_root();
    let dir = root.join("target/fstests").join(plan.label(kernel));
    let mut runs = Vec::new();
    if plan.reread {
        for &kind in &plan.runs {
            let out = dir.join(kind.as_str());
            let status = std::fs::read_to_string(out.join("guest-status")).with_context(|| {
                format!("no earlier {} run in {}", kind.as_str(), out.display())
            })?;
            let (code, secs) = status.trim().split_once(' ').unwrap_or(("", ""));
            runs.push(read_run(
                kind,
                code.parse().context("guest-status")?,
                secs.parse().context("guest-status")?,
                &out,
            ));
        }
    } else {
        let tree = build::ensure()?;
        let nofail = if plan.runs.iter().any(|r| *r != RunKind::Untraced) {
            Some(crate::dist::build()?)
        } else {
            None
        };
        // Two guests at a time (each one QEMU thread): the runs share
        // nothing but the read-only fstests tree (each its own /tmp with
        // the loop images, its own $OUT and RESULT_BASE).
        for run in crate::suite::in_lanes(&plan.runs, |_, &kind| {
            run_one(kernel, plan, kind, &root, &tree, nofail.as_deref(), &dir)
        }) {
            runs.push(run?);
        }
    }
    let checks = checks(&runs);
    let text = table::render(
        &format!("{} ({})", kernel.label, kernel.release),
        plan,
        &runs,
        &checks,
    );
    print!("{text}");
    std::fs::write(dir.join("table.txt"), &text)?;
    println!("xtask fstests: table and runs in {}", dir.display());
    let untraced_ok = runs
        .iter()
        .filter(|r| r.kind == RunKind::Untraced)
        .all(|r| {
            r.results.as_ref().is_ok_and(|t| {
                !t.is_empty()
                    && t.iter()
                        .all(|t| !matches!(t.outcome, parse::Outcome::Fail(_)))
            })
        });
    Ok(untraced_ok && checks.iter().all(|(_, c)| c.ok))
}

fn run_one(
    kernel: &Kernel,
    plan: &Plan,
    kind: RunKind,
    root: &Path,
    tree: &Path,
    nofail: Option<&Path>,
    dir: &Path,
) -> Result<Run> {
    let out = dir.join(kind.as_str());
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).with_context(|| format!("mkdir {}", out.display()))?;
    let script = root.join("testing/fstests/guest.sh");
    let mut command: Vec<String> = vec![
        "bash".into(),
        script.display().to_string(),
        kind.as_str().into(),
    ];
    if kind != RunKind::Untraced {
        let nofail = nofail.context("no nofail binary for a traced run")?;
        command.extend([
            nofail.display().to_string(),
            kind.as_str().into(),
            "--caller".into(),
            "xfs_*".into(),
            "--chains".into(),
            CHAIN_DEPTH.into(),
            "--json".into(),
            out.join("nofail.json").display().to_string(),
        ]);
        if kind == RunKind::Inject {
            command.extend(plan.rule.iter().cloned());
        }
    }
    let mut env = vec![
        format!("FSTESTS={}", tree.display()),
        format!("OUT={}", out.display()),
        format!("CHECK_ARGS={}", plan.check_args.join(" ")),
    ];
    if let Some(order) = plan.realistic {
        env.push(format!("FALLBACK_MIN_ORDER={order}"));
    }
    println!(
        "xtask fstests: {} run on {}: {}",
        kind.as_str(),
        kernel.label,
        command[3..].join(" ")
    );
    let t0 = Instant::now();
    let guest_status = vm::run(&vm::Guest {
        kernel,
        cwd: root,
        command: &command,
        env: &env,
        timeout: plan.timeout,
        memory: MEMORY_MIB,
        icount: false,
        cpus: 2,
        systemd: false,
    })?;
    let secs = t0.elapsed().as_secs_f64();
    // For --reread.
    std::fs::write(
        out.join("guest-status"),
        format!("{guest_status} {secs:.1}\n"),
    )?;
    Ok(read_run(kind, guest_status, secs, &out))
}

/// What a run left in `out`, each part read on its own: one missing part
/// does not hide the others.
fn read_run(kind: RunKind, guest_status: i32, secs: f64, out: &Path) -> Run {
    let read = |name: &str| -> Result<String> {
        let p = out.join(name);
        std::fs::read_to_string(&p).with_context(|| format!("{} is missing", p.display()))
    };
    let summary = Summary::parse(&read("summary").unwrap_or_default());
    let results = read("check.out").and_then(|t| parse::check_output(&t));
    let stats = (|| {
        Ok((
            XfsStats::parse(&read("xfs-stats.before")?)?,
            XfsStats::parse(&read("xfs-stats.after")?)?,
        ))
    })();
    let report = (kind != RunKind::Untraced)
        .then(|| read("nofail.json").and_then(|t| NofailReport::parse(&t)));
    let failed_slab = (kind != RunKind::Untraced)
        .then(|| read("failed-slab").and_then(|t| parse::failed_slab(&t)));
    let kernel_log = trouble(&read("dmesg").unwrap_or_default());
    Run {
        kind,
        guest_status,
        secs,
        summary,
        results,
        stats,
        report,
        failed_slab,
        kernel_log,
    }
}

/// Kernel log lines that speak of trouble.
pub fn trouble(dmesg: &str) -> Vec<String> {
    const PATTERNS: [&str; 9] = [
        "WARNING:",
        "BUG:",
        "Oops",
        "INFO: task",
        "blocked for more than",
        "Internal error",
        "Corruption",
        "page allocation failure",
        "possible circular locking",
    ];
    dmesg
        .lines()
        .filter(|l| PATTERNS.iter().any(|p| l.contains(p)))
        .map(str::to_string)
        .collect()
}

/// Every check of every run, with its run.
fn checks(runs: &[Run]) -> Vec<(RunKind, Check)> {
    let mut out = Vec::new();
    for r in runs {
        let k = r.kind;
        out.push((k, Check::from("guest finished", guest_finished(r))));
        let Some(report) = &r.report else { continue };
        let report = match report {
            Ok(rep) => rep,
            Err(e) => {
                out.push((
                    k,
                    Check::from("nofail's report", Err(anyhow::anyhow!("{e:#}"))),
                ));
                continue;
            }
        };
        out.push((
            k,
            Check::from(
                "nofail saw every call",
                if report.command == k.as_str() {
                    check::complete(report)
                } else {
                    Err(anyhow::anyhow!(
                        "the report is of nofail {}, not {}",
                        report.command,
                        k.as_str()
                    ))
                },
            ),
        ));
        out.push((
            k,
            Check::from(
                "nofail = tracepoint xfs_buf_backing_vmalloc",
                check::tracepoint(report, &r.summary),
            ),
        ));
        out.push((
            k,
            Check::from(
                "nofail open-coded retries = xb_page_retries",
                match &r.stats {
                    Ok((b, a)) => check::page_retries(report, b, a),
                    Err(e) => Err(anyhow::anyhow!("{e:#}")),
                },
            ),
        ));
        out.push((
            k,
            Check::from(
                "failed slab allocations in the area stage = injected",
                match &r.failed_slab {
                    Some(Ok(sites)) => check::slab(report, sites, &r.summary),
                    Some(Err(e)) => Err(anyhow::anyhow!("{e:#}")),
                    None => Err(anyhow::anyhow!("no failed-slab file")),
                },
            ),
        ));
        if k == RunKind::Inject {
            out.push((
                k,
                Check::from(
                    "every injected failure accounted for",
                    check::accounting(report),
                ),
            ));
        }
    }
    out
}

/// The guest ran to its end and fstests reported.
fn guest_finished(r: &Run) -> Result<String> {
    if let Some(e) = r.summary.get("error") {
        bail!("the guest script stopped: {e}");
    }
    if r.guest_status != 0 {
        bail!(
            "the guest ended with status {} ({})",
            r.guest_status,
            match r.guest_status {
                vm::EXIT_TIMEOUT => "timeout",
                vm::EXIT_CRASH => "kernel crash",
                vm::EXIT_HANG => "guest hung",
                _ => "the script's",
            }
        );
    }
    if r.summary.get("done").is_none() {
        bail!("the guest script did not finish");
    }
    match &r.results {
        Ok(t) if t.is_empty() => bail!("fstests reported no test"),
        Ok(t) => Ok(format!(
            "{} tests, check exited {}",
            t.len(),
            r.summary.get("status").unwrap_or("?")
        )),
        Err(e) => bail!("no fstests results: {e:#}"),
    }
}
