//! Wasserstein distances between sample sets.

use rayon::prelude::*;

use crate::error::{Error, Result};

/// Raw 2-Wasserstein distance between two equal-size point sets `a`, `b` (`[n, dim]`, flattened
/// coordinates, uniform weights), computed exactly: the optimal assignment for the cost
/// c_ij = |a_i − b_j|² (Jonker–Volgenant shortest augmenting path, `lsap` crate), then
/// W2 = √(mean_i c_{i,σ(i)}). This is the paper's `dist_w2` (POT `emd2` on equal uniform weights,
/// whose optimum is a permutation), with the square root taken.
pub fn w2_exact(a: &[f32], b: &[f32], dim: usize) -> Result<f64> {
    let n = a.len() / dim;
    if a.len() != b.len() || !a.len().is_multiple_of(dim) || n == 0 {
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

/// W2 between two equal-size sets of items (configurations, or configurations prepared for a
/// distance) for a pairwise squared cost `sq_cost` (e.g. a distance after alignment): the m² costs
/// on all threads, the exact assignment (`lsap`), then √(mean assigned cost). `what` names the
/// metric in the error for unequal or empty sets. `sq_cost` gets a per-thread workspace `W`
/// (created with `W::default()`) to reuse.
pub fn w2_with_cost<T, W, F>(a: &[T], b: &[T], what: &str, sq_cost: F) -> Result<f64>
where
    T: Sync,
    W: Default,
    F: Fn(&mut W, &T, &T) -> f64 + Sync,
{
    let m = a.len();
    if a.len() != b.len() || m == 0 {
        return Err(Error::Shape(format!(
            "{what} needs two equal, non-empty sets of configurations, got {} and {}",
            a.len(),
            b.len()
        )));
    }
    // a progress bar on stderr (drawn only on a terminal) when the pairs take more than moments
    let bar = if m * m >= 10_000 {
        let bar = indicatif::ProgressBar::new((m * m) as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{what}: {{bar:30}} {{percent}}% of {m}×{m} pairs [{{elapsed}} < {{eta}}]"
            ))
            .expect("valid template"),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    // one row of pairs per task: the bar moves once per row
    let cost: Vec<f64> = (0..m)
        .into_par_iter()
        .map_init(W::default, |w, i| {
            let row: Vec<f64> = b.iter().map(|bj| sq_cost(w, &a[i], bj)).collect();
            bar.inc(m as u64);
            row
        })
        .flatten_iter()
        .collect();
    bar.finish_and_clear();
    let total = lsap::get_assigned_cost(m, m, &cost, false)
        .map_err(|e| Error::Config(format!("assignment solver failed: {e}")))?;
    Ok((total / m as f64).max(0.0).sqrt())
}

/// Raw W2 between many independent pairs of equal-size sets: `a` and `b` are cut into consecutive
/// chunks of `size` rows (a remainder shorter than `size` is dropped) and [`w2_exact`] is computed
/// for every pair (chunk i of `a`, chunk j of `b`), in parallel. Returns the values row-major in
/// (i, j). W2 between two `size`-point sets varies a lot with which points were drawn, on both
/// sides; the mean over all pairs estimates its expectation (see [`chunk_pair_summary`]).
pub fn w2_chunk_pairs(a: &[f32], b: &[f32], dim: usize, size: usize) -> Result<Vec<f64>> {
    let rows = size * dim;
    if size == 0 || a.len() < rows || b.len() < rows {
        return Err(Error::Shape(format!(
            "chunked W2 needs at least {size} rows in both sets (chunk size must be positive)"
        )));
    }
    let ca: Vec<&[f32]> = a.chunks_exact(rows).collect();
    let cb: Vec<&[f32]> = b.chunks_exact(rows).collect();
    (0..ca.len() * cb.len())
        .into_par_iter()
        .map(|k| w2_exact(ca[k / cb.len()], cb[k % cb.len()], dim))
        .collect()
}

/// Mean, standard deviation and standard error of a two-sample statistic computed on every pair
/// of `na` × `nb` independent chunks (`values` row-major in (i, j)). The pairs share chunks, so
/// they are not independent; the standard error uses the first-order (Hoeffding) decomposition
/// of a two-sample U-statistic, var(mean) ≈ var_i(row means)/na + var_j(column means)/nb,
/// with sample variances (n − 1). It is `NaN` with a single chunk on either side.
pub fn chunk_pair_summary(values: &[f64], na: usize, nb: usize) -> (f64, f64, f64) {
    let mean_of = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let var_of = |v: &[f64]| {
        let m = mean_of(v);
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0)
    };
    let mean = mean_of(values);
    let std = var_of(values).sqrt();
    let rows: Vec<f64> = values.chunks_exact(nb).map(mean_of).collect();
    let cols: Vec<f64> = (0..nb)
        .map(|j| (0..na).map(|i| values[i * nb + j]).sum::<f64>() / na as f64)
        .collect();
    let se = (var_of(&rows) / na as f64 + var_of(&cols) / nb as f64).sqrt();
    (mean, std, se)
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

    #[test]
    fn chunk_pairs_cover_every_pair_in_order() {
        // a: 3 chunks of 2 points in 1-D at 0, 10, 20; b: 2 chunks at 1, 5 (remainder dropped)
        let a = [0.0f32, 0.0, 10.0, 10.0, 20.0, 20.0];
        let b = [1.0f32, 1.0, 5.0, 5.0, 99.0];
        let v = w2_chunk_pairs(&a, &b, 1, 2).unwrap();
        assert_eq!(v.len(), 6);
        for (k, want) in [1.0, 5.0, 9.0, 5.0, 19.0, 15.0].iter().enumerate() {
            assert!((v[k] - want).abs() < 1e-9, "pair {k}: {} vs {want}", v[k]);
        }
        assert!(w2_chunk_pairs(&a, &b, 1, 6).is_err()); // b has 5 rows
        assert!(w2_chunk_pairs(&a, &b, 1, 0).is_err());
    }

    #[test]
    fn chunk_pair_summary_matches_hand_computation() {
        // rows: (1, 3) and (5, 7): row means 2, 6; column means 3, 5
        let (m, sd, se) = chunk_pair_summary(&[1.0, 3.0, 5.0, 7.0], 2, 2);
        assert!((m - 4.0).abs() < 1e-12);
        assert!((sd - (20.0f64 / 3.0).sqrt()).abs() < 1e-12);
        // var(rows) = 8, var(cols) = 2 → √(8/2 + 2/2) = √5
        assert!((se - 5.0f64.sqrt()).abs() < 1e-12);
        assert!(chunk_pair_summary(&[1.0, 2.0], 1, 2).2.is_nan());
    }
}
