// SPDX-License-Identifier: MIT OR Apache-2.0
//! `cargo xtask deb`: the Debian package of the static binary:
//! `/usr/sbin/nofail`, a man page per subcommand, bash/zsh/fish
//! completions, `nofail.service`, the dashboard and alert rules. Then it
//! is installed into a directory (`dpkg-deb -x`) and what landed there is
//! checked: the binary runs, the man pages render, the completions parse,
//! `systemd-analyze verify` accepts the unit, alone and with its shipped
//! (disabled) drop-in, with nothing to say, and `systemd-analyze security`
//! rates both no worse than they were hardened to.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{
    arch::Arch,
    util::{self, workspace_root},
};

/// `systemd-analyze security`'s overall exposure of `nofail.service`, in
/// tenths (2.3): the check fails if the unit loses some of its hardening.
const EXPOSURE: u32 = 23;
/// The same with `no-cap-sys-admin.conf` applied (2.1).
const EXPOSURE_NO_CAP_SYS_ADMIN: u32 = 21;

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to.parent().context("no parent")?)?;
    std::fs::copy(from, to)
        .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// The x86-64 package.
pub fn build() -> Result<PathBuf> {
    build_for(Arch::X86_64)
}

pub fn build_for(arch: Arch) -> Result<PathBuf> {
    let root = workspace_root();
    let bin = crate::dist::build_for(arch)?;
    let version = bin
        .parent()
        .and_then(|d| d.file_name())
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("nofail-"))
        .context("dist directory name")?
        .to_string();
    let out = root.join("target/deb");
    let stage = out.join(format!("nofail_{version}_{}", arch.debian()));
    let _ = std::fs::remove_dir_all(&stage);
    copy(&bin, &stage.join("usr/sbin/nofail"))?;

    let generated = out.join("generated");
    let _ = std::fs::remove_dir_all(&generated);
    util::run(
        arch.command(&bin)
            .arg("generate-files")
            .arg("--out")
            .arg(&generated),
    )?;
    let man = stage.join("usr/share/man/man8");
    std::fs::create_dir_all(&man)?;
    for page in std::fs::read_dir(generated.join("man8"))? {
        let page = page?.path();
        let dest = man.join(page.file_name().context("name")?);
        copy(&page, &dest)?;
        util::run(Command::new("gzip").args(["-9n"]).arg(&dest))?;
    }
    let completions = generated.join("completions");
    for (file, dest) in [
        (
            "nofail.bash",
            "usr/share/bash-completion/completions/nofail",
        ),
        ("_nofail", "usr/share/zsh/vendor-completions/_nofail"),
        (
            "nofail.fish",
            "usr/share/fish/vendor_completions.d/nofail.fish",
        ),
    ] {
        copy(&completions.join(file), &stage.join(dest))?;
    }
    copy(
        &root.join("deploy/systemd/nofail.service"),
        &stage.join("lib/systemd/system/nofail.service"),
    )?;
    for (file, dest) in [
        (
            "deploy/grafana/nofail-dashboard.json",
            "usr/share/nofail/grafana/nofail-dashboard.json",
        ),
        (
            "deploy/prometheus/nofail-alerts.yml",
            "usr/share/nofail/prometheus/nofail-alerts.yml",
        ),
        // Disabled: systemd reads drop-ins under /etc or /lib/systemd, not
        // here; docs/install.md says how to enable it.
        (
            "deploy/systemd/nofail.service.d/no-cap-sys-admin.conf",
            "usr/share/nofail/systemd/no-cap-sys-admin.conf",
        ),
        ("README.md", "usr/share/doc/nofail/README.md"),
    ] {
        copy(&root.join(file), &stage.join(dest))?;
    }
    std::fs::write(
        stage.join("usr/share/doc/nofail/copyright"),
        copyright(&root)?,
    )?;
    std::fs::create_dir_all(stage.join("DEBIAN"))?;
    std::fs::write(
        stage.join("DEBIAN/control"),
        format!(
            "Package: nofail\nVersion: {version}\nArchitecture: {}\nMaintainer: nofail developers <nofail@localhost>\nSection: admin\nPriority: optional\nDescription: see and break the kernel's never-fail allocation retry loops\n nofail counts vmalloc's __GFP_NOFAIL retry loops and open-coded retry\n loops per caller with eBPF, exports them to Prometheus (nofail serve,\n nofail.service) and injects failures scoped to chosen callers.\n One static binary; needs a kernel with BPF and BTF.\n",
            arch.debian()
        ),
    )?;
    for (script, text) in MAINTAINER_SCRIPTS {
        let path = stage.join("DEBIAN").join(script);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let deb = out.join(format!("nofail_{version}_{}.deb", arch.debian()));
    util::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    check(&deb, arch)?;
    println!("xtask deb: {}", deb.display());
    Ok(deb)
}

