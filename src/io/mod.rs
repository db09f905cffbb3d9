//! File input and output.

pub mod checkpoint;
pub mod npy;

/// Where the published benchmark splits live: `$IDEM_DATA_DIR` when set; otherwise
/// `../shared/data/benchmarks` relative to the working directory (a checkout's root, as in CI)
/// when that folder exists, else the same folder beside the source tree the binary was built from
/// (so a run started from another folder still finds the splits), else the relative path (callers
/// report it as absent).
pub fn data_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("IDEM_DATA_DIR") {
        return dir.into();
    }
    let relative = std::path::PathBuf::from(DEFAULT_DATA_DIR);
    let built_from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_DATA_DIR);
    if !relative.is_dir() && built_from.is_dir() {
        built_from
    } else {
        relative
    }
}

/// The benchmark splits' folder relative to a checkout's root.
const DEFAULT_DATA_DIR: &str = "../shared/data/benchmarks";
