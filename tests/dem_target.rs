//! Statistical checks of the DEM score target.
//!
//! 1. Exact answer on GMM-40: p ∗ N(0, hI) is the mixture with variances σ² + h, so the noised score is
//!    analytic. With K = 65536 the self-normalised estimator's bias (O(1/K)) is ~1/256 of its standard
//!    error (O(1/√K)), so the error is judged against the estimator's own delta-method standard error:
//!    z = (S_K − S)/SE must look standard normal — mean z² ≤ 1.5 over all components and every |z| ≤ 6
//!    (P(|z| > 6) ≈ 2e-9 per component for a normal). So that a large SE cannot hide a wrong answer,
//!    the median SE must be ≤ 1 % of the score's natural scale 1/σ_t (σ_t² = σ_mode² + h(t)).
//! 2. The reference implementation's targets for DW-4 and LJ-13 (K = 2^18 as two seeds of 2^17
//!    averaged, with halfdiff = |seed1 − seed2|/2): we build ours the same way, so ours − ref is the
//!    difference of two independent MC errors and E‖ours − ref‖² = E‖hd_ours‖² + E‖hd_ref‖² (each
//!    halfdiff² estimates the variance of its average). Per point ‖ours − ref‖ ≤ 4·√(‖hd_ours‖² +
//!    ‖hd_ref‖²), and over all points ≤ 2×. (The delta-method SE is not used here: at intermediate t the LJ weights are heavy-tailed and
//!    both estimators' errors are far from Gaussian.)
//! 3. Bias ∝ 1/K: the mean over many independent replicates of S_K minus the exact score, for K = 4..64.

mod common;
use common::fixture;
use idem::energy::{Energy, Gmm};
use idem::{DemTarget, NoiseSchedule, Target};

/// Summary of z-scores: (mean z², max |z|).
fn z_summary(est: &[f32], exact: &[f64], se: &[f32], se_factor: f64) -> (f64, f64) {
    let mut sum = 0.0;
    let mut worst: f64 = 0.0;
    for ((e, x), s) in est.iter().zip(exact).zip(se) {
        let z = (f64::from(*e) - x) / (se_factor * f64::from(*s)).max(1e-12);
        sum += z * z;
        worst = worst.max(z.abs());
    }
    (sum / est.len() as f64, worst)
}

#[test]
fn gmm40_estimate_matches_the_exact_noised_score() {
    let gmm = Gmm::gmm40();
    let target = Target::new(gmm.clone());
    // the reference's GMM schedule σ ∈ [1e-5, 1] acts on coordinates divided by 50
    let schedule = NoiseSchedule::geometric(5e-4, 50.0).unwrap();
    let dem = DemTarget::new(schedule, 65_536, None).unwrap();
    let times = [0.05f32, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 1.0];
    let per_t = 12;
    let mut rng = idem::rng::stream(11, 0);
    let base = gmm.sample(per_t * times.len(), &mut rng);
    // points drawn from the noised distribution p_t = p ∗ N(0, h(t)I), where training queries them
    let mut noise = idem::rng::NormalStream::new(12, 0);
    let mut z = vec![0.0f32; base.len()];
    noise.fill(&mut z);
    let mut x = base.clone();
    let mut t = Vec::new();
    for (i, &ti) in times.iter().enumerate() {
        let sd = schedule.sigma(f64::from(ti)) as f32;
        for p in i * per_t..(i + 1) * per_t {
            x[2 * p] += sd * z[2 * p];
            x[2 * p + 1] += sd * z[2 * p + 1];
            t.push(ti);
        }
    }
    let mut est = vec![0.0f32; x.len()];
    let mut se = vec![0.0f32; x.len()];
    let stats = dem
        .estimate_with_stderr(&target, &x, &t, 5, &mut est, &mut se)
        .unwrap();
    assert_eq!(stats.all_invalid_points, 0);
    let mut exact = vec![0.0f64; x.len()];
    let mut scaled_se = Vec::with_capacity(x.len());
    for (p, &ti) in t.iter().enumerate() {
        let conv = gmm.convolved(schedule.h(f64::from(ti)));
        let xp = [f64::from(x[2 * p]), f64::from(x[2 * p + 1])];
        conv.log_prob_grad(&xp, &mut exact[2 * p..2 * p + 2]);
        // natural scale of the score at time t: 1/σ_t with σ_t² = σ_mode² + h(t)
        let sigma_t = (1.3132616f64.powi(2) + schedule.h(f64::from(ti))).sqrt();
        for d in 0..2 {
            scaled_se.push(f64::from(se[2 * p + d]) * sigma_t);
        }
    }
    let (mean_z2, max_z) = z_summary(&est, &exact, &se, 1.0);
    scaled_se.sort_by(f64::total_cmp);
    let median_se = scaled_se[scaled_se.len() / 2];
    eprintln!(
        "GMM-40, K=65536, {} points: mean z² {mean_z2:.3}, max |z| {max_z:.2}, median SE·σ_t {median_se:.2e}, mean ESS {:.0}, min ESS {:.1}",
        t.len(),
        stats.mean_ess,
        stats.min_ess
    );
    assert!(
        mean_z2 <= 1.5 && max_z <= 6.0,
        "mean z² {mean_z2}, max |z| {max_z}"
    );
    assert!(
        median_se <= 0.01,
        "the test has no power: median SE·σ_t = {median_se}"
    );
}

