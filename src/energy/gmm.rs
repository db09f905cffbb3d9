//! Gaussian mixture with diagonal covariances (GMM-40 in the reference):
//! p(x) = Σ_k w_k N(x; μ_k, diag σ_k²), normalised.
//!
//! log p is a log-sum-exp over modes in f64. Modes whose log-term lies more than
//! [`LOGSUMEXP_CUTOFF`] nats below the largest are skipped: each contributes less than
//! e^−40 ≈ 4e−18 of the total, below f64 resolution even summed over thousands of modes, so the
//! result is unchanged while most `exp` calls are saved (a point is near few of the 40 modes).
//!
//! Convolving with N(0, hI) gives another GMM with σ_k² + h ([`Gmm::convolved`]), whose score is
//! the exact DEM target used to test the estimator.

use rand::RngExt;
use rand_distr::StandardNormal;

use super::gmm40_table::{MEANS, SCALE_DIAG};
use super::{log_prob_grad_each, log_prob_grad_lanes, Energy};
use crate::error::{Error, Result};
use crate::simd::exp_neg;

/// Terms of the log-sum-exp further than this below the maximum are dropped (see module docs).
pub const LOGSUMEXP_CUTOFF: f64 = 40.0;

/// A diagonal-covariance Gaussian mixture.
#[derive(Clone, Debug, PartialEq)]
pub struct Gmm {
    dim: usize,
    log_weights: Vec<f64>,
    means: Vec<f64>,
    scales: Vec<f64>,
    /// 1/σ², per mode and dimension.
    inv_var: Vec<f64>,
    /// log w_k − Σ_d log σ_kd − (dim/2)·log 2π.
    log_norm: Vec<f64>,
    name: String,
}

impl Gmm {
    /// A mixture from weights (normalised here), means `[n_modes, dim]` and per-dimension standard
    /// deviations `[n_modes, dim]`.
    pub fn new(name: &str, weights: &[f64], means: &[f64], scales: &[f64]) -> Result<Self> {
        let k = weights.len();
        if k == 0
            || !means.len().is_multiple_of(k)
            || means.len() != scales.len()
            || means.is_empty()
        {
            return Err(Error::Shape(format!(
                "GMM with {} weights, {} mean and {} scale values",
                k,
                means.len(),
                scales.len()
            )));
        }
        if weights.iter().any(|w| !(*w > 0.0 && w.is_finite()))
            || scales.iter().any(|s| !(*s > 0.0 && s.is_finite()))
        {
            return Err(Error::Config(
                "GMM weights and scales must be positive and finite".into(),
            ));
        }
        let dim = means.len() / k;
        let total: f64 = weights.iter().sum();
        let log_weights: Vec<f64> = weights.iter().map(|w| (w / total).ln()).collect();
        let inv_var = scales.iter().map(|s| 1.0 / (s * s)).collect();
        let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
        let log_norm = (0..k)
            .map(|m| {
                log_weights[m]
                    - scales[m * dim..(m + 1) * dim]
                        .iter()
                        .map(|s| s.ln())
                        .sum::<f64>()
                    - dim as f64 * half_log_2pi
            })
            .collect();
        Ok(Self {
            dim,
            log_weights,
            means: means.to_vec(),
            scales: scales.to_vec(),
            inv_var,
            log_norm,
            name: name.to_string(),
        })
    }

    /// The reference GMM-40: 40 equally weighted modes in 2-D, σ = softplus(1) per dimension.
    pub fn gmm40() -> Self {
        let means: Vec<f64> = MEANS.iter().flatten().map(|&v| f64::from(v)).collect();
        let scales: Vec<f64> = SCALE_DIAG.iter().flatten().map(|&v| f64::from(v)).collect();
        Self::new("gmm40", &[1.0; 40], &means, &scales).expect("built-in GMM-40 table is valid")
    }

    /// Number of modes.
    pub fn n_modes(&self) -> usize {
        self.log_weights.len()
    }
    /// Means, `[n_modes, dim]`.
    pub fn means(&self) -> &[f64] {
        &self.means
    }
    /// Per-dimension standard deviations, `[n_modes, dim]`.
    pub fn scales(&self) -> &[f64] {
        &self.scales
    }

