//! A score model bound to its target and configuration: the reusable, trained sampler.
//! Loaded from a run directory by `idem sample`, owned by the trainer during training.

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::config::{Mode, TrainConfig};
use crate::controlled_sde::{self, Chain, Control, PathStats};
use crate::energy::Target;
use crate::error::{Error, Result};
use crate::importance_resampling::{self, Reweighting};
use crate::io::checkpoint;
use crate::net::time_cond::TimeCond;
use crate::net::{Net, Params, ScoreNet};
use crate::noise_schedule::NoiseSchedule;
use crate::refine::{self, Refinement};
use crate::reverse_sde::{self, SdeConfig};
use crate::rng::stream;

/// `x` (rows of `mean.len()` values) plus `mean` per row; `x` itself when `mean` is empty.
pub fn shifted(x: &[f32], mean: &[f64]) -> Vec<f32> {
    if mean.is_empty() {
        return x.to_vec();
    }
    x.chunks(mean.len())
        .flat_map(|r| r.iter().zip(mean).map(|(&v, &m)| (f64::from(v) + m) as f32))
        .collect()
}

/// The configuration saved in a run directory (`config.toml`).
pub fn read_run_config(run: &Path) -> Result<TrainConfig> {
    let cfg_path = run.join("config.toml");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::Io {
        path: cfg_path.clone(),
        msg: format!("not a run directory (cannot read its configuration): {e}"),
    })?;
    TrainConfig::from_toml(&text)
}

/// The target of the run in `dir`: `given` (checked to be the one the run was trained on), or the
/// built-in target the configuration names (an error naming the run for a user's target).
pub fn run_target(cfg: &TrainConfig, dir: &Path, given: Option<Target>) -> Result<Target> {
    let target = match given {
        Some(t) => t,
        None => Target::by_name(&cfg.target).map_err(|_| {
            Error::Config(format!(
                "the run in {} was trained on `{}`, which is not a built-in target: pass that \
                 target to load or resume it",
                dir.display(),
                cfg.target
            ))
        })?,
    };
    check_target(cfg, &target)?;
    Ok(target)
}

/// A target given for a run must be the one it was trained on: same name.
pub fn check_target(cfg: &TrainConfig, target: &Target) -> Result<()> {
    if !cfg.target.eq_ignore_ascii_case(&target.name()) {
        return Err(Error::Config(format!(
            "the run was trained on `{}`, not on `{}`",
            cfg.target,
            target.name()
        )));
    }
    Ok(())
}

/// What the sampling options did in [`ScoreModel::sample`] (`None`: off).
#[derive(Clone, Debug, Default)]
pub struct SampleOptions {
    pub reweighting: Option<Reweighting>,
    pub refinement: Option<Refinement>,
    /// PIS / DDS: the importance weights of the sampler's paths.
    pub paths: Option<PathImportance>,
}

/// The importance weights p̃(x_K)·Q/P_θ of PIS / DDS paths, in target coordinates: log Z
/// (log-mean-exp of the log weights), the ELBO (their mean) and the normalised ESS.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PathImportance {
    pub log_z: f64,
    pub elbo: f64,
    pub ess: f64,
    pub paths: usize,
}

/// Network + configuration + target.
pub struct ScoreModel {
    pub cfg: TrainConfig,
    pub target: Target,
    pub params: Params,
    pub net: Net,
    /// `net` on detached weights, for generation (no backward graph is built).
    pub infer: Net,
    /// PIS / DDS with `path.target_informed`: the time conditioner g_θ(t) of the control.
    pub tnet: Option<TimeCond>,
    pub device: Device,
}

impl ScoreModel {
    /// A freshly initialised model of the built-in target `cfg.target` (weights from `cfg.seed`).
    pub fn new(cfg: &TrainConfig, device: &Device) -> Result<Self> {
        Self::with_target(cfg, Target::by_name(&cfg.target)?, device)
    }

