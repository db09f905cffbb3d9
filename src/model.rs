//! A score model bound to its target and configuration: the reusable, trained sampler.
//! Loaded from a run directory by `idem sample`, owned by the trainer during training.

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::config::TrainConfig;
use crate::energy::Target;
use crate::error::{Error, Result};
use crate::io::checkpoint;
use crate::net::{Net, Params, ScoreNet};
use crate::noise_schedule::NoiseSchedule;
use crate::reverse_sde::{self, SdeConfig};
use crate::rng::stream;

/// Network + configuration + target.
pub struct ScoreModel {
    pub cfg: TrainConfig,
    pub target: Target,
    pub params: Params,
    pub net: Net,
    /// `net` on detached weights, for generation (no backward graph is built).
    pub infer: Net,
    pub device: Device,
}

impl ScoreModel {
    /// A freshly initialised model (weights from `cfg.seed`).
    pub fn new(cfg: &TrainConfig, device: &Device) -> Result<Self> {
        let target = Target::by_name(&cfg.target)?;
        let mut params = Params::new(device);
        let net = Net::new(
            &mut params,
            target.dim(),
            target.particles(),
            &cfg.net,
            &mut stream(cfg.seed, 0x1417),
        )?;
        Ok(Self {
            cfg: cfg.clone(),
            target,
            params,
            infer: net.detached(),
            net,
            device: device.clone(),
        })
    }

    /// The model of a run directory: its `config.toml` and the weights of checkpoint `file`
    /// (`best.safetensors` or `checkpoint.safetensors`); EMA weights when the run used an EMA.
    pub fn load(run: &Path, file: &str, device: &Device) -> Result<Self> {
        let cfg_path = run.join("config.toml");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::Io {
            path: cfg_path.clone(),
            msg: format!("cannot read the run's configuration: {e}"),
        })?;
        let cfg = TrainConfig::from_toml(&text)?;
        let model = Self::new(&cfg, device)?;
        let tensors = checkpoint::load(&run.join(file), device)?;
        let prefix = if cfg.ema_decay > 0.0 { "ema." } else { "net." };
        model.params.load_from(&tensors, prefix)?;
        Ok(model)
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

    /// `n` samples from the reverse SDE of the network, in **network** coordinates, generated
    /// in batches of `batch` points (noise keyed by `seed` and the batch index).
    pub fn generate_scaled(
        &self,
        n: usize,
        seed: u64,
        sde: &SdeConfig,
        batch: usize,
    ) -> Result<Vec<f32>> {
        let dim = self.target.dim();
        let schedule: NoiseSchedule = self.cfg.schedule;
        let scale = self.scale();
        let target = &self.target;
        let mut out = Vec::with_capacity(n * dim);
        let mut b = 0u64;
        while out.len() < n * dim {
            let m = batch.min(n - out.len() / dim);
            let mut score = |x: &[f32], t: f32| self.score(x, t);
            // ∇_y log p(s·y) = s·∇log p(s·y) for the negative-time steps
            let mut grad = |x: &[f32]| -> Result<Vec<f32>> {
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
            out.extend_from_slice(&xs);
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
}
