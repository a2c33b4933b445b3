//! Which top-level module may use which: dependencies point one way, from the entry
//! points down to the model, and the core never names a concrete adapter.
//!
//! The layers, lowest first (a module uses only modules listed before it, or beside it
//! where [`ALLOWED`] says so):
//!
//! 1. `error`, `clock`, `metrics`, `request`, `cpu`, `serde_base64` — utilities;
//! 2. `model` (records, filters, configuration and their validation);
//! 3. `index`, `segment` (the vector and sparse indexes, the on-disk formats);
//! 4. the ports — `storage`, `crypto`, `catalog`, `jobs` — with their local
//!    implementations;
//! 5. `engine` (writes, reads, compaction, garbage collection), over the ports only;
//! 6. `auth`, `access`, `ingest`, `migrate` (who may do what; bulk ingestion; imports);
//! 7. `api` (the HTTP layer), `aws` (the AWS adapters of the ports), `faults` (test
//!    decorators of the ports).
//!
//! The test below reads the crate's sources and checks every `crate::` path outside
//! comments and test modules against [`ALLOWED`]; a new edge is a design decision, made by
//! adding it there. It also checks that the engine and the layers above it, outside their
//! tests, never name a local or AWS implementation of a port (`jobs::local`,
//! `catalog::sqlite`, `storage::local`, …): the entry points choose those.

/// Every allowed edge: (module, the modules it may use).
const ALLOWED: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("clock", &[]),
    ("serde_base64", &[]),
    ("metrics", &["error"]),
    ("request", &["error"]),
    ("cpu", &["error"]),
    ("model", &["error"]),
    ("index", &["error", "model"]),
    ("segment", &["error", "model"]),
    ("storage", &["error", "metrics"]),
    ("crypto", &["cpu", "error", "storage"]),
    ("catalog", &["clock", "error", "model", "serde_base64"]),
    ("jobs", &["error"]),
    (
        "engine",
        &[
            "catalog", "clock", "cpu", "crypto", "error", "index", "jobs", "metrics", "model",
            "request", "segment", "storage",
        ],
    ),
    ("auth", &["catalog", "clock", "error", "model", "request"]),
    (
        "access",
        &["auth", "catalog", "engine", "error", "metrics", "model"],
    ),
    (
        "ingest",
        &[
            "catalog", "clock", "crypto", "engine", "error", "jobs", "metrics", "model", "storage",
        ],
    ),
    ("migrate", &["error", "model"]),
    (
        "api",
        &[
            "access", "auth", "catalog", "clock", "engine", "error", "metrics", "model", "request",
        ],
    ),
    (
        "aws",
        &["catalog", "crypto", "error", "jobs", "model", "storage"],
    ),
    ("faults", &["catalog", "error", "model", "storage"]),
];

/// Implementations of ports that only the entry points (and tests) may name.
const ADAPTERS: &[&str] = &[
    "crate::jobs::local",
    "crate::catalog::sqlite",
    "crate::storage::local",
    "crate::storage::memory",
    "crate::crypto::local",
    "crate::aws",
];

