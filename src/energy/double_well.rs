//! Multi-particle double-well potential (DW-4 in the reference, from bgflow):
//! E(x) = Σ_{i<j} a·(d_ij − d₀)⁴ + b·(d_ij − d₀)² + c, log p = −E.
//! Reference DW-4: 4 particles in 2-D, a = 0.9, b = −4, c = 0, d₀ = 4.
//!
//! Coincident particles (d_ij = 0) have a finite energy; the direction of the pair force is
//! undefined there and its gradient contribution is taken as 0 (the average over directions).

use super::particles::{lanes_pair_force, lanes_r2, pair_sum_any, ParticleShape};
use super::{log_prob_grad_each, write_block_lanes, write_lanes_checked, Energy};

/// The multi-particle double well.
#[derive(Clone, Debug, PartialEq)]
pub struct DoubleWell {
    pub shape: ParticleShape,
    pub a: f64,
    pub b: f64,
    pub c: f64,
    pub offset: f64,
}

impl DoubleWell {
    /// The reference DW-4 target.
    pub fn dw4() -> Self {
        Self {
            shape: ParticleShape {
                n_particles: 4,
                spatial_dim: 2,
            },
            a: 0.9,
            b: -4.0,
            c: 0.0,
            offset: 4.0,
        }
    }

    /// (−φ, −dφ/d(r²)) for one pair: the pair's contribution to log p.
    #[inline(always)]
    fn pair_logp(&self, r2: f64) -> (f64, f64) {
        let d = r2.sqrt();
        let u = d - self.offset;
        let u2 = u * u;
        let e = self.a * u2 * u2 + self.b * u2 + self.c;
        let de_dd = 4.0 * self.a * u2 * u + 2.0 * self.b * u;
        let de_dr2 = if d > 0.0 { de_dd / (2.0 * d) } else { 0.0 };
        (-e, -de_dr2)
    }
}

impl Energy for DoubleWell {
    fn name(&self) -> String {
        if *self == Self::dw4() {
            "dw4".into()
        } else {
            format!("dw{}", self.shape.n_particles)
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
    }
    fn log_prob_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        grad.fill(0.0);
        pair_sum_any(x, self.shape.spatial_dim, Some(grad), |r2| {
            self.pair_logp(r2)
        })
    }
    fn log_prob_grad_block(&self, xs: &[f64], lp: &mut [f64], grads: &mut [f64]) -> usize {
        if self.dim() > KERNEL_MAX_DIM {
            return log_prob_grad_each(self, xs, lp, grads);
        }
        let dw = self;
        if self.shape.n_particles == 4 && self.shape.spatial_dim == 2 {
            // DW-4: the whole working set in registers
            return crate::multiversion!((dw: &DoubleWell, xs: &[f64], lp: &mut [f64], grads: &mut [f64]) -> usize {
                dw.dw4_kernel(xs, lp, grads)
            });
        }
        // the working set sized to the dimension: zeroing a 32-coordinate set for DW-4's 8 cost
        // ~10 % of a DEM target estimate
        if self.dim() <= 8 {
            crate::multiversion!((dw: &DoubleWell, xs: &[f64], lp: &mut [f64], grads: &mut [f64]) -> usize {
                dw.block_kernel::<8>(xs, lp, grads)
            })
        } else {
            crate::multiversion!((dw: &DoubleWell, xs: &[f64], lp: &mut [f64], grads: &mut [f64]) -> usize {
                dw.block_kernel::<KERNEL_MAX_DIM>(xs, lp, grads)
            })
        }
    }
}

/// Configurations handled together by the vectorised kernel.
const LANES: usize = 64;
/// Largest `dim` the vectorised kernel takes (its working set lives on the stack).
const KERNEL_MAX_DIM: usize = 32;

