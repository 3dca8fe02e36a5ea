// SPDX-License-Identifier: MIT OR Apache-2.0
//! The bpf(2) system call, for the few commands nofail issues itself
//! (aya 0.14 does not wrap them): program info (progstats.rs), fmod_ret
//! load and attach (fmodret.rs), the own-process self-check (inject.rs).

use std::os::fd::{FromRawFd as _, OwnedFd};

/// `bpf(cmd, attr, sizeof attr)`; the kernel may write into `attr`.
pub fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

/// A command returning a new file descriptor (a program, map or link).
pub fn bpf_fd<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
