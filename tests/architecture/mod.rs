//! The layering of `src/`: every module imports only modules of the layers below its own, and
//! no two files import each other in a circle. The order is written here once; the README's
//! layout section shows it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, bottom first. A module may import modules of lower layers only: never one of
/// its own layer (peers stay independent) nor one above.
pub const LAYERS: &[&[&str]] = &[
    &["config", "clock", "templates"],
    &["api"],
    &["telemetry", "db", "limits"],
    &["mail"],
    &["state"],
    &["auth"],
    &["ledger"],
    &["plans"],
    &["payment"],
    &["gateway"],
    &["admin"],
    &["ops", "console"],
    &["serve"],
    &["startup", "cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// `src/api/error.rs` -> `api`; `src/config.rs` -> `config`.
fn module_of(path: &str) -> &str {
    let inside = path.strip_prefix("src/").unwrap_or(path);
    let first = inside.split('/').next().unwrap_or(inside);
    first.strip_suffix(".rs").unwrap_or(first)
}

/// The first segment of every `crate::` path in the code (comments left out), with
/// `crate::{a, b::c}` read as `a` and `b`.
fn crate_imports(source: &str) -> BTreeSet<String> {
    let mut imports = BTreeSet::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for part in group[..end].split(',') {
                    let name: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != "self" {
                        imports.insert(name);
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                imports.insert(name);
            }
        }
    }
    imports
}

/// The sibling files a file imports through `super::name` (a module's `mod.rs` re-exports are
/// not edges: they are how children reach what the module shares).
fn sibling_imports(path: &str, source: &str, files: &BTreeSet<String>) -> BTreeSet<String> {
    let dir = match path.rsplit_once('/') {
        Some((dir, _)) => dir,
        None => return BTreeSet::new(),
    };
    if path.ends_with("/mod.rs") {
        return BTreeSet::new();
    }
    let mut siblings = BTreeSet::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("super::") {
            rest = &rest[at + "super::".len()..];
            let mut names = Vec::new();
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                names.extend(group[..end].split(',').map(str::trim));
            } else {
                names.push(rest);
            }
            for name in names {
                let name: String = name
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                for candidate in [format!("{dir}/{name}.rs"), format!("{dir}/{name}/mod.rs")] {
                    if candidate != path && files.contains(&candidate) {
                        siblings.insert(candidate);
                    }
                }
            }
        }
    }
    siblings
}

/// Every way `sources` (path -> text) breaks the layering, as readable lines.
pub fn violations(sources: &BTreeMap<String, String>) -> Vec<String> {
    let mut found = Vec::new();
    let files: BTreeSet<String> = sources.keys().cloned().collect();
    let mut edges: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (path, source) in sources {
        let module = module_of(path);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(own) = layer_of(module) else {
            found.push(format!("{path}: module `{module}` is in no layer"));
            continue;
        };
        for import in crate_imports(source) {
            if import == module {
                continue;
            }
            match layer_of(&import) {
                Some(layer) if layer < own => {}
                Some(_) => found.push(format!(
                    "{path}: `{module}` imports `{import}`, which is not below it"
                )),
                None => found.push(format!("{path}: imports `crate::{import}`, in no layer")),
            }
        }
        edges.insert(path, sibling_imports(path, source, &files));
    }
    found.extend(cycles(&edges));
    found
}

/// Circles among files, each reported once by its first file.
fn cycles(edges: &BTreeMap<&str, BTreeSet<String>>) -> Vec<String> {
    fn visit<'a>(
        file: &'a str,
        edges: &'a BTreeMap<&str, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        found: &mut Vec<String>,
    ) {
        if let Some(start) = path.iter().position(|seen| *seen == file) {
            found.push(format!(
                "import cycle: {} -> {file}",
                path[start..].join(" -> ")
            ));
            return;
        }
        if !done.insert(file) {
            return;
        }
        path.push(file);
        for next in edges.get(file).into_iter().flatten() {
            visit(next, edges, path, done, found);
        }
        path.pop();
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for file in edges.keys() {
        visit(file, edges, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

/// Every `.rs` file under `src/`, keyed by its path from the crate root.
pub fn read_sources(root: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, sources: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, root, sources);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let relative = path.strip_prefix(root).unwrap().to_string_lossy();
                let text = std::fs::read_to_string(&path).expect("a source file");
                sources.insert(relative.replace('\\', "/"), text);
            }
        }
    }
    let mut sources = BTreeMap::new();
    walk(&root.join("src"), root, &mut sources);
    sources
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let sources = read_sources(Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(sources.len() > 40, "src/ was read");
    let violations = violations(&sources);
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn an_upward_import_a_peer_import_and_a_cycle_are_each_caught() {
    let source = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(path, text)| (path.to_string(), text.to_string()))
            .collect()
    };
    let upward = source(&[("src/auth/login.rs", "use crate::gateway::GatewayState;")]);
    assert_eq!(violations(&upward).len(), 1, "{:?}", violations(&upward));
    let grouped = source(&[("src/ledger/mod.rs", "use crate::{api, payment::Order};")]);
    assert_eq!(violations(&grouped).len(), 1, "{:?}", violations(&grouped));
    let peers = source(&[(
        "src/db/mod.rs",
        "let limiter = crate::limits::Limiter::new();",
    )]);
    assert_eq!(violations(&peers).len(), 1, "{:?}", violations(&peers));
    let circle = source(&[
        ("src/api/a.rs", "use super::b::B;"),
        ("src/api/b.rs", "use super::{c::C, ApiError};"),
        ("src/api/c.rs", "use super::a::A;"),
        ("src/api/mod.rs", "use crate::config::Settings;"),
    ]);
    let found = violations(&circle);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("src/api/a.rs -> src/api/b.rs"),
        "{found:?}"
    );
    let fine = source(&[
        (
            "src/gateway/proxy.rs",
            "use crate::payment::account_plan; // crate::admin",
        ),
        ("src/api/a.rs", "use super::b::B;"),
        ("src/api/b.rs", "use super::ApiError;"),
    ]);
    assert!(violations(&fine).is_empty(), "{:?}", violations(&fine));
}
