//! log p and ∇log p of the built-in targets against the published reference implementation's numbers
//! (tests/fixtures/reference/*, computed with github.com/jarridrb/DEM on 512 random and
//! Langevin-relaxed configurations per target).
//!
//! Acceptance: |log p − ref| ≤ 1e-4·max(1, |ref|); every gradient component within
//! 1e-3·max(1, |ref|) (relative, with an absolute floor of 1e-3 for near-zero components).
//!
//! The reference computes in float32 with distances from `cdist`-style expansions; for Lennard-Jones
//! configurations whose pair terms are large and cancel, its own rounding error exceeds 1e-4 relative
//! (up to 3.4e-5 of S = Σ|pair terms|, measured). A configuration outside the 1e-4 band is accepted only
//! if (a) our value agrees with an independent float64 evaluation written here up to the final rounding
//! to float32, and
//! (b) the reference's deviation from that exact value is within its float32 rounding bound 1e-4·S;
//! such configurations are counted and must stay rare (< 5 %).

mod common;
use common::fixture;
use idem::Target;

#[allow(clippy::needless_range_loop)] // i indexes several arrays and names the configuration
fn check(name: &str) {
    let target = Target::by_name(name).unwrap();
    let x = fixture(&format!("{name}_x.npy"));
    let lp_ref = fixture(&format!("{name}_logp.npy"));
    let g_ref = fixture(&format!("{name}_grad_logp.npy"));
    let n = lp_ref.data.len();
    assert_eq!(x.shape, vec![n, target.dim()]);
    let mut lp = vec![0.0f32; n];
    let mut g = vec![0.0f32; x.data.len()];
    let rep = target
        .log_prob_grad_batch(&x.data, &mut lp, &mut g)
        .unwrap();
    assert_eq!(
        rep.invalid, 0,
        "{name}: no fixture configuration is invalid"
    );
    let (mut worst_lp, mut worst_g) = (0.0f64, 0.0f64);
    let mut rounding_limited = 0;
    for i in 0..n {
        let (a, b) = (f64::from(lp[i]), f64::from(lp_ref.data[i]));
        let err = (a - b).abs() / b.abs().max(1.0);
        worst_lp = worst_lp.max(err);
        if err > 1e-4 {
            let conf = &x.data[i * target.dim()..(i + 1) * target.dim()];
            let (exact, s) = independent_lj_f64(conf)
                .unwrap_or_else(|| panic!("{name} config {i}: log p {a} vs reference {b}"));
            // ours is exact up to the final rounding to f32 (half an ulp ≈ 6e-8 relative)
            assert!(
                (a - exact).abs() <= 1.2e-7 * exact.abs().max(1.0),
                "{name} config {i}: {a} vs exact {exact}"
            );
            assert!(
                (b - exact).abs() <= 1e-4 * s,
                "{name} config {i}: reference {b} off exact {exact} beyond f32 rounding (S = {s})"
            );
            rounding_limited += 1;
        }
    }
    assert!(
        rounding_limited * 20 < n,
        "{name}: {rounding_limited} of {n} configurations outside 1e-4"
    );
    let mut grad_rounding_limited = 0;
    for (j, (a, b)) in g.iter().zip(&g_ref.data).enumerate() {
        let (a, b) = (f64::from(*a), f64::from(*b));
        let err = (a - b).abs() / b.abs().max(1.0);
        worst_g = worst_g.max(err);
        if err > 1e-3 {
            let (i, k) = (j / target.dim(), j % target.dim());
            let conf = &x.data[i * target.dim()..(i + 1) * target.dim()];
            let (exact, scale) = independent_lj_grad_f64(conf).unwrap_or_else(|| {
                panic!("{name} config {i} coord {k}: grad {a} vs reference {b}")
            });
            assert!(
                (a - exact[k]).abs() <= 1e-6 * scale[k],
                "{name} config {i} coord {k}: {a} vs exact {}",
                exact[k]
            );
            assert!(
                (b - exact[k]).abs() <= 1e-4 * scale[k],
                "{name} config {i} coord {k}: reference {b} off exact {}",
                exact[k]
            );
            grad_rounding_limited += 1;
        }
    }
    assert!(
        grad_rounding_limited * 100 < g.len(),
        "{name}: {grad_rounding_limited} gradient entries outside 1e-3"
    );
    // the scalar path agrees with the gradient path
    let mut lp2 = vec![0.0f32; n];
    target.log_prob_batch(&x.data, &mut lp2).unwrap();
    for (a, b) in lp.iter().zip(&lp2) {
        assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0));
    }
    eprintln!(
        "{name}: worst relative error log p {worst_lp:.2e} ({rounding_limited} of {n} limited by the reference's f32 rounding), gradient {worst_g:.2e} ({grad_rounding_limited} of {} entries limited)", g.len()
    );
}

