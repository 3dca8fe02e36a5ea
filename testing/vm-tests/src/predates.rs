// SPDX-License-Identifier: MIT OR Apache-2.0
//! Kernels from before vmalloc's `__GFP_NOFAIL` loop (5.17, commit
//! 9376130c390a): bullseye's 5.10 is the one the archive still serves.
//! Its verifier also lacks `bpf_loop` (5.17) and BPF atomics (5.12), and it
//! has no vmalloc tracepoints (6.3), so nofail's object cannot load there.
//! Every command that touches the kernel must say so in one line and load
//! nothing.

use anyhow::{Result, ensure};

use crate::harness::{self, Ctx};

/// The commands a user would try first, each with the flags it needs to
/// get as far as loading.
const COMMANDS: &[&[&str]] = &[
    &["doctor"],
    &["trace", "--duration", "1s"],
    &["trace", "--mode", "sentinel", "--duration", "1s"],
    &["trace", "--mode", "tracepoint", "--duration", "1s"],
    &["inject", "--stage", "area", "--duration", "1s"],
    &["serve", "--listen", "127.0.0.1:0"],
];

/// What the one line must name: the loop's release and each missing
/// BPF feature with its release.
const NEEDLES: &[&str] = &[
    "predates",
    "5.17",
    "bpf_loop",
    "BPF atomics",
    "vmalloc tracepoints",
];

pub fn refused_on_older_kernel(ctx: &Ctx) -> Result<()> {
    for args in COMMANDS {
        let (out, (maps, progs)) = harness::loaded_while(|| {
            Ok(std::process::Command::new(&ctx.nofail)
                .args(*args)
                .output()?)
        })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let what = args.join(" ");
        ensure!(
            out.status.code() == Some(1),
            "nofail {what}: exit {:?}, want 1: {stderr}",
            out.status.code()
        );
        ensure!(
            stderr.lines().count() == 1,
            "nofail {what}: not one line: {stderr}"
        );
        for needle in NEEDLES {
            ensure!(
                stderr.contains(needle),
                "nofail {what}: no {needle:?} in {stderr}"
            );
        }
        ensure!(
            maps == 0 && progs == 0,
            "nofail {what}: {maps} maps and {progs} programs loaded before refusing"
        );
    }
    Ok(())
}
