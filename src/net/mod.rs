//! Score networks s_θ(x, t) on candle. The [`Device`] is a parameter everywhere, so a CUDA build
//! is a feature switch; everything here runs on the CPU backend by default.
//!
//! Parameters live in [`Params`], a name → [`Var`] map initialised from idem's seeded streams
//! (candle's own initialisers draw from an unseeded generator), saved and loaded as safetensors.

pub mod dense;
pub mod egnn;
pub mod egnn_cpu;
pub mod fused;
pub mod init;
pub mod mlp;
pub mod mlp_cpu;
pub mod optim;
pub mod tile_gemm;
pub mod time_cond;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};
use rand::RngExt;
use rand_distr::Uniform;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Rng;

pub use egnn::{Egnn, EgnnConfig};
pub use mlp::{Mlp, MlpConfig};

/// Which network, with its hyper-parameters (`[net]` in a configuration, `kind = "mlp"|"egnn"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NetConfig {
    /// Sinusoidal-embedding MLP (GMM).
    Mlp(MlpConfig),
    /// E(n)-equivariant graph network (particle systems).
    Egnn(EgnnConfig),
}

impl Default for NetConfig {
    fn default() -> Self {
        Self::Mlp(MlpConfig::default())
    }
}

/// A built network of either kind.
#[derive(Clone, Debug)]
pub enum Net {
    Mlp(Mlp),
    Egnn(Egnn),
}

impl Net {
    /// Build `cfg` for a target of dimension `dim` (particle shape required by the EGNN).
    pub fn new(
        params: &mut Params,
        dim: usize,
        particles: Option<crate::energy::ParticleShape>,
        cfg: &NetConfig,
        rng: &mut Rng,
    ) -> Result<Self> {
        Ok(match cfg {
            NetConfig::Mlp(c) => Self::Mlp(Mlp::new(params, dim, c, rng)?),
            NetConfig::Egnn(c) => {
                let p = particles.ok_or_else(|| {
                    Error::Config("the EGNN needs a particle target (dw4, lj13, …)".into())
                })?;
                Self::Egnn(Egnn::new(params, p.n_particles, p.spatial_dim, c, rng)?)
            }
        })
    }
}

impl Net {
    /// The same network on detached weights: shares their storage (so it follows every update,
    /// EMA swap and checkpoint load) but builds no backward graph — for generation.
    pub fn detached(&self) -> Self {
        match self {
            Self::Mlp(m) => Self::Mlp(m.detached()),
            Self::Egnn(e) => Self::Egnn(e.detached()),
        }
    }
}

impl ScoreNet for Net {
    fn forward(&self, x: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Mlp(m) => m.forward(x, t),
            Self::Egnn(e) => e.forward(x, t),
        }
    }
}

/// A score network: `forward(x [B, dim], t [B]) → s [B, dim]`, in the trainer's coordinates.
pub trait ScoreNet: Send + Sync {
    /// The score estimate for points `x` at times `t`.
    fn forward(&self, x: &Tensor, t: &Tensor) -> candle_core::Result<Tensor>;
}

/// Named trainable parameters (f32), in a deterministic (sorted) order.
#[derive(Clone)]
pub struct Params {
    vars: BTreeMap<String, Var>,
    device: Device,
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Params")
            .field("tensors", &self.vars.len())
            .field("scalars", &self.count())
            .finish()
    }
}

impl Params {
    /// An empty parameter set on `device`.
    pub fn new(device: &Device) -> Self {
        Self {
            vars: BTreeMap::new(),
            device: device.clone(),
        }
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A new parameter `name` of `shape`, entries uniform on [−bound, bound] from `rng`.
    pub fn uniform(
        &mut self,
        name: &str,
        shape: &[usize],
        bound: f64,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        if self.vars.contains_key(name) {
            return Err(Error::Config(format!("parameter `{name}` defined twice")));
        }
        let n: usize = shape.iter().product();
        let dist = Uniform::new_inclusive(-bound as f32, bound as f32)
            .map_err(|e| Error::Config(format!("uniform init of `{name}`: {e}")))?;
        let data: Vec<f32> = (0..n).map(|_| rng.sample(dist)).collect();
        let var = Var::from_tensor(&Tensor::from_vec(data, shape, &self.device)?)?;
        let t = var.as_tensor().clone();
        self.vars.insert(name.to_string(), var);
        Ok(t)
    }

    /// A new parameter `name` holding `value` (a copy; for initial values that are not uniform).
    pub fn insert(&mut self, name: &str, value: Tensor) -> Result<Tensor> {
        if self.vars.contains_key(name) {
            return Err(Error::Config(format!("parameter `{name}` defined twice")));
        }
        let var = Var::from_tensor(&value.to_device(&self.device)?)?;
        let t = var.as_tensor().clone();
        self.vars.insert(name.to_string(), var);
        Ok(t)
    }

    /// All parameters, sorted by name.
    pub fn vars(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.vars.iter()
    }

    /// Number of scalar parameters.
    pub fn count(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    /// The parameters as tensors (for checkpoints), under `prefix`.
    pub fn to_tensors(&self, prefix: &str) -> Vec<(String, Tensor)> {
        self.vars
            .iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v.as_tensor().clone()))
            .collect()
    }

    /// Overwrite every parameter with `tensors[prefix + name]` (shapes must match).
    pub fn load_from(
        &self,
        tensors: &std::collections::HashMap<String, Tensor>,
        prefix: &str,
    ) -> Result<()> {
        for (k, v) in &self.vars {
            let key = format!("{prefix}{k}");
            let t = tensors
                .get(&key)
                .ok_or_else(|| Error::Config(format!("checkpoint has no tensor `{key}`")))?;
            if t.dims() != v.dims() {
                return Err(Error::Shape(format!(
                    "checkpoint tensor `{key}` has shape {:?}, the network expects {:?}",
                    t.dims(),
                    v.dims()
                )));
            }
            v.set(&t.to_dtype(DType::F32)?.to_device(&self.device)?)?;
        }
        Ok(())
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Tensor(e.to_string())
    }
}
