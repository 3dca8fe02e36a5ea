// SPDX-License-Identifier: MIT OR Apache-2.0
//! What `trace`, `inject` and `serve` share: loading symbols, building the
//! filter, attaching the tracer, and reading the maps into a report.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::{
    bpf::{
        attach, maps,
        tracer::{Globals, Tracer},
    },
    kernel::{duration_ns, symbols::SymbolCache, view::KernelView},
    model::{
        Mode,
        filter::{CallSelection, FilterView},
        mode::mode_of,
        report::{self, CallerRow, InflightRow, Report, SCHEMA, SCHEMA_VERSION, Totals},
    },
};

/// An attached tracer and what its report needs.
pub struct Session {
    pub view: KernelView,
    /// The one naming of kernel addresses (kernel/symbols.rs): interval
    /// tables, the report, calls in flight, chains and events name an
    /// address the same way, by its name when first seen (a caller inside
    /// a module unloaded since keeps it).
    pub names: SymbolCache,
    pub tracer: Tracer,
    pub filters: FilterView,
    pub started: Instant,
    pub started_unix_s: u64,
}

impl Session {
    /// Loads symbols, builds the filter (a bad one fails before anything is
    /// loaded), runs `preflight`, attaches and announces.
    pub fn start(
        filter: &CallSelection,
        mode: Mode,
        globals: Globals,
        preflight: impl FnOnce(&KernelView) -> Result<()>,
    ) -> Result<Self> {
        let names = SymbolCache::load()?;
        let view = KernelView::probe(Some(names.syms()), attach::functions().collect())?;
        if !names.syms().has_addresses() {
            eprintln!(
                "nofail: warning: /proc/kallsyms hides addresses (kptr_restrict): callers shown as raw addresses"
            );
        }
        let rules = filter.build(names.syms())?;
        if let Some(summary) = &rules.summary {
            eprintln!("nofail: {summary}");
        }
        preflight(&view)?;
        let tracer = Tracer::attach(&view, Some(names.syms()), mode, &globals, &rules)?;
        Ok(Self {
            view,
            names,
            tracer,
            filters: filter.into(),
            started: Instant::now(),
            started_unix_s: crate::kernel::realtime_ns() / 1_000_000_000,
        })
    }

    /// Names the call sites in the caller map while their code is still
    /// there (the cache reads kallsyms again, at most once per
    /// `symbols::REFRESH`, only for one it cannot name). Called about once a
    /// second while tracing.
    pub fn learn_names(&mut self) -> Result<()> {
        for addr in maps::caller_addresses(&self.tracer.ebpf)? {
            self.names.name(addr);
        }
        Ok(())
    }

    /// The caller rows as of now, named by the session's cache.
    pub fn rows(&mut self) -> Result<Vec<CallerRow>> {
        let sites = maps::read_callers(&self.tracer.ebpf)?;
        Ok(report::rows(&sites, |addr| self.names.name(addr)))
    }

    /// The calls in progress now, stuck past `stuck_after`.
    pub fn in_flight(&mut self, stuck_after: Duration) -> Result<Vec<InflightRow>> {
        maps::read_inflight(
            &self.tracer.ebpf,
            &mut self.names,
            duration_ns(stuck_after),
            !self.tracer.sees_every_call(),
        )
    }

    /// The report at the end of the run: as `collect`, with kallsyms read
    /// once more for call sites still unnamed (code loaded less than
    /// `symbols::REFRESH` before).
    pub fn collect_final(&mut self, command: &str, stuck_after: Duration) -> Result<Report> {
        self.names.refresh_before_final();
        self.collect(command, stuck_after)
    }

    /// Reads every aggregate into the report, every address named by the
    /// session's cache.
    /// `command` names what produced the report ("trace", "inject").
    pub fn collect(&mut self, command: &str, stuck_after: Duration) -> Result<Report> {
        let callers = self.rows()?;
        let chains = match self.filters.chains {
            Some(depth) => maps::read_chains(&self.tracer.ebpf, &mut self.names, depth)?,
            None => vec![],
        };
        let in_flight = self.in_flight(stuck_after)?;
        let ebpf = &self.tracer.ebpf;
        Ok(Report {
            schema: SCHEMA.into(),
            schema_version: SCHEMA_VERSION,
            nofail_version: env!("CARGO_PKG_VERSION").into(),
            command: command.into(),
            kernel: self.view.release.clone(),
            mode: mode_of(&self.tracer.attached),
            started_unix_s: self.started_unix_s,
            duration_s: self.started.elapsed().as_secs_f64(),
            filters: self.filters.clone(),
            attached: self.tracer.attached.clone(),
            warnings: self.tracer.warnings.clone(),
            totals: Totals::of(&callers),
            callers,
            chains,
            in_flight,
            health: maps::read_health(ebpf)?,
            injection: None,
        })
    }
}
