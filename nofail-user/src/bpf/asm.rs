// SPDX-License-Identifier: MIT OR Apache-2.0
//! Hand-assembled BPF instructions, for the two tiny programs nofail
//! loads itself rather than from its object (aya 0.14 cannot load them):
//! the fmod_ret verdict program (fmodret.rs) and the kernel-text reader
//! (textread.rs).

use std::os::fd::OwnedFd;

use crate::bpf::sys::{bpf_attach_type, bpf_cmd, bpf_fd, bpf_prog_type, zeroed_attr};

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

/// A hand-assembled program to load: its type, for tracing programs the
/// attach type and BTF id of the function, and a name (the first 15
/// bytes are kept: `BPF_OBJ_NAME_LEN`).
pub struct Load<'a> {
    pub prog_type: bpf_prog_type,
    pub expected_attach_type: Option<(bpf_attach_type, u32)>,
    pub insns: &'a [Insn],
    pub name: &'a str,
    /// Size of the verifier's log kept for the error.
    pub log_size: usize,
}

/// `BPF_PROG_LOAD` of `p` under the GPL (its helpers need it); a refusal
/// is `what` refused, with the errno and the verifier's last line.
pub fn load(p: &Load, what: &str) -> anyhow::Result<OwnedFd> {
    let license = c"GPL";
    let mut log = vec![0u8; p.log_size];
    let mut attr = zeroed_attr();
    // SAFETY: reading back a field of the all-zero union to fill it in.
    let mut load = unsafe { attr.__bindgen_anon_3 };
    load.prog_type = p.prog_type as u32;
    load.insn_cnt = p.insns.len() as u32;
    load.insns = p.insns.as_ptr() as u64;
    load.license = license.as_ptr() as u64;
    load.log_level = 1;
    load.log_size = log.len() as u32;
    load.log_buf = log.as_mut_ptr() as u64;
    if let Some((attach_type, btf_id)) = p.expected_attach_type {
        load.expected_attach_type = attach_type as u32;
        load.attach_btf_id = btf_id;
    }
    for (dst, src) in load.prog_name.iter_mut().zip(p.name.bytes().take(15)) {
        *dst = src as libc::c_char;
    }
    attr.__bindgen_anon_3 = load;
    bpf_fd(bpf_cmd::BPF_PROG_LOAD, &mut attr)
        .map_err(|e| anyhow::anyhow!("the kernel refused {what}: {e} {}", last_log_line(&log)))
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
