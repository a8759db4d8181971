//! Writes the seed corpus of every fuzz target to `fuzz/seeds/TARGET/`,
//! replacing what is there. See `sealbus_fuzz::seeds` for the sources.
//!
//! Run it after the known-answer vectors or the EdgeX fixtures change:
//! `cargo run --manifest-path fuzz/Cargo.toml --example write_seeds`.

use sealbus_fuzz::seeds;

fn main() -> std::io::Result<()> {
    let all = seeds::generate(&seeds::envelope_tests_dir());
    let dir = seeds::seeds_dir();
    seeds::write(&dir, &all)?;
    for target in &all {
        println!("{}: {} seeds", target.target, target.seeds.len());
    }
    println!("written under {}", dir.display());
    Ok(())
}
