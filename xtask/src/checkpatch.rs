// SPDX-License-Identifier: MIT OR Apache-2.0
//! CI's checkpatch stage: every kernel patch in testing/patches through
//! the kernel's own `scripts/checkpatch.pl --strict`, taken from the test
//! kernel's source tree (run in that tree, so its tree checks apply).
//!
//! A patch passes when checkpatch has nothing to say, or when everything
//! it says is about the placeholder sign-off a person must replace before
//! sending: a complaint of a sign-off type (`BAD_SIGN_OFF`,
//! `NO_AUTHOR_SIGN_OFF`, `FROM_SIGN_OFF_MISMATCH`) whose text names the
//! marker `PLACEHOLDER`. Any other complaint fails the stage, printed as
//! checkpatch printed it.
//!
//! Offline: checkpatch reads its spelling list and const-structs list from
//! its own directory, and looks commit ids up only with git. The test
//! kernel's tree is Debian's source, not a git checkout, so every
//! `Fixes:` id would be "unknown"; without a `.git` in the tree that one
//! check (`UNKNOWN_COMMIT_ID`) is turned off, and the ids are checked by
//! hand (docs/findings/). `--codespell` is not used (no dictionary here).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// The patches CI checks, relative to the workspace root.
pub const PATCH_DIR: &str = "testing/patches";
/// What marks the placeholder sign-off (and author) in a patch.
const PLACEHOLDER: &str = "PLACEHOLDER";
/// The complaint types a placeholder sign-off or author can cause.
const SIGN_OFF_TYPES: [&str; 3] = [
    "BAD_SIGN_OFF",
    "NO_AUTHOR_SIGN_OFF",
    "FROM_SIGN_OFF_MISMATCH",
];

/// One complaint of checkpatch's `--show-types` output: its first line
/// (`ERROR:TYPE: message`) and the lines under it, up to a blank line.
#[derive(Debug, PartialEq)]
struct Complaint {
    kind: String,
    lines: Vec<String>,
}

impl Complaint {
    /// About the placeholder sign-off, and nothing else.
    fn is_placeholder_sign_off(&self) -> bool {
        SIGN_OFF_TYPES.contains(&self.kind.as_str())
            && self.lines.iter().any(|l| l.contains(PLACEHOLDER))
    }
}

/// The complaints in checkpatch's output, and the count its `total:`
/// line gives (errors + warnings + checks), if there is one.
fn complaints(output: &str) -> (Vec<Complaint>, Option<usize>) {
    let mut out: Vec<Complaint> = Vec::new();
    let mut open = false;
    let mut total = None;
    for line in output.lines() {
        let level = ["ERROR:", "WARNING:", "CHECK:"]
            .iter()
            .find_map(|p| line.strip_prefix(p));
        if let Some(rest) = level {
            // With --show-types: "TYPE: message".
            let kind = rest
                .split_once(':')
                .map(|(k, _)| k)
                .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
                .unwrap_or("");
            out.push(Complaint {
                kind: kind.to_string(),
                lines: vec![line.to_string()],
            });
            open = true;
        } else if line.trim().is_empty() {
            open = false;
        } else if let Some(rest) = line.strip_prefix("total: ") {
            open = false;
            total = total_of(rest);
        } else if open {
            out.last_mut()
                .expect("a complaint is open")
                .lines
                .push(line.to_string());
        }
    }
    (out, total)
}

/// "2 errors, 1 warnings, 0 checks, 19 lines checked" -> 3.
fn total_of(rest: &str) -> Option<usize> {
    let mut sum = 0;
    for (what, part) in ["errors", "warnings", "checks"]
        .iter()
        .zip(rest.split(", "))
    {
        let n = part.strip_suffix(what)?.trim().parse::<usize>().ok()?;
        sum += n;
    }
    Some(sum)
}

/// Checkpatch's verdict on one patch as CI reads it: Ok with the types of
/// the placeholder complaints it let through, or Err with the lines to
/// print (every other complaint, as checkpatch wrote it).
fn verdict(output: &str) -> std::result::Result<Vec<String>, Vec<String>> {
    let (found, total) = complaints(output);
    let Some(total) = total else {
        return Err(vec![
            "no \"total:\" line: checkpatch did not finish".to_string(),
        ]);
    };
    if total != found.len() {
        return Err(vec![format!(
            "checkpatch counted {total} complaint(s), {} read from its output",
            found.len()
        )]);
    }
    let (allowed, others): (Vec<_>, Vec<_>) = found
        .into_iter()
        .partition(Complaint::is_placeholder_sign_off);
    if others.is_empty() {
        Ok(allowed.into_iter().map(|c| c.kind).collect())
    } else {
        Err(others.into_iter().flat_map(|c| c.lines).collect())
    }
}

