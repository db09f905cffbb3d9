//! Library error type. The CLI wraps these with `anyhow` context (file names, flags).

use std::path::PathBuf;

/// Errors reported by the idem library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A target name that is not built in.
    #[error("unknown target `{name}`; built-in targets: {known}")]
    UnknownTarget { name: String, known: String },

    /// A configuration value out of its domain (negative sigma, K = 0, ...).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Arrays whose lengths do not match the target's dimension or each other.
    #[error("shape mismatch: {0}")]
    Shape(String),

    /// Input values that are NaN or infinite where finite numbers are required.
    #[error("non-finite input: {0}")]
    NonFinite(String),

    /// A tensor operation failed (candle).
    #[error("tensor error: {0}")]
    Tensor(String),

    /// A file (checkpoint, run directory) that cannot be read or written.
    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },

    /// A training run produced NaN/Inf (loss, gradients or samples).
    #[error("training diverged: {0}")]
    Diverged(String),

    /// A user-supplied energy failed (a Python exception, a lost connection); `0` is its
    /// message. The caller that evaluated it stops; the original error (e.g. the Python
    /// exception with its traceback) is kept by the energy that raised it.
    #[error("the energy function failed: {0}")]
    External(String),

    /// A `.npy` file that cannot be read or written.
    #[error("{path}: {msg}")]
    Npy { path: PathBuf, msg: String },
}

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
