//! Checks that the committed seed corpus matches what the seed generator
//! produces from the current test data, so a changed vector or fixture
//! cannot leave the fuzz targets starting from stale inputs.

use std::collections::BTreeMap;
use std::fs;

use sealbus_fuzz::seeds::{envelope_tests_dir, generate, seeds_dir};

const FUZZ_TARGETS: [&str; 5] = [
    "open_message",
    "parse_grant",
    "parse_bundle",
    "parse_certificate",
    "edgex_json",
];

#[test]
fn every_target_has_seeds() {
    let all = generate(&envelope_tests_dir());
    let targets: Vec<&str> = all.iter().map(|target| target.target).collect();
    assert_eq!(targets, FUZZ_TARGETS);
    for target in &all {
        assert!(
            target.seeds.len() >= 3,
            "{} has only {} seeds",
            target.target,
            target.seeds.len()
        );
    }
}

#[test]
fn committed_seeds_are_current() {
    let fix =
        "regenerate them with `cargo run --manifest-path fuzz/Cargo.toml --example write_seeds`";
    for target in generate(&envelope_tests_dir()) {
        let dir = seeds_dir().join(target.target);
        let committed: BTreeMap<String, Vec<u8>> = fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("listing {}: {error}; {fix}", dir.display()))
            .map(|entry| {
                let path = entry.expect("readable seed directory entry").path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, fs::read(&path).expect("readable seed"))
            })
            .collect();
        let generated: BTreeMap<String, Vec<u8>> = target
            .seeds
            .into_iter()
            .map(|seed| (seed.name, seed.bytes))
            .collect();

        let committed_names: Vec<&String> = committed.keys().collect();
        let generated_names: Vec<&String> = generated.keys().collect();
        assert_eq!(
            committed_names, generated_names,
            "seed files of {} differ; {fix}",
            target.target
        );
        for (name, bytes) in &generated {
            assert!(
                committed[name] == *bytes,
                "{}/{name} is stale; {fix}",
                target.target
            );
        }
    }
}
