// SPDX-License-Identifier: MIT OR Apache-2.0
//! CI's check of the kernel fix in testing/patches: the report of the
//! stock test kernel's endless NOFAIL mapping loop
//! (`mapping_failure_after_partial_map_spins`, sampled while the call
//! spins) against the patched kernel's single retry
//! (`mapping_partial_map_patched_retries_once`), through the real
//! `nofail report --baseline` gate both ways: the patched run must pass
//! against the stock one, the stock run must fail against the patched
//! one, each with the change for the trigger's call site printed exactly
//! as the two reports' counts give it.
//!
//! `cargo xtask gate --stock A --patched B` runs the same check on two
//! kernels a developer names: matrix names (`test`,
//! `test+testing/patches/...patch`) or kernel build trees (`DIR`): the
//! stock scenario boots on A, the patched one on B, then `check`.

use std::{path::Path, process::Command, time::SystemTime};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::{
    kernels::{KernelName, KernelSpec},
    suite::{self, Selection},
    util::workspace_root,
    variant,
};

/// The scenario whose report is the stock side of the gate.
pub const STOCK_SCENARIO: &str = "mapping_failure_after_partial_map_spins";
/// The scenario whose report is the patched side (run with the patch's
/// stem passed to vm-tests, which selects it).
pub const PATCHED_SCENARIO: &str = "mapping_partial_map_patched_retries_once";

/// The fix, relative to the workspace root.
pub const PATCH: &str = "testing/patches/vmalloc-nofail-unwind-partial-map.patch";
/// The reports the two scenarios write into their kernel's results.
pub const STOCK_REPORT: &str = "mapping_spin.json";
pub const PATCHED_REPORT: &str = "mapping_patched.json";
/// The call site of both scenarios (the trigger's fresh-space NOFAIL call).
const SITE: &str = "site_vmalloc_nofail_fresh";
/// The gate as the README's third example and docs/report.md show it.
const GATE: [&str; 4] = [
    "--fail-if-retries-increase",
    "50",
    "--fail-if-p99-retries-above",
    "1",
];

/// What the gate must print, from the two reports' own counts.
#[derive(Debug, PartialEq)]
struct Expected {
    caller: String,
    /// The table line's columns after the caller, patched against stock.
    pass_columns: Vec<String>,
    /// The same, stock against patched.
    fail_columns: Vec<String>,
    /// The violation line of stock against patched.
    violation: String,
}

fn expected(stock: &Value, patched: &Value) -> Result<Expected> {
    let of_site = |list: &Value| -> Result<Vec<Value>> {
        Ok(list
            .as_array()
            .context("not a list")?
            .iter()
            .filter(|r| {
                r["caller"]
                    .as_str()
                    .is_some_and(|c| c.starts_with(&format!("{SITE}+")))
            })
            .cloned()
            .collect())
    };
    let uint = |v: &Value, f: &str| -> Result<u64> {
        v[f].as_u64()
            .with_context(|| format!("no integer {f} in {}", v["caller"]))
    };
    let stuck = of_site(&stock["in_flight"])?;
    ensure!(
        stuck.len() == 1 && of_site(&stock["callers"])?.is_empty(),
        "the stock report should hold one {SITE} call in flight and none finished"
    );
    let stuck = &stuck[0];
    let spins = uint(stuck, "mapping_failures")? + uint(stuck, "area_failures")?;
    ensure!(
        spins >= 2,
        "the stock call failed {spins} times: it was not spinning"
    );
    let rows = of_site(&patched["callers"])?;
    ensure!(
        rows.len() == 1 && of_site(&patched["in_flight"])?.is_empty(),
        "the patched report should hold one finished {SITE} call and none in flight"
    );
    let row = &rows[0];
    for (f, want) in [("calls", 1), ("mapping_retries", 1), ("area_retries", 0)] {
        ensure!(uint(row, f)? == want, "patched report: {f} != {want}");
    }
    let caller = row["caller"].as_str().unwrap_or_default().to_string();
    ensure!(
        stuck["caller"].as_str() == Some(caller.as_str()),
        "the two reports name the call site differently: {} and {caller}",
        stuck["caller"]
    );
    let m = spins as f64;
    let cols = |v: [&str; 7]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let per = format!("{spins}.00");
    let down = format!("{:+.1}%", (1.0 - m) / m * 100.0);
    let up = format!("{:+.1}%", (m - 1.0) / 1.0 * 100.0);
    Ok(Expected {
        pass_columns: cols(["0+1", "1", &per, "1.00", "-", "<=1", &down]),
        fail_columns: cols(["1", "0+1", "1.00", &per, "<=1", "-", &up]),
        violation: format!(
            "nofail: gate: {caller}: retries per call 1.00 -> {per} ({up}), more than +50%, 1 call still in flight"
        ),
        caller,
    })
}

