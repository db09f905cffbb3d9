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
pub struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    step: u64,
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

/// What one optimiser step saw.
#[derive(Clone, Copy, Debug)]
pub struct StepInfo {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

impl Adam {
    /// Adam over all of `params`, moments at zero.
    pub fn new(params: &Params) -> Result<Self> {
        let vars: Vec<(String, Var)> = params.vars().map(|(k, v)| (k.clone(), v.clone())).collect();
        let zeros = vars
            .iter()
            .map(|(_, v)| v.as_tensor().zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
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
                // candle detaches the gradients of inner nodes but not those of variables: a
                // weight used directly as a matmul operand gets a gradient whose graph holds the
                // whole forward pass, and the moments would keep every step's graph alive
                Some(g) => Ok(g.detach()),
                None => v.as_tensor().zeros_like(),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut sq = 0.0f64;
        for g in &gs {
            sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
        let grad_norm = sq.sqrt();
        if !grad_norm.is_finite() {
            return Err(Error::Diverged(format!(
                "gradient norm is {grad_norm} at step {}",
                self.step + 1
            )));
        }
        let coef = max_grad_norm.map_or(1.0, |c| (c / (grad_norm + 1e-6)).min(1.0));
        self.step += 1;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t));
        for (i, g) in gs.into_iter().enumerate() {
            let g = (g * coef)?;
            self.m[i] = ((&self.m[i] * self.beta1)? + (&g * (1.0 - self.beta1))?)?;
            self.v[i] = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let denom = ((&self.v[i] / bc2)?.sqrt()? + self.eps)?;
            let update = ((&self.m[i] / bc1)? / denom)?;
            let var = &self.vars[i].1;
            var.set(&(var.as_tensor() - (update * lr)?)?)?;
        }
        Ok(StepInfo { grad_norm })
    }

    /// Moments and step count for a checkpoint.
    pub fn to_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (i, (k, _)) in self.vars.iter().enumerate() {
            out.push((format!("adam.m.{k}"), self.m[i].clone()));
            out.push((format!("adam.v.{k}"), self.v[i].clone()));
        }
        let dev = self
            .m
            .first()
            .map(|t| t.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        out.push(("adam.step".into(), Tensor::new(&[self.step as f64], &dev)?));
        Ok(out)
    }

    /// Restore the state written by [`Adam::to_tensors`].
    pub fn load_from(&mut self, t: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        let get = |k: &str| {
            t.get(k)
                .cloned()
                .ok_or_else(|| Error::Config(format!("checkpoint has no tensor `{k}`")))
        };
        for (i, (k, _)) in self.vars.iter().enumerate() {
            self.m[i] = get(&format!("adam.m.{k}"))?;
            self.v[i] = get(&format!("adam.v.{k}"))?;
        }
        self.step = get("adam.step")?.to_vec1::<f64>()?[0] as u64;
        Ok(())
    }
}

/// Exponential moving average of the parameters: θ̄ ← d·θ̄ + (1−d)·θ after each step.
pub struct Ema {
    pub decay: f64,
    shadow: Vec<(Var, Tensor)>,
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
            .map(|(_, v)| Ok((v.clone(), v.as_tensor().copy()?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { decay, shadow })
    }

    /// Fold the current parameters into the average.
    pub fn update(&mut self) -> Result<()> {
        for (v, s) in &mut self.shadow {
            // detached: otherwise each average would hold the previous one through its graph
            *s = ((&*s * self.decay)? + (v.as_tensor().detach() * (1.0 - self.decay))?)?.detach();
        }
        Ok(())
    }

    /// Exchange the live parameters and the average (call twice to restore).
    pub fn swap(&mut self) -> Result<()> {
        for (v, s) in &mut self.shadow {
            let live = v.as_tensor().copy()?;
            v.set(s)?;
            *s = live;
        }
        Ok(())
    }

    /// The averaged weights for a checkpoint, under `ema.<name>`.
    pub fn to_tensors(&self, params: &Params) -> Vec<(String, Tensor)> {
        params
            .vars()
            .zip(&self.shadow)
            .map(|((k, _), (_, s))| (format!("ema.{k}"), s.clone()))
            .collect()
    }

    /// Restore the average written by [`Ema::to_tensors`].
    pub fn load_from(
        &mut self,
        params: &Params,
        t: &std::collections::HashMap<String, Tensor>,
    ) -> Result<()> {
        for ((k, _), (_, s)) in params.vars().zip(self.shadow.iter_mut()) {
            let key = format!("ema.{k}");
            *s = t
                .get(&key)
                .cloned()
                .ok_or_else(|| Error::Config(format!("checkpoint has no tensor `{key}`")))?;
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
