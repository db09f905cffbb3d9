//! Lennard-Jones clusters with the reference (DEM / bgflow) conventions:
//!
//! E(x) = f · Σ_{i≠j} ε[(r_m/d_ij)¹² − 2(r_m/d_ij)⁶] + s · ½ Σ_i |x_i − x̄|²,  log p = −E,
//!
//! where the pair sum runs over **ordered** pairs (twice the usual sum over i < j), f = 1, ε = 1,
//! r_m = 1 and the harmonic oscillator of scale s = 1 keeps the cluster together.
//! Evaluated as a single pass over unordered pairs with one division per pair; blocks of
//! configurations (the DEM target's Monte-Carlo samples) by a kernel vectorised across
//! configurations ([`Energy::log_prob_grad_block`]).
//!
//! Particles at (near-)zero distance overflow the energy or the force; the target then reports
//! the configuration as invalid (log p = −inf, gradient 0), see [`crate::energy`].

use super::particles::{lanes_pair_force, lanes_r2, pair_sum_any, ParticleShape};
use super::{log_prob_grad_each, write_block_lanes, Energy};

/// A Lennard-Jones cluster with a harmonic confinement.
#[derive(Clone, Debug, PartialEq)]
pub struct LennardJones {
    pub shape: ParticleShape,
    /// Well depth ε.
    pub eps: f64,
    /// Pair distance of the minimum r_m.
    pub rm: f64,
    /// Multiplier of the pair sum: 2 for the reference's sum over ordered pairs.
    pub pair_factor: f64,
    /// Scale of the ½|x − x̄|² oscillator (0 disables it).
    pub oscillator_scale: f64,
}

impl LennardJones {
    /// The reference LJ-n target in 3-D (ε = r_m = 1, ordered pairs, oscillator scale 1).
    pub fn reference(n_particles: usize) -> Self {
        Self {
            shape: ParticleShape {
                n_particles,
                spatial_dim: 3,
            },
            eps: 1.0,
            rm: 1.0,
            pair_factor: 2.0,
            oscillator_scale: 1.0,
        }
    }

    /// (contribution to log p, its derivative in r²) of one unordered pair.
    #[inline(always)]
    fn pair_logp(&self, r2: f64) -> (f64, f64) {
        let rm2 = self.rm * self.rm;
        let s = rm2 / r2; // (r_m/d)²
        let s3 = s * s * s;
        let s6 = s3 * s3;
        let k = self.pair_factor * self.eps;
        // φ = k(s⁶ − 2s³); dφ/dr² = −6k(s⁶ − s³)/r² = −6k(s⁶ − s³)·s/r_m²
        (-k * (s6 - 2.0 * s3), 6.0 * k * (s6 - s3) * s / rm2)
    }

    fn oscillator(&self, x: &[f64], grad: Option<&mut [f64]>) -> f64 {
        if self.oscillator_scale == 0.0 {
            return 0.0;
        }
        let (n, d) = (self.shape.n_particles, self.shape.spatial_dim);
        let mut total = 0.0;
        let mut grad = grad;
        for k in 0..d {
            let mean = (0..n).map(|i| x[i * d + k]).sum::<f64>() / n as f64;
            for i in 0..n {
                let c = x[i * d + k] - mean;
                total += c * c;
                if let Some(g) = grad.as_deref_mut() {
                    g[i * d + k] -= self.oscillator_scale * c;
                }
            }
        }
        -0.5 * self.oscillator_scale * total
    }
}

impl Energy for LennardJones {
    fn name(&self) -> String {
        if *self == Self::reference(self.shape.n_particles) {
            format!("lj{}", self.shape.n_particles)
        } else {
            format!("lj{}-custom", self.shape.n_particles)
        }
    }
    fn dim(&self) -> usize {
        self.shape.dim()
    }
    fn particles(&self) -> Option<ParticleShape> {
        Some(self.shape)
    }
    fn log_prob(&self, x: &[f64]) -> f64 {
        pair_sum_any(x, self.shape.spatial_dim, None, |r2| self.pair_logp(r2))
            + self.oscillator(x, None)
    }
    fn log_prob_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        grad.fill(0.0);
        let pairs = pair_sum_any(x, self.shape.spatial_dim, Some(&mut *grad), |r2| {
            self.pair_logp(r2)
        });
        pairs + self.oscillator(x, Some(grad))
    }
    fn log_prob_grad_block(&self, xs: &[f64], lp: &mut [f64], grads: &mut [f64]) -> usize {
        let lj = self;
        // lanes × coordinates of the working set: ≤ 12 KB per array, in L1 (LJ-13: 64 × 39,
        // LJ-55: 16 × 165)
        if self.dim() <= 48 {
            crate::multiversion!((lj: &LennardJones, xs: &[f64], lp: &mut [f64], grads: &mut [f64]) -> usize {
                lj.block_kernel::<64, 48>(xs, lp, grads)
            })
        } else if self.dim() <= 192 {
            crate::multiversion!((lj: &LennardJones, xs: &[f64], lp: &mut [f64], grads: &mut [f64]) -> usize {
                lj.block_kernel::<16, 192>(xs, lp, grads)
            })
        } else {
            log_prob_grad_each(self, xs, lp, grads)
        }
    }
}

