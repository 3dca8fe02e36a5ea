// SPDX-License-Identifier: MIT OR Apache-2.0
//! Per-program run counters from the kernel (`bpf_prog_info`): above all
//! `recursion_misses`, the runs the kernel skipped because the same program
//! was already active on that CPU (a preempted fentry program, or a probe
//! hit from inside another BPF program). Every miss is an event nofail did
//! not see, so the report states them instead of hiding them.

use std::os::fd::{AsFd as _, AsRawFd as _};

use crate::model::health::ProgStats;
use aya::{Ebpf, programs::Program};

fn info_of(program: &Program) -> Option<(u64, u64, u64)> {
    let fd = program.fd().ok()?.as_fd().as_raw_fd();
    let info = crate::bpf::sys::prog_info(fd).ok()?;
    Some((info.run_cnt, info.run_time_ns, info.recursion_misses))
}

/// Counters of every loaded program of the object.
pub fn read(ebpf: &Ebpf) -> Vec<ProgStats> {
    ebpf.programs()
        .filter_map(|(name, p)| {
            let (run_count, run_time_ns, recursion_misses) = info_of(p)?;
            let insns = p.info().ok().and_then(|i| i.size_translated()).unwrap_or(0) as u64 / 8;
            Some(ProgStats {
                program: name.to_string(),
                run_count,
                run_time_ns,
                recursion_misses,
                insns,
            })
        })
        .collect()
}