/// Modules that must not name an adapter outside their tests.
const ADAPTER_FREE: &[&str] = &["engine", "auth", "access", "ingest", "api"];

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    use super::*;

    /// The crate's source files, with their top-level module.
    fn sources() -> Vec<(String, PathBuf)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let relative = path.strip_prefix(&root).unwrap();
                    let first = relative.components().next().unwrap().as_os_str();
                    let module = first.to_str().unwrap().trim_end_matches(".rs").to_string();
                    files.push((module, path));
                }
            }
        }
        files.sort();
        files
    }

    /// `source` without comment lines and without `#[cfg(test)]` modules (a test suite
    /// file, `tests.rs`, `conformance.rs` or `fixtures.rs`, is all test code).
    fn non_test_lines(path: &Path, source: &str) -> Vec<(usize, String)> {
        let name = path.file_name().unwrap().to_str().unwrap();
        if matches!(name, "tests.rs" | "conformance.rs" | "fixtures.rs") {
            return Vec::new();
        }
        let lines: Vec<&str> = source.lines().collect();
        let mut kept = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i].trim();
            let next = lines.get(i + 1).map_or("", |l| l.trim());
            let test_module = line == "#[cfg(test)]"
                && (next.starts_with("mod ") || next.starts_with("pub(crate) mod "))
                && next.ends_with('{');
            if test_module {
                // Skip to the line that closes the module's brace.
                let mut depth = 0i64;
                i += 1;
                while i < lines.len() {
                    depth += lines[i].matches('{').count() as i64;
                    depth -= lines[i].matches('}').count() as i64;
                    i += 1;
                    if depth <= 0 {
                        break;
                    }
                }
                continue;
            }
            if !line.starts_with("//") {
                kept.push((i + 1, lines[i].to_string()));
            }
            i += 1;
        }
        kept
    }

    /// The top-level modules `line` names through `crate::` paths.
    fn named_modules(line: &str) -> impl Iterator<Item = &str> {
        line.match_indices("crate::").map(move |(at, _)| {
            let rest = &line[at + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
    }

    #[test]
    fn modules_use_only_the_modules_they_are_allowed_to() {
        let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
            .iter()
            .map(|(m, uses)| (*m, uses.iter().copied().collect()))
            .collect();
        let mut unexpected = Vec::new();
        let mut modules = BTreeSet::new();
        for (module, path) in sources() {
            if module == "lib" || module == "layering" {
                continue;
            }
            modules.insert(module.clone());
            let Some(may_use) = allowed.get(module.as_str()) else {
                unexpected.push(format!("{module} is not in layering::ALLOWED"));
                continue;
            };
            let source = std::fs::read_to_string(&path).unwrap();
            for (number, line) in non_test_lines(&path, &source) {
                for used in named_modules(&line) {
                    if used != module && !used.is_empty() && !may_use.contains(used) {
                        unexpected
                            .push(format!("{}:{number}: {module} uses {used}", path.display()));
                    }
                }
            }
        }
        assert!(
            unexpected.is_empty(),
            "edges not in layering::ALLOWED:\n{}",
            unexpected.join("\n")
        );
        // The list names no module that is gone.
        for module in allowed.keys() {
            assert!(
                modules.contains(*module),
                "ALLOWED names {module}, which is gone"
            );
        }
    }

    #[test]
    fn the_core_never_names_an_adapter() {
        let mut named = Vec::new();
        for (module, path) in sources() {
            if !ADAPTER_FREE.contains(&module.as_str()) {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            for (number, line) in non_test_lines(&path, &source) {
                for adapter in ADAPTERS.iter().filter(|a| line.contains(*a)) {
                    named.push(format!("{}:{number}: {adapter}", path.display()));
                }
            }
        }
        assert!(named.is_empty(), "adapters named:\n{}", named.join("\n"));
    }

    #[test]
    fn the_allowed_edges_have_no_cycle() {
        let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
        // Depth-first search; `path` is the chain from the current root.
        fn visit<'a>(
            module: &'a str,
            allowed: &BTreeMap<&'a str, &'a [&'a str]>,
            path: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
        ) {
            if let Some(at) = path.iter().position(|m| *m == module) {
                panic!("cycle: {} -> {module}", path[at..].join(" -> "));
            }
            if !done.insert(module) {
                return;
            }
            path.push(module);
            for used in allowed.get(module).copied().unwrap_or_default() {
                visit(used, allowed, path, done);
            }
            path.pop();
        }
        let mut done = BTreeSet::new();
        for module in allowed.keys() {
            visit(module, &allowed, &mut Vec::new(), &mut done);
        }
    }

    #[test]
    fn test_modules_and_comments_are_left_out() {
        let source = "use crate::a::X;\n// crate::b\n#[cfg(test)]\nmod tests {\n    use crate::c;\n    fn f() {\n    }\n}\nuse crate::d;\n";
        let kept: Vec<String> = non_test_lines(Path::new("x.rs"), source)
            .into_iter()
            .flat_map(|(_, l)| named_modules(&l).map(str::to_string).collect::<Vec<_>>())
            .collect();
        assert_eq!(kept, ["a", "d"]);
    }
}
