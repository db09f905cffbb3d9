//! File input and output.

pub mod npy;
