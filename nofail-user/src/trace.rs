// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail trace`: attach, refresh while tracing, report.

use std::time::Duration;

use anyhow::Result;

use crate::{
    cli::TraceArgs,
    render, report,
    session::{Session, Stop},
    symbols::Kallsyms,
};

pub async fn run(args: TraceArgs) -> Result<()> {
    let mut stop = Stop::listen()?;
    args.outputs.check()?;
    let mut session = Session::start(&args.filter, args.mode, args.retry_window, |_| Ok(()))?;
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
    let report = session.collect("trace", args.stuck_after)?;
    drop(session);
    print!("{}", render::render_report(&report));
    args.outputs.write(&report)
}