/// What dh_installsystemd would write for a unit the admin enables by
/// hand (the package does not start nofail on install: attaching to the
/// kernel is the admin's decision). `dpkg -r` of a running service stops
/// it first (the binary is gone after), then systemd forgets the unit;
/// `dpkg -P` also drops the admin's enablement.
const MAINTAINER_SCRIPTS: [(&str, &str); 2] = [
    (
        "prerm",
        "#!/bin/sh\nset -e\nif [ \"$1\" = remove ] && [ -d /run/systemd/system ]; then\n\tsystemctl stop nofail.service || true\nfi\n",
    ),
    (
        "postrm",
        "#!/bin/sh\nset -e\nif [ -d /run/systemd/system ]; then\n\tsystemctl daemon-reload || true\nfi\nif [ \"$1\" = purge ]; then\n\trm -f /etc/systemd/system/multi-user.target.wants/nofail.service\nfi\n",
    ),
];

/// Debian's machine-readable copyright: the crate licenses, in full.
fn copyright(root: &Path) -> Result<String> {
    let mut text = String::from(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: nofail\n\nFiles: *\nCopyright: nofail developers\nLicense: MIT or Apache-2.0 (userspace); MIT or GPL-2.0-only (the embedded eBPF programs)\n",
    );
    for f in ["LICENSE-MIT", "LICENSE-APACHE", "LICENSE-GPL-2.0"] {
        text += &format!("\n{f}:\n");
        for line in std::fs::read_to_string(root.join(f))?.lines() {
            text += &format!(" {}\n", if line.is_empty() { "." } else { line });
        }
    }
    Ok(text)
}