    /// The mixture convolved with N(0, h·I): each mode's variance becomes σ² + h. Its log-density
    /// gradient is the exact noised score ∇log (p ∗ N(0, hI)), the quantity the DEM target estimates.
    pub fn convolved(&self, h: f64) -> Self {
        let scales: Vec<f64> = self.scales.iter().map(|s| (s * s + h).sqrt()).collect();
        let weights: Vec<f64> = self.log_weights.iter().map(|l| l.exp()).collect();
        Self::new(
            &format!("{}*N(0,{h})", self.name),
            &weights,
            &self.means,
            &scales,
        )
        .expect("convolving a valid mixture keeps it valid")
    }

    /// Exact samples, `[n, dim]` row-major.
    pub fn sample(&self, n: usize, rng: &mut impl RngExt) -> Vec<f32> {
        let weights: Vec<f64> = self.log_weights.iter().map(|l| l.exp()).collect();
        let mut out = Vec::with_capacity(n * self.dim);
        for _ in 0..n {
            let mut u: f64 = rng.random();
            let mut m = weights.len() - 1;
            for (k, w) in weights.iter().enumerate() {
                if u < *w {
                    m = k;
                    break;
                }
                u -= w;
            }
            for d in 0..self.dim {
                let z: f64 = rng.sample(StandardNormal);
                out.push((self.means[m * self.dim + d] + self.scales[m * self.dim + d] * z) as f32);
            }
        }
        out
    }

    /// log-term of mode `k`: log w_k + log N(x; μ_k, σ_k²).
    #[inline(always)]
    fn mode_term(&self, k: usize, x: &[f64]) -> f64 {
        let d = self.dim;
        let mu = &self.means[k * d..(k + 1) * d];
        let iv = &self.inv_var[k * d..(k + 1) * d];
        let mut q = 0.0;
        for j in 0..d {
            let z = x[j] - mu[j];
            q += z * z * iv[j];
        }
        self.log_norm[k] - 0.5 * q
    }

    /// The mode of largest responsibility for `x` (the component it most likely came from).
    pub fn mode_of(&self, x: &[f64]) -> usize {
        (0..self.n_modes())
            .map(|k| (k, self.mode_term(k, x)))
            .fold((0, f64::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a })
            .0
    }

