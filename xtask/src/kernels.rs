// SPDX-License-Identifier: MIT OR Apache-2.0
//! The kernel matrix: Debian's stock images and the test kernel built from
//! Debian's source with the injection options, cached outside the checkout.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    apt::{Apt, newest},
    arch::Arch,
    util::{self, cache_dir, sha256_hex, workspace_root},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelName {
    /// Bullseye's 5.10: before vmalloc's NOFAIL loop (5.17) and the BPF
    /// features nofail's object needs; the matrix checks the refusal.
    #[value(name = "debian-5.10")]
    Debian510,
    #[value(name = "debian-6.1")]
    Debian61,
    #[value(name = "debian-6.12")]
    Debian612,
    #[value(name = "debian-latest")]
    DebianLatest,
    Test,
    /// A kernel build tree a developer made (`--kernel DIR`,
    /// xtask/src/tree.rs): not a name on the command line.
    #[value(skip)]
    Own,
}

impl KernelName {
    /// Debian builds it for arm64 too: bookworm's 6.1 and 6.12, sid's
    /// newest (bullseye's 5.10 is the x86-64 matrix's refusal check).
    pub fn has_arm64(self) -> bool {
        matches!(self, Self::Debian61 | Self::Debian612 | Self::DebianLatest)
    }

    pub const ALL: [KernelName; 5] = [
        Self::Debian510,
        Self::Debian61,
        Self::Debian612,
        Self::DebianLatest,
        Self::Test,
    ];

    /// A kernel from before vmalloc's `__GFP_NOFAIL` loop (5.17): the VM
    /// scenarios there are nofail's refusal, nothing else.
    pub fn predates_nofail(self) -> bool {
        self == Self::Debian510
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debian510 => "debian-5.10",
            Self::Debian61 => "debian-6.1",
            Self::Debian612 => "debian-6.12",
            Self::DebianLatest => "debian-latest",
            Self::Test => "test",
            Self::Own => "own",
        }
    }

    /// The scenarios run with the trigger module, built against the
    /// kernel's tree: the test kernel, its variants and a developer's tree.
    pub fn has_trigger(self) -> bool {
        matches!(self, Self::Test | Self::Own)
    }
}

/// What `--kernel` names: a kernel of the matrix, the test kernel with
/// a patch applied (`test+FILE`), built incrementally from the test
/// kernel's tree (xtask/src/variant.rs), or a kernel build tree a
/// developer made (`DIR`, name `Own`: xtask/src/tree.rs).
///
/// A value is a kernel name, or a name, '+' and a patch file, when what
/// comes before its first '+' is a kernel name; otherwise it is a
/// directory if it holds a '/' (`./linux`, `/src/linux/`, `~/linux`).
/// A bare word that is no kernel name is an error, never a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSpec {
    pub name: KernelName,
    pub patch: Option<PathBuf>,
    /// The build tree of an `Own` kernel.
    pub tree: Option<PathBuf>,
    /// The guest's architecture (`--arch`; x86-64 unless given).
    pub arch: Arch,
}

impl KernelSpec {
    pub fn plain(name: KernelName) -> Self {
        Self {
            name,
            patch: None,
            tree: None,
            arch: Arch::X86_64,
        }
    }

    /// The test kernel with `patch` (`test+FILE`).
    pub fn patched(patch: PathBuf) -> Self {
        Self {
            patch: Some(patch),
            ..Self::plain(KernelName::Test)
        }
    }

    /// A kernel build tree (`--kernel DIR`).
    pub fn tree(dir: PathBuf) -> Self {
        Self {
            tree: Some(dir),
            ..Self::plain(KernelName::Own)
        }
    }
}

