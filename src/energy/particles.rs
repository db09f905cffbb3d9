//! Particle-system structure and helpers: shape, centre-of-mass removal, interatomic distances,
//! and the allocation-free pair loop shared by the pair-potential targets.
//!
//! Layout convention: a configuration of `n` particles in `d` spatial dimensions is a flat
//! vector `[x_0^0 .. x_0^{d-1}, x_1^0, ..]` (particle-major), as in the reference.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `n_particles` particles in `spatial_dim` dimensions (dim = n_particles × spatial_dim).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticleShape {
    pub n_particles: usize,
    pub spatial_dim: usize,
}

impl ParticleShape {
    /// Coordinates per configuration.
    pub fn dim(&self) -> usize {
        self.n_particles * self.spatial_dim
    }
    /// Number of unordered pairs i < j.
    pub fn n_pairs(&self) -> usize {
        self.n_particles * (self.n_particles - 1) / 2
    }
}

/// Subtract the centre of mass from every configuration of the batch `x` (`[N, dim]`), in place.
pub fn remove_mean(x: &mut [f32], shape: ParticleShape) {
    let (n, d) = (shape.n_particles, shape.spatial_dim);
    for conf in x.chunks_exact_mut(shape.dim()) {
        for k in 0..d {
            let mean = (0..n).map(|i| f64::from(conf[i * d + k])).sum::<f64>() / n as f64;
            for i in 0..n {
                conf[i * d + k] = (f64::from(conf[i * d + k]) - mean) as f32;
            }
        }
    }
}

/// Remove the centroid of one f64 configuration `x` (`dim` values), in place.
pub fn remove_mean_f64(x: &mut [f64], p: ParticleShape) {
    let (n, d) = (p.n_particles, p.spatial_dim);
    for k in 0..d {
        let mean = (0..n).map(|i| x[i * d + k]).sum::<f64>() / n as f64;
        for i in 0..n {
            x[i * d + k] -= mean;
        }
    }
}

/// Interatomic distances |x_i − x_j| for i < j (row-major over i, then j) of every configuration
/// of the batch `x` (`[N, dim]`). Returns `[N, n_pairs]`.
pub fn interatomic_distances(x: &[f32], shape: ParticleShape) -> Result<Vec<f32>> {
    if !x.len().is_multiple_of(shape.dim()) {
        return Err(Error::Shape(format!(
            "{} values is not a whole number of {}x{} configurations",
            x.len(),
            shape.n_particles,
            shape.spatial_dim
        )));
    }
    let (n, d) = (shape.n_particles, shape.spatial_dim);
    let mut out = Vec::with_capacity(x.len() / shape.dim() * shape.n_pairs());
    for conf in x.chunks_exact(shape.dim()) {
        for i in 0..n {
            for j in i + 1..n {
                let r2: f64 = (0..d)
                    .map(|k| {
                        let diff = f64::from(conf[i * d + k]) - f64::from(conf[j * d + k]);
                        diff * diff
                    })
                    .sum();
                out.push(r2.sqrt() as f32);
            }
        }
    }
    Ok(out)
}

/// Sum a pair potential over unordered pairs i < j and accumulate its gradient.
///
/// `phi(r²)` returns `(φ, dφ/d(r²))`. Returns Σ φ and, when `grad` is given, **adds**
/// ∂(Σ φ)/∂x = Σ 2·φ'(r²)·(x_i − x_j) (for particle i; the opposite for j) into it.
/// `D` is the spatial dimension, a constant so the inner loop is fully unrolled.
#[inline(always)]
pub(crate) fn pair_sum<const D: usize>(
    x: &[f64],
    mut grad: Option<&mut [f64]>,
    phi: impl Fn(f64) -> (f64, f64),
) -> f64 {
    let n = x.len() / D;
    let mut total = 0.0;
    for i in 0..n {
        let xi: [f64; D] = std::array::from_fn(|k| x[i * D + k]);
        let mut gi = [0.0f64; D];
        for j in i + 1..n {
            let mut diff = [0.0f64; D];
            let mut r2 = 0.0;
            for k in 0..D {
                diff[k] = xi[k] - x[j * D + k];
                r2 += diff[k] * diff[k];
            }
            let (e, de) = phi(r2);
            total += e;
            if let Some(g) = grad.as_deref_mut() {
                let c = 2.0 * de;
                for k in 0..D {
                    let f = c * diff[k];
                    gi[k] += f;
                    g[j * D + k] -= f;
                }
            }
        }
        if let Some(g) = grad.as_deref_mut() {
            for k in 0..D {
                g[i * D + k] += gi[k];
            }
        }
    }
    total
}

