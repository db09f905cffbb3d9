//! pDEM: the DEM score regression on points drawn from the prior N(m, h(1)I) — no buffer, no
//! generation between epochs (samples are drawn only to validate).

use super::dem_regression::{prior, DemRegression};
use super::{Method, Seeds, StepOutput};
use crate::config::TrainConfig;
use crate::error::Result;
use crate::model::ScoreModel;
use crate::rng::stream;

/// The pDEM method.
pub struct Pdem {
    regression: DemRegression,
}

impl Pdem {
    /// pDEM with `cfg`'s estimator.
    pub fn new(cfg: &TrainConfig) -> Result<Self> {
        Ok(Self {
            regression: DemRegression::new(cfg)?,
        })
    }
}

impl Method for Pdem {
    fn init(&mut self, _model: &ScoreModel, _seeds: Seeds) -> Result<()> {
        Ok(())
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
        let x0 = prior(model, model.cfg.batch_size, seeds.get(3, epoch, step));
        self.regression
            .step(model, x0, &mut rng, seeds, epoch, step)
    }
}
