//! The one-way flow, enforced: every file under `watchdog/src` belongs to a room (its first
//! path component), and a room may only name the rooms (and external crates) the table in
//! `ARCHITECTURE.md` allows. Reads the sources as text; needs no root and no kernel.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

/// (room, rooms it may import besides itself). `lib.rs` and `main.rs` are the crate's edge
/// and may name every room.
const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("config", &["model"]),
    ("findings", &["model"]),
    ("overlay", &["model"]),
    ("netlink", &["model"]),
    ("detect", &["model", "findings", "config", "overlay"]),
    ("sources", &["model", "config", "netlink"]),
    (
        "pipeline",
        &["model", "detect", "findings", "config", "overlay"],
    ),
    (
        "sinks",
        &["model", "findings", "pipeline", "config", "repair::event"],
    ),
    (
        "repair",
        &["model", "findings", "config", "overlay", "netlink"],
    ),
    (
        "commands",
        &[
            "model", "config", "findings", "overlay", "netlink", "detect", "sources", "pipeline",
            "sinks", "repair",
        ],
    ),
];

/// External crates the pure rooms must not name: the kernel, netlink and async runtimes
/// stay in `sources` (and the commands that drive them).
const KERNEL_CRATES: &[&str] = &[
    "aya",
    "aya_log",
    "aya_obj",
    "netlink_packet_core",
    "netlink_packet_route",
    "netlink_sys",
    "rtnetlink",
    "tokio",
];

