//! Metropolis-adjusted Langevin algorithm (Roberts & Tweedie 1996) for every replica at once.
//!
//! A replica at x with inverse temperature β targets π(x) ∝ p(x)^β. With step size ε:
//!
//! ```text
//! y = x + ε·β∇log p(x) + √(2ε)·z,   z ~ N(0, I) (mean-free for particle systems)
//! log α = β(log p(y) − log p(x)) − (|x − y − εβ∇log p(y)|² − |y − x − εβ∇log p(x)|²) / (4ε)
//! ```
//!
//! accepted with probability min(1, α). An invalid proposal (log p = −inf) is rejected. For
//! particle systems both the noise and the (translation-invariant) gradients are mean-free, so
//! the chain stays on the mean-free subspace and the Gaussian proposal densities above are
//! those of that subspace. One target evaluation per replica per step.

use rayon::prelude::*;

use super::replicas::{evaluate, Replicas};
use crate::energy::Target;
use crate::error::Result;

/// One MALA step for every replica, replica i with step size `eps[i]`. Returns each replica's
/// acceptance probability min(1, α).
pub fn step(target: &Target, reps: &mut Replicas, eps: &[f64]) -> Result<Vec<f64>> {
    let (r, dim) = (reps.len(), reps.dim);
    let mut y = vec![0.0; r * dim];
    reps.normals(&mut y);
    {
        let (x, g, beta) = (&reps.x, &reps.grad, &reps.beta);
        y.par_chunks_mut(dim).enumerate().for_each(|(i, yr)| {
            let (e, b) = (eps[i], beta[i]);
            let s = (2.0 * e).sqrt();
            for k in 0..dim {
                yr[k] = x[i * dim + k] + e * b * g[i * dim + k] + s * yr[k];
            }
        });
    }
    let mut lpy = vec![0.0; r];
    let mut gy = vec![0.0; r * dim];
    evaluate(target, &y, &mut lpy, &mut gy)?;
    let u = reps.uniforms();
    let beta = &reps.beta;
    let probs: Vec<f64> = reps
        .x
        .par_chunks_mut(dim)
        .zip(reps.grad.par_chunks_mut(dim))
        .zip(reps.lp.par_iter_mut())
        .enumerate()
        .map(|(i, ((x, g), lp))| {
            if !lpy[i].is_finite() {
                return 0.0;
            }
            let (e, b) = (eps[i], beta[i]);
            let (yr, gyr) = (&y[i * dim..][..dim], &gy[i * dim..][..dim]);
            let mut fwd = 0.0;
            let mut bwd = 0.0;
            for k in 0..dim {
                let f = yr[k] - x[k] - e * b * g[k];
                let bk = x[k] - yr[k] - e * b * gyr[k];
                fwd += f * f;
                bwd += bk * bk;
            }
            let log_a = b * (lpy[i] - *lp) - (bwd - fwd) / (4.0 * e);
            let prob = if log_a >= 0.0 { 1.0 } else { log_a.exp() };
            if u[i] < prob {
                x.copy_from_slice(yr);
                g.copy_from_slice(gyr);
                *lp = lpy[i];
            }
            prob
        })
        .collect();
    Ok(probs)
}
