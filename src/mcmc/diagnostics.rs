//! Convergence diagnostics of Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021),
//! "Rank-normalization, folding, and localization: an improved R̂":
//!
//! * **split R̂**: every chain is split in halves; the draws of all half-chains are pooled and
//!   rank-normalised (z = Φ⁻¹((rank − 3/8)/(S + 1/4)), average ranks for ties); R̂ =
//!   √(var⁺/W) with W the mean within-half-chain variance, B/n the variance of their means and
//!   var⁺ = (n−1)/n·W + B/n. The reported value is the maximum of the bulk R̂ (on the draws)
//!   and the tail R̂ (on |draw − median|, "folded").
//! * **bulk ESS**: on the same rank-normalised half-chains, ρ_t = 1 − (W − mean_j γ_j(t))/var⁺
//!   from each half-chain's autocovariance γ_j(t); Geyer's initial monotone sequence
//!   (pairs ρ_{2k} + ρ_{2k+1} summed while positive, made non-increasing) gives τ =
//!   −1 + 2·Σ pairs, and ESS = m·n/τ, capped at m·n·log₁₀(m·n) as the reference does.
//!
//! Inputs are `chains[j][i]`, chain j's i-th draw (all chains the same length ≥ 4).

/// Φ⁻¹(p) for p ∈ (0, 1): Acklam's rational approximation refined by one Halley step
/// (relative error ~1e−15).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let plow = 0.02425;
    let x = if p < plow {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - plow {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    // one Halley step on Φ(x) − p
    let e = 0.5 * erfc(-x / std::f64::consts::SQRT_2) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    x - u / (1.0 + x * u / 2.0)
}

/// erfc in f64 (Numerical Recipes' Chebyshev fit, relative error < 1.2e−7, refined by the
/// Halley step that uses it).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// The half-chains of `chains` (each split in two; an odd middle draw is dropped).
fn split(chains: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = chains.iter().map(Vec::len).min().unwrap_or(0) / 2;
    chains
        .iter()
        .flat_map(|c| [c[..n].to_vec(), c[c.len() - n..].to_vec()])
        .collect()
}

/// Rank-normalise the pooled draws of `chains` (same shape back).
fn rank_normalise(chains: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = chains[0].len();
    let mut all: Vec<(f64, usize)> = chains
        .iter()
        .flatten()
        .copied()
        .enumerate()
        .map(|(i, v)| (v, i))
        .collect();
    let s = all.len();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut z = vec![0.0; s];
    let mut i = 0;
    while i < s {
        let mut j = i;
        while j + 1 < s && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        // average rank (1-based) of the ties i..=j
        let rank = (i + j) as f64 / 2.0 + 1.0;
        let v = normal_quantile((rank - 0.375) / (s as f64 + 0.25));
        for item in &all[i..=j] {
            z[item.1] = v;
        }
        i = j + 1;
    }
    z.chunks(n).map(<[f64]>::to_vec).collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// (W, var⁺) of equally long chains.
fn variances(chains: &[Vec<f64>]) -> (f64, f64) {
    let n = chains[0].len() as f64;
    let m = chains.len() as f64;
    let means: Vec<f64> = chains.iter().map(|c| mean(c)).collect();
    let grand = mean(&means);
    let b = n / (m - 1.0) * means.iter().map(|x| (x - grand).powi(2)).sum::<f64>();
    let w = chains
        .iter()
        .zip(&means)
        .map(|(c, mu)| c.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / (n - 1.0))
        .sum::<f64>()
        / m;
    (w, (n - 1.0) / n * w + b / n)
}

fn rhat_of(chains: &[Vec<f64>]) -> f64 {
    let (w, var_plus) = variances(chains);
    if w <= 0.0 {
        return if var_plus <= 0.0 { 1.0 } else { f64::INFINITY };
    }
    (var_plus / w).sqrt()
}

/// Rank-normalised split R̂ (maximum of bulk and folded-tail), or NaN with fewer than 4 draws
/// per chain or a single chain of fewer than 8.
pub fn split_rhat(chains: &[Vec<f64>]) -> f64 {
    let halves = split(chains);
    if halves.len() < 2 || halves[0].len() < 2 {
        return f64::NAN;
    }
    let bulk = rhat_of(&rank_normalise(&halves));
    let mut pooled: Vec<f64> = halves.iter().flatten().copied().collect();
    pooled.sort_by(f64::total_cmp);
    let med = pooled[pooled.len() / 2];
    let folded: Vec<Vec<f64>> = halves
        .iter()
        .map(|c| c.iter().map(|x| (x - med).abs()).collect())
        .collect();
    let tail = rhat_of(&rank_normalise(&folded));
    bulk.max(tail)
}

/// Bulk effective sample size (see the module docs), or NaN with too few draws.
pub fn bulk_ess(chains: &[Vec<f64>]) -> f64 {
    let halves = split(chains);
    if halves.len() < 2 || halves[0].len() < 4 {
        return f64::NAN;
    }
    let z = rank_normalise(&halves);
    let (w, var_plus) = variances(&z);
    let m = z.len();
    let n = z[0].len();
    let total = (m * n) as f64;
    if var_plus <= 0.0 {
        return total;
    }
    let centred: Vec<Vec<f64>> = z
        .iter()
        .map(|c| {
            let mu = mean(c);
            c.iter().map(|x| x - mu).collect()
        })
        .collect();
    // ρ_t from the mean autocovariance (biased estimator, as the reference)
    let rho = |t: usize| -> f64 {
        let g: f64 = centred
            .iter()
            .map(|c| {
                c[..n - t]
                    .iter()
                    .zip(&c[t..])
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
                    / n as f64
            })
            .sum::<f64>()
            / m as f64;
        1.0 - (w - g) / var_plus
    };
    let mut tau = -1.0;
    let mut prev_pair = f64::INFINITY;
    let mut t = 0;
    while t + 1 < n {
        let mut pair = rho(t) + rho(t + 1);
        if pair <= 0.0 {
            break;
        }
        pair = pair.min(prev_pair);
        tau += 2.0 * pair;
        prev_pair = pair;
        t += 2;
    }
    let tau = tau.max(1.0 / total.log10().max(1.0));
    (total / tau).min(total * total.log10().max(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::stream;
    use rand::RngExt;
    use rand_distr::StandardNormal;

    #[test]
    fn normal_quantile_inverts_the_cdf() {
        for &p in &[
            1e-12,
            1e-6,
            0.01,
            0.02425,
            0.1,
            0.3,
            0.5,
            0.77,
            0.99,
            1.0 - 1e-9,
        ] {
            let x = normal_quantile(p);
            let back = 0.5 * erfc(-x / std::f64::consts::SQRT_2);
            assert!(
                ((back - p) / p.min(1.0 - p)).abs() < 1e-6,
                "p {p}: x {x}, Φ(x) {back}"
            );
        }
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-6);
    }

    /// Independent chains from one distribution: R̂ ≈ 1 and ESS ≈ number of draws. An AR(1)
    /// chain with coefficient φ has ESS ≈ N(1−φ)/(1+φ). Chains stuck at different levels give
    /// R̂ ≫ 1.
    #[test]
    fn rhat_and_ess_behave_on_known_chains() {
        let mut rng = stream(7, 0);
        let iid: Vec<Vec<f64>> = (0..4)
            .map(|_| {
                (0..1000)
                    .map(|_| rng.sample::<f64, _>(StandardNormal))
                    .collect()
            })
            .collect();
        let r = split_rhat(&iid);
        assert!(r < 1.01, "iid R̂ {r}");
        let e = bulk_ess(&iid);
        assert!((3200.0..4800.0).contains(&e), "iid ESS {e}");
        let phi = 0.9;
        let ar: Vec<Vec<f64>> = (0..4)
            .map(|_| {
                let mut x = 0.0;
                (0..5000)
                    .map(|_| {
                        x = phi * x
                            + (1.0f64 - phi * phi).sqrt() * rng.sample::<f64, _>(StandardNormal);
                        x
                    })
                    .collect()
            })
            .collect();
        let e = bulk_ess(&ar);
        let want = 20_000.0 * (1.0 - phi) / (1.0 + phi);
        assert!((e / want - 1.0).abs() < 0.25, "AR(1) ESS {e} vs {want}");
        let stuck: Vec<Vec<f64>> = (0..4)
            .map(|j| {
                (0..500)
                    .map(|_| j as f64 + 0.1 * rng.sample::<f64, _>(StandardNormal))
                    .collect()
            })
            .collect();
        assert!(split_rhat(&stuck) > 2.0);
    }
}
