// SPDX-License-Identifier: MIT OR Apache-2.0
//! Every relative link and every repository path the documentation names
//! exists: README.md, ARCHITECTURE.md and docs/**/*.md.
//!
//! - Markdown links and images `[text](target)` outside code: a relative
//!   target must exist (resolved from the page's own directory); an anchor
//!   (`#heading`, alone or after a `.md` target) must be a heading of that
//!   page, spelled as GitHub makes it. URLs (`scheme://`, `mailto:`) are
//!   not followed.
//! - Backticked spans outside fenced code that are a repository path
//!   (resolved from the repository root): those starting with a top-level
//!   directory of this repository (`nofail-user/`, `testing/`, `xtask/`,
//!   `docs/`, `deploy/`, ...) and any other span with a `/` whose last
//!   component has an extension (`bpf/attach.rs`). A trailing `:LINE` or
//!   `::item` is dropped first.
//!
//! Not checked: `target/` (build output), absolute paths (`/proc/...`),
//! spans with anything but letters, digits and `_-./` (placeholders such
//! as `<key>`, globs, `test+PATCH`), and kernel tree paths (a `.c`, `.h`, `.o`,
//! `.S` or `.rst` path whose first directory is not in this repository,
//! e.g. `mm/vmalloc.c:568`).
//!
//! A failure names every missing path with the page and line naming it.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}

/// Top-level directories a repository path may start with.
const TOP: &[&str] = &[
    "nofail-user",
    "nofail-ebpf",
    "nofail-common",
    "testing",
    "xtask",
    "docs",
    "deploy",
    "fuzz",
    ".ci",
    ".cargo",
];

fn doc_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "md") {
                out.push(p);
            }
        }
    }
    let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    walk(&root.join("docs"), &mut files);
    files
}

/// The page's lines outside fenced code blocks, numbered from 1.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// The line split into code spans (odd entries) and the text between them
/// (even entries). A span opened by N backticks is closed by N backticks.
fn split_code(line: &str) -> (Vec<String>, Vec<String>) {
    let (mut text, mut code) = (vec![String::new()], Vec::new());
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'`' {
            let n = b[i..].iter().take_while(|&&c| c == b'`').count();
            let fence = "`".repeat(n);
            if let Some(end) = line[i + n..].find(&fence) {
                code.push(line[i + n..i + n + end].trim().to_string());
                text.push(String::new());
                i += n + end + n;
                continue;
            }
            text.last_mut().unwrap().push_str(&line[i..i + n]);
            i += n;
            continue;
        }
        let ch = line[i..].chars().next().unwrap();
        text.last_mut().unwrap().push(ch);
        i += ch.len_utf8();
    }
    (text, code)
}

/// Targets of `[text](target)` and `![alt](target)` in text outside code.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].split_whitespace().next().unwrap_or("");
        if !target.is_empty() {
            out.push(target.trim_matches(|c| c == '<' || c == '>').to_string());
        }
        rest = &after[end..];
    }
    out
}

/// GitHub's anchors for the page's headings: lowercased, everything but
/// letters, digits, `-`, `_` and spaces dropped, spaces made `-`; a repeat
/// gets `-1`, `-2`, ...
fn anchors(text: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut count: std::collections::HashMap<String, usize> = Default::default();
    for (_, line) in prose_lines(text) {
        let t = line.trim_start();
        let hashes = t.chars().take_while(|&c| c == '#').count();
        if hashes == 0 || hashes > 6 || !t[hashes..].starts_with(' ') {
            continue;
        }
        let slug: String = t[hashes..]
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = count.entry(slug.clone()).or_default();
        let slug = if *n == 0 { slug } else { format!("{slug}-{n}") };
        *n += 1;
        seen.push(slug);
    }
    seen
}

