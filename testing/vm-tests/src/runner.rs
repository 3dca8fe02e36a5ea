// SPDX-License-Identifier: MIT OR Apache-2.0
//! Runs the selected scenarios one after the other and reports each as
//! libtest does (`test NAME ... ok (12.3 s)`), then `test result: N
//! passed, N failed, N skipped`. A scenario passes only if the kernel log
//! stays clean meanwhile; one that returns `Skip` is counted as skipped.

use std::{io::Write as _, path::Path, time::Instant};

use anyhow::{Context as _, Result};
use nofail_test_support::outcome::{Outcome, Skip, Summary, TestLine};

use crate::{
    harness::{self, Ctx},
    scenarios::Case,
};

/// Runs `cases`, printing each result; with `results`, also appends each
/// result line (and a failure's message, indented) to that file as it
/// goes, so that xtask can read back what finished even if the guest dies.
pub fn run(ctx: &Ctx, cases: &[&Case], results: Option<&Path>) -> Result<Summary> {
    let mut file = results
        .map(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("open {}", p.display()))
        })
        .transpose()?;
    let mut summary = Summary::default();
    let n = cases.len();
    println!("running {n} scenario{}", if n == 1 { "" } else { "s" });
    // Found before any scenario traces: finding it creates a map.
    if let Ok(caller) = nofail_test_support::bpf::array_map_caller() {
        println!("  an array map's vmalloc caller (/proc/vmallocinfo): {caller}");
    }
    for case in cases {
        let started = Instant::now();
        let result = run_one(ctx, case);
        let outcome = match &result {
            Ok(()) => Outcome::Ok,
            Err(e) => match e.downcast_ref::<Skip>() {
                Some(Skip(why)) => Outcome::Skipped(why.clone()),
                None => Outcome::Failed,
            },
        };
        let mut text = TestLine {
            name: case.name.to_string(),
            outcome: outcome.clone(),
            secs: started.elapsed().as_secs_f64(),
        }
        .to_string();
        if let (Outcome::Failed, Err(e)) = (&outcome, &result) {
            for line in format!("{e:#}").lines() {
                text += &format!("\n    {line}");
            }
        }
        println!("{text}");
        if let Some(f) = &mut file {
            writeln!(f, "{text}")?;
            f.flush()?;
        }
        summary.add(&outcome);
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("vm-tests on {}", release.trim());
    println!("{summary}");
    if let Some(f) = &mut file {
        writeln!(f, "{summary}")?;
    }
    Ok(summary)
}

/// The scenario, then the kernel-is-clean check: no WARN, BUG, oops or
/// lockdep report it does not expect.
fn run_one(ctx: &Ctx, case: &Case) -> Result<()> {
    let mut kmsg = harness::Kmsg::from_now();
    (case.run)(ctx)?;
    let records = kmsg
        .as_mut()
        .map_err(|e| anyhow::anyhow!("{e:#}"))?
        .read_new()?;
    let trouble = harness::kernel_trouble(&records, case.kernel_warnings);
    anyhow::ensure!(
        trouble.is_empty(),
        "kernel log: {}",
        trouble.join(" | ").trim()
    );
    Ok(())
}
