//! `nofail trace`: attach, wait, report.

use std::time::Instant;

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
    let tracer = Tracer::attach(&view, args.mode)?;
    for w in &tracer.warnings {
        eprintln!("nofail: warning: {w}");
    }
    for a in &tracer.attached {
        match &a.fallback_reason {
            Some(why) => eprintln!(
                "nofail: {} -> {} ({}; fentry refused: {why})",
                a.role, a.function, a.mode
            ),
            None => eprintln!("nofail: {} -> {} ({})", a.role, a.function, a.mode),
        }
    }
    eprintln!(
        "nofail: tracing for {:?} (Ctrl-C to stop early)",
        args.duration
    );
    let started = Instant::now();
    tokio::select! {
        _ = tokio::time::sleep(args.duration) => {}
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    let stats = report::read_callers(&tracer.ebpf)?;
    let health = report::read_health(&tracer.ebpf)?;
    let syms = Kallsyms::load()?;
    if !syms.has_addresses() {
        eprintln!(
            "nofail: warning: /proc/kallsyms hides addresses (kptr_restrict): callers shown as raw addresses"
        );
    }
    let report = Report {
        kernel: view.release.clone(),
        duration_s: started.elapsed().as_secs_f64(),
        attached: tracer.attached.clone(),
        callers: report::rows(&stats, &syms),
        health,
    };
    drop(tracer);
    print!("{}", report::render_table(&report));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
