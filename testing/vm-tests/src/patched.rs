// SPDX-License-Identifier: MIT OR Apache-2.0
//! Scenarios for the test kernel built with a patch from testing/patches
//! (`cargo xtask vm-test --kernel test+FILE`): the scenario table gives
//! each the patch it needs, and they run on that variant only.

use anyhow::{Context as _, Result, ensure};

use crate::{
    harness::{Ctx, Kmsg, Trace, expect_fields, pt_total, row},
    trigger::{self, Arm, Injector},
};

/// testing/patches/vmalloc-nofail-unwind-partial-map.patch: the NOFAIL
/// mapping loop unmaps what a failed attempt mapped before it retries.
pub const UNWIND_PATCH: &str = "vmalloc-nofail-unwind-partial-map";

/// testing/patches/vmalloc-nofail-event-wait.patch: the area stage's NOFAIL
/// loop waits for vmap space to be freed (`vmap_nofail_wait`); its
/// scenarios are the timed runs of whatif.rs (`event_wait_*`).
pub const EVENT_WAIT_PATCH: &str = "vmalloc-nofail-event-wait";

/// `mapping_failure_after_partial_map_spins`, step for step, on the
/// patched kernel: the priming call, then the 6 MiB NOFAIL call in fresh
/// vmalloc space with fail_page_alloc (space 3) letting the slot's PMD
/// page and first PTE page through and failing the next PTE page, after
/// the PTEs of the first 2 MiB were written.
/// With the partial map unwound, the retry maps the whole range: exactly
/// one mapping failure, one retry, one sleep, one page-table failure, the
/// call returns memory, nothing is left in flight, and mm/vmalloc.c does
/// not warn. Its report (mapping_patched.json) is what CI gates the stock
/// kernel's (mapping_spin.json) against.
pub fn partial_map_retries_once(ctx: &Ctx) -> Result<()> {
    ctx.load_trigger()?;
    let primed = trigger::run("vmalloc_nofail_fresh", 1, 64 << 10, Arm::Off)?;
    ensure!(primed.null == 0, "the priming call failed: {primed:?}");
    let mut kmsg = Kmsg::from_now()?;
    let trace = Trace::start(ctx, "mapping_patched", &["--stuck-after", "500ms"])?;
    let finished = trigger::run_mapping_injected(6 << 20, 1, 3);
    let left = Injector::FailPageAlloc.remaining();
    Injector::FailPageAlloc.disarm()?;
    let report = trace.finish()?;
    let status = finished?
        .context("the NOFAIL call did not finish in 5 s: the partial map was not unwound")?;
    ensure!(status.success(), "trigger run failed: {status}");
    ensure!(left? == 0, "fail_page_alloc never failed a page-table page");
    let in_flight = report["in_flight"]
        .as_array()
        .context("the report has no in_flight list")?;
    ensure!(
        in_flight.is_empty(),
        "calls still in flight: {}",
        report["in_flight"]
    );
    let r = row(&report, "site_vmalloc_nofail_fresh")?;
    let pt = pt_total(r)?;
    ensure!(
        pt == 1,
        "page-table failures {pt} != 1: {}",
        r["pt_failures"]
    );
    expect_fields(
        &report,
        "site_vmalloc_nofail_fresh",
        &[
            ("calls", 1),
            ("nofail_calls", 1),
            ("null_returns", 0),
            ("area_failures", 0),
            ("mapping_failures", 1),
            ("mapping_retries", 1),
            ("max_retries", 1),
            ("sleeps", 1),
        ],
    )?;
    let vmalloc: Vec<String> = kmsg
        .read_new()?
        .into_iter()
        .filter(|r| r.contains("mm/vmalloc.c"))
        .collect();
    ensure!(
        vmalloc.is_empty(),
        "mm/vmalloc.c warned: {}",
        vmalloc.join(" | ")
    );
    Ok(())
}
