//! The state of many MCMC replicas at once: positions, log p and ∇log p of every replica
//! (f64, row-major), each replica's inverse temperature β and its own random stream. Kernels
//! propose for all replicas, evaluate the proposals in one multi-threaded batch through the
//! target's block kernels, and accept or reject per replica — reproducibly, whatever the
//! thread count, since every replica draws from its own stream.

use rand::RngExt;
use rand_distr::StandardNormal;
use rayon::prelude::*;

pub use crate::energy::particles::remove_mean_f64;
use crate::energy::{ParticleShape, Target};
use crate::error::{Error, Result};
use crate::rng::{stream, Rng};

/// All replicas of a run.
pub struct Replicas {
    pub dim: usize,
    pub particles: Option<ParticleShape>,
    /// `[R, dim]` positions.
    pub x: Vec<f64>,
    /// `[R]` log p (at temperature 1; the replica targets β·log p).
    pub lp: Vec<f64>,
    /// `[R, dim]` ∇log p.
    pub grad: Vec<f64>,
    /// `[R]` inverse temperatures.
    pub beta: Vec<f64>,
    pub rngs: Vec<Rng>,
}

impl Replicas {
    /// `beta.len()` replicas at `x` (`[R, dim]`), evaluated; streams keyed by `seed`.
    pub fn new(target: &Target, x: Vec<f64>, beta: Vec<f64>, seed: u64) -> Result<Self> {
        let dim = target.dim();
        let r = beta.len();
        if x.len() != r * dim {
            return Err(Error::Shape(format!(
                "{} initial values for {r} replicas of dimension {dim}",
                x.len()
            )));
        }
        let mut s = Self {
            dim,
            particles: target.particles(),
            x,
            lp: vec![0.0; r],
            grad: vec![0.0; r * dim],
            beta,
            rngs: (0..r as u64).map(|i| stream(seed, 1 << 32 | i)).collect(),
        };
        evaluate(target, &s.x, &mut s.lp, &mut s.grad)?;
        Ok(s)
    }

    /// Number of replicas.
    pub fn len(&self) -> usize {
        self.lp.len()
    }

    /// Whether there are no replicas.
    pub fn is_empty(&self) -> bool {
        self.lp.is_empty()
    }

    /// Fill `z` (`[R, dim]`) with standard normal draws from each replica's stream, projected
    /// onto the mean-free subspace for particle systems.
    pub fn normals(&mut self, z: &mut [f64]) {
        let (dim, particles) = (self.dim, self.particles);
        z.par_chunks_mut(dim)
            .zip(self.rngs.par_iter_mut())
            .for_each(|(zr, rng)| {
                for v in zr.iter_mut() {
                    *v = rng.sample(StandardNormal);
                }
                if let Some(p) = particles {
                    remove_mean_f64(zr, p);
                }
            });
    }

    /// One uniform draw in [0, 1) per replica.
    pub fn uniforms(&mut self) -> Vec<f64> {
        self.rngs
            .par_iter_mut()
            .map(|r| r.random::<f64>())
            .collect()
    }

    /// Exchange the states (x, log p, ∇log p) of replicas `a` and `b` (β stays with the slot).
    pub fn swap(&mut self, a: usize, b: usize) {
        let d = self.dim;
        for k in 0..d {
            self.x.swap(a * d + k, b * d + k);
            self.grad.swap(a * d + k, b * d + k);
        }
        self.lp.swap(a, b);
    }
}

/// log p and ∇log p of the rows of `x` (see [`Target::log_prob_grad_batch_f64`]). For particle
/// systems the gradients are projected onto the mean-free subspace: the targets are
/// translation-invariant, so this only removes rounding (the DW kernel works in f32), and the
/// chains stay exactly mean-free.
pub fn evaluate(target: &Target, x: &[f64], lp: &mut [f64], grad: &mut [f64]) -> Result<()> {
    target.log_prob_grad_batch_f64(x, lp, grad)?;
    if let Some(p) = target.particles() {
        grad.par_chunks_mut(p.dim())
            .for_each(|g| remove_mean_f64(g, p));
    }
    Ok(())
}
