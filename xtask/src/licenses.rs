// SPDX-License-Identifier: MIT OR Apache-2.0
//! License facts checked in CI: every source file starts with the SPDX
//! identifier of the crate (or module) it belongs to, and the license files
//! those identifiers name are in the repository.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::util::workspace_root;

    /// Directory prefix -> SPDX expression its sources carry.
    const RULES: &[(&str, &str)] = &[
        ("nofail-ebpf/", "MIT OR GPL-2.0-only"),
        ("testing/trigger/", "GPL-2.0-only"),
        ("", "MIT OR Apache-2.0"),
    ];

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    sources(&path, out);
                }
            } else if name.ends_with(".rs") || name.ends_with(".c") || name.ends_with(".sh") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_source_file_has_its_spdx_identifier() {
        let root = workspace_root();
        let mut files = Vec::new();
        sources(&root, &mut files);
        files.push(root.join(".ci/run"));
        assert!(files.len() > 50, "only {} sources found", files.len());
        let mut wrong = Vec::new();
        for f in &files {
            let rel = f.strip_prefix(&root).unwrap().to_string_lossy().to_string();
            let want = RULES
                .iter()
                .find(|(prefix, _)| rel.starts_with(prefix))
                .map(|r| r.1)
                .unwrap();
            let text = std::fs::read_to_string(f).unwrap();
            let head: Vec<&str> = text.lines().take(2).collect();
            if !head
                .iter()
                .any(|l| l.ends_with(&format!("SPDX-License-Identifier: {want}")))
            {
                wrong.push(format!("{rel} (wants {want})"));
            }
        }
        assert!(wrong.is_empty(), "missing or wrong SPDX line: {wrong:?}");
    }

    #[test]
    fn license_files_exist_for_every_license_used() {
        let root = workspace_root();
        for file in ["LICENSE-MIT", "LICENSE-APACHE", "LICENSE-GPL-2.0"] {
            let text = std::fs::read_to_string(root.join(file)).unwrap_or_default();
            assert!(text.len() > 500, "{file} missing or empty");
        }
    }
}
