//! Weight initialisation. PyTorch's `nn.Linear` default — weights and biases uniform on
//! ±1/√fan_in — is used for every layer: candle's default Kaiming-normal made a 5-layer EGNN
//! diverge here, and matching PyTorch keeps us comparable with the reference.

use candle_core::Tensor;

use super::Params;
use crate::error::Result;
use crate::rng::Rng;

/// A linear layer y = x·Wᵀ + b with W `[out, in]`.
#[derive(Clone, Debug)]
pub struct Linear {
    w: Tensor,
    b: Tensor,
}

impl Linear {
    /// PyTorch-style initialised layer `name.weight`, `name.bias`; `scale` multiplies the bound
    /// (1 for the default; smaller values start an output layer near zero).
    pub fn new(
        params: &mut Params,
        name: &str,
        fan_in: usize,
        fan_out: usize,
        scale: f64,
        rng: &mut Rng,
    ) -> Result<Self> {
        let bound = scale / (fan_in as f64).sqrt();
        let w = params.uniform(&format!("{name}.weight"), &[fan_out, fan_in], bound, rng)?;
        let b = params.uniform(&format!("{name}.bias"), &[fan_out], bound, rng)?;
        Ok(Self { w, b })
    }

    /// A layer from existing weight `[out, in]` and bias `[out]` tensors.
    pub fn from_parts(w: Tensor, b: Tensor) -> Self {
        Self { w, b }
    }

    /// Weight and bias.
    pub fn parts(&self) -> [&Tensor; 2] {
        [&self.w, &self.b]
    }

    /// The same layer on detached weights (shared storage, no gradient tracking): a forward
    /// pass through it builds no backward graph, so its intermediates are freed at once.
    pub fn detached(&self) -> Self {
        Self {
            w: self.w.detach(),
            b: self.b.detach(),
        }
    }

    /// x `[B, in]` → `[B, out]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.w.t()?)?.broadcast_add(&self.b)
    }

    /// The same map as one matmul [x, 1]·[Wᵀ; b]. For many rows this is faster to train: the
    /// bias gradient becomes part of the matmul's backward instead of candle's column sum,
    /// which is single-threaded and strided on the CPU.
    pub fn forward_folded(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let rows = x.dim(0)?;
        let ones = Tensor::ones((rows, 1), x.dtype(), x.device())?;
        let xa = Tensor::cat(&[x, &ones], 1)?;
        let wa = Tensor::cat(&[&self.w.t()?, &self.b.unsqueeze(0)?], 0)?;
        xa.matmul(&wa)
    }
}
