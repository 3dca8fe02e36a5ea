// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail trace`: attach, refresh while tracing, report.

use std::time::Duration;

use anyhow::Result;

use nofail_common::EVENT_RETRY;

use crate::{
    bpf::session::Session,
    cmd::{
        carry_on,
        flags::{FilterArgs, LiveArgs, Outputs, parse_duration},
        follow::{EventArgs, follow},
        gate::GateArgs,
        signals::Stop,
        wrap::{CommandArgs, Ending, Prepared, Running, finish},
    },
    kernel::realtime_ns,
    model::filter::CallSelection,
    output::{events::clock_of, prometheus::Sticky, text},
};

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// How long to trace: 10s, 500ms, 2m, or plain seconds; without it,
    /// until Ctrl-C or SIGTERM (or, with a COMMAND, until it exits).
    #[arg(long, short, value_parser = parse_duration, conflicts_with = "command")]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub outputs: Outputs,
    #[command(flatten)]
    pub live: LiveArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Every interval, print what changed in it: a timestamped table of
    /// the callers that changed (up to --top), and calls stuck now; with
    /// --prometheus FILE, rewrite the file (counters only go up, labels
    /// stay). The totals still come at the end.
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Stop after this many intervals (with --interval).
    #[arg(long, requires = "interval", conflicts_with = "command", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    #[command(flatten)]
    pub events: EventArgs,
    #[command(flatten)]
    pub gates: GateArgs,
    #[command(flatten)]
    pub wrapped: CommandArgs,
}

/// `nofail trace`; its exit status (the wrapped command's, if any).
pub async fn run(args: TraceArgs) -> Result<u8> {
    let mut stop = Stop::listen()?;
    args.outputs.check()?;
    args.live.check()?;
    let baseline = args.gates.load()?;
    let sink = args.events.sink()?;
    let command = args.wrapped.prepare()?;
    let live = &args.live;
    let globals = args.events.globals(EVENT_RETRY, live);
    let selection = CallSelection {
        cgroup: command.as_ref().and_then(Prepared::scope),
        ..args.filter.selection()
    };
    let mut session = Session::start(&selection, live.mode, globals, |_| Ok(()))?;
    let mut events = args.events.stream(&mut session, sink)?;
    session.tracer.announce();
    match (&command, args.duration) {
        (Some(c), _) => eprintln!("nofail: tracing until `{}` exits", c.describe()),
        (None, Some(d)) => eprintln!("nofail: tracing for {d:?} (Ctrl-C to stop early)"),
        (None, None) => eprintln!("nofail: tracing until Ctrl-C or SIGTERM"),
    }
    args.live.ready()?;
    let mut running = command.map(Prepared::spawn).transpose()?;
    let mut ending = match &mut running {
        Some(r) => Ending::Command(r, &mut stop),
        None => Ending::Signal(&mut stop),
    };
    let top = args.outputs.top.top as usize;
    let (mut earlier, mut intervals) = (Vec::new(), 0u64);
    let mut sticky = Sticky::new(top);
    follow(
        &mut session,
        &mut events,
        &mut ending,
        args.duration,
        args.interval,
        |session| {
            // Named by the session's one cache, as the final report is.
            let rows = session.rows()?;
            let stuck = session.in_flight(live.stuck_after)?;
            let changed = text::delta_rows(&rows, &earlier);
            args.outputs.show(&format!(
                "--- {} ({:.0} s) ---\n{}{}",
                clock_of(realtime_ns()),
                session.started.elapsed().as_secs_f64(),
                if changed.is_empty() {
                    "(no change)\n".to_string()
                } else {
                    text::render_top(&changed, top)
                },
                text::render_inflight(&stuck)
            ))?;
            earlier = rows;
            intervals += 1;
            if args.outputs.prometheus.is_some() {
                let report = session.collect("trace", live.stuck_after)?;
                args.outputs.write_prometheus(&report, &mut sticky)?;
            }
            Ok(args.count.is_none_or(|n| intervals < n))
        },
    )
    .await?;
    let mut report = carry_on::retried("the final read of the counts", || {
        session.collect_final("trace", live.stuck_after)
    })?;
    report.health.events = events.finish(&mut session)?;
    drop(session);
    args.outputs.show(&text::render_report(&report, top))?;
    let verdict = args.gates.judge(&report, baseline.as_ref());
    if let Some(comparison) = &verdict.comparison {
        args.outputs.show(comparison)?;
    }
    args.outputs.write_json(&report)?;
    args.outputs.write_prometheus(&report, &mut sticky)?;
    finish(running.as_ref().and_then(Running::code), verdict.result())
}
