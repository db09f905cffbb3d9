//! Wasserstein distances between sample sets.

use crate::error::{Error, Result};

/// Raw 2-Wasserstein distance between two equal-size point sets `a`, `b` (`[n, dim]`, flattened
/// coordinates, uniform weights), computed exactly: the optimal assignment for the cost
/// c_ij = |a_i − b_j|² (Jonker–Volgenant shortest augmenting path, `lsap` crate), then
/// W2 = √(mean_i c_{i,σ(i)}). This is the paper's `dist_w2` (POT `emd2` on equal uniform weights,
/// whose optimum is a permutation), with the square root taken.
pub fn w2_exact(a: &[f32], b: &[f32], dim: usize) -> Result<f64> {
    let n = a.len() / dim;
    if a.len() != b.len() || a.len() % dim != 0 || n == 0 {
        return Err(Error::Shape(format!(
            "W2 needs two equal, non-empty sets of {dim}-dimensional points, got {} and {} values",
            a.len(),
            b.len()
        )));
    }
    let mut cost = vec![0.0f64; n * n];
    for (i, ai) in a.chunks_exact(dim).enumerate() {
        for (j, bj) in b.chunks_exact(dim).enumerate() {
            cost[i * n + j] = ai
                .iter()
                .zip(bj)
                .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
                .sum();
        }
    }
    let total = lsap::get_assigned_cost(n, n, &cost, false)
        .map_err(|e| Error::Config(format!("assignment solver failed: {e}")))?;
    Ok((total / n as f64).max(0.0).sqrt())
}

/// p-Wasserstein distance between two 1-D empirical distributions of any sizes (uniform weights):
/// W_p = (∫₀¹ |F⁻¹(u) − G⁻¹(u)|^p du)^{1/p}, integrated exactly over the piecewise-constant
/// quantile functions. Non-finite values are not allowed (filter them first).
pub fn wasserstein_1d(a: &[f64], b: &[f64], p: f64) -> Result<f64> {
    if a.is_empty() || b.is_empty() || a.iter().chain(b).any(|v| !v.is_finite()) {
        return Err(Error::Shape(
            "1-D Wasserstein needs two non-empty sets of finite values".into(),
        ));
    }
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let (mut u, mut total) = (0.0f64, 0.0f64);
    while i < a.len() && j < b.len() {
        let next = ((i + 1) as f64 / na).min((j + 1) as f64 / nb);
        total += (next - u) * (a[i] - b[j]).abs().powf(p);
        u = next;
        if ((i + 1) as f64 / na) <= next {
            i += 1;
        }
        if ((j + 1) as f64 / nb) <= next {
            j += 1;
        }
    }
    Ok(total.powf(1.0 / p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn w2_of_a_shifted_permuted_set_is_the_shift() {
        let a: Vec<f32> = (0..40).map(|i| (i as f32 * 0.7).sin() * 3.0).collect();
        // b = a shifted by (0.5, 0) and reversed in order (a permutation)
        let mut b: Vec<f32> = a.chunks(2).rev().flat_map(|p| [p[0] + 0.5, p[1]]).collect();
        assert!((w2_exact(&a, &b, 2).unwrap() - 0.5).abs() < 1e-6);
        b.truncate(10);
        assert!(w2_exact(&a, &b, 2).is_err());
    }

    #[test]
    fn one_dimensional_distances() {
        // equal sizes: sorted matching
        let w = wasserstein_1d(&[0.0, 1.0, 2.0], &[2.5, 0.5, 1.5], 2.0).unwrap();
        assert!((w - 0.5).abs() < 1e-12);
        // unequal sizes: {0, 1} vs {0, 0.5, 1}: |F⁻¹−G⁻¹| = 0.5 on u ∈ (1/3, 1/2] and (1/2, 2/3]
        let w1 = wasserstein_1d(&[0.0, 1.0], &[0.0, 0.5, 1.0], 1.0).unwrap();
        assert!((w1 - 1.0 / 6.0).abs() < 1e-12, "{w1}");
        assert!(wasserstein_1d(&[f64::NAN], &[1.0], 2.0).is_err());
    }
}