/// Same as [`pair_sum`] for a spatial dimension only known at run time.
pub(crate) fn pair_sum_dyn(
    x: &[f64],
    d: usize,
    mut grad: Option<&mut [f64]>,
    phi: impl Fn(f64) -> (f64, f64),
) -> f64 {
    let n = x.len() / d;
    let mut total = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            let r2: f64 = (0..d).map(|k| (x[i * d + k] - x[j * d + k]).powi(2)).sum();
            let (e, de) = phi(r2);
            total += e;
            if let Some(g) = grad.as_deref_mut() {
                for k in 0..d {
                    let f = 2.0 * de * (x[i * d + k] - x[j * d + k]);
                    g[i * d + k] += f;
                    g[j * d + k] -= f;
                }
            }
        }
    }
    total
}

/// Squared distances between particles `a` and `b` in `L` configurations at once (vectorised
/// block kernels: `c` holds one `[f32; L]` row per coordinate).
#[inline(always)]
pub(crate) fn lanes_r2<const L: usize>(c: &[[f32; L]], a: usize, b: usize, sd: usize) -> [f32; L] {
    let mut r2 = [0.0f32; L];
    for k in 0..sd {
        let (ca, cb) = (&c[a * sd + k], &c[b * sd + k]);
        for j in 0..L {
            let d = ca[j] - cb[j];
            r2[j] += d * d;
        }
    }
    r2
}

/// Adds a pair's force `coef·(x_a − x_b)` to particle `a`'s gradient rows in `g` and subtracts it
/// from `b`'s, in `L` configurations at once.
#[inline(always)]
pub(crate) fn lanes_pair_force<const L: usize>(
    c: &[[f32; L]],
    g: &mut [[f32; L]],
    a: usize,
    b: usize,
    sd: usize,
    coef: &[f32; L],
) {
    for k in 0..sd {
        let (ia, ib) = (a * sd + k, b * sd + k);
        for j in 0..L {
            let v = coef[j] * (c[ia][j] - c[ib][j]);
            g[ia][j] += v;
            g[ib][j] -= v;
        }
    }
}

/// Dispatch [`pair_sum`] on the spatial dimension (2 and 3 unrolled).
#[inline(always)]
pub(crate) fn pair_sum_any(
    x: &[f64],
    d: usize,
    grad: Option<&mut [f64]>,
    phi: impl Fn(f64) -> (f64, f64),
) -> f64 {
    match d {
        2 => pair_sum::<2>(x, grad, phi),
        3 => pair_sum::<3>(x, grad, phi),
        _ => pair_sum_dyn(x, d, grad, phi),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_and_mean_removal() {
        let shape = ParticleShape {
            n_particles: 3,
            spatial_dim: 2,
        };
        let mut x = vec![
            0.0f32, 0.0, 3.0, 4.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
        ];
        let d = interatomic_distances(&x, shape).unwrap();
        assert_eq!(d, vec![5.0, 1.0, (9.0f32 + 9.0).sqrt(), 0.0, 0.0, 0.0]);
        remove_mean(&mut x, shape);
        for conf in x.chunks(6) {
            for k in 0..2 {
                let m: f32 = (0..3).map(|i| conf[i * 2 + k]).sum();
                assert!(m.abs() < 1e-6);
            }
        }
        // distances are translation invariant
        for (a, b) in interatomic_distances(&x, shape).unwrap()[..3]
            .iter()
            .zip(&d[..3])
        {
            assert!((a - b).abs() < 1e-6);
        }
        assert!(interatomic_distances(&x[..5], shape).is_err());
    }

    #[test]
    fn const_and_dynamic_pair_loops_agree() {
        let x: Vec<f64> = (0..15).map(|i| (i as f64 * 0.7).sin() * 2.0).collect();
        let phi = |r2: f64| (r2.sqrt().cos(), -r2.sqrt().sin() / (2.0 * r2.sqrt()));
        for d in [3usize, 5] {
            let mut g1 = vec![0.0; 15];
            let mut g2 = vec![0.0; 15];
            let e1 = pair_sum_any(&x, d, Some(&mut g1), phi);
            let e2 = pair_sum_dyn(&x, d, Some(&mut g2), phi);
            assert!((e1 - e2).abs() < 1e-12);
            for (a, b) in g1.iter().zip(&g2) {
                assert!((a - b).abs() < 1e-12);
            }
        }
    }
}