impl std::str::FromStr for KernelSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        use clap::ValueEnum as _;
        let (name, patch) = match s.split_once('+') {
            Some((name, patch)) => (name, Some(patch)),
            None => (s, None),
        };
        let name = match KernelName::from_str(name, false) {
            Ok(name) => name,
            Err(_) if s.contains('/') => return Ok(Self::tree(PathBuf::from(s))),
            Err(_) => {
                return Err(format!(
                    "unknown kernel {name:?} (one of {}, test+PATCH_FILE, or a kernel build tree as a path with a '/': ./linux, /src/linux)",
                    KernelName::ALL.map(KernelName::as_str).join(", ")
                ));
            }
        };
        match patch {
            None => Ok(Self::plain(name)),
            Some("") => Err(format!("{s:?}: no patch file after '+'")),
            Some(_) if name != KernelName::Test => Err(format!(
                "{s:?}: patches apply to the test kernel only (test+PATCH_FILE)"
            )),
            Some(p) => Ok(Self::patched(PathBuf::from(p))),
        }
    }
}

impl std::fmt::Display for KernelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.tree, &self.patch) {
            (Some(dir), _) => write!(f, "{}", dir.display()),
            (None, None) => f.write_str(self.name.as_str()),
            (None, Some(p)) => write!(f, "{}+{}", self.name.as_str(), p.display()),
        }
    }
}

/// A bootable kernel.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub name: KernelName,
    /// What the kernel runs on: the QEMU machine, console and guest root
    /// follow it (xtask/src/vm.rs).
    pub arch: Arch,
    /// How results and messages name it: the kernel's name,
    /// `test+STEM` for a variant built with the patch file STEM.patch, or
    /// `own-BASENAME-HASH` for a developer's tree (xtask/src/tree.rs).
    pub label: String,
    /// The patch's file stem, for a variant of the test kernel (the VM
    /// scenarios are chosen by it).
    pub patch: Option<String>,
    /// e.g. 6.12.117+deb12-amd64
    pub release: String,
    pub image: PathBuf,
    /// `lib/modules/<release>` of a stock kernel (9p and virtio are modules).
    pub modules: Option<PathBuf>,
    /// Built source tree of the test kernel or a developer's tree (for
    /// out-of-tree modules).
    pub build_tree: Option<PathBuf>,
    /// The kernel's build configuration, as Debian ships it (the guest
    /// cannot see it otherwise: stock kernels have no /proc/config.gz).
    pub config: Option<PathBuf>,
}

pub fn ensure(name: KernelName) -> Result<Kernel> {
    ensure_for(name, Arch::X86_64)
}

/// `name` built for `arch`: Debian's arm64 kernels come from the same
/// archive (`APT::Architecture=arm64`).
pub fn ensure_for(name: KernelName, arch: Arch) -> Result<Kernel> {
    // The guest mounts a fresh tmpfs on /tmp, hiding anything kept there.
    if cache_dir().starts_with("/tmp") {
        bail!(
            "the nofail cache ({}) must not be under /tmp: guests see their own /tmp; set NOFAIL_CACHE elsewhere",
            cache_dir().display()
        );
    }
    match name {
        KernelName::Test => ensure_test_kernel(arch),
        KernelName::Own => bail!("a kernel build tree is named by its directory"),
        stock => ensure_stock(stock, arch),
    }
}

/// Resolves the package holding a stock kernel from the archive as it is now.
fn stock_package(name: KernelName, arch: Arch, apt: &Apt) -> Result<String> {
    let flavour = arch.debian();
    let image_dep = |meta: &str| -> Result<String> {
        apt.depends(meta)?
            .into_iter()
            .find(|d| {
                d.starts_with("linux-image-")
                    && d.chars().nth(12).is_some_and(|c| c.is_ascii_digit())
            })
            .with_context(|| format!("{meta} names no kernel image"))
    };
    match name {
        KernelName::Debian510 | KernelName::Debian61 | KernelName::DebianLatest => {
            image_dep(&format!("linux-image-{flavour}"))
        }
        KernelName::Debian612 => {
            // arm64's is the -unsigned package (the signed one is a
            // metapackage of it for secure boot).
            let suffix = match arch {
                Arch::X86_64 => format!("+deb12-{flavour}"),
                Arch::Arm64 => format!("+deb12-{flavour}-unsigned"),
            };
            let names = apt.pkgnames("linux-image-6.12.")?.into_iter().filter(|n| {
                n.strip_prefix("linux-image-6.12.")
                    .and_then(|r| r.strip_suffix(suffix.as_str()))
                    .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit()))
            });
            newest(names)
                .with_context(|| format!("bookworm-security offers no linux-image-6.12.*{suffix}"))
        }
        KernelName::Test | KernelName::Own => unreachable!(),
    }
}