    /// Responsibilities of every mode for `x` (posterior probabilities of the components, summing
    /// to 1; log-sum-exp) into `out` (`n_modes` values); returns [`Gmm::mode_of`]`(x)`, taken
    /// from the same mode terms.
    pub fn responsibilities(&self, x: &[f64], out: &mut [f64]) -> usize {
        for (k, o) in out.iter_mut().enumerate() {
            *o = self.mode_term(k, x);
        }
        let (mode, max) = out
            .iter()
            .copied()
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a });
        let mut sum = 0.0;
        for o in out.iter_mut() {
            *o = (*o - max).exp();
            sum += *o;
        }
        out.iter_mut().for_each(|o| *o /= sum);
        mode
    }

    /// Mixture weights.
    pub fn weights(&self) -> Vec<f64> {
        self.log_weights.iter().map(|l| l.exp()).collect()
    }

    #[inline(always)]
    fn max_term(&self, x: &[f64]) -> f64 {
        (0..self.n_modes())
            .map(|k| self.mode_term(k, x))
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

impl Energy for Gmm {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn as_mixture(&self) -> Option<&Gmm> {
        Some(self)
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn is_normalized(&self) -> bool {
        true
    }
    fn log_prob(&self, x: &[f64]) -> f64 {
        let m = self.max_term(x);
        let mut s = 0.0;
        for k in 0..self.n_modes() {
            let l = self.mode_term(k, x) - m;
            if l > -LOGSUMEXP_CUTOFF {
                s += l.exp();
            }
        }
        m + s.ln()
    }
    fn log_prob_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        // ∇log p = Σ_k r_k · (−(x − μ_k)/σ_k²), r_k = softmax_k(log-terms)
        let m = self.max_term(x);
        let d = self.dim;
        grad.fill(0.0);
        let mut s = 0.0;
        for k in 0..self.n_modes() {
            let l = self.mode_term(k, x) - m;
            if l > -LOGSUMEXP_CUTOFF {
                let w = l.exp();
                s += w;
                let mu = &self.means[k * d..(k + 1) * d];
                let iv = &self.inv_var[k * d..(k + 1) * d];
                for j in 0..d {
                    grad[j] -= w * (x[j] - mu[j]) * iv[j];
                }
            }
        }
        let inv = 1.0 / s;
        for g in grad.iter_mut() {
            *g *= inv;
        }
        m + s.ln()
    }
    fn log_prob_grad_block(&self, xs: &[f64], lp: &mut [f64], grads: &mut [f64]) -> usize {
        if self.n_modes() > KERNEL_MAX_MODES {
            return log_prob_grad_each(self, xs, lp, grads);
        }
        let gmm = self;
        // the per-mode terms sized to the mixture: zeroing 64 modes' worth for GMM-40 cost ~7 %
        // of a DEM target estimate
        if self.n_modes() <= 40 {
            crate::multiversion!((gmm: &Gmm, xs: &[f64], lp: &mut [f64], grads: &mut [f64]) -> usize {
                gmm.block_kernel::<40>(xs, lp, grads)
            })
        } else {
            crate::multiversion!((gmm: &Gmm, xs: &[f64], lp: &mut [f64], grads: &mut [f64]) -> usize {
                gmm.block_kernel::<KERNEL_MAX_MODES>(xs, lp, grads)
            })
        }
    }
}

/// Configurations handled together by the vectorised kernel.
const LANES: usize = 64;
/// Most modes the vectorised kernel takes (its per-mode terms live on the stack).
const KERNEL_MAX_MODES: usize = 64;

impl Gmm {
    /// The block evaluation (coordinate-major, see [`Energy::log_prob_grad_block`]) vectorised
    /// across configurations, in f64: every mode's log-term for [`LANES`] configurations, their
    /// maximum, the weights e^{term − max} (all modes: no cutoff needed, [`exp_neg`] is cheap),
    /// then log p = max + ln Σ and ∇log p = Σ_k r_k·(−(x − μ_k)/σ_k²). Agrees with
    /// `log_prob_grad` to rounding (tested). Lanes whose result is not finite are re-evaluated
    /// with `log_prob_grad`, so validity is decided exactly as there.
    #[inline(always)]
    fn block_kernel<const M: usize>(&self, xs: &[f64], lp: &mut [f64], grads: &mut [f64]) -> usize {
        let n = lp.len();
        let dim = self.dim;
        let nm = self.n_modes();
        debug_assert!(nm <= M);
        let mut terms = [[0.0f64; LANES]; M];
        grads.fill(0.0);
        let mut invalid = 0;
        let mut j0 = 0;
        while j0 < n {
            let m = LANES.min(n - j0);
            let lanes = j0..j0 + m;
            let mut mx = [f64::NEG_INFINITY; LANES];
            for (k, tk) in terms.iter_mut().take(nm).enumerate() {
                let tk = &mut tk[..m];
                tk.fill(self.log_norm[k]);
                for d in 0..dim {
                    let mu = self.means[k * dim + d];
                    let h = -0.5 * self.inv_var[k * dim + d];
                    for (t, &x) in tk.iter_mut().zip(&xs[d * n..][lanes.clone()]) {
                        let z = x - mu;
                        *t += h * z * z;
                    }
                }
                for (mj, &t) in mx.iter_mut().zip(tk.iter()) {
                    *mj = if t > *mj { t } else { *mj };
                }
            }
            // a mode whose term is below e^−60 of the largest in every lane adds less than
            // 1e−26 relative to Σ and to the gradient: skipped (its weight is exactly 0). The
            // lanes of a DEM block surround one point, so at small and medium noise most of
            // the 40 modes are skipped for the whole block.
            let mut active = [false; M];
            let mut sum = [0.0f64; LANES];
            for (tk, act) in terms.iter_mut().take(nm).zip(active.iter_mut()) {
                let gap = tk[..m]
                    .iter()
                    .zip(mx.iter())
                    .fold(f64::NEG_INFINITY, |g, (&t, &mj)| {
                        let v = t - mj;
                        if v > g {
                            v
                        } else {
                            g
                        }
                    });
                // NaN (non-finite lanes) keeps the mode: those lanes are re-evaluated anyway
                *act = gap >= -60.0 || gap.is_nan();
                if !*act {
                    continue;
                }
                for ((t, s), &mj) in tk[..m].iter_mut().zip(sum.iter_mut()).zip(mx.iter()) {
                    *t = exp_neg(*t - mj);
                    *s += *t;
                }
            }
            for (k, tk) in terms.iter().take(nm).enumerate() {
                if !active[k] {
                    continue;
                }
                for d in 0..dim {
                    let mu = self.means[k * dim + d];
                    let iv = self.inv_var[k * dim + d];
                    let x = &xs[d * n..][lanes.clone()];
                    let g = &mut grads[d * n..][lanes.clone()];
                    for ((gj, &xj), &w) in g.iter_mut().zip(x).zip(&tk[..m]) {
                        *gj -= w * (xj - mu) * iv;
                    }
                }
            }
            let mut finite = [0.0f64; LANES];
            for ((f, s), &mj) in finite.iter_mut().zip(sum.iter_mut()).zip(mx.iter()) {
                *s = 1.0 / *s;
                *f = mj * 0.0;
            }
            for d in 0..dim {
                let g = &mut grads[d * n..][lanes.clone()];
                for ((gj, &inv), f) in g.iter_mut().zip(sum.iter()).zip(finite.iter_mut()) {
                    *gj *= inv;
                    *f += *gj * 0.0;
                }
            }
            for jj in 0..m {
                // sum holds 1/Σ now; a non-finite lane is settled by `log_prob_grad`
                if finite[jj] == 0.0 {
                    lp[j0 + jj] = mx[jj] - sum[jj].ln();
                } else {
                    invalid += log_prob_grad_lanes(self, xs, lp, grads, [j0 + jj]);
                }
            }
            j0 += m;
        }
        invalid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::testing::check_gradient;
    use crate::rng::stream;

    #[test]
    fn single_gaussian_closed_form() {
        let g = Gmm::new("n", &[1.0], &[1.0, -2.0], &[2.0, 0.5]).unwrap();
        let x = [0.0, 0.0];
        let expect = -0.5 * ((1.0f64 / 2.0).powi(2) + (2.0f64 / 0.5).powi(2))
            - (2.0f64).ln()
            - (0.5f64).ln()
            - (2.0 * std::f64::consts::PI).ln();
        assert!((g.log_prob(&x) - expect).abs() < 1e-12);
    }

    #[test]
    fn gradient_matches_finite_differences_and_far_points_are_finite() {
        let g = Gmm::gmm40();
        for x in [
            [0.0, 0.0],
            [10.0, -5.0],
            [-33.0, -29.0],
            [200.0, 300.0],
            [1e4, -1e4],
        ] {
            check_gradient(&g, &x, 1e-6);
            assert!(g.log_prob(&x).is_finite());
        }
    }

    #[test]
    fn cutoff_does_not_change_log_prob() {
        // brute-force log-sum-exp over all modes vs the cut-off version
        let g = Gmm::gmm40();
        let mut rng = stream(1, 0);
        let xs = g.sample(200, &mut rng);
        for x in xs.chunks(2) {
            let x = [f64::from(x[0]) * 1.5, f64::from(x[1]) * 1.5];
            let terms: Vec<f64> = (0..40).map(|k| g.mode_term(k, &x)).collect();
            let m = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let full = m + terms.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
            assert!((full - g.log_prob(&x)).abs() <= 1e-14 * full.abs().max(1.0));
        }
    }

    #[test]
    fn sampler_matches_mode_weights() {
        let g = Gmm::new("two", &[1.0, 3.0], &[-10.0, 10.0], &[1.0, 1.0]).unwrap();
        let mut rng = stream(3, 0);
        let xs = g.sample(40_000, &mut rng);
        let right = xs.iter().filter(|v| **v > 0.0).count() as f64 / 40_000.0;
        // binomial sd ≈ 0.0022
        assert!((right - 0.75).abs() < 0.01, "{right}");
    }
}
