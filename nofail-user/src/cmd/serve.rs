// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail serve`: its flags, and the live session (or recorded report)
//! handed to the HTTP endpoint in output/serve.rs.

use std::{borrow::Cow, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, bail};
use tokio::net::TcpListener;

use crate::{
    bpf::{session::Session, tracer::Globals},
    cmd::flags::{FilterArgs, LiveArgs, TopArgs},
    cmd::signals::Stop,
    kernel::duration_ns,
    model::{report::Report, source::ReportSource},
    output::{json, serve::serve},
};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (host:port). Non-loopback addresses need
    /// --allow-remote.
    #[arg(long, default_value = "127.0.0.1:9464", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Accept a listen address other than loopback.
    #[arg(long)]
    pub allow_remote: bool,
    /// Serve this recorded report instead of tracing live (the flags of
    /// live tracing, which could change nothing in it, are refused).
    #[arg(long, conflicts_with_all = LIVE_ONLY)]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub top: TopArgs,
    #[command(flatten)]
    pub live: LiveArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// The flags of a live session (how calls are followed, what is selected,
/// map sizes): a recorded report was taken with its own.
const LIVE_ONLY: [&str; 13] = [
    "mode",
    "stuck_after",
    "retry_window",
    "what_if",
    "pid",
    "comm",
    "caller",
    "module",
    "nofail_only",
    "min_size",
    "chains",
    "max_callers",
    "max_inflight",
];

pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let s = s
        .strip_prefix("localhost:")
        .map_or_else(|| s.to_string(), |port| format!("127.0.0.1:{port}"));
    s.parse()
        .map_err(|_| format!("invalid listen address {s:?} (try 127.0.0.1:9464 or [::1]:9464)"))
}

/// The counts of an attached session, read at scrape time.
struct Live {
    session: Session,
    stuck_after: Duration,
}

