// SPDX-License-Identifier: MIT OR GPL-2.0-only
use which::which;

/// The eBPF binary is linked by bpf-linker, an undeclared build dependency:
/// rebuild whenever the bpf-linker found on PATH changes.
fn main() {
    let bpf_linker =
        which("bpf-linker").expect("bpf-linker not found on PATH: run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