impl LennardJones {
    /// The block evaluation (coordinate-major, see [`Energy::log_prob_grad_block`]) vectorised
    /// across `L` configurations at a time (`D` ≥ dim bounds the stack working set): for each
    /// pair, distance, energy and force for all lanes at once, in f32 — the reference's
    /// precision; log p agrees with the f64 `log_prob_grad` to a few f32 ulps of Σ|pair terms|
    /// (tested). A configuration whose f32 result is not finite (overlapping particles: (r_m/d)¹²
    /// leaves f32's range below d ≈ 6e-4) is re-evaluated in f64, so validity is decided exactly
    /// as by `log_prob_grad`. Lanes past the block's end repeat its first configuration.
    #[inline(always)]
    fn block_kernel<const L: usize, const D: usize>(
        &self,
        xs: &[f64],
        lp: &mut [f64],
        grads: &mut [f64],
    ) -> usize {
        let n = lp.len();
        let dim = self.dim();
        let sd = self.shape.spatial_dim;
        let np = self.shape.n_particles;
        debug_assert!(dim <= D);
        let k = (self.pair_factor * self.eps) as f32;
        let rm2 = (self.rm * self.rm) as f32;
        // d(log p)/d(r²) = 6k(s⁶ − s³)·s/r_m², and ∂/∂x_a = 2·that·(x_a − x_b)
        let force = 12.0 * k / rm2;
        let osc = self.oscillator_scale as f32;
        let inv_np = 1.0 / np as f32;
        let mut c = [[0.0f32; L]; D];
        let mut g = [[0.0f32; L]; D];
        let mut invalid = 0;
        let mut j0 = 0;
        while j0 < n {
            let m = L.min(n - j0);
            for (d, (cd, gd)) in c.iter_mut().zip(g.iter_mut()).take(dim).enumerate() {
                let src = &xs[d * n + j0..d * n + j0 + m];
                for (v, &x) in cd.iter_mut().zip(src) {
                    *v = x as f32;
                }
                let first = cd[0];
                cd[m..].fill(first);
                gd.fill(0.0);
            }
            // log p in f64, from f32 sums over each particle's pairs (≤ n − 1 terms): the
            // rounding error stays a few ulps of Σ|pair terms| at 55 particles too
            let mut acc = [0.0f64; L];
            for a in 0..np {
                let mut row = [0.0f32; L];
                for b in a + 1..np {
                    let r2 = lanes_r2(&c, a, b, sd);
                    let mut coef = [0.0f32; L];
                    for j in 0..L {
                        // as `pair_logp`, in f32
                        let s = rm2 / r2[j];
                        let s3 = s * s * s;
                        let s6 = s3 * s3;
                        row[j] -= k * (s6 - 2.0 * s3);
                        coef[j] = force * (s6 - s3) * s;
                    }
                    lanes_pair_force(&c, &mut g, a, b, sd, &coef);
                }
                for (av, &rv) in acc.iter_mut().zip(&row) {
                    *av += f64::from(rv);
                }
            }
            if osc != 0.0 {
                // −½ s Σ_i |x_i − x̄|², gradient −s (x_i − x̄)
                for kk in 0..sd {
                    let mut mean = [0.0f32; L];
                    for i in 0..np {
                        for (mv, &v) in mean.iter_mut().zip(&c[i * sd + kk]) {
                            *mv += v;
                        }
                    }
                    for mv in mean.iter_mut() {
                        *mv *= inv_np;
                    }
                    let mut sq = [0.0f32; L];
                    for i in 0..np {
                        let (ci, gi) = (&c[i * sd + kk], &mut g[i * sd + kk]);
                        for j in 0..L {
                            let dv = ci[j] - mean[j];
                            sq[j] += dv * dv;
                            gi[j] -= osc * dv;
                        }
                    }
                    for (av, &q) in acc.iter_mut().zip(&sq) {
                        *av -= f64::from(0.5 * osc * q);
                    }
                }
            }
            invalid += write_block_lanes(self, xs, lp, grads, j0, m, &acc, &g[..dim]);
            j0 += m;
        }
        invalid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::testing::check_gradient;

    #[test]
    fn dimer_at_minimum() {
        // two particles at r_m: each ordered pair contributes −ε → E = −2 + oscillator 2·½·(½)² = 0.25
        let mut lj = LennardJones::reference(2);
        let x = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        assert!((lj.log_prob(&x) - (2.0 - 0.25)).abs() < 1e-12);
        let mut g = [0.0; 6];
        lj.log_prob_grad(&x, &mut g);
        // pair force vanishes at r_m; only the oscillator pulls: −(x_i − x̄)
        assert!((g[0] - 0.5).abs() < 1e-12 && (g[3] + 0.5).abs() < 1e-12);
        lj.oscillator_scale = 0.0;
        assert!((lj.log_prob(&x) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let lj = LennardJones::reference(13);
        for s in 0..4 {
            // a loose cluster: no pair closer than ~0.7
            let x: Vec<f64> = (0..39)
                .map(|i| {
                    let p = (i / 3) as f64;
                    let k = i % 3;
                    [
                        p.cos() * (1.0 + 0.1 * p),
                        p.sin() * (1.0 + 0.1 * p),
                        0.3 * p,
                    ][k] + 0.05 * ((i + 7 * s) as f64).sin()
                })
                .collect();
            check_gradient(&lj, &x, 1e-5);
        }
    }
}