    /// A freshly initialised model of any target, e.g. a user's [`crate::energy::BatchEnergy`]
    /// or [`crate::Energy`] (`cfg.target` is then just its name).
    pub fn with_target(cfg: &TrainConfig, target: Target, device: &Device) -> Result<Self> {
        if !cfg.prior_mean.is_empty()
            && (cfg.prior_mean.len() != target.dim() || target.particles().is_some())
        {
            return Err(Error::Config(format!(
                "prior_mean has {} values for a {}-dimensional target{}",
                cfg.prior_mean.len(),
                target.dim(),
                if target.particles().is_some() {
                    " (particle systems are mean-free: leave it empty)"
                } else {
                    ""
                }
            )));
        }
        let mut params = Params::new(device);
        let net = Net::new(
            &mut params,
            target.dim(),
            target.particles(),
            &cfg.net,
            &mut stream(cfg.seed, 0x1417),
        )?;
        let tnet = if !cfg.mode.is_dem() && cfg.path.target_informed {
            Some(TimeCond::new(
                &mut params,
                64,
                3,
                &mut stream(cfg.seed, 0x7E7),
            )?)
        } else {
            None
        };
        Ok(Self {
            cfg: cfg.clone(),
            target,
            params,
            infer: net.detached(),
            net,
            tnet,
            device: device.clone(),
        })
    }

    /// The model of a run directory: its `config.toml` and the weights of checkpoint `file`
    /// (`best.safetensors` or `checkpoint.safetensors`); EMA weights when the run used an EMA.
    /// The target is the built-in one named in the configuration.
    pub fn load(run: &Path, file: &str, device: &Device) -> Result<Self> {
        Self::load_with(run, file, None, device)
    }

    /// As [`ScoreModel::load`], with the run's target given (needed for a user's target, which
    /// a run directory records only by name; `None`: the built-in target of that name).
    pub fn load_with(
        run: &Path,
        file: &str,
        target: Option<Target>,
        device: &Device,
    ) -> Result<Self> {
        let cfg = read_run_config(run)?;
        let target = run_target(&cfg, run, target)?;
        let model = Self::with_target(&cfg, target, device)?;
        let tensors = checkpoint::load(&run.join(file), device)?;
        let prefix = if cfg.ema_decay > 0.0 { "ema." } else { "net." };
        model.params.load_from(&tensors, prefix)?;
        Ok(model)
    }

