//! The layering of `src/`, held by a test: each top-level module may use
//! only the modules its row of [`ALLOWED`] names, the table itself has no
//! cycle, and outside `store` and `app` nothing names a concrete store.
//!
//! It reads every file under `src/` (but `main.rs`, the binary, and
//! `lib.rs`, the table of contents), blanks out comments and string and
//! character literals, and collects each `crate::x` path, `use crate::x…`
//! and `use crate::{a, b::c}` group (nested braces included); a
//! `crate::name!` is a macro at the crate root, not a module, and is
//! skipped. `super::` paths stay inside a top-level module, so they cannot
//! cross a layer. The same table is in ARCHITECTURE.md.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Who may use whom, top to bottom: `app` and `cli` → `http` → `ingest`,
/// `read`, `flush` → `site` → `count` → `store` → the bottom (`config`
/// over `period` and `page`; `sketch`, `metrics`, `background`).
const ALLOWED: &[(&str, &[&str])] = &[
    (
        "app",
        &[
            "cli",
            "http",
            "ingest",
            "read",
            "flush",
            "site",
            "count",
            "store",
            "config",
            "period",
            "page",
            "sketch",
            "metrics",
            "background",
        ],
    ),
    ("cli", &["flush", "config"]),
    (
        "http",
        &[
            "ingest",
            "read",
            "flush",
            "site",
            "count",
            "store",
            "config",
            "period",
            "page",
            "sketch",
            "metrics",
            "background",
        ],
    ),
    (
        "ingest",
        &[
            "site",
            "count",
            "config",
            "period",
            "page",
            "sketch",
            "metrics",
            "background",
        ],
    ),
    (
        "read",
        &[
            "site",
            "count",
            "store",
            "config",
            "period",
            "page",
            "sketch",
            "metrics",
            "background",
        ],
    ),
    (
        "flush",
        &[
            "site",
            "count",
            "store",
            "config",
            "period",
            "page",
            "sketch",
            "metrics",
            "background",
        ],
    ),
    (
        "site",
        &[
            "count",
            "store",
            "config",
            "period",
            "page",
            "sketch",
            "metrics",
            "background",
        ],
    ),
    (
        "count",
        &[
            "store",
            "config",
            "period",
            "page",
            "sketch",
            "metrics",
            "background",
        ],
    ),
    ("store", &["period", "sketch", "metrics", "background"]),
    ("config", &["period", "page"]),
    ("period", &[]),
    ("page", &[]),
    ("sketch", &[]),
    ("metrics", &[]),
    ("background", &[]),
];

/// Where a concrete store may be named.
const STORE_OWNERS: &[&str] = &["store", "app"];

/// A reference from one file to another top-level module.
struct Reference {
    file: PathBuf,
    line: usize,
    target: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("read src/")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The library's files, each with its top-level module.
fn library_files() -> Vec<(String, PathBuf)> {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&src).expect("under src/").to_path_buf();
            let first = rel.components().next()?.as_os_str().to_str()?.to_string();
            if first == "main.rs" || first == "lib.rs" {
                return None;
            }
            let module = first.strip_suffix(".rs").unwrap_or(&first).to_string();
            Some((module, path))
        })
        .collect()
}

/// `text` with comments, string literals and character literals replaced by
/// spaces (newlines kept, so byte offsets keep their lines).
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p);
            blank(&mut out, i, end);
            i = end;
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            let mut j = i;
            while j < b.len() {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if (rest.starts_with(b"r#") || rest.starts_with(b"r\""))
            && (i == 0
                || !is_ident(b[i - 1])
                || (b[i - 1] == b'b' && (i < 2 || !is_ident(b[i - 2]))))
        {
            let hashes = rest[1..].iter().take_while(|&&c| c == b'#').count();
            if rest.get(1 + hashes) != Some(&b'"') {
                i += 1;
                continue;
            }
            let mut close = vec![b'"'];
            close.extend(std::iter::repeat_n(b'#', hashes));
            let body = i + 2 + hashes;
            let end = b[body..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(b.len(), |p| body + p + close.len());
            blank(&mut out, i, end);
            i = end;
        } else if rest[0] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if rest[0] == b'\'' {
            // A character literal ('x', '\n', '\u{..}', '"'), or a lifetime.
            let end = if rest.get(1) == Some(&b'\\') {
                rest[2..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .map(|p| i + 2 + p + 1)
            } else {
                let ch = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                (rest.get(1 + ch) == Some(&b'\'')).then_some(i + 1 + ch + 1)
            };
            match end {
                Some(end) => {
                    blank(&mut out, i, end);
                    i = end;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8(out).expect("only ASCII was blanked")
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].bytes().filter(|&c| c == b'\n').count() + 1
}

/// The first segment of each path in a `{…}` group starting at `open`
/// (nested groups belong to their own first segment), and where it ends.
fn group_heads(code: &str, open: usize) -> (Vec<(usize, String)>, usize) {
    let b = code.as_bytes();
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut at_start = true;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'{' => {
                depth += 1;
                at_start = depth == 1;
                i += 1;
            }
            b'}' => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return (heads, i);
                }
            }
            b',' => {
                at_start = depth == 1;
                i += 1;
            }
            c if is_ident(c) && at_start => {
                let start = i;
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
                heads.push((start, code[start..i].to_string()));
                at_start = false;
            }
            _ => i += 1,
        }
    }
    (heads, b.len())
}

