// SPDX-License-Identifier: MIT OR Apache-2.0
//! How each caller coped with the failures `nofail inject` gave it, from
//! its report row, its calls still in flight and the system calls that
//! failed with -ENOMEM after its NULLs.

use std::collections::BTreeMap;

use crate::model::{
    inject::Behaviour,
    report::{CallerRow, InflightRow},
};

/// A behaviour line per caller that received an injected failure.
pub fn behaviour(
    callers: &[CallerRow],
    in_flight: &[InflightRow],
    enomem: &BTreeMap<u64, BTreeMap<String, u64>>,
) -> Vec<Behaviour> {
    callers
        .iter()
        .filter(|r| r.counts.injected > 0)
        .map(|r| {
            let looping = in_flight.iter().filter(|f| f.caller == r.caller).count() as u64;
            let addr = u64::from_str_radix(r.address.trim_start_matches("0x"), 16).unwrap_or(0);
            let syscalls = enomem.get(&addr).cloned().unwrap_or_default();
            let to_user: u64 = syscalls.values().sum();
            Behaviour {
                caller: r.caller.clone(),
                nofail: r.counts.nofail_calls > 0,
                injected: r.counts.injected,
                calls: r.counts.calls,
                area_retries: r.counts.area_retries,
                mapping_retries: r.counts.mapping_retries,
                sleeps: r.counts.sleeps,
                stall_ms: r.counts.slept_ns as f64 / 1e6,
                max_stall_ms: r.counts.max_slept_ns as f64 / 1e6,
                still_looping: looping,
                null_returned: r.counts.null_returns,
                open_coded_retries: r.counts.open_coded_retries,
                open_coded_retry_sleeps: r.counts.open_coded_retry_sleeps,
                error_to_userspace: to_user,
                syscalls,
                absorbed: r
                    .counts
                    .null_returns
                    .saturating_sub(r.counts.open_coded_retries + to_user),
            }
        })
        .collect()
}
