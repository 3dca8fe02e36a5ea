// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! nofail kernel-side programs. One probe family per module; each program is
//! a thin wrapper that decodes its context and calls a `try_` function.
#![no_std]
#![no_main]
// BPF inline assembly (maps.rs: a fetching atomic add, which rustc's
// cpu v1 codegen cannot emit). The eBPF crate builds with nightly only.
#![feature(asm_experimental_arch)]

mod config;
mod events;
mod frames;
mod inject;
mod maps;
mod pagetable;
mod probe;
mod regs;
mod sentinel;
mod sleep;
mod stages;
mod syscall;
mod task;
mod tracepoints;
mod vmalloc;
mod whatif;
mod zero;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// bpf_probe_read_kernel, bpf_override_return and others are GPL-only
// helpers; the kernel accepts "Dual MIT/GPL" for them
// (license_is_gpl_compatible()). Same licenses as Cargo.toml's
// `MIT OR GPL-2.0-only`, checked by a host test.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
