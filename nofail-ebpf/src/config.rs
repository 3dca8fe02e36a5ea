//! Load-time constants, patched by userspace through aya globals before the
//! programs are verified (`EbpfLoader::override_global`), and the runtime
//! filter held in the `FILTER` map.

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
    if f.n_ranges != 0 && !in_ranges(caller, f.n_ranges) {
        return false;
    }
    true
}

/// Is `caller` inside one of the first `n` entries of `CALLER_RANGES`?
/// A binary search for the last range starting at or below `caller`:
/// `CALLER_RANGE_STEPS` halvings cover every index below
/// `MAX_CALLER_RANGES`, so the bounded loop decides exactly.
#[inline(always)]
fn in_ranges(caller: u64, n: u32) -> bool {
    // Invariant: ranges below `lo` start at or below caller (lo = 0 is
    // vacuous), ranges from `hi` on start above it.
    let (mut lo, mut hi) = (0u32, n);
    for _ in 0..=CALLER_RANGE_STEPS {
        if lo >= hi {
            break;
        }
        let mid = core::hint::black_box(lo + (hi - lo) / 2);
        let Some(r) = CALLER_RANGES.get(mid) else {
            return false;
        };
        if r.start <= caller {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    // `lo` ranges start at or below caller; the last of them is the only
    // one that can hold it (the ranges are disjoint and sorted).
    if lo == 0 {
        return false;
    }
    match CALLER_RANGES.get(lo - 1) {
        Some(r) => caller >= r.start && caller < r.end,
        None => false,
    }
}

/// Does the running filter ask for `--chains`?
#[inline(always)]
pub fn chains_on() -> bool {
    FILTER.get(0).is_some_and(|f: &Filter| f.chains != 0)
}