fn ensure_stock(name: KernelName, arch: Arch) -> Result<Kernel> {
    let apt = match name {
        KernelName::DebianLatest => Apt::sid_for(arch)?,
        KernelName::Debian510 => Apt::bullseye_for(arch)?,
        _ => Apt::bookworm_for(arch)?,
    };
    let image_pkg = stock_package(name, arch, &apt)?;
    let version = apt.version(&image_pkg)?;
    let kernels = match arch {
        Arch::X86_64 => cache_dir().join("kernels"),
        other => cache_dir().join("kernels").join(other.debian()),
    };
    let dir = kernels
        .join(name.as_str())
        .join(format!("{image_pkg}_{version}"));
    let root = dir.join("root");
    if !dir.join(".done").exists() {
        eprintln!(
            "xtask: fetching {} ({image_pkg} {version}, {})",
            name.as_str(),
            arch.debian()
        );
        let _ = std::fs::remove_dir_all(&dir);
        // From 7.x on the image package is a metapackage: the kernel, its
        // modules and config live in linux-{binary,modules,base}-<release>.
        let release = image_pkg.trim_start_matches("linux-image-");
        let mut pkgs = vec![image_pkg.clone()];
        for dep in apt.depends(&image_pkg)? {
            if ["linux-binary-", "linux-modules-", "linux-base-"]
                .iter()
                .any(|p| dep.strip_prefix(p) == Some(release))
            {
                pkgs.push(dep);
            }
        }
        for deb in apt.download(&pkgs, &dir.join("debs"))? {
            util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        }
        std::fs::remove_dir_all(dir.join("debs"))?;
        depmod(&root)?;
        std::fs::write(dir.join(".done"), "")?;
    }
    let modules_base = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.is_dir())
        .context("kernel package has no modules directory")?;
    let release = std::fs::read_dir(&modules_base)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .context("no kernel release under modules")?;
    let modules = modules_base.join(&release);
    let image = [
        root.join(format!("boot/vmlinuz-{release}")),
        modules.join("vmlinuz"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .context("kernel package has no vmlinuz")?;
    let config = [
        root.join(format!("boot/config-{release}")),
        modules.join("config"),
    ]
    .into_iter()
    .find(|p| p.exists());
    Ok(Kernel {
        name,
        arch,
        label: match arch {
            Arch::X86_64 => name.as_str().into(),
            other => format!("{}-{}", name.as_str(), other.debian()),
        },
        patch: None,
        release,
        image,
        config,
        modules: Some(modules),
        build_tree: None,
    })
}

/// Debian generates modules.dep at install time; do the same for the
/// unpacked tree so the VM runner can order the 9p modules.
fn depmod(root: &Path) -> Result<()> {
    if !root.join("lib/modules").exists() && root.join("usr/lib/modules").is_dir() {
        std::fs::create_dir_all(root.join("lib"))?;
        std::os::unix::fs::symlink("../usr/lib/modules", root.join("lib/modules"))?;
    }
    for entry in std::fs::read_dir(root.join("lib/modules"))? {
        let release = entry?.file_name();
        util::run(Command::new("depmod").arg("-b").arg(root).arg(&release))?;
    }
    Ok(())
}

/// The committed config fragment merged onto allnoconfig.
pub fn fragment_path() -> PathBuf {
    workspace_root().join("testing/kernel.config")
}

/// The fragments of `arch`'s test kernel, in merge order (a later one's
/// value of an option wins): kernel.config, then kernel-arm64.config.
pub fn fragment_paths(arch: Arch) -> Vec<PathBuf> {
    let mut paths = vec![fragment_path()];
    if arch == Arch::Arm64 {
        paths.push(workspace_root().join("testing/kernel-arm64.config"));
    }
    paths
}

/// What every `make` in `arch`'s test kernel tree is given: the
/// architecture and Debian's cross compiler for arm64 (installed when
/// first needed: only this on-demand build uses it).
pub fn make_args(arch: Arch) -> Result<Vec<String>> {
    match arch {
        Arch::X86_64 => Ok(Vec::new()),
        Arch::Arm64 => {
            if resolve_program("aarch64-linux-gnu-gcc").is_err() {
                eprintln!(
                    "xtask: installing gcc-aarch64-linux-gnu (the arm64 test kernel's compiler)"
                );
                util::run(Command::new("apt-get").args([
                    "install",
                    "-y",
                    "-qq",
                    "--no-install-recommends",
                    "gcc-aarch64-linux-gnu",
                ]))?;
            }
            Ok(vec![
                "ARCH=arm64".into(),
                "CROSS_COMPILE=aarch64-linux-gnu-".into(),
            ])
        }
    }
}

/// The boot image `make` leaves in `arch`'s tree.
pub fn image_in(tree: &Path, arch: Arch) -> PathBuf {
    match arch {
        Arch::X86_64 => tree.join("arch/x86/boot/bzImage"),
        Arch::Arm64 => tree.join("arch/arm64/boot/Image"),
    }
}

/// Newest `linux-source-X.Y` in sid, else bookworm-security's 6.12.
fn test_source() -> Result<(Apt, String, String)> {
    for apt in [Apt::sid()?, Apt::bookworm()?] {
        let names = apt.pkgnames("linux-source-")?.into_iter().filter(|n| {
            n.trim_start_matches("linux-source-")
                .split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        });
        if let Some(pkg) = newest(names) {
            let version = apt.version(&pkg)?;
            return Ok((apt, pkg, version));
        }
    }
    bail!("neither sid nor bookworm offers a linux-source-X.Y package")
}

fn ensure_test_kernel(arch: Arch) -> Result<Kernel> {
    let mut fragment = Vec::new();
    for path in fragment_paths(arch) {
        fragment.extend(
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
        );
    }
    let (apt, pkg, version) = test_source()?;
    let key = format!("{version}-{}", &sha256_hex(&fragment)[..12]);
    let dir = match arch {
        Arch::X86_64 => cache_dir().join("kernels/test"),
        other => cache_dir().join(format!("kernels/test-{}", other.debian())),
    }
    .join(&key);
    let src = dir.join("src");
    if !dir.join(".done").exists() {
        build_test_kernel(&apt, &pkg, &version, &dir, arch)?;
        std::fs::write(dir.join(".done"), "")?;
    }
    let release = std::fs::read_to_string(src.join("include/config/kernel.release"))
        .context("test kernel tree has no kernel.release")?
        .trim()
        .to_string();
    Ok(Kernel {
        name: KernelName::Test,
        arch,
        label: match arch {
            Arch::X86_64 => KernelName::Test.as_str().into(),
            other => format!("test-{}", other.debian()),
        },
        patch: None,
        release,
        image: image_in(&src, arch),
        modules: None,
        config: Some(src.join(".config")),
        build_tree: Some(src),
    })
}

fn build_test_kernel(apt: &Apt, pkg: &str, version: &str, dir: &Path, arch: Arch) -> Result<()> {
    let started = Instant::now();
    let arch_args = make_args(arch)?;
    eprintln!(
        "xtask: building the {} test kernel from {pkg} {version} (about 10 minutes on 2 cores)",
        arch.debian()
    );
    let _ = std::fs::remove_dir_all(dir);
    let debs = apt.download(&[pkg.to_string()], &dir.join("debs"))?;
    let unpacked = dir.join("deb");
    util::run(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&debs[0])
            .arg(&unpacked),
    )?;
    let tarball = std::fs::read_dir(unpacked.join("usr/src"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().contains(".tar."))
        .context("linux-source package has no tarball")?;
    let src = dir.join("src");
    std::fs::create_dir_all(&src)?;
    util::run(
        Command::new("tar")
            .arg("-xf")
            .arg(&tarball)
            .arg("-C")
            .arg(&src)
            .arg("--strip-components=1"),
    )?;
    std::fs::remove_dir_all(&unpacked)?;
    std::fs::remove_dir_all(dir.join("debs"))?;
    let awk = format!("AWK={}", pinned_awk(&src)?.display());
    let make = |args: &[&str]| {
        util::run(
            Command::new("make")
                .arg("-s")
                .arg(&awk)
                .args(&arch_args)
                .args(args)
                .current_dir(&src),
        )
    };
    // Everything the kernel has is in the fragment: allnoconfig, not
    // x86_64_defconfig (which builds drivers a QEMU guest never sees).
    make(&["allnoconfig"])?;
    util::run(
        Command::new("scripts/kconfig/merge_config.sh")
            .args(["-m", ".config"])
            .args(fragment_paths(arch))
            .envs(arch_args.iter().filter_map(|a| a.split_once('=')))
            .current_dir(&src)
            .stdout(Stdio::null()),
    )?;
    make(&["olddefconfig"])?;
    check_fragment_applied(&src.join(".config"), arch)?;
    eprintln!(
        "xtask: configured in {}s, compiling",
        started.elapsed().as_secs()
    );
    let jobs = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string();
    let image = match arch {
        Arch::X86_64 => "bzImage",
        Arch::Arm64 => "Image",
    };
    let mut child = Command::new("make")
        .args(["-j", &jobs, &awk])
        .args(&arch_args)
        .args([image, "modules"])
        .current_dir(&src)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut objects = 0u64;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        if line.trim_start().starts_with("CC") {
            objects += 1;
            if objects.is_multiple_of(500) {
                eprintln!(
                    "xtask: test kernel: {objects} objects compiled, {}s",
                    started.elapsed().as_secs()
                );
            }
        }
    }
    if !child.wait()?.success() {
        bail!("test kernel build failed in {}", src.display());
    }
    eprintln!(
        "xtask: test kernel built in {}s",
        started.elapsed().as_secs()
    );
    Ok(())
}

