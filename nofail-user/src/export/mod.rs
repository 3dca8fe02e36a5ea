// SPDX-License-Identifier: MIT OR Apache-2.0
//! Where reports leave the tool: JSON files (read back by `nofail report`),
//! Prometheus text (a textfile-collector file or `nofail serve`), SVG
//! pictures, and the baseline gate.

pub mod baseline;
pub mod file;
pub mod prometheus;
pub mod serve;
pub mod svg;

use std::path::PathBuf;

use anyhow::Result;

use crate::{render, report::Report};

/// Report files `trace` and `inject` write when they finish.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Outputs {
    /// Write the report as JSON (schema: docs/report-schema.md).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the counts in Prometheus text format (node_exporter
    /// textfile-collector convention: written to a temp file, renamed).
    #[arg(long)]
    pub prometheus: Option<PathBuf>,
    /// Callers with their own Prometheus label; the rest are summed as
    /// caller="other".
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub top_labels: u64,
}

impl Outputs {
    /// Checked before attaching, so a long run is not lost to a typo.
    pub fn check(&self) -> Result<()> {
        for path in self.json.iter().chain(&self.prometheus) {
            file::check_writable(path)?;
        }
        Ok(())
    }

    pub fn write(&self, report: &Report) -> Result<()> {
        if let Some(path) = &self.json {
            file::write_json(path, report)?;
        }
        if let Some(path) = &self.prometheus {
            let text = prometheus::render(report, self.top_labels as usize);
            file::atomic_write(path, text.as_bytes())?;
        }
        Ok(())
    }
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A JSON report written by `nofail trace/inject --json`.
    pub file: PathBuf,
    /// Draw retries-per-call and stall-time histograms of the top callers.
    #[arg(long, value_name = "OUT.svg")]
    pub svg: Option<PathBuf>,
    /// Callers drawn in the picture.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=32))]
    pub svg_callers: u64,
    /// Compare with an older report (per-caller changes).
    #[arg(long, value_name = "OLD.json")]
    pub baseline: Option<PathBuf>,
    #[command(flatten)]
    pub gates: baseline::Gates,
    #[command(flatten)]
    pub outputs: Outputs,
}

/// The gate refused the report: listed already, exit status 3.
#[derive(Debug)]
pub struct GateFailed(pub usize);

impl std::fmt::Display for GateFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gate failed: {} violation(s)", self.0)
    }
}

impl std::error::Error for GateFailed {}

/// `nofail report`: everything is read and checked before anything is
/// written, so a bad input leaves no output behind.
pub fn run_report(args: ReportArgs) -> Result<()> {
    let new = file::read_report(&args.file)?;
    let old = args
        .baseline
        .as_deref()
        .map(file::read_report)
        .transpose()?;
    if args.gates.fail_if_retries_increase.is_some() && old.is_none() {
        anyhow::bail!("--fail-if-retries-increase needs --baseline OLD.json");
    }
    let picture = args
        .svg
        .as_ref()
        .map(|_| svg::render(&new, args.svg_callers as usize))
        .transpose()?;
    print!("{}", render::render_report(&new));
    let changes = old.as_ref().map(|old| baseline::diff(old, &new));
    if let (Some(changes), Some(base)) = (&changes, &args.baseline) {
        println!("\nagainst baseline {}:", base.display());
        print!("{}", baseline::render(changes));
    }
    if let (Some(path), Some(picture)) = (&args.svg, picture) {
        file::atomic_write(path, picture.as_bytes())?;
    }
    args.outputs.write(&new)?;
    let violations = baseline::violations(&new, changes.as_deref(), &args.gates);
    for v in &violations {
        eprintln!("nofail: gate: {v}");
    }
    if !violations.is_empty() {
        return Err(GateFailed(violations.len()).into());
    }
    Ok(())
}
