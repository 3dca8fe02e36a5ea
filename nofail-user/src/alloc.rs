// SPDX-License-Identifier: MIT OR Apache-2.0
//! nofail's own heap, retried: a failed allocation is tried again, up to
//! [`RETRIES`] times one [`PAUSE`] apart, before Rust's allocation-error
//! handler aborts the process.
//!
//! Why: under the pressure nofail is switched on for, malloc returns NULL
//! when the kernel fails an allocation of its own on the process's behalf
//! (mmap(2)'s `vm_area_struct` from the slab: ENOMEM), which is transient
//! (failslab, a shrinker's turn) rather than a lack of memory (overcommit
//! makes that an OOM kill, not NULL). The default handler aborts on the
//! first NULL: `nofail serve` died that way in the VM scenario
//! `service_under_memory_pressure` (docs/reliability.md). This is the
//! userspace twin of the kernel loop nofail watches,
//! `__vmalloc_area_node()`'s retry with `schedule_timeout_uninterruptible(1)`,
//! but bounded: a NULL that lasts [`RETRIES`] pauses is real, and aborts.
//! Each retry is counted ([`retries`]; `nofail serve` exports it as
//! `nofail_alloc_retries_total`).

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Tries after the first; with [`PAUSE`], a NULL lasting a second aborts.
pub const RETRIES: u32 = 100;
/// One jiffy at HZ=100, the kernel loop's sleep.
pub const PAUSE: Duration = Duration::from_millis(10);

static RETRIED: AtomicU64 = AtomicU64::new(0);

/// Allocations tried again after a NULL, since the process started.
pub fn retries() -> u64 {
    RETRIED.load(Ordering::Relaxed)
}

/// The global allocator of the `nofail` binary (main.rs): `A` (the
/// system allocator there) with failed allocations retried.
pub struct Retrying<A = System> {
    inner: A,
    pause: Duration,
    /// Where its retries are counted: [`retries`]'s counter for the
    /// process's heap, a test's own otherwise.
    retried: &'static AtomicU64,
}

impl Retrying<System> {
    pub const fn system() -> Self {
        Self {
            inner: System,
            pause: PAUSE,
            retried: &RETRIED,
        }
    }
}

impl<A> Retrying<A> {
    /// `inner` retried `pause` apart, counted in `retried` (tests: a
    /// failing allocator, no pause, a counter of their own).
    pub const fn new(inner: A, pause: Duration, retried: &'static AtomicU64) -> Self {
        Self {
            inner,
            pause,
            retried,
        }
    }

    /// `f` until it gives a pointer, or [`RETRIES`] retries gave NULL.
    /// Sleeps with nanosleep(2), which does not allocate.
    fn retried(&self, mut f: impl FnMut() -> *mut u8) -> *mut u8 {
        let mut p = f();
        let mut n = 0;
        while p.is_null() && n < RETRIES {
            n += 1;
            self.retried.fetch_add(1, Ordering::Relaxed);
            if !self.pause.is_zero() {
                std::thread::sleep(self.pause);
            }
            p = f();
        }
        p
    }
}

// SAFETY: every method forwards to `inner` with the caller's arguments
// unchanged; a NULL leaves nothing to undo (a failed realloc leaves `ptr`
// as it was), so trying again is calling `inner` again.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Retrying<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.retried(|| unsafe { self.inner.alloc(layout) })
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.retried(|| unsafe { self.inner.alloc_zeroed(layout) })
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.retried(|| unsafe { self.inner.realloc(ptr, layout, new_size) })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { self.inner.dealloc(ptr, layout) }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    /// The system allocator, failing its first `fail` calls.
    struct FailingFirst {
        fail: AtomicU32,
        calls: AtomicU32,
    }

    impl FailingFirst {
        const fn new(fail: u32) -> Self {
            Self {
                fail: AtomicU32::new(fail),
                calls: AtomicU32::new(0),
            }
        }

        fn fails(&self) -> bool {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.fail
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        }
    }

    unsafe impl GlobalAlloc for FailingFirst {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if self.fails() {
                return std::ptr::null_mut();
            }
            unsafe { System.alloc(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if self.fails() {
                return std::ptr::null_mut();
            }
            unsafe { System.realloc(ptr, layout, new_size) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    const LAYOUT: Layout = match Layout::from_size_align(188_638, 8) {
        Ok(l) => l,
        Err(_) => panic!("valid layout"),
    };

    #[test]
    fn transient_nulls_are_retried_until_an_allocation_succeeds() {
        static RETRIED_HERE: AtomicU64 = AtomicU64::new(0);
        let a = Retrying::new(FailingFirst::new(7), Duration::ZERO, &RETRIED_HERE);
        let p = unsafe { a.alloc(LAYOUT) };
        assert!(!p.is_null());
        // Seven NULLs, then the eighth call gave memory; each retry counted.
        assert_eq!(a.inner.calls.load(Ordering::Relaxed), 8);
        assert_eq!(RETRIED_HERE.load(Ordering::Relaxed), 7);
        // The memory is usable and whole; realloc's failures keep it.
        unsafe {
            p.write_bytes(0xa5, LAYOUT.size());
            a.inner.fail.store(3, Ordering::Relaxed);
            let q = a.realloc(p, LAYOUT, 2 * LAYOUT.size());
            assert!(!q.is_null());
            assert_eq!(a.inner.calls.load(Ordering::Relaxed), 8 + 4);
            assert_eq!(RETRIED_HERE.load(Ordering::Relaxed), 7 + 3);
            assert!(
                std::slice::from_raw_parts(q, LAYOUT.size())
                    .iter()
                    .all(|&b| b == 0xa5)
            );
            a.dealloc(q, Layout::from_size_align(2 * LAYOUT.size(), 8).unwrap());
        }
    }

    #[test]
    fn a_null_that_lasts_every_retry_is_returned() {
        static RETRIED_HERE: AtomicU64 = AtomicU64::new(0);
        let a = Retrying::new(FailingFirst::new(u32::MAX), Duration::ZERO, &RETRIED_HERE);
        let p = unsafe { a.alloc(LAYOUT) };
        assert!(p.is_null());
        assert_eq!(a.inner.calls.load(Ordering::Relaxed), 1 + RETRIES);
        assert_eq!(RETRIED_HERE.load(Ordering::Relaxed), u64::from(RETRIES));
    }

    #[test]
    fn the_pause_is_slept_between_tries() {
        static RETRIED_HERE: AtomicU64 = AtomicU64::new(0);
        let a = Retrying::new(
            FailingFirst::new(3),
            Duration::from_millis(20),
            &RETRIED_HERE,
        );
        let t = std::time::Instant::now();
        let p = unsafe { a.alloc(LAYOUT) };
        assert!(!p.is_null());
        // Three pauses of 20 ms at least (sleep never returns early).
        assert!(t.elapsed() >= Duration::from_millis(60));
        unsafe { a.dealloc(p, LAYOUT) };
    }
}
