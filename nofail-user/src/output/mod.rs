// SPDX-License-Identifier: MIT OR Apache-2.0
//! Where a report leaves the tool: text tables, JSON files (read back by
//! `nofail report`), Prometheus text and its HTTP endpoint, SVG pictures,
//! and the baseline gate. Works on the model only, never on bpf or cmd.

pub mod baseline;
pub mod events;
pub mod json;
pub mod prometheus;
pub mod serve;
pub mod stdout;
pub mod svg;
pub mod text;
