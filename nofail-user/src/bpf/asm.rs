// SPDX-License-Identifier: MIT OR Apache-2.0
//! Hand-assembled BPF instructions, for the two tiny programs nofail
//! loads itself rather than from its object (aya 0.14 cannot load them):
//! the fmod_ret verdict program (fmodret.rs) and the kernel-text reader
//! (textread.rs).

/// `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

pub const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

pub const fn call(helper: i32) -> Insn {
    insn(0x85, 0, 0, 0, helper) // BPF_JMP | BPF_CALL
}

pub const BPF_PSEUDO_MAP_FD: u8 = 1;

/// `r{dst} = map` (BPF_LD | BPF_IMM | BPF_DW, two slots).
pub fn ld_map(dst: u8, map_fd: i32) -> [Insn; 2] {
    [
        insn(0x18, dst, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
    ]
}

/// The verifier's last words, for an error: its log's last non-empty line.
pub fn last_log_line(log: &[u8]) -> String {
    String::from_utf8_lossy(log)
        .trim_end_matches('\0')
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string()
}
