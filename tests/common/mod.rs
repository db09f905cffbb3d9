//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use idem::io::npy;

/// A fixture copied from the reference implementation's outputs (tests/fixtures/reference).
pub fn fixture(name: &str) -> npy::NpyArray {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference")
        .join(name);
    npy::read(&path).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The published benchmark splits folder (`IDEM_DATA_DIR`, default ../shared/data/benchmarks).
pub fn data_dir() -> PathBuf {
    std::env::var_os("IDEM_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/benchmarks"))
}
