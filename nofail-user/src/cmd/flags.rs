// SPDX-License-Identifier: MIT OR Apache-2.0
//! Flags several subcommands share, declared once and flattened into
//! each: what to select, how to attach and follow calls, where the report
//! goes. Each turns into the plain values the layers below take.

use std::{path::PathBuf, time::Duration};

use anyhow::Result;
use nofail_common::{MAX_CALLERS, MAX_INFLIGHT};

use crate::{
    model::{Mode, filter::CallSelection, report::Report},
    output::{
        json,
        prometheus::{self, Sticky},
    },
};

#[derive(Debug, Clone, clap::Args)]
pub struct FilterArgs {
    /// Only calls made by this process (tgid).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,
    /// Only calls made by tasks with this command name.
    #[arg(long)]
    pub comm: Option<String>,
    /// Only calls from call sites inside functions matching these symbols
    /// or globs, comma-separated (e.g. 'xfs_*', 'xfs_buf*,xfs_attr*').
    /// Whole subsystems work: matched functions that lie next to each other
    /// merge into one address range, and up to 32768 ranges are searched
    /// exactly in the kernel.
    #[arg(long, value_delimiter = ',')]
    pub caller: Vec<String>,
    /// Only calls from code of these loadable modules, comma-separated
    /// (kallsyms' [module] tags); with --caller, only the matching
    /// functions of these modules. Built-in code has no module: select it
    /// with --caller.
    #[arg(long, value_delimiter = ',')]
    pub module: Vec<String>,
    /// Only calls with __GFP_NOFAIL.
    #[arg(long)]
    pub nofail_only: bool,
    /// Only calls of at least this size (bytes; K, M, G suffixes).
    #[arg(long, value_parser = parse_size)]
    pub min_size: Option<u64>,
    /// Also break each caller down by the call chain behind it, this many
    /// frames deep (1 to 16), for the calls that matter: NOFAIL calls and
    /// calls that failed, returned NULL, slept or were open-coded retries.
    /// The stack is taken only for those calls. Full mode only.
    #[arg(long, value_name = "DEPTH", value_parser = clap::value_parser!(u32).range(1..=16))]
    pub chains: Option<u32>,
    #[command(flatten)]
    pub capacity: CapacityArgs,
}

/// Sizes of the kernel maps that bound what nofail can hold, fixed when
/// the object is loaded. What does not fit is counted as missed (report
/// `health`, `nofail_missed_events_total`), never silently dropped.
#[derive(Debug, Clone, clap::Args)]
pub struct CapacityArgs {
    /// Call sites nofail can hold (per-CPU aggregates of 1.75 KiB per CPU,
    /// allocated for each site as it is first seen). Calls from sites
    /// beyond it are counted as missed.
    #[arg(long, default_value_t = MAX_CALLERS, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_callers: u32,
    /// Calls that can be inside vmalloc at once (one per task; the full
    /// mode holds at most 512). Calls beyond it are not tracked and
    /// counted as missed.
    #[arg(long, default_value_t = MAX_INFLIGHT, value_parser = clap::value_parser!(u32).range(1..=1048576))]
    pub max_inflight: u32,
}

impl FilterArgs {
    pub fn selection(&self) -> CallSelection {
        CallSelection {
            pid: self.pid,
            comm: self.comm.clone(),
            caller: self.caller.clone(),
            module: self.module.clone(),
            nofail_only: self.nofail_only,
            min_size: self.min_size,
            chains: self.chains,
            max_callers: self.capacity.max_callers,
            max_inflight: self.capacity.max_inflight,
            cgroup: None,
        }
    }
}

/// How calls are followed: the attach mode and the two time thresholds of
/// the kernel side (trace, inject, serve).
#[derive(Debug, Clone, clap::Args)]
pub struct LiveArgs {
    /// Attach mode.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// Flag calls still inside vmalloc after this long as stuck.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub stuck_after: Duration,
    /// A call from the same site and task within this long after a NULL
    /// return counts as an open-coded retry.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub retry_window: Duration,
    /// Write this file (nofail's pid) once every program is attached and
    /// counting, for scripts to wait on instead of sleeping and guessing.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Would waiting for an event beat sleeping a jiffy? For each NOFAIL
    /// retry, note whether what the failed stage needs was freed while the
    /// task slept (vmap space in the call's window for the area stage,
    /// pages for the mapping stage): futile retries, wake delay from the
    /// first such free to the wake, and each call's stall had that free
    /// woken it. Full mode only. Adds a probe on every vmap area free and
    /// the page-free tracepoint (one array read each while no task waits).
    #[arg(long)]
    pub what_if: bool,
}

impl LiveArgs {
    /// Checked before attaching: a path that cannot be written fails with
    /// nothing loaded.
    pub fn check(&self) -> Result<()> {
        match &self.ready_file {
            Some(path) => json::check_writable(path),
            None => Ok(()),
        }
    }

    /// Says "ready" through `--ready-file`, once everything is attached.
    pub fn ready(&self) -> Result<()> {
        match &self.ready_file {
            Some(path) => json::atomic_write(path, format!("{}\n", std::process::id()).as_bytes()),
            None => Ok(()),
        }
    }
}

/// Callers shown by name: rows of the text tables (with their details)
/// and callers with their own Prometheus label.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct TopArgs {
    /// Callers shown by name (most retries first): rows of the text tables,
    /// with their details, the rest counted in one line; and Prometheus
    /// labels, the rest summed as caller="other".
    #[arg(long, visible_alias = "top-labels", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub top: u64,
}

