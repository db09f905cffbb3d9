//! The reference's GMM score network (`MyMLP` in DEM): every input coordinate and the time get a
//! sinusoidal embedding, concatenated, then Linear → GELU, residual blocks h ← h + GELU(Linear(h)),
//! and a linear output layer.
//!
//! Sinusoidal embedding of a scalar v with scale s and size E (half = E/2):
//! emb(v) = [sin(s·v·f_k), cos(s·v·f_k)], f_k = exp(−k·ln(10⁴)/(half − 1)), k = 0..half−1.
//! The reference uses s = 25 for coordinates (in its normalised units) and s = 1 for time.

use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};

use super::fused;
use super::init::Linear;
use super::mlp_cpu::{MlpCpu, MlpDims};
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

/// The MLP score network. On the CPU, `forward` runs the fused kernels of [`super::mlp_cpu`]
/// as one candle op; elsewhere, or with [`Mlp::composed`], candle ops (the reference the
/// kernels are tested against).
#[derive(Clone, Debug)]
pub struct Mlp {
    cfg: MlpConfig,
    dim: usize,
    /// f_k, `[1, 1, half]`.
    freqs: Tensor,
    input: Linear,
    blocks: Vec<Linear>,
    output: Linear,
    kernel: MlpCpu,
    /// Keep the forward cache for a backward pass (false for the detached twin).
    track: bool,
    composed: bool,
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
            kernel: self.kernel.clone(),
            track: false,
            composed: self.composed,
        }
    }

    /// The same network (shared weights) evaluated with composed candle ops only.
    pub fn composed(&self) -> Self {
        Self {
            composed: true,
            ..self.clone()
        }
    }

    /// Every parameter tensor in the kernels' θ order.
    fn theta_parts(&self) -> Vec<Tensor> {
        std::iter::once(&self.input)
            .chain(&self.blocks)
            .chain(std::iter::once(&self.output))
            .flat_map(|l| l.parts().map(Tensor::clone))
            .collect()
    }

    /// A freshly initialised network for `dim` coordinates, its parameters added to `params`.
    pub fn new(params: &mut Params, dim: usize, cfg: &MlpConfig, rng: &mut Rng) -> Result<Self> {
        if cfg.emb_size < 4 || !cfg.emb_size.is_multiple_of(2) || cfg.hidden == 0 {
            return Err(Error::Config(format!(
                "MLP needs an even embedding size ≥ 4 and a positive width, got {cfg:?}"
            )));
        }
        let half = cfg.emb_size / 2;
        let freqs: Vec<f32> = (0..half)
            .map(|k| (-(k as f64) * 10_000f64.ln() / (half as f64 - 1.0)).exp() as f32)
            .collect();
        let device = params.device().clone();
        let kernel = MlpCpu::new(
            MlpDims {
                dim,
                hidden: cfg.hidden,
                layers: cfg.layers,
                emb: cfg.emb_size,
                x_scale: cfg.x_emb_scale as f32,
                t_scale: cfg.t_emb_scale as f32,
            },
            freqs.clone(),
        );
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
            kernel,
            track: true,
            composed: false,
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
        if x.device().is_cpu() && !self.composed {
            return fused::apply(&self.kernel, self.track, x, t, &self.theta_parts());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Params;
    use crate::rng::stream;
    use candle_core::Var;

    fn rel(a: &Tensor, b: &Tensor) -> f32 {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())) + 1e-12;
        a.iter()
            .zip(&b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    /// The fused kernels equal candle's composition and its autodiff (parameters and input),
    /// for batches that do not fill the last chunk.
    #[test]
    fn fused_kernels_match_the_composed_network_and_its_autodiff() {
        let dev = Device::Cpu;
        for (k, &(dim, hidden, layers, b)) in [(2, 32, 3, 130), (3, 16, 1, 7), (2, 8, 0, 64)]
            .iter()
            .enumerate()
        {
            let cfg = MlpConfig {
                hidden,
                layers,
                emb_size: 16,
                x_emb_scale: 25.0,
                t_emb_scale: 1.0,
            };
            let mut params = Params::new(&dev);
            let net = Mlp::new(&mut params, dim, &cfg, &mut stream(3 + k as u64, 0)).unwrap();
            let mut xv = vec![0.0f32; b * dim];
            crate::rng::NormalStream::new(k as u64, 1).fill(&mut xv);
            xv.iter_mut().for_each(|v| *v *= 0.5);
            let tv: Vec<f32> = (0..b).map(|i| i as f32 / b as f32).collect();
            let x = Var::from_tensor(&Tensor::from_vec(xv, (b, dim), &dev).unwrap()).unwrap();
            let t = Tensor::from_vec(tv, b, &dev).unwrap();
            let mut w = vec![0.0f32; b * dim];
            crate::rng::NormalStream::new(k as u64, 2).fill(&mut w);
            let w = Tensor::from_vec(w, (b, dim), &dev).unwrap();
            let run = |net: &Mlp| {
                let out = net.forward(x.as_tensor(), &t).unwrap();
                let loss = (&out * &w).unwrap().sum_all().unwrap();
                (out, loss.backward().unwrap())
            };
            let (fo, fg) = run(&net);
            let (co, cg) = run(&net.composed());
            assert!(
                rel(&fo, &co) < 2e-5,
                "case {k}: outputs differ by {}",
                rel(&fo, &co)
            );
            for (name, v) in params.vars() {
                let e = rel(
                    fg.get(v.as_tensor()).unwrap(),
                    cg.get(v.as_tensor()).unwrap(),
                );
                assert!(e < 1e-4, "case {k}: gradient of {name} differs by {e}");
            }
            let e = rel(
                fg.get(x.as_tensor()).unwrap(),
                cg.get(x.as_tensor()).unwrap(),
            );
            assert!(e < 1e-4, "case {k}: input gradient differs by {e}");
            let o2 = net.detached().forward(x.as_tensor(), &t).unwrap();
            assert_eq!(rel(&o2, &fo), 0.0);
        }
    }
}
