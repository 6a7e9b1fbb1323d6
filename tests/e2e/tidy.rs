//! The rules of ARCHITECTURE.md's "Rules checked by a test", checked against the workspace:
//! which crates a library may depend on (and whether on Burn, directly or, for the crates that
//! must stay free of tensor code, anywhere in their dependency tree), no command-line flag spelled in
//! a library crate, `unsafe` only in the listed files, every package with the workspace's lints
//! and crate documentation. Each check is a function of text, so that the last test can show
//! it failing on a planted violation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `.rs` files under `dir`, recursively (`target/` excluded).
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|x| x == "rs") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// What a crate may depend on, from the rules' table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    allowed: BTreeSet<String>,
    burn: String,
}

/// The rules' section of ARCHITECTURE.md: the dependency table and the list of `unsafe`
/// files.
fn rules(architecture: &str) -> (BTreeMap<String, Rule>, BTreeSet<String>) {
    let section = architecture
        .split("## Rules checked by a test")
        .nth(1)
        .expect("ARCHITECTURE.md has the section \"Rules checked by a test\"");
    let section = section.split("\n## ").next().unwrap_or(section);
    let names = |cell: &str| -> BTreeSet<String> {
        cell.split(',')
            .map(|c| c.trim().trim_matches('`').to_string())
            .filter(|c| !c.is_empty())
            .collect()
    };
    let mut table = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
        assert_eq!(cells.len(), 3, "a row of three cells: {line}");
        table.insert(
            cells[0].trim().trim_matches('`').to_string(),
            Rule {
                allowed: names(cells[1]),
                burn: cells[2].trim().to_string(),
            },
        );
    }
    let unsafe_files = section
        .lines()
        .filter_map(|l| l.strip_prefix("- `"))
        .filter_map(|l| l.strip_suffix('`'))
        .map(str::to_string)
        .collect();
    (table, unsafe_files)
}

/// The `[dependencies]` of a manifest: name and whether it is optional.
fn dependencies(manifest: &str) -> Vec<(String, bool)> {
    let value: toml::Table = manifest.parse().expect("a Cargo.toml parses");
    let Some(toml::Value::Table(deps)) = value.get("dependencies") else {
        return Vec::new();
    };
    deps.iter()
        .map(|(name, spec)| {
            let optional = spec
                .get("optional")
                .and_then(toml::Value::as_bool)
                .unwrap_or(false);
            (name.clone(), optional)
        })
        .collect()
}

/// The violations of `rules` by crates (name, manifest text), one sentence each; a crate
/// without a row and a row without a crate are violations too.
fn dependency_violations(
    rules: &BTreeMap<String, Rule>,
    crates: &[(String, String)],
) -> Vec<String> {
    let mut bad = Vec::new();
    for (name, manifest) in crates {
        let Some(rule) = rules.get(name) else {
            bad.push(format!("crates/{name} has no row in the dependency table"));
            continue;
        };
        for (dep, optional) in dependencies(manifest) {
            let is_burn = dep == "burn" || dep.starts_with("burn-");
            if is_burn {
                let ok = match rule.burn.as_str() {
                    "yes" => true,
                    "optional" => optional,
                    _ => false, // "no", "never"
                };
                if !ok {
                    bad.push(format!(
                        "{name} depends on {dep}{}, but its Burn rule is \"{}\"",
                        if optional { " (optional)" } else { "" },
                        rule.burn
                    ));
                }
            } else if dep.starts_with("scl-") && !rule.allowed.contains(&dep) {
                bad.push(format!(
                    "{name} depends on {dep}, which its row does not allow"
                ));
            }
        }
    }
    for name in rules.keys() {
        if !crates.iter().any(|(c, _)| c == name) {
            bad.push(format!(
                "the dependency table names {name}, which is not under crates/"
            ));
        }
    }
    bad
}

/// The Burn crates in `cargo tree`'s listing of one package's normal dependencies
/// (`--prefix none`, one `name vX.Y.Z` per line), each once.
fn burn_in_tree(listing: &str) -> BTreeSet<String> {
    listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name == "burn" || name.starts_with("burn-"))
        .map(str::to_string)
        .collect()
}

