// SPDX-License-Identifier: MIT OR Apache-2.0
//! Reading the kernel maps into the model: per-CPU sums of the caller
//! aggregates, health counters, calls in flight, call chains, injection
//! tallies and -ENOMEM system calls.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, StackTraceMap},
};
use nofail_common::{
    CallerStats, ChainKey, Health, INJECT_COUNTERS, Inflight, InjectCounter, NO_STACK, SyscallKey,
    map_names,
};

use crate::{
    kernel::{monotonic_ns, symbols::SymbolCache},
    model::{
        chains::{self, ChainRow},
        counters::{Aggregate, Counts},
        health::HealthCounts,
        inject::InjectCounts,
        report::{InflightRow, pt_map},
    },
};

/// The call sites in the aggregate map (keys only: cheap to poll).
pub fn caller_addresses(ebpf: &Ebpf) -> Result<Vec<u64>> {
    let map: PerCpuHashMap<_, u64, CallerStats> = PerCpuHashMap::try_from(
        ebpf.map(map_names::CALLERS)
            .context("CALLERS map missing")?,
    )?;
    Ok(map.keys().filter_map(|k| k.ok()).collect())
}

/// Sums the per-CPU aggregates of every call site.
pub fn read_callers(ebpf: &Ebpf) -> Result<BTreeMap<u64, Aggregate>> {
    let map: PerCpuHashMap<_, u64, CallerStats> = PerCpuHashMap::try_from(
        ebpf.map(map_names::CALLERS)
            .context("CALLERS map missing")?,
    )?;
    let mut out = BTreeMap::new();
    for entry in map.iter() {
        let (caller, per_cpu) = entry?;
        let total: &mut Aggregate = out.entry(caller).or_default();
        for stats in per_cpu.iter() {
            total.add(&Aggregate::of_stats(stats));
        }
    }
    Ok(out)
}

pub fn read_health(ebpf: &Ebpf) -> Result<HealthCounts> {
    let map: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map(map_names::HEALTH).context("HEALTH map missing")?)?;
    let sum = |slot: Health| -> Result<u64> { Ok(map.get(&(slot as u32), 0)?.iter().sum()) };
    let programs = crate::bpf::progstats::read(ebpf);
    Ok(HealthCounts {
        inflight_full: sum(Health::InflightFull)?,
        callers_full: sum(Health::CallersFull)?,
        orphan_exits: sum(Health::OrphanExit)?,
        stale_replaced: sum(Health::StaleReplaced)?,
        stacks_lost: sum(Health::StackLost)?,
        chains_full: sum(Health::ChainsFull)?,
        caller_unread: sum(Health::CallerUnread)?,
        waiter_busy: sum(Health::WaiterBusy)?,
        missed_runs: programs.iter().map(|p| p.recursion_misses).sum(),
        programs,
        events: None,
    })
}

/// Calls in progress, oldest first.
/// In tracepoint mode (`loops_only`) the map holds retry loops, kept while
/// their sleeps keep coming (nofail-ebpf/src/tracepoints.rs).
pub fn read_inflight(
    ebpf: &Ebpf,
    names: &mut SymbolCache,
    stuck_after_ns: u64,
    loops_only: bool,
) -> Result<Vec<InflightRow>> {
    let map: HashMap<_, u32, Inflight> = HashMap::try_from(
        ebpf.map(map_names::INFLIGHT)
            .context("INFLIGHT map missing")?,
    )?;
    // Full mode keeps its calls in the CALLS slots (owner set), tracepoint
    // mode its loops in the hash; the other map is empty (bpf/footprint.rs).
    let slots: Array<_, Inflight> =
        Array::try_from(ebpf.map(map_names::CALLS).context("CALLS map missing")?)?;
    let in_slots = slots.iter().filter_map(|c| c.ok()).filter(|c| c.owner != 0);
    // Entries vanish while we iterate.
    let in_hash = map.iter().filter_map(|e| e.ok()).map(|(_, c)| c);
    let now = monotonic_ns();
    let mut rows = Vec::new();
    for call in in_slots.chain(in_hash) {
        if call.ignored != 0 {
            continue;
        }
        if loops_only && now.saturating_sub(call.sleep_start_ns) >= nofail_common::TP_LOOP_GAP_NS {
            continue; // the loop ended: no sleep for a while
        }
        let age_ns = now.saturating_sub(call.start_ns);
        let comm_len = call
            .comm
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(call.comm.len());
        // The full mode's entry leaves the name out (vmalloc.rs) unless
        // a --comm filter needs it: the task is alive while its call is
        // in flight, so /proc has it.
        let comm = match comm_len {
            0 => task_comm(call.tgid, call.tid),
            n => String::from_utf8_lossy(&call.comm[..n]).into_owned(),
        };
        rows.push(InflightRow {
            tid: call.tid,
            pid: call.tgid,
            comm,
            caller: names.name(call.caller),
            size: call.size,
            age_ns,
            area_failures: call.area_failures as u64,
            mapping_failures: call.mapping_failures as u64,
            pt_failures: pt_map(call.pt_failures.map(u64::from)),
            sleeps_so_far: call.sleeps as u64,
            slept_ns: call.slept_ns,
            stuck: age_ns >= stuck_after_ns,
        });
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.age_ns));
    Ok(rows)
}

