// SPDX-License-Identifier: MIT OR Apache-2.0
//! `cargo xtask fstests`: fstests on XFS in the test-kernel VM, untraced,
//! under `nofail trace` and under `nofail inject`, with the kernel's own
//! counts beside nofail's (docs/fstests.md).

pub mod build;
