// SPDX-License-Identifier: MIT OR Apache-2.0
//! What `trace`, `inject` and `serve` share: loading symbols, building the
//! filter, attaching the tracer, and reading the maps into a report.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::{
    bpf::{
        maps,
        tracer::{Globals, Tracer},
    },
    kernel::{symbols::Kallsyms, view::KernelView},
    model::{
        Mode,
        filter::{FilterView, Selection},
        mode::mode_of,
        report::{self, Report, SCHEMA, SCHEMA_VERSION, Totals},
    },
};

/// An attached tracer and what its report needs.
pub struct Session {
    pub view: KernelView,
    pub syms: Kallsyms,
    /// Call-site names as they were when first seen: a caller inside a
    /// module unloaded since keeps its name.
    pub names: std::collections::HashMap<u64, String>,
    pub tracer: Tracer,
    pub filters: FilterView,
    pub started: Instant,
    pub started_unix_s: u64,
}

impl Session {
    /// Loads symbols, builds the filter (a bad one fails before anything is
    /// loaded), runs `preflight`, attaches and announces.
    pub fn start(
        filter: &Selection,
        mode: Mode,
        globals: Globals,
        preflight: impl FnOnce(&KernelView) -> Result<()>,
    ) -> Result<Self> {
        let view = KernelView::probe()?;
        let syms = Kallsyms::load()?;
        if !syms.has_addresses() {
            eprintln!(
                "nofail: warning: /proc/kallsyms hides addresses (kptr_restrict): callers shown as raw addresses"
            );
        }
        let rules = filter.build(&syms)?;
        if let Some(summary) = &rules.summary {
            eprintln!("nofail: {summary}");
        }
        preflight(&view)?;
        let tracer = Tracer::attach(&view, mode, &globals, &rules)?;
        Ok(Self {
            view,
            syms,
            names: Default::default(),
            tracer,
            filters: filter.into(),
            started: Instant::now(),
            started_unix_s: crate::kernel::realtime_ns() / 1_000_000_000,
        })
    }

    /// Names the call sites seen since the last call while their code is
    /// still there: kallsyms is read again when a new one is not in the
    /// copy at hand (a module loaded since). Called about once a second
    /// while tracing, and before a report.
    pub fn learn_names(&mut self) -> Result<()> {
        let new: Vec<u64> = maps::caller_addresses(&self.tracer.ebpf)?
            .into_iter()
            .filter(|a| !self.names.contains_key(a))
            .collect();
        let mut reloaded = false;
        for addr in new {
            let mut name = self.syms.resolve(addr);
            if name.starts_with("0x") && !reloaded {
                reloaded = true;
                if let Ok(syms) = Kallsyms::load() {
                    self.syms = syms;
                }
                name = self.syms.resolve(addr);
            }
            if !name.starts_with("0x") {
                self.names.insert(addr, name);
            }
        }
        Ok(())
    }

    /// Reads every aggregate into the report; call sites keep the names
    /// they had when first seen.
    /// `command` names what produced the report ("trace", "inject").
    pub fn collect(&mut self, command: &str, stuck_after: Duration) -> Result<Report> {
        // kallsyms is read again only when a call site is not in the copy
        // at hand (learn_names): parsing it costs far more than a scrape.
        self.learn_names()?;
        let ebpf = &self.tracer.ebpf;
        let mut callers = report::rows(&maps::read_callers(ebpf)?, &self.syms);
        for row in &mut callers {
            let addr = u64::from_str_radix(row.address.trim_start_matches("0x"), 16).ok();
            if let Some(name) = addr.and_then(|a| self.names.get(&a)) {
                row.caller = name.clone();
            }
        }
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
            chains: match self.filters.chains {
                Some(depth) => maps::read_chains(ebpf, &self.syms, depth)?,
                None => vec![],
            },
            in_flight: maps::read_inflight(
                ebpf,
                &self.syms,
                crate::kernel::duration_ns(stuck_after),
                !self.tracer.sees_every_call(),
            )?,
            health: maps::read_health(ebpf)?,
            injection: None,
        })
    }
}
