//! Controlled SDEs trained by simulation: the generative chain shared by the PIS and DDS
//! baselines (`method::pis`, `method::dds`), its path-space KL objective with gradients through
//! the trajectory, and sampling from it.
//!
//! Both methods discretise a *reference* Markov chain with Gaussian steps
//! r(x_{k+1} | x_k) = N(a_k·x_k, v_k·I) whose terminal marginal N(0, τ·I) is known, and add a
//! learned control u_θ(x_k, t_k) to its mean:
//!
//! x_{k+1} = a_k·x_k + c_k·u_k + √v_k·ε_k.
//!
//! The target path measure runs the reference's time reversal from p: Q(path) ∝ p̃(x_K) ·
//! R(path) / N(x_K; 0, τI) (R is reversible with respect to its marginals). The log Radon–Nikodym
//! derivative of the controlled chain P_θ against Q along a path it drew is
//!
//! log dP_θ/dQ = Σ_k [c_k²|u_k|²/(2v_k) + (c_k/√v_k)·u_k·ε_k] + log N(x_K; 0, τI) − log p̃(x_K),
//!
//! so KL(P_θ‖Q) − log Z = E[Σ_k c_k²|u_k|²/(2v_k) + log N(x_K; 0, τI) − log p̃(x_K)] (the
//! u·ε term has mean zero). That expectation is the loss; at the optimal control it equals
//! −log Z, and exp(−log dP_θ/dQ) are importance weights whose mean is Z (`log_z`, ESS).
//!
//! - **PIS** (Zhang & Chen 2022): x_0 = 0, a = 1, c = σ·dt, v = σ²·dt, dt = T/K, τ = σ²T — the
//!   Euler–Maruyama chain of dX = σ·u dt + σ dW; the running cost is ½|u|²dt.
//! - **DDS** (Vargas et al. 2023): x_0 ~ N(0, σ²I), the Ornstein–Uhlenbeck reference towards
//!   N(0, σ²I) run backwards in noise level with the cosine schedule; exponential integrator
//!   a = √(1−α_k), c = 2σ²(1 − √(1−α_k)), v = σ²α_k, or Euler a = 1 − α_k/2, c = v = σ²α_k; τ = σ².
//!   (The Euler reference keeps N(0, σ²/(1 − α/4)) invariant, not N(0, σ²): its objective is the
//!   paper's first-order one, with an O(α) bias.)
//!
//! **Control.** u = f_θ(x, t) (the score network of the run, MLP or EGNN) plus, with
//! `target_informed`, g_θ(t)·∇log p(x) (PIS's "NN1 + NN2(t)·∇log μ", [`crate::net::time_cond`]),
//! ∇log p optionally clipped per particle and held constant in the backward pass (as the
//! reference does: no Hessian of the energy). Network coordinates: y = x / `data_scale`,
//! log p̃(s·y) and ∇_y = s·∇log p(s·y). Particle systems: noise, control and state are mean-free,
//! τ-Gaussian densities on the (n−1)·d-dimensional mean-free subspace.
//!
//! **Gradients** come from back-propagating the loss through every step (the reparameterised
//! path). Memory grows with the number of steps (the networks' activations of every step stay
//! alive until the backward pass); with `checkpoint_segments` = S > 1 a first pass without a graph
//! stores the S segment starts, and each segment is re-run with a graph and back-propagated from
//! the last to the first, carrying ∂loss/∂x across segment ends: memory of K/S steps, one extra
//! forward pass, no extra energy calls (the ∇log p of the first pass are reused).

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::dem_target::clip_groups_f64;
use crate::energy::particles::remove_mean;
use crate::energy::{ParticleShape, Target};
use crate::error::{Error, Result};
use crate::net::time_cond::TimeCond;
use crate::net::{Params, ScoreNet};
use crate::rng::NormalStream;

/// Integrator of the DDS chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Integrator {
    /// The exact Ornstein–Uhlenbeck step (DDS's exponential integrator).
    Exponential,
    /// Euler–Maruyama.
    Euler,
}

