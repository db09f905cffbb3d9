//! Histogram distances.

use crate::error::{Error, Result};

/// ½ Σ |p − q| between two histograms normalised to probabilities, in [0, 1].
fn tv_of_counts(ca: &[u32], cb: &[u32]) -> f64 {
    let na = f64::from(ca.iter().sum::<u32>().max(1));
    let nb = f64::from(cb.iter().sum::<u32>().max(1));
    let sum: f64 = ca
        .iter()
        .zip(cb)
        .map(|(&p, &q)| (f64::from(p) / na - f64::from(q) / nb).abs())
        .sum();
    // rounding can push the sum a few ulps past 2 for disjoint sets
    (0.5 * sum).min(1.0)
}

/// Total variation between two 2-D point sets on a `bins × bins` histogram (the paper's GMM TV):
/// the range of each axis is [min, max] over **both** sets, so no point falls outside; each set's
/// histogram is normalised to probabilities and TV = ½ Σ |p − q|, in [0, 1].
pub fn tv_2d(a: &[f32], b: &[f32], bins: usize) -> Result<f64> {
    if a.is_empty()
        || b.is_empty()
        || !a.len().is_multiple_of(2)
        || !b.len().is_multiple_of(2)
        || bins == 0
    {
        return Err(Error::Shape(
            "2-D TV needs two non-empty sets of 2-D points".into(),
        ));
    }
    let mut lo = [f64::INFINITY; 2];
    let mut hi = [f64::NEG_INFINITY; 2];
    for p in a.chunks_exact(2).chain(b.chunks_exact(2)) {
        for d in 0..2 {
            let v = f64::from(p[d]);
            if !v.is_finite() {
                return Err(Error::NonFinite(
                    "TV input has a non-finite coordinate".into(),
                ));
            }
            lo[d] = lo[d].min(v);
            hi[d] = hi[d].max(v);
        }
    }
    let cell = |v: f64, d: usize| -> usize {
        let w = (hi[d] - lo[d]).max(f64::MIN_POSITIVE);
        (((v - lo[d]) / w * bins as f64) as usize).min(bins - 1)
    };
    let counts = |s: &[f32]| {
        let mut h = vec![0u32; bins * bins];
        for p in s.chunks_exact(2) {
            h[cell(f64::from(p[0]), 0) * bins + cell(f64::from(p[1]), 1)] += 1;
        }
        h
    };
    Ok(tv_of_counts(&counts(a), &counts(b)))
}

/// Total variation between two 1-D samples on a `bins`-bin histogram over [min, max] of **both**
/// sets, so every value — outliers included — falls in a bin; TV = ½ Σ |p − q| in [0, 1].
/// Non-finite values are an error.
pub fn tv_1d(a: &[f64], b: &[f64], bins: usize) -> Result<f64> {
    if a.is_empty() || b.is_empty() || bins == 0 {
        return Err(Error::Shape("1-D TV needs two non-empty sets".into()));
    }
    if a.iter().chain(b).any(|v| !v.is_finite()) {
        return Err(Error::NonFinite("TV input has a non-finite value".into()));
    }
    let lo = a.iter().chain(b).copied().fold(f64::INFINITY, f64::min);
    let hi = a.iter().chain(b).copied().fold(f64::NEG_INFINITY, f64::max);
    let w = (hi - lo).max(f64::MIN_POSITIVE);
    let counts = |s: &[f64]| {
        let mut h = vec![0u32; bins];
        for &v in s {
            h[(((v - lo) / w * bins as f64) as usize).min(bins - 1)] += 1;
        }
        h
    };
    Ok(tv_of_counts(&counts(a), &counts(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tv_1d_counts_outliers_and_is_bounded() {
        let a = [0.0, 1.0, 2.0, 3.0];
        assert_eq!(tv_1d(&a, &a, 200).unwrap(), 0.0);
        // one far outlier in b: its bin has no mass in a, so it counts fully
        let b = [0.0, 1.0, 2.0, 1000.0];
        let tv = tv_1d(&a, &b, 200).unwrap();
        assert!((0.25 - 1e-12..=1.0).contains(&tv), "{tv}");
        assert!((tv_1d(&[0.0, 0.0], &[5.0, 5.0], 10).unwrap() - 1.0).abs() < 1e-12);
        assert!(tv_1d(&[f64::NAN], &a, 10).is_err());
    }

    #[test]
    fn tv_is_zero_for_identical_and_one_for_disjoint_sets() {
        let a = [0.0f32, 0.0, 1.0, 1.0];
        assert_eq!(tv_2d(&a, &a, 200).unwrap(), 0.0);
        let b = [5.0f32, 5.0, 6.0, 6.0];
        assert!((tv_2d(&a, &b, 200).unwrap() - 1.0).abs() < 1e-12);
        // half the mass moved
        let c = [0.0f32, 0.0, 6.0, 6.0];
        assert!((tv_2d(&a, &c, 200).unwrap() - 0.5).abs() < 1e-12);
    }
}