/// checkpatch's arguments for a patch, run in `tree`.
fn args(tree: &Path, patch: &Path) -> Vec<String> {
    let mut args = vec![
        "--strict".to_string(),
        "--show-types".to_string(),
        "--color=never".to_string(),
        format!("--root={}", tree.display()),
    ];
    if !tree.join(".git").exists() {
        args.extend(["--ignore".to_string(), "UNKNOWN_COMMIT_ID".to_string()]);
    }
    args.push(patch.display().to_string());
    args
}

/// The patch files in `dir`, sorted.
fn patches(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "patch"))
        .collect();
    out.sort();
    Ok(out)
}

/// Runs checkpatch from `tree` on every patch in `dir`; true when each
/// passes (see the module comment). Prints a line per patch, and the
/// complaints of a patch that fails.
pub fn check_all(tree: &Path, dir: &Path) -> Result<bool> {
    let script = tree.join("scripts/checkpatch.pl");
    if !script.is_file() {
        bail!("{} has no scripts/checkpatch.pl", tree.display());
    }
    if !tree.join(".git").exists() {
        println!(
            "xtask checkpatch: {} is not a git tree: commit ids are not looked up (UNKNOWN_COMMIT_ID off)",
            tree.display()
        );
    }
    let mut ok = true;
    for patch in patches(dir)? {
        let patch = std::path::absolute(&patch)?;
        let out = Command::new("perl")
            .arg(&script)
            .args(args(tree, &patch))
            .current_dir(tree)
            .env_remove("GIT_DIR")
            .stdin(Stdio::null())
            .output()
            .context("cannot run perl")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let name = patch.file_name().unwrap_or_default().to_string_lossy();
        match verdict(&text) {
            Ok(allowed) if allowed.is_empty() => {
                println!("xtask checkpatch: {name}: clean");
            }
            Ok(allowed) => println!(
                "xtask checkpatch: {name}: clean but for the placeholder sign-off a person must replace ({})",
                allowed.join(", ")
            ),
            Err(lines) => {
                ok = false;
                println!("xtask checkpatch: {name}: FAILED");
                for line in lines {
                    println!("  {line}");
                }
            }
        }
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// checkpatch.pl --strict --show-types on the fix in testing/patches,
    /// as the 7.2.13 tree's script printed it.
    const PLACEHOLDER_ONLY: &str = "\
ERROR:BAD_SIGN_OFF: Unrecognized email address: 'PLACEHOLDER (replace with the sender's name and address)'
#70: 
Signed-off-by: PLACEHOLDER (replace with the sender's name and address)

ERROR:NO_AUTHOR_SIGN_OFF: Missing Signed-off-by: line by nominal patch author 'PLACEHOLDER <replace-with-sender@invalid>'

total: 2 errors, 0 warnings, 0 checks, 17 lines checked

NOTE: For some of the reported defects, checkpatch may be able to
      mechanically convert to the typical style using --fix or --fix-inplace.

x.patch has style problems, please review.

NOTE: Ignored message types: UNKNOWN_COMMIT_ID
";

    /// The same with a real style complaint on the code.
    const ONE_MORE: &str = "\
ERROR:BAD_SIGN_OFF: Unrecognized email address: 'PLACEHOLDER (replace with the sender's name and address)'
#70: 
Signed-off-by: PLACEHOLDER (replace with the sender's name and address)

CHECK:UNNECESSARY_PARENTHESES: Unnecessary parentheses around 'ret < 0'
#77: FILE: mm/vmalloc.c:3948:
+\t\tif (nofail && (ret < 0)) {

ERROR:NO_AUTHOR_SIGN_OFF: Missing Signed-off-by: line by nominal patch author 'PLACEHOLDER <replace-with-sender@invalid>'

total: 2 errors, 0 warnings, 1 checks, 17 lines checked
";

    #[test]
    fn only_the_placeholder_sign_off_passes() {
        assert_eq!(
            verdict(PLACEHOLDER_ONLY).unwrap(),
            ["BAD_SIGN_OFF", "NO_AUTHOR_SIGN_OFF"]
        );
        let clean = "total: 0 errors, 0 warnings, 0 checks, 17 lines checked\n\n\
                     x.patch has no obvious style problems and is ready for submission.\n";
        assert!(verdict(clean).unwrap().is_empty());
    }

    #[test]
    fn any_other_complaint_fails_with_its_lines() {
        let lines = verdict(ONE_MORE).unwrap_err();
        assert_eq!(
            lines,
            [
                "CHECK:UNNECESSARY_PARENTHESES: Unnecessary parentheses around 'ret < 0'",
                "#77: FILE: mm/vmalloc.c:3948:",
                "+\t\tif (nofail && (ret < 0)) {",
            ]
        );
        // A warning about the code, with the placeholder gone.
        let warning = "WARNING:LONG_LINE: line length of 101 exceeds 100 columns\n\
                       #80: FILE: mm/vmalloc.c:3950:\n+x\n\n\
                       total: 0 errors, 1 warnings, 0 checks, 17 lines checked\n";
        assert_eq!(verdict(warning).unwrap_err().len(), 3);
    }

    /// A sign-off complaint passes only if it is about the placeholder: a
    /// real but malformed address fails, and so does a placeholder named
    /// in a complaint of another type.
    #[test]
    fn sign_off_complaints_pass_only_for_the_placeholder() {
        let real = "ERROR:BAD_SIGN_OFF: Unrecognized email address: 'Jane Doe jane@example.org'\n\
                    #70: \nSigned-off-by: Jane Doe jane@example.org\n\n\
                    total: 1 errors, 0 warnings, 0 checks, 17 lines checked\n";
        assert!(verdict(real).is_err());
        let other = "WARNING:TYPO_SPELLING: 'PLACEHOLDER' may be misspelled\n#3: \n+x\n\n\
                     total: 0 errors, 1 warnings, 0 checks, 17 lines checked\n";
        assert!(verdict(other).is_err());
    }

    /// Output CI cannot vouch for is not a pass: no total line (the
    /// script died), a complaint without its type (no --show-types), or
    /// fewer complaints read than checkpatch counted.
    #[test]
    fn unreadable_output_fails() {
        assert!(verdict("Can't locate Foo.pm in @INC\n").is_err());
        let untyped = "ERROR: Missing Signed-off-by: line(s)\n\n\
                       total: 1 errors, 0 warnings, 0 checks, 17 lines checked\n";
        assert!(verdict(untyped).is_err());
        let short = "total: 1 errors, 0 warnings, 0 checks, 17 lines checked\n";
        assert_eq!(
            verdict(short).unwrap_err(),
            ["checkpatch counted 1 complaint(s), 0 read from its output"]
        );
    }

    #[test]
    fn commit_ids_are_looked_up_only_in_a_git_tree() {
        let dir = std::env::temp_dir().join(format!("xtask-checkpatch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = args(&dir, Path::new("/p/x.patch"));
        assert!(
            a.windows(2).any(|w| w == ["--ignore", "UNKNOWN_COMMIT_ID"]),
            "{a:?}"
        );
        assert_eq!(a.last().unwrap(), "/p/x.patch");
        assert!(a.contains(&"--strict".to_string()) && a.contains(&"--show-types".to_string()));
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        let a = args(&dir, Path::new("/p/x.patch"));
        assert!(!a.iter().any(|s| s == "UNKNOWN_COMMIT_ID"), "{a:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// CI's stage on the real patches:
    /// `NOFAIL_TREE=DIR cargo test -p xtask real_patches -- --ignored`,
    /// DIR the test kernel's source tree.
    #[test]
    #[ignore = "needs a kernel source tree with scripts/checkpatch.pl"]
    fn real_patches_pass_checkpatch() {
        let tree = PathBuf::from(std::env::var("NOFAIL_TREE").unwrap());
        let dir = crate::util::workspace_root().join(PATCH_DIR);
        assert!(check_all(&tree, &dir).unwrap());
        // The fix with one style complaint put back fails.
        let fix = std::fs::read_to_string(dir.join("vmalloc-nofail-unwind-partial-map.patch"))
            .unwrap()
            .replace(
                "+\t\tif (nofail && ret < 0) {",
                "+\t\tif (nofail && (ret < 0)) {",
            );
        let bad = std::env::temp_dir().join(format!("xtask-checkpatch-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&bad);
        std::fs::create_dir_all(&bad).unwrap();
        std::fs::write(bad.join("fix.patch"), fix).unwrap();
        assert!(!check_all(&tree, &bad).unwrap());
        std::fs::remove_dir_all(&bad).unwrap();
    }
}
