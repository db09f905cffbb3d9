//! The time-conditioned scalar of the target-informed control (PIS's `NN2(t)`, the reference's
//! `TimeConder(64, 1, 3)`): Fourier features [sin(c_k·t + φ_k), cos(c_k·t + φ_k)] with fixed
//! frequencies c_k = linspace(0.1, 100, channels) and learned phases φ_k, then
//! Linear → (GELU → Linear) × (layers − 1) → GELU → Linear to one output. The last layer starts at
//! weight 0, bias 0.01, so the Langevin term ∇log p starts small.
//!
//! It depends on t alone, so one row is evaluated per time step and broadcast over the batch.

use candle_core::{Device, Tensor};

use super::init::Linear;
use super::Params;
use crate::error::{Error, Result};
use crate::rng::{NormalStream, Rng};

/// The scalar network g_θ(t) of the target-informed control.
#[derive(Clone, Debug)]
pub struct TimeCond {
    coeff: Tensor,
    phase: Tensor,
    layers: Vec<Linear>,
}

impl TimeCond {
    /// A fresh network of width `channels` and `layers` hidden layers, its parameters added to
    /// `params` under `tnet.`.
    pub fn new(params: &mut Params, channels: usize, layers: usize, rng: &mut Rng) -> Result<Self> {
        if channels < 2 || layers == 0 {
            return Err(Error::Config(format!(
                "the time conditioner needs ≥ 2 channels and ≥ 1 layer, got {channels}, {layers}"
            )));
        }
        let device = params.device().clone();
        let coeff: Vec<f32> = (0..channels)
            .map(|k| (0.1 + (100.0 - 0.1) * k as f64 / (channels - 1) as f64) as f32)
            .collect();
        let coeff = Tensor::from_vec(coeff, (1, channels), &device)?;
        let mut phase = vec![0.0f32; channels];
        NormalStream::new(rng_seed(rng), 0).fill(&mut phase);
        let phase = params.insert(
            "tnet.phase",
            Tensor::from_vec(phase, (1, channels), &device)?,
        )?;
        let mut lin = vec![Linear::new(
            params,
            "tnet.layer0",
            2 * channels,
            channels,
            1.0,
            rng,
        )?];
        for i in 1..layers {
            lin.push(Linear::new(
                params,
                &format!("tnet.layer{i}"),
                channels,
                channels,
                1.0,
                rng,
            )?);
        }
        let w = params.insert(
            "tnet.out.weight",
            Tensor::zeros((1, channels), candle_core::DType::F32, &device)?,
        )?;
        let b = params.insert("tnet.out.bias", Tensor::full(0.01f32, 1, &device)?)?;
        lin.push(Linear::from_parts(w, b));
        Ok(Self {
            coeff,
            phase,
            layers: lin,
        })
    }

    /// The same network on detached weights (no backward graph; for generation).
    pub fn detached(&self) -> Self {
        Self {
            coeff: self.coeff.clone(),
            phase: self.phase.detach(),
            layers: self.layers.iter().map(Linear::detached).collect(),
        }
    }

    /// g(t) as a `[1, 1]` tensor.
    pub fn forward(&self, t: f32, device: &Device) -> candle_core::Result<Tensor> {
        let arg = (self.coeff.affine(f64::from(t), 0.0)?.to_device(device)? + &self.phase)?;
        let mut h = Tensor::cat(&[arg.sin()?, arg.cos()?], 1)?;
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h)?;
            if i < last {
                h = h.gelu_erf()?;
            }
        }
        Ok(h)
    }
}

/// A seed for the phases' normal stream drawn from `rng` (so the whole network follows one seed).
fn rng_seed(rng: &mut Rng) -> u64 {
    use rand::RngExt;
    rng.random::<u64>()
}
