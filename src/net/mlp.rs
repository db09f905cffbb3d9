//! The reference's GMM score network (`MyMLP` in DEM): every input coordinate and the time get a
//! sinusoidal embedding, concatenated, then Linear → GELU, residual blocks h ← h + GELU(Linear(h)),
//! and a linear output layer.
//!
//! Sinusoidal embedding of a scalar v with scale s and size E (half = E/2):
//! emb(v) = [sin(s·v·f_k), cos(s·v·f_k)], f_k = exp(−k·ln(10⁴)/(half − 1)), k = 0..half−1.
//! The reference uses s = 25 for coordinates (in its normalised units) and s = 1 for time.

use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};

use super::init::Linear;
use super::{Params, ScoreNet};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// MLP hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Width of the hidden layers.
    pub hidden: usize,
    /// Residual blocks after the input layer.
    pub layers: usize,
    /// Size of each sinusoidal embedding (even).
    pub emb_size: usize,
    /// Scale s of the coordinates' embedding.
    pub x_emb_scale: f64,
    /// Scale s of the time embedding.
    pub t_emb_scale: f64,
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self {
            hidden: 128,
            layers: 3,
            emb_size: 128,
            x_emb_scale: 25.0,
            t_emb_scale: 1.0,
        }
    }
}

/// The MLP score network.
#[derive(Clone, Debug)]
pub struct Mlp {
    cfg: MlpConfig,
    dim: usize,
    /// f_k, `[1, 1, half]`.
    freqs: Tensor,
    input: Linear,
    blocks: Vec<Linear>,
    output: Linear,
}

impl Mlp {
    /// The network on detached weights (see [`Linear::detached`]).
    pub fn detached(&self) -> Self {
        Self {
            cfg: self.cfg.clone(),
            dim: self.dim,
            freqs: self.freqs.clone(),
            input: self.input.detached(),
            blocks: self.blocks.iter().map(Linear::detached).collect(),
            output: self.output.detached(),
        }
    }

    /// A freshly initialised network for `dim` coordinates, its parameters added to `params`.
    pub fn new(params: &mut Params, dim: usize, cfg: &MlpConfig, rng: &mut Rng) -> Result<Self> {
        if cfg.emb_size < 4 || cfg.emb_size % 2 != 0 || cfg.hidden == 0 {
            return Err(Error::Config(format!(
                "MLP needs an even embedding size ≥ 4 and a positive width, got {cfg:?}"
            )));
        }
        let half = cfg.emb_size / 2;
        let freqs: Vec<f32> = (0..half)
            .map(|k| (-(k as f64) * 10_000f64.ln() / (half as f64 - 1.0)).exp() as f32)
            .collect();
        let device = params.device().clone();
        let freqs = Tensor::from_vec(freqs, (1, 1, half), &device)?;
        let n_in = (dim + 1) * cfg.emb_size;
        let input = Linear::new(params, "mlp.input", n_in, cfg.hidden, 1.0, rng)?;
        let blocks = (0..cfg.layers)
            .map(|i| {
                Linear::new(
                    params,
                    &format!("mlp.block{i}"),
                    cfg.hidden,
                    cfg.hidden,
                    1.0,
                    rng,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let output = Linear::new(params, "mlp.output", cfg.hidden, dim, 1.0, rng)?;
        Ok(Self {
            cfg: cfg.clone(),
            dim,
            freqs,
            input,
            blocks,
            output,
        })
    }

    /// Sinusoidal embedding of `v` `[B, m]` with scale `s`: `[B, m·emb_size]`.
    fn embed(&self, v: &Tensor, s: f64) -> candle_core::Result<Tensor> {
        let (b, m) = v.dims2()?;
        let arg = (v.unsqueeze(2)? * s)?.broadcast_mul(&self.freqs)?;
        Tensor::cat(&[arg.sin()?, arg.cos()?], D::Minus1)?.reshape((b, m * self.cfg.emb_size))
    }
}

impl ScoreNet for Mlp {
    fn forward(&self, x: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
        let b = x.dim(0)?;
        debug_assert_eq!(x.dim(1)?, self.dim);
        let ex = self.embed(x, self.cfg.x_emb_scale)?;
        let et = self.embed(&t.reshape((b, 1))?, self.cfg.t_emb_scale)?;
        let mut h = self
            .input
            .forward(&Tensor::cat(&[ex, et], 1)?)?
            .gelu_erf()?;
        for blk in &self.blocks {
            h = (&h + blk.forward(&h)?.gelu_erf()?)?;
        }
        self.output.forward(&h)
    }
}

/// The device-independent f32 dtype used by the networks.
pub const DTYPE: DType = DType::F32;

/// `[B, dim]` f32 tensor from a slice.
pub fn tensor2(data: &[f32], dim: usize, device: &Device) -> candle_core::Result<Tensor> {
    Tensor::from_slice(data, (data.len() / dim, dim), device)
}
