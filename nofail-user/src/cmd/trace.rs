// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail trace`: attach, refresh while tracing, report.

use std::time::Duration;

use anyhow::Result;

use nofail_common::EVENT_RETRY;

use crate::{
    bpf::{maps, session::Session},
    cmd::{
        flags::{FilterArgs, LiveArgs, Outputs, parse_duration},
        follow::{EventArgs, follow},
        signals::Stop,
    },
    kernel::symbols::Kallsyms,
    model::report,
    output::text,
};

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// How long to trace: 10s, 500ms, 2m, or plain seconds.
    #[arg(long, short, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    #[command(flatten)]
    pub outputs: Outputs,
    #[command(flatten)]
    pub live: LiveArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Refresh a top-N table at this interval while tracing.
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    #[command(flatten)]
    pub events: EventArgs,
}

pub async fn run(args: TraceArgs) -> Result<()> {
    let mut stop = Stop::listen()?;
    args.outputs.check()?;
    let sink = args.events.sink()?;
    let live = &args.live;
    let globals = args
        .events
        .globals(EVENT_RETRY, live.retry_window, live.stuck_after);
    let mut session = Session::start(&args.filter.selection(), live.mode, globals, |_| Ok(()))?;
    let mut events = args.events.stream(&mut session, sink)?;
    session.tracer.announce();
    eprintln!(
        "nofail: tracing for {:?} (Ctrl-C to stop early)",
        args.duration
    );
    let stuck_after = live.stuck_after.as_nanos() as u64;
    let top = args.outputs.top.top as usize;
    follow(
        &mut session,
        &mut events,
        &mut stop,
        args.duration,
        args.interval,
        |session| {
            let ebpf = &session.tracer.ebpf;
            let syms = Kallsyms::load().unwrap_or_default();
            let rows = report::rows(&maps::read_callers(ebpf)?, &syms);
            let loops_only = !session.tracer.sees_every_call();
            let stuck = maps::read_inflight(ebpf, &syms, stuck_after, loops_only)?;
            println!("--- {:.0} s ---", session.started.elapsed().as_secs_f64());
            print!(
                "{}{}",
                text::render_top(&rows, top),
                text::render_inflight(&stuck)
            );
            Ok(())
        },
    )
    .await?;
    let mut report = session.collect("trace", live.stuck_after)?;
    report.health.events = events.finish(&session)?;
    drop(session);
    print!("{}", text::render_report(&report));
    args.outputs.write(&report)
}
