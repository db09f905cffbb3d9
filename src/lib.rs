//! idem — Iterated Denoising Energy Matching in Rust.
//!
//! Data flows one way: [`energy`] (Boltzmann targets log p, ∇log p) →
//! [`dem_target`] (the Monte-Carlo DEM score target, using a [`noise_schedule`]) →
//! trainer → sampler → evaluation. See ARCHITECTURE.md for the module map and invariants.

pub mod bench;
pub mod dem_target;
pub mod energy;
pub mod error;
pub mod io;
pub mod noise_schedule;
pub mod rng;
pub mod simd;

pub use dem_target::{DemStats, DemTarget};
pub use energy::{Energy, ParticleShape, Target};
pub use error::{Error, Result};
pub use noise_schedule::NoiseSchedule;
