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
//! Two implementations of the same function. On the CPU, [`super::egnn_cpu`]'s fused kernels
//! run the whole network as one candle op with an analytic backward (several times faster than
//! candle's op-by-op CPU backend). The composed implementation — candle ops only, autodiff by
//! candle — is used on other devices and is the reference the kernels are tested against: edges
//! are a flat list of the B·n·(n−1) ordered pairs, gathered with `index_select` and summed per
//! receiving node with `index_add` (candle's `scatter_add` gradient is wrong). Both split the
//! first edge layer: W·[h_i, h_j, r, a] + b = (W_src h)_i + (W_dst h)_j + [r, a, 1]·[w_r; w_a; b],
//! two per-node products gathered per edge instead of Linear(2H+2, H) on every edge.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::egnn_cpu::{EgnnCpu, EgnnDims};
use super::fused;
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
    /// Split first edge layer: weights on h_i, on h_j (`[H, H]`, no bias), on r and a (`[1, H]`
    /// each), bias.
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
///
/// On the CPU, `forward` runs the fused kernels of [`super::egnn_cpu`] as one candle op (with
/// an analytic backward); elsewhere, or with [`Egnn::composed`], it is composed of candle ops —
/// the reference implementation the kernels are tested against.
#[derive(Clone, Debug)]
pub struct Egnn {
    n: usize,
    d: usize,
    cfg: EgnnConfig,
    emb: Linear,
    layers: Vec<Layer>,
    /// Every parameter tensor in the kernels' θ order.
    theta_parts: Vec<Tensor>,
    kernel: EgnnCpu,
    /// Keep node states for a backward pass (false for the detached generation twin).
    track: bool,
    /// Always use the composed candle implementation.
    composed: bool,
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
        let kernel = EgnnCpu::new(EgnnDims {
            n,
            d,
            h,
            layers: cfg.layers,
            attention: cfg.attention,
            tanh: cfg.tanh,
            range: (cfg.coords_range / cfg.layers as f64) as f32,
        });
        // every parameter in θ order, PyTorch-style bounds: ±1/√fan_in, the first edge layer
        // as the column blocks of the reference's Linear(2H+2, H), the coordinate head's last
        // layer Xavier-uniform with gain 0.001
        let edge_bound = 1.0 / ((2 * h + 2) as f64).sqrt();
        let xavier = 0.001 * (6.0 / (h + 1) as f64).sqrt();
        let mut by_name = std::collections::HashMap::new();
        let mut theta_parts = Vec::with_capacity(kernel.param_specs().len());
        for (name, shape) in kernel.param_specs() {
            let bound = if name.contains(".edge1.") {
                edge_bound
            } else if name.ends_with("coord2.weight") {
                xavier
            } else if name.starts_with("emb.") {
                1.0
            } else if name.contains(".node1.") {
                1.0 / ((2 * h) as f64).sqrt()
            } else {
                1.0 / (h as f64).sqrt()
            };
            let t = params.uniform(name, shape, bound, rng)?;
            by_name.insert(name.clone(), t.clone());
            theta_parts.push(t);
        }
        let get = |k: &str| by_name[k].clone();
        let lin =
            |p: &str| Linear::from_parts(get(&format!("{p}.weight")), get(&format!("{p}.bias")));
        let emb = lin("emb");
        let layers = (0..cfg.layers)
            .map(|l| {
                let p = format!("gcl{l}");
                Layer {
                    e_src: get(&format!("{p}.edge1.w_src")),
                    e_dst: get(&format!("{p}.edge1.w_dst")),
                    e_r: get(&format!("{p}.edge1.w_radial")),
                    e_a: get(&format!("{p}.edge1.w_attr")),
                    e_b: get(&format!("{p}.edge1.bias")),
                    e2: lin(&format!("{p}.edge2")),
                    att: cfg.attention.then(|| lin(&format!("{p}.att"))),
                    c1: lin(&format!("{p}.coord1")),
                    c2: get(&format!("{p}.coord2.weight")),
                    n1: lin(&format!("{p}.node1")),
                    n2: lin(&format!("{p}.node2")),
                }
            })
            .collect();
        Ok(Self {
            n,
            d,
            cfg: cfg.clone(),
            emb,
            layers,
            theta_parts,
            kernel,
            track: true,
            composed: false,
        })
    }

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
            theta_parts: self.theta_parts.iter().map(Tensor::detach).collect(),
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

    /// Whether a CPU training step over a batch of `b` keeps the edge activations for the
    /// backward pass ([`EgnnCpu::caches_edges`]).
    pub fn caches_edges(&self, b: usize) -> bool {
        self.kernel.caches_edges(b)
    }

    fn forward_fused(&self, x: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
        let x = x.reshape((x.dim(0)?, self.n * self.d))?;
        fused::apply(&self.kernel, self.track, &x, t, &self.theta_parts)
    }

    fn forward_composed(&self, x: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
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
            let pre = ((h.matmul(&l.e_src.t()?)?.index_select(&src, 0)?
                + h.matmul(&l.e_dst.t()?)?.index_select(&dst, 0)?)?
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

impl ScoreNet for Egnn {
    fn forward(&self, x: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() && !self.composed {
            self.forward_fused(x, t)
        } else {
            self.forward_composed(x, t)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::fused::FusedKernel;
    use crate::net::Params;
    use crate::rng::stream;
    use candle_core::{Device, Var};

    /// max |a − b| / (max |b| + tiny)
    fn rel(a: &Tensor, b: &Tensor) -> f32 {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())) + 1e-12;
        a.iter()
            .zip(&b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    /// The fused kernels equal candle's composition: outputs, gradients of a random linear
    /// functional with respect to every parameter and to the input — for several shapes, with
    /// and without attention and tanh, batches that do not fill the last chunk, coincident
    /// particles and coordinates large enough to saturate the tanh.
    #[test]
    fn fused_kernels_match_the_composed_network_and_its_autodiff() {
        let dev = Device::Cpu;
        let cases = [
            (4, 2, 16, 3, true, true, 37, 1.5f32),
            (13, 3, 8, 2, false, true, 9, 1.0),
            (5, 3, 12, 2, true, false, 70, 1.0),
            (3, 2, 8, 1, false, false, 1, 0.7),
            (13, 3, 16, 3, true, true, 5, 6.0),
            // 64-column products (AVX-512 tile kernels where the CPU has them)
            (4, 2, 64, 2, true, true, 11, 1.5),
        ];
        for (k, &(n, d, h, layers, attention, tanh, b, spread)) in cases.iter().enumerate() {
            let cfg = EgnnConfig {
                hidden: h,
                layers,
                attention,
                tanh,
                coords_range: 15.0,
            };
            let mut params = Params::new(&dev);
            let net = Egnn::new(&mut params, n, d, &cfg, &mut stream(10 + k as u64, 0)).unwrap();
            // larger coordinate-head weights than the 0.001-gain init, so coordinates move
            for (name, v) in params.vars() {
                if name.ends_with("coord2.weight") {
                    v.set(&(v.as_tensor() * 300.0).unwrap()).unwrap();
                }
            }
            let mut xv = vec![0.0f32; b * n * d];
            crate::rng::NormalStream::new(k as u64, 0).fill(&mut xv);
            xv.iter_mut().for_each(|v| *v *= spread);
            if b > 1 {
                // two coincident particles in the second configuration
                for a in 0..d {
                    xv[n * d + d + a] = xv[n * d + a];
                }
            }
            let tv: Vec<f32> = (0..b).map(|i| (i as f32 + 0.3) / b as f32).collect();
            let x = Var::from_tensor(&Tensor::from_vec(xv, (b, n * d), &dev).unwrap()).unwrap();
            let t = Tensor::from_vec(tv, b, &dev).unwrap();
            let mut w = vec![0.0f32; b * n * d];
            crate::rng::NormalStream::new(99 + k as u64, 0).fill(&mut w);
            let w = Tensor::from_vec(w, (b, n * d), &dev).unwrap();
            let run = |net: &Egnn| {
                let out = net.forward(x.as_tensor(), &t).unwrap();
                let loss = (&out * &w).unwrap().sum_all().unwrap();
                (out, loss.backward().unwrap())
            };
            let (fo, fg) = run(&net);
            let (co, cg) = run(&net.composed());
            let e = rel(&fo, &co);
            assert!(e < 2e-5, "case {k}: outputs differ by {e}");
            for (name, v) in params.vars() {
                let a = fg.get(v.as_tensor()).expect("fused gradient");
                let e = match cg.get(v.as_tensor()) {
                    Some(c) => rel(a, c),
                    // the last layer's node MLP does not reach the output: candle leaves it
                    // out, the kernels give exact zeros
                    None => a
                        .abs()
                        .unwrap()
                        .max_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap(),
                };
                assert!(e < 1e-4, "case {k}: gradient of {name} differs by {e}");
            }
            let e = rel(
                fg.get(x.as_tensor()).unwrap(),
                cg.get(x.as_tensor()).unwrap(),
            );
            assert!(e < 1e-4, "case {k}: input gradient differs by {e}");
            // the detached twin gives the same outputs and builds no graph
            let o2 = net.detached().forward(x.as_tensor(), &t).unwrap();
            assert_eq!(rel(&o2, &fo), 0.0);
        }
    }

    /// Results do not depend on the number of threads, nor on whether the backward pass reads the
    /// edge activations from the cache or recomputes them (bit for bit); H = 64 takes the AVX-512
    /// tile products where the CPU has them.
    #[test]
    fn fused_kernels_are_deterministic_across_thread_counts() {
        for h in [16, 64] {
            deterministic_for(EgnnDims {
                n: 13,
                d: 3,
                h,
                layers: 2,
                attention: true,
                tanh: true,
                range: 5.0,
            });
        }
    }

    fn deterministic_for(dims: EgnnDims) {
        let k = EgnnCpu::new(dims);
        let mut th = vec![0.0f32; k.param_count()];
        crate::rng::NormalStream::new(5, 0).fill(&mut th);
        th.iter_mut().for_each(|v| *v *= 0.2);
        let b = 45;
        let mut x = vec![0.0f32; b * 39];
        crate::rng::NormalStream::new(6, 0).fill(&mut x);
        let t: Vec<f32> = (0..b).map(|i| i as f32 / b as f32).collect();
        let recompute = EgnnCpu::new(dims).with_edge_cache_bytes(0);
        assert!(k.caches_edges(b) && !recompute.caches_edges(b));
        let run_with = |k: &EgnnCpu, threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut out = vec![0.0f32; x.len()];
                let mut cache = Vec::new();
                k.forward(&th, &x, &t, &mut out, Some(&mut cache));
                let mut gth = vec![0.0f32; th.len()];
                let mut gx = vec![0.0f32; x.len()];
                k.backward(&th, &x, &t, &cache, &out, &mut gth, Some(&mut gx));
                (out, gth, gx)
            })
        };
        let run = |threads: usize| run_with(&k, threads);
        let a = run(1);
        assert_eq!(a, run(3));
        assert_eq!(a, run(2));
        assert_eq!(a, run_with(&recompute, 2));
        assert_eq!(a, run_with(&recompute, 1));
        // a reused cache (as the pool in `fused` hands out) holding other numbers, NaN included,
        // changes nothing: the forward pass writes every element the backward pass reads
        for k in [&k, &recompute] {
            let mut out = vec![0.0f32; x.len()];
            let mut cache = vec![f32::NAN; k.cache_len(b)];
            k.forward(&th, &x, &t, &mut out, Some(&mut cache));
            let mut gth = vec![0.0f32; th.len()];
            let mut gx = vec![0.0f32; x.len()];
            k.backward(&th, &x, &t, &cache, &out, &mut gth, Some(&mut gx));
            assert_eq!(a, (out, gth, gx));
        }
    }
}
