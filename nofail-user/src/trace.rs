// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail trace`: attach, refresh while tracing, report.

use std::time::Duration;

use anyhow::Result;

use nofail_common::EVENT_RETRY;

use crate::{
    cli::TraceArgs,
    events, render, report,
    session::{Session, Stop},
    symbols::Kallsyms,
};

pub async fn run(args: TraceArgs) -> Result<()> {
    let mut stop = Stop::listen()?;
    args.outputs.check()?;
    let events_json = args.events.open_json()?;
    let globals = args
        .events
        .globals(EVENT_RETRY, args.retry_window, args.stuck_after);
    let mut session = Session::start(&args.filter, args.mode, globals, |_| Ok(()))?;
    let mut events = args.events.stream(&mut session, events_json)?;
    session.tracer.announce();
    eprintln!(
        "nofail: tracing for {:?} (Ctrl-C to stop early)",
        args.duration
    );
    let stuck_after = args.stuck_after.as_nanos() as u64;
    let deadline = tokio::time::sleep(args.duration);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(args.interval.unwrap_or(Duration::from_secs(3600)));
    ticker.tick().await;
    let mut naming = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = stop.signalled() => break,
            _ = naming.tick() => session.learn_names()?,
            ready = events::ready(&mut events) => {
                ready?;
                events::drain(&mut events, &session)?;
            }
            _ = ticker.tick(), if args.interval.is_some() => {
                let ebpf = &session.tracer.ebpf;
                let syms = Kallsyms::load().unwrap_or_default();
                let rows = report::rows(&report::read_callers(ebpf)?, &syms);
                let loops_only = !session.tracer.sees_every_call();
                let stuck = report::read_inflight(ebpf, &syms, stuck_after, loops_only)?;
                println!("--- {:.0} s ---", session.started.elapsed().as_secs_f64());
                print!("{}{}", render::render_top(&rows, args.top), render::render_inflight(&stuck));
            }
        }
    }
    let mut report = session.collect("trace", args.stuck_after)?;
    report.health.events = events::finish(events, &session)?;
    drop(session);
    print!("{}", render::render_report(&report));
    args.outputs.write(&report)
}
