// SPDX-License-Identifier: MIT OR Apache-2.0
//! Command-line interface.

use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::{attach::Mode, filter::FilterArgs};

#[derive(Debug, Parser)]
#[command(
    name = "nofail",
    version,
    about = "See and break the kernel's never-fail allocation retry loops"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace vmalloc calls and their retry loops per call site until the
    /// duration ends or Ctrl-C.
    Trace(TraceArgs),
    /// Fail sub-allocations inside targeted stages of targeted vmalloc calls
    /// and report how each caller copes.
    Inject(crate::inject::InjectArgs),
    /// Show how nofail would attach on this kernel: roles, functions,
    /// modes, injection support, HZ and gfp bits.
    Doctor(DoctorArgs),
    /// Read a JSON report back: print it, compare it with a baseline, gate
    /// on thresholds, draw it as SVG, convert it to Prometheus text.
    Report(crate::export::ReportArgs),
    /// Serve Prometheus metrics over HTTP: live counts, or a recorded
    /// report with --report.
    Serve(crate::export::serve::ServeArgs),
}

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Attach mode to try.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// How long to trace: 10s, 500ms, 2m, or plain seconds.
    #[arg(long, short, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    #[command(flatten)]
    pub outputs: crate::export::Outputs,
    /// Attach mode.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Refresh a top-N table at this interval while tracing.
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Rows of the --interval table.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Flag calls still inside vmalloc after this long as stuck.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub stuck_after: Duration,
    /// A call from the same site and task within this long after a NULL
    /// return counts as an open-coded retry.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub retry_window: Duration,
    #[command(flatten)]
    pub events: crate::events::EventArgs,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (try 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("duration must be positive, got {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
