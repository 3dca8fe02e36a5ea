// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Zeroed stack memory without `memset`. The BPF target turns zeroing 16
//! bytes or more into a call to its `memset` (a byte per five
//! instructions), which the kernel loads as a subprogram of every program
//! that calls it: one more vmalloc area held while nofail runs, and what a
//! loaded program holds makes every vmalloc call dearer
//! (docs/benchmark-history.md). Volatile word stores stay word stores.

use core::mem::MaybeUninit;

/// Zeroes `w` in place and hands it out. In place: returning the array
/// by value lets the compiler copy it as a known zero, with `memset`.
#[inline(always)]
pub fn words<const N: usize>(w: &mut MaybeUninit<[u64; N]>) -> &mut [u64; N] {
    let p = w.as_mut_ptr() as *mut u64;
    let mut i = 0;
    while i < N {
        unsafe { p.add(i).write_volatile(0) };
        i += 1;
    }
    unsafe { w.assume_init_mut() }
}
