// SPDX-License-Identifier: MIT OR Apache-2.0
//! `--kernel DIR`: a kernel build tree a developer made (the source tree,
//! or its `O=` directory), booted as it is. Nothing is built in it and
//! nothing is written into it or beside it: the trigger module and the
//! staged modules go to the nofail cache (`trees/<label>/`).
//!
//! Its `.config` is checked before anything boots, at three levels:
//! what the VM runner needs to boot at all (`BOOT`: every command), what
//! every VM scenario needs (`SUITE`: vm-test and gate), both refused in one
//! line per missing option; and what single scenarios need (the scenario
//! table's `needs` column, read from `vm-tests --list`): those scenarios
//! are skipped, one line per missing option naming them.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use anyhow::{Context as _, Result, bail};
use nofail_test_support::{kernel::KernelConfig, outcome::Listing};

use crate::{
    kernels::{Kernel, KernelName},
    util::{self, cache_dir, sha256_hex},
};

/// An option a tree must have, and why.
struct Need {
    option: &'static str,
    /// `=m` will do: the runner loads it from the tree's modules at boot.
    module_ok: bool,
    why: &'static str,
}

const fn need(option: &'static str, module_ok: bool, why: &'static str) -> Need {
    Need {
        option,
        module_ok,
        why,
    }
}

/// What the VM runner needs to boot a guest and start its command
/// (testing/vm-init mounts each of these or fails).
const BOOT: &[Need] = &[
    need(
        "CONFIG_64BIT",
        false,
        "the guest runs this machine's x86_64 programs",
    ),
    need(
        "CONFIG_BLK_DEV_INITRD",
        false,
        "the guest's init comes in an initramfs",
    ),
    need(
        "CONFIG_BINFMT_ELF",
        false,
        "the guest's init is an ELF program",
    ),
    need(
        "CONFIG_SERIAL_8250",
        false,
        "the console and the heartbeat are serial ports",
    ),
    need("CONFIG_SERIAL_8250_CONSOLE", false, "the console is ttyS0"),
    need("CONFIG_PCI", false, "the virtio devices are on PCI"),
    need(
        "CONFIG_VIRTIO_PCI",
        true,
        "the host's root is shared over virtio-9p",
    ),
    need("CONFIG_NET_9P", true, "the host's root is shared over 9p"),
    need(
        "CONFIG_NET_9P_VIRTIO",
        true,
        "the host's root is shared over virtio-9p",
    ),
    need(
        "CONFIG_9P_FS",
        true,
        "the guest mounts the host's root over 9p",
    ),
    need(
        "CONFIG_INET",
        false,
        "the guest brings up its loopback interface",
    ),
    need("CONFIG_PROC_FS", false, "the guest mounts /proc"),
    need("CONFIG_SYSFS", false, "the guest mounts /sys"),
    need(
        "CONFIG_DEVTMPFS",
        false,
        "the guest mounts devtmpfs on /dev",
    ),
    need("CONFIG_UNIX98_PTYS", false, "the guest mounts /dev/pts"),
    need(
        "CONFIG_TMPFS",
        false,
        "the guest mounts tmpfs on /tmp, /run and /dev/shm",
    ),
    need("CONFIG_DEBUG_FS", false, "the guest mounts debugfs"),
    need(
        "CONFIG_TRACING",
        false,
        "the guest mounts tracefs (any tracer selects it, e.g. CONFIG_FUNCTION_TRACER)",
    ),
    need("CONFIG_BPF_SYSCALL", false, "the guest mounts bpffs"),
    need("CONFIG_CGROUPS", false, "the guest mounts cgroup2"),
    need("CONFIG_FUTEX", false, "the guest's programs run threads"),
];

/// What every VM scenario needs, beyond booting: nofail's BPF object
/// loads and attaches, and the trigger module (the ground truth of most
/// scenarios) is built against the tree and loads.
const SUITE: &[Need] = &[
    need(
        "CONFIG_MODULES",
        false,
        "the trigger module is built against the tree and loaded",
    ),
    need(
        "CONFIG_KPROBES",
        false,
        "nofail's full mode and the trigger module use kprobes",
    ),
    need(
        "CONFIG_PERF_EVENTS",
        false,
        "nofail attaches kprobes through perf events",
    ),
    need(
        "CONFIG_BPF_EVENTS",
        false,
        "nofail runs BPF programs on kprobes and tracepoints",
    ),
    need(
        "CONFIG_DEBUG_INFO_BTF",
        false,
        "nofail's BPF object is relocated against the kernel's BTF",
    ),
    need(
        "CONFIG_KALLSYMS",
        false,
        "nofail names call sites from /proc/kallsyms",
    ),
];