/// The awk every build in the test kernel tree runs with, fixed when the
/// tree is first built (`awk` resolved to its program, kept beside the
/// tree). kbuild regenerates arch/x86's cpufeaturemasks.h with `$(AWK)` on
/// every build and compares contents, and mawk and gawk write its two
/// blocks in opposite orders (`for (ns in sets)`): a tree built with
/// Debian's default mawk and rebuilt after gawk was installed (fstests
/// depends on it) recompiles every file that includes it, about 2,300.
pub fn pinned_awk(tree: &Path) -> Result<PathBuf> {
    let record = tree.parent().expect("tree has a parent").join("awk");
    if let Ok(text) = std::fs::read_to_string(&record) {
        let awk = PathBuf::from(text.trim());
        if !awk.exists() {
            bail!(
                "the test kernel tree was built with {}, which is gone: rebuild it (remove {})",
                awk.display(),
                tree.parent().expect("tree has a parent").display()
            );
        }
        return Ok(awk);
    }
    let awk = awk_of_tree(tree)?;
    std::fs::write(&record, format!("{}\n", awk.display()))?;
    Ok(awk)
}

/// The awk a tree was built with, for a tree built before the record was
/// kept: the candidate whose output is the generated header the build
/// left. A tree not yet built takes `awk` as PATH resolves it now.
fn awk_of_tree(tree: &Path) -> Result<PathBuf> {
    let header = tree.join("arch/x86/include/generated/asm/cpufeaturemasks.h");
    let Ok(built) = std::fs::read(&header) else {
        return resolve_program("awk");
    };
    let inputs = [
        tree.join("arch/x86/tools/cpufeaturemasks.awk"),
        tree.join("arch/x86/include/asm/cpufeatures.h"),
        tree.join(".config"),
    ];
    let candidates = ["/usr/bin/mawk", "/usr/bin/gawk", "/usr/bin/original-awk"]
        .map(PathBuf::from)
        .into_iter()
        .chain(resolve_program("awk").ok());
    for awk in candidates.filter(|a| a.exists()) {
        let out = Command::new(&awk)
            .arg("-f")
            .args(&inputs)
            .stderr(Stdio::null())
            .output()?;
        if out.status.success() && out.stdout == built {
            return Ok(awk);
        }
    }
    bail!(
        "no awk here writes the {} the test kernel tree was built with: rebuild it (remove {})",
        header.display(),
        tree.parent().expect("tree has a parent").display()
    )
}

