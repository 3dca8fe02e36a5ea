// SPDX-License-Identifier: MIT OR Apache-2.0
//! Where a served report comes from: a live session (cmd/serve.rs wires
//! one from bpf) or a recorded file. `output::serve` asks through this and
//! never sees how the counts are taken.

use std::borrow::Cow;

use anyhow::Result;

use crate::model::report::Report;

pub trait ReportSource {
    /// The report as of now (read at scrape time).
    fn report(&mut self) -> Result<Cow<'_, Report>>;

    /// Called about once a second between scrapes: a live source names the
    /// call sites it saw while their code is there.
    fn tick(&mut self) {}
}

impl ReportSource for Report {
    fn report(&mut self) -> Result<Cow<'_, Report>> {
        Ok(Cow::Borrowed(self))
    }
}
