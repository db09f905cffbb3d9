//! The DEM score regression shared by iDEM and pDEM (steps 2–4 of Algorithm 1; they differ
//! only in where the clean points x₀ come from):
//!
//! 2. t ~ U(0, 1) per point, x_t = x₀ + √h(t)·ε (mean-free ε for particle systems).
//! 3. S = DEM target at (x_t, t) with K samples. It is computed in the target's coordinates with
//!    the schedule scaled by `data_scale` (σ → s·σ) and converted back: S_y = s·S_x, clipped to
//!    `max_score_norm` in network coordinates — the same numbers as estimating with the scaled
//!    energy log p(s·y), as the reference does. With `dem_guided` the estimator's noise is
//!    centred on h(t)·s_θ(x_t, t) — the prediction of step 4, computed first and detached — and
//!    reweighted (`dem_target` docs); the target stays consistent.
//! 4. loss = mean_batch[λ(t)·mean_dims(s_θ(x_t, t) − S)²], λ(t) = h(t) + ε (or 1).
//!
//! With a final stage (`final_stage_epochs` > 0, config docs) the target (step 3) is clipped at
//! the stage's norm and uses the stage's K.

use std::time::Instant;

use candle_core::Tensor;
use rand::RngExt;

use super::{Seeds, StepOutput};
use crate::config::TrainConfig;
use crate::dem_target::{DemStats, DemTarget};
use crate::energy::particles::remove_mean;
use crate::error::{Error, Result};
use crate::model::ScoreModel;
use crate::net::ScoreNet;
use crate::noise_schedule::NoiseSchedule;
use crate::rng::{NormalStream, Rng};

/// The DEM target's clipping norm in epoch `e` in the estimator's (target) coordinates:
/// network-coordinate norm / `data_scale` (see module docs); `None` = off.
fn estimator_clip(cfg: &TrainConfig, e: usize) -> Option<f64> {
    let c = cfg.target_clip_at(e);
    (c > 0.0).then(|| c / cfg.data_scale)
}

/// `n` prior samples N(m, h(1)I) in network coordinates (mean-free for particles).
pub fn prior(model: &ScoreModel, n: usize, seed: u64) -> Vec<f32> {
    let dim = model.target.dim();
    let mut x = vec![0.0f32; n * dim];
    NormalStream::new(seed, 0).fill(&mut x);
    let s1 = model.cfg.schedule.sigma(1.0) as f32;
    x.iter_mut().for_each(|v| *v *= s1);
    if let Some(p) = model.target.particles() {
        remove_mean(&mut x, p);
    }
    crate::model::shifted(&x, &model.cfg.prior_mean)
}

/// The regression: the estimator and its per-epoch settings.
pub struct DemRegression {
    pub dem: DemTarget,
}

impl DemRegression {
    /// The estimator of `cfg` (in target coordinates: σ·s, clipping norm / s).
    pub fn new(cfg: &TrainConfig) -> Result<Self> {
        let s = cfg.data_scale;
        let schedule = match cfg.schedule {
            NoiseSchedule::Geometric {
                sigma_min,
                sigma_max,
            } => NoiseSchedule::geometric(sigma_min * s, sigma_max * s)?,
            other if s == 1.0 => other,
            other => {
                return Err(Error::Config(format!(
                    "data_scale ≠ 1 is supported with the geometric schedule only, got {other:?}"
                )))
            }
        };
        let blend = (cfg.dem_blend_sigma > 0.0).then_some(cfg.dem_blend_sigma * s);
        let small = (cfg.dem_small_noise_k > 0)
            .then_some((cfg.dem_small_noise_k, cfg.dem_small_noise_sigma * s));
        let dem = DemTarget::new(schedule, cfg.num_mc_samples, estimator_clip(cfg, 0))?
            .with_blend(blend)?
            .with_small_noise(small)?;
        Ok(Self { dem })
    }

    /// Epoch `e`'s clip and K.
    pub fn begin_epoch(&mut self, cfg: &TrainConfig, e: usize) {
        self.dem.max_score_norm = estimator_clip(cfg, e);
        self.dem.num_mc_samples = cfg.mc_samples_at(e);
    }

