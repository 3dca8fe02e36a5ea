// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Kernel page-table allocation, the reason the mapping stage fails:
//! `__pte_alloc_kernel()`, `__pmd_alloc()`, `__pud_alloc()`, `__p4d_alloc()`
//! all return 0 or -ENOMEM. Counted per level while inside a tracked call.

use aya_ebpf::{
    macros::{fexit, kretprobe},
    programs::{FExitContext, RetProbeContext},
};

use crate::task::current_call;

/// Index into `pt_failures`, matching the order userspace prints.
const PTE: usize = 0;
const PMD: usize = 1;
const PUD: usize = 2;
const P4D: usize = 3;

macro_rules! level_programs {
    ($fexit:ident, $kret:ident, $func:literal, $level:expr) => {
        #[fexit(function = $func)]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            try_level_exit($level, ctx.ret::<i64>().unwrap_or(0) as i32);
            0
        }

        #[kretprobe]
        pub fn $kret(ctx: RetProbeContext) -> u32 {
            try_level_exit($level, ctx.ret::<i64>() as i32);
            0
        }
    };
}

level_programs!(
    pte_alloc_fexit,
    pte_alloc_kretprobe,
    "__pte_alloc_kernel",
    PTE
);
level_programs!(pmd_alloc_fexit, pmd_alloc_kretprobe, "__pmd_alloc", PMD);
level_programs!(pud_alloc_fexit, pud_alloc_kretprobe, "__pud_alloc", PUD);
level_programs!(p4d_alloc_fexit, p4d_alloc_kretprobe, "__p4d_alloc", P4D);

fn try_level_exit(level: usize, ret: i32) {
    if ret == 0 {
        return;
    }
    if let Some(call) = current_call()
        && let Some(count) = unsafe { (*call).pt_failures.get_mut(level) }
    {
        *count += 1;
    }
}