/// Settings of the PIS / DDS chain (`[path]` in a configuration; network coordinates).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathConfig {
    /// Steps K of the chain.
    pub steps: usize,
    /// Brownian coefficient σ (PIS's `pis_scale`; DDS's reference std).
    pub sigma: f64,
    /// PIS's time horizon T.
    pub time_range: f64,
    /// DDS's integrator.
    pub integrator: Integrator,
    /// Control u = f_θ(x, t) + g_θ(t)·∇log p(x) instead of f_θ(x, t).
    pub target_informed: bool,
    /// Per-particle (vectors: whole-vector) norm clip of ∇log p in the control; 0 = off.
    pub grad_clip: f64,
    /// Gradient checkpointing over the steps: > 1 re-runs the chain in this many segments.
    pub checkpoint_segments: usize,
    /// Largest α_k of the DDS cosine schedule (the first step's α is ≈ 1 otherwise).
    pub max_alpha: f64,
}

impl Default for PathConfig {
    fn default() -> Self {
        Self {
            steps: 100,
            sigma: 1.0,
            time_range: 1.0,
            integrator: Integrator::Exponential,
            target_informed: true,
            grad_clip: 0.0,
            checkpoint_segments: 0,
            max_alpha: 0.999,
        }
    }
}

impl PathConfig {
    /// Checks the values.
    pub fn validated(&self) -> Result<()> {
        if self.steps == 0 || !(self.sigma > 0.0 && self.sigma.is_finite()) {
            return Err(Error::Config(
                "path.steps must be positive and path.sigma positive and finite".into(),
            ));
        }
        if !(self.time_range > 0.0 && self.time_range.is_finite()) || self.grad_clip < 0.0 {
            return Err(Error::Config(
                "path.time_range must be positive, path.grad_clip ≥ 0".into(),
            ));
        }
        if !(self.max_alpha > 0.0 && self.max_alpha < 1.0) {
            return Err(Error::Config("path.max_alpha must be in (0, 1)".into()));
        }
        if self.checkpoint_segments > self.steps {
            return Err(Error::Config(format!(
                "path.checkpoint_segments ({}) cannot exceed path.steps ({})",
                self.checkpoint_segments, self.steps
            )));
        }
        Ok(())
    }
}

/// The reference chain: per step k, x_{k+1} = a_k·x_k + c_k·u_k + √v_k·ε_k with network time
/// input t_k; start N(0, start_var·I) (0: the origin); terminal marginal N(0, τI).
#[derive(Clone, Debug)]
pub struct Chain {
    pub a: Vec<f64>,
    pub c: Vec<f64>,
    pub v: Vec<f64>,
    pub t: Vec<f32>,
    pub start_var: f64,
    pub terminal_var: f64,
}

impl Chain {
    /// PIS: Brownian motion σW from the origin over [0, T] in K Euler–Maruyama steps.
    pub fn pis(cfg: &PathConfig) -> Self {
        let k = cfg.steps;
        let dt = cfg.time_range / k as f64;
        let s = cfg.sigma;
        Self {
            a: vec![1.0; k],
            c: vec![s * dt; k],
            v: vec![s * s * dt; k],
            t: (0..k).map(|i| (i as f64 * dt) as f32).collect(),
            start_var: 0.0,
            terminal_var: s * s * cfg.time_range,
        }
    }

