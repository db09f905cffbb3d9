//! The iDEM / pDEM trainer (Algorithm 1 of Akhound-Sadegh et al. 2024).
//!
//! One epoch = `steps_per_epoch` gradient steps, then `samples_per_epoch` samples generated with
//! the reverse SDE of the network into the replay buffer, then (every `eval_every` epochs)
//! validation. pDEM has no buffer: it generates only on validation epochs. One step:
//!
//! 1. x₀: B points from the buffer uniformly with replacement (iDEM) or from the prior
//!    N(0, h(1)I) (pDEM); network coordinates (target coordinates / `data_scale`).
//! 2. t ~ U(0, 1) per point, x_t = x₀ + √h(t)·ε (mean-free ε for particle systems).
//! 3. S = DEM target at (x_t, t) with K samples. It is computed in the target's coordinates with
//!    the schedule scaled by `data_scale` (σ → s·σ) and converted back: S_y = s·S_x, clipped to
//!    `max_score_norm` in network coordinates — the same numbers as estimating with the scaled
//!    energy log p(s·y), as the reference does. With `dem_guided` the estimator's noise is
//!    centred on h(t)·s_θ(x_t, t) — the prediction of step 4, computed first and detached — and
//!    reweighted (`dem_target` docs); the target stays consistent.
//! 4. loss = mean_batch[λ(t)·mean_dims(s_θ(x_t, t) − S)²], λ(t) = h(t) + ε (or 1);
//!    Adam with global gradient-norm clipping, optional EMA and LR schedule.
//!
//! With a final stage (`final_stage_epochs` > 0, config docs) its epochs train at the LR
//! schedule's final value, with the target (step 3) and generation clipped at the stage's norm.
//!
//! A non-finite loss, gradient or sample stops the run with an error (the last checkpoint stays).
//! The run directory holds `config.toml`, `metrics.jsonl` (one line per epoch), `checkpoint.safetensors`
//! (latest, every epoch, atomic), `best.safetensors` (best validation W2), `samples.npy` and plots.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::RngExt;
use serde_json::json;

use crate::config::{BufferInit, Mode, TrainConfig};
use crate::dem_target::{DemStats, DemTarget};
use crate::energy::particles::remove_mean;
use crate::energy::{Gmm, Target};
use crate::error::{Error, Result};
use crate::eval::{self, Metrics};
use crate::io::{checkpoint, npy};
use crate::model::ScoreModel;
use crate::net::optim::{Adam, Ema};
use crate::net::ScoreNet;
use crate::noise_schedule::NoiseSchedule;
use crate::replay_buffer::ReplayBuffer;
use crate::reverse_sde::{self, SdeConfig};
use crate::rng::{mix64, stream, NormalStream};

/// Seed of the built-in GMM-40 validation set; test sets must use other seeds.
pub const VALIDATION_SEED: u64 = 0x0005_EED0_0000_0001;
/// Points per reverse-SDE batch during training.
const GENERATION_BATCH: usize = 1000;

/// Validation (model-selection) data of a run, in the target's coordinates (see
/// [`TrainConfig::validation`]): `cfg.eval_samples` exact samples, or all rows of the file (the
/// W2 metrics use its first rows, the histogram and energy metrics all); `None` where there is none.
pub fn validation_set(cfg: &TrainConfig, target: &Target) -> Result<Option<Vec<f32>>> {
    let n = cfg.eval_samples;
    let path = if cfg.validation.is_empty() {
        if let Some(g) = exact_sampler(&cfg.target) {
            return Ok(Some(g.sample(n, &mut stream(VALIDATION_SEED, 0))));
        }
        let p = default_validation_path(&cfg.target);
        if !p.exists() {
            return Ok(None);
        }
        p
    } else {
        PathBuf::from(&cfg.validation)
    };
    Ok(Some(
        npy::read_batch(&path, target.dim(), target.particles())?.data,
    ))
}

