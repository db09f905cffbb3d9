//! PIS, the Path Integral Sampler (Zhang & Chen 2022), as the published DEM repository runs it
//! (`dem/models/pis_module.py`): the controlled SDE dX = σ·u_θ(X, t)dt + σ dW on [0, T] from
//! X_0 = 0, trained on the path-space KL ½∫|u|²dt + log N(X_T; 0, σ²T) − log p̃(X_T) with
//! gradients through the Euler–Maruyama steps; the target-informed control
//! u = f_θ(x, t) + g_θ(t)·∇log p(x) as an option (`path.target_informed`). The chain and the
//! objective are `controlled_sde`'s ([`Chain::pis`]).

use super::Simulated;
use crate::config::TrainConfig;
use crate::controlled_sde::Chain;

/// The PIS method of `cfg.path`: the shared simulation step on [`Chain::pis`].
pub fn pis(cfg: &TrainConfig) -> Simulated {
    Simulated::new(Chain::pis(&cfg.path))
}
