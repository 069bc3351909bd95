#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests: a panic is how a test fails"
)]
//! Replays every input the fuzzers found (`fuzz/regressions/<target>/`) and the committed
//! seed corpora (`fuzz/corpus/<target>/`) through the same checks the fuzz targets run, on
//! every `cargo test`, without the fuzzer.

use std::path::Path;

use keyserver_protocol::fuzzing;

fn replay(kind: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind);
    let mut n = 0;
    let Ok(targets) = std::fs::read_dir(&root) else {
        return 0;
    };
    for target in targets {
        let target = target.unwrap();
        let name = target.file_name().to_string_lossy().into_owned();
        let Some(check) = fuzzing::by_name(&name) else {
            continue;
        };
        for input in std::fs::read_dir(target.path()).unwrap() {
            let path = input.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            check(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn every_regression_input_passes_its_check() {
    replay("regressions");
}

#[test]
fn every_seed_in_the_corpora_passes_its_check() {
    let n = replay("corpus");
    assert!(n > 0, "no seed corpus found under fuzz/corpus");
}