/// Where a target without an exact sampler finds its validation split by default:
/// `<IDEM_DATA_DIR>/<target>_val.npy`.
pub fn default_validation_path(target: &str) -> PathBuf {
    crate::io::data_dir().join(format!("{}_val.npy", target.to_lowercase()))
}

/// The exact sampler of a built-in target, where one exists (GMM-40).
pub fn exact_sampler(target: &str) -> Option<Gmm> {
    (target.trim().eq_ignore_ascii_case("gmm40")).then(Gmm::gmm40)
}

/// The DEM target's clipping norm in epoch `e` in the estimator's (target) coordinates:
/// network-coordinate norm / `data_scale` (see module docs); `None` = off.
fn estimator_clip(cfg: &TrainConfig, e: usize) -> Option<f64> {
    let c = cfg.target_clip_at(e);
    (c > 0.0).then(|| c / cfg.data_scale)
}

/// One epoch's record (a line of metrics.jsonl).
#[derive(Clone, Debug)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub metrics: Option<Metrics>,
}

/// The trainer and its state.
pub struct Trainer {
    pub model: ScoreModel,
    dem: DemTarget,
    adam: Adam,
    ema: Option<Ema>,
    buffer: ReplayBuffer,
    /// Epochs completed.
    pub epoch: usize,
    wall_s: f64,
    energy_calls: u64,
    best_w2: f64,
    validation: Option<Vec<f32>>,
    dir: PathBuf,
}

impl Trainer {
    /// A new run of the built-in target `cfg.target` in `dir` (created; must not hold a run
    /// already).
    pub fn create(cfg: &TrainConfig, dir: &Path, device: &Device) -> Result<Self> {
        Self::create_with(cfg, Target::by_name(&cfg.target)?, dir, device)
    }

