//! Conditional flow matching (Lipman et al. 2023; with minibatch optimal-transport pairing,
//! Tong et al. 2024) of a CNF on a sample set.
//!
//! One step: x₁ — B rows of the data (uniformly, with replacement), x₀ — B prior draws
//! N(0, σ₀²I) (mean-free for particle systems), optionally re-paired by the exact assignment
//! minimising Σ|x₀ − x₁|² within the minibatch (`lsap`); t ~ U(0, 1) per pair; the straight
//! interpolant x_t = (1 − t)·x₀ + t·x₁ has velocity u = x₁ − x₀, and the loss is
//! mean |v_θ(x_t, t) − u|² (all in network coordinates). Adam with gradient-norm clipping, an
//! LR schedule and an EMA of the weights, which replace the live weights at the end.

use std::time::Instant;

use candle_core::Tensor;
use rand::RngExt;

use super::Cnf;
use crate::energy::particles::remove_mean;
use crate::error::{Error, Result};
use crate::net::optim::{Adam, Ema};
use crate::net::ScoreNet;
use crate::rng::{mix64, stream, NormalStream};

/// What training did.
#[derive(Clone, Debug)]
pub struct FitReport {
    pub steps: usize,
    /// Mean loss over the last 10% of steps.
    pub final_loss: f64,
    pub wall_s: f64,
}

/// Fit `cnf` to `data` (`[N, dim]`, target coordinates). `progress(step, total, loss)` after
/// every step.
pub fn fit(
    cnf: &mut Cnf,
    data: &[f32],
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<FitReport> {
    let start = Instant::now();
    let dim = cnf.target.dim();
    if data.is_empty() || !data.len().is_multiple_of(dim) {
        return Err(Error::Shape(format!(
            "flow matching needs [N, {dim}] data, got {} values",
            data.len()
        )));
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite(format!(
            "training value {i} is not finite"
        )));
    }
    let cfg = cnf.cfg.clone();
    let s = cfg.data_scale;
    let mut y: Vec<f32> = data.iter().map(|&v| (f64::from(v) / s) as f32).collect();
    let particles = cnf.target.particles();
    if let Some(p) = particles {
        remove_mean(&mut y, p);
    }
    let n = y.len() / dim;
    let b = cfg.batch_size;
    let sigma0 = cnf.prior_std_scaled() as f32;
    let mut adam = Adam::new(&cnf.params)?;
    let mut ema = if cfg.ema_decay > 0.0 {
        Some(Ema::new(&cnf.params, cfg.ema_decay)?)
    } else {
        None
    };
    let mut rng = stream(cfg.seed, 0xF1);
    let mut tail = Vec::new();
    let dev = cnf.device.clone();
    for step in 0..cfg.steps {
        let lr = cfg.lr_schedule.lr(
            cfg.lr,
            step as f64 / cfg.steps as f64,
            cfg.lr_final_fraction,
        );
        let mut x1 = Vec::with_capacity(b * dim);
        for _ in 0..b {
            let i = rng.random_range(0..n);
            x1.extend_from_slice(&y[i * dim..(i + 1) * dim]);
        }
        let mut x0 = vec![0.0f32; b * dim];
        NormalStream::new(mix64(cfg.seed ^ 0xF10 ^ step as u64), 0).fill(&mut x0);
        x0.iter_mut().for_each(|v| *v *= sigma0);
        if let Some(p) = particles {
            remove_mean(&mut x0, p);
        }
        if cfg.ot_pairing {
            x0 = ot_pair(&x0, &x1, dim)?;
        }
        let t: Vec<f32> = (0..b).map(|_| rng.random::<f32>()).collect();
        let mut xt = vec![0.0f32; b * dim];
        let mut u = vec![0.0f32; b * dim];
        for i in 0..b {
            for k in 0..dim {
                let (a, c) = (x0[i * dim + k], x1[i * dim + k]);
                xt[i * dim + k] = (1.0 - t[i]) * a + t[i] * c;
                u[i * dim + k] = c - a;
            }
        }
        let xt = Tensor::from_vec(xt, (b, dim), &dev)?;
        let tt = Tensor::from_vec(t, b, &dev)?;
        let ut = Tensor::from_vec(u, (b, dim), &dev)?;
        let loss = (cnf.net.forward(&xt, &tt)? - ut)?.sqr()?.mean_all()?;
        let lv = f64::from(loss.to_scalar::<f32>()?);
        if !lv.is_finite() {
            return Err(Error::Diverged(format!(
                "flow-matching loss is {lv} at step {}",
                step + 1
            )));
        }
        let grads = loss.backward()?;
        let clip = (cfg.max_grad_norm > 0.0).then_some(cfg.max_grad_norm);
        adam.step(&grads, lr, clip)?;
        if let Some(e) = ema.as_mut() {
            e.update()?;
        }
        if step * 10 >= cfg.steps * 9 {
            tail.push(lv);
        }
        progress(step + 1, cfg.steps, lv);
    }
    if let Some(e) = ema.as_mut() {
        e.swap()?; // the average becomes the model
    }
    Ok(FitReport {
        steps: cfg.steps,
        final_loss: tail.iter().sum::<f64>() / tail.len().max(1) as f64,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

/// `x0` reordered so that row i is paired with row i of `x1` by the assignment minimising the
/// total squared distance.
fn ot_pair(x0: &[f32], x1: &[f32], dim: usize) -> Result<Vec<f32>> {
    let b = x0.len() / dim;
    let mut cost = vec![0.0f64; b * b];
    for (j, a) in x1.chunks_exact(dim).enumerate() {
        for (i, c) in x0.chunks_exact(dim).enumerate() {
            cost[j * b + i] = a.iter().zip(c).map(|(p, q)| f64::from(p - q).powi(2)).sum();
        }
    }
    let (rows, cols) = lsap::solve(b, b, &cost, false)
        .map_err(|e| Error::Config(format!("assignment solver failed: {e}")))?;
    let mut out = vec![0.0f32; x0.len()];
    for (r, c) in rows.into_iter().zip(cols) {
        out[r * dim..(r + 1) * dim].copy_from_slice(&x0[c * dim..(c + 1) * dim]);
    }
    Ok(out)
}