/// The files a built tree has, and the tree's `make` target that makes
/// each.
const FILES: [&str; 4] = [
    "arch/x86/boot/bzImage",
    "Module.symvers",
    ".config",
    "include/config/kernel.release",
];

/// The kernel of the build tree `dir`, its boot options checked and its
/// modules (if any) staged for the VM runner; refused in one line (or
/// one line per missing option) before anything boots.
pub fn ensure(dir: &Path) -> Result<Kernel> {
    if !dir.is_dir() {
        bail!(
            "{}: no such directory{}",
            dir.display(),
            if dir.to_string_lossy().contains('+') {
                " (DIR+PATCH is not supported: apply the patch in a tree of your own, build it and give that tree)"
            } else {
                ""
            }
        );
    }
    let missing: Vec<&str> = FILES
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} is not a built kernel tree: no {} (give the directory `make` built in: the source tree, or its O= directory)",
            dir.display(),
            missing.join(", no ")
        );
    }
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let config = read_config(&dir)?;
    let modular = has_modules(&dir)?;
    refuse(&dir, "boot it", &lacking(&config, BOOT, modular))?;
    let release = std::fs::read_to_string(dir.join("include/config/kernel.release"))?
        .trim()
        .to_string();
    if cache_dir().starts_with("/tmp") {
        bail!(
            "the nofail cache ({}) must not be under /tmp: guests see their own /tmp; set NOFAIL_CACHE elsewhere",
            cache_dir().display()
        );
    }
    let label = label(&dir);
    let work = work_dir(&label);
    std::fs::create_dir_all(&work)?;
    let modules = if modular {
        Some(stage_modules(&dir, &release, &work)?)
    } else {
        None
    };
    // The guest reads the config from the cache: a tree under /tmp is
    // hidden there by the guest's own /tmp.
    let config = work.join("config");
    std::fs::copy(dir.join(".config"), &config)?;
    Ok(Kernel {
        name: KernelName::Own,
        arch: crate::arch::Arch::X86_64,
        label,
        patch: None,
        release,
        image: dir.join("arch/x86/boot/bzImage"),
        modules,
        config: Some(config),
        build_tree: Some(dir),
    })
}

/// Refuses a tree that lacks what every VM scenario needs, one line per
/// option (vm-test and gate, before the trigger is built).
pub fn check_suite(kernel: &Kernel) -> Result<()> {
    let dir = kernel
        .build_tree
        .as_ref()
        .context("not a kernel build tree")?;
    let config = read_config(dir)?;
    refuse(
        dir,
        "run the VM scenarios on it",
        &lacking(&config, SUITE, kernel.modules.is_some()),
    )
}

fn read_config(dir: &Path) -> Result<KernelConfig> {
    let text = std::fs::read_to_string(dir.join(".config"))
        .with_context(|| format!("cannot read {}/.config", dir.display()))?;
    Ok(KernelConfig::parse(&text))
}

/// The lines of the options `config` lacks of `needs`, `=m` counting
/// where the tree's modules are loaded at boot (`modular`).
fn lacking(config: &KernelConfig, needs: &[Need], modular: bool) -> Vec<String> {
    needs
        .iter()
        .filter_map(|n| match config.get(n.option) {
            Some("y") => None,
            Some("m") if n.module_ok && modular => None,
            Some("m") => Some(format!("{}=m, not =y: {}", n.option, n.why)),
            _ => Some(format!("{}: {}", n.option, n.why)),
        })
        .collect()
}

/// Prints one line per missing option, then fails.
fn refuse(dir: &Path, to: &str, lines: &[String]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    for line in lines {
        eprintln!("xtask: {} lacks {line}", dir.display());
    }
    bail!(
        "{} lacks {} option(s) needed to {to} (each named above)",
        dir.display(),
        lines.len()
    )
}

