//! Types shared between the eBPF programs and the `nofail` CLI.
//!
//! Every struct is `#[repr(C)]` with explicit padding fields (no `bool`, no
//! implicit holes) so the bytes the kernel writes are exactly the bytes
//! userspace reads.
#![no_std]

/// Capacity of the per-call-site aggregate map.
pub const MAX_CALLERS: u32 = 8192;
/// Capacity of the per-task in-flight call map (one entry per task inside
/// the vmalloc core at any moment).
pub const MAX_INFLIGHT: u32 = 16384;

/// Per-call-site aggregate, kept per CPU in the kernel and summed in
/// userspace. Keyed by the `caller` argument of the vmalloc core.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallerStats {
    /// Finished outermost calls (the page-array recursion is not a call).
    pub calls: u64,
    /// Calls whose gfp mask had `__GFP_NOFAIL`.
    pub nofail_calls: u64,
    /// Calls that returned NULL.
    pub null_returns: u64,
    /// Sum of entry-to-exit latency, ns.
    pub latency_ns: u64,
}

impl CallerStats {
    /// Adds another CPU's (or another snapshot's) counts into this one.
    pub fn merge(&mut self, other: &Self) {
        self.calls += other.calls;
        self.nofail_calls += other.nofail_calls;
        self.null_returns += other.null_returns;
        self.latency_ns += other.latency_ns;
    }
}

/// One task's call in progress, keyed by thread id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inflight {
    pub start_ns: u64,
    pub caller: u64,
    pub size: u64,
    pub gfp: u32,
    /// Nesting depth below the outermost call (the core recurses once for
    /// the page array in `__vmalloc_area_node`).
    pub depth: u32,
}

/// Slots of the per-CPU health counter array (`HEALTH` map).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Entry seen but the in-flight map was full: call not tracked.
    InflightFull = 0,
    /// Call finished but the caller map was full: call not counted.
    CallersFull = 1,
    /// Exit seen with no matching entry (attach raced a call in progress).
    OrphanExit = 2,
}

/// Number of slots in the `HEALTH` map.
pub const HEALTH_SLOTS: u32 = 3;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integer fields only, no padding.
    unsafe impl aya::Pod for super::CallerStats {}
    unsafe impl aya::Pod for super::Inflight {}
}
