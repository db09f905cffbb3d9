//! Exact log-likelihood of a CNF, its samples with their log-density, and importance weights
//! against the target.
//!
//! The flow dy/dt = v(y, t) carries the prior (t = 0) to the model (t = 1); along a trajectory
//! d log q(y_t)/dt = −div v(y_t, t) (instantaneous change of variables). With an accumulator
//! a, da/dt = div v:
//! * log-likelihood of a point x: y(1) = x / s, integrate [y, a = 0] from t = 1 back to 0, then
//!   log q(x) = log N(y(0); 0, σ₀²) + a(0) − D·ln s;
//! * a sample: y(0) from the prior, integrate [y, a = 0] from 0 to 1, x = s·y(1) and
//!   log q(x) = log N(y(0)) − a(1) − D·ln s,
//!
//! with s = `data_scale` and D the flow's dimension ((n − 1)·d for particle systems: the
//! velocity of the EGNN is mean-free and translation-invariant, so the full trace equals the
//! trace on the mean-free subspace). div v is the exact trace of the Jacobian (one backward pass
//! per coordinate, candle autodiff through the network) or, as an option, Hutchinson's
//! estimator εᵀ(∂v/∂y)ε with one Rademacher ε per trajectory. Integration: adaptive DOPRI5
//! ([`super::ode`]) over chunks of points; NFE is reported per chunk (summed).

use candle_core::{Device, Tensor, Var};

use super::ode::Dopri5;
use super::Cnf;
use crate::energy::particles::remove_mean;
use crate::error::{Error, Result};
use crate::net::{Net, ScoreNet};
use crate::rng::{mix64, NormalStream};

/// Log-densities of some points and the cost of computing them.
#[derive(Clone, Debug)]
pub struct LogDensities {
    /// log q per point, target coordinates.
    pub log_q: Vec<f64>,
    /// Right-hand-side evaluations, summed over chunks.
    pub nfe: usize,
}

/// Points per ODE chunk (the solver's step is shared within a chunk).
pub const CHUNK: usize = 1000;

/// Output and divergence Σ_k ∂out_k/∂y_k of `net` at points `y` (`[B, dim]`) and time `t`:
/// exact (one backward pass per coordinate) or, with `probes` (Rademacher vectors `[B, dim]`),
/// Hutchinson's estimator εᵀ(∂out/∂y)ε. Used for a CNF's velocity and for the probability-flow
/// ODE of a score network (`examples/pf_importance.rs`).
pub fn output_divergence(
    net: &Net,
    device: &Device,
    y: &[f32],
    t: f32,
    dim: usize,
    probes: Option<&[f32]>,
) -> Result<(Vec<f32>, Vec<f64>)> {
    let b = y.len() / dim;
    let yv = Var::from_tensor(&Tensor::from_slice(y, (b, dim), device)?)?;
    let tt = Tensor::full(t, b, device)?;
    let v = net.forward(yv.as_tensor(), &tt)?;
    let mut div = vec![0.0f64; b];
    let input_grad = |out: &Tensor| -> Result<Vec<f32>> {
        let grads = out.sum_all()?.backward()?;
        Ok(grads
            .get(yv.as_tensor())
            .ok_or_else(|| Error::Config("no input gradient".into()))?
            .flatten_all()?
            .to_vec1::<f32>()?)
    };
    match probes {
        Some(eps) => {
            let e = Tensor::from_slice(eps, (b, dim), device)?;
            let g = input_grad(&(&v * &e)?)?;
            for (i, d) in div.iter_mut().enumerate() {
                *d = (0..dim)
                    .map(|k| f64::from(g[i * dim + k] * eps[i * dim + k]))
                    .sum();
            }
        }
        None => {
            for k in 0..dim {
                let g = input_grad(&v.narrow(1, k, 1)?)?;
                for (i, d) in div.iter_mut().enumerate() {
                    *d += f64::from(g[i * dim + k]);
                }
            }
        }
    }
    Ok((v.flatten_all()?.to_vec1::<f32>()?, div))
}

