//! Metropolis-adjusted Langevin algorithm (Roberts & Tweedie 1996) for every replica at once.
//!
//! A replica at x with inverse temperature β targets π(x) ∝ p(x)^β. With step size ε:
//!
//! ```text
//! y = x + ε·β∇log p(x) + √(2ε)·z,   z ~ N(0, I) (mean-free for particle systems)
//! log α = β(log p(y) − log p(x)) − (|x − y − εβ∇log p(y)|² − |y − x − εβ∇log p(x)|²) / (4ε)
//! ```
//!
//! accepted with probability min(1, α). An invalid proposal (log p = −inf) is rejected.
//!
//! Truncated drift (MALTA, Roberts & Tweedie 1996), optional: with a cap c the drift εβ∇log p(·)
//! of both the forward and the backward proposal is scaled down to norm at most c·√(2ε·dim) (c
//! times the noise's typical norm) wherever it is longer. The proposal is still a Gaussian whose
//! density both terms above use consistently, so the kernel stays exactly p-invariant; what
//! changes is far from equilibrium: from overlapping particles, where |∇log p| is astronomically
//! large, plain MALA proposes a jump far out of range and rejects every move at a step size
//! adapted to the bulk, while the truncated drift walks the particles apart. At equilibrium the
//! cap rarely binds. For
//! particle systems both the noise and the (translation-invariant) gradients are mean-free, so
//! the chain stays on the mean-free subspace and the Gaussian proposal densities above are
//! those of that subspace. One target evaluation per replica per step.

use rayon::prelude::*;

use super::replicas::{evaluate, Replicas};
use crate::energy::Target;
use crate::error::Result;

/// Factor f ≤ 1 of the drift εβg: 1 without a cap, else min(1, c·√(2ε·dim) / |εβg|).
fn drift_factor(g: &[f64], eb: f64, e: f64, cap: Option<f64>) -> f64 {
    let Some(c) = cap else { return 1.0 };
    let norm = eb.abs() * g.iter().map(|v| v * v).sum::<f64>().sqrt();
    let limit = c * (2.0 * e * g.len() as f64).sqrt();
    if norm > limit {
        limit / norm
    } else {
        1.0
    }
}

/// One MALA step for every replica, replica i with step size `eps[i]`, the drift truncated at
/// `drift_cap` times the noise's norm when set (module docs). Returns each replica's
/// acceptance probability min(1, α).
pub fn step(
    target: &Target,
    reps: &mut Replicas,
    eps: &[f64],
    drift_cap: Option<f64>,
) -> Result<Vec<f64>> {
    let (r, dim) = (reps.len(), reps.dim);
    let mut y = vec![0.0; r * dim];
    reps.normals(&mut y);
    {
        let (x, g, beta) = (&reps.x, &reps.grad, &reps.beta);
        y.par_chunks_mut(dim).enumerate().for_each(|(i, yr)| {
            let (e, b) = (eps[i], beta[i]);
            let s = (2.0 * e).sqrt();
            let gi = &g[i * dim..(i + 1) * dim];
            let d = e * b * drift_factor(gi, e * b, e, drift_cap);
            for k in 0..dim {
                yr[k] = x[i * dim + k] + d * gi[k] + s * yr[k];
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
            let dx = e * b * drift_factor(g, e * b, e, drift_cap);
            let dy = e * b * drift_factor(gyr, e * b, e, drift_cap);
            let mut fwd = 0.0;
            let mut bwd = 0.0;
            for k in 0..dim {
                let f = yr[k] - x[k] - dx * g[k];
                let bk = x[k] - yr[k] - dy * gyr[k];
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
