// SPDX-License-Identifier: MIT OR Apache-2.0
//! `test+FILE`: the test kernel with a patch applied, built incrementally
//! from the test kernel's built tree and cached by the patch's sha256.
//!
//! The tree itself is never written. The build runs in a private mount
//! namespace (`unshare -m`) where an overlay is mounted over the tree at
//! its own path: the lower layer is the stock tree, the upper one a
//! scratch directory of the variant. The patch is applied and
//! `make bzImage` run in that view, so only what the patch touches
//! recompiles (same paths, same command lines, same timestamps), plus
//! the vmlinux link. The image is copied out, the namespace ends, and the
//! scratch layer is deleted. Everyone else, including builds and boots of
//! the stock test kernel running meanwhile, keeps seeing the stock tree
//! and its bzImage. A patch that does not apply is refused before
//! anything is built (a dry run against the tree, which writes nothing).
//!
//! Modules built against the tree (the trigger) load on the variant as on
//! the stock kernel: same release and vermagic (no MODVERSIONS in the test
//! config), BTF relocated through the module's own distilled base
//! (`.BTF.base`; the vmlinux BTF itself is not byte-identical between two
//! links with pahole 1.24), and after each build the variant's exports
//! (vmlinux.symvers) are compared with the stock tree's vmlinux lines of
//! Module.symvers: a patch that adds, drops or changes an export is
//! refused, since modules built against the tree would not match it.

use std::{
    io::Write as _,
    os::fd::AsRawFd as _,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    kernels::{Kernel, KernelSpec},
    util::sha256_hex,
};

/// Provides the kernel `spec` names: the matrix kernel, then, for
/// `test+FILE`, its variant with the patch; or a developer's tree as it is
/// (xtask/src/tree.rs).
pub fn ensure_spec(spec: &KernelSpec) -> Result<Kernel> {
    if let Some(dir) = &spec.tree {
        return crate::tree::ensure(dir);
    }
    let base = crate::kernels::ensure_for(spec.name, spec.arch)?;
    match &spec.patch {
        None => Ok(base),
        Some(patch) => ensure(&base, patch),
    }
}

/// What a patch file names a variant by: its file name without `.patch`
/// (or `.diff`).
pub fn stem(patch: &Path) -> String {
    let name = patch
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.strip_suffix(".patch")
        .or_else(|| name.strip_suffix(".diff"))
        .unwrap_or(&name)
        .to_string()
}

/// The variant of the test kernel `base` with `patch`, built if not cached.
pub fn ensure(base: &Kernel, patch: &Path) -> Result<Kernel> {
    let tree = base
        .build_tree
        .as_ref()
        .context("patches apply to the test kernel only")?;
    let text = std::fs::read(patch)
        .with_context(|| format!("cannot read the patch {}", patch.display()))?;
    let hash = sha256_hex(&text);
    let variants = tree.parent().expect("tree has a parent").join("variants");
    let dir = variants.join(&hash[..16]);
    let image = dir.join("bzImage");
    let name = stem(patch);
    let kernel = Kernel {
        label: format!("{}+{name}", base.label),
        patch: Some(name),
        image: image.clone(),
        ..base.clone()
    };
    if dir.join(".done").exists() && image.exists() {
        return Ok(kernel);
    }
    std::fs::create_dir_all(&variants)?;
    let _lock = Lock::take(&variants.join(".lock"))?;
    // Another xtask may have built it while this one waited.
    if dir.join(".done").exists() && image.exists() {
        return Ok(kernel);
    }
    check_applies(tree, patch)?;
    let started = Instant::now();
    eprintln!(
        "xtask: building {} from the test kernel tree (incremental)",
        kernel.label
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let result = build(tree, &dir, patch);
    // The scratch layer holds the relinked vmlinux and its temporaries
    // (hundreds of MiB): only the image is kept.
    for scratch in ["upper", "work"] {
        let _ = std::fs::remove_dir_all(dir.join(scratch));
    }
    let compiled = result?;
    let secs = started.elapsed().as_secs();
    std::fs::write(
        dir.join(".done"),
        format!(
            "patch {}\nsha256 {hash}\nbuild_secs {secs}\ncompiled {compiled}\n",
            patch.display()
        ),
    )?;
    eprintln!(
        "xtask: {} built in {secs} s ({compiled} C file(s) compiled, then vmlinux relinked)",
        kernel.label
    );
    Ok(kernel)
}

/// Refuses a patch that does not apply to the tree, in one line; the dry
/// run writes nothing.
pub fn check_applies(tree: &Path, patch: &Path) -> Result<()> {
    let out = Command::new("patch")
        .args(["-p1", "--dry-run", "--force", "--silent", "-d"])
        .arg(tree)
        .arg("-i")
        .arg(std::path::absolute(patch)?)
        .stdin(Stdio::null())
        .output()
        .context("cannot run patch")?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let why = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("patch failed");
        bail!(
            "{} does not apply to the test kernel tree {}: {why}",
            patch.display(),
            tree.display()
        );
    }
    Ok(())
}

