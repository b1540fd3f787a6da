//! Replays every input the fuzzers found (crashers, slow inputs, and a few minimized corpus entries that
//! reach edge paths) through the same check its fuzz target runs: `tests/fuzz_regressions/<target>/<name>`.
//! The checks assert the decoders' promises, so an input here fails the test if a fix regresses.

use std::fs;
use std::path::Path;

use tokenwatch_core::fuzzing::{TARGETS, check};

#[test]
fn every_saved_input_passes_its_targets_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut replayed = 0;
    for (target, _) in TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no saved input for {target}");
        for file in files {
            let data = fs::read(&file).expect("readable input");
            println!("{target}: {}", file.display());
            check(target, &data);
            replayed += 1;
        }
    }
    println!("{replayed} inputs replayed");
}

#[test]
fn no_saved_input_is_left_without_a_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    for entry in fs::read_dir(&root).expect("tests/fuzz_regressions") {
        let name = entry.expect("directory entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            TARGETS.iter().any(|(target, _)| *target == name),
            "tests/fuzz_regressions/{name} names no fuzz target"
        );
    }
}
