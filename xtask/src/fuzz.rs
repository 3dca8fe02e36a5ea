// SPDX-License-Identifier: MIT OR Apache-2.0
//! `cargo xtask fuzz`: builds the cargo-fuzz targets (fuzz/, nightly) and
//! runs each, one at a time with one worker, for a bounded time or count,
//! seeded from fuzz/seeds/<target>; prints executions, seconds, exec/s and
//! crashes per target, and fails on any crash, naming its reproducer.
//! docs/fuzzing.md says what each target checks.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::util::workspace_root;

/// Every target, in the order they run.
pub const TARGETS: [&str; 6] = [
    "report_json",
    "inject_rules",
    "globs",
    "sizes_durations",
    "prometheus_labels",
    "http",
];

/// No sanitizer: the code under test is safe Rust (its unsafe code is the
/// bpf(2) layer, which no target reaches), so AddressSanitizer finds
/// nothing there that Rust's own checks would not, and the targets are
/// built with debug assertions and overflow checks either way. Measured
/// on 2 cores (docs/fuzzing.md): the cold build took 218 s with ASan and
/// 191 s without; report_json ran 4,845 inputs/s with it and 25,878
/// without, prometheus_labels 67 and 184.
const SANITIZER: &str = "none";

/// Any input slower than this is a hang (a glob or parser gone
/// exponential); the http target's slowest legitimate input waits for the
/// server's 5 s request-head deadline.
const INPUT_TIMEOUT_S: u32 = 20;

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Only this target (default: every one).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub target: Option<String>,
    /// Seconds each target runs (the bound with --runs, whichever comes
    /// first).
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// Inputs each target runs.
    #[arg(long)]
    pub runs: Option<u64>,
    /// Start from the seeds alone, in an emptied corpus of its own: a
    /// short run spends its time fuzzing, not re-running the thousands of
    /// inputs a long run's corpus grew (report_json's took 54 s to load).
    #[arg(long)]
    pub fresh_corpus: bool,
}

/// What one run printed.
#[derive(Debug, Default, PartialEq)]
struct Stats {
    execs: u64,
    exec_per_sec: u64,
    corpus: u64,
    /// libFuzzer's random seed (`INFO: Seed: N`): `-seed=N` replays the
    /// run's order of mutations.
    seed: Option<u64>,
    /// The reproducer libFuzzer wrote, when an input failed.
    crash: Option<String>,
}

