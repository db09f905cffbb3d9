//! Reference MCMC: ground-truth samples for any target, and the matched-budget baseline beside
//! iDEM. Many chains run at once (a batch of replicas evaluated through the targets'
//! multi-threaded block kernels), each optionally a ladder of tempered replicas.
//!
//! * Kernels: [`mala`] (one gradient evaluation per step) and [`hmc`] (L per step).
//! * Warm-up: `warmup` steps during which the step size of each temperature level is adapted by
//!   [`adapt::DualAveraging`] to a target mean acceptance (MALA 0.574, HMC 0.65 by default),
//!   shared by all chains at that level; then fixed for `steps` sampling steps.
//! * Parallel tempering ([`tempering`]): `temperatures` > 1 replicas per chain on a geometric
//!   ladder up to `t_max`, even–odd swaps after every step (warm-up included).
//! * Samples: the T = 1 replica of every chain after warm-up, every `thin`-th step, stored
//!   draw-major (row = draw·chains + chain), so the first rows are one draw from each chain.
//! * Budget: every target evaluation is counted (initialisation, warm-up, sampling); with
//!   `budget` the run stops before a step would exceed it (for matched-budget comparisons).
//! * Particle systems stay on the mean-free subspace (initial state, noise, momenta).
//! * Diagnostics ([`diagnostics`]): split R̂ and bulk ESS per coordinate and of the energy,
//!   over the T = 1 chains' kept draws.

pub mod adapt;
pub mod diagnostics;
pub mod hmc;
pub mod mala;
pub mod replicas;
pub mod tempering;

use std::time::Instant;

use rand::RngExt;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::energy::Target;
use crate::error::{Error, Result};
use crate::rng::stream;
use adapt::DualAveraging;
use replicas::{remove_mean_f64, Replicas};

/// Which transition kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Kernel {
    Mala,
    Hmc { leapfrog: usize },
}

impl Kernel {
    /// Target evaluations per replica per step.
    pub fn evals_per_step(&self) -> u64 {
        match self {
            Kernel::Mala => 1,
            Kernel::Hmc { leapfrog } => (*leapfrog).max(1) as u64,
        }
    }

    /// The default target mean acceptance of the step-size adaptation.
    pub fn default_accept(&self) -> f64 {
        match self {
            Kernel::Mala => 0.574,
            Kernel::Hmc { .. } => 0.65,
        }
    }
}

/// Where chains start.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// N(0, std²·I), mean-free for particle systems; draws with invalid log p are redrawn.
    Prior { std: f64 },
    /// Every replica at this point (a single-point start).
    Point(Vec<f64>),
    /// Rows of `[n, dim]` values, cycled over the chains (e.g. a previous run's samples).
    Rows(Vec<f64>),
}

/// Settings of a run.
#[derive(Clone, Debug)]
pub struct McmcConfig {
    pub kernel: Kernel,
    pub chains: usize,
    pub warmup: usize,
    pub steps: usize,
    pub thin: usize,
    /// Stop before a step would take the evaluation count past this.
    pub budget: Option<u64>,
    /// Target mean acceptance of the adaptation (the kernel's default if `None`).
    pub target_accept: Option<f64>,
    /// Replicas per chain (1 = no tempering).
    pub temperatures: usize,
    pub t_max: f64,
    pub init: Init,
    /// Initial step size (adapted during warm-up).
    pub init_step: f64,
    /// Relaxation steps before warm-up: capped gradient ascent on log p, which moves starts
    /// out of overlaps and other extreme-energy regions where a Metropolis kernel rejects
    /// every proposal (each step counts as one evaluation per replica). See [`relax`].
    pub relax_steps: usize,
    /// MALA only: truncate the drift at this multiple of the noise's norm (MALTA, still exact;
    /// [`mala`] docs); `None` for plain MALA.
    pub drift_cap: Option<f64>,
    pub seed: u64,
    /// T = 1 chains whose energy is recorded at every step for the trace plot.
    pub trace_chains: usize,
}