impl DoubleWell {
    /// The block evaluation (coordinate-major, see [`Energy::log_prob_grad_block`]) vectorised
    /// across configurations: for each pair, distance, energy and force are computed for
    /// [`LANES`] configurations at once, in f32 — the reference's precision; log p agrees with the
    /// f64 `log_prob_grad` to a few f32 ulps of Σ|pair terms| (tested), far below the Monte-Carlo
    /// noise of the DEM target that uses it. A configuration whose f32 result is not finite
    /// (e.g. an overflow at huge distances) is re-evaluated in f64, so validity is decided exactly
    /// as by `log_prob_grad`.
    #[inline(always)]
    fn block_kernel<const D: usize>(&self, xs: &[f64], lp: &mut [f64], grads: &mut [f64]) -> usize {
        let n = lp.len();
        let dim = self.dim();
        debug_assert!(dim <= D);
        let sd = self.shape.spatial_dim;
        let np = self.shape.n_particles;
        let (pa, pb, pc, off) = (
            self.a as f32,
            self.b as f32,
            self.c as f32,
            self.offset as f32,
        );
        let mut c = [[0.0f32; LANES]; D];
        let mut g = [[0.0f32; LANES]; D];
        let mut invalid = 0;
        let mut j0 = 0;
        while j0 < n {
            let m = LANES.min(n - j0);
            for (d, (cd, gd)) in c.iter_mut().zip(g.iter_mut()).take(dim).enumerate() {
                for (v, &x) in cd.iter_mut().zip(&xs[d * n + j0..d * n + j0 + m]) {
                    *v = x as f32;
                }
                cd[m..].fill(0.0);
                gd.fill(0.0);
            }
            let mut acc = [0.0f32; LANES];
            for a in 0..np {
                for b in a + 1..np {
                    let r2 = lanes_r2(&c, a, b, sd);
                    let mut coef = [0.0f32; LANES];
                    for j in 0..LANES {
                        // as `pair_logp`, in f32
                        let d = r2[j].sqrt();
                        let u = d - off;
                        let u2 = u * u;
                        acc[j] -= pa * u2 * u2 + pb * u2 + pc;
                        let de_dd = 4.0 * pa * u2 * u + 2.0 * pb * u;
                        // ∂(−φ)/∂x_a = −2 φ'(r²)·(x_a − x_b), φ'(r²) = φ'(d)/(2d); 0 at d = 0
                        coef[j] = if d > 0.0 { -de_dd / d } else { 0.0 };
                    }
                    lanes_pair_force(&c, &mut g, a, b, sd, &coef);
                }
            }
            let acc = acc.map(f64::from);
            invalid += write_block_lanes(self, xs, lp, grads, j0, m, &acc, &g[..dim]);
            j0 += m;
        }
        invalid
    }

    /// [`DoubleWell::block_kernel`] for DW-4 (4 particles in 2-D), on [`SMALL_LANES`]
    /// configurations at a time with every index a compile-time constant, so that coordinates,
    /// gradients and log p are vector values (8 + 8 + 1 registers of 32; the compiler still
    /// spills some of them around the pair loop, docs/speed.md). The arithmetic is
    /// `block_kernel`'s, with the pair constant c summed once.
    #[inline(always)]
    fn dw4_kernel(&self, xs: &[f64], lp: &mut [f64], grads: &mut [f64]) -> usize {
        const L: usize = SMALL_LANES;
        debug_assert!(self.shape.n_particles == 4 && self.shape.spatial_dim == 2);
        let n = lp.len();
        let k = (self.a as f32, self.b as f32, self.offset as f32);
        let pairs_c = 6.0 * self.c as f32;
        let mut invalid = 0;
        let mut j0 = 0;
        while j0 < n {
            let m = L.min(n - j0);
            let mut c = [[0.0f32; L]; 8];
            for (d, cd) in c.iter_mut().enumerate() {
                let src = &xs[d * n + j0..d * n + j0 + m];
                if let Ok(full) = <&[f64; L]>::try_from(src) {
                    *cd = full.map(|v| v as f32);
                } else {
                    for (v, &x) in cd.iter_mut().zip(src) {
                        *v = x as f32;
                    }
                }
            }
            let mut g = [[0.0f32; L]; 8];
            let mut acc = [-pairs_c; L];
            dw_pair_lanes::<0, 1>(&c, &mut g, &mut acc, k);
            dw_pair_lanes::<0, 2>(&c, &mut g, &mut acc, k);
            dw_pair_lanes::<0, 3>(&c, &mut g, &mut acc, k);
            dw_pair_lanes::<1, 2>(&c, &mut g, &mut acc, k);
            dw_pair_lanes::<1, 3>(&c, &mut g, &mut acc, k);
            dw_pair_lanes::<2, 3>(&c, &mut g, &mut acc, k);
            invalid += write_lanes_checked(self, xs, lp, grads, j0, m, &acc, &g);
            j0 += m;
        }
        invalid
    }
}