/// Every top-level module `code` names through `crate::`, with its offset.
fn crate_references(code: &str) -> Vec<(usize, String)> {
    let b = code.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(p) = code[from..].find("crate::") {
        let at = from + p;
        from = at + "crate::".len();
        if at > 0 && is_ident(b[at - 1]) {
            continue;
        }
        let mut i = from;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b.get(i) == Some(&b'{') {
            let (heads, end) = group_heads(code, i);
            found.extend(heads.into_iter().filter(|(_, h)| h != "self"));
            from = end;
            continue;
        }
        let start = i;
        while i < b.len() && is_ident(b[i]) {
            i += 1;
        }
        if i > start && b.get(i) != Some(&b'!') {
            found.push((start, code[start..i].to_string()));
        }
    }
    found
}

fn references() -> Vec<(String, Reference)> {
    let mut refs = Vec::new();
    for (module, path) in library_files() {
        let text = fs::read_to_string(&path).expect("read a source file");
        let code = code_only(&text);
        for (at, target) in crate_references(&code) {
            if target != module {
                refs.push((
                    module.clone(),
                    Reference {
                        file: path.clone(),
                        line: line_of(&text, at),
                        target,
                    },
                ));
            }
        }
    }
    refs
}

fn table() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    ALLOWED
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect()
}

#[test]
fn every_module_uses_only_the_modules_its_row_allows() {
    let table = table();
    let mut wrong = Vec::new();
    for (module, r) in references() {
        let Some(allowed) = table.get(module.as_str()) else {
            wrong.push(format!(
                "{}: module `{module}` has no row in ALLOWED",
                r.file.display()
            ));
            continue;
        };
        if !allowed.contains(r.target.as_str()) {
            wrong.push(format!(
                "{}:{}: `{module}` uses `crate::{}`, which its row does not allow",
                r.file.display(),
                r.line,
                r.target
            ));
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn every_module_has_a_row_and_every_row_a_module() {
    let table = table();
    let modules: BTreeSet<String> = library_files().into_iter().map(|(m, _)| m).collect();
    for m in &modules {
        assert!(
            table.contains_key(m.as_str()),
            "`{m}` has no row in ALLOWED"
        );
    }
    for m in table.keys() {
        assert!(
            modules.contains(*m),
            "ALLOWED names `{m}`, which src/ lacks"
        );
        for dep in &table[m] {
            assert!(
                table.contains_key(dep),
                "`{m}` may use `{dep}`, which has no row"
            );
        }
    }
}

#[test]
fn the_allowed_dependencies_have_no_cycle() {
    fn visit<'a>(
        m: &'a str,
        table: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if let Some(at) = path.iter().position(|p| *p == m) {
            panic!("cycle in ALLOWED: {} -> {m}", path[at..].join(" -> "));
        }
        if done.contains(m) {
            return;
        }
        path.push(m);
        for dep in table.get(m).into_iter().flatten() {
            visit(dep, table, path, done);
        }
        path.pop();
        done.insert(m);
    }
    let table = table();
    let mut done = BTreeSet::new();
    for m in table.keys() {
        visit(m, &table, &mut Vec::new(), &mut done);
    }
}

/// Where `#[cfg(test)] mod … { … }` blocks lie in `code`: a unit test may
/// open a concrete store to run what it tests against a real one.
fn test_modules(code: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(p) = code[from..].find("#[cfg(test)]") {
        let at = from + p;
        from = at + 1;
        let after = code[at + "#[cfg(test)]".len()..].trim_start();
        if !(after.starts_with("mod ") || after.starts_with("pub mod ")) {
            continue;
        }
        let Some(open) = code[at..].find('{').map(|o| at + o) else {
            continue;
        };
        let (_, end) = group_heads(code, open);
        spans.push((at, end));
        from = end;
    }
    spans
}

#[test]
fn only_store_and_app_name_a_concrete_store() {
    let mut wrong = Vec::new();
    for (module, path) in library_files() {
        if STORE_OWNERS.contains(&module.as_str()) {
            continue;
        }
        let text = fs::read_to_string(&path).expect("read a source file");
        let code = code_only(&text);
        let tests = test_modules(&code);
        for name in ["EmbeddedStore", "RedisStore", "AnyStore::"] {
            let mut from = 0;
            while let Some(p) = code[from..].find(name) {
                let at = from + p;
                from = at + name.len();
                let whole = (at == 0 || !is_ident(code.as_bytes()[at - 1]))
                    && (name.ends_with("::")
                        || code.as_bytes().get(from).is_none_or(|&c| !is_ident(c)));
                if whole && !tests.iter().any(|&(s, e)| s <= at && at < e) {
                    wrong.push(format!(
                        "{}:{}: names `{name}` outside store/ and app/",
                        path.display(),
                        line_of(&text, at)
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "a concrete store outside store/ and app/:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_reader_finds_references_in_every_form() {
    let code = code_only(
        "use crate::a::B;\n// crate::comment\nlet s = \"crate::string\";\n\
         use crate::{b, c::{D, E}, self};\nfn f() { crate::d::g(); crate::m!(); }\n\
         let c = '\"'; let l: &'static str = crate::e::X;\n",
    );
    let names: Vec<String> = crate_references(&code)
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
}
