// SPDX-License-Identifier: MIT OR Apache-2.0
//! The root filesystem a guest runs its command in. An x86-64 guest
//! shares the host's own root (read-only over 9p); a guest of another
//! architecture cannot run the host's binaries, so it gets a root made of
//! Debian packages for its architecture, unpacked (no maintainer scripts
//! run) into the nofail cache, once per package list.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::{
    apt::Apt,
    arch::Arch,
    kernels::Kernel,
    util::{self, cache_dir, sha256_hex},
};

/// What the scenarios run in the guest besides nofail and
/// the test binaries (both static, from the checkout): a shell and the
/// basic tools (busybox), mount and losetup, mkfs for XFS and ext4,
/// promtool (in Debian's prometheus) for the exposition checks, and
/// systemd, dpkg and curl for the package's scenarios (`--systemd`
/// guests: README.md's commands as written), and dash as /bin/sh (busybox's
/// shell runs its own applets first: its `dpkg` has no `-L`).
const PACKAGES: &[&str] = &[
    "busybox-static",
    "util-linux",
    "mount",
    "xfsprogs",
    "e2fsprogs",
    "prometheus",
    "systemd",
    "dpkg",
    "curl",
    "dash",
    // dpkg checks for ldconfig on PATH before it installs anything.
    "libc-bin",
    // The arm64 test kernel's scenarios: insmod of the trigger module,
    // stress-ng for the pressure scenario (vm-tests pressure.rs), bpftool
    // for a map created by another program (inject_bpf_map_error_to_userspace),
    // bpftrace for the benchmark's comparison (cargo xtask bench --arch arm64).
    "kmod",
    "stress-ng",
    "bpftool",
    "bpftrace",
];

/// Directories the guest init mounts on (it cannot create them: the root
/// is read-only).
const MOUNT_POINTS: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "tmp",
    "run",
    "root",
    "sys/kernel/debug",
    "sys/kernel/tracing",
    "sys/fs/bpf",
    "sys/fs/cgroup",
];

/// The guest root for `kernel`'s architecture, with `cwd` (the host
/// directory mounted at the same path) present in it, and the kernel's
/// build configuration at /boot/config-<release>, where nofail looks.
pub fn ensure(kernel: &Kernel, cwd: &Path) -> Result<PathBuf> {
    let arch = kernel.arch;
    if arch == Arch::X86_64 {
        return Ok(PathBuf::from("/"));
    }
    let key = sha256_hex(PACKAGES.join(" ").as_bytes());
    let dir = cache_dir()
        .join("roots")
        .join(format!("{}-{}", arch.debian(), &key[..12]));
    let root = dir.join("root");
    // Two lanes boot at once: one makes the root, the other waits for it.
    std::fs::create_dir_all(cache_dir().join("roots"))?;
    let _lock = crate::variant::Lock::take(&cache_dir().join("roots/.lock"))?;
    if !dir.join(".done").exists() {
        eprintln!(
            "xtask: making the {} guest root from Debian's packages: {}",
            arch.debian(),
            PACKAGES.join(" ")
        );
        let _ = std::fs::remove_dir_all(&dir);
        let debs = Apt::bookworm_for(arch)?.download_closure(PACKAGES, &dir.join("debs"))?;
        for deb in &debs {
            util::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
        }
        std::fs::remove_dir_all(dir.join("debs"))?;
        busybox_applets(arch, &root)?;
        let sh = root.join("bin/sh");
        let _ = std::fs::remove_file(&sh);
        std::os::unix::fs::symlink("dash", &sh)?;
        std::fs::write(dir.join(".done"), format!("{} packages\n", debs.len()))?;
    }
    for d in MOUNT_POINTS {
        std::fs::create_dir_all(root.join(d))?;
    }
    // dpkg's database, empty: nothing was installed by dpkg (dpkg -i of
    // nofail's package needs it).
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    let status = root.join("var/lib/dpkg/status");
    if !status.exists() {
        std::fs::write(&status, "")?;
    }
    accounts(&root)?;
    // README.md's commands start with `sudo`; the guest runs them as root
    // already, and Debian's sudo would want the PAM configuration its
    // maintainer scripts write: a sudo that runs its command.
    let sudo = root.join("usr/local/bin/sudo");
    std::fs::create_dir_all(sudo.parent().expect("has a parent"))?;
    std::fs::write(
        &sudo,
        "#!/bin/sh\n# nofail guest root (xtask/src/guestroot.rs): already root\nexec \"$@\"\n",
    )?;
    std::fs::set_permissions(&sudo, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    if let Some(config) = &kernel.config {
        std::fs::create_dir_all(root.join("boot"))?;
        std::fs::copy(config, root.join(format!("boot/config-{}", kernel.release)))?;
    }
    // The host's working directory is mounted there by the guest init.
    let inside = root.join(cwd.strip_prefix("/").unwrap_or(cwd));
    std::fs::create_dir_all(&inside)
        .with_context(|| format!("cannot make {} in the guest root", inside.display()))?;
    Ok(root)
}

/// The system accounts the packages' maintainer scripts would have made
/// (base-passwd's /etc/passwd and /etc/group, prometheus's user, which
/// owns its data directory): without them systemd cannot start
/// prometheus.service (`User=prometheus`: status 217/USER, seen on the
/// arm64 test kernel's alerts scenario). Written when absent.
const PROMETHEUS_ID: u32 = 990;

fn accounts(root: &Path) -> Result<()> {
    let passwd = root.join("etc/passwd");
    if !passwd.exists() {
        std::fs::write(
            &passwd,
            format!(
                "root:x:0:0:root:/root:/bin/sh
                 prometheus:x:{PROMETHEUS_ID}:{PROMETHEUS_ID}:Prometheus daemon:/var/lib/prometheus:/usr/sbin/nologin
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"
            ),
        )?;
    }
    let group = root.join("etc/group");
    if !group.exists() {
        std::fs::write(
            &group,
            format!(
                "root:x:0:
prometheus:x:{PROMETHEUS_ID}:
nogroup:x:65534:
"
            ),
        )?;
    }
    for dir in ["var/lib/prometheus", "var/lib/prometheus/metrics2"] {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir)?;
        std::os::unix::fs::chown(&dir, Some(PROMETHEUS_ID), Some(PROMETHEUS_ID))
            .with_context(|| format!("cannot give {} to prometheus", dir.display()))?;
    }
    Ok(())
}

/// `busybox --install -s`, done from the host: every applet the packages
/// do not provide themselves, as a link to /bin/busybox. The applet list
/// comes from the binary itself, run under qemu-user.
fn busybox_applets(arch: Arch, root: &Path) -> Result<()> {
    let busybox = root.join("bin/busybox");
    let out = arch.command(&busybox).arg("--list-full").output()?;
    anyhow::ensure!(out.status.success(), "busybox --list-full failed");
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let link = root.join(applet);
        let usr = root.join("usr").join(applet);
        if link.symlink_metadata().is_ok() || usr.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink("/bin/busybox", &link)?;
    }
    Ok(())
}
