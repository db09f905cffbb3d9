//! Training methods behind one small interface (think BlackJAX: a method is its `init` and its
//! `step`). The trainer ([`crate::train`]) owns everything they share — the model, Adam with
//! gradient clipping, the EMA, the epoch loop, generation for validation, checkpoints, resume,
//! metrics.jsonl — and asks the method for one thing per step: the gradients of its loss.
//!
//! | method | file | training points | loss |
//! |---|---|---|---|
//! | iDEM | [`idem`] | replay buffer of the model's own samples | DEM score regression |
//! | pDEM | [`pdem`] | the prior | DEM score regression |
//! | PIS | [`pis`] | simulated paths from the origin | path-space KL ([`Simulated`]) |
//! | DDS | [`dds`] | simulated paths from N(0, σ²I) | path-space KL ([`Simulated`]) |
//!
//! Every random draw of a step comes from [`Seeds`], keyed by (run seed, purpose, epoch, step), so
//! runs are reproducible and resumable exactly.

pub mod dds;
pub mod dem_regression;
pub mod idem;
pub mod pdem;
pub mod pis;

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::Tensor;

use crate::config::{Mode, TrainConfig};
use crate::controlled_sde::{self, Chain};
use crate::error::Result;
use crate::model::ScoreModel;
use crate::net::time_cond::TimeCond;
use crate::rng::mix64;

/// Seeds of a run: independent streams per (purpose, epoch, step).
#[derive(Clone, Copy, Debug)]
pub struct Seeds(pub u64);

impl Seeds {
    /// The seed for (purpose, epoch, step).
    pub fn get(&self, purpose: u64, epoch: usize, step: usize) -> u64 {
        mix64(self.0 ^ mix64((purpose << 56) ^ ((epoch as u64) << 24) ^ step as u64))
    }
}

/// Named per-step diagnostics (see [`StepOutput::diagnostics`]).
pub type Diagnostics = Vec<(&'static str, f64)>;

/// What one step hands the trainer.
pub struct StepOutput {
    /// The loss value (checked for finiteness by the trainer).
    pub loss: f64,
    /// Gradients of the loss with respect to the model's parameters.
    pub grads: GradStore,
    /// Per-step diagnostics, written to metrics.jsonl under these names: names ending in `_s`
    /// (seconds) as the epoch's sum, the others as its mean.
    pub diagnostics: Diagnostics,
}

/// A training method.
pub trait Method: Send {
    /// Prepares a new run (iDEM fills its buffer).
    fn init(&mut self, model: &ScoreModel, seeds: Seeds) -> Result<()>;
    /// Takes epoch `epoch`'s settings (0-based; clips and K of a final stage).
    fn begin_epoch(&mut self, _cfg: &TrainConfig, _epoch: usize) {}
    /// The gradients of one step's loss.
    fn step(
        &mut self,
        model: &ScoreModel,
        seeds: Seeds,
        epoch: usize,
        step: usize,
    ) -> Result<StepOutput>;
    /// Whether the method consumes samples generated after every epoch ([`Method::end_epoch`]);
    /// otherwise the trainer generates only for validation.
    fn generates_every_epoch(&self) -> bool {
        false
    }
    /// The epoch's generated samples (network coordinates; iDEM: into the buffer).
    fn end_epoch(&mut self, _samples: &[f32]) -> Result<()> {
        Ok(())
    }
    /// The method's own state for checkpoints (iDEM: the buffer).
    fn to_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }
    /// Restores [`Method::to_tensors`] from a checkpoint.
    fn load(&mut self, _tensors: &HashMap<String, Tensor>) -> Result<()> {
        Ok(())
    }
    /// Points in the replay buffer (0 without one), reported per epoch.
    fn buffer_len(&self) -> usize {
        0
    }
}

/// A method trained by simulation (PIS, DDS): each step simulates `model.cfg.batch_size` paths of
/// its reference `chain` under the control and back-propagates the path-space KL through them
/// (`controlled_sde`). Diagnostics: the mean running cost, the mean terminal term
/// log N(x_K; 0, τI) − log p̃(x_K), and the batch's log Z estimate (target coordinates) and
/// normalised ESS of its importance weights.
pub struct Simulated {
    chain: Chain,
}

impl Simulated {
    /// The method on reference chain `chain`.
    pub fn new(chain: Chain) -> Self {
        Self { chain }
    }
}

impl Method for Simulated {
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
        let tnet_infer = model.tnet.as_ref().map(TimeCond::detached);
        let ctl = model.control(true, model.tnet.as_ref());
        let infer = model.control(false, tnet_infer.as_ref());
        let (grads, stats) = controlled_sde::loss_and_grads(
            &ctl,
            &infer,
            &model.params,
            &self.chain,
            model.cfg.path.checkpoint_segments,
            model.cfg.batch_size,
            seeds.get(8, epoch, step),
        )?;
        let n = stats.running.len() as f64;
        let (log_z, ess) = stats.log_z_ess();
        let d = controlled_sde::density_dim(model.target.dim(), model.target.particles()) as f64;
        let terminal: f64 = (0..stats.log_p.len())
            .map(|i| stats.log_ref[i] - stats.log_p[i])
            .sum::<f64>()
            / n;
        Ok(StepOutput {
            loss: stats.loss(),
            grads,
            diagnostics: vec![
                ("path_running_cost", stats.running.iter().sum::<f64>() / n),
                ("path_terminal", terminal),
                ("path_log_z", log_z + d * model.cfg.data_scale.ln()),
                ("path_ess", ess),
            ],
        })
    }
}

/// The method of `cfg.mode` for `model`.
pub fn build(cfg: &TrainConfig, model: &ScoreModel) -> Result<Box<dyn Method>> {
    Ok(match cfg.mode {
        Mode::Idem => Box::new(idem::Idem::new(cfg, model)?),
        Mode::Pdem => Box::new(pdem::Pdem::new(cfg)?),
        Mode::Pis => Box::new(pis::pis(cfg)),
        Mode::Dds => Box::new(dds::dds(cfg)),
    })
}
