// SPDX-License-Identifier: MIT OR Apache-2.0
//! The trigger module's debugfs interface and the kernel's own fault
//! injection (failslab with task-filter), the ground truth of the test kernel.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result, ensure};
use nofail_test_support::kernel::{KernelConfig, kernel_functions};

const DIR: &str = "/sys/kernel/debug/nofail_trigger";

/// Loads the module unless loaded. A reload (after a scenario unloaded it)
/// starts the fresh-address-space site 1000 slots further on: the slots an
/// earlier load used keep their page tables.
pub fn load(module: &Path) -> Result<()> {
    static LOADS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    if Path::new(DIR).exists() {
        return Ok(());
    }
    let n = LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = std::process::Command::new("insmod")
        .arg(module)
        .arg(format!("first_fresh_slot={}", 1000 * n))
        .output()?;
    ensure!(
        out.status.success(),
        "insmod {}: {}",
        module.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    // The fresh-address-space site calls __vmalloc_node_range and the
    // exhaustion reserves areas with __get_vm_area_caller, neither
    // exported: the module gets their addresses from here (and checks
    // them).
    let kallsyms = std::fs::read_to_string("/proc/kallsyms")?;
    let functions = kernel_functions(&kallsyms);
    let find = |names: &[&str]| {
        functions
            .iter()
            .find(|(_, name)| names.contains(name))
            .map(|(addr, _)| *addr)
            .with_context(|| format!("no {} in /proc/kallsyms", names.join(" or ")))
    };
    let addr = find(&["__vmalloc_node_range_noprof", "__vmalloc_node_range"])?;
    write("vmalloc_range", &format!("{addr:#x}"))?;
    write(
        "get_area",
        &format!("{:#x}", find(&["__get_vm_area_caller"])?),
    )
}

fn write(file: &str, value: &str) -> Result<()> {
    std::fs::write(format!("{DIR}/{file}"), value)
        .with_context(|| format!("write {value:?} to {DIR}/{file}"))
}

/// Frees the vmap areas vfree() left for a later purge (vm_unmap_aliases()).
pub fn purge_lazy() -> Result<()> {
    write("purge", "1")
}

/// What the trigger saw for its last run.
#[derive(Debug, PartialEq, Eq)]
pub struct Results {
    pub calls: u64,
    pub null: u64,
    pub retries: u64,
    /// The kernel's one-jiffy retry sleeps (schedule_timeout_uninterruptible)
    /// in the running task during the run, counted by the trigger's own
    /// kprobe: the NOFAIL loop's turns, from outside nofail.
    pub sleeps: u64,
}

/// Where the trigger sets `make_it_fail` for the kernel's injectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arm {
    Off = 0,
    /// The whole call.
    Call = 1,
    /// Only inside the page-table mapping function.
    Mapping = 2,
}

/// Makes `count` calls of `size` bytes from `site`, with the kernel's fault
/// injection armed for them as `arm` says.
pub fn run(site: &str, count: u64, size: u64, arm: Arm) -> Result<Results> {
    write("size", &size.to_string())?;
    write("count", &count.to_string())?;
    write("fail", &(arm as u32).to_string())?;
    write("run", site)?;
    results()
}

/// What the trigger saw for its last run (one that ran in a child too).
pub fn results() -> Result<Results> {
    let text = std::fs::read_to_string(format!("{DIR}/results"))?;
    Ok(Results {
        calls: field(&text, "calls")?,
        null: field(&text, "null")?,
        retries: field(&text, "retries")?,
        sleeps: field(&text, "sleeps")?,
    })
}

/// `name=value` from the trigger's results line.
fn field(text: &str, name: &str) -> Result<u64> {
    text.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .with_context(|| format!("no {name} in {text:?}"))?
        .parse()
        .context("bad number")
}

/// Calls and NULLs of every run since the module was loaded, concurrent
/// runs included.
pub fn totals() -> Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("{DIR}/results"))?;
    Ok((field(&text, "total_calls")?, field(&text, "total_null")?))
}

/// The kernel's own fault injectors, armed only for tasks with
/// `make_it_fail` (the trigger sets it around its own calls).
#[derive(Clone, Copy, Debug)]
pub enum Injector {
    /// failslab: fails slab allocations, but never `__GFP_NOFAIL` ones.
    Failslab,
    /// fail_page_alloc: fails page allocations (order 0 included), never
    /// `__GFP_NOFAIL` ones: inside a NOFAIL vmalloc that leaves exactly the
    /// page-table pages of the mapping stage.
    FailPageAlloc,
    /// fail_function on should_failslab: makes it say "fail" even for
    /// `__GFP_NOFAIL` slab allocations, i.e. the vm_struct of a NOFAIL
    /// vmalloc's area stage.
    ShouldFailslab,
}