/// How results and messages name a tree: `own-` (never a matrix label),
/// its directory's name and a hash of its full path (two trees both
/// called `linux` get two labels).
pub fn label(dir: &Path) -> String {
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into());
    let base: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let hash = sha256_hex(dir.as_os_str().as_encoded_bytes());
    format!("own-{base}-{}", &hash[..8])
}

/// Where xtask keeps what it makes for a tree (trigger module, staged
/// modules), in the cache, never beside the tree.
pub fn work_dir(label: &str) -> PathBuf {
    cache_dir().join("trees").join(label)
}

/// The modules the tree built (`modules.order`), if it has any; refused
/// when it lists modules that were not built.
fn has_modules(dir: &Path) -> Result<bool> {
    let order = std::fs::read_to_string(dir.join("modules.order")).unwrap_or_default();
    let unbuilt: Vec<String> = module_paths(&order)
        .into_iter()
        .filter(|ko| !dir.join(ko).is_file())
        .collect();
    if let Some(first) = unbuilt.first() {
        bail!(
            "{}: {} module(s) of modules.order are not built (no {first}): run `make modules` there",
            dir.display(),
            unbuilt.len()
        );
    }
    Ok(!order.trim().is_empty())
}

/// The `.ko` files of a modules.order (its lines name `.o` files since
/// 6.2, `.ko` files before).
fn module_paths(order: &str) -> Vec<String> {
    order
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| match l.strip_suffix(".o") {
            Some(stem) => format!("{stem}.ko"),
            None => l.to_string(),
        })
        .collect()
}