/// The columns after `caller` of its line in the baseline table (after
/// the report's own tables, from the "against baseline" line on).
fn columns(table: &str, caller: &str) -> Option<Vec<String>> {
    table
        .lines()
        .skip_while(|l| !l.starts_with("against baseline"))
        .find_map(|l| l.strip_prefix(caller))
        .map(|rest| rest.split_whitespace().map(str::to_string).collect())
}

/// A scenario's output was written since `since` (this run), not left by
/// an earlier one.
pub fn written_since(file: &Path, since: SystemTime) -> Result<()> {
    let modified = std::fs::metadata(file)
        .and_then(|m| m.modified())
        .with_context(|| format!("no {}: its scenario did not run", file.display()))?;
    ensure!(
        modified >= since,
        "{} is older than this run: its scenario did not write it",
        file.display()
    );
    Ok(())
}

/// Runs the gate both ways with `nofail` on the two reports, which must
/// have been written since `since` (this CI run).
pub fn check(nofail: &Path, stock: &Path, patched: &Path, since: SystemTime) -> Result<()> {
    for file in [stock, patched] {
        written_since(file, since)?;
    }
    let read =
        |p: &Path| -> Result<Value> { Ok(serde_json::from_str(&std::fs::read_to_string(p)?)?) };
    let want = expected(&read(stock)?, &read(patched)?)?;
    let gate = |new: &Path, old: &Path| -> Result<(Option<i32>, String, String)> {
        let out = Command::new(nofail)
            .arg("report")
            .arg(new)
            .arg("--baseline")
            .arg(old)
            .args(GATE)
            .output()
            .with_context(|| format!("cannot run {}", nofail.display()))?;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let flags = GATE.join(" ");
    let (code, table, err) = gate(patched, stock)?;
    println!("xtask gate: nofail report patched --baseline stock {flags}: exit {code:?}");
    println!(
        "xtask gate:   {} {}",
        want.caller,
        columns(&table, &want.caller).unwrap_or_default().join(" ")
    );
    if code != Some(0) {
        bail!("the patched run failed the gate against the stock one: {err}");
    }
    if columns(&table, &want.caller).as_ref() != Some(&want.pass_columns) {
        bail!(
            "patched against stock: expected {} {:?}, got:\n{table}",
            want.caller,
            want.pass_columns
        );
    }
    let (code, table, err) = gate(stock, patched)?;
    println!("xtask gate: nofail report stock --baseline patched {flags}: exit {code:?}");
    println!("xtask gate:   {}", err.lines().next().unwrap_or_default());
    if code != Some(3) {
        bail!("the stock run did not fail the gate (exit {code:?}, not 3): {err}");
    }
    if columns(&table, &want.caller).as_ref() != Some(&want.fail_columns) {
        bail!(
            "stock against patched: expected {} {:?}, got:\n{table}",
            want.caller,
            want.fail_columns
        );
    }
    if !err.lines().any(|l| l == want.violation) {
        bail!(
            "stock against patched: expected the violation {:?}, got: {err}",
            want.violation
        );
    }
    Ok(())
}

/// `cargo xtask gate --stock A --patched B`: builds what the guests run,
/// then `compare`.
pub fn run(stock: &KernelSpec, patched: &KernelSpec) -> Result<i32> {
    crate::setup::ensure()?;
    compare(stock, patched, true)
}

/// The stock scenario on A, the patched one on B (two guests at once),
/// then the gate on their reports: 0 when it passes, 1 with the gate's
/// reason in one line when not. The kernels are provided (and named
/// kernels refused) before anything is built (`build`) or booted.
pub fn compare(stock: &KernelSpec, patched: &KernelSpec, build: bool) -> Result<i32> {
    if stock.patch.is_some() {
        bail!("--stock names a kernel without the fix (a kernel name or DIR), not {stock}");
    }
    if patched.tree.is_none() && patched.patch.is_none() {
        bail!(
            "--patched names the kernel with the fix: test+{PATCH} or a DIR you built with it, not {patched}"
        );
    }
    let fix = variant::stem(Path::new(PATCH));
    let a = variant::ensure_spec(stock)?;
    let mut b = variant::ensure_spec(patched)?;
    if b.name == KernelName::Own {
        // A tree says nothing of its patches: the patched scenario is
        // chosen by the fix's stem, as for test+PATCH.
        b.patch = Some(fix.clone());
    }
    if b.patch.as_deref() != Some(fix.as_str()) {
        bail!(
            "{} was built with {}.patch: the gate's patched scenario is made for {PATCH}",
            b.label,
            b.patch.as_deref().unwrap_or_default()
        );
    }
    if a.label == b.label {
        bail!("--stock and --patched name the same kernel ({})", a.label);
    }
    for kernel in [&a, &b] {
        if kernel.name == KernelName::Own {
            crate::tree::check_suite(kernel)?;
        }
    }
    if build {
        suite::build()?;
    }
    let since = SystemTime::now();
    let runs = [(&a, STOCK_SCENARIO), (&b, PATCHED_SCENARIO)];
    let ran = suite::in_lanes(&runs, |_, (kernel, scenario)| {
        suite::run(
            kernel,
            Selection {
                exact: &[scenario],
                ..Selection::default()
            },
        )
    });
    let mut failed = false;
    for ((kernel, scenario), ok) in runs.iter().zip(ran) {
        if !ok? {
            println!(
                "xtask gate: FAIL: {scenario} did not pass on {}",
                kernel.label
            );
            failed = true;
        }
    }
    if failed {
        return Ok(1);
    }
    let results = workspace_root().join("target/vm-results");
    let stock_report = results.join(&a.label).join(STOCK_REPORT);
    let patched_report = results.join(&b.label).join(PATCHED_REPORT);
    // Passed but wrote nothing: skipped for an option a tree lacks.
    for (kernel, scenario, report) in [
        (&a, STOCK_SCENARIO, &stock_report),
        (&b, PATCHED_SCENARIO, &patched_report),
    ] {
        let fresh = std::fs::metadata(report)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since);
        if !fresh {
            println!(
                "xtask gate: FAIL: {scenario} did not run on {} (skipped: the line above names what it lacks)",
                kernel.label
            );
            return Ok(1);
        }
    }
    match check(
        &crate::dist::binary()?,
        &stock_report,
        &patched_report,
        since,
    ) {
        Ok(()) => {
            println!(
                "xtask gate: pass: {} ({}) against {} ({})",
                b.label,
                patched_report.display(),
                a.label,
                stock_report.display()
            );
            Ok(0)
        }
        Err(e) => {
            let why = format!("{e:#}");
            println!(
                "xtask gate: FAIL: {}",
                why.lines().next().unwrap_or_default()
            );
            Ok(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SITE_AT: &str = "site_vmalloc_nofail_fresh+0x71 [nofail_trigger]";

    fn stock(failures: u64) -> Value {
        json!({
            "callers": [{"caller": "kernel_clone+0xdf", "calls": 1}],
            "in_flight": [{"caller": SITE_AT, "mapping_failures": failures, "area_failures": 0}],
        })
    }

    fn patched() -> Value {
        json!({
            "callers": [{"caller": SITE_AT, "calls": 1, "mapping_retries": 1, "area_retries": 0}],
            "in_flight": [],
        })
    }

    #[test]
    fn expectations_come_from_the_reports_counts() {
        let want = expected(&stock(744), &patched()).unwrap();
        assert_eq!(want.caller, SITE_AT);
        assert_eq!(
            want.pass_columns,
            ["0+1", "1", "744.00", "1.00", "-", "<=1", "-99.9%"]
        );
        assert_eq!(
            want.fail_columns,
            ["1", "0+1", "1.00", "744.00", "<=1", "-", "+74300.0%"]
        );
        assert_eq!(
            want.violation,
            format!(
                "nofail: gate: {SITE_AT}: retries per call 1.00 -> 744.00 (+74300.0%), more than +50%, 1 call still in flight"
            )
        );
        // A stock call that did not spin, or a patched one that spun.
        assert!(expected(&stock(1), &patched()).is_err());
        let mut twice = patched();
        twice["callers"][0]["mapping_retries"] = json!(2);
        assert!(expected(&stock(744), &twice).is_err());
        assert!(expected(&patched(), &stock(744)).is_err());
    }

    #[test]
    fn table_columns_after_a_caller_with_spaces() {
        let table = format!(
            "CALLER CALLS\n{SITE_AT} 1 1 0\n\nagainst baseline old.json:\n\
             CALLER CALLS OLD\n{SITE_AT}       0+1         1     744.00\nkernel_clone+0xdf 1 1\n"
        );
        assert_eq!(columns(&table, SITE_AT).unwrap(), ["0+1", "1", "744.00"]);
        assert!(columns(&table, "other").is_none());
    }

    /// The whole gate on the reports of real VM runs:
    /// `NOFAIL_GATE_DIR=DIR cargo test -p xtask gate -- --ignored`, DIR
    /// holding mapping_spin.json and mapping_patched.json, with the
    /// nofail binary at target/debug/nofail.
    #[test]
    #[ignore = "needs two recorded reports and a built nofail"]
    fn gate_on_recorded_reports() {
        let dir = std::path::PathBuf::from(std::env::var("NOFAIL_GATE_DIR").unwrap());
        let nofail = crate::util::workspace_root().join("target/debug/nofail");
        check(
            &nofail,
            &dir.join(STOCK_REPORT),
            &dir.join(PATCHED_REPORT),
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
    }
}
