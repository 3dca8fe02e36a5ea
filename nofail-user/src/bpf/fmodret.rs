// SPDX-License-Identifier: MIT OR Apache-2.0
//! The fmod_ret half of `--inject-mode fmod-ret`. aya 0.14 cannot load
//! BPF_MODIFY_RETURN programs, and the program needed is tiny: take the
//! verdict the fentry decision program (nofail-ebpf/src/inject.rs) left
//! for this task in `VERDICT`, delete it, return it (0 lets the original
//! `should_*` function run). It is assembled here, loaded with
//! BPF_PROG_LOAD against the function's BTF id and attached with
//! BPF_RAW_TRACEPOINT_OPEN; the link is a file descriptor, so it goes away
//! with nofail, kill -9 included.

use nofail_common::map_names;
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};

use anyhow::{Context as _, Result, bail};
use aya::{Ebpf, maps::MapData};

use crate::{
    bpf::{
        asm::{self, Insn, call, insn, ld_map},
        sys::{bpf_attach_type, bpf_cmd, bpf_fd, bpf_prog_type, zeroed_attr},
    },
    kernel::btf::KernelBtf,
};

const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_MAP_DELETE_ELEM: i32 = 3;
const HELPER_GET_CURRENT_PID_TGID: i32 = 14;

/// The program, for `VERDICT` at `map_fd`.
fn program(map_fd: i32) -> Vec<Insn> {
    let mut p = vec![
        call(HELPER_GET_CURRENT_PID_TGID),
        insn(0x63, 10, 0, -4, 0), // *(u32 *)(r10 - 4) = r0: the tid
    ];
    p.extend(ld_map(1, map_fd));
    p.extend([
        insn(0xbf, 2, 10, 0, 0), // r2 = r10
        insn(0x07, 2, 0, 0, -4), // r2 += -4
        call(HELPER_MAP_LOOKUP_ELEM),
        insn(0x15, 0, 0, 8, 0), // if r0 == 0 goto +8 (return 0)
        insn(0x79, 6, 0, 0, 0), // r6 = *(u64 *)(r0 + 0): the verdict
    ]);
    p.extend(ld_map(1, map_fd));
    p.extend([
        insn(0xbf, 2, 10, 0, 0), // r2 = r10
        insn(0x07, 2, 0, 0, -4), // r2 += -4
        call(HELPER_MAP_DELETE_ELEM),
        insn(0xbf, 0, 6, 0, 0), // r0 = r6
        insn(0x95, 0, 0, 0, 0), // exit
        insn(0xb7, 0, 0, 0, 0), // r0 = 0
        insn(0x95, 0, 0, 0, 0), // exit
    ]);
    p
}

/// An attached fmod_ret program; dropping it detaches.
pub struct FmodRet {
    _prog: OwnedFd,
    _link: OwnedFd,
}

/// Loads the verdict program for `function` and attaches it.
pub fn attach(ebpf: &Ebpf, function: &str, name: &str) -> Result<FmodRet> {
    let btf = KernelBtf::from_sys_fs().context("fmod_ret needs the kernel's BTF")?;
    let btf_id = *btf
        .funcs
        .get(function)
        .with_context(|| format!("{function} is not in the kernel's BTF"))?;
    let verdict: &MapData = match ebpf
        .map(map_names::VERDICT)
        .context("VERDICT map missing")?
    {
        aya::maps::Map::HashMap(data) => data,
        _ => bail!("VERDICT is not a hash map"),
    };
    let insns = program(verdict.fd().as_fd().as_raw_fd());
    let prog = asm::load(
        &asm::Load {
            prog_type: bpf_prog_type::BPF_PROG_TYPE_TRACING,
            expected_attach_type: Some((bpf_attach_type::BPF_MODIFY_RETURN, btf_id)),
            insns: &insns,
            name,
            log_size: 64 * 1024,
        },
        &format!("an fmod_ret program on {function}"),
    )?;
    // BPF_RAW_TRACEPOINT_OPEN with no name attaches a tracing program to
    // the BTF function it was loaded for.
    let mut open = zeroed_attr();
    open.raw_tracepoint.prog_fd = prog.as_raw_fd() as u32;
    let link = bpf_fd(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &mut open)
        .with_context(|| format!("cannot attach fmod_ret to {function}"))?;
    Ok(FmodRet {
        _prog: prog,
        _link: link,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::asm::BPF_PSEUDO_MAP_FD;

    #[test]
    fn jump_lands_on_return_zero() {
        let p = program(7);
        let jeq = p.iter().position(|i| i.code == 0x15).unwrap();
        let target = jeq + 1 + p[jeq].off as usize;
        assert_eq!(p[target], insn(0xb7, 0, 0, 0, 0));
        assert_eq!(p[target + 1].code, 0x95);
        // Both map loads carry the map fd as a pseudo map reference.
        let loads: Vec<&Insn> = p.iter().filter(|i| i.code == 0x18).collect();
        assert_eq!(loads.len(), 2);
        assert!(
            loads
                .iter()
                .all(|i| i.imm == 7 && i.regs >> 4 == BPF_PSEUDO_MAP_FD)
        );
    }
}