/// A task's name from /proc, empty once it is gone.
fn task_comm(tgid: u32, tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{tgid}/task/{tid}/comm"))
        .map(|c| c.trim_end_matches('\n').to_owned())
        .unwrap_or_default()
}

/// Reads `CHAINS` and `STACKS` and resolves every chain `depth` frames
/// deep, most retries first.
pub fn read_chains(ebpf: &Ebpf, names: &mut SymbolCache, depth: u32) -> Result<Vec<ChainRow>> {
    let chains: PerCpuHashMap<_, ChainKey, CallerStats> =
        PerCpuHashMap::try_from(ebpf.map(map_names::CHAINS).context("CHAINS map missing")?)?;
    let stacks =
        StackTraceMap::try_from(ebpf.map(map_names::STACKS).context("STACKS map missing")?)?;
    let mut folded: BTreeMap<(String, Vec<String>), Counts> = BTreeMap::new();
    let in_vmalloc = |name: &str| {
        name.starts_with("__vmalloc")
            || name.starts_with("vmalloc")
            || name.starts_with("__kvmalloc")
    };
    for entry in chains.iter() {
        let (key, per_cpu) = entry?;
        let chain = if key.stack_id == NO_STACK {
            vec!["(stack lost)".to_string()]
        } else {
            match stacks.get(&key.stack_id, 0) {
                Ok(trace) => {
                    let ips: Vec<u64> = trace.frames().iter().map(|f| f.ip).collect();
                    let vmalloc: std::collections::HashSet<u64> = ips
                        .iter()
                        .copied()
                        .filter(|&ip| in_vmalloc(&names.name(ip)))
                        .collect();
                    chains::cut(&ips, key.caller, depth as usize, |ip| vmalloc.contains(&ip))
                        .into_iter()
                        .map(|ip| names.name(ip))
                        .collect()
                }
                Err(_) => vec!["(stack lost)".to_string()],
            }
        };
        let total = folded.entry((names.name(key.caller), chain)).or_default();
        for s in per_cpu.iter() {
            total.add(&Counts::of_stats(s));
        }
    }
    let mut rows: Vec<ChainRow> = folded
        .into_iter()
        .map(|((caller, chain), counts)| ChainRow {
            caller,
            chain,
            counts,
        })
        .collect();
    chains::sort(&mut rows);
    Ok(rows)
}

/// The injection tallies (`INJECT_STATS`), summed over CPUs.
pub fn read_counts(ebpf: &aya::Ebpf) -> Result<InjectCounts> {
    let map: PerCpuArray<_, u64> = PerCpuArray::try_from(
        ebpf.map(map_names::INJECT_STATS)
            .context("INJECT_STATS missing")?,
    )?;
    let mut sums = [0u64; INJECT_COUNTERS as usize];
    for (i, sum) in sums.iter_mut().enumerate() {
        *sum = map.get(&(i as u32), 0)?.iter().sum();
    }
    Ok(InjectCounts {
        eligible: sums[InjectCounter::Eligible as usize],
        injected: sums[InjectCounter::Injected as usize],
        skipped_budget: sums[InjectCounter::SkippedBudget as usize],
        skipped_guard: sums[InjectCounter::SkippedGuard as usize],
        skipped_selection: sums[InjectCounter::SkippedSelection as usize],
    })
}