impl Default for McmcConfig {
    fn default() -> Self {
        Self {
            kernel: Kernel::Mala,
            chains: 100,
            warmup: 1000,
            steps: 1000,
            thin: 1,
            budget: None,
            target_accept: None,
            temperatures: 1,
            t_max: 10.0,
            init: Init::Prior { std: 1.0 },
            init_step: 1e-3,
            relax_steps: 0,
            drift_cap: None,
            seed: 0,
            trace_chains: 8,
        }
    }
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct McmcRun {
    /// `[draws·chains, dim]`, draw-major (row = draw·chains + chain), f64.
    pub samples: Vec<f64>,
    pub dim: usize,
    pub chains: usize,
    pub draws_per_chain: usize,
    pub temperatures: Vec<f64>,
    /// Adapted step size per temperature.
    pub step_sizes: Vec<f64>,
    /// Mean acceptance probability per temperature over the sampling steps (warm-up if none).
    pub accept: Vec<f64>,
    /// Swap acceptance rate per neighbouring temperature pair (sampling steps).
    pub swap_rates: Vec<f64>,
    pub warmup_done: usize,
    pub steps_done: usize,
    pub energy_calls: u64,
    pub stopped_by_budget: bool,
    /// Energy of the first `trace_chains` T = 1 chains at every step (warm-up included).
    pub trace: Vec<Vec<f64>>,
    pub wall_s: f64,
}

impl McmcRun {
    /// The kept draws of chain `c`, coordinate `k`.
    pub fn chain_coordinate(&self, c: usize, k: usize) -> Vec<f64> {
        (0..self.draws_per_chain)
            .map(|d| self.samples[(d * self.chains + c) * self.dim + k])
            .collect()
    }
}

/// Largest move of one coordinate per relaxation step.
const RELAX_MAX_MOVE: f64 = 0.05;
/// Gradient-ascent rate of relaxation where gradients are small.
const RELAX_RATE: f64 = 1e-2;

/// `steps` steps of x ← x + η·∇log p(x) on every replica with η = min(RELAX_RATE,
/// RELAX_MAX_MOVE / max_k |∂_k log p|): no coordinate moves more than RELAX_MAX_MOVE per step,
/// so a start with overlapping particles (gradient ~1e8) is pushed apart steadily instead of
/// jumping. Gradients are already mean-free for particle systems.
pub fn relax(target: &Target, reps: &mut Replicas, steps: usize) -> Result<()> {
    let dim = reps.dim;
    for _ in 0..steps {
        reps.x
            .par_chunks_mut(dim)
            .zip(reps.grad.par_chunks(dim))
            .for_each(|(x, g)| {
                let gmax = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let eta = RELAX_RATE.min(RELAX_MAX_MOVE / gmax.max(f64::MIN_POSITIVE));
                x.iter_mut().zip(g).for_each(|(a, b)| *a += eta * b);
            });
        replicas::evaluate(target, &reps.x, &mut reps.lp, &mut reps.grad)?;
        if let Some(i) = reps.lp.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite(format!(
                "replica {i} reached an invalid configuration during relaxation"
            )));
        }
    }
    Ok(())
}

fn initial_state(target: &Target, cfg: &McmcConfig, replicas: usize) -> Result<Vec<f64>> {
    let dim = target.dim();
    let particles = target.particles();
    let mut x = vec![0.0; replicas * dim];
    match &cfg.init {
        Init::Point(p) | Init::Rows(p) if p.is_empty() || p.len() % dim != 0 => {
            return Err(Error::Shape(format!(
                "the initial state has {} values, not rows of {dim}",
                p.len()
            )))
        }
        Init::Point(p) if p.len() != dim => {
            return Err(Error::Shape(format!(
                "an initial point needs {dim} values, got {}",
                p.len()
            )))
        }
        Init::Point(p) | Init::Rows(p) => {
            let rows = p.len() / dim;
            for (r, xr) in x.chunks_mut(dim).enumerate() {
                xr.copy_from_slice(&p[(r % rows) * dim..][..dim]);
            }
        }
        Init::Prior { std } => {
            let mut rng = stream(cfg.seed, 0x1A17);
            for xr in x.chunks_mut(dim) {
                for v in xr.iter_mut() {
                    *v = std * rng.sample::<f64, _>(StandardNormal);
                }
            }
        }
    }
    if let Some(p) = particles {
        x.chunks_mut(dim).for_each(|xr| remove_mean_f64(xr, p));
    }
    Ok(x)
}

