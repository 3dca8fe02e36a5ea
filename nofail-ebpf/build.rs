// SPDX-License-Identifier: MIT OR GPL-2.0-only
use which::which;

/// The eBPF binary is linked by bpf-linker, an undeclared build dependency:
/// rebuild whenever the bpf-linker found on PATH changes.
fn main() {
    let bpf_linker =
        which("bpf-linker").expect("bpf-linker not found on PATH: run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
    // `bpf_target_arch` (regs.rs): set by aya-build from nofail-user's
    // target when it builds this crate; the host's arch when built alone
    // (clippy), or AYA_BPF_TARGET_ARCH.
    aya_build::emit_bpf_target_arch_cfg().expect("bpf_target_arch");
}
