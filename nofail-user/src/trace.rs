//! `nofail trace`: attach, refresh while tracing, report.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::TraceArgs,
    kernel::KernelView,
    report::{self, Report},
    symbols::Kallsyms,
    tracer::Tracer,
};

pub async fn run(args: TraceArgs) -> Result<()> {
    // Listen first: whoever waits for "tracing for" may signal right away.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let view = KernelView::probe();
    let syms = Kallsyms::load()?;
    if !syms.has_addresses() {
        eprintln!(
            "nofail: warning: /proc/kallsyms hides addresses (kptr_restrict): callers shown as raw addresses"
        );
    }
    // Bad filters fail before anything is loaded.
    let rules = args.filter.build(&syms)?;
    let tracer = Tracer::attach(
        &view,
        args.mode,
        args.retry_window.as_nanos() as u64,
        &rules,
    )?;
    for w in &tracer.warnings {
        eprintln!("nofail: warning: {w}");
    }
    print_attach_plan(&tracer.attached);
    eprintln!(
        "nofail: tracing for {:?} (Ctrl-C to stop early)",
        args.duration
    );
    let started = Instant::now();
    let stuck_after = args.stuck_after.as_nanos() as u64;
    let deadline = tokio::time::sleep(args.duration);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(args.interval.unwrap_or(Duration::from_secs(3600)));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = ticker.tick(), if args.interval.is_some() => {
                let syms = Kallsyms::load().unwrap_or_default();
                let rows = report::rows(&report::read_callers(&tracer.ebpf)?, &syms);
                let stuck = report::read_inflight(&tracer.ebpf, &syms, stuck_after)?;
                println!("--- {:.0} s ---", started.elapsed().as_secs_f64());
                print!("{}{}", report::render_top(&rows, args.top), report::render_inflight(&stuck));
            }
        }
    }
    // Modules loaded while tracing have call sites too: re-read the symbols.
    let syms = Kallsyms::load().unwrap_or(syms);
    let stats = report::read_callers(&tracer.ebpf)?;
    let in_flight = report::read_inflight(&tracer.ebpf, &syms, stuck_after)?;
    let health = report::read_health(&tracer.ebpf)?;
    let report = Report {
        kernel: view.release.clone(),
        duration_s: started.elapsed().as_secs_f64(),
        attached: tracer.attached.clone(),
        warnings: tracer.warnings.clone(),
        callers: report::rows(&stats, &syms),
        in_flight,
        health,
    };
    drop(tracer);
    print!("{}", report::render_report(&report));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// One line per attach mode, with the reason fentry was not used said once.
pub fn print_attach_plan(attached: &[crate::tracer::Attached]) {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for a in attached {
        let key = match &a.fallback_reason {
            Some(why) => format!("{}; fentry {why}", a.mode),
            None => a.mode.to_string(),
        };
        let item = format!("{} {}", a.role, a.function);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, items)) => items.push(item),
            None => groups.push((key, vec![item])),
        }
    }
    for (key, items) in groups {
        eprintln!("nofail: attached ({key}): {}", items.join(", "));
    }
}