/// The namespace's script: overlay over the tree at its own path, patch,
/// make bzImage (with the tree's own awk: kernels::pinned_awk), copy the
/// image and the exports out. Arguments: tree, upper, work, patch,
/// variant dir, make jobs, awk.
const BUILD_SCRIPT: &str = r#"set -e
tree=$1 upper=$2 work=$3 patch=$4 out=$5 jobs=$6 awk=$7
mount -t overlay nofail-variant -o "lowerdir=$tree,upperdir=$upper,workdir=$work" "$tree"
cd "$tree"
patch -p1 --force --silent -i "$patch"
make -j "$jobs" AWK="$awk" bzImage > "$out/make.log" 2>&1 || { tail -20 "$out/make.log" >&2; exit 1; }
cp arch/x86/boot/bzImage "$out/bzImage.tmp"
cp vmlinux.symvers "$out/vmlinux.symvers"
"#;

/// Builds the variant's image into `dir`; returns how many C files
/// recompiled.
fn build(tree: &Path, dir: &Path, patch: &Path) -> Result<usize> {
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    std::fs::create_dir_all(&upper)?;
    std::fs::create_dir_all(&work)?;
    let jobs = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string();
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(BUILD_SCRIPT)
        .arg("sh")
        .args([tree, &upper, &work, &std::path::absolute(patch)?, dir])
        .arg(&jobs)
        .arg(crate::kernels::pinned_awk(tree)?)
        .stdin(Stdio::null())
        .status()
        .context("cannot run unshare")?;
    if !status.success() {
        bail!(
            "the variant build failed ({status}); its log: {}",
            dir.join("make.log").display()
        );
    }
    // Modules built against the tree link against its exports.
    let stock = std::fs::read_to_string(tree.join("Module.symvers"))
        .context("the test kernel tree has no Module.symvers")?;
    let variant = std::fs::read_to_string(dir.join("vmlinux.symvers"))?;
    let changed = export_changes(&stock, &variant);
    if !changed.is_empty() {
        bail!(
            "the patch changes the kernel's exports ({}): modules built against the test kernel tree would not match the variant",
            changed.join(", ")
        );
    }
    let log = std::fs::read_to_string(dir.join("make.log")).unwrap_or_default();
    let patch_text = std::fs::read_to_string(patch)?;
    let compiled = compiled_objects(&log);
    if let Some(touched) = touched_sources(&patch_text) {
        let extra = unexpected_objects(&compiled, &touched);
        if !extra.is_empty() {
            bail!(
                "the variant build was not incremental: it compiled {} object(s) the patch does not touch ({}{}); first line of {}: {:?}",
                extra.len(),
                extra.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
                if extra.len() > 5 { ", ..." } else { "" },
                dir.join("make.log").display(),
                log.lines().next().unwrap_or("")
            );
        }
    } else {
        eprintln!("xtask: the patch touches a header: which objects recompile is not checked");
    }
    std::fs::rename(dir.join("bzImage.tmp"), dir.join("bzImage"))?;
    Ok(compiled.len())
}

/// The objects a kbuild log says it compiled (`CC path.o` lines).
fn compiled_objects(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.trim_start().strip_prefix("CC "))
        .map(|rest| rest.trim().to_string())
        .collect()
}

/// The C sources a patch changes, or None when it changes a header (then
/// any includer may recompile, and which is not predictable from the
/// patch alone).
fn touched_sources(patch: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for path in patch
        .lines()
        .filter_map(|l| l.strip_prefix("+++ "))
        .map(|p| p.split('\t').next().unwrap_or(p).trim())
        .map(|p| p.strip_prefix("b/").unwrap_or(p))
    {
        if path.ends_with(".h") {
            return None;
        }
        out.push(path.to_string());
    }
    Some(out)
}

