//! Hamiltonian Monte Carlo with a leapfrog integrator (Duane et al. 1987; Neal 2011) for every
//! replica at once, identity mass matrix.
//!
//! A replica with inverse temperature β has potential U(x) = −β·log p(x). With momentum
//! p ~ N(0, I) (mean-free for particle systems), step size ε and L leapfrog steps:
//!
//! ```text
//! p ← p + ε/2·β∇log p(x);  repeat L times: x ← x + ε·p, p ← p + ε·β∇log p(x) (ε/2 the last time)
//! ```
//!
//! accepted with probability min(1, exp(H₀ − H₁)), H = U(x) + |p|²/2. Each transition uses
//! ε·u with u uniform on [0.8, 1.2] per replica (step-size jitter: a fixed trajectory length can
//! resonate with a period of the target and mix poorly). A trajectory that reaches
//! an invalid configuration (log p = −inf, e.g. overlapping Lennard-Jones particles) is
//! rejected. L target evaluations per replica per step.

use rayon::prelude::*;

use super::replicas::{evaluate, Replicas};
use crate::energy::Target;
use crate::error::Result;

/// One HMC transition for every replica, replica i with step size `eps[i]`, `leapfrog` steps.
/// Returns each replica's acceptance probability.
pub fn step(
    target: &Target,
    reps: &mut Replicas,
    eps: &[f64],
    leapfrog: usize,
) -> Result<Vec<f64>> {
    let (r, dim) = (reps.len(), reps.dim);
    let eps: Vec<f64> = reps
        .uniforms()
        .iter()
        .zip(eps)
        .map(|(u, e)| e * (0.8 + 0.4 * u))
        .collect();
    let eps = &eps[..];
    let mut p = vec![0.0; r * dim];
    reps.normals(&mut p);
    let beta = reps.beta.clone();
    let kinetic = |p: &[f64]| -> Vec<f64> {
        p.par_chunks(dim)
            .map(|pr| 0.5 * pr.iter().map(|v| v * v).sum::<f64>())
            .collect()
    };
    let h0: Vec<f64> = kinetic(&p)
        .iter()
        .zip(&reps.lp)
        .zip(&beta)
        .map(|((k, lp), b)| k - b * lp)
        .collect();
    let mut x = reps.x.clone();
    let mut g = reps.grad.clone();
    let mut lp = reps.lp.clone();
    let mut alive = vec![true; r];
    let kick = |p: &mut [f64], g: &[f64], scale: f64| {
        p.par_chunks_mut(dim).enumerate().for_each(|(i, pr)| {
            let c = scale * eps[i] * beta[i];
            for (pv, gv) in pr.iter_mut().zip(&g[i * dim..][..dim]) {
                *pv += c * gv;
            }
        });
    };
    kick(&mut p, &g, 0.5);
    for l in 0..leapfrog.max(1) {
        x.par_chunks_mut(dim)
            .zip(p.par_chunks(dim))
            .enumerate()
            .for_each(|(i, (xr, pr))| {
                for (xv, pv) in xr.iter_mut().zip(pr) {
                    *xv += eps[i] * pv;
                }
            });
        evaluate(target, &x, &mut lp, &mut g)?;
        for (a, v) in alive.iter_mut().zip(&lp) {
            *a &= v.is_finite();
        }
        kick(&mut p, &g, if l + 1 == leapfrog.max(1) { 0.5 } else { 1.0 });
    }
    let k1 = kinetic(&p);
    let u = reps.uniforms();
    let probs: Vec<f64> = reps
        .x
        .par_chunks_mut(dim)
        .zip(reps.grad.par_chunks_mut(dim))
        .zip(reps.lp.par_iter_mut())
        .enumerate()
        .map(|(i, ((xr, gr), lpr))| {
            if !alive[i] {
                return 0.0;
            }
            let h1 = k1[i] - beta[i] * lp[i];
            let d = h0[i] - h1;
            let prob = if d >= 0.0 {
                1.0
            } else if d.is_finite() {
                d.exp()
            } else {
                0.0
            };
            if u[i] < prob {
                xr.copy_from_slice(&x[i * dim..][..dim]);
                gr.copy_from_slice(&g[i * dim..][..dim]);
                *lpr = lp[i];
            }
            prob
        })
        .collect();
    Ok(probs)
}
