//! idem — Iterated Denoising Energy Matching in Rust.
//!
//! Data flows one way: [`energy`] (Boltzmann targets log p, ∇log p) →
//! [`dem_target`] (the Monte-Carlo DEM score target, using a [`noise_schedule`]) →
//! trainer → sampler → evaluation. See ARCHITECTURE.md for the module map and invariants.

pub mod auto_config;
pub mod bench;
pub mod cnf;
pub mod config;
pub mod controlled_sde;
pub mod dem_target;
pub mod energy;
pub mod error;
pub mod eval;
pub mod importance_resampling;
pub mod io;
pub mod mcmc;
pub mod method;
pub mod model;
pub mod net;
pub mod noise_schedule;
pub mod plot;
pub mod progress;
pub mod refine;
pub mod replay_buffer;
pub mod report;
pub mod reverse_sde;
pub mod rng;
pub mod simd;
pub mod train;

pub use dem_target::{DemStats, DemTarget};
pub use energy::{Energy, ParticleShape, Target};
pub use error::{Error, Result};
pub use noise_schedule::NoiseSchedule;
