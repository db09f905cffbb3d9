//! PIS, the Path Integral Sampler (Zhang & Chen 2022), as the published DEM repository runs it
//! (`dem/models/pis_module.py`): the controlled SDE dX = σ·u_θ(X, t)dt + σ dW on [0, T] from
//! X_0 = 0, trained on the path-space KL ½∫|u|²dt + log N(X_T; 0, σ²T) − log p̃(X_T) with
//! gradients through the Euler–Maruyama steps; the target-informed control
//! u = f_θ(x, t) + g_θ(t)·∇log p(x) as an option (`path.target_informed`). The chain and the
//! objective are `controlled_sde`'s ([`Chain::pis`]).

use super::{simulation_step, Method, Seeds, StepOutput};
use crate::config::TrainConfig;
use crate::controlled_sde::Chain;
use crate::error::Result;
use crate::model::ScoreModel;

/// The PIS method.
pub struct Pis {
    chain: Chain,
}

impl Pis {
    /// PIS with `cfg.path`.
    pub fn new(cfg: &TrainConfig) -> Self {
        Self {
            chain: Chain::pis(&cfg.path),
        }
    }
}

impl Method for Pis {
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