/// The violations of the `never` rule: a crate whose dependency tree (with its default
/// features, as a user gets it) has Burn anywhere in it. `tree(name)` lists the tree.
fn tree_violations(rules: &BTreeMap<String, Rule>, tree: impl Fn(&str) -> String) -> Vec<String> {
    rules
        .iter()
        .filter(|(_, rule)| rule.burn == "never")
        .filter_map(|(name, _)| {
            let burn = burn_in_tree(&tree(name));
            (!burn.is_empty()).then(|| {
                format!(
                    "{name} pulls in {} through its dependencies, but its Burn rule is \"never\"",
                    burn.into_iter().collect::<Vec<_>>().join(", ")
                )
            })
        })
        .collect()
}

/// `cargo tree -p name -e normal --prefix none` of the workspace (the lock file's versions,
/// no network).
fn cargo_tree(name: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = std::process::Command::new(cargo)
        .current_dir(repository())
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            name,
        ])
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree -p {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("cargo tree prints UTF-8")
}

/// The `--long` options of the command line, from `#[arg(...long...)]` attributes of `xtask`'s
/// sources: the field after the attribute (or `long = "name"`).
fn cli_flags(sources: &[String]) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for text in sources {
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(args) = line.strip_prefix("#[arg(") else {
                continue;
            };
            if !args.contains("long") {
                continue;
            }
            if let Some(rest) = args.split("long = \"").nth(1) {
                flags.insert(format!("--{}", rest.split('"').next().unwrap_or_default()));
                continue;
            }
            let field = lines[i + 1..]
                .iter()
                .find(|l| !l.starts_with("#[") && !l.starts_with("///") && !l.is_empty());
            if let Some(field) = field {
                let field = field.trim_start_matches("pub ");
                if let Some((name, _)) = field.split_once(':') {
                    flags.insert(format!("--{}", name.trim().replace('_', "-")));
                }
            }
        }
    }
    flags
}

