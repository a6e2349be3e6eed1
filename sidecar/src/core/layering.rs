//! The module graph of docs/architecture.md ("Module dependencies"), checked
//! against the sources: the edges that once made cycles must not come back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The parts of the proxy: each builds on `core` (and `metrics`) only.
const PARTS: &[&str] = &["inbound", "outbound", "gateway", "discovery", "identity"];

/// The one edge between parts: the gateway forwards through the outbound
/// stack (its balancer, pools and mTLS), as an outbound request it routes.
const PART_EDGES: &[(&str, &str)] = &[("gateway", "outbound")];

/// `(from, to)`: `from` must not name `crate::to` outside its tests.
fn forbidden() -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    for &from in PARTS {
        // Flags parse into the parts' value types, never the other way.
        out.push((from, "config"));
        out.push((from, "app"));
        for &to in PARTS {
            if from != to && !PART_EDGES.contains(&(from, to)) {
                out.push((from, to));
            }
        }
    }
    for &to in PARTS.iter().chain(&["config", "app", "admin"]) {
        out.push(("core", to));
    }
    // The limit types live in core::limits, read by both.
    out.push(("config", "discovery"));
    out.push(("config", "app"));
    out
}

/// The part of a source file that is not a `mod tests { .. }` block.
fn non_test(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests {")
        .map_or(text, |at| &text[..at])
}

/// The crate's top-level modules each file names (`crate::x`, `crate::{x, y}`).
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        let list = match rest.strip_prefix('{') {
            Some(group) => group.split('}').next().unwrap_or(""),
            None => rest,
        };
        for item in list.split(',') {
            let name: String = item
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
            if !rest.starts_with('{') {
                break;
            }
        }
    }
    out
}

fn visit(dir: &Path, src: &Path, edges: &mut BTreeMap<String, BTreeSet<String>>) {
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            visit(&path, src, edges);
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy();
        if !name.ends_with(".rs") || name == "tests.rs" || name == "layering.rs" {
            continue;
        }
        let rel = path
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let top = rel.split('/').next().unwrap().trim_end_matches(".rs");
        let text = std::fs::read_to_string(&path).unwrap();
        for to in named_modules(non_test(&text)) {
            if to != top {
                edges.entry(top.to_string()).or_default().insert(to);
            }
        }
    }
}

#[test]
fn no_backwards_module_imports() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges = BTreeMap::new();
    visit(&src, &src, &mut edges);
    assert!(
        edges["app"].contains("core"),
        "the scan found nothing: {edges:?}"
    );
    let wrong: Vec<_> = forbidden()
        .into_iter()
        .filter(|(from, to)| edges.get(*from).is_some_and(|e| e.contains(*to)))
        .collect();
    assert!(
        wrong.is_empty(),
        "imports against the module graph (docs/architecture.md): {wrong:?}; all edges: {edges:?}"
    );
}

#[test]
fn named_modules_reads_paths_and_groups() {
    let got = named_modules(
        "use crate::core::serve;\nuse crate::{gateway, inbound::x};\nlet _ = crate::metrics::X;",
    );
    let want: BTreeSet<String> = ["core", "gateway", "inbound", "metrics"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(got, want);
}