/// Report files `trace` and `inject` write when they finish.
#[derive(Debug, Clone, clap::Args)]
pub struct Outputs {
    /// Write the report as JSON (schema: docs/report-schema.md); `-` for
    /// stdout (the text report then goes to stderr).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the counts in Prometheus text format (node_exporter
    /// textfile-collector convention: written to a temp file, renamed).
    #[arg(long)]
    pub prometheus: Option<PathBuf>,
    #[command(flatten)]
    pub top: TopArgs,
}

impl Outputs {
    fn json_to_stdout(&self) -> bool {
        self.json.as_deref() == Some(std::path::Path::new("-"))
    }

    /// Checked before attaching, so a long run is not lost to a typo.
    pub fn check(&self) -> Result<()> {
        let json = self.json.iter().filter(|_| !self.json_to_stdout());
        for path in json.chain(&self.prometheus) {
            json::check_writable(path)?;
        }
        Ok(())
    }

    /// Text for people: stdout, or stderr when stdout carries the JSON.
    pub fn show(&self, text: &str) -> Result<()> {
        if self.json_to_stdout() {
            eprint!("{text}");
        } else {
            crate::output::stdout::print(text)?;
        }
        Ok(())
    }

    pub fn write(&self, report: &Report) -> Result<()> {
        self.write_json(report)?;
        self.write_prometheus(report, &mut Sticky::new(self.top.top as usize))
    }

    pub fn write_json(&self, report: &Report) -> Result<()> {
        if self.json_to_stdout() {
            crate::output::stdout::print(&(serde_json::to_string_pretty(report)? + "\n"))?;
        } else if let Some(path) = &self.json {
            json::write_json(path, report)?;
        }
        Ok(())
    }

    /// `--prometheus FILE`, labels kept in `sticky` (a run that rewrites
    /// the file every --interval passes the same one each time).
    pub fn write_prometheus(&self, report: &Report, sticky: &mut Sticky) -> Result<()> {
        if let Some(path) = &self.prometheus {
            let now = crate::kernel::realtime_ns() as f64 / 1e9;
            let text = prometheus::render_file(report, sticky, now);
            json::atomic_write(path, text.as_bytes())?;
        }
        Ok(())
    }
}

/// The one parser of every duration flag (`--duration`, `--interval`,
/// `--stuck-after`, `--retry-window`): a decimal number and a unit (ms, s,
/// m, h; plain seconds without one), computed in whole nanoseconds with
/// checked arithmetic. Positive, and at most `u64::MAX` nanoseconds (about
/// 584 years), so that every conversion to the kernel's nanoseconds fits
/// (`kernel::duration_ns`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let invalid = || format!("invalid duration {s:?} (try 10s, 500ms, 2m)");
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return Err(invalid());
    }
    let unit_ns: u128 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    let too_long = || {
        format!(
            "duration {s:?} is too long (at most {}h, about 584 years)",
            u64::MAX as u128 / 3_600_000_000_000
        )
    };
    // Digits past the 18th of a fraction are below a nanosecond in any unit.
    let frac = &frac[..frac.len().min(18)];
    let whole: u128 = match int {
        "" => 0,
        int => int.parse().map_err(|_| too_long())?,
    };
    let part: u128 = match frac {
        "" => 0,
        frac => {
            frac.parse::<u128>().map_err(|_| invalid())? * unit_ns / 10u128.pow(frac.len() as u32)
        }
    };
    let ns = whole
        .checked_mul(unit_ns)
        .and_then(|w| w.checked_add(part))
        .ok_or_else(too_long)?;
    if ns == 0 {
        return Err(format!("duration must be positive, got {s:?}"));
    }
    let ns = u64::try_from(ns).map_err(|_| too_long())?;
    Ok(Duration::from_nanos(ns))
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (try 4096, 64K, 1M)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} too large"))
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
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration(".5m").unwrap(), Duration::from_secs(30));
        assert_eq!(
            parse_duration("0.000000001s").unwrap(),
            Duration::from_nanos(1)
        );
        for bad in ["", "s", ".", "1.2.3s", "-5s", "0.0000000001s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    /// Too long for the kernel's u64 nanoseconds: one error, no panic in
    /// `Duration::from_secs_f64` and no wrapping conversion later.
    #[test]
    fn durations_beyond_u64_nanoseconds_are_errors() {
        let max = Duration::from_nanos(u64::MAX);
        for long in [
            "99999999999999999999h",
            "18446744073709551615ms",
            "5124096h",
            "18446744074s",
            "1e400",
            "340282366920938463463374607431768211456s",
        ] {
            let err = parse_duration(long).unwrap_err();
            assert!(
                err.contains("too long") || err.contains("invalid"),
                "{long}: {err}"
            );
        }
        assert!(parse_duration("5124095h").unwrap() <= max);
        assert_eq!(parse_duration("18446744073.709551615s").unwrap(), max);
        assert!(parse_duration("18446744073.709551616s").is_err());
        assert_eq!(
            crate::kernel::duration_ns(parse_duration("5124095h").unwrap()),
            5124095 * 3_600_000_000_000
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size("1M").unwrap(), 1 << 20);
        assert!(parse_size("-1").is_err());
        assert!(parse_size("12Q").is_err());
    }
}
