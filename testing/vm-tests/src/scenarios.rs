//! The scenarios, each checking nofail's counts against a ground truth.

use anyhow::{Result, ensure};

use crate::{
    harness::{Counts, Ctx, Trace, expect_counts},
    trigger,
};

pub type Scenario = fn(&Ctx) -> Result<()>;

pub fn all(ctx: &Ctx) -> Vec<(&'static str, Scenario)> {
    let mut list: Vec<(&'static str, Scenario)> =
        vec![("bpf_array_map_calls_exact", bpf_array_map_calls_exact)];
    if ctx.trigger.is_some() {
        list.push(("trigger_sites_exact", trigger_sites_exact));
        list.push(("failslab_null_return_exact", failslab_null_return_exact));
    }
    list
}

/// bpf(BPF_MAP_CREATE) of a 16 MiB array: one vmalloc from array_map_alloc
/// (plus the nested page-array vmalloc, which must not count).
fn create_big_array_map() -> Result<()> {
    let mut attr = [0u32; 32];
    attr[0] = 2; // BPF_MAP_TYPE_ARRAY
    attr[1] = 4; // key_size
    attr[2] = 4096; // value_size
    attr[3] = 4096; // max_entries: 16 MiB of values
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    ensure!(
        fd >= 0,
        "BPF_MAP_CREATE failed: {}",
        std::io::Error::last_os_error()
    );
    unsafe { libc::close(fd as i32) };
    Ok(())
}

fn bpf_array_map_calls_exact(ctx: &Ctx) -> Result<()> {
    const N: u64 = 7;
    let trace = Trace::start(ctx, "bpf_array_map", &[])?;
    for _ in 0..N {
        create_big_array_map()?;
    }
    let report = trace.finish()?;
    expect_counts(
        &report,
        "array_map_alloc",
        Counts {
            rows: 1,
            calls: N,
            nofail_calls: 0,
            null_returns: 0,
        },
    )
}

fn trigger_sites_exact(ctx: &Ctx) -> Result<()> {
    trigger::load(ctx.trigger.as_ref().expect("trigger"))?;
    let trace = Trace::start(ctx, "trigger_sites", &[])?;
    let a = trigger::run("vmalloc_nofail", 5, 64 << 10, false)?;
    // 8 MiB is above the largest kmalloc, so kvmalloc always falls back to vmalloc.
    let b = trigger::run("kvmalloc_nofail", 4, 8 << 20, false)?;
    let c = trigger::run("vmalloc", 6, 64 << 10, false)?;
    let report = trace.finish()?;
    for r in [&a, &b, &c] {
        ensure!(r.null == 0, "trigger saw a NULL without injection: {r:?}");
    }
    expect_counts(
        &report,
        "site_vmalloc_nofail",
        Counts {
            rows: 1,
            calls: 5,
            nofail_calls: 5,
            null_returns: 0,
        },
    )?;
    expect_counts(
        &report,
        "site_kvmalloc_nofail",
        Counts {
            rows: 1,
            calls: 4,
            nofail_calls: 4,
            null_returns: 0,
        },
    )?;
    expect_counts(
        &report,
        "site_vmalloc",
        Counts {
            rows: 1,
            calls: 6,
            nofail_calls: 0,
            null_returns: 0,
        },
    )
}

/// The kernel's own failslab fails the first slab allocation of one plain
/// vmalloc (the vm_struct in __get_vm_area_node): the trigger sees NULL once
/// and nofail must count exactly that.
fn failslab_null_return_exact(ctx: &Ctx) -> Result<()> {
    trigger::load(ctx.trigger.as_ref().expect("trigger"))?;
    let trace = Trace::start(ctx, "failslab_null", &[])?;
    trigger::arm_failslab(1)?;
    let failed = trigger::run("vmalloc", 1, 64 << 10, true);
    trigger::disarm_failslab()?;
    let ok = trigger::run("vmalloc", 3, 64 << 10, false)?;
    let failed = failed?;
    let report = trace.finish()?;
    ensure!(
        failed.null == 1 && ok.null == 0,
        "failslab did not fail exactly once: {failed:?} {ok:?}"
    );
    expect_counts(
        &report,
        "site_vmalloc",
        Counts {
            rows: 1,
            calls: 4,
            nofail_calls: 0,
            null_returns: 1,
        },
    )
}
