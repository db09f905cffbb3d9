//! File input and output.

pub mod checkpoint;
pub mod npy;
