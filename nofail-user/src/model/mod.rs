// SPDX-License-Identifier: MIT OR Apache-2.0
//! What nofail knows, independent of how it was read or shown: the report
//! and its counters, histograms, call chains, injection behaviour. Imports
//! only `kernel` (symbol names).

pub mod chains;
pub mod coping;
pub mod counters;
pub mod derived;
pub mod events;
pub mod filter;
pub mod health;
pub mod hist;
pub mod inject;
pub mod mode;
pub mod report;
pub mod source;

pub use mode::Mode;
