//! Code-base rules checked inside `cargo test` (as rust-analyzer does):
//! every Rust file starts with a `//!` line saying what it is for.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.filter_map(|entry| entry.ok().map(|e| e.path())) {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_says_what_it_is_for() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&crates, &mut files);
    assert!(files.len() > 10, "found only {files:?}");
    let missing: Vec<String> = files
        .iter()
        .filter(|path| !std::fs::read_to_string(path).is_ok_and(|text| text.starts_with("//!")))
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "start these files with a //! line: {missing:#?}"
    );
}

/// Docs describe what the code does now. A module doc that promises what
/// "arrives later" goes stale the day it is written (issue 12).
#[test]
fn module_docs_promise_nothing_for_later() {
    const PROMISES: [&str; 6] = [
        "arrives later",
        "arrive later",
        "comes later",
        "come later",
        "in a later issue",
        "not yet implemented",
    ];
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&crates, &mut files);
    let this_file = Path::new(file!()).file_name();
    let promising: Vec<String> = files
        .iter()
        .filter(|path| path.file_name() != this_file)
        .filter_map(|path| {
            let text = std::fs::read_to_string(path).ok()?;
            let doc: String = text
                .lines()
                .filter(|line| line.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n")
                .to_lowercase();
            let found: Vec<&str> = PROMISES.iter().copied().filter(|p| doc.contains(p)).collect();
            (!found.is_empty()).then(|| format!("{}: {found:?}", path.display()))
        })
        .collect();
    assert!(promising.is_empty(), "say what the code does now: {promising:#?}");
}
