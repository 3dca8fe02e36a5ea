// SPDX-License-Identifier: MIT OR Apache-2.0
//! `init=systemd`: systemd as PID 1 over a writable root, so that a test
//! can `dpkg -i` and `systemctl enable --now` as a host would.
//!
//! The root is an overlay: the host's root (9p, read-only) below, a tmpfs
//! above, so the guest writes where a host would and the host's files are
//! never touched. PID 1 (this binary) mounts it, moves it onto `/` as
//! switch_root(8) does, writes two units and the masks below into its
//! `/etc`, and execs systemd, which boots `multi-user.target`. After it,
//! `nofail-vm-command.service` runs `vm-init run`: the command, its
//! START and EXIT lines on the console, then power-off, as without
//! systemd. `nofail-vm-heartbeat.service` beats the heartbeat from early
//! boot (the PID 1 thread that did it is gone with the exec).

use std::{fs, os::unix::fs::symlink};

use crate::{Config, mount};

/// Where the runner finds its configuration in the guest.
pub const CONFIG: &str = "/nofail-vm/config";
/// The binary the units run (a copy of this one).
const SELF: &str = "/nofail-vm/vm-init";

const NEWROOT: &str = "/newroot";

/// Units masked (linked to /dev/null), each for a reason: what a test of
/// the packaged service does not need and the boot would wait for.
pub const MASKED: &[(&str, &str)] = &[
    (
        "getty.target",
        "no logins: a getty on ttyS0 would take the console from the command",
    ),
    (
        "systemd-logind.service",
        "no sessions (systemctl and journalctl talk to PID 1 and journald directly)",
    ),
    ("dbus.service", "only logind and session tools need the bus"),
    ("dbus.socket", "as dbus.service"),
    (
        "systemd-firstboot.service",
        "it would prompt on the console (the guest gets a machine id)",
    ),
    (
        "proc-sys-fs-binfmt_misc.automount",
        "the test kernel has neither autofs nor binfmt_misc",
    ),
    ("systemd-binfmt.service", "as above"),
    (
        "sys-fs-fuse-connections.mount",
        "the test kernel has no FUSE",
    ),
    ("sys-kernel-config.mount", "the test kernel has no configfs"),
    (
        "systemd-journal-catalog-update.service",
        "rebuilds the message catalog: seconds under TCG, for nothing",
    ),
    (
        "systemd-tmpfiles-clean.timer",
        "cleans /tmp on a schedule: nothing lives that long",
    ),
];

/// The console the host reads (xtask/src/vm.rs gives the kernel the same).
#[cfg(target_arch = "x86_64")]
macro_rules! console {
    () => {
        "/dev/ttyS0"
    };
}
#[cfg(target_arch = "aarch64")]
macro_rules! console {
    () => {
        "/dev/ttyAMA0"
    };
}

/// The runner: after multi-user.target (as systemd-update-utmp-runlevel
/// is), with the console for its output, never timed out by systemd, and
/// never stopped when the OOM killer takes one of its processes (the
/// default OOMPolicy=stop did, when the pressure scenario's stress-ng
/// hog was killed: the guest then waited out its timeout).
const COMMAND_UNIT: &str = concat!(
    "[Unit]
Description=nofail VM: the command
After=multi-user.target

[Service]
Type=simple
ExecStart=/nofail-vm/vm-init run
StandardInput=null
StandardOutput=tty
StandardError=tty
TTYPath=",
    console!(),
    "
TTYReset=no
TTYVHangup=no
TimeoutStartSec=infinity
OOMPolicy=continue
"
);

const HEARTBEAT_UNIT: &str = "[Unit]
Description=nofail VM: heartbeat (ttyS1, or hvc0 on arm64)
DefaultDependencies=no

[Service]
ExecStart=/nofail-vm/vm-init heartbeat
";

/// Mounts the overlay root, writes the units, execs systemd. Returns only
/// on failure, with what failed.
pub fn boot(cfg: &Config) -> String {
    match prepare(cfg) {
        Ok(()) => exec_systemd(),
        Err(e) => e,
    }
}