/// One pair (A, B) of a 2-D double well in [`SMALL_LANES`] configurations: adds −φ(d) to `acc`
/// and the pair force to both particles' gradient rows. `k` = (a, b, d₀) in f32.
#[inline(always)]
fn dw_pair_lanes<const A: usize, const B: usize>(
    c: &[[f32; SMALL_LANES]; 8],
    g: &mut [[f32; SMALL_LANES]; 8],
    acc: &mut [f32; SMALL_LANES],
    (pa, pb, off): (f32, f32, f32),
) {
    for j in 0..SMALL_LANES {
        let dx = c[2 * A][j] - c[2 * B][j];
        let dy = c[2 * A + 1][j] - c[2 * B + 1][j];
        let r2 = dx.mul_add(dx, dy * dy);
        let d = r2.sqrt();
        let u = d - off;
        let u2 = u * u;
        acc[j] = (-pa.mul_add(u2, pb)).mul_add(u2, acc[j]);
        let de_dd = u * (4.0 * pa).mul_add(u2, 2.0 * pb);
        // ∂(−φ)/∂x_a = −φ'(d)·(x_a − x_b)/d; 0 at d = 0
        let coef = if d > 0.0 { -de_dd / d } else { 0.0 };
        g[2 * A][j] = coef.mul_add(dx, g[2 * A][j]);
        g[2 * A + 1][j] = coef.mul_add(dy, g[2 * A + 1][j]);
        g[2 * B][j] = (-coef).mul_add(dx, g[2 * B][j]);
        g[2 * B + 1][j] = (-coef).mul_add(dy, g[2 * B + 1][j]);
    }
}

/// Configurations per step of [`DoubleWell::dw4_kernel`] (one 512-bit register of f32).
const SMALL_LANES: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::testing::check_gradient;

    #[test]
    fn two_particle_closed_form() {
        let dw = DoubleWell::dw4();
        // particles 0 and 1 at distance 5, others far away along a line: check one pair by hand
        let e = |d: f64| 0.9 * (d - 4.0).powi(4) - 4.0 * (d - 4.0).powi(2);
        let x = [0.0, 0.0, 5.0, 0.0, 0.0, 7.0, 5.0, 7.0];
        let d74 = (25.0f64 + 49.0).sqrt();
        let expect = -(e(5.0) + e(7.0) + e(d74) + e(d74) + e(7.0) + e(5.0));
        assert!((dw.log_prob(&x) - expect).abs() < 1e-12);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let dw = DoubleWell::dw4();
        for s in 0..5 {
            let x: Vec<f64> = (0..8)
                .map(|i| ((i + 3 * s) as f64 * 1.3).sin() * 3.0)
                .collect();
            check_gradient(&dw, &x, 1e-6);
        }
    }

    #[test]
    fn coincident_particles_are_finite() {
        let dw = DoubleWell::dw4();
        let x = [1.0, 1.0, 1.0, 1.0, -2.0, 0.5, 3.0, -1.0];
        let mut g = [0.0; 8];
        let lp = dw.log_prob_grad(&x, &mut g);
        assert!(lp.is_finite() && g.iter().all(|v| v.is_finite()));
    }
}