/// The injector's shared counters (nofail-ebpf/src/maps.rs): slot 0 the
/// `--times` failures spent (every attempt to spend one adds, past the
/// budget too), slot 1 the eligible allocations' sequence.
const INJECT_SEQ: &str = "INJECT_SEQ";

/// Attempts to spend the `--times` budget so far (injected, or refused
/// because it was spent).
pub fn read_times_spent(ebpf: &aya::Ebpf) -> Result<u64> {
    let map: Array<_, u64> = Array::try_from(ebpf.map(INJECT_SEQ).context("INJECT_SEQ missing")?)?;
    Ok(map.get(&0, 0)?)
}

/// System call names for the calls that commonly surface -ENOMEM, by
/// number in the table of the architecture nofail runs on (the kernel's:
/// a static binary of one architecture traces that architecture's kernel).
fn syscall_name(nr: u32) -> String {
    SYSCALLS
        .iter()
        .find(|(n, _)| *n == nr)
        .map_or_else(|| format!("syscall {nr}"), |(_, name)| name.to_string())
}

/// arch/x86/entry/syscalls/syscall_64.tbl.
#[cfg(target_arch = "x86_64")]
const SYSCALLS: &[(u32, &str)] = &[
    (0, "read"),
    (1, "write"),
    (9, "mmap"),
    (16, "ioctl"),
    (54, "setsockopt"),
    (56, "clone"),
    (57, "fork"),
    (59, "execve"),
    (175, "init_module"),
    (257, "openat"),
    (313, "finit_module"),
    (321, "bpf"),
    (435, "clone3"),
];

/// include/uapi/asm-generic/unistd.h, arm64's table (no fork: clone).
#[cfg(target_arch = "aarch64")]
const SYSCALLS: &[(u32, &str)] = &[
    (29, "ioctl"),
    (56, "openat"),
    (63, "read"),
    (64, "write"),
    (105, "init_module"),
    (208, "setsockopt"),
    (220, "clone"),
    (221, "execve"),
    (222, "mmap"),
    (273, "finit_module"),
    (280, "bpf"),
    (435, "clone3"),
];

/// -ENOMEM system calls per call site address.
pub fn read_enomem(ebpf: &aya::Ebpf) -> Result<BTreeMap<u64, BTreeMap<String, u64>>> {
    let map: HashMap<_, SyscallKey, u64> = HashMap::try_from(
        ebpf.map(map_names::ENOMEM_SYSCALLS)
            .context("ENOMEM_SYSCALLS missing")?,
    )?;
    let mut out: BTreeMap<u64, BTreeMap<String, u64>> = BTreeMap::new();
    for entry in map.iter() {
        let (key, count) = entry?;
        *out.entry(key.caller)
            .or_default()
            .entry(syscall_name(key.nr))
            .or_default() += count;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inject_seq_is_in_the_object() {
        let obj = aya_obj::Object::parse(crate::bpf::tracer::OBJECT).unwrap();
        assert!(obj.maps.contains_key(INJECT_SEQ));
    }

    #[test]
    fn syscall_names() {
        // bpf(2) as libc's SYS_bpf numbers it on the architecture built for.
        assert_eq!(syscall_name(libc::SYS_bpf as u32), "bpf");
        assert_eq!(syscall_name(libc::SYS_openat as u32), "openat");
        assert_eq!(syscall_name(libc::SYS_clone3 as u32), "clone3");
        assert_eq!(syscall_name(9999), "syscall 9999");
    }

    #[test]
    fn syscall_numbers_are_the_libc_ones() {
        for (nr, name) in SYSCALLS {
            let libc_nr = match *name {
                "read" => libc::SYS_read,
                "write" => libc::SYS_write,
                "mmap" => libc::SYS_mmap,
                "ioctl" => libc::SYS_ioctl,
                "setsockopt" => libc::SYS_setsockopt,
                "clone" => libc::SYS_clone,
                #[cfg(target_arch = "x86_64")]
                "fork" => libc::SYS_fork,
                "execve" => libc::SYS_execve,
                "init_module" => libc::SYS_init_module,
                "openat" => libc::SYS_openat,
                "finit_module" => libc::SYS_finit_module,
                "bpf" => libc::SYS_bpf,
                "clone3" => libc::SYS_clone3,
                other => panic!("{other} not checked"),
            };
            assert_eq!(*nr as libc::c_long, libc_nr, "{name}");
        }
    }
}
