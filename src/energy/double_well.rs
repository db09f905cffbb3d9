//! Multi-particle double-well potential (DW-4 in the reference, from bgflow):
//! E(x) = Σ_{i<j} a·(d_ij − d₀)⁴ + b·(d_ij − d₀)² + c, log p = −E.
//! Reference DW-4: 4 particles in 2-D, a = 0.9, b = −4, c = 0, d₀ = 4.
//!
//! Coincident particles (d_ij = 0) have a finite energy; the direction of the pair force is
//! undefined there and its gradient contribution is taken as 0 (the average over directions).

use super::particles::{pair_sum_any, ParticleShape};
use super::Energy;

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
}

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