/// Objects of an incremental relink that are neither compiled from a
/// touched source nor rebuilt by every relink: the version stamp
/// (init/version*.o), the export table (.vmlinux.export.o) and the boot
/// image (arch/x86/boot/). A generated header that changed between the
/// stock build and the variant's (kbuild rewrites it, and every includer
/// recompiles) shows up here.
fn unexpected_objects(compiled: &[String], touched: &[String]) -> Vec<String> {
    const RELINK: [&str; 4] = [
        "init/version.o",
        "init/version-timestamp.o",
        ".vmlinux.export.o",
        "arch/x86/boot/",
    ];
    compiled
        .iter()
        .filter(|o| !RELINK.iter().any(|r| o.starts_with(r)))
        .filter(|o| {
            let stem = o.strip_suffix(".o").unwrap_or(o);
            !touched.iter().any(|t| t.strip_suffix(".c") == Some(stem))
        })
        .cloned()
        .collect()
}

/// Exports of vmlinux that differ between the stock tree's Module.symvers
/// (its `vmlinux` lines) and a variant's vmlinux.symvers: `+symbol` new
/// or changed in the variant, `-symbol` gone or changed.
fn export_changes(stock: &str, variant: &str) -> Vec<String> {
    use std::collections::BTreeSet;
    let stock: BTreeSet<&str> = stock
        .lines()
        .filter(|l| l.split('\t').nth(2) == Some("vmlinux"))
        .collect();
    let variant: BTreeSet<&str> = variant.lines().collect();
    let symbol = |l: &str| l.split('\t').nth(1).unwrap_or(l).to_string();
    let mut out: Vec<String> = variant
        .difference(&stock)
        .map(|l| format!("+{}", symbol(l)))
        .collect();
    out.extend(
        stock
            .difference(&variant)
            .map(|l| format!("-{}", symbol(l))),
    );
    out
}

/// An exclusive flock(2), held until dropped.
pub struct Lock(
    #[allow(dead_code, reason = "the lock is held while the file is open")] std::fs::File,
);

