//! Step-size adaptation by dual averaging (Nesterov 2009, as tuned for HMC by Hoffman & Gelman
//! 2014, Algorithm 5): during warm-up, log ε is steered so that the mean acceptance probability
//! approaches `target`; at the end of warm-up ε is fixed to the averaged iterate ε̄.
//!
//! ```text
//! H̄ₘ = (1 − 1/(m + t₀))·H̄ₘ₋₁ + (target − αₘ)/(m + t₀)
//! log εₘ = μ − √m/γ·H̄ₘ,   log ε̄ₘ = m^−κ·log εₘ + (1 − m^−κ)·log ε̄ₘ₋₁
//! ```
//! with μ = log(10·ε₀), γ = 0.05, t₀ = 10, κ = 0.75. One adapter serves all chains at one
//! temperature: αₘ is the mean acceptance probability over those chains at step m, which makes
//! the adaptation far less noisy than per-chain adaptation with many chains.

/// Dual-averaging state.
#[derive(Clone, Debug)]
pub struct DualAveraging {
    target: f64,
    mu: f64,
    h_bar: f64,
    log_eps: f64,
    log_eps_bar: f64,
    m: u64,
}

const GAMMA: f64 = 0.05;
const T0: f64 = 10.0;
const KAPPA: f64 = 0.75;

impl DualAveraging {
    /// Start at step size `eps0`, aiming at mean acceptance `target`.
    pub fn new(eps0: f64, target: f64) -> Self {
        Self {
            target,
            mu: (10.0 * eps0).ln(),
            h_bar: 0.0,
            log_eps: eps0.ln(),
            log_eps_bar: 0.0,
            m: 0,
        }
    }

    /// The step size to use now (during warm-up).
    pub fn current(&self) -> f64 {
        self.log_eps.exp()
    }

    /// The adapted step size (after warm-up).
    pub fn adapted(&self) -> f64 {
        if self.m == 0 {
            self.current()
        } else {
            self.log_eps_bar.exp()
        }
    }

    /// Record one step's mean acceptance probability.
    pub fn update(&mut self, accept_prob: f64) {
        let a = if accept_prob.is_finite() {
            accept_prob.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.m += 1;
        let m = self.m as f64;
        let w = 1.0 / (m + T0);
        self.h_bar = (1.0 - w) * self.h_bar + w * (self.target - a);
        self.log_eps = self.mu - m.sqrt() / GAMMA * self.h_bar;
        let eta = m.powf(-KAPPA);
        self.log_eps_bar = eta * self.log_eps + (1.0 - eta) * self.log_eps_bar;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With acceptance a(ε) = exp(−ε) the adapted ε solves exp(−ε) = target.
    #[test]
    fn dual_averaging_finds_the_step_size_of_the_target_acceptance() {
        let mut da = DualAveraging::new(0.01, 0.6);
        for _ in 0..2000 {
            let eps = da.current();
            da.update((-eps).exp());
        }
        let want = -(0.6f64).ln();
        assert!(
            (da.adapted() - want).abs() < 0.02 * want,
            "{} vs {want}",
            da.adapted()
        );
    }
}