/// ∇log p of a 3-D Lennard-Jones cluster in the reference's convention, computed independently in
/// float64, with the per-component scale Σ|terms| bounding float32 rounding. `None` for other targets.
fn independent_lj_grad_f64(conf: &[f32]) -> Option<(Vec<f64>, Vec<f64>)> {
    if !conf.len().is_multiple_of(3) || conf.len() < 9 {
        return None;
    }
    let p: Vec<[f64; 3]> = conf
        .chunks(3)
        .map(|c| [c[0].into(), c[1].into(), c[2].into()])
        .collect();
    let n = p.len();
    let mean: Vec<f64> = (0..3)
        .map(|k| p.iter().map(|q| q[k]).sum::<f64>() / n as f64)
        .collect();
    let (mut g, mut scale) = (vec![0.0; 3 * n], vec![0.0; 3 * n]);
    for i in 0..n {
        for k in 0..3 {
            let osc = p[i][k] - mean[k];
            g[3 * i + k] -= osc;
            scale[3 * i + k] += osc.abs();
        }
        for j in 0..n {
            if i != j {
                let r = (0..3)
                    .map(|k| (p[i][k] - p[j][k]).powi(2))
                    .sum::<f64>()
                    .sqrt();
                // E has φ(r) = r⁻¹² − 2r⁻⁶ for both (i, j) and (j, i): dE/dx_i = 2φ'(r)(x_i − x_j)/r
                let dphi = -12.0 * r.powi(-13) + 12.0 * r.powi(-7);
                for k in 0..3 {
                    let t = 2.0 * dphi * (p[i][k] - p[j][k]) / r;
                    g[3 * i + k] -= t;
                    scale[3 * i + k] += t.abs();
                }
            }
        }
    }
    Some((g, scale))
}

/// log p of a 3-D Lennard-Jones cluster in the reference's convention, computed independently in
/// float64 (direct ordered-pair double loop), and S = Σ|pair terms| + oscillator. `None` for other
/// targets.
fn independent_lj_f64(conf: &[f32]) -> Option<(f64, f64)> {
    if !conf.len().is_multiple_of(3) || conf.len() < 9 || conf.len() == 8 {
        return None;
    }
    let p: Vec<[f64; 3]> = conf
        .chunks(3)
        .map(|c| [c[0].into(), c[1].into(), c[2].into()])
        .collect();
    let (mut e, mut s) = (0.0, 0.0);
    for i in 0..p.len() {
        for j in 0..p.len() {
            if i != j {
                let r2: f64 = (0..3).map(|k| (p[i][k] - p[j][k]).powi(2)).sum();
                let inv6 = r2.powi(-3);
                e += inv6 * inv6 - 2.0 * inv6;
                s += inv6 * inv6 + 2.0 * inv6;
            }
        }
    }
    let n = p.len() as f64;
    let mean: Vec<f64> = (0..3)
        .map(|k| p.iter().map(|q| q[k]).sum::<f64>() / n)
        .collect();
    let osc: f64 = p
        .iter()
        .map(|q| (0..3).map(|k| (q[k] - mean[k]).powi(2)).sum::<f64>())
        .sum::<f64>()
        * 0.5;
    Some((-(e + osc), s + osc))
}

#[test]
fn gmm40_matches_reference() {
    check("gmm40");
}

#[test]
fn dw4_matches_reference() {
    check("dw4");
}

#[test]
fn lj13_matches_reference() {
    check("lj13");
}

#[test]
fn lj55_matches_reference() {
    check("lj55");
}

#[test]
fn embedded_gmm40_table_is_the_reference_instance() {
    let g = idem::energy::Gmm::gmm40();
    let means = fixture("gmm40_means.npy");
    assert_eq!(means.shape, vec![40, 2]);
    for (a, b) in g.means().iter().zip(&means.data) {
        assert_eq!(*a, f64::from(*b));
    }
}
