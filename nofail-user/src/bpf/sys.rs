// SPDX-License-Identifier: MIT OR Apache-2.0
//! The bpf(2) system call, for the few commands nofail issues itself
//! (aya 0.14 does not wrap them): program info (progstats.rs), fmod_ret
//! load and attach (fmodret.rs), the own-process self-check (cmd/inject.rs).
//! Attributes and info records are the kernel's own layouts, from the
//! bindings aya-obj generates from uapi/linux/bpf.h, never offsets by hand.

use std::os::fd::{FromRawFd as _, OwnedFd};

pub use aya_obj::generated::{
    bpf_attach_type, bpf_attr, bpf_cmd, bpf_map_type, bpf_prog_info, bpf_prog_type,
};

/// An all-zero attribute union: the kernel requires unused bytes zero.
pub fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is plain integers; all-zero is its empty value.
    unsafe { std::mem::zeroed() }
}

/// `bpf(cmd, attr, sizeof attr)`; the kernel may write into `attr`.
pub fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> std::io::Result<i64> {
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

/// A command returning a new file descriptor (a program, map or link).
pub fn bpf_fd(cmd: bpf_cmd, attr: &mut bpf_attr) -> std::io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_OBJ_GET_INFO_BY_FD` of a program: the kernel fills what it knows
/// of `bpf_prog_info` (older kernels a prefix; the rest stays zero).
pub fn prog_info(fd: i32) -> std::io::Result<bpf_prog_info> {
    // SAFETY: plain integers; all-zero is valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = zeroed_attr();
    attr.info.bpf_fd = fd as u32;
    attr.info.info_len = std::mem::size_of::<bpf_prog_info>() as u32;
    attr.info.info = &mut info as *mut bpf_prog_info as u64;
    bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::*;

    /// The fields nofail reads sit where uapi/linux/bpf.h puts them (the
    /// bindings are the header's; this pins them against a regeneration
    /// that would move them).
    #[test]
    fn layouts_match_the_uapi_header() {
        assert_eq!(offset_of!(bpf_prog_info, run_time_ns), 192);
        assert_eq!(offset_of!(bpf_prog_info, run_cnt), 200);
        assert_eq!(offset_of!(bpf_prog_info, recursion_misses), 208);
        assert_eq!(bpf_cmd::BPF_PROG_LOAD as u32, 5);
        assert_eq!(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as u32, 15);
        assert_eq!(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN as u32, 17);
    }
}