impl Lock {
    pub fn take(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let fd = file.as_raw_fd();
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!(
                "xtask: waiting for {} (another build or guest root)",
                path.display()
            );
            let _ = std::io::stderr().flush();
            if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
                bail!(
                    "cannot lock {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
        Ok(Self(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree of two files and a patch that changes one of them.
    fn tree(dir: &Path) -> std::path::PathBuf {
        let tree = dir.join("src");
        std::fs::create_dir_all(tree.join("mm")).unwrap();
        std::fs::write(tree.join("mm/vmalloc.c"), "a\nb\nc\n").unwrap();
        std::fs::write(tree.join("Makefile"), "all:\n").unwrap();
        tree
    }

    fn snapshot(tree: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![tree.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn patch_that_does_not_apply_is_refused_and_tree_unchanged() {
        let dir = std::env::temp_dir().join(format!("xtask-variant-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tree = tree(&dir);
        let before = snapshot(&tree);
        let good = dir.join("good.patch");
        std::fs::write(
            &good,
            "--- a/mm/vmalloc.c\n+++ b/mm/vmalloc.c\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n",
        )
        .unwrap();
        check_applies(&tree, &good).unwrap();
        // Its first hunk applies, its second does not: nothing may change.
        let bad = dir.join("bad.patch");
        std::fs::write(
            &bad,
            "--- a/Makefile\n+++ b/Makefile\n@@ -1 +1 @@\n-all:\n+all: x\n\
             --- a/mm/vmalloc.c\n+++ b/mm/vmalloc.c\n@@ -1,3 +1,3 @@\n a\n-x\n+y\n c\n",
        )
        .unwrap();
        let err = format!("{:#}", check_applies(&tree, &bad).unwrap_err());
        assert!(err.contains("bad.patch does not apply"), "{err}");
        assert!(!err.contains('\n'), "not one line: {err}");
        assert_eq!(snapshot(&tree), before, "the dry runs changed the tree");
        let missing = dir.join("missing.patch");
        assert!(check_applies(&tree, &missing).is_err());
        assert_eq!(snapshot(&tree), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `ensure` itself: a patch that does not apply is refused before any
    /// build, leaves no variant directory and the tree as it was.
    #[test]
    fn variant_of_a_patch_that_does_not_apply_is_refused() {
        let dir = std::env::temp_dir().join(format!("xtask-ensure-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tree = tree(&dir);
        let before = snapshot(&tree);
        let base = Kernel {
            name: crate::kernels::KernelName::Test,
            arch: crate::arch::Arch::X86_64,
            label: "test".into(),
            patch: None,
            release: "7.2.13".into(),
            image: tree.join("arch/x86/boot/bzImage"),
            modules: None,
            build_tree: Some(tree.clone()),
            config: None,
        };
        let bad = dir.join("bad.patch");
        std::fs::write(
            &bad,
            "--- a/mm/vmalloc.c\n+++ b/mm/vmalloc.c\n@@ -1,3 +1,3 @@\n a\n-x\n+y\n c\n",
        )
        .unwrap();
        let err = format!("{:#}", ensure(&base, &bad).unwrap_err());
        assert!(err.contains("does not apply"), "{err}");
        assert_eq!(snapshot(&tree), before);
        let variants = dir.join("variants");
        let built: Vec<_> = std::fs::read_dir(&variants)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(built, [std::ffi::OsString::from(".lock")], "{built:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exports_compared_with_the_stock_vmlinux_lines() {
        let stock = "0x0\ta\tvmlinux\tEXPORT_SYMBOL\t\n\
                     0x0\tb\tvmlinux\tEXPORT_SYMBOL_GPL\t\n\
                     0x0\tm\tdrivers/x\tEXPORT_SYMBOL\t\n";
        let same = "0x0\tb\tvmlinux\tEXPORT_SYMBOL_GPL\t\n0x0\ta\tvmlinux\tEXPORT_SYMBOL\t\n";
        assert!(export_changes(stock, same).is_empty());
        let changed = "0x0\ta\tvmlinux\tEXPORT_SYMBOL_GPL\t\n0x0\tc\tvmlinux\tEXPORT_SYMBOL\t\n";
        assert_eq!(export_changes(stock, changed), ["+a", "+c", "-a", "-b"]);
    }

    /// The check that keeps the variant incremental: the fresh-machine
    /// log that recompiled 2,259 files fails it, the relink passes.
    #[test]
    fn variant_compiling_more_than_its_patch_is_caught() {
        let patch = "--- a/mm/vmalloc.c\n+++ b/mm/vmalloc.c\n@@ -1 +1 @@\n-a\n+b\n";
        let touched = touched_sources(patch).unwrap();
        assert_eq!(touched, ["mm/vmalloc.c"]);
        let relink = "  CC      mm/vmalloc.o\n  AR      mm/built-in.a\n  CC      init/version.o\n\
                      \x20 CC      init/version-timestamp.o\n  CC      .vmlinux.export.o\n\
                      \x20 AS      arch/x86/boot/header.o\n  CC      arch/x86/boot/version.o\n\
                      \x20 HOSTCC  scripts/x\n";
        let objects = compiled_objects(relink);
        assert_eq!(objects.len(), 5, "{objects:?}");
        assert!(unexpected_objects(&objects, &touched).is_empty());
        let stale = "  UPD     arch/x86/include/generated/asm/cpufeaturemasks.h\n\
                     \x20 CC      arch/x86/kernel/cpu/common.o\n  CC      mm/vmalloc.o\n  CC      mm/vmalloc_extra.o\n";
        assert_eq!(
            unexpected_objects(&compiled_objects(stale), &touched),
            ["arch/x86/kernel/cpu/common.o", "mm/vmalloc_extra.o"]
        );
        let header = "--- a/include/linux/vmalloc.h\n+++ b/include/linux/vmalloc.h\n";
        assert!(touched_sources(header).is_none());
        // A timestamped +++ line names the file before the tab.
        let dated = "+++ b/mm/vmalloc.c\t2026-01-01 00:00:00\n";
        assert_eq!(touched_sources(dated).unwrap(), ["mm/vmalloc.c"]);
    }

    #[test]
    fn stem_of_patch_files() {
        assert_eq!(
            stem(Path::new("testing/patches/vmalloc-fix.patch")),
            "vmalloc-fix"
        );
        assert_eq!(stem(Path::new("x.diff")), "x");
        assert_eq!(stem(Path::new("plain")), "plain");
    }
}
