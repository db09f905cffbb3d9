//! DDS, the Denoising Diffusion Sampler (Vargas, Grathwohl & Doucet 2023): the time reversal of
//! an Ornstein–Uhlenbeck process that takes p to N(0, σ²I), learned as a control of the reversed
//! reference chain from N(0, σ²I), with the cosine noise schedule and the exponential integrator
//! or Euler (`path.integrator`); trained on its path-space KL with gradients through the steps.
//! The target-informed control f_θ(x, t) + g_θ(t)·∇log p(x) is an option, as in PIS. The chain and
//! the objective are `controlled_sde`'s ([`Chain::dds`]).

use super::Simulated;
use crate::config::TrainConfig;
use crate::controlled_sde::Chain;

/// The DDS method of `cfg.path`: the shared simulation step on [`Chain::dds`].
pub fn dds(cfg: &TrainConfig) -> Simulated {
    Simulated::new(Chain::dds(&cfg.path))
}