/// A velocity field with its divergence at f32 points `[B, dim]` and time t.
pub type FieldFn<'a> = dyn FnMut(&[f32], f64) -> Result<(Vec<f32>, Vec<f64>)> + 'a;

/// Integrate augmented states `[y, a]` (rows of dim + 1, a accumulating the divergence:
/// da/dt = div v) from `t0` to `t1` with `solver`; returns the number of field evaluations.
pub fn integrate_augmented(
    solver: &Dopri5,
    dim: usize,
    state: &mut [f64],
    t0: f64,
    t1: f64,
    field: &mut FieldFn<'_>,
) -> Result<usize> {
    let w = dim + 1;
    let rows = state.len() / w;
    let mut y32 = vec![0.0f32; rows * dim];
    let mut f = |t: f64, s: &[f64], ds: &mut [f64]| -> Result<()> {
        for (r, row) in s.chunks_exact(w).enumerate() {
            for k in 0..dim {
                y32[r * dim + k] = row[k] as f32;
            }
        }
        let (v, div) = field(&y32, t)?;
        for (r, row) in ds.chunks_exact_mut(w).enumerate() {
            for k in 0..dim {
                row[k] = f64::from(v[r * dim + k]);
            }
            row[dim] = div[r];
            if !row.iter().all(|x| x.is_finite()) {
                return Err(Error::NonFinite(format!(
                    "velocity or divergence is not finite at t = {t}"
                )));
            }
        }
        Ok(())
    };
    Ok(solver.integrate(&mut f, t0, t1, state, w)?.nfe)
}

impl Cnf {
    /// Velocity and divergence at network-coordinate points `y` (`[B, dim]`) and time `t`.
    /// `probes`: Rademacher vectors (`[B, dim]`) for Hutchinson's estimator, `None` = exact.
    pub fn velocity_divergence(
        &self,
        y: &[f32],
        t: f32,
        probes: Option<&[f32]>,
    ) -> Result<(Vec<f32>, Vec<f64>)> {
        output_divergence(&self.infer, &self.device, y, t, self.target.dim(), probes)
    }

    fn solver(&self) -> Dopri5 {
        Dopri5 {
            atol: self.cfg.atol,
            rtol: self.cfg.rtol,
            ..Dopri5::default()
        }
    }

    /// Integrate augmented states `[y, a]` (rows of dim + 1) from `t0` to `t1`.
    fn integrate_augmented(&self, state: &mut [f64], t0: f64, t1: f64, seed: u64) -> Result<usize> {
        let dim = self.target.dim();
        let rows = state.len() / (dim + 1);
        let probes: Option<Vec<f32>> = (!self.cfg.exact_divergence).then(|| {
            let mut z = vec![0.0f32; rows * dim];
            NormalStream::new(mix64(seed ^ 0x4C7), 0).fill(&mut z);
            z.iter()
                .map(|v| if *v < 0.0 { -1.0 } else { 1.0 })
                .collect()
        });
        let mut field =
            |y: &[f32], t: f64| self.velocity_divergence(y, t as f32, probes.as_deref());
        integrate_augmented(&self.solver(), dim, state, t0, t1, &mut field)
    }

