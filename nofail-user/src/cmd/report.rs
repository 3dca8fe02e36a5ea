// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail report`: a JSON report read back, printed, compared with a
//! baseline, gated, drawn as SVG, converted to Prometheus text.

use std::path::PathBuf;

use anyhow::Result;

use crate::{
    cmd::flags::Outputs,
    output::{baseline, json, svg, text},
};

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A JSON report written by `nofail trace/inject --json`.
    pub file: PathBuf,
    /// Draw retries-per-call and stall-time histograms of the top callers.
    #[arg(long, value_name = "OUT.svg")]
    pub svg: Option<PathBuf>,
    /// Callers drawn in the picture (with --svg).
    #[arg(long, default_value_t = 4, requires = "svg", value_parser = clap::value_parser!(u64).range(1..=32))]
    pub svg_callers: u64,
    /// Compare with an older report (per-caller changes).
    #[arg(long, value_name = "OLD.json")]
    pub baseline: Option<PathBuf>,
    #[command(flatten)]
    pub gates: GateArgs,
    #[command(flatten)]
    pub outputs: Outputs,
}

impl GateArgs {
    fn gates(&self) -> baseline::Gates {
        baseline::Gates {
            fail_if_p99_retries_above: self.fail_if_p99_retries_above,
            fail_if_retries_increase: self.fail_if_retries_increase,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct GateArgs {
    /// Fail when any caller's p99 retries per call is above N (p99 is the
    /// upper bound of its log2 bucket: 0, 1, 3, 7, 15, ...). Calls still in
    /// flight in the report count as calls, with their failures so far as
    /// retries.
    #[arg(long, value_name = "N")]
    pub fail_if_p99_retries_above: Option<u64>,
    /// With --baseline: fail when a caller's retries per call grew by more
    /// than PCT percent (a caller that did not retry before and does now
    /// always fails). Calls still in flight in a report count as calls,
    /// with their failures so far as retries.
    #[arg(long, value_name = "PCT", value_parser = parse_pct)]
    pub fail_if_retries_increase: Option<f64>,
}

fn parse_pct(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("invalid percentage {s:?}"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("percentage must be 0 or more, got {s:?}"));
    }
    Ok(v)
}

/// The gate refused the report: its violations, one line each
/// (`nofail: gate: ...`, printed by main), exit status 3.
#[derive(Debug)]
pub struct GateFailed(pub Vec<String>);

impl std::fmt::Display for GateFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gate: {}", self.0.join("; "))
    }
}

impl std::error::Error for GateFailed {}

/// `nofail report`: everything is read and checked before anything is
/// written, so a bad input leaves no output behind.
pub fn run(args: ReportArgs) -> Result<()> {
    let new = json::read_report(&args.file)?;
    let old = args
        .baseline
        .as_deref()
        .map(json::read_report)
        .transpose()?;
    if args.gates.fail_if_retries_increase.is_some() && old.is_none() {
        anyhow::bail!("--fail-if-retries-increase needs --baseline OLD.json");
    }
    // Every output path is checked before any is written (as trace and
    // inject do), so one that cannot be written leaves no other behind.
    args.outputs.check()?;
    if let Some(path) = &args.svg {
        json::check_writable(path)?;
    }
    let picture = args
        .svg
        .as_ref()
        .map(|_| svg::render(&new, args.svg_callers as usize))
        .transpose()?;
    args.outputs
        .show(&text::render_report(&new, args.outputs.top.top as usize))?;
    let changes = old.as_ref().map(|old| baseline::diff(old, &new));
    if let (Some(changes), Some(base)) = (&changes, &args.baseline) {
        args.outputs.show(&format!(
            "\nagainst baseline {}:\n{}",
            base.display(),
            baseline::render(changes)
        ))?;
    }
    if let (Some(path), Some(picture)) = (&args.svg, picture) {
        json::atomic_write(path, picture.as_bytes())?;
    }
    args.outputs.write(&new)?;
    let violations = baseline::violations(&new, changes.as_deref(), &args.gates.gates());
    if !violations.is_empty() {
        return Err(GateFailed(violations).into());
    }
    Ok(())
}