/// The code of a library source file that the flag rule covers: no comment lines, nothing
/// from the first `#[cfg(test)]` on.
fn library_code(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

/// Where a library file (path, text) spells one of `flags`, one sentence each.
fn flag_violations(flags: &BTreeSet<String>, files: &[(String, String)]) -> Vec<String> {
    let mut bad = Vec::new();
    for (path, text) in files {
        if path.ends_with("/tests.rs") {
            continue;
        }
        for (n, line) in library_code(text) {
            for flag in flags {
                let spelled = line.match_indices(flag.as_str()).any(|(at, _)| {
                    let after = line[at + flag.len()..].chars().next();
                    !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                });
                if spelled {
                    bad.push(format!("{path}:{} spells the flag {flag}", n + 1));
                }
            }
        }
    }
    bad
}

/// Where a source file (path, text) other than `scl-fs`'s writes or renames a file itself
/// outside its tests, one sentence each.
fn write_violations(files: &[(String, String)]) -> Vec<String> {
    let mut bad = Vec::new();
    for (path, text) in files {
        if path.starts_with("crates/scl-fs/") || path.ends_with("/tests.rs") {
            continue;
        }
        for (n, line) in library_code(text) {
            for call in ["std::fs::write(", "fs::rename("] {
                if line.contains(call) {
                    bad.push(format!(
                        "{path}:{} calls {} instead of scl-fs",
                        n + 1,
                        call.trim_end_matches('(')
                    ));
                }
            }
        }
    }
    bad
}

/// Where a file (path, text) outside `allowed` holds `unsafe` code, one sentence each.
fn unsafe_violations(allowed: &BTreeSet<String>, files: &[(String, String)]) -> Vec<String> {
    let mut bad = Vec::new();
    for (path, text) in files {
        if allowed.contains(path) {
            continue;
        }
        let hit = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .any(|l| {
                l.contains("unsafe {")
                    || l.contains("unsafe fn ")
                    || l.contains("unsafe impl ")
                    || l.contains("allow(unsafe_code)")
            });
        if hit {
            bad.push(format!("{path} holds unsafe code but is not listed"));
        }
    }
    for path in allowed {
        if !files.iter().any(|(p, _)| p == path) {
            bad.push(format!(
                "the unsafe list names {path}, which does not exist"
            ));
        }
    }
    bad
}

/// Packages (folder, manifest, root source) without the workspace's lints or crate docs.
fn package_violations(packages: &[(String, String, String)]) -> Vec<String> {
    let mut bad = Vec::new();
    for (folder, manifest, root) in packages {
        let value: toml::Table = manifest.parse().expect("a Cargo.toml parses");
        let lints = value
            .get("lints")
            .and_then(|l| l.get("workspace"))
            .and_then(toml::Value::as_bool);
        if lints != Some(true) {
            bad.push(format!(
                "{folder}/Cargo.toml lacks `[lints] workspace = true`"
            ));
        }
        if !root.trim_start().starts_with("//!") {
            bad.push(format!(
                "{folder} has no crate documentation (`//!` at the top)"
            ));
        }
    }
    bad
}

/// Paths relative to the repository, with `/` separators.
fn relative(path: &Path) -> String {
    path.strip_prefix(repository())
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

fn crate_folders() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repository().join("crates"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_architecture_rules_hold() {
    let root = repository();
    let (table, unsafe_files) = rules(&read(&root.join("ARCHITECTURE.md")));
    assert!(
        table.len() >= 10 && unsafe_files.len() >= 4,
        "{table:?} {unsafe_files:?}"
    );
    let crates: Vec<(String, String)> = crate_folders()
        .into_iter()
        .map(|c| {
            let manifest = read(&root.join("crates").join(&c).join("Cargo.toml"));
            (c, manifest)
        })
        .collect();
    let mut bad = dependency_violations(&table, &crates);
    bad.extend(tree_violations(&table, cargo_tree));

    let xtask: Vec<String> = rust_files(&root.join("xtask/src"))
        .iter()
        .map(|p| read(p))
        .collect();
    let flags = cli_flags(&xtask);
    for expected in [
        "--out",
        "--set",
        "--cell",
        "--data-dir",
        "--backend",
        "--resume",
    ] {
        assert!(
            flags.contains(expected),
            "{expected} not found among {flags:?}"
        );
    }
    let library: Vec<(String, String)> = crate_folders()
        .iter()
        .flat_map(|c| rust_files(&root.join("crates").join(c).join("src")))
        .map(|p| (relative(&p), read(&p)))
        .collect();
    bad.extend(flag_violations(&flags, &library));
    let writers: Vec<(String, String)> = rust_files(&root.join("xtask/src"))
        .into_iter()
        .map(|p| (relative(&p), read(&p)))
        .chain(library.iter().cloned())
        .collect();
    bad.extend(write_violations(&writers));

    let everything: Vec<(String, String)> =
        ["crates", "xtask", "tests", "examples", "downstream", "fuzz"]
            .iter()
            .flat_map(|d| rust_files(&root.join(d)))
            .map(|p| (relative(&p), read(&p)))
            // This file spells the patterns it looks for.
            .filter(|(p, _)| p != "tests/e2e/tidy.rs")
            .collect();
    bad.extend(unsafe_violations(&unsafe_files, &everything));

    let mut packages: Vec<(String, String, String)> = crate_folders()
        .into_iter()
        .map(|c| format!("crates/{c}"))
        .chain(["xtask", "tests", "examples"].map(String::from))
        .map(|folder| {
            let dir = root.join(&folder);
            let source = ["src/lib.rs", "src/main.rs", "lib.rs"]
                .iter()
                .map(|s| dir.join(s))
                .find(|p| p.is_file())
                .unwrap_or_else(|| panic!("{folder} has no lib.rs or main.rs"));
            (folder, read(&dir.join("Cargo.toml")), read(&source))
        })
        .collect();
    packages.sort();
    bad.extend(package_violations(&packages));
    assert!(
        bad.is_empty(),
        "ARCHITECTURE.md's rules are broken:\n{}",
        bad.join("\n")
    );
}

#[test]
fn each_check_fails_on_a_planted_violation() {
    let (table, unsafe_files) = rules(&read(&repository().join("ARCHITECTURE.md")));
    // scl-batching may depend on no scl-* crate and not on Burn; scl-data only optionally.
    let planted = vec![
        (
            "scl-batching".to_string(),
            "[dependencies]\nscl-train = { path = \"../scl-train\" }\nburn-tensor = \"0.22\"\n"
                .to_string(),
        ),
        (
            "scl-data".to_string(),
            "[dependencies]\nburn = { workspace = true }\n".to_string(),
        ),
        ("scl-new".to_string(), "[dependencies]\n".to_string()),
    ];
    let bad = dependency_violations(&table, &planted);
    for expected in [
        "scl-batching depends on scl-train, which its row does not allow",
        "scl-batching depends on burn-tensor, but its Burn rule is \"no\"",
        "scl-data depends on burn, but its Burn rule is \"optional\"",
        "crates/scl-new has no row in the dependency table",
    ] {
        assert!(
            bad.iter().any(|b| b == expected),
            "{expected:?} not in {bad:?}"
        );
    }
    // A crate whose rule is "never" may not reach Burn through another crate either.
    let tree = |name: &str| match name {
        "scl-report" => {
            "scl-report v0.1.0\nscl-train v0.1.0\nburn v0.22.1\nburn-tensor v0.22.1\n".to_string()
        }
        _ => "scl-types v0.1.0\nserde v1.0.0\n".to_string(),
    };
    assert_eq!(
        tree_violations(&table, tree),
        [
            "scl-report pulls in burn, burn-tensor through its dependencies, but its Burn rule is \"never\""
        ]
    );
    let optional = vec![(
        "scl-data".to_string(),
        "[dependencies]\nburn = { workspace = true, optional = true }\n".to_string(),
    )];
    assert!(
        dependency_violations(&table, &optional)
            .iter()
            .all(|b| !b.starts_with("scl-data")),
        "an optional Burn is allowed in scl-data"
    );

    let flags = cli_flags(&[
        "#[arg(long, default_value = \"runs\")]\npub out: PathBuf,\n#[arg(long = \"data-dir\")]\ndata: Option<PathBuf>,\n#[arg(short)]\nquiet: bool,"
            .to_string(),
    ]);
    assert_eq!(
        flags,
        BTreeSet::from(["--out".to_string(), "--data-dir".to_string()])
    );
    let files = vec![(
        "crates/x/src/lib.rs".to_string(),
        "// a comment may say --out\nlet m = \"choose another --out\";\nlet n = \"--outer\";\n#[cfg(test)]\nlet t = \"--out\";"
            .to_string(),
    )];
    assert_eq!(
        flag_violations(&flags, &files),
        ["crates/x/src/lib.rs:2 spells the flag --out"]
    );

    let files = vec![(
        "crates/x/src/runner.rs".to_string(),
        "// std::fs::write( in a comment\nstd::fs::rename(&a, &b)?;\n#[cfg(test)]\nstd::fs::write(p, \"\")"
            .to_string(),
    )];
    assert_eq!(
        write_violations(&files),
        ["crates/x/src/runner.rs:2 calls fs::rename instead of scl-fs"]
    );

    let files = vec![
        (
            "crates/x/src/lib.rs".to_string(),
            "// unsafe { in a comment }\nfn f() { unsafe { g() } }".to_string(),
        ),
        (
            "crates/y/src/lib.rs".to_string(),
            "fn safe() {}".to_string(),
        ),
    ];
    let bad = unsafe_violations(&unsafe_files, &files);
    assert!(bad.contains(&"crates/x/src/lib.rs holds unsafe code but is not listed".to_string()));
    assert!(!bad.iter().any(|b| b.contains("crates/y")));

    let bad = package_violations(&[(
        "crates/z".to_string(),
        "[package]\nname = \"z\"\n".to_string(),
        "use std::fs;".to_string(),
    )]);
    assert_eq!(
        bad,
        [
            "crates/z/Cargo.toml lacks `[lints] workspace = true`",
            "crates/z has no crate documentation (`//!` at the top)"
        ]
    );
}