impl Injector {
    fn dir(self) -> &'static str {
        match self {
            Injector::Failslab => "/sys/kernel/debug/failslab",
            Injector::FailPageAlloc => "/sys/kernel/debug/fail_page_alloc",
            Injector::ShouldFailslab => "/sys/kernel/debug/fail_function",
        }
    }

    /// Fail the next `times` eligible calls of tasks with make_it_fail.
    pub fn arm(self, times: u64) -> Result<()> {
        self.arm_after(times, 0)
    }

    /// Like `arm`, after letting `space` of eligible allocations through
    /// (the injector's `space` budget: bytes for failslab, 1 << order per
    /// allocation for fail_page_alloc).
    pub fn arm_after(self, times: u64, space: u64) -> Result<()> {
        let d = self.dir();
        let set = |file: &str, value: &str| -> Result<()> {
            std::fs::write(format!("{d}/{file}"), value)
                .with_context(|| format!("write {value:?} to {d}/{file}"))
        };
        match self {
            Injector::Failslab => set("ignore-gfp-wait", "N")?,
            Injector::FailPageAlloc => {
                set("ignore-gfp-wait", "N")?;
                set("ignore-gfp-highmem", "N")?;
                set("min-order", "0")?;
            }
            Injector::ShouldFailslab => {
                // EBUSY: already listed from an earlier arm.
                if let Err(e) = set("inject", "should_failslab")
                    && !format!("{e:#}").contains("busy")
                {
                    return Err(e);
                }
                set("should_failslab/retval", &format!("{:#x}", -12i64))?;
            }
        }
        set("task-filter", "Y")?;
        set("verbose", "0")?;
        set("interval", "1")?;
        set("probability", "100")?;
        set("space", &space.to_string())?;
        set("times", &times.to_string())
    }

    /// Stops failing (probability 0: the kernel's should_fail() returns
    /// before it counts down `times`) and returns how many failures the
    /// armed budget gave.
    pub fn release(self, armed: u64) -> Result<u64> {
        std::fs::write(format!("{}/probability", self.dir()), "0")?;
        let left = self.remaining()?;
        u64::try_from(left)
            .ok()
            .and_then(|l| armed.checked_sub(l))
            .with_context(|| format!("{left} left of {armed}"))
    }

    /// Failures still left of the armed budget.
    pub fn remaining(self) -> Result<i64> {
        Ok(std::fs::read_to_string(format!("{}/times", self.dir()))?
            .trim()
            .parse()?)
    }

    pub fn disarm(self) -> Result<()> {
        let d = self.dir();
        std::fs::write(format!("{d}/probability"), "0")?;
        std::fs::write(format!("{d}/times"), "0")?;
        if let Injector::ShouldFailslab = self {
            std::fs::write(format!("{d}/inject"), "!should_failslab")?;
        }
        Ok(())
    }
}

/// Fails the next `times` eligible allocations of one trigger run (armed
/// for the whole call), then disarms whatever happened. Returns what the
/// trigger saw and how much of the budget was left unused.
pub fn run_injected(
    injector: Injector,
    times: u64,
    site: &str,
    count: u64,
    size: u64,
) -> Result<(Results, i64)> {
    injector.arm(times)?;
    let run = run(site, count, size, Arm::Call);
    let left = injector.remaining();
    injector.disarm()?;
    Ok((run?, left?))
}

/// CONFIG_HZ of the running kernel (the test kernel has /proc/config.gz).
pub fn hz() -> Result<u64> {
    KernelConfig::running()?.hz()
}

/// Starts the trigger's fresh-address-space NOFAIL site in a child with
/// fail_page_alloc armed from the entry of its mapping function (the
/// trigger's kprobe), so the kernel fails page-table pages and nothing
/// else: `times` failures after `space` were allowed through (its unit is
/// the allocation's 1 << order: pages, for page tables).
/// Returns the child's exit status if it ended within 5 s.
pub fn run_mapping_injected(
    size: u64,
    times: u64,
    space: u64,
) -> Result<Option<std::process::ExitStatus>> {
    Injector::FailPageAlloc.arm_after(times, space)?;
    let mut child = start_in_child("vmalloc_nofail_fresh", 1, size, Arm::Mapping)?;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
    }
    // Left running: a spinning NOFAIL call cannot be interrupted.
    std::mem::forget(child);
    Ok(None)
}

/// Starts `count` calls of `size` bytes from `site` in a child (`sh -c
/// 'echo SITE > run'`), armed as `arm` says: for calls that stay in the
/// kernel until the injector is disarmed. `results()` after it exits.
pub fn start_in_child(site: &str, count: u64, size: u64, arm: Arm) -> Result<std::process::Child> {
    write("size", &size.to_string())?;
    write("count", &count.to_string())?;
    write("fail", &(arm as u32).to_string())?;
    Ok(std::process::Command::new("sh")
        .args(["-c", &format!("echo {site} > {DIR}/run")])
        .spawn()?)
}

/// In a fresh boot the first fresh-slot call also makes the page-table
/// levels above the slots' PMD pages (a PUD page with 5-level paging),
/// which would use up the pages `spin_mapping_loop` lets through before
/// any PTE is written: one call first makes them, as the scenarios before
/// it did when the loop shared their boot. Call it before the trace
/// starts, so that the trace sees the spinning call alone.
pub fn prime_fresh_slot() -> Result<()> {
    let primed = run("vmalloc_nofail_fresh", 1, 64 << 10, Arm::Off)?;
    ensure!(primed.null == 0, "the priming call failed: {primed:?}");
    Ok(())
}

/// The endless mapping loop of a NOFAIL call (the -EBUSY re-map), after
/// `prime_fresh_slot`: fail_page_alloc lets the first page-table pages of
/// a 6 MiB fresh-slot call through and fails the next one, so every retry
/// finds PTEs set and sleeps again, for ever. Starts it while a trace
/// runs, lets it spin a second, then returns what `finish` (the trace's
/// end) gives. The task spins until power-off: scenarios using this get a
/// boot of their own.
pub fn spin_mapping_loop<T>(finish: impl FnOnce() -> Result<T>) -> Result<T> {
    let finished = run_mapping_injected(6 << 20, 1, 3);
    if matches!(finished, Ok(None)) {
        std::thread::sleep(Duration::from_secs(1));
    }
    let left = Injector::FailPageAlloc.remaining();
    let report = finish()?;
    ensure!(
        finished?.is_none(),
        "the call finished: the failure came before any PTE was written"
    );
    ensure!(left? == 0, "fail_page_alloc never failed a page-table page");
    Ok(report)
}