    /// Exact (or Hutchinson) log-likelihood of points `x` (`[N, dim]`, target coordinates;
    /// particle configurations are centred first). `progress(done, total)` after each chunk.
    pub fn log_likelihood(
        &self,
        x: &[f32],
        mut progress: impl FnMut(usize, usize),
    ) -> Result<LogDensities> {
        let dim = self.target.dim();
        let n = self.target.rows(x)?;
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite(format!("test value {i} is not finite")));
        }
        let s = self.cfg.data_scale;
        let mut y: Vec<f32> = x.iter().map(|&v| (f64::from(v) / s) as f32).collect();
        if let Some(p) = self.target.particles() {
            remove_mean(&mut y, p);
        }
        let shift = self.flow_dim() as f64 * s.ln();
        let mut out = LogDensities {
            log_q: Vec::with_capacity(n),
            nfe: 0,
        };
        for (c, chunk) in y.chunks(CHUNK * dim).enumerate() {
            let mut state = augmented(chunk, dim);
            out.nfe += self.integrate_augmented(&mut state, 1.0, 0.0, self.cfg.seed ^ c as u64)?;
            for row in state.chunks_exact(dim + 1) {
                out.log_q
                    .push(self.prior_log_density(&row[..dim]) + row[dim] - shift);
            }
            progress(out.log_q.len(), n);
        }
        Ok(out)
    }

    /// `n` samples of the CNF (target coordinates) with their log-density.
    pub fn sample_with_log_q(
        &self,
        n: usize,
        seed: u64,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<(Vec<f32>, LogDensities)> {
        let dim = self.target.dim();
        let s = self.cfg.data_scale;
        let sigma = self.prior_std_scaled();
        let mut y0 = vec![0.0f32; n * dim];
        NormalStream::new(mix64(seed ^ 0x5A4), 0).fill(&mut y0);
        y0.iter_mut().for_each(|v| *v *= sigma as f32);
        if let Some(p) = self.target.particles() {
            remove_mean(&mut y0, p);
        }
        let shift = self.flow_dim() as f64 * s.ln();
        let mut x = Vec::with_capacity(n * dim);
        let mut out = LogDensities {
            log_q: Vec::with_capacity(n),
            nfe: 0,
        };
        for (c, chunk) in y0.chunks(CHUNK * dim).enumerate() {
            let mut state = augmented(chunk, dim);
            let lp0: Vec<f64> = state
                .chunks_exact(dim + 1)
                .map(|row| self.prior_log_density(&row[..dim]))
                .collect();
            out.nfe += self.integrate_augmented(&mut state, 0.0, 1.0, seed ^ (c as u64) << 20)?;
            for (row, l0) in state.chunks_exact(dim + 1).zip(lp0) {
                x.extend(row[..dim].iter().map(|v| (v * s) as f32));
                out.log_q.push(l0 - row[dim] - shift);
            }
            progress(out.log_q.len(), n);
        }
        Ok((x, out))
    }
}

/// Rows of `chunk` (`[rows, dim]`) as augmented ODE states `[y, a = 0]` (f64).
pub fn augmented(chunk: &[f32], dim: usize) -> Vec<f64> {
    let mut state = vec![0.0f64; chunk.len() / dim * (dim + 1)];
    for (row, y) in state.chunks_exact_mut(dim + 1).zip(chunk.chunks_exact(dim)) {
        row[..dim]
            .iter_mut()
            .zip(y)
            .for_each(|(a, &b)| *a = f64::from(b));
    }
    state
}

/// Importance-sampling summaries of log-weights log w = log p̃ − log q (p̃ unnormalised).
#[derive(Clone, Debug, PartialEq)]
pub struct Importance {
    /// mean(log w) over finite weights: a lower bound on log Z in expectation (Jensen).
    pub logz_lower_bound: f64,
    /// log mean exp(log w) (a consistent estimate of log Z; invalid points count as w = 0).
    pub logz: f64,
    /// (Σw)² / (N·Σw²) ∈ [0, 1].
    pub ess: f64,
    /// Points whose weight is 0 (the target's log p is −inf there).
    pub zero_weights: usize,
}