    /// DDS: the Ornstein–Uhlenbeck reference N(0, σ²) with the cosine schedule
    /// ᾱ(s) = cos²(π/2·(s + 0.008)/1.008), steps from noise level s = 1 to 0 (network time s_k).
    pub fn dds(cfg: &PathConfig) -> Self {
        let k = cfg.steps;
        let abar = |s: f64| {
            let f = |s: f64| {
                ((s + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                    .cos()
                    .powi(2)
            };
            f(s) / f(0.0)
        };
        let s2 = cfg.sigma * cfg.sigma;
        let (mut a, mut c, mut v, mut t) = (vec![], vec![], vec![], vec![]);
        for i in 0..k {
            let s_from = 1.0 - i as f64 / k as f64;
            let s_to = 1.0 - (i + 1) as f64 / k as f64;
            let alpha = (1.0 - abar(s_from) / abar(s_to)).clamp(1e-8, cfg.max_alpha);
            match cfg.integrator {
                Integrator::Exponential => {
                    let r = (1.0 - alpha).sqrt();
                    a.push(r);
                    c.push(2.0 * s2 * (1.0 - r));
                }
                Integrator::Euler => {
                    a.push(1.0 - alpha / 2.0);
                    c.push(s2 * alpha);
                }
            }
            v.push(s2 * alpha);
            t.push(s_from as f32);
        }
        Self {
            a,
            c,
            v,
            t,
            start_var: s2,
            terminal_var: s2,
        }
    }

    /// Number of steps.
    pub fn steps(&self) -> usize {
        self.a.len()
    }
}

/// The control u_θ: the run's network and, when target-informed, the time conditioner.
pub struct Control<'a> {
    pub net: &'a dyn ScoreNet,
    pub tnet: Option<&'a TimeCond>,
    pub target: &'a Target,
    /// Network → target coordinates.
    pub scale: f64,
    pub grad_clip: f64,
    pub device: &'a Device,
}

/// What one simulation reports per path (all f64, detached).
#[derive(Clone, Debug, Default)]
pub struct PathStats {
    /// Σ_k c²|u|²/(2v) per path.
    pub running: Vec<f64>,
    /// Σ_k (c/√v)·u·ε per path (mean zero).
    pub stochastic: Vec<f64>,
    /// log N(x_K; 0, τI) per path.
    pub log_ref: Vec<f64>,
    /// log p̃(s·x_K) per path (network coordinates, without the s^D Jacobian).
    pub log_p: Vec<f64>,
}

impl PathStats {
    /// The loss value: mean of running + log_ref − log_p.
    pub fn loss(&self) -> f64 {
        let n = self.running.len() as f64;
        (0..self.running.len())
            .map(|i| self.running[i] + self.log_ref[i] - self.log_p[i])
            .sum::<f64>()
            / n
    }

    /// Log importance weights log(p̃/P_θ-path) = −log dP_θ/dQ per path.
    pub fn log_weights(&self) -> Vec<f64> {
        (0..self.running.len())
            .map(|i| -(self.running[i] + self.stochastic[i] + self.log_ref[i] - self.log_p[i]))
            .collect()
    }