    /// Set the network's weights to the sampling weights of another run (`init_from`): `source`
    /// is a run directory (its `best.safetensors`, else `checkpoint.safetensors`) or a checkpoint
    /// file; its EMA weights are taken when it kept an average, else its trained weights. Every
    /// tensor must exist with this network's shape (a clear error names the first that does
    /// not).
    pub fn init_weights_from(&self, source: &Path) -> Result<()> {
        let file = if source.is_dir() {
            ["best.safetensors", "checkpoint.safetensors"]
                .iter()
                .map(|f| source.join(f))
                .find(|f| f.is_file())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "init_from: {} holds neither best.safetensors nor checkpoint.safetensors",
                        source.display()
                    ))
                })?
        } else if source.is_file() {
            source.to_path_buf()
        } else {
            return Err(Error::Config(format!(
                "init_from: {} is neither a run directory nor a checkpoint file",
                source.display()
            )));
        };
        let tensors = checkpoint::load(&file, &self.device)?;
        let prefix = if tensors.keys().any(|k| k.starts_with("ema.")) {
            "ema."
        } else {
            "net."
        };
        self.params.load_from(&tensors, prefix).map_err(|e| {
            Error::Config(format!(
                "init_from {}: {e} (the network settings must match the source run's)",
                file.display()
            ))
        })
    }

    /// Network coordinates → target coordinates factor.
    pub fn scale(&self) -> f64 {
        self.cfg.data_scale
    }

    /// The network's score at points `x` (network coordinates) and one time `t`.
    pub fn score(&self, x: &[f32], t: f32) -> Result<Vec<f32>> {
        let dim = self.target.dim();
        let n = x.len() / dim;
        let xt = Tensor::from_slice(x, (n, dim), &self.device)?;
        let tt = Tensor::full(t, n, &self.device)?;
        Ok(self
            .infer
            .forward(&xt, &tt)?
            .detach()
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    /// The control of a PIS / DDS model (`tracked`: on the trainable weights, building a graph;
    /// else on detached ones).
    pub fn control<'a>(&'a self, tracked: bool, tnet: Option<&'a TimeCond>) -> Control<'a> {
        Control {
            net: if tracked { &self.net } else { &self.infer },
            tnet,
            target: &self.target,
            scale: self.scale(),
            grad_clip: self.cfg.path.grad_clip,
            device: &self.device,
        }
    }

    /// The reference chain of a PIS / DDS model; `None` for iDEM / pDEM.
    pub fn chain(&self) -> Option<Chain> {
        match self.cfg.mode {
            Mode::Pis => Some(Chain::pis(&self.cfg.path)),
            Mode::Dds => Some(Chain::dds(&self.cfg.path)),
            Mode::Idem | Mode::Pdem => None,
        }
    }

    /// The importance summary of paths drawn by [`Self::generate_paths`] (target coordinates:
    /// + D·ln `data_scale`, D the density's dimension).
    pub fn path_importance(&self, st: &PathStats) -> PathImportance {
        let d = controlled_sde::density_dim(self.target.dim(), self.target.particles()) as f64;
        let shift = d * self.scale().ln();
        let (log_z, ess) = st.log_z_ess();
        let lw = st.log_weights();
        PathImportance {
            log_z: log_z + shift,
            elbo: lw.iter().sum::<f64>() / lw.len() as f64 + shift,
            ess,
            paths: lw.len(),
        }
    }

    /// The sampler's `n` samples in target coordinates as the final samples are drawn (the
    /// reverse SDE with [`TrainConfig::final_sde`]; PIS / DDS: their chain, with the paths'
    /// importance summary).
    pub fn final_samples(&self, n: usize, seed: u64) -> Result<(Vec<f32>, Option<PathImportance>)> {
        if self.cfg.mode.is_dem() {
            return Ok((self.generate(n, seed, &self.cfg.final_sde(), 1000)?, None));
        }
        let (x, st) = self.generate_paths(n, seed, 1000)?;
        let s = self.scale();
        let x = x.iter().map(|&v| (f64::from(v) * s) as f32).collect();
        Ok((x, Some(self.path_importance(&st))))
    }

    /// `n` samples of a PIS / DDS model's controlled SDE (network coordinates) in batches of
    /// `batch` paths, with the paths' statistics (log weights: [`PathStats::log_z_ess`]).
    pub fn generate_paths(
        &self,
        n: usize,
        seed: u64,
        batch: usize,
    ) -> Result<(Vec<f32>, PathStats)> {
        let chain = self
            .chain()
            .ok_or_else(|| Error::Config("not a PIS / DDS model".into()))?;
        let tnet = self.tnet.as_ref().map(TimeCond::detached);
        let ctl = self.control(false, tnet.as_ref());
        let mut out = Vec::with_capacity(n * self.target.dim());
        let mut all = PathStats::default();
        let mut b = 0u64;
        while out.len() < n * self.target.dim() {
            let m = batch.min(n - out.len() / self.target.dim());
            let s = crate::rng::mix64(seed ^ b.wrapping_mul(0x9E37_79B9));
            let (x, st) = controlled_sde::sample(&ctl, &chain, m, s)?;
            out.extend_from_slice(&x);
            all.running.extend(st.running);
            all.stochastic.extend(st.stochastic);
            all.log_ref.extend(st.log_ref);
            all.log_p.extend(st.log_p);
            b += 1;
        }
        Ok((out, all))
    }

    /// `n` samples from the reverse SDE of the network (iDEM, pDEM; PIS and DDS: their
    /// controlled SDE, `sde` unused), in **network** coordinates, generated in batches of
    /// `batch` points (noise keyed by `seed` and the batch index).
    pub fn generate_scaled(
        &self,
        n: usize,
        seed: u64,
        sde: &SdeConfig,
        batch: usize,
    ) -> Result<Vec<f32>> {
        if !self.cfg.mode.is_dem() {
            return Ok(self.generate_paths(n, seed, batch)?.0);
        }
        let dim = self.target.dim();
        let schedule: NoiseSchedule = self.cfg.schedule;
        let scale = self.scale();
        let target = &self.target;
        let mut out = Vec::with_capacity(n * dim);
        let mut b = 0u64;
        // a prior N(m, h(1)I): the SDE runs on x − m (same dynamics, shifted), m added back
        let shift = |x: &[f32]| -> Vec<f32> { shifted(x, &self.cfg.prior_mean) };
        while out.len() < n * dim {
            let m = batch.min(n - out.len() / dim);
            let mut score = |x: &[f32], t: f32| self.score(&shift(x), t);
            // ∇_y log p(s·y) = s·∇log p(s·y) for the negative-time steps
            let mut grad = |x: &[f32]| -> Result<Vec<f32>> {
                let x = shift(x);
                let xd: Vec<f32> = x.iter().map(|v| (f64::from(*v) * scale) as f32).collect();
                let mut lp = vec![0.0f32; m];
                let mut g = vec![0.0f32; x.len()];
                target.log_prob_grad_batch(&xd, &mut lp, &mut g)?;
                Ok(g.iter().map(|v| (f64::from(*v) * scale) as f32).collect())
            };
            let xs = reverse_sde::generate(
                &mut score,
                Some(&mut grad),
                &schedule,
                sde,
                m,
                dim,
                self.target.particles(),
                crate::rng::mix64(seed ^ b.wrapping_mul(0x9E37_79B9)),
            )?;
            out.extend_from_slice(&shift(&xs));
            b += 1;
        }
        Ok(out)
    }

    /// `n` samples in the **target's** coordinates.
    pub fn generate(&self, n: usize, seed: u64, sde: &SdeConfig, batch: usize) -> Result<Vec<f32>> {
        let s = self.scale();
        Ok(self
            .generate_scaled(n, seed, sde, batch)?
            .into_iter()
            .map(|v| (f64::from(v) * s) as f32)
            .collect())
    }

    /// `n` final samples (target coordinates) as `idem sample` draws them: the reverse SDE with
    /// [`TrainConfig::final_sde`], then the importance-resampling option (`reweight_proposals`),
    /// then the refinement option (`refine_steps`) — MALA steps after resampling also spread the
    /// resampled duplicates (resample-move). Returns the options' reports.
    pub fn sample(&self, n: usize, seed: u64) -> Result<(Vec<f32>, SampleOptions)> {
        self.sample_with_progress(n, seed, |_, _, _| {})
    }

    /// [`Self::sample`], reporting the importance-resampling option's stages to
    /// `progress(stage, done, total)` (its CNF fit takes minutes; see [`crate::progress`]).
    pub fn sample_with_progress(
        &self,
        n: usize,
        seed: u64,
        progress: impl FnMut(&str, usize, usize),
    ) -> Result<(Vec<f32>, SampleOptions)> {
        let (mut x, paths) = self.final_samples(n, seed)?;
        let mut done = SampleOptions {
            paths,
            ..SampleOptions::default()
        };
        if let Some((r, rep)) = self.reweight(&x, seed, progress)? {
            x = r;
            done.reweighting = Some(rep);
        }
        if let Some((r, rep)) = self.refine(&x, seed)? {
            x = r;
            done.refinement = Some(rep);
        }
        Ok((x, done))
    }

    /// The refinement option (`refine_steps`, [`crate::refine`]) applied to samples `x` (target
    /// coordinates) drawn with `seed`: `None` when it is off.
    pub fn refine(&self, x: &[f32], seed: u64) -> Result<Option<(Vec<f32>, Refinement)>> {
        if self.cfg.refine_steps == 0 {
            return Ok(None);
        }
        let seed = crate::rng::mix64(seed ^ 0x2EF1);
        refine::refine(&self.target, x, self.cfg.refine_steps, seed).map(Some)
    }

    /// The importance-resampling option (`reweight_proposals`,
    /// [`crate::importance_resampling`]) applied to samples `x` (target coordinates) drawn with
    /// `seed`: `None` when it is off.
    pub fn reweight(
        &self,
        x: &[f32],
        seed: u64,
        progress: impl FnMut(&str, usize, usize),
    ) -> Result<Option<(Vec<f32>, Reweighting)>> {
        if self.cfg.reweight_proposals == 0 {
            return Ok(None);
        }
        importance_resampling::reweight(
            &self.target,
            x,
            self.cfg.reweight_proposals,
            self.cfg.reweight_cnf_steps,
            crate::rng::mix64(seed ^ 0x1EB),
            &self.device,
            progress,
        )
        .map(Some)
    }
}
