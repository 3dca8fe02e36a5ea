// SPDX-License-Identifier: MIT OR Apache-2.0
//! The cgroup v2 nofail makes for a wrapped command (`--command-only`):
//! created below nofail's own cgroup, entered by the command before it
//! runs, removed when it is empty again. The kernel programs compare the
//! ancestor of each task's cgroup at this cgroup's level with its id
//! (bpf_get_current_ancestor_cgroup_id), so the command's descendants
//! count wherever below it they move.

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

/// A cgroup nofail created; removed on drop if no task is left in it.
#[derive(Debug)]
pub struct CommandCgroup {
    pub dir: PathBuf,
    /// The cgroup id: the directory's inode number on cgroup2
    /// (kernfs_node id, what cgroup_id() returns).
    pub id: u64,
    /// Levels below the cgroup2 root (the root is 0).
    pub level: u32,
    /// `<dir>/cgroup.procs` for the command to write itself into.
    procs: CString,
}

/// The cgroup2 mount point, from this process's mountinfo.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        // "36 25 0:31 / /sys/fs/cgroup rw,... - cgroup2 cgroup2 rw,..."
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// This process's cgroup v2 path ("0::/user.slice/..." in /proc/self/cgroup).
fn own_cgroup(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// Levels of a cgroup path below the root: "/" is 0, "/a/b" is 2.
fn level_of(path: &Path) -> u32 {
    path.components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .count() as u32
}

impl CommandCgroup {
    /// Creates `nofail-<pid>` below nofail's own cgroup (a child of a
    /// cgroup that holds processes may hold processes too: no controller
    /// is enabled for it).
    pub fn create() -> Result<Self> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        let mount = cgroup2_mount(&mountinfo).context(
            "--command-only needs cgroup v2, and no cgroup2 filesystem is mounted (mount -t cgroup2 none /sys/fs/cgroup)",
        )?;
        let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup")?;
        let own = own_cgroup(&proc_cgroup)
            .context("--command-only needs cgroup v2: /proc/self/cgroup has no v2 entry")?;
        let rel = Path::new(own.trim()).join(format!("nofail-{}", std::process::id()));
        let dir = mount.join(rel.strip_prefix("/").unwrap_or(&rel));
        if let Err(e) = std::fs::create_dir(&dir) {
            bail!(
                "--command-only: cannot create the cgroup {}: {e}",
                dir.display()
            );
        }
        let id = std::fs::metadata(&dir)?.ino();
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())?;
        Ok(Self {
            level: level_of(&rel),
            dir,
            id,
            procs,
        })
    }

    /// `<dir>/cgroup.procs`, for `enter`.
    pub fn procs(&self) -> CString {
        self.procs.clone()
    }

    /// Tasks still in the cgroup or below it (descendants the command
    /// left running).
    pub fn populated(&self) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.events"))
            .is_ok_and(|e| e.lines().any(|l| l == "populated 1"))
    }
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is
/// `procs`. Runs in the forked child before exec: only async-signal-safe
/// calls, no allocation.
pub fn enter(procs: &std::ffi::CStr) -> std::io::Result<()> {
    // SAFETY: a NUL-terminated path; plain syscalls on a fresh fd.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // "0": the writing process itself.
        let n = libc::write(fd, b"0".as_ptr().cast(), 1);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if n != 1 {
            return Err(err);
        }
    }
    Ok(())
}

impl Drop for CommandCgroup {
    fn drop(&mut self) {
        if self.populated() {
            eprintln!(
                "nofail: tasks the command left running are still in {}; it stays",
                self.dir.display()
            );
        } else if let Err(e) = std::fs::remove_dir(&self.dir) {
            eprintln!(
                "nofail: cannot remove the cgroup {}: {e}",
                self.dir.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_and_own_path() {
        let mi = "22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw\n\
                  30 22 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_mount(mi), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(
            cgroup2_mount("22 1 0:21 / /sys rw - sysfs sysfs rw\n"),
            None
        );
        // cgroup v1 hierarchies are not it.
        assert_eq!(
            cgroup2_mount("31 22 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"),
            None
        );
        assert_eq!(
            own_cgroup("1:name=systemd:/x\n0::/user.slice/session-1.scope\n"),
            Some("/user.slice/session-1.scope")
        );
        assert_eq!(own_cgroup("1:memory:/x\n"), None);
    }

    #[test]
    fn levels_count_from_the_root() {
        assert_eq!(level_of(Path::new("/")), 0);
        assert_eq!(level_of(Path::new("/nofail-1")), 1);
        assert_eq!(level_of(Path::new("/user.slice/s.scope/nofail-1")), 3);
    }
}
