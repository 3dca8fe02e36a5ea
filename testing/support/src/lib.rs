// SPDX-License-Identifier: MIT OR Apache-2.0
//! Helpers the host tests (`nofail-user/tests`) and the guest tests
//! (`testing/vm-tests`) share: bpf(2) object lists, the HTTP scrape,
//! promtool and Prometheus samples, kallsyms and kernel config parsing,
//! strict report field reads, the scenario result lines, and CI
//! preconditions.

pub mod bpf;
pub mod ci;
pub mod http;
pub mod json;
pub mod kernel;
pub mod outcome;
pub mod prom;
pub mod timed;
