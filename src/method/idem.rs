//! iDEM (Algorithm 1 of Akhound-Sadegh et al. 2024): the DEM score regression on points drawn
//! uniformly with replacement from a replay buffer, which the trainer refills after every epoch
//! with `samples_per_epoch` samples of the model's reverse SDE. The buffer starts with
//! `num_init_samples` prior samples, or samples of the reverse SDE driven by the Monte-Carlo DEM
//! target itself (`buffer_init = "estimator"`, the reference's default).

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::dem_regression::{prior, DemRegression};
use super::{Method, Seeds, StepOutput};
use crate::config::{BufferInit, TrainConfig};
use crate::error::{Error, Result};
use crate::io::checkpoint;
use crate::model::ScoreModel;
use crate::replay_buffer::ReplayBuffer;
use crate::reverse_sde::{self, SdeConfig};
use crate::rng::stream;

/// The iDEM method: the regression and its buffer.
pub struct Idem {
    regression: DemRegression,
    buffer: ReplayBuffer,
    capacity: usize,
}

impl Idem {
    /// iDEM with `cfg`'s estimator and an empty buffer.
    pub fn new(cfg: &TrainConfig, model: &ScoreModel) -> Result<Self> {
        Ok(Self {
            regression: DemRegression::new(cfg)?,
            buffer: ReplayBuffer::new(model.target.dim(), cfg.buffer_capacity)?,
            capacity: cfg.buffer_capacity,
        })
    }
}

impl Method for Idem {
    fn init(&mut self, model: &ScoreModel, seeds: Seeds) -> Result<()> {
        let cfg = &model.cfg;
        let n = cfg.num_init_samples;
        let seed = seeds.get(1, 0, 0);
        let xs = match cfg.buffer_init {
            BufferInit::Prior => prior(model, n, seed),
            BufferInit::Estimator => {
                let dim = model.target.dim();
                let sde = SdeConfig {
                    max_score_norm: None, // the estimator is clipped already
                    negative_time_steps: 0,
                    ..cfg.sde.clone()
                };
                let mut k = 0usize;
                let mean = cfg.prior_mean.clone();
                let regression = &self.regression;
                let mut score = |x: &[f32], t: f32| {
                    k += 1;
                    let x = crate::model::shifted(x, &mean);
                    Ok(regression
                        .targets(model, &x, &vec![t; x.len() / dim], None, seed ^ k as u64)?
                        .0)
                };
                let xs = reverse_sde::generate(
                    &mut score,
                    None,
                    &cfg.schedule,
                    &sde,
                    n,
                    dim,
                    model.target.particles(),
                    seed,
                )?;
                crate::model::shifted(&xs, &cfg.prior_mean)
            }
        };
        self.buffer.push(&xs)
    }

    fn begin_epoch(&mut self, cfg: &TrainConfig, epoch: usize) {
        self.regression.begin_epoch(cfg, epoch);
    }

    fn step(
        &mut self,
        model: &ScoreModel,
        seeds: Seeds,
        epoch: usize,
        step: usize,
    ) -> Result<StepOutput> {
        let mut rng = stream(seeds.get(2, epoch, step), 0);
        let x0 = self.buffer.sample(model.cfg.batch_size, &mut rng)?;
        self.regression
            .step(model, x0, &mut rng, seeds, epoch, step)
    }

    fn generates_every_epoch(&self) -> bool {
        true
    }

    fn end_epoch(&mut self, samples: &[f32]) -> Result<()> {
        self.buffer.push(samples)
    }

    fn to_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let buf = self.buffer.to_vec();
        let dim = self.buffer.dim();
        Ok(vec![
            (
                "buffer".into(),
                Tensor::from_vec(buf.clone(), (buf.len() / dim, dim), &Device::Cpu)?,
            ),
            checkpoint::scalar("state.buffer_head", self.buffer.head() as f64)?,
        ])
    }

    fn load(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let buf = tensors
            .get("buffer")
            .ok_or_else(|| Error::Config("checkpoint has no replay buffer".into()))?;
        // the ring slot of the next point (absent in checkpoints written before it was saved:
        // those resume with the points in other slots, i.e. other draws from the same set)
        let rows = buf.dim(0)?;
        let head = match tensors.get("state.buffer_head") {
            // a changed capacity refills the ring from slot 0
            Some(_) if rows == self.capacity => {
                checkpoint::get_scalar(tensors, "state.buffer_head")? as usize
            }
            _ => 0,
        };
        self.buffer = ReplayBuffer::restore(
            self.buffer.dim(),
            self.capacity,
            &buf.flatten_all()?.to_vec1::<f32>()?,
            head,
        )?;
        Ok(())
    }

    fn buffer_len(&self) -> usize {
        self.buffer.len()
    }
}
