//! The trainer: the epoch loop shared by every training method ([`crate::method`]: iDEM, pDEM,
//! PIS, DDS).
//!
//! One epoch = `steps_per_epoch` gradient steps — the method computes its loss's gradients, the
//! trainer applies Adam with global gradient-norm clipping, the optional EMA and the LR schedule —
//! then, for a method that consumes them (iDEM: its replay buffer), `samples_per_epoch` samples of
//! the model, then (every `eval_every` epochs) validation. Samples come from the model's own
//! sampler ([`ScoreModel::generate_scaled`]: the reverse SDE of the score network for iDEM/pDEM,
//! the controlled SDE for PIS/DDS). Each epoch takes its LR from the config (`lr_at`) and the
//! method its per-epoch settings (a final stage's clips and K, config docs).
//!
//! A non-finite loss, gradient or sample stops the run with an error (the last checkpoint stays).
//! The run directory holds `config.toml`, `metrics.jsonl` (one line per epoch), `checkpoint.safetensors`
//! (latest, every epoch, atomic), `best.safetensors` (best validation W2), `samples.npy` and plots.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde_json::json;

use crate::config::TrainConfig;
use crate::energy::{Gmm, Target};
use crate::error::{Error, Result};
use crate::eval::{self, Metrics};
use crate::io::{checkpoint, npy};
use crate::method::{self, Diagnostics, Method, Seeds};
use crate::model::ScoreModel;
use crate::net::optim::{Adam, Ema};
use crate::reverse_sde::SdeConfig;
use crate::rng::stream;

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
    method: Box<dyn Method>,
    adam: Adam,
    ema: Option<Ema>,
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
        if !cfg.init_from.is_empty() {
            t.model.init_weights_from(Path::new(&cfg.init_from))?;
            // the average starts at the loaded weights
            if let Some(e) = t.ema.as_mut() {
                *e = Ema::new(&t.model.params, e.decay)?;
            }
        }
        npy::write_atomic(&dir.join("config.toml"), cfg.to_toml().as_bytes())?;
        let _ = std::fs::remove_file(dir.join("metrics.jsonl"));
        t.method.init(&t.model, t.seeds())?;
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
            t.method.init(&t.model, t.seeds())?;
            return Ok(t);
        }
        let tensors = checkpoint::load(&ck, device)?;
        t.model.params.load_from(&tensors, "net.")?;
        t.adam.load_from(&tensors)?;
        if let Some(e) = t.ema.as_mut() {
            e.load_from(&t.model.params, &tensors)?;
        }
        t.method.load(&tensors)?;
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
        let method = method::build(cfg, &model)?;
        let adam = Adam::new(&model.params)?;
        let ema = if cfg.ema_decay > 0.0 {
            Some(Ema::new(&model.params, cfg.ema_decay)?)
        } else {
            None
        };
        let validation = validation_set(cfg, &model.target)?;
        Ok(Self {
            model,
            method,
            adam,
            ema,
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

    /// The run's seeds: independent streams per (purpose, epoch, step), reproducible across
    /// resumes.
    fn seeds(&self) -> Seeds {
        Seeds(self.cfg().seed)
    }

    fn seed(&self, purpose: u64, epoch: usize, step: usize) -> u64 {
        self.seeds().get(purpose, epoch, step)
    }

    /// One gradient step: the method's gradients, Adam (with clipping) and the EMA; returns the
    /// loss, the gradient norm and the method's diagnostics.
    fn step(&mut self, step: usize, lr: f64) -> Result<(f64, f64, Diagnostics)> {
        let out = self
            .method
            .step(&self.model, self.seeds(), self.epoch, step)?;
        if !out.loss.is_finite() {
            return Err(Error::Diverged(format!(
                "loss is {} at epoch {}, step {step}",
                out.loss,
                self.epoch + 1
            )));
        }
        let cfg = self.cfg();
        let clip = (cfg.max_grad_norm > 0.0).then_some(cfg.max_grad_norm);
        let info = self.adam.step(&out.grads, lr, clip)?;
        if let Some(e) = self.ema.as_mut() {
            e.update()?;
        }
        Ok((out.loss, info.grad_norm, out.diagnostics))
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
        t.extend(self.method.to_tensors()?);
        t.push(checkpoint::scalar("state.epoch", self.epoch as f64)?);
        t.push(checkpoint::scalar("state.wall_s", self.wall_s)?);
        t.push(checkpoint::scalar(
            "state.energy_calls",
            self.energy_calls as f64,
        )?);
        t.push(checkpoint::scalar("state.best_w2", self.best_w2)?);
        Ok(t)
    }

    /// Train one epoch: steps, generation into the buffer, validation, checkpoint, metrics line.
    pub fn run_epoch(&mut self) -> Result<EpochRecord> {
        let start = Instant::now();
        let calls0 = self.model.target.calls();
        let cfg = self.cfg().clone();
        let lr = cfg.lr_at(self.epoch);
        self.method.begin_epoch(&cfg, self.epoch);
        let sde = cfg.sde_at(self.epoch);
        let (mut loss_sum, mut gn_sum) = (0.0, 0.0);
        let mut diag: Diagnostics = Vec::new();
        for step in 0..cfg.steps_per_epoch {
            let (l, g, d) = self.step(step, lr)?;
            loss_sum += l;
            gn_sum += g;
            if diag.is_empty() {
                diag = d;
            } else {
                diag.iter_mut().zip(d).for_each(|(a, b)| a.1 += b.1);
            }
        }
        let train_s = start.elapsed().as_secs_f64();
        // training's energy calls: the steps', and the generation's when the method trains on
        // its samples (iDEM); samples drawn only to validate are not a training cost
        let mut calls = self.model.target.calls() - calls0;
        let calls_gen0 = self.model.target.calls();
        let gen_start = Instant::now();
        let next = self.epoch + 1;
        let due = (next.is_multiple_of(cfg.eval_every) || next == cfg.epochs)
            && self.validation.is_some();
        // pDEM, PIS and DDS do not train on their samples: they are only needed to evaluate
        let every = self.method.generates_every_epoch();
        let samples = if every || due {
            self.generate(cfg.samples_per_epoch, self.seed(6, self.epoch, 0), &sde)?
        } else {
            Vec::new()
        };
        if every {
            self.method.end_epoch(&samples)?;
        }
        let generate_s = gen_start.elapsed().as_secs_f64();
        if every {
            calls += self.model.target.calls() - calls_gen0;
        }
        self.epoch = next;
        let eval_start = Instant::now();
        let metrics = if due {
            let eval_target = self.model.target.clone(); // its own counter: not a training cost
            let mut s = self.to_target_coords(&samples);
            let n_val = match cfg.validation_samples {
                0 => cfg.eval_samples,
                n => n,
            };
            if samples.len() / self.model.target.dim() < n_val {
                let seed = self.seed(7, self.epoch, 0);
                let more = self.generate(n_val, seed, &sde)?;
                s = self.to_target_coords(&more);
            }
            let validation = self.validation.as_deref().unwrap_or_default();
            Some(eval::evaluate(&eval_target, &s, validation)?)
        } else {
            None
        };
        let eval_s = eval_start.elapsed().as_secs_f64();
        self.wall_s += start.elapsed().as_secs_f64();
        self.energy_calls += calls;
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
            "generate_s": generate_s,
            "eval_s": eval_s,
            "buffer": self.method.buffer_len(),
        });
        for (k, v) in diag {
            line[k] = json!(if k.ends_with("_s") { v } else { v / n });
        }
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
