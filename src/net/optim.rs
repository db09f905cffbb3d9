//! Optimisation helpers of our own (candle has none of them with saveable state): Adam with
//! PyTorch's update and bias correction, gradient-norm clipping as `clip_grad_norm_`, an
//! exponential moving average of the weights, and learning-rate schedules.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::Params;
use crate::error::{Error, Result};

/// Adam (Kingma & Ba) exactly as `torch.optim.Adam` without weight decay:
/// m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², θ ← θ − lr·m̂/(√v̂ + ε), m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ).
///
/// The moments live in host memory and the update is a plain loop per parameter tensor (one
/// copy out of the variable and one back), not a dozen candle ops per tensor.
pub struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    step: u64,
    vars: Vec<(String, Var)>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

/// What one optimiser step saw.
#[derive(Clone, Copy, Debug)]
pub struct StepInfo {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// A tensor's values as a flat host vector.
fn host(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// Overwrite `var` with `values` (same number of elements).
fn set_var(var: &Var, values: Vec<f32>) -> candle_core::Result<()> {
    var.set(&Tensor::from_vec(values, var.shape(), var.device())?)
}

impl Adam {
    /// Adam over all of `params`, moments at zero.
    pub fn new(params: &Params) -> Result<Self> {
        let vars: Vec<(String, Var)> = params.vars().map(|(k, v)| (k.clone(), v.clone())).collect();
        let zeros: Vec<Vec<f32>> = vars
            .iter()
            .map(|(_, v)| vec![0.0; v.elem_count()])
            .collect();
        Ok(Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step: 0,
            vars,
            m: zeros.clone(),
            v: zeros,
        })
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One update with learning rate `lr`. Gradients are first scaled so that their global L2
    /// norm is at most `max_grad_norm` (coefficient min(1, c/(‖g‖ + 1e−6)), as PyTorch).
    /// A non-finite gradient norm is an error and leaves the parameters untouched.
    pub fn step(
        &mut self,
        grads: &GradStore,
        lr: f64,
        max_grad_norm: Option<f64>,
    ) -> Result<StepInfo> {
        let gs = self
            .vars
            .iter()
            .map(|(_, v)| match grads.get(v.as_tensor()) {
                Some(g) => host(g),
                None => Ok(vec![0.0; v.elem_count()]),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let sq: f64 = gs
            .iter()
            .flat_map(|g| g.iter())
            .map(|&x| f64::from(x) * f64::from(x))
            .sum();
        let grad_norm = sq.sqrt();
        if !grad_norm.is_finite() {
            return Err(Error::Diverged(format!(
                "gradient norm is {grad_norm} at step {}",
                self.step + 1
            )));
        }
        let coef = max_grad_norm.map_or(1.0, |c| (c / (grad_norm + 1e-6)).min(1.0)) as f32;
        self.step += 1;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t));
        let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
        let (step_size, bc2_sqrt, eps) = ((lr / bc1) as f32, bc2.sqrt() as f32, self.eps as f32);
        for (i, g) in gs.into_iter().enumerate() {
            let var = &self.vars[i].1;
            let mut theta = host(var.as_tensor())?;
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            // zipped slices: no bounds checks, so the loop vectorises
            for (((th, m), v), &g) in theta.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(&g) {
                let gk = g * coef;
                *m = b1 * *m + (1.0 - b1) * gk;
                *v = b2 * *v + (1.0 - b2) * gk * gk;
                // PyTorch: θ −= (lr/bc1)·m / (√v/√bc2 + ε)
                *th -= step_size * *m / (v.sqrt() / bc2_sqrt + eps);
            }
            set_var(var, theta)?;
        }
        Ok(StepInfo { grad_norm })
    }

    /// Moments and step count for a checkpoint.
    pub fn to_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (i, (k, var)) in self.vars.iter().enumerate() {
            let dev = var.device();
            out.push((
                format!("adam.m.{k}"),
                Tensor::from_vec(self.m[i].clone(), var.shape(), dev)?,
            ));
            out.push((
                format!("adam.v.{k}"),
                Tensor::from_vec(self.v[i].clone(), var.shape(), dev)?,
            ));
        }
        out.push((
            "adam.step".into(),
            Tensor::new(&[self.step as f64], &candle_core::Device::Cpu)?,
        ));
        Ok(out)
    }

    /// Restore the state written by [`Adam::to_tensors`].
    pub fn load_from(&mut self, t: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        let get = |k: &str, n: usize| -> Result<Vec<f32>> {
            let v = host(
                t.get(k)
                    .ok_or_else(|| Error::Config(format!("checkpoint has no tensor `{k}`")))?,
            )?;
            if v.len() != n {
                return Err(Error::Shape(format!(
                    "checkpoint tensor `{k}` has {} elements, expected {n}",
                    v.len()
                )));
            }
            Ok(v)
        };
        for (i, (k, var)) in self.vars.iter().enumerate() {
            self.m[i] = get(&format!("adam.m.{k}"), var.elem_count())?;
            self.v[i] = get(&format!("adam.v.{k}"), var.elem_count())?;
        }
        self.step = t
            .get("adam.step")
            .ok_or_else(|| Error::Config("checkpoint has no tensor `adam.step`".into()))?
            .to_vec1::<f64>()?[0] as u64;
        Ok(())
    }
}

/// Exponential moving average of the parameters: θ̄ ← d·θ̄ + (1−d)·θ after each step (host
/// loops, as Adam).
pub struct Ema {
    pub decay: f64,
    shadow: Vec<(Var, Vec<f32>)>,
}

impl Ema {
    /// Start the average at the current parameters.
    pub fn new(params: &Params, decay: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&decay) {
            return Err(Error::Config(format!(
                "EMA decay must be in [0, 1), got {decay}"
            )));
        }
        let shadow = params
            .vars()
            .map(|(_, v)| Ok((v.clone(), host(v.as_tensor())?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { decay, shadow })
    }

    /// Fold the current parameters into the average.
    pub fn update(&mut self) -> Result<()> {
        let d = self.decay as f32;
        for (v, s) in &mut self.shadow {
            let cur = host(v.as_tensor())?;
            for (a, &c) in s.iter_mut().zip(&cur) {
                *a = d * *a + (1.0 - d) * c;
            }
        }
        Ok(())
    }

    /// Exchange the live parameters and the average (call twice to restore).
    pub fn swap(&mut self) -> Result<()> {
        for (v, s) in &mut self.shadow {
            let live = host(v.as_tensor())?;
            set_var(v, std::mem::replace(s, live))?;
        }
        Ok(())
    }

    /// The averaged weights for a checkpoint, under `ema.<name>`.
    pub fn to_tensors(&self, params: &Params) -> Vec<(String, Tensor)> {
        params
            .vars()
            .zip(&self.shadow)
            .map(|((k, _), (v, s))| {
                let t = Tensor::from_vec(s.clone(), v.shape(), v.device())
                    .expect("the average has the variable's shape");
                (format!("ema.{k}"), t)
            })
            .collect()
    }

    /// Restore the average written by [`Ema::to_tensors`].
    pub fn load_from(
        &mut self,
        params: &Params,
        t: &std::collections::HashMap<String, Tensor>,
    ) -> Result<()> {
        for ((k, _), (v, s)) in params.vars().zip(self.shadow.iter_mut()) {
            let key = format!("ema.{k}");
            let vals = host(
                t.get(&key)
                    .ok_or_else(|| Error::Config(format!("checkpoint has no tensor `{key}`")))?,
            )?;
            if vals.len() != v.elem_count() {
                return Err(Error::Shape(format!(
                    "checkpoint tensor `{key}` has {} elements, expected {}",
                    vals.len(),
                    v.elem_count()
                )));
            }
            *s = vals;
        }
        Ok(())
    }
}

/// Learning-rate schedule over the whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// lr throughout.
    #[default]
    Constant,
    /// lr·(f + (1 − f)·½(1 + cos(π·progress))) with f = `final_fraction`.
    Cosine,
}

impl LrSchedule {
    /// Learning rate at `progress` ∈ [0, 1] of the run.
    pub fn lr(&self, base: f64, progress: f64, final_fraction: f64) -> f64 {
        match self {
            LrSchedule::Constant => base,
            LrSchedule::Cosine => {
                let c = 0.5 * (1.0 + (std::f64::consts::PI * progress.clamp(0.0, 1.0)).cos());
                base * (final_fraction + (1.0 - final_fraction) * c)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::stream;
    use candle_core::Device;

    /// Adam on f(θ) = ½|θ − c|² reaches c, and the first step has size lr in each coordinate
    /// (PyTorch's bias-corrected first step is lr·sign(g)).
    #[test]
    fn adam_minimises_a_quadratic_and_matches_first_step() {
        let dev = Device::Cpu;
        let mut p = Params::new(&dev);
        let theta = p.uniform("theta", &[3], 1.0, &mut stream(1, 0)).unwrap();
        let before = theta.to_vec1::<f32>().unwrap();
        let c = Tensor::new(&[0.5f32, -2.0, 3.0], &dev).unwrap();
        let mut adam = Adam::new(&p).unwrap();
        let (_, var) = p.vars().next().unwrap();
        let loss = (var.as_tensor() - &c)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        adam.step(&loss.backward().unwrap(), 0.01, None).unwrap();
        let after = var.as_tensor().to_vec1::<f32>().unwrap();
        for (a, b) in after.iter().zip(&before) {
            assert!(((a - b).abs() - 0.01).abs() < 1e-5, "{a} {b}");
        }
        for _ in 0..3000 {
            let loss = (var.as_tensor() - &c)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            adam.step(&loss.backward().unwrap(), 0.01, None).unwrap();
        }
        let end = var.as_tensor().to_vec1::<f32>().unwrap();
        for (e, t) in end.iter().zip([0.5f32, -2.0, 3.0]) {
            assert!((e - t).abs() < 1e-3, "{end:?}");
        }
    }

    #[test]
    fn clipping_bounds_the_update_and_nan_is_an_error() {
        let dev = Device::Cpu;
        let mut p = Params::new(&dev);
        p.uniform("w", &[2], 1.0, &mut stream(2, 0)).unwrap();
        let (_, var) = p.vars().next().unwrap();
        let mut adam = Adam::new(&p).unwrap();
        let loss = (var.as_tensor() * 1e6).unwrap().sum_all().unwrap();
        let info = adam
            .step(&loss.backward().unwrap(), 0.1, Some(1.0))
            .unwrap();
        assert!((info.grad_norm - 1e6 * 2f64.sqrt()).abs() < 1.0);
        let before = var.as_tensor().to_vec1::<f32>().unwrap();
        let bad = (var.as_tensor() * f64::NAN).unwrap().sum_all().unwrap();
        assert!(matches!(
            adam.step(&bad.backward().unwrap(), 0.1, Some(1.0)),
            Err(Error::Diverged(_))
        ));
        assert_eq!(var.as_tensor().to_vec1::<f32>().unwrap(), before);
    }

    #[test]
    fn cosine_schedule_ends_at_the_final_fraction() {
        let s = LrSchedule::Cosine;
        assert!((s.lr(1e-3, 0.0, 0.1) - 1e-3).abs() < 1e-12);
        assert!((s.lr(1e-3, 1.0, 0.1) - 1e-4).abs() < 1e-12);
        assert_eq!(LrSchedule::Constant.lr(1e-3, 0.7, 0.1), 1e-3);
    }
}