    /// DEM targets at network-coordinate points `x`, times `t`, in network coordinates;
    /// `guess`: a score guess in network coordinates for the model-guided proposal.
    pub fn targets(
        &self,
        model: &ScoreModel,
        x: &[f32],
        t: &[f32],
        guess: Option<&[f32]>,
        seed: u64,
    ) -> Result<(Vec<f32>, DemStats)> {
        let s = model.cfg.data_scale;
        let xd: Vec<f32> = x.iter().map(|v| (f64::from(*v) * s) as f32).collect();
        let mut out = vec![0.0f32; x.len()];
        let target = &model.target;
        let stats = match guess {
            None => self.dem.estimate(target, &xd, t, seed, &mut out)?,
            Some(g) => {
                // score in target coordinates = network-coordinate score / s
                let gd: Vec<f32> = g.iter().map(|v| (f64::from(*v) / s) as f32).collect();
                self.dem
                    .estimate_guided(target, &xd, t, &gd, seed, &mut out)?
            }
        };
        out.iter_mut().for_each(|v| *v = (f64::from(*v) * s) as f32);
        Ok((out, stats))
    }

    /// One step on clean points `x0` (network coordinates); `rng` draws t, the noise and the
    /// estimator's samples come from `seeds`.
    pub fn step(
        &self,
        model: &ScoreModel,
        x0: Vec<f32>,
        rng: &mut Rng,
        seeds: Seeds,
        epoch: usize,
        step: usize,
    ) -> Result<StepOutput> {
        let cfg = &model.cfg;
        let dim = model.target.dim();
        let b = cfg.batch_size;
        let t: Vec<f32> = (0..b).map(|_| rng.random::<f32>()).collect();
        let mut eps = vec![0.0f32; b * dim];
        NormalStream::new(seeds.get(4, epoch, step), 0).fill(&mut eps);
        if let Some(p) = model.target.particles() {
            remove_mean(&mut eps, p);
        }
        let mut xt = x0;
        for (i, row) in xt.chunks_mut(dim).enumerate() {
            let sd = cfg.schedule.sigma(f64::from(t[i])) as f32;
            for (x, e) in row.iter_mut().zip(&eps[i * dim..]) {
                *x += sd * e;
            }
        }
        let dev = &model.device;
        let xt_t = Tensor::from_vec(xt.clone(), (b, dim), dev)?;
        let t_t = Tensor::from_vec(t.clone(), b, dev)?;
        let pred = model.net.forward(&xt_t, &t_t)?;
        let guess = if cfg.dem_guided {
            Some(pred.detach().flatten_all()?.to_vec1::<f32>()?)
        } else {
            None
        };
        let dem_start = Instant::now();
        let (target, stats) =
            self.targets(model, &xt, &t, guess.as_deref(), seeds.get(5, epoch, step))?;
        let dem_s = dem_start.elapsed().as_secs_f64();
        let lam: Vec<f32> = t
            .iter()
            .map(|&ti| {
                if cfg.loss_weight_eps < 0.0 {
                    1.0
                } else {
                    (cfg.schedule.h(f64::from(ti)) + cfg.loss_weight_eps) as f32
                }
            })
            .collect();
        let s_t = Tensor::from_vec(target, (b, dim), dev)?;
        let lam_t = Tensor::from_vec(lam, b, dev)?;
        let per_point = (pred - s_t)?.sqr()?.mean(1)?;
        let loss = (per_point * lam_t)?.mean_all()?;
        let loss_v = f64::from(loss.to_scalar::<f32>()?);
        if !loss_v.is_finite() {
            return Err(Error::Diverged(format!(
                "loss is {loss_v} at epoch {}, step {step}",
                epoch + 1
            )));
        }
        Ok(StepOutput {
            loss: loss_v,
            grads: loss.backward()?,
            diagnostics: vec![
                ("dem_target_s", dem_s),
                ("dem_mean_ess", stats.mean_ess),
                ("dem_clipped_per_point", stats.clipped as f64 / b as f64),
            ],
        })
    }
}