impl ReportSource for Live {
    fn report(&mut self) -> Result<Cow<'_, Report>> {
        Ok(Cow::Owned(self.session.collect("serve", self.stuck_after)?))
    }

    fn tick(&mut self) {
        // Name call sites while their code is there.
        let _ = self.session.learn_names();
    }
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let mut stop = Stop::listen()?;
    args.live.check()?;
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        bail!(
            "refusing to serve on {} (not loopback): the metrics name kernel call sites; pass --allow-remote if that is intended",
            args.listen
        );
    }
    // Bound before anything is attached: a port in use costs nothing.
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let source: Box<dyn ReportSource> = match &args.report {
        Some(path) => Box::new(json::read_report(path)?),
        None => {
            let session = Session::start(
                &args.filter.selection(),
                args.live.mode,
                Globals {
                    retry_window_ns: duration_ns(args.live.retry_window),
                    what_if: args.live.what_if,
                    ..Default::default()
                },
                |_| Ok(()),
            )?;
            session.tracer.announce();
            Box::new(Live {
                session,
                stuck_after: args.live.stuck_after,
            })
        }
    };
    eprintln!(
        "nofail: serving http://{}/metrics (Ctrl-C to stop)",
        listener.local_addr()?
    );
    args.live.ready()?;
    serve(listener, source, args.top.top as usize, async {
        stop.signalled().await;
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::CommandFactory as _;
    use nofail_common::CallerStats;

    use super::*;
    use crate::{
        bpf::attach::{ROLES, Role, SENTINEL_ROLES, STAGE_ROLES, TRACEPOINT_ROLES, WHAT_IF_ROLES},
        model::{
            Mode,
            inject::{InjectCounts, InjectMode, InjectRuleView, Injection},
            mode::{Attached, mode_of},
            report::{sample, sample_row},
        },
        output::{json::parse_report, prometheus},
    };

    /// A run as `serve` (or trace, inject) would report it: `mode` as the
    /// tracer attaches it, from the attach tables, with or without each
    /// flag that adds counts.
    #[derive(Debug, Clone, Copy)]
    struct Run {
        mode: Mode,
        what_if: bool,
        chains: bool,
        inject: bool,
    }

    impl Run {
        fn full(&self) -> bool {
            matches!(self.mode, Mode::Kprobe | Mode::Fentry)
        }

        fn report(&self) -> Report {
            let roles = |roles: &[Role], mode| -> Vec<Attached> {
                roles
                    .iter()
                    .map(|r| Attached {
                        role: r.name.into(),
                        function: r.candidates[0].into(),
                        // A kprobe-only role is a kprobe in every mode.
                        mode: if r.programs.kprobe_only_role() && mode == Mode::Fentry {
                            Mode::Kprobe
                        } else {
                            mode
                        },
                        fallback_reason: None,
                    })
                    .collect()
            };
            let mut attached = match self.mode {
                Mode::Tracepoint => TRACEPOINT_ROLES
                    .iter()
                    .map(|r| Attached {
                        role: r.name.into(),
                        function: format!("{}:{}", r.category, r.event),
                        mode: Mode::Tracepoint,
                        fallback_reason: None,
                    })
                    .collect(),
                Mode::Sentinel => roles(SENTINEL_ROLES, Mode::Sentinel),
                mode => roles(ROLES, mode),
            };
            // The tracer refuses these flags outside the full mode; a
            // report that claims them anyway (a file) gains nothing.
            if self.what_if {
                attached.extend(roles(WHAT_IF_ROLES, self.mode));
            }
            if self.inject {
                attached.extend(roles(STAGE_ROLES, self.mode));
            }
            let mut stats = CallerStats {
                calls: 3,
                nofail_calls: 3,
                area_failures: 2,
                area_retries: 2,
                sleeps: 2,
                injected: self.inject as u64,
                ..Default::default()
            };
            stats.retries_hist[0] = 2;
            stats.retries_hist[2] = 1;
            let mut report = sample(vec![sample_row("site+0x13", &stats)]);
            report.mode = mode_of(&attached);
            report.attached = attached;
            if self.chains {
                report.filters.chains = Some(3);
                report.chains = vec![crate::model::chains::sample(
                    "site+0x13",
                    &["site+0x13", "fs+0x8"],
                )];
            }
            if self.inject {
                report.command = "inject".into();
                report.injection = Some(Injection {
                    rule: InjectRuleView::always_area(InjectMode::Kprobe),
                    counts: InjectCounts::default(),
                    behaviour: crate::model::coping::behaviour(
                        &report.callers,
                        &[],
                        &Default::default(),
                    ),
                });
            }
            report
        }
    }

    /// The series an exposition carries: its families (`# TYPE` lines)
    /// and each reason of `nofail_missed_events_total`.
    fn series_of(text: &str) -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE ").and_then(|t| t.split(' ').next()))
            .map(str::to_string)
            .chain(
                text.lines()
                    .filter(|l| l.starts_with("nofail_missed_events_total{"))
                    .filter_map(|l| l.split(' ').next())
                    .map(str::to_string),
            )
            .collect()
    }

    /// Every Prometheus series is there exactly when the run could count
    /// it, in every mode (kprobe, fentry, tracepoint, sentinel) with and
    /// without each flag, live or read back from its JSON report: what a
    /// mode or flag cannot count is absent, never a 0 that looks counted.
    /// The table below is written out from what each mode's programs do
    /// (README, attach::TRACEPOINT_BLIND, attach::SENTINEL_BLIND), not
    /// computed the way the exposition computes it.
    #[test]
    fn series_are_there_exactly_when_the_run_counts_them() {
        type When = fn(&Run) -> bool;
        let always: When = |_| true;
        let calls: When = |r| r.mode != Mode::Sentinel;
        let full: When = |r| r.full();
        let returns: When = |r| r.mode != Mode::Tracepoint;
        let what_if: When = |r| r.full() && r.what_if;
        let chains: When = |r| r.full() && r.chains;
        let inject: When = |r| r.full() && r.inject;
        let stack: When = |r| !r.full();
        let table: &[(&str, When)] = &[
            ("nofail_info", always),
            ("nofail_trace_duration_seconds", always),
            ("nofail_calls_in_flight", calls),
            ("nofail_oldest_call_in_flight_seconds", calls),
            ("nofail_vmalloc_calls_total", calls),
            ("nofail_vmalloc_nofail_calls_total", full),
            ("nofail_vmalloc_null_returns_total", returns),
            ("nofail_vmalloc_failures_total", always),
            ("nofail_vmalloc_retries_total", always),
            ("nofail_pagetable_failures_total", full),
            ("nofail_retry_sleeps_total", always),
            ("nofail_retry_slept_seconds_total", always),
            ("nofail_open_coded_retries_total", returns),
            ("nofail_open_coded_retry_sleeps_total", returns),
            ("nofail_injected_failures_total", inject),
            ("nofail_whatif_futile_retries_total", what_if),
            ("nofail_whatif_freed_retries_total", what_if),
            ("nofail_whatif_wake_delay_seconds_total", what_if),
            ("nofail_whatif_slept_seconds_total", what_if),
            ("nofail_chain_calls_total", chains),
            ("nofail_chain_nofail_calls_total", chains),
            ("nofail_chain_null_returns_total", chains),
            ("nofail_chain_retries_total", chains),
            ("nofail_chain_retry_sleeps_total", chains),
            ("nofail_chain_open_coded_retries_total", chains),
            ("nofail_vmalloc_retries_per_call", full),
            ("nofail_vmalloc_latency_seconds", full),
            ("nofail_vmalloc_slept_per_call_seconds", full),
            ("nofail_whatif_wake_delay_seconds", what_if),
            ("nofail_whatif_slept_per_call_seconds", what_if),
            ("nofail_missed_events_total", always),
            (
                "nofail_missed_events_total{reason=\"program_skipped\"}",
                always,
            ),
            (
                "nofail_missed_events_total{reason=\"inflight_map_full\"}",
                calls,
            ),
            (
                "nofail_missed_events_total{reason=\"caller_map_full\"}",
                always,
            ),
            (
                "nofail_missed_events_total{reason=\"chain_map_full\"}",
                chains,
            ),
            ("nofail_missed_events_total{reason=\"stack_lost\"}", chains),
            ("nofail_missed_events_total{reason=\"exit_missed\"}", full),
            ("nofail_missed_events_total{reason=\"entry_missed\"}", full),
            (
                "nofail_missed_events_total{reason=\"caller_unread\"}",
                stack,
            ),
            (
                "nofail_missed_events_total{reason=\"whatif_waiter_busy\"}",
                what_if,
            ),
            ("nofail_injection_decisions_total", inject),
        ];
        let (mut runs, mut seen) = (0, BTreeSet::new());
        for mode in [Mode::Kprobe, Mode::Fentry, Mode::Tracepoint, Mode::Sentinel] {
            for bits in 0..8u8 {
                let run = Run {
                    mode,
                    what_if: bits & 1 != 0,
                    chains: bits & 2 != 0,
                    inject: bits & 4 != 0,
                };
                let want: BTreeSet<String> = table
                    .iter()
                    .filter(|(_, when)| when(&run))
                    .map(|(s, _)| s.to_string())
                    .collect();
                let report = run.report();
                let live = series_of(&prometheus::render(&report, 20));
                assert_eq!(
                    live.difference(&want).collect::<Vec<_>>(),
                    Vec::<&String>::new(),
                    "{run:?}: series it cannot count"
                );
                assert_eq!(
                    want.difference(&live).collect::<Vec<_>>(),
                    Vec::<&String>::new(),
                    "{run:?}: series it counts, missing"
                );
                // The same run recorded and served with --report.
                let text = serde_json::to_string(&report).unwrap();
                let recorded = parse_report(&text).unwrap();
                assert_eq!(
                    series_of(&prometheus::render(&recorded, 20)),
                    live,
                    "{run:?} read back"
                );
                runs += 1;
                seen.extend(live);
            }
        }
        assert_eq!(runs, 32);
        // Every series the exposition writes in some run is in the table.
        assert_eq!(seen.len(), table.len(), "{seen:?}");
    }

    /// `LIVE_ONLY` names every flag of `serve` but those a served report
    /// honours too: a flag added to serve is refused with `--report` or
    /// listed here as one that applies to it, or this fails.
    #[test]
    fn every_live_flag_conflicts_with_report() {
        const WITH_REPORT: [&str; 6] = [
            "listen",
            "allow_remote",
            "report",
            "top",
            "ready_file",
            "help",
        ];
        let cli = crate::cmd::Cli::command();
        let serve = cli.find_subcommand("serve").unwrap();
        let mut live: Vec<String> = serve
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .filter(|a| !WITH_REPORT.contains(&a.as_str()))
            .collect();
        live.sort();
        let mut listed: Vec<String> = LIVE_ONLY.iter().map(|s| s.to_string()).collect();
        listed.sort();
        assert_eq!(live, listed);
    }
}
