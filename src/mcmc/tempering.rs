//! Parallel tempering (replica exchange; Swendsen & Wang 1986, Geyer 1991): every chain runs K
//! replicas at temperatures 1 = T₀ < T₁ < … < T_{K−1} = T_max on a geometric ladder
//! T_k = T_max^{k/(K−1)}, replica k targeting p^{1/T_k}. After every step, neighbouring replicas
//! of each chain propose to exchange their states — the pairs (0,1), (2,3), … after even steps
//! and (1,2), (3,4), … after odd ones (deterministic even–odd scheme) — and accept with
//! probability min(1, exp((β_k − β_{k+1})·(log p(x_{k+1}) − log p(x_k)))), which leaves the joint
//! distribution invariant. Only the T = 1 replicas are kept as samples.

use rand::RngExt;

use super::replicas::Replicas;
use crate::rng::Rng;

/// The geometric ladder of `k` temperatures from 1 to `t_max`.
pub fn geometric_ladder(k: usize, t_max: f64) -> Vec<f64> {
    if k <= 1 {
        return vec![1.0];
    }
    (0..k)
        .map(|i| t_max.powf(i as f64 / (k - 1) as f64))
        .collect()
}

/// One round of swap proposals for `chains` chains of `k` replicas each (replica c·k + j is
/// chain c at temperature j), pairs starting at `parity` (0 or 1). `attempts`/`accepts` count
/// per neighbouring pair (length k − 1).
pub fn swap_round(
    reps: &mut Replicas,
    chains: usize,
    k: usize,
    parity: usize,
    rngs: &mut [Rng],
    attempts: &mut [u64],
    accepts: &mut [u64],
) {
    for (c, rng) in rngs.iter_mut().enumerate().take(chains) {
        let mut j = parity;
        while j + 1 < k {
            let (a, b) = (c * k + j, c * k + j + 1);
            let log_acc = (reps.beta[a] - reps.beta[b]) * (reps.lp[b] - reps.lp[a]);
            attempts[j] += 1;
            // both finite: replicas never hold invalid states
            if log_acc >= 0.0 || rng.random::<f64>() < log_acc.exp() {
                reps.swap(a, b);
                accepts[j] += 1;
            }
            j += 2;
        }
    }
}
