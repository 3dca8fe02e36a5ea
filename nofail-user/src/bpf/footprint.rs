// SPDX-License-Identifier: MIT OR Apache-2.0
//! What nofail leaves in the kernel while it runs: every map of the object
//! is created at load, whether the mode's programs use it or not, and the
//! big ones are preallocated (16,384-entry hash and LRU maps, a 1 MiB stack
//! map, a 256 KiB ring buffer). Maps a mode's programs never touch are
//! created with the least the kernel takes instead. Measured on the test
//! kernel: sentinel mode took 14.6 MB of vmalloc space and 9 MB of per-CPU
//! memory (a preallocated 1.75 KiB per-CPU aggregate for each of 4,096
//! possible call sites), and a vmalloc call then cost up to 5 % more with
//! no nofail program running for it. CALLERS and CHAINS now allocate per
//! call site seen (nofail-ebpf/src/maps.rs).

use aya::EbpfLoader;

use crate::model::Mode;

/// The smallest ring buffer the kernel takes: one page.
const RING_MIN: u32 = 4096;

/// Used only by tracepoint mode (tracepoints.rs).
const TRACEPOINT_ONLY: &[&str] = &["INFLIGHT", "TP_SLEEPS"];
/// Used only by tracepoint and sentinel modes.
const SLOW_PATH_ONLY: &[&str] = &["TP_TASKS"];
/// Used only by sentinel mode (sentinel.rs).
const SENTINEL_ONLY: &[&str] = &["SENTINEL_SLEEPS"];
/// Used only by the full mode's programs and injection (vmalloc.rs,
/// task.rs, inject.rs, chains and events): userspace reads some of them in
/// any mode, which a one-entry map answers as empty.
const FULL_ONLY: &[&str] = &["CALLS", "CHAINS", "STACKS", "VERDICT", "LAST_NULL_NS"];
/// Sentinel mode's per-task maps: a task stays in them from a failure (or
/// a NULL) to its retry sleep, or through the sleep. Sized so that each
/// is one kmalloc'd block (bpf_map_area_alloc() takes kmalloc up to
/// 32 KiB) instead of two vmalloc areas of 1.4 MiB and 256 KiB: memory a
/// fleet's always-on sentinel holds, and held memory makes every vmalloc
/// call dearer (the benchmark, README). LRU: past 256 tasks in a slow path
/// at once, the oldest task's state goes.
const SENTINEL_TASK_MAPS: &[&str] = &["LAST_NULL", "TP_TASKS", "SENTINEL_SLEEPS"];
const SENTINEL_TASKS: u32 = 256;

/// Shrinks the maps `mode` does not use. `auto` may fall back to
/// tracepoint mode only on a kernel without kprobes, so it shrinks as the
/// full mode only where kprobes exist. `events`: `--events` asked for.
pub fn shrink_unused(loader: &mut EbpfLoader, mode: Mode, kprobes: bool, events: bool) {
    let full = matches!(mode, Mode::Kprobe | Mode::Fentry) || (mode == Mode::Auto && kprobes);
    let unused: Vec<&str> = match mode {
        _ if full => [TRACEPOINT_ONLY, SLOW_PATH_ONLY, SENTINEL_ONLY].concat(),
        Mode::Sentinel => [TRACEPOINT_ONLY, FULL_ONLY].concat(),
        Mode::Tracepoint => [SENTINEL_ONLY, FULL_ONLY].concat(),
        _ => Vec::new(),
    };
    for name in unused {
        loader.map_max_entries(name, 1);
    }
    if mode == Mode::Sentinel {
        for name in SENTINEL_TASK_MAPS {
            loader.map_max_entries(name, SENTINEL_TASKS);
        }
    }
    if !events || !full {
        loader.map_max_entries("EVENTS", RING_MIN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name in the tables is a map of the object: a renamed map
    /// would otherwise keep its full size without a word.
    #[test]
    fn every_listed_map_exists() {
        // The object the tracer embeds (bpf/tracer.rs), read here directly:
        // this module sits below the tracer.
        let object = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nofail"));
        let obj = aya_obj::Object::parse(object).unwrap();
        for name in [
            TRACEPOINT_ONLY,
            SLOW_PATH_ONLY,
            SENTINEL_ONLY,
            FULL_ONLY,
            SENTINEL_TASK_MAPS,
        ]
        .concat()
        .into_iter()
        .chain(["EVENTS"])
        {
            assert!(obj.maps.contains_key(name), "no map {name} in the object");
        }
    }
}
