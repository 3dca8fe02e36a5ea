// SPDX-License-Identifier: MIT OR Apache-2.0
//! The architectures nofail ships for: the Rust target of the static
//! binary, Debian's name, the ELF machine, and how this x86-64 host runs
//! a binary of it (natively, or through QEMU's user-mode emulator).

use std::process::Command;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    #[default]
    #[value(name = "x86_64", alias = "amd64")]
    X86_64,
    #[value(name = "arm64", alias = "aarch64")]
    Arm64,
}

impl Arch {
    /// The static (musl) build's Rust target.
    pub fn rust_target(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64-unknown-linux-musl",
            Self::Arm64 => "aarch64-unknown-linux-musl",
        }
    }

    /// Debian's architecture name (packages, `dpkg --print-architecture`).
    pub fn debian(self) -> &'static str {
        match self {
            Self::X86_64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }

    /// `uname -m`, as release tarballs are named.
    pub fn uname(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Arm64 => "aarch64",
        }
    }

    /// ELF `e_machine`: EM_X86_64, EM_AARCH64.
    pub fn elf_machine(self) -> u16 {
        match self {
            Self::X86_64 => 62,
            Self::Arm64 => 183,
        }
    }

    /// A command running `program` of this architecture here: itself on
    /// x86-64, under `qemu-aarch64` (Debian's qemu-user, installed by
    /// `cargo xtask setup`) for arm64.
    pub fn command(self, program: &std::path::Path) -> Command {
        match self {
            Self::X86_64 => Command::new(program),
            Self::Arm64 => {
                let mut c = Command::new("qemu-aarch64");
                c.arg(program);
                c
            }
        }
    }
}
