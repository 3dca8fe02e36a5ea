// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Load-time constants, patched by userspace through aya globals before the
//! programs are verified (`EbpfLoader::override_global`), and the runtime
//! filter held in the `FILTER` map.

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_loop,
    generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_comm},
};
use nofail_common::{CALLER_RANGE_STEPS, COMM_LEN, Filter};

use crate::maps::{CALLER_RANGES, FILTER};

/// `__GFP_NOFAIL` as built into the running kernel: `1 << ___GFP_NOFAIL_BIT`
/// read from BTF by userspace (0x8000 on 6.x/7.x).
#[unsafe(no_mangle)]
static GFP_NOFAIL: u32 = 0x8000;

/// How soon after a NULL return a call from the same site and task counts
/// as an open-coded retry.
#[unsafe(no_mangle)]
static RETRY_WINDOW_NS: u64 = 1_000_000_000;

/// nofail's own process: its map and program loading vmalloc too, and is
/// never what a user traces.
#[unsafe(no_mangle)]
static SELF_TGID: u32 = 0;

/// Full mode: `CALLS` slots in use, so that `--max-inflight N` tracks at
/// most N calls: min(N, CALL_SLOTS) (task.rs).
#[unsafe(no_mangle)]
static SLOTS_USED: u32 = nofail_common::CALL_SLOTS;

#[inline(always)]
pub fn slots_used() -> u32 {
    unsafe { core::ptr::read_volatile(&SLOTS_USED) }.max(1)
}

/// 1 with `--what-if` (whatif.rs); 0 removes its paths at verification.
#[unsafe(no_mangle)]
static WHAT_IF: u32 = 0;

#[inline(always)]
pub fn what_if() -> bool {
    unsafe { core::ptr::read_volatile(&WHAT_IF) != 0 }
}

#[inline(always)]
pub fn gfp_nofail() -> u32 {
    // Volatile: the value is rewritten in .rodata after compilation.
    unsafe { core::ptr::read_volatile(&GFP_NOFAIL) }
}

#[inline(always)]
pub fn retry_window_ns() -> u64 {
    unsafe { core::ptr::read_volatile(&RETRY_WINDOW_NS) }
}

/// Does a call pass the runtime filters? `comm` is the task's name, or
/// zeros when the caller has not read it: it is read here, into `comm`,
/// only when this same read of the filter asks for a name (`--comm`), so
/// a filter rewritten meanwhile never compares an unread name.
#[inline(always)]
pub fn selected(tgid: u32, comm: &mut [u8; COMM_LEN], caller: u64, size: u64, gfp: u32) -> bool {
    if tgid == unsafe { core::ptr::read_volatile(&SELF_TGID) } {
        return false;
    }
    let Some(f) = FILTER.get_ptr(0) else {
        return true;
    };
    let f = unsafe { &*f };
    if f.pid != 0 && f.pid != tgid {
        return false;
    }
    if f.nofail_only != 0 && gfp & gfp_nofail() == 0 {
        return false;
    }
    if size < f.min_size {
        return false;
    }
    // `--command-only`: the task's cgroup is nofail's cgroup for the
    // command or one below it (task_cgroup's ancestor at that level, as
    // bpf_get_current_ancestor_cgroup_id reads it; 0 when the task's
    // cgroup is above that level).
    if f.cgroup_id != 0
        && unsafe { bpf_get_current_ancestor_cgroup_id(f.cgroup_level as i32) } != f.cgroup_id
    {
        return false;
    }
    if f.comm[0] != 0 {
        if comm[0] == 0 {
            // Straight into `comm` (a map value at entry), not through a
            // stack copy.
            unsafe { bpf_get_current_comm(comm.as_mut_ptr() as *mut c_void, COMM_LEN as u32) };
        }
        for (want, have) in f.comm.iter().zip(comm.iter()) {
            if want != have {
                return false;
            }
            if *have == 0 {
                break;
            }
        }
    }
    if f.n_ranges != 0 && !in_ranges(caller, f.n_ranges) {
        return false;
    }
    true
}

/// Binary-search state shared with `search_step` through `bpf_loop`.
#[repr(C)]
struct Search {
    caller: u64,
    /// Ranges below `lo` start at or below `caller`; ranges from `hi` on
    /// start above it.
    lo: u32,
    hi: u32,
}

/// One halving of the search (a `bpf_loop` callback: the verifier checks
/// it once for any state, where an unrolled search would make it walk
/// every path of 16 data-dependent branches). Returns 1 to stop.
#[inline(never)]
extern "C" fn search_step(_index: u32, ctx: *mut c_void) -> i64 {
    let s = unsafe { &mut *(ctx as *mut Search) };
    if s.lo >= s.hi {
        return 1;
    }
    let mid = s.lo + (s.hi - s.lo) / 2;
    let Some(r) = CALLER_RANGES.get(mid) else {
        return 1;
    };
    if r.start <= s.caller {
        s.lo = mid + 1;
    } else {
        s.hi = mid;
    }
    0
}

/// Is `caller` inside one of the first `n` entries of `CALLER_RANGES`
/// (sorted, disjoint)? `CALLER_RANGE_STEPS + 1` halvings cover every count
/// up to `MAX_CALLER_RANGES`, so the search decides exactly.
#[inline(always)]
fn in_ranges(caller: u64, n: u32) -> bool {
    let mut s = Search {
        caller,
        lo: 0,
        hi: n,
    };
    unsafe {
        bpf_loop(
            CALLER_RANGE_STEPS + 1,
            search_step as *mut c_void,
            &mut s as *mut Search as *mut c_void,
            0,
        )
    };
    if s.lo == 0 || s.lo < s.hi {
        return false;
    }
    // The last range starting at or below caller is the only one that
    // can hold it.
    match CALLER_RANGES.get(s.lo - 1) {
        Some(r) => caller >= r.start && caller < r.end,
        None => false,
    }
}

/// Does the running filter ask for `--chains`?
#[inline(always)]
pub fn chains_on() -> bool {
    FILTER.get(0).is_some_and(|f: &Filter| f.chains != 0)
}
