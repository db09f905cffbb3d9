//! Refinement of final samples: a few Metropolis-adjusted Langevin (MALA) steps from each of the
//! sampler's samples, an option beside the sampler (`refine_steps`, off by default).
//!
//! Every transition of a Metropolis-adjusted kernel leaves p invariant, so the law q of the
//! sampler's samples moves towards p: KL(qKⁿ ‖ p) ≤ KL(q ‖ p). A few steps remove what is local
//! and cheap — samples that sit a little too hot (softened walls, transition configurations half
//! way between wells, LJ pairs slightly too close) — and leave what is global: how the sampler
//! weights separated modes needs many more steps than a refinement takes. The refined figures are
//! therefore reported *beside* the sampler's own (`summary.json`: `validation` and
//! `validation_refined`), never instead of them, with the refinement's energy calls counted.
//!
//! Kernel: MALA with its drift truncated at [`DRIFT_CAP`] times the noise's norm (MALTA; exact —
//! plain MALA until 2026-12-05): a sample with overlapping particles (finite but astronomically low
//! log p) is walked apart instead of being stuck at the bulk's step size.
//!
//! Schedule: one chain per sample ([`crate::mcmc::run`] with `Init::Rows`), the first half of the
//! steps adapts the step size shared by all chains (dual averaging to acceptance 0.574, no state
//! kept), the second half runs at the adapted step, and the chains' last states are the refined
//! samples (same order as the input). No relaxation steps (they are not p-invariant). Samples whose
//! log p is invalid (NaN, ±∞: e.g. overlapping particles) cannot start a Metropolis chain: they are
//! passed through unchanged and counted (`invalid_kept`). Energy calls: one evaluation of every
//! sample to sort out invalid ones, then the chains' initial evaluation and one per step.

use serde::Serialize;

use crate::energy::Target;
use crate::error::{Error, Result};
use crate::mcmc::{self, replicas, Init, Kernel, McmcConfig};

/// Step size the adaptation starts from (target coordinates); dual averaging explores ×10 around
/// it within its first steps, so it only needs the right order of magnitude.
const INIT_STEP: f64 = 1e-3;
/// The MALA drift is truncated at this multiple of the noise's norm (MALTA, [`mcmc::mala`]):
/// exact like plain MALA, and it walks samples with overlapping particles apart instead of
/// rejecting every move at the step size the bulk adapts to.
pub const DRIFT_CAP: f64 = 1.0;

/// What a refinement did.
#[derive(Clone, Debug, Serialize)]
pub struct Refinement {
    pub steps: usize,
    /// Target evaluations (log p and ∇log p), all of them counted.
    pub energy_calls: u64,
    /// The adapted MALA step size.
    pub step_size: f64,
    /// Mean acceptance over the steps at the adapted step size.
    pub accept: f64,
    /// Samples with invalid log p, returned unchanged.
    pub invalid_kept: usize,
    pub wall_s: f64,
}

/// Refine `samples` (`[n, dim]` rows, target coordinates) with `steps` MALA steps each.
/// `steps` must be at least 2 (one to adapt, one at the adapted step size).
pub fn refine(
    target: &Target,
    samples: &[f32],
    steps: usize,
    seed: u64,
) -> Result<(Vec<f32>, Refinement)> {
    refine_with(target, samples, steps, seed, Some(DRIFT_CAP))
}

