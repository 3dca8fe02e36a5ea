// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Where a NULL goes: a task whose vmalloc returned NULL and whose system
//! call then fails with -ENOMEM handed the failure to userspace. Read at
//! `raw_syscalls:sys_exit` (attached by `nofail inject`).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use nofail_common::SyscallKey;

use crate::{
    config::retry_window_ns,
    maps::{ENOMEM_SYSCALLS, LAST_NULL},
    task::{current_tid, now_ns},
};

const ENOMEM: i64 = 12;
/// Offsets in the raw_syscalls:sys_exit record (after the 8-byte common
/// header): `long id; long ret;`.
const ID_OFF: usize = 8;
const RET_OFF: usize = 16;

#[tracepoint]
pub fn syscall_exit(ctx: TracePointContext) -> u32 {
    let _ = try_syscall_exit(&ctx);
    0
}

fn try_syscall_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let ret: i64 = unsafe { ctx.read_at(RET_OFF)? };
    if ret != -ENOMEM {
        return Ok(());
    }
    let tid = current_tid();
    let Some(last) = (unsafe { LAST_NULL.get(tid) }) else {
        return Ok(());
    };
    let last = *last;
    let _ = LAST_NULL.remove(tid);
    if now_ns().saturating_sub(last.end_ns) > retry_window_ns() {
        return Ok(());
    }
    let id: i64 = unsafe { ctx.read_at(ID_OFF)? };
    let key = SyscallKey {
        caller: last.caller,
        nr: id as u32,
        _pad: 0,
    };
    match ENOMEM_SYSCALLS.get_ptr_mut(key) {
        Some(count) => unsafe { *count += 1 },
        None => {
            let _ = ENOMEM_SYSCALLS.insert(key, 1u64, 0);
        }
    }
    Ok(())
}