    /// (log Z estimate in network coordinates, normalised ESS) from the log weights: add
    /// D·ln(data_scale) (D = the density's dimension) for target coordinates.
    pub fn log_z_ess(&self) -> (f64, f64) {
        let lw = self.log_weights();
        let m = lw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !m.is_finite() {
            return (m, 0.0);
        }
        let s1: f64 = lw.iter().map(|w| (w - m).exp()).sum();
        let s2: f64 = lw.iter().map(|w| (2.0 * (w - m)).exp()).sum();
        let n = lw.len() as f64;
        (m + (s1 / n).ln(), s1 * s1 / s2 / n)
    }
}

/// Dimension of the reference Gaussian: (n−1)·d for particle systems (mean-free), else dim.
pub fn density_dim(dim: usize, particles: Option<ParticleShape>) -> usize {
    match particles {
        Some(p) => (p.n_particles - 1) * p.spatial_dim,
        None => dim,
    }
}

/// log p̃ and ∇_y log p̃(s·y) (network coordinates, f64) of rows `x`; invalid rows: −inf, 0.
fn log_p_grad(target: &Target, x: &[f32], scale: f64) -> Result<(Vec<f64>, Vec<f64>)> {
    let xd: Vec<f64> = x.iter().map(|&v| f64::from(v) * scale).collect();
    let mut lp = vec![0.0; x.len() / target.dim()];
    let mut g = vec![0.0; x.len()];
    target.log_prob_grad_batch_f64(&xd, &mut lp, &mut g)?;
    g.iter_mut().for_each(|v| *v *= scale);
    Ok((lp, g))
}

#[allow(clippy::needless_range_loop)] // k indexes the chain's coefficients and the cache
/// One run of steps `k0..k1` from `x` (a tensor `[n, dim]`, tracked or not). The networks in
/// `ctl` decide whether a graph is built. `lgv` caches the clipped ∇log p terms per step (filled
/// when `None` at that step, reused otherwise, so a re-run makes no energy calls). Returns x at
/// k1, the running cost per path as a tensor `[n]` (graph when tracked) and adds the
/// stochastic term to `stoch`.
#[allow(clippy::too_many_arguments)]
fn run_steps(
    ctl: &Control,
    chain: &Chain,
    x0: Tensor,
    k0: usize,
    k1: usize,
    seed: u64,
    lgv: &mut [Option<Vec<f32>>],
    stoch: &mut [f64],
) -> Result<(Tensor, Tensor)> {
    let (n, dim) = x0.dims2()?;
    let dev = x0.device().clone();
    let particles = ctl.target.particles();
    let mut x = x0;
    let mut running = Tensor::zeros(n, candle_core::DType::F32, &dev)?;
    for k in k0..k1 {
        let tk = Tensor::full(chain.t[k], n, &dev)?;
        let mut u = ctl.net.forward(&x, &tk)?;
        if let Some(tn) = ctl.tnet {
            if lgv[k].is_none() {
                let xv = x.detach().flatten_all()?.to_vec1::<f32>()?;
                let (_, mut g) = log_p_grad(ctl.target, &xv, ctl.scale)?;
                if ctl.grad_clip > 0.0 {
                    let group = particles.map_or(dim, |p| p.spatial_dim);
                    clip_groups_f64(&mut g, group, ctl.grad_clip);
                }
                let mut g: Vec<f32> = g.iter().map(|&v| v as f32).collect();
                if let Some(p) = particles {
                    remove_mean(&mut g, p);
                }
                lgv[k] = Some(g);
            }
            let g = Tensor::from_slice(lgv[k].as_deref().unwrap(), (n, dim), &dev)?;
            u = (u + g.broadcast_mul(&tn.forward(chain.t[k], &dev)?)?)?;
        }
        let mut eps = vec![0.0f32; n * dim];
        NormalStream::new(seed, k as u64).fill(&mut eps);
        if let Some(p) = particles {
            remove_mean(&mut eps, p);
        }
        let (a, c, v) = (chain.a[k], chain.c[k], chain.v[k]);
        let uv = u.detach().flatten_all()?.to_vec1::<f32>()?;
        for (i, s) in stoch.iter_mut().enumerate() {
            let dot: f64 = (0..dim)
                .map(|j| f64::from(uv[i * dim + j]) * f64::from(eps[i * dim + j]))
                .sum();
            *s += c / v.sqrt() * dot;
        }
        running = (running + (u.sqr()?.sum(1)? * (c * c / (2.0 * v)))?)?;
        let e = Tensor::from_vec(eps, (n, dim), &dev)?;
        x = ((x * a)? + (u * c)? + (e * v.sqrt())?)?;
    }
    Ok((x, running))
}

/// Start states of `n` paths (network coordinates).
fn start(chain: &Chain, n: usize, dim: usize, p: Option<ParticleShape>, seed: u64) -> Vec<f32> {
    let mut x = vec![0.0f32; n * dim];
    if chain.start_var > 0.0 {
        NormalStream::new(seed, u64::MAX).fill(&mut x);
        let sd = chain.start_var.sqrt() as f32;
        x.iter_mut().for_each(|v| *v *= sd);
        if let Some(p) = p {
            remove_mean(&mut x, p);
        }
    }
    x
}

/// The terminal terms of paths ending at `x` (network coordinates): log N(x; 0, τI), log p̃ and
/// the gradient of (log N − log p̃) per row, divided by `n` (∂loss/∂x_K).
fn terminal(ctl: &Control, chain: &Chain, x: &[f32]) -> Result<(Vec<f64>, Vec<f64>, Vec<f32>)> {
    let dim = ctl.target.dim();
    let n = x.len() / dim;
    let dd = density_dim(dim, ctl.target.particles()) as f64;
    let tau = chain.terminal_var;
    let (lp, g) = log_p_grad(ctl.target, x, ctl.scale)?;
    let norm = -0.5 * dd * (2.0 * std::f64::consts::PI * tau).ln();
    let log_ref: Vec<f64> = x
        .chunks(dim)
        .map(|r| norm - r.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / (2.0 * tau))
        .collect();
    let dx: Vec<f32> = x
        .iter()
        .zip(&g)
        .map(|(&v, &gv)| ((-f64::from(v) / tau - gv) / n as f64) as f32)
        .collect();
    Ok((log_ref, lp, dx))
}

/// Simulates `n` paths with graphs and back-propagates the loss: returns the gradients of every
/// parameter in `params` and the paths' statistics. `ctl` must hold the tracked networks and
/// `infer` the detached ones (used for the first pass when checkpointing).
#[allow(clippy::too_many_arguments)]
pub fn loss_and_grads(
    ctl: &Control,
    infer: &Control,
    params: &Params,
    chain: &Chain,
    segments: usize,
    n: usize,
    seed: u64,
) -> Result<(GradStore, PathStats)> {
    let target = ctl.target;
    let dim = target.dim();
    let dev = params.device().clone();
    let k = chain.steps();
    let x0 = start(chain, n, dim, target.particles(), seed);
    let mut lgv: Vec<Option<Vec<f32>>> = vec![None; k];
    let mut stoch = vec![0.0f64; n];
    let seg = segments.max(1);
    let bounds: Vec<usize> = (0..=seg).map(|s| s * k / seg).collect();
    // first pass: segment starts (without a graph) when checkpointing
    let mut starts = vec![x0.clone()];
    let mut running_all = vec![0.0f64; n];
    if seg > 1 {
        let mut x = Tensor::from_vec(x0, (n, dim), &dev)?;
        for s in 0..seg {
            let (xe, r) = run_steps(
                infer,
                chain,
                x,
                bounds[s],
                bounds[s + 1],
                seed,
                &mut lgv,
                &mut stoch,
            )?;
            for (a, b) in running_all.iter_mut().zip(r.to_vec1::<f32>()?) {
                *a += f64::from(b);
            }
            let xv = xe.flatten_all()?.to_vec1::<f32>()?;
            x = xe;
            starts.push(xv);
        }
    }
    // segments with graphs, last first, carrying ∂loss/∂x across their ends
    let mut grads: Option<GradStore> = None;
    let mut upstream: Option<Vec<f32>> = None;
    let mut stats = PathStats::default();
    for s in (0..seg).rev() {
        let xs = Var::from_tensor(&Tensor::from_slice(&starts[s], (n, dim), &dev)?)?;
        let mut st_scratch = vec![0.0f64; n];
        let st = if seg > 1 { &mut st_scratch } else { &mut stoch };
        let (xe, running) = run_steps(
            ctl,
            chain,
            xs.as_tensor().clone(),
            bounds[s],
            bounds[s + 1],
            seed,
            &mut lgv,
            st,
        )?;
        let up = match upstream.take() {
            Some(u) => u,
            None => {
                let xv = xe.detach().flatten_all()?.to_vec1::<f32>()?;
                if seg == 1 {
                    for (a, b) in running_all
                        .iter_mut()
                        .zip(running.detach().to_vec1::<f32>()?)
                    {
                        *a += f64::from(b);
                    }
                }
                let (log_ref, lp, dx) = terminal(ctl, chain, &xv)?;
                if let Some(i) = lp.iter().position(|v| !v.is_finite()) {
                    return Err(Error::Diverged(format!(
                        "path {i} ended at an invalid configuration (log p = {})",
                        lp[i]
                    )));
                }
                stats.log_ref = log_ref;
                stats.log_p = lp;
                dx
            }
        };
        let up_t = Tensor::from_vec(up, (n, dim), &dev)?;
        let surrogate = ((running.sum_all()? / n as f64)? + (xe * up_t)?.sum_all()?)?;
        let g = surrogate.backward()?;
        if s > 0 {
            let gx = g
                .get(xs.as_tensor())
                .ok_or_else(|| Error::Tensor("no gradient at a segment start".into()))?;
            upstream = Some(gx.flatten_all()?.to_vec1::<f32>()?);
        }
        grads = Some(match grads {
            None => g,
            Some(mut acc) => {
                for (_, v) in params.vars() {
                    if let Some(gv) = g.get(v.as_tensor()) {
                        let sum = match acc.get(v.as_tensor()) {
                            Some(a) => (a + gv)?,
                            None => gv.clone(),
                        };
                        acc.insert(v.as_tensor(), sum);
                    }
                }
                acc
            }
        });
    }
    stats.running = running_all;
    stats.stochastic = stoch;
    Ok((grads.expect("at least one segment"), stats))
}

/// `n` samples of the chain without a graph (network coordinates) and their paths' statistics.
pub fn sample(ctl: &Control, chain: &Chain, n: usize, seed: u64) -> Result<(Vec<f32>, PathStats)> {
    let dim = ctl.target.dim();
    let dev = ctl.device.clone();
    let x0 = start(chain, n, dim, ctl.target.particles(), seed);
    let mut lgv: Vec<Option<Vec<f32>>> = vec![None; chain.steps()];
    let mut stoch = vec![0.0f64; n];
    let x = Tensor::from_vec(x0, (n, dim), &dev)?;
    let (xe, running) = run_steps(ctl, chain, x, 0, chain.steps(), seed, &mut lgv, &mut stoch)?;
    let xv = xe.flatten_all()?.to_vec1::<f32>()?;
    if let Some(i) = xv.iter().position(|v| !v.is_finite()) {
        return Err(Error::Diverged(format!(
            "sample {} of the controlled SDE is not finite",
            i / dim
        )));
    }
    let (log_ref, log_p, _) = terminal(ctl, chain, &xv)?;
    let stats = PathStats {
        running: running
            .to_vec1::<f32>()?
            .iter()
            .map(|&v| f64::from(v))
            .collect(),
        stochastic: stoch,
        log_ref,
        log_p,
    };
    Ok((xv, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::Gmm;
    use crate::net::{MlpConfig, Net, NetConfig};
    use crate::rng::stream;

    /// A closed-form control u(x, t) = c(t)·x.
    struct Linear(Box<dyn Fn(f32) -> f64 + Send + Sync>);

    impl ScoreNet for Linear {
        fn forward(&self, x: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
            let t0 = t.to_vec1::<f32>()?[0];
            x * (self.0)(t0)
        }
    }

    /// N(0, s²I) in 2-D as a normalised target (log Z = 0).
    fn gaussian(s: f64) -> Target {
        Target::new(Gmm::new("gauss", &[1.0], &[0.0, 0.0], &[s, s]).unwrap())
    }

    fn control<'a>(net: &'a dyn ScoreNet, target: &'a Target, dev: &'a Device) -> Control<'a> {
        Control {
            net,
            tnet: None,
            target,
            scale: 1.0,
            grad_clip: 0.0,
            device: dev,
        }
    }

    fn loss_of(ctl: &Control, chain: &Chain, n: usize) -> f64 {
        sample(ctl, chain, n, 7).unwrap().1.loss()
    }

    /// At the optimal control the log weights are constant and equal to log Z = 0 (up to the
    /// discretisation), and the loss — the same without its mean-zero u·ε term — is 0 within
    /// its Monte-Carlo error.
    fn assert_optimal(st: &PathStats, what: &str) {
        let lw = st.log_weights();
        let n = lw.len() as f64;
        let mean = lw.iter().sum::<f64>() / n;
        let sd = (lw.iter().map(|w| (w - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 0.02 && sd < 0.2, "{what}: log w {mean} ± {sd}");
        let per_path: Vec<f64> = (0..lw.len())
            .map(|i| st.running[i] + st.log_ref[i] - st.log_p[i])
            .collect();
        let m = per_path.iter().sum::<f64>() / n;
        let se = (per_path.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n / n).sqrt();
        assert!((st.loss() - m).abs() < 1e-9);
        assert!(m.abs() < 4.0 * se + 0.01, "{what}: loss {m} ± {se}");
    }

    #[test]
    fn pis_loss_at_the_optimal_control_is_minus_log_z() {
        // X_T | X_t = x ~ N(x, σ²(T − t)); the optimal control is σ∇log E[p̃/N(0, σ²T)](x, t)
        // = −σ·a·x / (1 + a·σ²(T − t)), a = 1/s² − 1/(σ²T).
        let (s, sigma, big_t) = (0.5f64, 1.3f64, 1.0f64);
        let cfg = PathConfig {
            steps: 400,
            sigma,
            time_range: big_t,
            ..PathConfig::default()
        };
        let chain = Chain::pis(&cfg);
        let target = gaussian(s);
        let dev = Device::Cpu;
        let a = 1.0 / (s * s) - 1.0 / (sigma * sigma * big_t);
        let opt = Linear(Box::new(move |t| {
            -sigma * a / (1.0 + a * sigma * sigma * (big_t - f64::from(t)))
        }));
        let zero = Linear(Box::new(|_| 0.0));
        let at_opt = sample(&control(&opt, &target, &dev), &chain, 4000, 3)
            .unwrap()
            .1;
        assert_optimal(&at_opt, "PIS");
        let (log_z, ess) = at_opt.log_z_ess();
        assert!(log_z.abs() < 0.02 && ess > 0.95, "log Z {log_z}, ESS {ess}");
        let uncontrolled = loss_of(&control(&zero, &target, &dev), &chain, 4000);
        assert!(uncontrolled > 0.3, "KL without control {uncontrolled}");
    }

    #[test]
    fn dds_loss_at_the_optimal_control_is_minus_log_z() {
        // The OU process from N(0, s²) has marginals N(0, v), v = s²ᾱ + σ²(1 − ᾱ); the optimal
        // control is ∇log q + x/σ² = x·(1/σ² − 1/v) at noise level t.
        let (s, sigma) = (0.5f64, 1.5f64);
        let abar = |t: f64| {
            let f = |t: f64| {
                ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                    .cos()
                    .powi(2)
            };
            f(t) / f(0.0)
        };
        for integrator in [Integrator::Exponential, Integrator::Euler] {
            let cfg = PathConfig {
                steps: 400,
                sigma,
                integrator,
                ..PathConfig::default()
            };
            let chain = Chain::dds(&cfg);
            let target = gaussian(s);
            let dev = Device::Cpu;
            let opt = Linear(Box::new(move |t| {
                let ab = abar(f64::from(t));
                1.0 / (sigma * sigma) - 1.0 / (s * s * ab + sigma * sigma * (1.0 - ab))
            }));
            let zero = Linear(Box::new(|_| 0.0));
            let at_opt = sample(&control(&opt, &target, &dev), &chain, 4000, 3)
                .unwrap()
                .1;
            assert_optimal(&at_opt, &format!("DDS {integrator:?}"));
            let uncontrolled = loss_of(&control(&zero, &target, &dev), &chain, 4000);
            assert!(
                uncontrolled > 0.3,
                "{integrator:?}: KL without control {uncontrolled}"
            );
        }
    }

    /// A tiny MLP and its parameters.
    fn tiny_net(dev: &Device) -> (Params, Net) {
        let mut params = Params::new(dev);
        let cfg = NetConfig::Mlp(MlpConfig {
            hidden: 8,
            layers: 1,
            emb_size: 4,
            x_emb_scale: 1.0,
            t_emb_scale: 1.0,
        });
        let net = Net::new(&mut params, 2, None, &cfg, &mut stream(5, 0)).unwrap();
        (params, net)
    }

    #[test]
    fn gradients_through_the_trajectory_match_finite_differences() {
        let dev = Device::Cpu;
        let (params, net) = tiny_net(&dev);
        let infer = net.detached();
        let target = gaussian(0.7);
        for chain in [
            Chain::pis(&PathConfig {
                steps: 6,
                ..PathConfig::default()
            }),
            Chain::dds(&PathConfig {
                steps: 6,
                ..PathConfig::default()
            }),
        ] {
            let (n, seed) = (4, 11);
            let ctl = control(&net, &target, &dev);
            let ctl_i = control(&infer, &target, &dev);
            let (grads, stats) = loss_and_grads(&ctl, &ctl_i, &params, &chain, 1, n, seed).unwrap();
            // the graph-free pass gives the same loss
            let loss = |ctl: &Control| sample(ctl, &chain, n, seed).unwrap().1.loss();
            assert!((stats.loss() - loss(&ctl_i)).abs() < 1e-5);
            let mut checked = 0;
            for (name, var) in params.vars() {
                let g = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap();
                let g = g.to_vec1::<f32>().unwrap();
                let orig = var
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                // the entry with the largest gradient, by central differences in f64 of the loss
                let (j, &gj) = g
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                    .unwrap();
                if gj.abs() < 1e-3 {
                    continue;
                }
                let h = 1e-2f32;
                let at = |d: f32| {
                    let mut w = orig.clone();
                    w[j] += d;
                    var.set(&Tensor::from_vec(w, var.dims(), &dev).unwrap())
                        .unwrap();
                    loss(&ctl_i)
                };
                let fd = (at(h) - at(-h)) / (2.0 * f64::from(h));
                at(0.0);
                let rel = (fd - f64::from(gj)).abs() / fd.abs().max(1e-3);
                assert!(
                    rel < 0.03,
                    "{name}[{j}]: backprop {gj}, finite differences {fd}"
                );
                checked += 1;
            }
            assert!(checked >= 4, "only {checked} parameters checked");
        }
    }

    #[test]
    fn checkpointed_segments_give_the_same_gradients() {
        let dev = Device::Cpu;
        let (mut params, net) = tiny_net(&dev);
        let tnet = TimeCond::new(&mut params, 4, 2, &mut stream(9, 0)).unwrap();
        let tnet_i = tnet.detached();
        let infer = net.detached();
        let target = gaussian(0.7);
        let chain = Chain::pis(&PathConfig {
            steps: 9,
            ..PathConfig::default()
        });
        let mut ctl = control(&net, &target, &dev);
        ctl.tnet = Some(&tnet);
        let mut ctl_i = control(&infer, &target, &dev);
        ctl_i.tnet = Some(&tnet_i);
        let calls0 = target.calls();
        let (g1, s1) = loss_and_grads(&ctl, &ctl_i, &params, &chain, 1, 5, 3).unwrap();
        let calls1 = target.calls();
        let (g3, s3) = loss_and_grads(&ctl, &ctl_i, &params, &chain, 3, 5, 3).unwrap();
        // one ∇log p per path and step plus the terminal one, either way
        assert_eq!(calls1 - calls0, 5 * 10);
        assert_eq!(target.calls() - calls1, 5 * 10);
        assert!((s1.loss() - s3.loss()).abs() < 1e-5);
        for (name, var) in params.vars() {
            let a = g1.get(var.as_tensor()).unwrap().flatten_all().unwrap();
            let b = g3.get(var.as_tensor()).unwrap().flatten_all().unwrap();
            let d = (a - &b)
                .unwrap()
                .abs()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let m = b.abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(
                d <= 1e-4 * m.max(1e-3),
                "{name}: max difference {d} (scale {m})"
            );
        }
    }
}