/// log Z bounds and normalised ESS from log-weights (`−inf` allowed for invalid points).
pub fn importance(log_w: &[f64]) -> Result<Importance> {
    if log_w.is_empty() {
        return Err(Error::Shape("no importance weights".into()));
    }
    if log_w.iter().any(|v| v.is_nan() || *v == f64::INFINITY) {
        return Err(Error::NonFinite("a log-weight is NaN or +inf".into()));
    }
    let finite: Vec<f64> = log_w.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return Err(Error::NonFinite("every importance weight is 0".into()));
    }
    let n = log_w.len() as f64;
    let lse = |it: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = it.collect();
        let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
    };
    let l1 = lse(&mut finite.iter().copied());
    let l2 = lse(&mut finite.iter().map(|v| 2.0 * v));
    Ok(Importance {
        logz_lower_bound: finite.iter().sum::<f64>() / finite.len() as f64,
        logz: l1 - n.ln(),
        ess: (2.0 * l1 - l2 - n.ln()).exp(),
        zero_weights: log_w.len() - finite.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn importance_of_equal_weights() {
        let r = importance(&[0.3; 10]).unwrap();
        assert!((r.logz - 0.3).abs() < 1e-12);
        assert!((r.logz_lower_bound - 0.3).abs() < 1e-12);
        assert!((r.ess - 1.0).abs() < 1e-12);
    }

    #[test]
    fn importance_of_one_dominant_weight() {
        let r = importance(&[0.0, -1e3, -1e3, f64::NEG_INFINITY]).unwrap();
        assert!((r.ess - 0.25).abs() < 1e-9, "{r:?}");
        assert!((r.logz - (0.25f64).ln()).abs() < 1e-9);
        assert_eq!(r.zero_weights, 1);
        assert!(importance(&[f64::NAN]).is_err());
        assert!(importance(&[]).is_err());
    }
}

#[cfg(test)]
mod flow_tests {
    use candle_core::Device;

    use super::super::{Cnf, CnfConfig};
    use crate::energy::Target;
    use crate::net::{EgnnConfig, MlpConfig, NetConfig};

    fn small(target: &str) -> Cnf {
        let t = Target::by_name(target).unwrap();
        let mut cfg = CnfConfig::for_target(&t);
        cfg.net = match t.particles() {
            Some(_) => NetConfig::Egnn(EgnnConfig {
                hidden: 16,
                layers: 2,
                ..EgnnConfig::default()
            }),
            None => NetConfig::Mlp(MlpConfig {
                hidden: 32,
                emb_size: 16,
                ..MlpConfig::default()
            }),
        };
        Cnf::new(&cfg, &Device::Cpu).unwrap()
    }

    /// Sampling forward and evaluating the density backward are independent integrations of
    /// the same flow: they must agree to the solver's tolerance.
    #[test]
    fn forward_log_q_matches_backward_likelihood() {
        for name in ["gmm40", "dw4"] {
            let cnf = small(name);
            let (x, fwd) = cnf.sample_with_log_q(64, 3, |_, _| {}).unwrap();
            let bwd = cnf.log_likelihood(&x, |_, _| {}).unwrap();
            assert!(fwd.nfe > 6 && bwd.nfe > 6);
            for (a, b) in fwd.log_q.iter().zip(&bwd.log_q) {
                assert!((a - b).abs() < 2e-3, "{name}: forward {a} vs backward {b}");
            }
        }
    }

    /// Hutchinson's estimator is unbiased: averaged over many probes it approaches the trace.
    #[test]
    fn hutchinson_divergence_is_unbiased() {
        let cnf = small("dw4");
        let dim = 8;
        let y: Vec<f32> = (0..dim).map(|k| ((k * 7 % 5) as f32 - 2.0) * 0.7).collect();
        let (_, exact) = cnf.velocity_divergence(&y, 0.4, None).unwrap();
        let reps = 4000;
        let ys: Vec<f32> = y.iter().cycle().take(reps * dim).copied().collect();
        let mut probes = vec![0.0f32; reps * dim];
        crate::rng::NormalStream::new(5, 0).fill(&mut probes);
        probes.iter_mut().for_each(|v| *v = v.signum());
        let (_, est) = cnf.velocity_divergence(&ys, 0.4, Some(&probes)).unwrap();
        let mean = est.iter().sum::<f64>() / reps as f64;
        let sd = (est.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / reps as f64).sqrt();
        assert!(
            (mean - exact[0]).abs() < 4.0 * sd / (reps as f64).sqrt() + 1e-4,
            "Hutchinson {mean} ± {sd} vs exact {}",
            exact[0]
        );
    }
}