/// The awk to build modules against a tree xtask did not build (a
/// developer's, `--kernel DIR`): the one that wrote its generated header,
/// else `awk` on PATH. Nothing is written beside the tree.
pub fn awk_of_foreign_tree(tree: &Path) -> Result<PathBuf> {
    awk_of_tree(tree).or_else(|_| resolve_program("awk"))
}

/// `name` found on PATH, with symlinks (Debian's alternatives) resolved.
fn resolve_program(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("no {name} on PATH"))?
        .canonicalize()
        .with_context(|| format!("cannot resolve {name}"))
}

/// Every `CONFIG_X=y` the fragments leave (the last value an option is
/// given wins) must survive olddefconfig; a silently dropped option would
/// make VM tests skip what the test kernel must have.
fn check_fragment_applied(config: &Path, arch: Arch) -> Result<()> {
    let config = std::fs::read_to_string(config)?;
    let mut last: Vec<(String, String)> = Vec::new();
    for path in fragment_paths(arch) {
        for line in std::fs::read_to_string(&path)?.lines() {
            if let Some((name, value)) =
                line.split_once('=').filter(|_| line.starts_with("CONFIG_"))
            {
                last.retain(|(n, _)| n != name);
                last.push((name.to_string(), value.to_string()));
            }
        }
    }
    let missing: Vec<String> = last
        .iter()
        .filter(|(_, v)| v == "y")
        .map(|(n, _)| format!("{n}=y"))
        .filter(|l| !config.lines().any(|c| c == l))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the test kernel config dropped {} from {}",
            missing.join(", "),
            fragment_paths(arch)
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" and ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The awk of a tree is fixed at its first build and read back
    /// afterwards, whatever `awk` resolves to by then.
    #[test]
    fn awk_pinned_per_tree() {
        let dir = std::env::temp_dir().join(format!("xtask-awk-{}", std::process::id()));
        let tree = dir.join("src");
        std::fs::create_dir_all(&tree).unwrap();
        let first = pinned_awk(&tree).unwrap();
        assert!(first.is_absolute() && first.exists(), "{first:?}");
        // A later build (gawk installed meanwhile, say) gets the same one.
        std::fs::write(dir.join("awk"), "/bin/sh\n").unwrap();
        assert_eq!(pinned_awk(&tree).unwrap(), PathBuf::from("/bin/sh"));
        std::fs::write(dir.join("awk"), "/nonexistent/gawk\n").unwrap();
        let err = format!("{:#}", pinned_awk(&tree).unwrap_err());
        assert!(err.contains("/nonexistent/gawk, which is gone"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A tree built before the record was kept: its awk is the one that
    /// writes the header the build left (mawk and gawk order a for-in
    /// loop differently, as in cpufeaturemasks.awk).
    #[test]
    fn awk_of_a_tree_found_from_its_header() {
        let dir = std::env::temp_dir().join(format!("xtask-awk-of-{}", std::process::id()));
        let tree = dir.join("src");
        for d in [
            "arch/x86/tools",
            "arch/x86/include/asm",
            "arch/x86/include/generated/asm",
        ] {
            std::fs::create_dir_all(tree.join(d)).unwrap();
        }
        std::fs::write(
            tree.join("arch/x86/tools/cpufeaturemasks.awk"),
            "END { s[1] = \"REQUIRED\"; s[2] = \"DISABLED\"; for (k in s) print s[k] }\n",
        )
        .unwrap();
        std::fs::write(tree.join("arch/x86/include/asm/cpufeatures.h"), "x\n").unwrap();
        std::fs::write(tree.join(".config"), "CONFIG_X=y\n").unwrap();
        for awk in ["/usr/bin/mawk", "/usr/bin/gawk"] {
            if !Path::new(awk).exists() {
                continue;
            }
            let out = Command::new(awk)
                .arg("-f")
                .arg(tree.join("arch/x86/tools/cpufeaturemasks.awk"))
                .arg(tree.join("arch/x86/include/asm/cpufeatures.h"))
                .arg(tree.join(".config"))
                .output()
                .unwrap();
            std::fs::write(
                tree.join("arch/x86/include/generated/asm/cpufeaturemasks.h"),
                &out.stdout,
            )
            .unwrap();
            let found = awk_of_tree(&tree).unwrap();
            // Where both are installed their outputs differ, so the first
            // that matches is the one that wrote it.
            assert_eq!(
                found,
                PathBuf::from(awk),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::fs::write(
            tree.join("arch/x86/include/generated/asm/cpufeaturemasks.h"),
            "written by no awk\n",
        )
        .unwrap();
        let err = format!("{:#}", awk_of_tree(&tree).unwrap_err());
        assert!(err.contains("no awk here writes"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kernel_specs_parse() {
        let spec = |s: &str| s.parse::<KernelSpec>();
        assert_eq!(spec("test"), Ok(KernelSpec::plain(KernelName::Test)));
        assert_eq!(
            spec("debian-6.12"),
            Ok(KernelSpec::plain(KernelName::Debian612))
        );
        let patched = spec("test+testing/patches/fix.patch").unwrap();
        assert_eq!(patched.name, KernelName::Test);
        assert_eq!(
            patched.patch.as_deref(),
            Some(Path::new("testing/patches/fix.patch"))
        );
        assert_eq!(patched.to_string(), "test+testing/patches/fix.patch");
        // Only the first '+' separates: a file name may hold more.
        assert_eq!(
            spec("test+a+b.patch").unwrap().patch.as_deref(),
            Some(Path::new("a+b.patch"))
        );
        let err = spec("debian-6.12+fix.patch").unwrap_err();
        assert!(err.contains("test kernel only"), "{err}");
        assert!(spec("test+").unwrap_err().contains("no patch file"));
        let err = spec("tset").unwrap_err();
        assert!(err.contains("unknown kernel \"tset\""), "{err}");
        assert!(spec("TEST").is_err());
    }

    /// A value with a '/' that is not NAME+PATCH is a kernel build tree;
    /// a bare word never is, even if a directory of that name exists.
    #[test]
    fn kernel_specs_of_build_trees() {
        let spec = |s: &str| s.parse::<KernelSpec>();
        for dir in [
            "./linux",
            "/src/linux/",
            "../build-7.2",
            "linux/",
            "test/",
            "./test+x",
        ] {
            let parsed = spec(dir).unwrap();
            assert_eq!(parsed, KernelSpec::tree(PathBuf::from(dir)), "{dir}");
            assert_eq!(parsed.name, KernelName::Own);
            assert_eq!(parsed.patch, None);
            assert_eq!(parsed.to_string(), dir);
        }
        // NAME+PATCH wins where the part before '+' is a kernel name.
        assert_eq!(
            spec("test+patches/x.patch").unwrap(),
            KernelSpec::patched(PathBuf::from("patches/x.patch"))
        );
        // Bare words: kernel names or errors, whatever the current
        // directory holds.
        let err = spec("linux").unwrap_err();
        assert!(
            err.contains("or a kernel build tree as a path with a '/'"),
            "{err}"
        );
        assert!(spec("xtask").is_err());
        assert!(spec("").is_err());
        // "own" names no kernel on the command line.
        assert!(spec("own").is_err());
        // A tree with a patch is not a thing: it is a path, refused when
        // provided (xtask/src/tree.rs says DIR+PATCH is not supported).
        assert_eq!(spec("/src/linux+fix.patch").unwrap().name, KernelName::Own);
        assert!(!KernelName::ALL.contains(&KernelName::Own));
    }
}