/// Installs `deb` into a fresh directory and checks what landed there.
fn check(deb: &Path, arch: Arch) -> Result<()> {
    let dir = deb.with_extension("installed");
    let _ = std::fs::remove_dir_all(&dir);
    util::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&dir))?;
    let bin = dir.join("usr/sbin/nofail");
    let v = arch.command(&bin).arg("--version").output()?;
    let field = util::output(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(deb)
            .arg("Architecture"),
    )?;
    ensure!(
        field.trim() == arch.debian(),
        "the package says Architecture: {}, not {}",
        field.trim(),
        arch.debian()
    );
    ensure!(v.status.success(), "the installed nofail --version failed");
    let pages: Vec<PathBuf> = std::fs::read_dir(dir.join("usr/share/man/man8"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    for sub in ["", "-trace", "-inject", "-doctor", "-report", "-serve"] {
        let page = dir.join(format!("usr/share/man/man8/nofail{sub}.8.gz"));
        ensure!(pages.contains(&page), "no man page {}", page.display());
        let shown = Command::new("man")
            .arg("-l")
            .arg(&page)
            .env("MANWIDTH", "80")
            .output()?;
        ensure!(
            shown.status.success() && String::from_utf8_lossy(&shown.stdout).contains("SYNOPSIS"),
            "man -l {} shows no SYNOPSIS",
            page.display()
        );
    }
    let bash = dir.join("usr/share/bash-completion/completions/nofail");
    util::run(Command::new("bash").arg("-n").arg(&bash))?;
    for f in [
        "usr/share/zsh/vendor-completions/_nofail",
        "usr/share/fish/vendor_completions.d/nofail.fish",
    ] {
        let text = std::fs::read_to_string(dir.join(f))?;
        ensure!(
            text.contains("serve") && text.contains("ready-file"),
            "{f} lacks the subcommands"
        );
    }
    // The unit as installed, its ExecStart pointing into the directory.
    let unit = std::fs::read_to_string(dir.join("lib/systemd/system/nofail.service"))?;
    let probe = dir.join("nofail.service");
    let unit = unit.replace("/usr/sbin/nofail", &bin.display().to_string());
    std::fs::write(&probe, &unit)?;
    verify(&probe)?;
    let alone = security(&probe, EXPOSURE)?;
    ensure!(
        alone.sys_admin,
        "nofail.service has no CAP_SYS_ADMIN: no-cap-sys-admin.conf has nothing to drop"
    );
    // The drop-in, enabled as docs/install.md says: systemd-analyze reads
    // nofail.service.d/ beside the unit, offline too.
    let with = dir.join("with-drop-in");
    std::fs::create_dir_all(&with)?;
    std::fs::write(with.join("nofail.service"), &unit)?;
    copy(
        &dir.join("usr/share/nofail/systemd/no-cap-sys-admin.conf"),
        &with.join("nofail.service.d/no-cap-sys-admin.conf"),
    )?;
    let probe = with.join("nofail.service");
    verify(&probe)?;
    let dropped = security(&probe, EXPOSURE_NO_CAP_SYS_ADMIN)?;
    ensure!(
        !dropped.sys_admin,
        "nofail.service with no-cap-sys-admin.conf still has CAP_SYS_ADMIN"
    );
    println!("xtask deb: nofail.service: {}", alone.score);
    println!(
        "xtask deb: nofail.service with no-cap-sys-admin.conf: {}",
        dropped.score
    );
    println!(
        "xtask deb: installed into {}: nofail, {} man pages, 3 completions, nofail.service verified, alone and with its drop-in",
        dir.display(),
        pages.len()
    );
    Ok(())
}

/// `systemd-analyze verify` has nothing to say about `unit` (and the
/// drop-ins in `unit.d/` beside it).
fn verify(unit: &Path) -> Result<()> {
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
        .context("systemd-analyze (package systemd)")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    if !verify.status.success() || !said.trim().is_empty() {
        bail!("systemd-analyze verify {}: {said}", unit.display());
    }
    Ok(())
}

/// What `systemd-analyze security` says of a unit file.
struct Security {
    /// "→ Overall exposure level for nofail.service: 2.3 OK 🙂"
    score: String,
    /// Whether its bounding set holds CAP_SYS_ADMIN.
    sys_admin: bool,
}

/// `systemd-analyze security --offline=true` of `unit`, failing when its
/// overall exposure is above `threshold` tenths.
fn security(unit: &Path, threshold: u32) -> Result<Security> {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(format!("--threshold={threshold}"))
        .arg(unit)
        .output()
        .context("systemd-analyze (package systemd)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let score = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .map(|l| l.trim().to_string())
        .with_context(|| {
            format!(
                "systemd-analyze security {}: no overall exposure: {}",
                unit.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    if !out.status.success() {
        bail!(
            "systemd-analyze security {}: {score}, above {}.{} (a hardening option lost?):\n{text}",
            unit.display(),
            threshold / 10,
            threshold % 10
        );
    }
    let row = text
        .lines()
        .find(|l| l.contains("CapabilityBoundingSet=~CAP_SYS_ADMIN"))
        .context("systemd-analyze security: no CAP_SYS_ADMIN row")?;
    Ok(Security {
        score,
        sys_admin: row.trim_start().starts_with('✗'),
    })
}
