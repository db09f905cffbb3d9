//! The reference's E(n)-equivariant score network for particle systems (`EGNN_dynamics` in DEM,
//! after Satorras et al.): fully connected graph over the n particles, node features start from t,
//! edge feature a_ij = |x_i − x_j|² of the input coordinates. Each layer l, with current
//! coordinates x and node features h (`[n, H]` per configuration):
//!
//! ```text
//! d_ij  = x_i − x_j,  r_ij = |d_ij|²,  u_ij = d_ij / (√(r_ij + 1e-8) + 1)
//! m_ij  = φ_e([h_i, h_j, r_ij, a_ij])              edge MLP: Linear(2H+2, H), SiLU, Linear(H, H), SiLU
//! m_ij ← m_ij · sigmoid(w·m_ij + b)                attention gate (optional)
//! x_i  ← x_i + Σ_{j≠i} u_ij · c·tanh(φ_x(m_ij))    φ_x: Linear(H, H), SiLU, Linear(H, 1, no bias);
//!                                                   c = coords_range / layers (tanh optional)
//! h_i  ← h_i + φ_h([h_i, Σ_{j≠i} m_ij])            node MLP: Linear(2H, H), SiLU, Linear(H, H)
//! ```
//!
//! Output: x_final − x, with the mean over particles removed. Rotations/reflections, translations
//! and permutations of the input transform the output accordingly (property-tested).
//!
//! Speed (candle CPU): edges are a flat list of the B·n·(n−1) ordered pairs, gathered with
//! `index_select` and summed per receiving node with `index_add` (whose backward is a gather;
//! candle's `scatter_add` gradient is wrong). The first edge layer is split:
//! W·[h_i, h_j, r, a] + b = (W_src h)_i + (W_dst h)_j + [r, a, 1]·[w_r; w_a; b] — two per-node
//! products gathered per edge, n times fewer multiply-adds than Linear(2H+2, H) on every edge.
//! Edge-level layers fold their bias into the matmul ([`Linear::forward_folded`]): candle's
//! backward of a broadcast bias is a slow column sum.

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::init::Linear;
use super::{Params, ScoreNet};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// EGNN hyper-parameters (the reference's names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgnnConfig {
    /// Width H of node features and of every hidden layer.
    pub hidden: usize,
    /// Message-passing layers.
    pub layers: usize,
    /// Sigmoid attention gate on messages.
    pub attention: bool,
    /// Bound the coordinate update with tanh·(coords_range / layers).
    pub tanh: bool,
    /// Total coordinate range (divided among the layers) when `tanh` is on.
    pub coords_range: f64,
}

impl Default for EgnnConfig {
    fn default() -> Self {
        Self {
            hidden: 128,
            layers: 3,
            attention: true,
            tanh: true,
            coords_range: 15.0,
        }
    }
}

#[derive(Clone, Debug)]
struct Layer {
    /// Split first edge layer: weights on h_i, on h_j (no bias), on r and a (`[1, H]` each), bias.
    e_src: Tensor,
    e_dst: Tensor,
    e_r: Tensor,
    e_a: Tensor,
    e_b: Tensor,
    e2: Linear,
    att: Option<Linear>,
    c1: Linear,
    /// `[H, 1]`, no bias.
    c2: Tensor,
    n1: Linear,
    n2: Linear,
}

/// The EGNN score network for `n` particles in `d` dimensions.
#[derive(Clone, Debug)]
pub struct Egnn {
    n: usize,
    d: usize,
    cfg: EgnnConfig,
    emb: Linear,
    layers: Vec<Layer>,
}

impl Egnn {
    /// A PyTorch-style initialised network (the coordinate head's last layer Xavier-uniform with
    /// gain 0.001, as the reference).
    pub fn new(
        params: &mut Params,
        n: usize,
        d: usize,
        cfg: &EgnnConfig,
        rng: &mut Rng,
    ) -> Result<Self> {
        if n < 2 || d == 0 || cfg.hidden == 0 || cfg.layers == 0 {
            return Err(Error::Config(format!(
                "EGNN needs ≥ 2 particles, dimension ≥ 1, hidden ≥ 1, layers ≥ 1 (got n = {n}, \
                 d = {d}, {cfg:?})"
            )));
        }
        if cfg.tanh && (cfg.coords_range.is_nan() || cfg.coords_range <= 0.0) {
            return Err(Error::Config("EGNN coords_range must be positive".into()));
        }
        let h = cfg.hidden;
        let emb = Linear::new(params, "emb", 1, h, 1.0, rng)?;
        let mut layers = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            let p = format!("gcl{l}");
            // Linear(2H+2, H) of the reference, stored as its column blocks
            let bound = 1.0 / ((2 * h + 2) as f64).sqrt();
            let e_src = params.uniform(&format!("{p}.edge1.w_src"), &[h, h], bound, rng)?;
            let e_dst = params.uniform(&format!("{p}.edge1.w_dst"), &[h, h], bound, rng)?;
            let e_r = params.uniform(&format!("{p}.edge1.w_radial"), &[1, h], bound, rng)?;
            let e_a = params.uniform(&format!("{p}.edge1.w_attr"), &[1, h], bound, rng)?;
            let e_b = params.uniform(&format!("{p}.edge1.bias"), &[h], bound, rng)?;
            let e2 = Linear::new(params, &format!("{p}.edge2"), h, h, 1.0, rng)?;
            let att = if cfg.attention {
                Some(Linear::new(params, &format!("{p}.att"), h, 1, 1.0, rng)?)
            } else {
                None
            };
            let c1 = Linear::new(params, &format!("{p}.coord1"), h, h, 1.0, rng)?;
            let xavier = 0.001 * (6.0 / (h + 1) as f64).sqrt();
            let c2 = params.uniform(&format!("{p}.coord2.weight"), &[h, 1], xavier, rng)?;
            let n1 = Linear::new(params, &format!("{p}.node1"), 2 * h, h, 1.0, rng)?;
            let n2 = Linear::new(params, &format!("{p}.node2"), h, h, 1.0, rng)?;
            layers.push(Layer {
                e_src: e_src.t()?,
                e_dst: e_dst.t()?,
                e_r,
                e_a,
                e_b,
                e2,
                att,
                c1,
                c2,
                n1,
                n2,
            });
        }
        Ok(Self {
            n,
            d,
            cfg: cfg.clone(),
            emb,
            layers,
        })
    }
}

