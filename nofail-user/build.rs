// SPDX-License-Identifier: MIT OR Apache-2.0
use std::path::Path;

/// Builds `nofail-ebpf` for bpfel-unknown-none (nightly, bpf-linker) and drops
/// the object in OUT_DIR, from where `main.rs` embeds it into the binary.
fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nofail-ebpf");
    let root = root.canonicalize()?;
    let root_dir = root.to_str().expect("utf-8 path");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "nofail-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