fn prepare(cfg: &Config) -> Result<(), String> {
    crate::load_modules(cfg)?;
    crate::mount_host_root("/lower")?;
    mount("tmpfs", "/rw", "tmpfs", 0, "mode=755")?;
    for d in ["/rw/upper", "/rw/work"] {
        fs::create_dir_all(d).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    mount(
        "overlay",
        NEWROOT,
        "overlay",
        0,
        "lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work",
    )?;
    crate::mount_pseudo(NEWROOT)?;
    // An empty /tmp, as the plain guest has: Debian's tmp.conf (`D /tmp`)
    // would otherwise have systemd-tmpfiles delete the host's /tmp through
    // the overlay at every boot (8.6 s of the boot with 412 MB there).
    mount(
        "tmpfs",
        &format!("{NEWROOT}/tmp"),
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=1777",
    )?;
    crate::mount_host_cwd(NEWROOT, &cfg.cwd)?;
    write_units()?;
    let at = |p: &str| format!("{NEWROOT}{p}");
    fs::create_dir_all(at("/nofail-vm")).map_err(|e| format!("mkdir /nofail-vm: {e}"))?;
    fs::copy("/init", at(SELF)).map_err(|e| format!("copy vm-init: {e}"))?;
    fs::copy("/config", at(CONFIG)).map_err(|e| format!("copy config: {e}"))?;
    // A machine id of its own: without one systemd takes the boot for a
    // first boot and applies every preset.
    fs::write(at("/etc/machine-id"), format!("{:032x}\n", random()))
        .map_err(|e| format!("write machine-id: {e}"))?;
    switch_root()
}

/// The units and masks in the overlay's /etc/systemd/system, and the
/// host's own enablements taken away: the guest boots Debian's static
/// units and these, whatever the host machine has enabled.
fn write_units() -> Result<(), String> {
    let etc = format!("{NEWROOT}/etc/systemd/system");
    let err = |what: &str, e: std::io::Error| format!("{what}: {e}");
    if let Ok(entries) = fs::read_dir(&etc) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && path.to_string_lossy().ends_with(".wants") {
                println!(
                    "vm-init: not started: what the host enabled in {}",
                    path.display().to_string().trim_start_matches(NEWROOT)
                );
                fs::remove_dir_all(&path).map_err(|e| err(&path.to_string_lossy(), e))?;
            }
        }
    }
    fs::create_dir_all(format!("{etc}/multi-user.target.wants"))
        .map_err(|e| err("mkdir wants", e))?;
    fs::create_dir_all(format!("{etc}/sysinit.target.wants")).map_err(|e| err("mkdir wants", e))?;
    for (name, text, target) in [
        ("nofail-vm-command.service", COMMAND_UNIT, "multi-user"),
        ("nofail-vm-heartbeat.service", HEARTBEAT_UNIT, "sysinit"),
    ] {
        fs::write(format!("{etc}/{name}"), text).map_err(|e| err(name, e))?;
        symlink(
            format!("/etc/systemd/system/{name}"),
            format!("{etc}/{target}.target.wants/{name}"),
        )
        .map_err(|e| err(name, e))?;
    }
    for (unit, why) in MASKED {
        println!("vm-init: masked {unit}: {why}");
        let link = format!("{etc}/{unit}");
        let _ = fs::remove_file(&link);
        symlink("/dev/null", &link).map_err(|e| err(unit, e))?;
    }
    Ok(())
}

/// switch_root(8): the new root moved onto `/`, then chroot into it.
fn switch_root() -> Result<(), String> {
    std::env::set_current_dir(NEWROOT).map_err(|e| format!("chdir {NEWROOT}: {e}"))?;
    mount(".", "/", "", libc::MS_MOVE, "")?;
    let dot = crate::cstr(".");
    if unsafe { libc::chroot(dot.as_ptr()) } != 0 {
        return Err(format!("chroot: {}", std::io::Error::last_os_error()));
    }
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))
}

fn exec_systemd() -> String {
    let path = crate::cstr("/lib/systemd/systemd");
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    format!(
        "exec /lib/systemd/systemd: {}",
        std::io::Error::last_os_error()
    )
}

fn random() -> u128 {
    let mut b = [0u8; 16];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    u128::from_le_bytes(b) | 1
}