impl Egnn {
    /// The network on detached weights (see [`Linear::detached`]).
    pub fn detached(&self) -> Self {
        let layers = self
            .layers
            .iter()
            .map(|l| Layer {
                e_src: l.e_src.detach(),
                e_dst: l.e_dst.detach(),
                e_r: l.e_r.detach(),
                e_a: l.e_a.detach(),
                e_b: l.e_b.detach(),
                e2: l.e2.detached(),
                att: l.att.as_ref().map(Linear::detached),
                c1: l.c1.detached(),
                c2: l.c2.detach(),
                n1: l.n1.detached(),
                n2: l.n2.detached(),
            })
            .collect();
        Self {
            n: self.n,
            d: self.d,
            cfg: self.cfg.clone(),
            emb: self.emb.detached(),
            layers,
        }
    }
}

impl ScoreNet for Egnn {
    fn forward(&self, x: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
        let b = x.dim(0)?;
        let (n, d) = (self.n, self.d);
        let dev = x.device();
        // ordered pairs (i, j), i ≠ j, of every configuration: receiver i, sender j
        let mut src = Vec::with_capacity(b * n * (n - 1));
        let mut dst = Vec::with_capacity(b * n * (n - 1));
        for c in 0..b {
            for i in 0..n {
                for j in 0..n {
                    if i != j {
                        src.push((c * n + i) as u32);
                        dst.push((c * n + j) as u32);
                    }
                }
            }
        }
        let e = src.len();
        let src = Tensor::from_vec(src, e, dev)?;
        let dst = Tensor::from_vec(dst, e, dev)?;
        let x0 = x.reshape((b * n, d))?;
        let pair = |xc: &Tensor| -> candle_core::Result<(Tensor, Tensor)> {
            let diff = (xc.index_select(&src, 0)? - xc.index_select(&dst, 0)?)?;
            let r = diff.sqr()?.sum_keepdim(1)?;
            Ok((diff, r))
        };
        let (_, attr) = pair(&x0)?;
        let ones = Tensor::ones((e, 1), DType::F32, dev)?;
        let tn = t
            .reshape((b, 1))?
            .broadcast_as((b, n))?
            .reshape((b * n, 1))?;
        let mut h = self.emb.forward(&tn)?;
        let mut xc = x0.clone();
        let range = self.cfg.coords_range / self.cfg.layers as f64;
        for l in &self.layers {
            let (diff, r) = pair(&xc)?;
            let unit = diff.broadcast_div(&((r.clone() + 1e-8)?.sqrt()? + 1.0)?)?;
            let scalars = Tensor::cat(&[&r, &attr, &ones], 1)?; // [E, 3]
            let w3 = Tensor::cat(&[&l.e_r, &l.e_a, &l.e_b.unsqueeze(0)?], 0)?; // [3, H]
            let pre = ((h.matmul(&l.e_src)?.index_select(&src, 0)?
                + h.matmul(&l.e_dst)?.index_select(&dst, 0)?)?
                + scalars.matmul(&w3)?)?;
            let mut m = l.e2.forward_folded(&pre.silu()?)?.silu()?;
            if let Some(att) = &l.att {
                let gate = candle_nn::ops::sigmoid(&att.forward_folded(&m)?)?;
                m = m.broadcast_mul(&gate)?;
            }
            let mut c = l.c1.forward_folded(&m)?.silu()?.matmul(&l.c2)?; // [E, 1]
            if self.cfg.tanh {
                c = (c.tanh()? * range)?;
            }
            let zeros_x = Tensor::zeros((b * n, d), DType::F32, dev)?;
            xc = (xc + zeros_x.index_add(&src, &unit.broadcast_mul(&c)?, 0)?)?;
            let zeros_h = Tensor::zeros((b * n, h.dim(1)?), DType::F32, dev)?;
            let agg = zeros_h.index_add(&src, &m, 0)?;
            let upd =
                l.n2.forward(&l.n1.forward(&Tensor::cat(&[&h, &agg], 1)?)?.silu()?)?;
            h = (h + upd)?;
        }
        let vel = (xc - x0)?.reshape((b, n, d))?;
        let vel = vel.broadcast_sub(&vel.mean_keepdim(1)?)?;
        vel.reshape((b, n * d))
    }
}

/// Convenience for tests and benches: a random batch on `device`.
pub fn random_batch(b: usize, dim: usize, seed: u64, device: &Device) -> Result<(Tensor, Tensor)> {
    let mut x = vec![0.0f32; b * dim];
    crate::rng::NormalStream::new(seed, 0).fill(&mut x);
    let t: Vec<f32> = (0..b).map(|i| (i as f32 + 0.5) / b as f32).collect();
    Ok((
        Tensor::from_vec(x, (b, dim), device)?,
        Tensor::from_vec(t, b, device)?,
    ))
}