/// The figures of libFuzzer's `-print_final_stats=1` and its reproducer
/// line (`Test unit written to PATH`).
fn parse_stats(log: &str) -> Stats {
    let mut s = Stats::default();
    for line in log.lines() {
        let stat = |name: &str| {
            line.strip_prefix(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(v) = stat("stat::number_of_executed_units:") {
            s.execs = v;
        } else if let Some(v) = stat("stat::average_exec_per_sec:") {
            s.exec_per_sec = v;
        } else if let Some(v) = stat("INFO: Seed:") {
            s.seed = Some(v);
        } else if let Some(path) = line.split("Test unit written to ").nth(1) {
            s.crash = Some(path.trim().to_string());
        }
        // "#1234 DONE cov: 56 ft: 78 corp: 90/1234b ...": the corpus size.
        if let Some(n) = line
            .split(" corp: ")
            .nth(1)
            .and_then(|c| c.split('/').next())
            .and_then(|n| n.parse().ok())
        {
            s.corpus = n;
        }
    }
    s
}

fn cargo_fuzz(fuzz_dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(["+nightly", "fuzz"]).current_dir(fuzz_dir);
    cmd
}

/// Builds every target once (one build, not one per target).
pub fn build(root: &Path) -> Result<()> {
    let t = Instant::now();
    let ok = cargo_fuzz(&root.join("fuzz"))
        .args(["build", "-s", SANITIZER])
        .status()
        .context("cargo fuzz not found (cargo xtask setup installs it)")?
        .success();
    if !ok {
        bail!("cargo fuzz build failed");
    }
    println!(
        "xtask fuzz: built every target in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs `target` within the bounds; its figures, the log kept in
/// target/fuzz/<target>.log.
fn run_one(root: &Path, target: &str, args: &FuzzArgs) -> Result<(Stats, f64)> {
    let work = root.join("target/fuzz");
    // The growing corpus is local (target/ is not committed); the seeds
    // are read from fuzz/seeds, never written.
    let corpus = if args.fresh_corpus {
        let fresh = work.join("fresh-corpus").join(target);
        let _ = std::fs::remove_dir_all(&fresh);
        fresh
    } else {
        work.join("corpus").join(target)
    };
    let artifacts: PathBuf = work.join("artifacts").join(target);
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(&artifacts)?;
    let log_path = work.join(format!("{target}.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = cargo_fuzz(&root.join("fuzz"));
    cmd.args(["run", "-s", SANITIZER, target])
        .arg(&corpus)
        .arg(root.join("fuzz/seeds").join(target))
        .arg("--")
        .arg(format!("-max_total_time={}", args.secs))
        .arg(format!("-timeout={INPUT_TIMEOUT_S}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1");
    if let Some(n) = args.runs {
        cmd.arg(format!("-runs={n}"));
    }
    let t = Instant::now();
    let status = cmd.stdout(Stdio::null()).stderr(log).status()?;
    let took = t.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log_path)?;
    let mut stats = parse_stats(&text);
    if !status.success() && stats.crash.is_none() {
        // Failed without a reproducer (a build error, a killed run).
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        stats.crash = Some(format!("(none written; log: {})", log_path.display()));
    }
    Ok((stats, took))
}

pub fn run(args: FuzzArgs) -> Result<i32> {
    let root = workspace_root();
    build(&root)?;
    let targets: Vec<&str> = match &args.target {
        Some(t) => vec![t.as_str()],
        None => TARGETS.to_vec(),
    };
    let mut failed = Vec::new();
    println!(
        "xtask fuzz: {:<18} {:>12} {:>8} {:>9} {:>7} {:>11}  crash",
        "target", "executions", "seconds", "exec/s", "corpus", "seed"
    );
    for target in targets {
        let (stats, took) = run_one(&root, target, &args)?;
        println!(
            "xtask fuzz: {target:<18} {:>12} {took:>8.0} {:>9} {:>7} {:>11}  {}",
            stats.execs,
            stats.exec_per_sec,
            stats.corpus,
            stats.seed.map_or_else(|| "-".into(), |s| s.to_string()),
            stats.crash.as_deref().unwrap_or("none")
        );
        if stats.crash.is_some() {
            failed.push(target);
        }
    }
    if failed.is_empty() {
        Ok(0)
    } else {
        eprintln!(
            "xtask fuzz: failed: {} (reproducers above; replay with `cargo +nightly fuzz run -s {SANITIZER} TARGET FILE` in fuzz/)",
            failed.join(", ")
        );
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_a_clean_run_and_of_a_crash() {
        let clean = "INFO: Seed: 3141592653\n\
                     #2 INITED cov: 10 ft: 11 corp: 3/40b exec/s: 0 rss: 30Mb\n\
                     #9000 DONE cov: 99 ft: 120 corp: 57/3012b lim: 4096 exec/s: 900 rss: 40Mb\n\
                     Done 9000 runs in 10 second(s)\n\
                     stat::number_of_executed_units: 9000\n\
                     stat::average_exec_per_sec:     900\n\
                     stat::new_units_added:          54\n";
        assert_eq!(
            parse_stats(clean),
            Stats {
                execs: 9000,
                exec_per_sec: 900,
                corpus: 57,
                seed: Some(3_141_592_653),
                crash: None
            }
        );
        let crash = "#10 NEW cov: 5 ft: 5 corp: 2/9b\n\
                     ==1== ERROR: libFuzzer: deadly signal\n\
                     artifact_prefix='a/'; Test unit written to a/crash-0123abcd\n\
                     stat::number_of_executed_units: 11\n";
        let s = parse_stats(crash);
        assert_eq!(s.crash.as_deref(), Some("a/crash-0123abcd"));
        assert_eq!((s.execs, s.corpus), (11, 2));
    }
}
