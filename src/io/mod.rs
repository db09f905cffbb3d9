//! File input and output.

pub mod checkpoint;
pub mod npy;

/// Where the published benchmark splits live: `$IDEM_DATA_DIR`, default `../shared/data/benchmarks`.
pub fn data_dir() -> std::path::PathBuf {
    std::env::var_os("IDEM_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("../shared/data/benchmarks"))
}
