// SPDX-License-Identifier: MIT OR Apache-2.0
//! Per-program run counters from the kernel (`bpf_prog_info`): above all
//! `recursion_misses`, the runs the kernel skipped because the same program
//! was already active on that CPU (a preempted fentry program, or a probe
//! hit from inside another BPF program). Every miss is an event nofail did
//! not see, so the report states them instead of hiding them.

use std::os::fd::{AsFd as _, AsRawFd as _};

use crate::model::health::ProgStats;
use aya::{Ebpf, programs::Program};

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// Offsets in `struct bpf_prog_info` (uapi/linux/bpf.h, stable ABI).
const RUN_TIME_NS_OFF: usize = 192;
const RUN_CNT_OFF: usize = 200;
const RECURSION_MISSES_OFF: usize = 208;
const INFO_LEN: usize = 256;

fn info_of(program: &Program) -> Option<(u64, u64, u64)> {
    let fd = program.fd().ok()?.as_fd().as_raw_fd();
    let mut info = [0u8; INFO_LEN];
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = InfoAttr {
        bpf_fd: fd as u32,
        info_len: INFO_LEN as u32,
        info: info.as_mut_ptr() as u64,
    };
    crate::bpf::sys::bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).ok()?;
    let u64_at = |off: usize| u64::from_ne_bytes(info[off..off + 8].try_into().expect("8 bytes"));
    Some((
        u64_at(RUN_CNT_OFF),
        u64_at(RUN_TIME_NS_OFF),
        u64_at(RECURSION_MISSES_OFF),
    ))
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
