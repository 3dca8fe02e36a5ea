//! Load-time constants, patched by userspace through aya globals before the
//! programs are verified (`EbpfLoader::override_global`), and the runtime
//! filter held in the `FILTER` map.

use nofail_common::{COMM_LEN, MAX_CALLER_RANGES};

use crate::maps::FILTER;

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

#[inline(always)]
pub fn gfp_nofail() -> u32 {
    // Volatile: the value is rewritten in .rodata after compilation.
    unsafe { core::ptr::read_volatile(&GFP_NOFAIL) }
}

#[inline(always)]
pub fn retry_window_ns() -> u64 {
    unsafe { core::ptr::read_volatile(&RETRY_WINDOW_NS) }
}

/// Does a call pass the runtime filters?
#[inline(always)]
pub fn selected(tgid: u32, comm: &[u8; COMM_LEN], caller: u64, size: u64, gfp: u32) -> bool {
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
    if f.comm[0] != 0 {
        for (want, have) in f.comm.iter().zip(comm.iter()) {
            if want != have {
                return false;
            }
            if *have == 0 {
                break;
            }
        }
    }
    if f.n_ranges != 0 {
        let mut hit = false;
        for i in 0..MAX_CALLER_RANGES {
            // black_box keeps the index an index: without it LLVM walks the
            // array with a pointer the 6.1 verifier cannot bound.
            let i = core::hint::black_box(i);
            if i as u32 >= f.n_ranges {
                break;
            }
            let Some(&[start, end]) = f.ranges.get(i) else {
                break;
            };
            if caller >= start && caller < end {
                hit = true;
                break;
            }
        }
        if !hit {
            return false;
        }
    }
    true
}
