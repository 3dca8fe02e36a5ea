// SPDX-License-Identifier: MIT OR Apache-2.0
//! What the running kernel offers, read from its files: BTF, build config,
//! symbols, release and features. Imports no other layer.

pub mod arch;
pub mod btf;
pub mod callframe;
pub mod cgroup;
pub mod config;
pub mod support;
pub mod symbols;
pub mod view;

/// CLOCK_REALTIME in ns since the Unix epoch (0 before it).
pub fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, duration_ns)
}

/// `d` in nanoseconds, as the kernel counts them; saturates at `u64::MAX`
/// (about 584 years) rather than wrapping. Every duration flag is bounded
/// below that when parsed (cmd/flags.rs), so for them this is exact.
pub fn duration_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns().
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