/// A `lib/modules/<release>` for the VM runner: a symlink per module of
/// the tree, its modules.builtin and a modules.dep from depmod. Kept by
/// what it depends on (the module list and the modules' times), made
/// anew when the tree's modules change; built aside and renamed into
/// place, so that two xtasks on one tree do not see a half-made one.
fn stage_modules(dir: &Path, release: &str, work: &Path) -> Result<PathBuf> {
    let order = std::fs::read_to_string(dir.join("modules.order"))?;
    let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    let mut key = format!("{release}\n{order}\n{builtin}\n");
    for ko in module_paths(&order) {
        let modified = std::fs::metadata(dir.join(&ko))?
            .modified()?
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        key += &format!("{ko} {}\n", modified.as_nanos());
    }
    let root = work.join(format!("modules-{}", &sha256_hex(key.as_bytes())[..12]));
    let modules = root.join("lib/modules").join(release);
    if root.join(".done").exists() {
        return Ok(modules);
    }
    let tmp = work.join(format!("modules.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let staged = tmp.join("lib/modules").join(release);
    for ko in module_paths(&order) {
        let link = staged.join("kernel").join(&ko);
        std::fs::create_dir_all(link.parent().expect("a module path has a parent"))?;
        std::os::unix::fs::symlink(dir.join(&ko), &link)?;
    }
    std::fs::create_dir_all(&staged)?;
    for file in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        if dir.join(file).is_file() {
            std::fs::copy(dir.join(file), staged.join(file))?;
        }
    }
    util::run(Command::new("depmod").arg("-b").arg(&tmp).arg(release))
        .with_context(|| format!("cannot index the modules of {}", dir.display()))?;
    std::fs::write(tmp.join(".done"), "")?;
    if std::fs::rename(&tmp, &root).is_err() {
        // Another xtask staged the same modules meanwhile.
        let _ = std::fs::remove_dir_all(&tmp);
        if !root.join(".done").exists() {
            bail!(
                "cannot stage the modules of {} in {}",
                dir.display(),
                root.display()
            );
        }
    }
    Ok(modules)
}

/// Scenarios skipped on a tree, by the options its config lacks.
#[derive(Debug, Default, PartialEq)]
pub struct Skips {
    /// Each missing option, with the chosen scenarios that need it.
    pub options: Vec<(String, Vec<String>)>,
    /// Each skipped scenario, with its reason.
    pub scenarios: BTreeMap<String, String>,
}

impl Skips {
    /// The lines `vm-test` prints before it boots: one per missing option.
    pub fn lines(&self, dir: &Path) -> Vec<String> {
        self.options
            .iter()
            .map(|(option, names)| {
                format!(
                    "xtask vm-test: {} lacks {option}: skipping {}",
                    dir.display(),
                    names.join(", ")
                )
            })
            .collect()
    }
}

/// What the chosen scenarios need that `config` lacks (neither `=y` nor
/// `=m`: a module the runner loads at boot will do).
pub fn skips(dir: &Path, config: &str, chosen: &[&Listing]) -> Skips {
    let config = KernelConfig::parse(config);
    let mut options: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut scenarios = BTreeMap::new();
    for l in chosen {
        let lacks: Vec<&str> = l
            .needs
            .iter()
            .map(String::as_str)
            .filter(|o| !config.enabled(o))
            .collect();
        for o in &lacks {
            options.entry(o).or_default().push(l.name.clone());
        }
        if !lacks.is_empty() {
            scenarios.insert(
                l.name.clone(),
                format!("{} lacks {}", dir.display(), lacks.join(", ")),
            );
        }
    }
    Skips {
        options: options
            .into_iter()
            .map(|(o, names)| (o.to_string(), names))
            .collect(),
        scenarios,
    }
}

/// CI's check of the config check on a real tree (`tree`, the test
/// kernel's) and the real scenario table (`vm_tests --list`), without
/// booting: a copy of the tree (image, exports and release linked) whose
/// .config lacks XFS and the kprobe override gets one line per option,
/// each naming scenarios that need it and none that do not; without
/// 9p it is refused naming CONFIG_9P_FS; without its image, in one line.
pub fn check_the_check(tree: &Path, vm_tests: &Path) -> Result<()> {
    const TAKEN: [&str; 2] = ["CONFIG_BPF_KPROBE_OVERRIDE", "CONFIG_XFS_FS"];
    let fake = std::env::temp_dir().join(format!("xtask-tree-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&fake);
    let result = (|| -> Result<()> {
        for file in FILES.iter().filter(|f| **f != ".config") {
            let link = fake.join(file);
            std::fs::create_dir_all(link.parent().expect("files are in the tree"))?;
            std::os::unix::fs::symlink(tree.join(file), link)?;
        }
        let full = std::fs::read_to_string(tree.join(".config"))?;
        let without = |options: &[&str]| -> String {
            full.lines()
                .map(
                    |l| match options.iter().find(|o| l.starts_with(&format!("{o}="))) {
                        Some(o) => format!("# {o} is not set\n"),
                        None => format!("{l}\n"),
                    },
                )
                .collect()
        };
        let config = without(&TAKEN);
        std::fs::write(fake.join(".config"), &config)?;
        let kernel = ensure(&fake)?;
        let _ = std::fs::remove_dir_all(work_dir(&kernel.label));
        check_suite(&kernel)?;
        let listed = util::output(Command::new(vm_tests).args(["--list", "--trigger", "x.ko"]))?;
        let table: Vec<Listing> = listed
            .lines()
            .map(|l| Listing::parse(l).with_context(|| format!("vm-tests --list: {l:?}")))
            .collect::<Result<_>>()?;
        let dir = kernel.build_tree.as_ref().expect("a tree");
        let skips = skips(dir, &config, &table.iter().collect::<Vec<_>>());
        for line in skips.lines(dir) {
            println!("{line}");
        }
        let options: Vec<&str> = skips.options.iter().map(|(o, _)| o.as_str()).collect();
        anyhow::ensure!(
            options == TAKEN,
            "options named: {options:?}, not {TAKEN:?}"
        );
        for (option, names) in &skips.options {
            let needing: Vec<&String> = table
                .iter()
                .filter(|l| l.needs.contains(option))
                .map(|l| &l.name)
                .collect();
            anyhow::ensure!(
                names.iter().collect::<Vec<_>>() == needing && !needing.is_empty(),
                "{option}: skipping {names:?}, but {needing:?} need it"
            );
            anyhow::ensure!(
                !names.iter().any(|n| n == "trigger_sites_exact"),
                "{option}: {names:?}"
            );
        }
        anyhow::ensure!(
            skips.options[1]
                .1
                .iter()
                .any(|n| n == "real_xfs_remote_xattrs_traced"),
            "CONFIG_XFS_FS: {:?}",
            skips.options[1].1
        );
        // The runner's own options: refused before booting, one line each.
        let no_9p = without(&["CONFIG_9P_FS"]);
        std::fs::write(fake.join(".config"), &no_9p)?;
        let lines = lacking(&KernelConfig::parse(&no_9p), BOOT, false);
        anyhow::ensure!(
            lines == ["CONFIG_9P_FS: the guest mounts the host's root over 9p"],
            "{lines:?}"
        );
        let err = format!(
            "{:#}",
            ensure(&fake)
                .err()
                .context("a tree without 9p was not refused")?
        );
        println!("xtask: refused: {err}");
        anyhow::ensure!(err.contains("lacks 1 option(s) needed to boot it"), "{err}");
        std::fs::remove_file(fake.join("arch/x86/boot/bzImage"))?;
        let err = format!(
            "{:#}",
            ensure(&fake)
                .err()
                .context("a tree without bzImage was not refused")?
        );
        println!("xtask: refused: {err}");
        anyhow::ensure!(
            err.contains("is not a built kernel tree: no arch/x86/boot/bzImage (")
                && !err.contains('\n'),
            "{err}"
        );
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&fake);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(name: &str, needs: &[&str]) -> Listing {
        Listing {
            name: name.into(),
            needs: needs.iter().map(|n| n.to_string()).collect(),
            ..Listing::default()
        }
    }

    /// A .config missing options: one line per option, naming the chosen
    /// scenarios that need it, in the table's order; `=m` will do, `is
    /// not set` and absent lines will not.
    #[test]
    fn config_check_names_each_missing_option_and_its_scenarios() {
        let table = [
            listing("plain", &[]),
            listing("xfs_a", &["CONFIG_XFS_FS", "CONFIG_BLK_DEV_LOOP"]),
            listing(
                "inject_b",
                &["CONFIG_BPF_KPROBE_OVERRIDE", "CONFIG_FAILSLAB"],
            ),
            listing(
                "xfs_inject_c",
                &["CONFIG_XFS_FS", "CONFIG_BPF_KPROBE_OVERRIDE"],
            ),
            listing("ext4_d", &["CONFIG_EXT4_FS", "CONFIG_BLK_DEV_LOOP"]),
        ];
        let chosen: Vec<&Listing> = table.iter().collect();
        let config = "CONFIG_BLK_DEV_LOOP=m\nCONFIG_EXT4_FS=y\nCONFIG_FAILSLAB=y\n\
                      # CONFIG_BPF_KPROBE_OVERRIDE is not set\n";
        let dir = Path::new("/src/linux");
        let skips = skips(dir, config, &chosen);
        assert_eq!(
            skips.lines(dir),
            [
                "xtask vm-test: /src/linux lacks CONFIG_BPF_KPROBE_OVERRIDE: skipping inject_b, xfs_inject_c",
                "xtask vm-test: /src/linux lacks CONFIG_XFS_FS: skipping xfs_a, xfs_inject_c",
            ]
        );
        assert_eq!(
            skips.scenarios.get("xfs_inject_c").map(String::as_str),
            Some("/src/linux lacks CONFIG_XFS_FS, CONFIG_BPF_KPROBE_OVERRIDE")
        );
        assert_eq!(skips.scenarios.len(), 3);
        // Only what was chosen is named.
        let skips = super::skips(dir, config, &chosen[..2]);
        assert_eq!(
            skips.lines(dir),
            ["xtask vm-test: /src/linux lacks CONFIG_XFS_FS: skipping xfs_a"]
        );
        // A config with everything: nothing.
        let full = "CONFIG_XFS_FS=y\nCONFIG_BLK_DEV_LOOP=y\nCONFIG_BPF_KPROBE_OVERRIDE=y\n\
                    CONFIG_FAILSLAB=y\nCONFIG_EXT4_FS=y\n";
        assert_eq!(super::skips(dir, full, &chosen), Skips::default());
    }

    /// The runner's own options: one line each, `=m` only where the
    /// tree's modules are loaded at boot.
    #[test]
    fn boot_options_one_line_each() {
        let all_y: String = BOOT.iter().map(|n| format!("{}=y\n", n.option)).collect();
        assert!(lacking(&KernelConfig::parse(&all_y), BOOT, false).is_empty());
        let text = all_y
            .replace("CONFIG_9P_FS=y", "CONFIG_9P_FS=m")
            .replace("CONFIG_SERIAL_8250_CONSOLE=y\n", "")
            .replace("CONFIG_DEVTMPFS=y", "# CONFIG_DEVTMPFS is not set");
        let config = KernelConfig::parse(&text);
        assert_eq!(
            lacking(&config, BOOT, true),
            [
                "CONFIG_SERIAL_8250_CONSOLE: the console is ttyS0",
                "CONFIG_DEVTMPFS: the guest mounts devtmpfs on /dev",
            ]
        );
        assert_eq!(
            lacking(&config, BOOT, false)[0],
            "CONFIG_SERIAL_8250_CONSOLE: the console is ttyS0"
        );
        assert_eq!(
            lacking(&config, BOOT, false)[1],
            "CONFIG_9P_FS=m, not =y: the guest mounts the host's root over 9p"
        );
    }

    #[test]
    fn labels_never_collide_with_the_matrix_or_each_other() {
        let a = label(Path::new("/home/dev/stock/linux"));
        let b = label(Path::new("/home/dev/patched/linux"));
        assert!(
            a.starts_with("own-linux-") && b.starts_with("own-linux-"),
            "{a} {b}"
        );
        assert_ne!(a, b);
        assert_eq!(a, label(Path::new("/home/dev/stock/linux")));
        assert!(label(Path::new("/x/a b+c")).starts_with("own-a_b_c-"));
    }

    /// CI's check on a real tree:
    /// `NOFAIL_TREE=DIR cargo test -p xtask real_tree -- --ignored`, with
    /// vm-tests built (`cargo xtask vm-test` builds it).
    #[test]
    #[ignore = "needs a built kernel tree and vm-tests"]
    fn check_the_check_on_a_real_tree() {
        let dir = PathBuf::from(std::env::var("NOFAIL_TREE").unwrap());
        // As suite::vm_tests_binary names it (not called: tree is below suite).
        let vm_tests = crate::util::workspace_root().join("target/release/vm-tests");
        check_the_check(&dir, &vm_tests).unwrap();
    }

    #[test]
    fn module_paths_of_old_and_new_modules_order() {
        assert_eq!(
            module_paths("fs/xfs/xfs.o\n\nnet/9p/9pnet.ko\n"),
            ["fs/xfs/xfs.ko", "net/9p/9pnet.ko"]
        );
    }

    /// Bad trees are refused in one line, before anything else.
    #[test]
    fn bad_trees_refused_in_one_line() {
        let dir = std::env::temp_dir().join(format!("xtask-tree-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let err = format!("{:#}", ensure(&dir).unwrap_err());
        assert!(err.ends_with(": no such directory"), "{err}");
        let err = format!("{:#}", ensure(&dir.join("linux+fix.patch")).unwrap_err());
        assert!(err.contains("DIR+PATCH is not supported"), "{err}");
        std::fs::create_dir_all(dir.join("include/config")).unwrap();
        std::fs::write(dir.join(".config"), "CONFIG_64BIT=y\n").unwrap();
        std::fs::write(dir.join("include/config/kernel.release"), "7.0.0\n").unwrap();
        let err = format!("{:#}", ensure(&dir).unwrap_err());
        assert!(
            err.contains(
                "is not a built kernel tree: no arch/x86/boot/bzImage, no Module.symvers ("
            ),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        // Built, but booting it needs options it lacks: refused.
        std::fs::create_dir_all(dir.join("arch/x86/boot")).unwrap();
        std::fs::write(dir.join("arch/x86/boot/bzImage"), "").unwrap();
        std::fs::write(dir.join("Module.symvers"), "").unwrap();
        let err = format!("{:#}", ensure(&dir).unwrap_err());
        assert!(
            err.contains(&format!(
                "lacks {} option(s) needed to boot it",
                BOOT.len() - 1
            )),
            "{err}"
        );
        // Modules listed but not built.
        std::fs::write(dir.join("modules.order"), "fs/xfs/xfs.o\n").unwrap();
        let err = format!("{:#}", ensure(&dir).unwrap_err());
        assert!(
            err.contains("1 module(s) of modules.order are not built (no fs/xfs/xfs.ko)"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