/// The repository path a backticked span names, if it names one.
fn repo_path(root: &Path, span: &str) -> Option<String> {
    let mut p = span;
    if let Some(at) = p.find("::") {
        p = &p[..at];
    }
    if let Some((head, tail)) = p.rsplit_once(':')
        && !tail.is_empty()
        && tail.chars().all(|c| c.is_ascii_digit())
    {
        p = head;
    }
    let p = p.strip_prefix("./").unwrap_or(p);
    if p.is_empty()
        || p.starts_with('/')
        || !p
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
    {
        return None;
    }
    let first = p.split('/').next().unwrap_or("");
    if first == "target" {
        return None;
    }
    if TOP.contains(&first) && (p == first || p[first.len()..].starts_with('/')) {
        return Some(p.to_string());
    }
    if !p.contains('/') {
        return None;
    }
    let last = p.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let (stem, ext) = last.rsplit_once('.')?;
    if stem.is_empty()
        || ext.is_empty()
        || ext.len() > 5
        || !ext.chars().all(|c| c.is_ascii_alphanumeric())
        || ext.chars().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    if matches!(ext, "c" | "h" | "S" | "o" | "rst") && !root.join(first).exists() {
        return None; // a kernel source path
    }
    Some(p.to_string())
}

/// Every missing link target, anchor and repository path, as
/// `page:line: what`.
fn missing(root: &Path, page: &Path, text: &str) -> Vec<String> {
    let name = page
        .strip_prefix(root)
        .unwrap_or(page)
        .display()
        .to_string();
    let dir = page.parent().unwrap_or(root);
    let mut out = Vec::new();
    for (n, line) in prose_lines(text) {
        let (prose, code) = split_code(line);
        for target in prose.iter().flat_map(|t| link_targets(t)) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            if path.is_empty() {
                let anchor = anchor.unwrap_or_default();
                if !anchors(text).iter().any(|a| a == anchor) {
                    out.push(format!("{name}:{n}: link to missing anchor {target}"));
                }
                continue;
            }
            let file = dir.join(path);
            if let Ok(rel) = normalize(&file).strip_prefix(root)
                && rel.starts_with("target")
            {
                continue;
            }
            if !file.exists() {
                out.push(format!("{name}:{n}: link to missing {target}"));
                continue;
            }
            if let Some(anchor) = anchor
                && file.extension().is_some_and(|e| e == "md")
            {
                let body = std::fs::read_to_string(&file).unwrap_or_default();
                if !anchors(&body).iter().any(|a| a == anchor) {
                    out.push(format!("{name}:{n}: link to missing anchor {target}"));
                }
            }
        }
        for span in code {
            if let Some(p) = repo_path(root, &span)
                && !root.join(&p).exists()
            {
                out.push(format!("{name}:{n}: missing path `{p}`"));
            }
        }
    }
    out
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

#[test]
fn every_link_and_path_in_the_docs_exists() {
    let root = root();
    let mut all = Vec::new();
    for page in doc_files(&root) {
        let text =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        all.extend(missing(&root, &page, &text));
    }
    assert!(
        all.is_empty(),
        "the docs name {} paths that do not exist:\n{}",
        all.len(),
        all.join("\n")
    );
}

#[test]
fn the_checker_sees_what_it_should() {
    let root = root();
    let page = root.join("docs/example.md");
    let text = "\
# A heading, with `code`
## Events (`--events-json FILE`, JSON lines)
See [a](../README.md), [b](#a-heading-with-code), ![c](gone.svg),
[d](https://example.com/x), [e](../README.md#no-such-heading) and
[f](#events---events-json-file-json-lines).
Paths: `nofail-user/src/main.rs`, `nofail-user/src/attach.rs`,
`bpf/attach.rs`, `model/report.rs::rows`, `mm/vmalloc.c:568`,
`target/bench-runs.json`, `/proc/config.gz`, `test+testing/x.patch`,
`testing/trigger`, `testing/nothing`, `~/.cache/nofail`, `0.1.0`,
`HZ/50`, `sh -c`, `nofail-<version>.tar.gz`, `xtask/src/vm.rs:12`.
```
`not/checked.rs` [nor](this.md)
```
";
    let got = missing(&root, &page, text);
    assert_eq!(
        got,
        vec![
            "docs/example.md:3: link to missing gone.svg",
            "docs/example.md:4: link to missing anchor ../README.md#no-such-heading",
            "docs/example.md:6: missing path `nofail-user/src/attach.rs`",
            "docs/example.md:7: missing path `bpf/attach.rs`",
            "docs/example.md:7: missing path `model/report.rs`",
            "docs/example.md:9: missing path `testing/nothing`",
        ]
    );
}
