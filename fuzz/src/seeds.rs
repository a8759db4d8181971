//! The seed corpus of every fuzz target, generated from the sealbus test
//! data so that it can be written again whenever that data changes.
//!
//! Sources: the known-answer vectors (`envelope/tests/vectors/v1.json`), the
//! EdgeX fixtures (`envelope/tests/fixtures/edgex/*.json`), and
//! certificates and trust bundles issued here by the fixed test CA. Every
//! seed is deterministic, so generating again reproduces the files in
//! `fuzz/seeds/` byte for byte, which `tests/seeds.rs` checks.
//!
//! Generation also checks that the seeds meant to open or verify with the
//! fixed keys do so, so the fuzz targets start from inputs that reach their
//! deepest code.

mod envelope;
mod keyring;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::certificate_authority;

/// One seed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// File name inside the target's seed directory.
    pub name: String,
    /// File content.
    pub bytes: Vec<u8>,
}

impl Seed {
    fn new(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            bytes,
        }
    }
}

/// The seeds of one fuzz target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSeeds {
    /// Fuzz target name, which is also the name of its seed directory.
    pub target: &'static str,
    /// Seed files, sorted by name.
    pub seeds: Vec<Seed>,
}

/// Returns the `envelope/tests` directory of this checkout.
pub fn envelope_tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../envelope/tests")
}

/// Returns the `fuzz/seeds` directory of this checkout.
pub fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds")
}

/// Generates the seeds of every fuzz target from the test data under
/// `envelope_tests` (the `envelope/tests` directory).
///
/// # Panics
///
/// Panics with the file or vector name when the test data cannot be read.
/// Also panics when a seed that should open or verify with the fixed keys
/// does not, because then the fixtures in this crate no longer match the
/// vectors.
pub fn generate(envelope_tests: &Path) -> Vec<TargetSeeds> {
    let vectors = read_vectors(&envelope_tests.join("vectors/v1.json"));
    let fixtures = read_edgex_fixtures(&envelope_tests.join("fixtures/edgex"));
    let mut ca = certificate_authority();
    let certificates = keyring::issue_certificates(&mut ca);

    let mut all = vec![
        TargetSeeds {
            target: "open_message",
            seeds: envelope::open_message_seeds(&vectors, &fixtures),
        },
        TargetSeeds {
            target: "parse_grant",
            seeds: envelope::parse_grant_seeds(&vectors),
        },
        TargetSeeds {
            target: "parse_bundle",
            seeds: keyring::parse_bundle_seeds(&mut ca, certificates.clone()),
        },
        TargetSeeds {
            target: "parse_certificate",
            seeds: keyring::parse_certificate_seeds(&certificates),
        },
        TargetSeeds {
            target: "edgex_json",
            seeds: envelope::edgex_json_seeds(&vectors, &fixtures),
        },
    ];
    for target in &mut all {
        target
            .seeds
            .sort_by(|left, right| left.name.cmp(&right.name));
    }
    all
}

/// Replaces each target's directory under `seeds_dir` with its seeds.
///
/// # Errors
///
/// Returns the I/O error of the first directory or file that cannot be
/// removed or written.
pub fn write(seeds_dir: &Path, all: &[TargetSeeds]) -> io::Result<()> {
    for target in all {
        let dir = seeds_dir.join(target.target);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        for seed in &target.seeds {
            fs::write(dir.join(&seed.name), &seed.bytes)?;
        }
    }
    Ok(())
}

fn read_vectors(path: &Path) -> Vec<Value> {
    let text = fs::read(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    let document: Value = serde_json::from_slice(&text).expect("v1.json is valid JSON");
    document["vectors"]
        .as_array()
        .expect("v1.json has a \"vectors\" array")
        .clone()
}

/// Returns each EdgeX fixture as a seed named by its file stem, sorted by
/// name.
fn read_edgex_fixtures(dir: &Path) -> Vec<Seed> {
    let mut fixtures: Vec<Seed> = fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("listing {}: {error}", dir.display()))
        .map(|entry| entry.expect("readable fixture directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .map(|path| {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            Seed::new(stem, fs::read(&path).expect("readable fixture"))
        })
        .collect();
    fixtures.sort_by(|left, right| left.name.cmp(&right.name));
    fixtures
}

/// Turns a vector name into a file name: lowercase ASCII words joined by '-'.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for word in name
        .split(|character: char| !character.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
    {
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(&word.to_ascii_lowercase());
    }
    out
}