fn reference_check(name: &str, sigma_min: f64, sigma_max: f64) {
    let target = Target::by_name(name).unwrap();
    let x = fixture(&format!("{name}_score_x.npy"));
    let t = fixture(&format!("{name}_score_t.npy"));
    let reference = fixture(&format!("{name}_score_target.npy"));
    let halfdiff = fixture(&format!("{name}_score_target_halfdiff.npy"));
    // the reference's construction: two independent runs of K = 2^17, averaged; |run1 − run2|/2 is a
    // draw of the noise scale of the average
    let dem = DemTarget::new(
        NoiseSchedule::geometric(sigma_min, sigma_max).unwrap(),
        1 << 17,
        None,
    )
    .unwrap();
    let n = x.data.len();
    let (mut r1, mut r2) = (vec![0.0f32; n], vec![0.0f32; n]);
    let s1 = dem.estimate(&target, &x.data, &t.data, 3, &mut r1).unwrap();
    let s2 = dem.estimate(&target, &x.data, &t.data, 4, &mut r2).unwrap();
    assert_eq!(s1.all_invalid_points + s2.all_invalid_points, 0);
    let dim = target.dim();
    let sq = |v: &mut dyn Iterator<Item = f64>| v.map(|a| a * a).sum::<f64>();
    let (mut tot_diff, mut tot_noise) = (0.0, 0.0);
    for (p, tp) in t.data.iter().enumerate() {
        let r = p * dim..(p + 1) * dim;
        let ours: Vec<f64> = r
            .clone()
            .map(|j| 0.5 * (f64::from(r1[j]) + f64::from(r2[j])))
            .collect();
        let hd_ours = sq(&mut r.clone().map(|j| 0.5 * f64::from(r1[j] - r2[j])));
        let hd_ref = sq(&mut halfdiff.data[r.clone()].iter().map(|&v| f64::from(v)));
        let diff = sq(&mut ours
            .iter()
            .zip(&reference.data[r])
            .map(|(a, &b)| a - f64::from(b)));
        // E‖ours − ref‖² = Var(ours) + Var(ref); each halfdiff² is one draw of the variance of its average
        let noise = hd_ours + hd_ref;
        eprintln!(
            "{name} t={tp:.2}: ‖ours − ref‖ {:.3e}, noise scale √(‖hd_ours‖² + ‖hd_ref‖²) {:.3e}, ratio {:.2}",
            diff.sqrt(),
            noise.sqrt(),
            (diff / noise).sqrt()
        );
        assert!(
            diff <= 16.0 * noise,
            "{name} t={tp}: discrepancy beyond 4× the combined noise scale"
        );
        tot_diff += diff;
        tot_noise += noise;
    }
    eprintln!("{name}: overall ratio {:.2}", (tot_diff / tot_noise).sqrt());
    assert!(
        tot_diff <= 4.0 * tot_noise,
        "{name}: overall discrepancy beyond 2× the noise scale"
    );
}

#[test]
fn dw4_matches_reference_estimator() {
    reference_check("dw4", 1e-5, 3.0);
}

#[test]
fn lj13_matches_reference_estimator() {
    reference_check("lj13", 0.01, 2.0);
}

#[test]
fn bias_shrinks_like_one_over_k() {
    let gmm = Gmm::gmm40();
    let target = Target::new(gmm.clone());
    let schedule = NoiseSchedule::geometric(5e-4, 50.0).unwrap();
    // a point between modes at a time where the noise is comparable to the mode spacing
    let (xp, tp) = ([-8.0f32, 2.0f32], 0.75f32);
    let mut exact = [0.0f64; 2];
    gmm.convolved(schedule.h(f64::from(tp)))
        .log_prob_grad(&[f64::from(xp[0]), f64::from(xp[1])], &mut exact);
    let reps = 200_000;
    let x: Vec<f32> = (0..reps).flat_map(|_| xp).collect();
    let t = vec![tp; reps];
    let mut out = vec![0.0f32; x.len()];
    let mut rows = Vec::new();
    for (i, k) in [4usize, 8, 16, 32, 64].into_iter().enumerate() {
        let dem = DemTarget::new(schedule, k, None).unwrap();
        dem.estimate(&target, &x, &t, 100 + i as u64, &mut out)
            .unwrap();
        let mut mean = [0.0f64; 2];
        let mut sq = [0.0f64; 2];
        for p in out.chunks(2) {
            for d in 0..2 {
                mean[d] += f64::from(p[d]);
                sq[d] += f64::from(p[d]).powi(2);
            }
        }
        let m = [mean[0] / reps as f64, mean[1] / reps as f64];
        let se = ((sq[0] / reps as f64 - m[0].powi(2) + sq[1] / reps as f64 - m[1].powi(2))
            / reps as f64)
            .sqrt();
        let bias = (m[0] - exact[0]).hypot(m[1] - exact[1]);
        eprintln!("K = {k:3}: |bias| = {bias:.4e} (MC standard error of the mean {se:.1e}), K·|bias| = {:.4}", k as f64 * bias);
        rows.push((k as f64, bias, se));
    }
    // every bias is resolved (≥ 3 SE) and the log-log slope is close to −1
    for &(k, b, se) in &rows {
        assert!(b > 3.0 * se, "bias at K={k} not resolved: {b} vs SE {se}");
    }
    let n = rows.len() as f64;
    let (sx, sy) = rows
        .iter()
        .fold((0.0, 0.0), |(a, b), r| (a + r.0.ln(), b + r.1.ln()));
    let (mx, my) = (sx / n, sy / n);
    let slope = rows
        .iter()
        .map(|r| (r.0.ln() - mx) * (r.1.ln() - my))
        .sum::<f64>()
        / rows.iter().map(|r| (r.0.ln() - mx).powi(2)).sum::<f64>();
    eprintln!("log-log slope of |bias| against K: {slope:.3}");
    assert!((-1.3..=-0.7).contains(&slope), "slope {slope}");
}
