// SPDX-License-Identifier: MIT OR Apache-2.0
//! The layers of nofail-user (ARCHITECTURE.md), checked from the source:
//! every `crate::` path of every file is resolved to the module it names,
//! and a layer may only name layers below it; bpf and output never name
//! each other; no two modules name each other, directly or around a
//! cycle; flags (clap derives) are declared only in cmd/.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// Lowest first. `bpf` and `output` share a rank and may not meet.
const LAYERS: [(&str, u32); 6] = [
    ("alloc", 0),
    ("kernel", 0),
    ("model", 1),
    ("bpf", 2),
    ("output", 2),
    ("cmd", 3),
];

fn rank(layer: &str) -> Option<u32> {
    LAYERS.iter().find(|(l, _)| *l == layer).map(|(_, r)| *r)
}

/// Source without comments (line comments and doc comments), so prose
/// that mentions `crate::x` is not taken for an import.
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path a `crate::` item names, with `{...}` groups flattened:
/// `crate::{a::{b, c::D}, e}` gives `a::b`, `a::c::D`, `e`.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let consumed = tree(after, &mut Vec::new(), &mut out);
        rest = &after[consumed..];
    }
    out
}

/// Parses one use tree at the start of `s` under `prefix`; returns the
/// bytes consumed.
fn tree(s: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let bytes = s.as_bytes();
    let mut i = 0;
    let depth = prefix.len();
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'{' {
            i += 1;
            loop {
                while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b',') {
                    i += 1;
                }
                if i >= bytes.len() || bytes[i] == b'}' {
                    i += 1;
                    break;
                }
                // A glob (`*`) names no path of its own; skip it rather
                // than parse it again forever.
                i += tree(&s[i..], prefix, out).max(1);
            }
            prefix.truncate(depth);
            return i;
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if start == i {
            break;
        }
        prefix.push(s[start..i].to_string());
        if s[i..].starts_with("::") {
            i += 2;
            continue;
        }
        break;
    }
    if prefix.len() > depth {
        out.push(prefix.clone());
    }
    prefix.truncate(depth);
    i
}

/// The module a file is: `src/bpf/tracer.rs` is `bpf::tracer`,
/// `src/bpf/mod.rs` is `bpf`, `src/main.rs` and `src/lib.rs` are the
/// crate root (lib.rs declares the layers, main.rs uses them).
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "main")
        || (parts.len() == 1 && parts[0] == "lib")
    {
        parts.pop();
    }
    parts.join("::")
}

struct Source {
    files: BTreeMap<String, String>,
}

impl Source {
    fn load() -> Self {
        Self::load_from(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), 20)
    }

    /// The source files under `root` (a crate's `src`), at least `min`.
    fn load_from(root: &Path, min: usize) -> Self {
        let root = root.to_path_buf();
        let mut files = BTreeMap::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("src readable") {
                let path = entry.expect("dir entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let rel = path.strip_prefix(&root).expect("under src");
                    let text = std::fs::read_to_string(&path).expect("readable");
                    // main.rs and lib.rs are both the root: kept together.
                    let module: &mut String = files.entry(module_of(rel)).or_default();
                    module.push_str(&text);
                }
            }
        }
        assert!(
            files.len() > min,
            "found only {} source files under {}",
            files.len(),
            root.display()
        );
        Self { files }
    }

    /// The file module a path lands in: the longest prefix that is a file.
    fn target(&self, path: &[String]) -> Option<String> {
        (1..=path.len().min(2))
            .rev()
            .map(|n| path[..n].join("::"))
            .find(|m| self.files.contains_key(m))
    }

    /// File module -> file modules it names (itself and its own layer's
    /// `mod.rs` left out).
    fn edges(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.files
            .iter()
            .map(|(module, text)| {
                let to = crate_paths(&code_of(text))
                    .iter()
                    .filter_map(|p| self.target(p))
                    .filter(|t| t != module && !module.starts_with(&format!("{t}::")))
                    .collect();
                (module.clone(), to)
            })
            .collect()
    }
}

fn layer(module: &str) -> &str {
    module.split("::").next().unwrap_or("")
}

#[test]
fn use_paths_are_parsed() {
    let paths = crate_paths("use crate::{a::{b, c::D}, e};\nlet x = crate::f::g(1);");
    let want: Vec<Vec<String>> = [
        vec!["a", "b"],
        vec!["a", "c", "D"],
        vec!["e"],
        vec!["f", "g"],
    ]
    .iter()
    .map(|p| p.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(paths, want);
    // A glob in a group (it made the parser loop forever).
    assert_eq!(
        crate_paths("use crate::m::N::{self, *};"),
        vec![vec!["m".to_string(), "N".into(), "self".into()]]
    );
    assert_eq!(module_of(Path::new("bpf/mod.rs")), "bpf");
    assert_eq!(module_of(Path::new("bpf/tracer.rs")), "bpf::tracer");
    assert_eq!(module_of(Path::new("lib.rs")), "");
    assert_eq!(code_of("a // crate::x\n/// crate::y\nb"), "a \n\nb");
}

#[test]
fn layers_import_only_below_them() {
    let source = Source::load();
    let mut wrong = Vec::new();
    for (module, targets) in source.edges() {
        let Some(from) = rank(layer(&module)) else {
            assert!(module.is_empty(), "{module}: a file outside the layers");
            continue;
        };
        for t in targets {
            let (l_from, l_to) = (layer(&module), layer(&t));
            let to = rank(l_to).unwrap_or_else(|| panic!("{module} names {t}: not in a layer"));
            if l_from != l_to && to >= from {
                wrong.push(format!("{module} -> {t}"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers: {wrong:#?}");
}

/// The first import cycle among `edges`, as the path that closes it.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    // Depth-first search for a back edge, reporting the cycle it closes.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == m) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_string());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|m| visit(m, edges, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_cycles() {
    if let Some(cycle) = find_cycle(&Source::load().edges()) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

/// The other crates keep the same rule: each file imports only files
/// below it (the crate root, which declares the modules, aside).
#[test]
fn no_import_cycles_in_the_other_crates() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (dir, min) in [
        ("nofail-ebpf/src", 10),
        ("testing/vm-tests/src", 10),
        ("xtask/src", 10),
    ] {
        let mut edges = Source::load_from(&workspace.join(dir), min).edges();
        // The root names every module (`mod x;`, and main's dispatch).
        edges.remove("");
        if let Some(cycle) = find_cycle(&edges) {
            panic!("{dir}: import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn a_cycle_is_found() {
    let edge = |a: &str, b: &str| (a.to_string(), BTreeSet::from([b.to_string()]));
    let edges = BTreeMap::from([
        edge("frames", "task"),
        edge("task", "maps"),
        edge("maps", "frames"),
    ]);
    assert_eq!(
        find_cycle(&edges).unwrap(),
        ["frames", "task", "maps", "frames"]
    );
    let acyclic = BTreeMap::from([edge("frames", "task"), edge("task", "maps")]);
    assert!(find_cycle(&acyclic).is_none());
}

#[test]
fn flags_live_in_cmd() {
    let source = Source::load();
    let outside: Vec<&String> = source
        .files
        .iter()
        .filter(|(m, _)| !m.is_empty() && layer(m) != "cmd")
        .filter(|(_, text)| {
            let code = code_of(text);
            code.contains("clap::Args") || code.contains("#[arg(") || code.contains("clap::Parser")
        })
        .map(|(m, _)| m)
        .collect();
    assert!(
        outside.is_empty(),
        "flags declared outside cmd/: {outside:?}"
    );
}