/// Rooms that must stay free of [`KERNEL_CRATES`].
const PURE: &[&str] = &["model", "overlay", "detect", "findings", "config"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The file's text without comments (line, doc and block) and string/char literal
/// contents, so only code is searched.
fn code_of(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            i += end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(rest.len(), |e| e + 2);
            i += end;
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") {
            let hashes = rest[1..].chars().take_while(|&c| c == '#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let body = 2 + hashes;
            let end = rest[body..]
                .find(&close)
                .map_or(rest.len(), |e| body + e + close.len());
            out.push_str("\"\"");
            i += end;
        } else if bytes[i] == b'"' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            i = j + 1;
        } else if bytes[i] == b'\'' && rest.len() >= 3 {
            // A char literal ('x', '\n', '\''), not a lifetime ('a).
            let close = if rest.as_bytes()[1] == b'\\' {
                rest[2..].find('\'').map(|e| e + 2)
            } else {
                let width = rest[1..].chars().next().map_or(1, char::len_utf8);
                rest[1 + width..].starts_with('\'').then_some(1 + width)
            };
            match close {
                Some(end) => {
                    out.push_str("' '");
                    i += end + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let c = rest.chars().next().expect("non-empty");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first path segment(s) of every item in a `crate::` path or `crate::{…}` group:
/// `crate::sources::probes::X` gives `sources::probes`.
fn crate_paths(code: &str, root: &str) -> Vec<String> {
    let mut found = Vec::new();
    let needle = format!("{root}::");
    let mut from = 0;
    while let Some(at) = code[from..].find(&needle) {
        let start = from + at;
        from = start + needle.len();
        if code[..start].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        collect(&code[from..], &mut found);
    }
    found
}

/// Reads `a::b…` or `{a::b, c, d::{e}}` at the start of `rest`, pushing `a::b`, `c`, `d::e`
/// (two segments at most).
fn collect(rest: &str, found: &mut Vec<String>) {
    let rest = rest.trim_start();
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut item_start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    collect(&group[item_start..i], found);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    collect(&group[item_start..i], found);
                    item_start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let first: String = rest.chars().take_while(|&c| is_ident(c)).collect();
    if first.is_empty() || first == "self" {
        return;
    }
    let after = rest[first.len()..].trim_start();
    let tail = after
        .strip_prefix("::")
        .map(str::trim_start)
        .unwrap_or_default();
    if tail.starts_with('{') {
        let mut inner = Vec::new();
        collect(tail, &mut inner);
        for item in inner {
            let head = item.split("::").next().unwrap_or_default();
            found.push(format!("{first}::{head}"));
        }
        return;
    }
    let second: String = tail.chars().take_while(|&c| is_ident(c)).collect();
    if second.is_empty() {
        found.push(first);
    } else {
        found.push(format!("{first}::{second}"));
    }
}

/// External crates named as a path root (`aya::…`, `use tokio::…`).
fn external_roots(code: &str) -> BTreeSet<String> {
    let mut roots = BTreeSet::new();
    for name in KERNEL_CRATES {
        let needle = format!("{name}::");
        let mut from = 0;
        while let Some(at) = code[from..].find(&needle) {
            let start = from + at;
            from = start + needle.len();
            let before = code[..start].chars().next_back();
            if before.is_some_and(|c| is_ident(c) || c == ':') {
                continue;
            }
            roots.insert((*name).to_owned());
        }
    }
    roots
}

/// The module path of a file: `sinks/alerts/mod.rs` → [sinks, alerts].
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().expect("a file name");
    if file != "mod.rs" && file != "lib.rs" && file != "main.rs" {
        parts.push(file.trim_end_matches(".rs").to_owned());
    }
    parts
}

/// Paths reached through `super::` that leave the room, as crate paths.
fn super_escapes(code: &str, module: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("super::") {
        let start = from + at;
        if code[..start]
            .chars()
            .next_back()
            .is_some_and(|c| is_ident(c) || c == ':')
        {
            from = start + 7;
            continue;
        }
        let mut depth = 0;
        let mut end = start;
        while code[end..].starts_with("super::") {
            depth += 1;
            end += 7;
        }
        from = end;
        if depth >= module.len() {
            collect(&code[end..], &mut found);
        }
    }
    found
}

/// Every import of `watchdog/src` that goes against the flow, as readable lines.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let rooms: Vec<&str> = ALLOWED.iter().map(|(room, _)| *room).collect();
    let mut problems = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src").to_owned();
        let shown = format!("watchdog/src/{}", relative.display());
        let module = module_path(&relative);
        let Some(room) = module.first().cloned() else {
            continue; // lib.rs, main.rs: the crate's edge.
        };
        let Some((_, allowed)) = ALLOWED.iter().find(|(name, _)| *name == room) else {
            problems.push(format!(
                "{shown}: `{room}` is not a room of the layering table; add it to \
                 ARCHITECTURE.md and to ALLOWED in watchdog/tests/layering.rs"
            ));
            continue;
        };
        let code = code_of(&fs::read_to_string(&file).expect("read source"));
        let mut named = crate_paths(&code, "crate");
        named.extend(super_escapes(&code, &module));
        for path in named {
            let target = path.split("::").next().unwrap_or_default();
            if target == room || !rooms.contains(&target) {
                continue;
            }
            let ok = allowed.iter().any(|rule| {
                *rule == target || path == *rule || path.starts_with(&format!("{rule}::"))
            });
            if !ok {
                problems.push(format!(
                    "{shown}: `{room}` imports `crate::{path}`; {room} may import {}",
                    if allowed.is_empty() {
                        "nothing else of the crate".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                ));
            }
        }
        if PURE.contains(&room.as_str()) {
            for name in external_roots(&code) {
                problems.push(format!(
                    "{shown}: `{room}` names `{name}`; {room} must stay plain (no kernel, \
                     netlink or async runtime types)"
                ));
            }
        }
    }
    problems.dedup();
    problems
}

#[test]
fn imports_follow_the_flow() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let problems = violations(&src);
    assert!(
        problems.is_empty(),
        "{} import(s) against the flow (see ARCHITECTURE.md):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn the_checker_sees_grouped_nested_and_super_imports() {
    let code = code_of(
        "use crate::{model::net::Snapshot, sources::{probes, mirror}, findings};\n\
         // use crate::sinks::metrics;\n\
         let s = \"crate::sinks\"; fn f() -> crate::pipeline::Pipeline { todo!() }\n\
         use super::super::sinks::http;",
    );
    let mut paths = crate_paths(&code, "crate");
    paths.sort();
    assert_eq!(
        paths,
        [
            "findings",
            "model::net",
            "pipeline::Pipeline",
            "sources::probes",
            "sources::mirror"
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    let module = vec!["detect".to_owned(), "gateway".to_owned()];
    assert_eq!(super_escapes(&code, &module), ["sinks::http"]);
    assert_eq!(
        external_roots("use aya::maps; let x = tokio::spawn(f); my_aya::x; a::tokio::b"),
        ["aya", "tokio"].iter().map(|s| s.to_string()).collect()
    );
}