    /// A new run of any target (a user's energy; `cfg.target` should be its name) in `dir`.
    pub fn create_with(
        cfg: &TrainConfig,
        target: Target,
        dir: &Path,
        device: &Device,
    ) -> Result<Self> {
        crate::model::check_target(cfg, &target)?;
        if dir.join("config.toml").exists() {
            return Err(Error::Config(format!(
                "{} already holds a run; use --resume to continue it or choose another --out",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir.join("plots")).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            msg: format!("cannot create the run directory: {e}"),
        })?;
        let mut t = Self::build(cfg, target, dir, device)?;
        npy::write_atomic(&dir.join("config.toml"), cfg.to_toml().as_bytes())?;
        let _ = std::fs::remove_file(dir.join("metrics.jsonl"));
        t.fill_initial_buffer()?;
        Ok(t)
    }

    /// Continue the run in `dir` from its latest checkpoint; `overrides` (e.g. `epochs=200`)
    /// are applied to the saved configuration and saved back. The target is the built-in one
    /// the run names.
    pub fn resume(dir: &Path, overrides: &[String], device: &Device) -> Result<Self> {
        Self::resume_with(dir, overrides, None, device)
    }

    /// As [`Trainer::resume`], with the run's target given (required for a user's target).
    pub fn resume_with(
        dir: &Path,
        overrides: &[String],
        target: Option<Target>,
        device: &Device,
    ) -> Result<Self> {
        let cfg = crate::model::read_run_config(dir)?.with_overrides(overrides)?;
        let target = crate::model::run_target(&cfg, dir, target)?;
        npy::write_atomic(&dir.join("config.toml"), cfg.to_toml().as_bytes())?;
        let mut t = Self::build(&cfg, target, dir, device)?;
        let ck = dir.join("checkpoint.safetensors");
        if !ck.exists() {
            // killed before the first epoch ended: start over
            t.fill_initial_buffer()?;
            return Ok(t);
        }
        let tensors = checkpoint::load(&ck, device)?;
        t.model.params.load_from(&tensors, "net.")?;
        t.adam.load_from(&tensors)?;
        if let Some(e) = t.ema.as_mut() {
            e.load_from(&t.model.params, &tensors)?;
        }
        let buf = tensors
            .get("buffer")
            .ok_or_else(|| Error::Config("checkpoint has no replay buffer".into()))?;
        // the ring slot of the next point (absent in checkpoints written before it was saved:
        // those resume with the points in other slots, i.e. other draws from the same set)
        let rows = buf.dim(0)?;
        let head = match tensors.get("state.buffer_head") {
            // a changed capacity refills the ring from slot 0
            Some(_) if rows == cfg.buffer_capacity => {
                checkpoint::get_scalar(&tensors, "state.buffer_head")? as usize
            }
            _ => 0,
        };
        t.buffer = ReplayBuffer::restore(
            t.model.target.dim(),
            cfg.buffer_capacity,
            &buf.flatten_all()?.to_vec1::<f32>()?,
            head,
        )?;
        t.epoch = checkpoint::get_scalar(&tensors, "state.epoch")? as usize;
        t.wall_s = checkpoint::get_scalar(&tensors, "state.wall_s")?;
        t.energy_calls = checkpoint::get_scalar(&tensors, "state.energy_calls")? as u64;
        t.best_w2 = checkpoint::get_scalar(&tensors, "state.best_w2")?;
        // metrics lines of epochs after the checkpoint are dropped: they will be redone
        let mpath = dir.join("metrics.jsonl");
        if let Ok(text) = std::fs::read_to_string(&mpath) {
            let keep: String = text
                .lines()
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v["epoch"].as_u64())
                        .is_some_and(|e| e as usize <= t.epoch)
                })
                .map(|l| format!("{l}\n"))
                .collect();
            npy::write_atomic(&mpath, keep.as_bytes())?;
        }
        Ok(t)
    }

    fn build(cfg: &TrainConfig, target: Target, dir: &Path, device: &Device) -> Result<Self> {
        let model = ScoreModel::with_target(cfg, target, device)?;
        let s = cfg.data_scale;
        // the estimator runs in target coordinates: σ·s, clipping norm / s (see module docs)
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
        let clip = estimator_clip(cfg, 0);
        let blend = (cfg.dem_blend_sigma > 0.0).then_some(cfg.dem_blend_sigma * s);
        let small = (cfg.dem_small_noise_k > 0)
            .then_some((cfg.dem_small_noise_k, cfg.dem_small_noise_sigma * s));
        let dem = DemTarget::new(schedule, cfg.num_mc_samples, clip)?
            .with_blend(blend)?
            .with_small_noise(small)?;
        let adam = Adam::new(&model.params)?;
        let ema = if cfg.ema_decay > 0.0 {
            Some(Ema::new(&model.params, cfg.ema_decay)?)
        } else {
            None
        };
        let buffer = ReplayBuffer::new(model.target.dim(), cfg.buffer_capacity)?;
        let validation = validation_set(cfg, &model.target)?;
        Ok(Self {
            model,
            dem,
            adam,
            ema,
            buffer,
            epoch: 0,
            wall_s: 0.0,
            energy_calls: 0,
            best_w2: f64::INFINITY,
            validation,
            dir: dir.to_path_buf(),
        })
    }

    fn cfg(&self) -> &TrainConfig {
        &self.model.cfg
    }

    /// Seed for (purpose, epoch, step): independent streams, reproducible across resumes.
    fn seed(&self, purpose: u64, epoch: usize, step: usize) -> u64 {
        mix64(self.cfg().seed ^ mix64((purpose << 56) ^ ((epoch as u64) << 24) ^ step as u64))
    }

    /// `n` prior samples N(0, h(1)I) in network coordinates (mean-free for particles).
    fn prior(&self, n: usize, seed: u64) -> Vec<f32> {
        let dim = self.model.target.dim();
        let mut x = vec![0.0f32; n * dim];
        NormalStream::new(seed, 0).fill(&mut x);
        let s1 = self.cfg().schedule.sigma(1.0) as f32;
        x.iter_mut().for_each(|v| *v *= s1);
        if let Some(p) = self.model.target.particles() {
            remove_mean(&mut x, p);
        }
        crate::model::shifted(&x, &self.cfg().prior_mean)
    }

    /// DEM targets at network-coordinate points `x`, times `t`, in network coordinates;
    /// `guess`: a score guess in network coordinates for the model-guided proposal.
    fn dem_targets(
        &self,
        x: &[f32],
        t: &[f32],
        guess: Option<&[f32]>,
        seed: u64,
    ) -> Result<(Vec<f32>, DemStats)> {
        let s = self.cfg().data_scale;
        let xd: Vec<f32> = x.iter().map(|v| (f64::from(*v) * s) as f32).collect();
        let mut out = vec![0.0f32; x.len()];
        let target = &self.model.target;
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

    fn fill_initial_buffer(&mut self) -> Result<()> {
        if self.cfg().mode == Mode::Pdem {
            return Ok(());
        }
        let n = self.cfg().num_init_samples;
        let seed = self.seed(1, 0, 0);
        let xs = match self.cfg().buffer_init {
            BufferInit::Prior => self.prior(n, seed),
            BufferInit::Estimator => {
                let dim = self.model.target.dim();
                let sde = SdeConfig {
                    max_score_norm: None, // the estimator is clipped already
                    negative_time_steps: 0,
                    ..self.cfg().sde.clone()
                };
                let mut k = 0usize;
                let mean = self.cfg().prior_mean.clone();
                let mut score = |x: &[f32], t: f32| {
                    k += 1;
                    let x = crate::model::shifted(x, &mean);
                    Ok(self
                        .dem_targets(&x, &vec![t; x.len() / dim], None, seed ^ k as u64)?
                        .0)
                };
                let xs = reverse_sde::generate(
                    &mut score,
                    None,
                    &self.cfg().schedule,
                    &sde,
                    n,
                    dim,
                    self.model.target.particles(),
                    seed,
                )?;
                crate::model::shifted(&xs, &self.cfg().prior_mean)
            }
        };
        self.buffer.push(&xs)
    }

    /// One gradient step; returns (loss, gradient norm, the DEM target's diagnostics, seconds
    /// spent on the DEM target).
    fn step(&mut self, step: usize, lr: f64) -> Result<(f64, f64, DemStats, f64)> {
        let cfg = self.cfg().clone();
        let dim = self.model.target.dim();
        let b = cfg.batch_size;
        let mut rng = stream(self.seed(2, self.epoch, step), 0);
        let x0 = match cfg.mode {
            Mode::Idem => self.buffer.sample(b, &mut rng)?,
            Mode::Pdem => self.prior(b, self.seed(3, self.epoch, step)),
        };
        let t: Vec<f32> = (0..b).map(|_| rng.random::<f32>()).collect();
        let mut eps = vec![0.0f32; b * dim];
        NormalStream::new(self.seed(4, self.epoch, step), 0).fill(&mut eps);
        if let Some(p) = self.model.target.particles() {
            remove_mean(&mut eps, p);
        }
        let mut xt = x0;
        for (i, row) in xt.chunks_mut(dim).enumerate() {
            let sd = cfg.schedule.sigma(f64::from(t[i])) as f32;
            for (x, e) in row.iter_mut().zip(&eps[i * dim..]) {
                *x += sd * e;
            }
        }
        let dev = &self.model.device;
        let xt_t = Tensor::from_vec(xt.clone(), (b, dim), dev)?;
        let t_t = Tensor::from_vec(t.clone(), b, dev)?;
        let pred = self.model.net.forward(&xt_t, &t_t)?;
        let guess = if cfg.dem_guided {
            Some(pred.detach().flatten_all()?.to_vec1::<f32>()?)
        } else {
            None
        };
        let dem_start = Instant::now();
        let seed = self.seed(5, self.epoch, step);
        let (target, stats) = self.dem_targets(&xt, &t, guess.as_deref(), seed)?;
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
                self.epoch + 1
            )));
        }
        let grads = loss.backward()?;
        let clip = (cfg.max_grad_norm > 0.0).then_some(cfg.max_grad_norm);
        let info = self.adam.step(&grads, lr, clip)?;
        if let Some(e) = self.ema.as_mut() {
            e.update()?;
        }
        Ok((loss_v, info.grad_norm, stats, dem_s))
    }

    /// Generate `n` samples (network coordinates) with the generation weights (EMA if on).
    fn generate(&mut self, n: usize, seed: u64, sde: &SdeConfig) -> Result<Vec<f32>> {
        if let Some(e) = self.ema.as_mut() {
            e.swap()?;
        }
        let out = self.model.generate_scaled(n, seed, sde, GENERATION_BATCH);
        if let Some(e) = self.ema.as_mut() {
            e.swap()?;
        }
        out
    }

    fn to_target_coords(&self, x: &[f32]) -> Vec<f32> {
        let s = self.cfg().data_scale;
        x.iter().map(|v| (f64::from(*v) * s) as f32).collect()
    }

    fn checkpoint_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut t = self.model.params.to_tensors("net.");
        t.extend(self.adam.to_tensors()?);
        if let Some(e) = &self.ema {
            t.extend(e.to_tensors(&self.model.params));
        }
        let buf = self.buffer.to_vec();
        let dim = self.model.target.dim();
        t.push((
            "buffer".into(),
            Tensor::from_vec(buf.clone(), (buf.len() / dim, dim), &Device::Cpu)?,
        ));
        t.push(checkpoint::scalar("state.epoch", self.epoch as f64)?);
        t.push(checkpoint::scalar("state.wall_s", self.wall_s)?);
        t.push(checkpoint::scalar(
            "state.energy_calls",
            self.energy_calls as f64,
        )?);
        t.push(checkpoint::scalar("state.best_w2", self.best_w2)?);
        t.push(checkpoint::scalar(
            "state.buffer_head",
            self.buffer.head() as f64,
        )?);
        Ok(t)
    }

    /// Train one epoch: steps, generation into the buffer, validation, checkpoint, metrics line.
    pub fn run_epoch(&mut self) -> Result<EpochRecord> {
        let start = Instant::now();
        let calls0 = self.model.target.calls();
        let cfg = self.cfg().clone();
        let lr = cfg.lr_at(self.epoch);
        self.dem.max_score_norm = estimator_clip(&cfg, self.epoch);
        self.dem.num_mc_samples = cfg.mc_samples_at(self.epoch);
        let sde = cfg.sde_at(self.epoch);
        let (mut loss_sum, mut gn_sum, mut ess_sum, mut dem_s) = (0.0, 0.0, 0.0, 0.0);
        let mut clipped = 0u64;
        for step in 0..cfg.steps_per_epoch {
            let (l, g, st, d) = self.step(step, lr)?;
            dem_s += d;
            loss_sum += l;
            gn_sum += g;
            ess_sum += st.mean_ess;
            clipped += st.clipped;
        }
        let train_s = start.elapsed().as_secs_f64();
        let gen_start = Instant::now();
        let next = self.epoch + 1;
        let due = (next.is_multiple_of(cfg.eval_every) || next == cfg.epochs)
            && self.validation.is_some();
        // pDEM trains on prior points: its samples are only needed when they are evaluated
        let samples = if cfg.mode == Mode::Idem || due {
            self.generate(cfg.samples_per_epoch, self.seed(6, self.epoch, 0), &sde)?
        } else {
            Vec::new()
        };
        if cfg.mode == Mode::Idem {
            self.buffer.push(&samples)?;
        }
        let generate_s = gen_start.elapsed().as_secs_f64();
        self.epoch = next;
        let eval_start = Instant::now();
        let metrics = if due {
            let eval_target = self.model.target.clone(); // its own counter: not a training cost
            let mut s = self.to_target_coords(&samples);
            if samples.len() / self.model.target.dim() < cfg.eval_samples {
                let seed = self.seed(7, self.epoch, 0);
                let more = self.generate(cfg.eval_samples, seed, &sde)?;
                s = self.to_target_coords(&more);
            }
            let validation = self.validation.as_deref().unwrap_or_default();
            Some(eval::evaluate(&eval_target, &s, validation)?)
        } else {
            None
        };
        let eval_s = eval_start.elapsed().as_secs_f64();
        self.wall_s += start.elapsed().as_secs_f64();
        self.energy_calls += self.model.target.calls() - calls0;
        let improved = metrics
            .as_ref()
            .and_then(|m| m.get("w2"))
            .is_some_and(|&w| w < self.best_w2);
        if improved {
            self.best_w2 = metrics.as_ref().unwrap()["w2"];
        }
        let tensors = self.checkpoint_tensors()?;
        if improved {
            checkpoint::save(&self.dir.join("best.safetensors"), tensors.clone())?;
        }
        checkpoint::save(&self.dir.join("checkpoint.safetensors"), tensors)?;
        let n = cfg.steps_per_epoch as f64;
        let mut line = json!({
            "epoch": self.epoch,
            "loss": loss_sum / n,
            "grad_norm": gn_sum / n,
            "lr": lr,
            "max_score_norm": cfg.target_clip_at(self.epoch - 1),
            "num_mc_samples": cfg.mc_samples_at(self.epoch - 1),
            "wall_s": self.wall_s,
            "energy_calls": self.energy_calls,
            "train_s": train_s,
            "dem_target_s": dem_s,
            "generate_s": generate_s,
            "eval_s": eval_s,
            "buffer": self.buffer.len(),
            "dem_mean_ess": ess_sum / n,
            "dem_clipped_per_point": clipped as f64 / (n * cfg.batch_size as f64),
        });
        if let Some(m) = &metrics {
            for (k, v) in m {
                line[format!("val_{k}")] = json!(v);
            }
        }
        let mpath = self.dir.join("metrics.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&mpath)
            .and_then(|mut f| writeln!(f, "{line}").map(|_| f))
            .map_err(|e| Error::Io {
                path: mpath.clone(),
                msg: format!("cannot append metrics: {e}"),
            })?;
        let _ = f.flush();
        Ok(EpochRecord {
            epoch: self.epoch,
            loss: loss_sum / n,
            metrics,
        })
    }

    /// Train the remaining epochs (up to `epochs`), showing a progress bar on stderr unless
    /// `quiet` (the CLI's and the Python package's). `after_epoch` runs after every epoch (e.g.
    /// to honour an interrupt) and stops the run with its error. On an error the last
    /// checkpoint is intact and the run can be resumed.
    pub fn run_to_end(
        &mut self,
        quiet: bool,
        mut after_epoch: impl FnMut(&EpochRecord) -> Result<()>,
    ) -> Result<()> {
        use indicatif::{ProgressBar, ProgressStyle};
        let epochs = self.cfg().epochs;
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(epochs as u64)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} epoch {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .expect("valid template"),
        );
        bar.set_position(self.epoch as u64);
        let mut last_w2 = f64::NAN;
        while self.epoch < epochs {
            let rec = match self.run_epoch() {
                Ok(r) => r,
                Err(e) => {
                    bar.abandon();
                    return Err(e);
                }
            };
            if let Some(w) = rec.metrics.as_ref().and_then(|m| m.get("w2")) {
                last_w2 = *w;
            }
            bar.set_position(rec.epoch as u64);
            bar.set_message(format!("loss {:.4} val W2 {:.3}", rec.loss, last_w2));
            if let Err(e) = after_epoch(&rec) {
                bar.abandon();
                return Err(e);
            }
        }
        bar.finish();
        Ok(())
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Cumulative training wall time (s) and energy calls.
    pub fn totals(&self) -> (f64, u64) {
        (self.wall_s, self.energy_calls)
    }
    /// Whether the run has validation data (metrics, best checkpoint, final evaluation).
    pub fn has_validation(&self) -> bool {
        self.validation.is_some()
    }
    /// Best validation W2 so far.
    pub fn best_w2(&self) -> f64 {
        self.best_w2
    }
}