/// As [`refine`] with the drift cap given (`None`: plain MALA).
fn refine_with(
    target: &Target,
    samples: &[f32],
    steps: usize,
    seed: u64,
    drift_cap: Option<f64>,
) -> Result<(Vec<f32>, Refinement)> {
    let dim = target.dim();
    if samples.is_empty() || !samples.len().is_multiple_of(dim) {
        return Err(Error::Shape(format!(
            "refinement needs rows of {dim} values, got {}",
            samples.len()
        )));
    }
    if steps < 2 {
        return Err(Error::Config(format!(
            "refine_steps must be 0 (off) or at least 2 (half adapt the step size), got {steps}"
        )));
    }
    let start = std::time::Instant::now();
    let n = samples.len() / dim;
    let x: Vec<f64> = samples.iter().map(|&v| f64::from(v)).collect();
    let (mut lp, mut grad) = (vec![0.0; n], vec![0.0; n * dim]);
    let calls0 = target.calls();
    replicas::evaluate(target, &x, &mut lp, &mut grad)?;
    let valid: Vec<usize> = (0..n).filter(|&i| lp[i].is_finite()).collect();
    let mut out = samples.to_vec();
    let mut report = Refinement {
        steps,
        energy_calls: 0,
        step_size: f64::NAN,
        accept: f64::NAN,
        invalid_kept: n - valid.len(),
        wall_s: 0.0,
    };
    if !valid.is_empty() {
        let rows: Vec<f64> = valid
            .iter()
            .flat_map(|&i| x[i * dim..(i + 1) * dim].iter().copied())
            .collect();
        let sampling = steps - steps / 2;
        let cfg = McmcConfig {
            kernel: Kernel::Mala,
            chains: valid.len(),
            warmup: steps / 2,
            steps: sampling,
            thin: sampling,
            init: Init::Rows(rows),
            init_step: INIT_STEP,
            relax_steps: 0,
            drift_cap,
            seed,
            trace_chains: 0,
            ..McmcConfig::default()
        };
        let run = mcmc::run(target, &cfg, |_, _, _| {})?;
        debug_assert_eq!(run.draws_per_chain, 1);
        for (c, &i) in valid.iter().enumerate() {
            for (o, &v) in out[i * dim..(i + 1) * dim]
                .iter_mut()
                .zip(&run.samples[c * dim..(c + 1) * dim])
            {
                *o = v as f32;
            }
        }
        report.step_size = run.step_sizes[0];
        report.accept = run.accept[0];
    }
    report.energy_calls = target.calls() - calls0;
    report.wall_s = start.elapsed().as_secs_f64();
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::Target;
    use crate::eval;

    /// DW-4 configurations heated by noise: refinement brings their mean log p back towards the
    /// validation-like reference and counts every call.
    #[test]
    fn refinement_cools_hot_samples_and_counts_its_calls() {
        let t = Target::by_name("dw4").unwrap();
        // equilibrium-ish samples: a long MALA run from the prior
        let cfg = McmcConfig {
            chains: 200,
            warmup: 400,
            steps: 1,
            init: Init::Prior { std: 2.0 },
            relax_steps: 20,
            seed: 3,
            trace_chains: 0,
            ..McmcConfig::default()
        };
        let reference: Vec<f32> = mcmc::run(&t, &cfg, |_, _, _| {})
            .unwrap()
            .samples
            .iter()
            .map(|&v| v as f32)
            .collect();
        // hot copies: reference + N(0, 0.3²), kept mean-free
        let mut rng = crate::rng::stream(5, 0);
        let mut hot = reference.clone();
        for row in hot.chunks_mut(8) {
            for v in row.iter_mut() {
                *v += 0.3 * rand::RngExt::sample::<f32, _>(&mut rng, rand_distr::StandardNormal);
            }
            let (mx, my) = (
                row.iter().step_by(2).sum::<f32>() / 4.0,
                row.iter().skip(1).step_by(2).sum::<f32>() / 4.0,
            );
            for p in row.chunks_mut(2) {
                p[0] -= mx;
                p[1] -= my;
            }
        }
        let mean_logp = |x: &[f32]| -> f64 {
            let m = eval::evaluate_with(&t, x, &reference, false).unwrap();
            m["mean_logp"]
        };
        let (cool, rep) = refine(&t, &hot, 40, 11).unwrap();
        let (ref_lp, hot_lp, cool_lp) = (mean_logp(&reference), mean_logp(&hot), mean_logp(&cool));
        assert!(
            hot_lp < ref_lp - 1.0,
            "noise should heat: {hot_lp} vs {ref_lp}"
        );
        assert!(
            (cool_lp - ref_lp).abs() < 0.5 * (hot_lp - ref_lp).abs(),
            "refined {cool_lp}, hot {hot_lp}, reference {ref_lp}"
        );
        // one evaluation to sort out invalid rows, the chains' initial one, one per step
        assert_eq!(rep.energy_calls, 200 * (1 + 1 + 40));
        assert_eq!(rep.invalid_kept, 0);
        assert!(rep.accept > 0.3 && rep.accept < 0.85, "{rep:?}");
        // deterministic for a seed
        let (again, _) = refine(&t, &hot, 40, 11).unwrap();
        assert_eq!(cool, again);
    }

    #[test]
    fn invalid_samples_pass_through_and_bad_settings_are_refused() {
        let t = Target::by_name("lj13").unwrap();
        // two identical configurations, one with particles 0 and 1 on top of each other
        let mut x: Vec<f32> = (0..39)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.35)
            .collect();
        let mut bad = x.clone();
        bad.copy_within(0..3, 3);
        x.extend_from_slice(&bad);
        let (out, rep) = refine(&t, &x, 4, 0).unwrap();
        assert_eq!(rep.invalid_kept, 1);
        assert_eq!(
            &out[39..],
            &bad[..],
            "an invalid sample is returned unchanged"
        );
        assert!(refine(&t, &x, 1, 0).is_err());
        assert!(refine(&t, &x[..38], 4, 0).is_err());
    }

    /// A sample with two particles 0.35 apart (log p ≈ −10⁶, finite) among equilibrium-like
    /// LJ-13 samples: the truncated drift walks it apart within the refinement; plain MALA at the
    /// bulk's step size rejects every move and leaves it where it was.
    #[test]
    fn truncated_drift_walks_overlapping_particles_apart() {
        let t = Target::by_name("lj13").unwrap();
        let cfg = McmcConfig {
            chains: 32,
            warmup: 200,
            steps: 1,
            init: Init::Prior { std: 1.0 },
            relax_steps: 200,
            seed: 2,
            trace_chains: 0,
            ..McmcConfig::default()
        };
        let mut x: Vec<f32> = mcmc::run(&t, &cfg, |_, _, _| {})
            .unwrap()
            .samples
            .iter()
            .map(|&v| v as f32)
            .collect();
        // particle 1 of sample 0 moved to 0.35 from particle 0 (then mean-free again)
        let (p0, p1) = ([x[0], x[1], x[2]], [x[3], x[4], x[5]]);
        let shift = [p0[0] + 0.35 - p1[0], p0[1] - p1[1], p0[2] - p1[2]];
        for k in 0..3 {
            x[3 + k] += shift[k];
            for i in 0..13 {
                x[i * 3 + k] -= shift[k] / 13.0;
            }
        }
        let lp = |rows: &[f32]| -> Vec<f64> {
            let xs: Vec<f64> = rows.iter().map(|&v| f64::from(v)).collect();
            let n = xs.len() / 39;
            let (mut lp, mut g) = (vec![0.0; n], vec![0.0; n * 39]);
            replicas::evaluate(&t, &xs, &mut lp, &mut g).unwrap();
            lp
        };
        let before = lp(&x);
        assert!(before[0] < -1e5, "{}", before[0]);
        let bulk_min = before[1..].iter().cloned().fold(f64::INFINITY, f64::min);
        assert!(bulk_min > 0.0, "bulk not equilibrated: {bulk_min}");
        let (out, rep) = refine(&t, &x, 40, 5).unwrap();
        assert_eq!(rep.invalid_kept, 0);
        let after = lp(&out);
        assert!(after[0] > 0.0, "still overlapping: log p {}", after[0]);
        let (plain, _) = refine_with(&t, &x, 40, 5, None).unwrap();
        let stuck = lp(&plain)[0];
        assert!(stuck < -1e3, "plain MALA moved it: {stuck}");
    }
}