/// Run the sampler. `progress(step, total)` is called after every step.
pub fn run(
    target: &Target,
    cfg: &McmcConfig,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<McmcRun> {
    if cfg.chains == 0 || cfg.thin == 0 || cfg.temperatures == 0 {
        return Err(Error::Config(
            "chains, thin and temperatures must be positive".into(),
        ));
    }
    if cfg.init_step.is_nan() || cfg.init_step <= 0.0 || cfg.t_max.is_nan() || cfg.t_max < 1.0 {
        return Err(Error::Config(
            "init_step must be positive and t_max ≥ 1".into(),
        ));
    }
    if cfg.drift_cap.is_some_and(|c| c.is_nan() || c <= 0.0) {
        return Err(Error::Config("drift_cap must be positive".into()));
    }
    let start = Instant::now();
    let dim = target.dim();
    let k = cfg.temperatures;
    let temps = tempering::geometric_ladder(k, cfg.t_max);
    let r = cfg.chains * k;
    let beta: Vec<f64> = (0..r).map(|i| 1.0 / temps[i % k]).collect();
    let calls0 = target.calls();
    let mut x0 = initial_state(target, cfg, r)?;
    // redraw prior starts whose log p is invalid (e.g. overlapping particles)
    let mut reps = Replicas::new(target, x0.clone(), beta.clone(), cfg.seed)?;
    if let Init::Prior { std } = cfg.init {
        let mut rng = stream(cfg.seed, 0x1A18);
        for _attempt in 0..100 {
            let bad: Vec<usize> = (0..r).filter(|&i| !reps.lp[i].is_finite()).collect();
            if bad.is_empty() {
                break;
            }
            for &i in &bad {
                for v in &mut x0[i * dim..(i + 1) * dim] {
                    *v = std * rng.sample::<f64, _>(StandardNormal);
                }
                if let Some(p) = target.particles() {
                    remove_mean_f64(&mut x0[i * dim..(i + 1) * dim], p);
                }
            }
            reps = Replicas::new(target, x0.clone(), beta.clone(), cfg.seed)?;
        }
    }
    if let Some(i) = (0..r).find(|&i| !reps.lp[i].is_finite()) {
        return Err(Error::NonFinite(format!(
            "replica {i} starts at a configuration with invalid log p (e.g. overlapping \
             particles); choose another initial state"
        )));
    }
    relax(target, &mut reps, cfg.relax_steps)?;
    let target_accept = cfg.target_accept.unwrap_or(cfg.kernel.default_accept());
    let mut adapters: Vec<DualAveraging> = (0..k)
        .map(|_| DualAveraging::new(cfg.init_step, target_accept))
        .collect();
    let mut eps_level: Vec<f64> = vec![cfg.init_step; k];
    let mut swap_rngs: Vec<_> = (0..cfg.chains as u64)
        .map(|c| stream(cfg.seed, 2 << 32 | c))
        .collect();
    let (mut attempts, mut accepts) = (
        vec![0u64; k.saturating_sub(1)],
        vec![0u64; k.saturating_sub(1)],
    );
    let mut acc_sum = vec![0.0f64; k];
    let mut acc_n = 0usize;
    let mut last_warmup_accept = vec![0.0f64; k];
    let n_trace = cfg.trace_chains.min(cfg.chains);
    let mut trace: Vec<Vec<f64>> = vec![Vec::new(); n_trace];
    let mut samples: Vec<f64> = Vec::new();
    let per_step = r as u64 * cfg.kernel.evals_per_step();
    let total = cfg.warmup + cfg.steps;
    let mut stopped = false;
    let mut warmup_done = 0;
    let mut steps_done = 0;
    for step in 0..total {
        let used = target.calls() - calls0;
        if cfg.budget.is_some_and(|b| used + per_step > b) {
            stopped = true;
            break;
        }
        let warm = step < cfg.warmup;
        let eps: Vec<f64> = (0..r).map(|i| eps_level[i % k]).collect();
        let probs = match cfg.kernel {
            Kernel::Mala => mala::step(target, &mut reps, &eps, cfg.drift_cap)?,
            Kernel::Hmc { leapfrog } => hmc::step(target, &mut reps, &eps, leapfrog)?,
        };
        let mut level_mean = vec![0.0; k];
        for (i, p) in probs.iter().enumerate() {
            level_mean[i % k] += p / cfg.chains as f64;
        }
        if warm {
            for (j, a) in adapters.iter_mut().enumerate() {
                a.update(level_mean[j]);
                eps_level[j] = a.current();
            }
            if step + 1 == cfg.warmup {
                for (j, a) in adapters.iter().enumerate() {
                    eps_level[j] = a.adapted();
                }
            }
            warmup_done += 1;
        } else {
            steps_done += 1;
            for (s, m) in acc_sum.iter_mut().zip(&level_mean) {
                *s += m;
            }
            acc_n += 1;
        }
        if k > 1 {
            let (mut at, mut ac) = (vec![0u64; k - 1], vec![0u64; k - 1]);
            tempering::swap_round(
                &mut reps,
                cfg.chains,
                k,
                step % 2,
                &mut swap_rngs,
                &mut at,
                &mut ac,
            );
            if !warm {
                for j in 0..k - 1 {
                    attempts[j] += at[j];
                    accepts[j] += ac[j];
                }
            }
        }
        for (c, tr) in trace.iter_mut().enumerate() {
            tr.push(-reps.lp[c * k]);
        }
        if !warm && (step - cfg.warmup + 1).is_multiple_of(cfg.thin) {
            for c in 0..cfg.chains {
                samples.extend_from_slice(&reps.x[c * k * dim..][..dim]);
            }
        }
        if warm {
            last_warmup_accept.copy_from_slice(&level_mean);
        }
        let shown = if acc_n > 0 {
            acc_sum[0] / acc_n as f64
        } else {
            level_mean[0]
        };
        progress(
            step + 1,
            total,
            &format!("accept {shown:.2} ε {:.2e}", eps_level[0]),
        );
    }
    let accept = if acc_n == 0 {
        // no sampling step: report the last warm-up step's acceptance
        last_warmup_accept
    } else {
        acc_sum.iter().map(|s| s / acc_n as f64).collect()
    };
    let draws = samples.len() / (cfg.chains * dim);
    Ok(McmcRun {
        samples,
        dim,
        chains: cfg.chains,
        draws_per_chain: draws,
        temperatures: temps,
        step_sizes: eps_level,
        accept,
        swap_rates: attempts
            .iter()
            .zip(&accepts)
            .map(|(&a, &c)| {
                if a == 0 {
                    f64::NAN
                } else {
                    c as f64 / a as f64
                }
            })
            .collect(),
        warmup_done,
        steps_done,
        energy_calls: target.calls() - calls0,
        stopped_by_budget: stopped,
        trace,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

/// Convergence summary of a run's T = 1 chains: split R̂ and bulk ESS of the energy, and the
/// worst (max R̂, min ESS) and median over coordinates.
#[derive(Clone, Debug, Serialize)]
pub struct Convergence {
    pub energy_rhat: f64,
    pub energy_ess: f64,
    pub max_rhat: f64,
    pub median_rhat: f64,
    pub min_ess: f64,
    pub median_ess: f64,
}

/// Diagnostics of `run` (needs ≥ 4 draws per chain; NaN otherwise).
pub fn convergence(target: &Target, run: &McmcRun) -> Result<Convergence> {
    let (c, dim) = (run.chains, run.dim);
    let mut rh = Vec::with_capacity(dim);
    let mut es = Vec::with_capacity(dim);
    for k in 0..dim {
        let chains: Vec<Vec<f64>> = (0..c).map(|j| run.chain_coordinate(j, k)).collect();
        rh.push(diagnostics::split_rhat(&chains));
        es.push(diagnostics::bulk_ess(&chains));
    }
    let mut lp = vec![0.0; run.samples.len() / dim.max(1)];
    let mut g = vec![0.0; run.samples.len()];
    let probe = target.clone(); // its own counter: diagnostics are not part of the run's budget
    probe.log_prob_grad_batch_f64(&run.samples, &mut lp, &mut g)?;
    let energy: Vec<Vec<f64>> = (0..c)
        .map(|j| (0..run.draws_per_chain).map(|d| -lp[d * c + j]).collect())
        .collect();
    let median = |v: &mut Vec<f64>| -> f64 {
        v.retain(|x| !x.is_nan());
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let max_rhat = rh.iter().copied().fold(f64::NAN, f64::max);
    let min_ess = es.iter().copied().fold(f64::NAN, f64::min);
    Ok(Convergence {
        energy_rhat: diagnostics::split_rhat(&energy),
        energy_ess: diagnostics::bulk_ess(&energy),
        max_rhat,
        median_rhat: median(&mut rh),
        min_ess,
        median_ess: median(&mut es),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::Gmm;

    fn gaussian(scales: &[f64]) -> Target {
        let means = vec![0.0; scales.len()];
        Target::new(Gmm::new("gauss", &[1.0], &means, scales).unwrap())
    }

    fn moments(run: &McmcRun, k: usize) -> (f64, f64) {
        let n = run.samples.len() / run.dim;
        let v: Vec<f64> = (0..n).map(|i| run.samples[i * run.dim + k]).collect();
        let m = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n as f64;
        (m, var)
    }

    /// MALA and HMC leave an anisotropic Gaussian invariant: mean 0 and the right variances
    /// (to 5%: 400 chains × 250 draws, autocorrelated), adapted acceptance near its target.
    #[test]
    fn kernels_sample_a_gaussian() {
        let target = gaussian(&[0.5, 2.0]);
        for kernel in [Kernel::Mala, Kernel::Hmc { leapfrog: 8 }] {
            let cfg = McmcConfig {
                kernel,
                chains: 400,
                warmup: 500,
                steps: 1000,
                thin: 4,
                seed: 3,
                ..McmcConfig::default()
            };
            let run = run(&target, &cfg, |_, _, _| {}).unwrap();
            assert_eq!(run.draws_per_chain, 250);
            for (k, want) in [(0, 0.25f64), (1, 4.0)] {
                let (m, v) = moments(&run, k);
                assert!(m.abs() < 0.05 * want.sqrt() * 3.0, "{kernel:?} mean {m}");
                assert!(
                    (v / want - 1.0).abs() < 0.05,
                    "{kernel:?} coordinate {k}: variance {v} vs {want}"
                );
            }
            let a = run.accept[0];
            assert!(
                (a - kernel.default_accept()).abs() < 0.1,
                "{kernel:?} acceptance {a}"
            );
            let evals = 400 * kernel.evals_per_step() * 1500 + 400;
            assert_eq!(run.energy_calls, evals);
            let c = convergence(&target, &run).unwrap();
            assert!(c.max_rhat < 1.05 && c.energy_rhat < 1.05, "{c:?}");
        }
    }

    /// MALA with a truncated drift (MALTA) is still exact: with a cap that binds (0.3 of the
    /// noise's norm; the chains differ from plain MALA's) it keeps the Gaussian's moments.
    #[test]
    fn truncated_drift_mala_samples_a_gaussian() {
        let target = gaussian(&[0.5, 2.0]);
        let cfg = McmcConfig {
            chains: 400,
            warmup: 500,
            steps: 1000,
            thin: 4,
            seed: 3,
            drift_cap: Some(0.3),
            ..McmcConfig::default()
        };
        let capped = run(&target, &cfg, |_, _, _| {}).unwrap();
        for (k, want) in [(0, 0.25f64), (1, 4.0)] {
            let (m, v) = moments(&capped, k);
            assert!(m.abs() < 0.05 * want.sqrt() * 3.0, "mean {m}");
            assert!(
                (v / want - 1.0).abs() < 0.05,
                "coordinate {k}: {v} vs {want}"
            );
        }
        let plain = run(
            &target,
            &McmcConfig {
                drift_cap: None,
                ..cfg.clone()
            },
            |_, _, _| {},
        )
        .unwrap();
        assert_ne!(plain.samples, capped.samples, "the cap never bound");
        let bad = McmcConfig {
            drift_cap: Some(0.0),
            ..cfg
        };
        assert!(run(&target, &bad, |_, _, _| {}).is_err());
    }

    /// The reported acceptance averages the sampling steps only: with a single sampling step it
    /// is that step's mean acceptance probability (the last warm-up step once leaked into it).
    #[test]
    fn acceptance_counts_sampling_steps_only() {
        let target = gaussian(&[1.0, 1.0]);
        for kernel in [Kernel::Mala, Kernel::Hmc { leapfrog: 4 }] {
            let cfg = McmcConfig {
                kernel,
                chains: 200,
                warmup: 50,
                steps: 1,
                seed: 4,
                ..McmcConfig::default()
            };
            let run = run(&target, &cfg, |_, _, _| {}).unwrap();
            let a = run.accept[0];
            assert!((0.0..=1.0).contains(&a), "{kernel:?} acceptance {a}");
        }
    }

    /// Two far-apart modes (weights 0.3 / 0.7): plain MALA from one point never leaves its
    /// mode; parallel tempering finds both with the right weights and reports its swap rate.
    #[test]
    fn tempering_crosses_between_modes_that_mala_cannot() {
        let target = Target::new(Gmm::new("two", &[0.3, 0.7], &[-6.0, 6.0], &[0.7, 0.7]).unwrap());
        let base = McmcConfig {
            chains: 64,
            warmup: 500,
            steps: 3000,
            thin: 5,
            init: Init::Point(vec![-6.0]),
            seed: 5,
            ..McmcConfig::default()
        };
        let frac_right = |run: &McmcRun| {
            run.samples.iter().filter(|&&x| x > 0.0).count() as f64 / run.samples.len() as f64
        };
        let plain = run(&target, &base, |_, _, _| {}).unwrap();
        assert_eq!(frac_right(&plain), 0.0);
        let pt = McmcConfig {
            temperatures: 6,
            t_max: 60.0,
            ..base
        };
        let tempered = run(&target, &pt, |_, _, _| {}).unwrap();
        let f = frac_right(&tempered);
        assert!(
            (f - 0.7).abs() < 0.05,
            "tempered weight of the right mode {f}"
        );
        assert_eq!(tempered.swap_rates.len(), 5);
        assert!(
            tempered.swap_rates.iter().all(|&s| s > 0.1),
            "{:?}",
            tempered.swap_rates
        );
        assert_eq!(tempered.temperatures.len(), 6);
        assert!((tempered.temperatures[5] - 60.0).abs() < 1e-9);
    }

    /// The budget stops the run before it is exceeded; particle chains stay mean-free; results
    /// do not depend on the thread count.
    #[test]
    fn budget_particles_and_reproducibility() {
        let target = Target::by_name("dw4").unwrap();
        let cfg = McmcConfig {
            chains: 10,
            warmup: 20,
            steps: 1000,
            init: Init::Prior { std: 2.0 },
            budget: Some(10 + 10 * 150 + 5),
            seed: 1,
            ..McmcConfig::default()
        };
        let r1 = run(&target, &cfg, |_, _, _| {}).unwrap();
        assert!(r1.stopped_by_budget);
        assert_eq!((r1.warmup_done, r1.steps_done), (20, 130));
        assert!(r1.energy_calls <= cfg.budget.unwrap());
        for row in r1.samples.chunks(8) {
            let (sx, sy) = (
                row[0] + row[2] + row[4] + row[6],
                row[1] + row[3] + row[5] + row[7],
            );
            assert!(sx.abs() < 1e-9 && sy.abs() < 1e-9);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let r2 = pool.install(|| run(&target, &cfg, |_, _, _| {}).unwrap());
        assert_eq!(r1.samples, r2.samples);
        // a single invalid starting point is refused with a clear error
        let overlap = McmcConfig {
            init: Init::Point(vec![0.0; 8]),
            ..cfg.clone()
        };
        let lj = Target::by_name("lj13").unwrap();
        assert!(run(
            &lj,
            &McmcConfig {
                init: Init::Point(vec![0.0; 39]),
                ..cfg
            },
            |_, _, _| {}
        )
        .is_err());
        // DW-4 at the origin is finite (no singularity): allowed
        assert!(run(&target, &overlap, |_, _, _| {}).is_ok());
    }

    /// Relaxation pushes overlapping LJ-13 starts (energies up to ~1e8) down to bound-state
    /// energies, moving no coordinate more than RELAX_MAX_MOVE per step.
    #[test]
    fn relaxation_removes_overlaps() {
        let target = Target::by_name("lj13").unwrap();
        let cfg = McmcConfig {
            init: Init::Prior { std: 1.0 },
            chains: 64,
            ..McmcConfig::default()
        };
        let x0 = initial_state(&target, &cfg, 64).unwrap();
        let mut reps = Replicas::new(&target, x0.clone(), vec![1.0; 64], 1).unwrap();
        let worst0 = reps.lp.iter().cloned().fold(f64::INFINITY, f64::min);
        assert!(
            worst0 < -1e3,
            "the test needs a start with overlaps: {worst0}"
        );
        relax(&target, &mut reps, 1).unwrap();
        let moved = reps
            .x
            .iter()
            .zip(&x0)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(moved <= RELAX_MAX_MOVE + 1e-12, "{moved}");
        relax(&target, &mut reps, 300).unwrap();
        let worst = reps.lp.iter().cloned().fold(f64::INFINITY, f64::min);
        assert!(worst > 0.0, "an LJ-13 replica still has energy {}", -worst);
    }
}
