//! DDS, the Denoising Diffusion Sampler (Vargas, Grathwohl & Doucet 2023): the time reversal of
//! an Ornstein–Uhlenbeck process that takes p to N(0, σ²I), learned as a control of the reversed
//! reference chain from N(0, σ²I), with the cosine noise schedule and the exponential integrator
//! or Euler (`path.integrator`); trained on its path-space KL with gradients through the steps.
//! The target-informed control f_θ(x, t) + g_θ(t)·∇log p(x) is an option, as in PIS. The chain and
//! the objective are `controlled_sde`'s ([`Chain::dds`]).

use super::{simulation_step, Method, Seeds, StepOutput};
use crate::config::TrainConfig;
use crate::controlled_sde::Chain;
use crate::error::Result;
use crate::model::ScoreModel;

/// The DDS method.
pub struct Dds {
    chain: Chain,
}

impl Dds {
    /// DDS with `cfg.path`.
    pub fn new(cfg: &TrainConfig) -> Self {
        Self {
            chain: Chain::dds(&cfg.path),
        }
    }
}

impl Method for Dds {
    fn init(&mut self, _model: &ScoreModel, _seeds: Seeds) -> Result<()> {
        Ok(())
    }

    fn step(
        &mut self,
        model: &ScoreModel,
        seeds: Seeds,
        epoch: usize,
        step: usize,
    ) -> Result<StepOutput> {
        simulation_step(model, &self.chain, seeds, epoch, step)
    }
}
