//! Energies evaluated a whole batch at a time: a user's Python (numpy, PyTorch, JAX) function, a
//! model on an accelerator, a remote service — anything whose cost per call is large next to its
//! cost per configuration, so that idem's per-configuration [`Energy`](super::Energy) kernels and
//! blocks of 64 would spend their time in call overhead.
//!
//! A [`BatchEnergy`] receives `[N, dim]` row-major f64 configurations with N up to
//! [`BatchEnergy::max_rows`] and may fail (a Python exception, a lost connection): the error stops
//! the caller — a training run ends with it, its last checkpoint intact. Wrap it in a
//! [`Target`](super::Target) with [`Target::from_batch`](super::Target::from_batch); every
//! consumer (the DEM target, MCMC, evaluation, negative-time sampler steps) then calls it with
//! whole batches. The DEM target draws all B × K Monte-Carlo configurations of a batch first and
//! evaluates them in ⌈B·K·dim / [`DEM_CALL_VALUES`]⌉ calls (a few), instead of B·K/64 block calls.
//!
//! The validity rule of the module [`energy`](super) applies to what it returns, exactly as for
//! built-in targets: a configuration whose log p or any gradient entry is not finite is invalid
//! (log p = −inf, gradient 0). Returned values are never trusted to be finite.

use crate::energy::ParticleShape;
use crate::error::Result;

/// Largest number of coordinates (rows × dim) the DEM target hands a [`BatchEnergy`] in one call
/// (and keeps in memory per call: 8 bytes each for x and ∇log p): 2²² values = 32 MiB each, e.g.
/// GMM-40 at B = 512, K = 500 (512 000 values) in one call, LJ-13 at K = 1000 in about five.
pub const DEM_CALL_VALUES: usize = 1 << 22;

/// A log-density with its gradient, evaluated on whole batches (module docs).
pub trait BatchEnergy: Send + Sync {
    /// Short name, e.g. `muller-brown`.
    fn name(&self) -> String;
    /// Coordinates per configuration.
    fn dim(&self) -> usize;
    /// Particle structure for permutation- and E(n)-invariant n-body targets (then the EGNN, the
    /// mean-free prior and the particle metrics apply).
    fn particles(&self) -> Option<ParticleShape> {
        None
    }
    /// Most configurations per call (the callee's memory; e.g. a GPU's). Calls get at most this
    /// many rows, and at most [`DEM_CALL_VALUES`] coordinates from the DEM target.
    fn max_rows(&self) -> usize {
        1 << 20
    }
    /// Whether calls may run concurrently, one per worker thread (the default). Say `false` for a
    /// callee that serialises calls or parallelises internally — a Python function (the GIL:
    /// two numpy calls from two threads ran slower here than one call on the whole batch), a
    /// PyTorch or GPU function — and every batch is evaluated in calls of `max_rows` rows, one
    /// after another.
    fn concurrent_calls(&self) -> bool {
        true
    }
    /// log p (`lp`, `[N]`) and ∇log p (`grad`, `[N, dim]` row-major) at the `N = lp.len()`
    /// configurations `x` (`[N, dim]` row-major). Values need not be finite (the caller applies
    /// the validity rule); an error stops the caller.
    fn log_prob_grad_rows(&self, x: &[f64], lp: &mut [f64], grad: &mut [f64]) -> Result<()>;
    /// log p alone (the default computes the gradient too and drops it).
    fn log_prob_rows(&self, x: &[f64], lp: &mut [f64]) -> Result<()> {
        let mut g = vec![0.0; x.len()];
        self.log_prob_grad_rows(x, lp, &mut g)
    }
}

/// The validity rule on one row: returns whether the configuration is valid; an invalid one gets
/// log p = −inf and a zero gradient.
#[inline]
pub(crate) fn apply_validity(lp: &mut f64, grad: &mut [f64]) -> bool {
    if lp.is_finite() && grad.iter().all(|g| g.is_finite()) {
        true
    } else {
        *lp = f64::NEG_INFINITY;
        grad.fill(0.0);
        false
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::energy::Target;
    use crate::error::Error;

    /// ½|x|² with NaN log p where x₀ > 1, an infinite gradient where x₀ < −1, an error where
    /// x₀ > 100; records the largest call and the most calls in flight at once.
    struct Probe {
        largest: AtomicUsize,
        calls: AtomicUsize,
        concurrent: bool,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
    }
    impl BatchEnergy for Probe {
        fn name(&self) -> String {
            "probe".into()
        }
        fn dim(&self) -> usize {
            2
        }
        fn max_rows(&self) -> usize {
            100
        }
        fn concurrent_calls(&self) -> bool {
            self.concurrent
        }
        fn log_prob_grad_rows(&self, x: &[f64], lp: &mut [f64], g: &mut [f64]) -> Result<()> {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            let r = self.eval(x, lp, g);
            // long enough for a second worker to start a call if it were allowed to
            std::thread::sleep(std::time::Duration::from_micros(200));
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            r
        }
    }
    impl Probe {
        fn eval(&self, x: &[f64], lp: &mut [f64], g: &mut [f64]) -> Result<()> {
            self.largest.fetch_max(lp.len(), Ordering::Relaxed);
            self.calls.fetch_add(1, Ordering::Relaxed);
            for ((r, l), gr) in x.chunks(2).zip(lp.iter_mut()).zip(g.chunks_mut(2)) {
                if r[0] > 100.0 {
                    return Err(Error::External("x₀ > 100".into()));
                }
                *l = if r[0] > 1.0 {
                    f64::NAN
                } else {
                    -0.5 * (r[0] * r[0] + r[1] * r[1])
                };
                gr[0] = if r[0] < -1.0 { f64::INFINITY } else { -r[0] };
                gr[1] = -r[1];
            }
            Ok(())
        }
    }

    fn probe() -> (Arc<Probe>, Target) {
        probe_with(true)
    }

    fn probe_with(concurrent: bool) -> (Arc<Probe>, Target) {
        let p = Arc::new(Probe {
            largest: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            concurrent,
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
        });
        let t = Target::from_batch(p.clone() as Arc<dyn BatchEnergy>).unwrap();
        (p, t)
    }

    #[test]
    fn batch_targets_apply_the_validity_rule_count_and_respect_max_rows() {
        let (p, t) = probe();
        let n = 1000;
        let x: Vec<f32> = (0..n)
            .flat_map(|i| [(i as f32 / n as f32) * 4.0 - 2.0, 0.5])
            .collect();
        let (mut lp, mut g) = (vec![0.0f32; n], vec![0.0f32; 2 * n]);
        let rep = t.log_prob_grad_batch(&x, &mut lp, &mut g).unwrap();
        // x₀ ∈ [−2, 2): a quarter has x₀ < −1 (infinite gradient), a quarter x₀ > 1 (NaN)
        assert_eq!(
            rep.invalid,
            (0..n)
                .filter(|i| {
                    let v = *i as f32 / n as f32 * 4.0 - 2.0;
                    !(-1.0..=1.0).contains(&v)
                })
                .count()
        );
        for (i, (&l, gr)) in lp.iter().zip(g.chunks(2)).enumerate() {
            let v = x[2 * i];
            if (-1.0..=1.0).contains(&v) {
                assert!((l + 0.5 * (v * v + 0.25)).abs() < 1e-6 && gr[0] == -v);
            } else {
                assert!(l == f32::NEG_INFINITY && gr == [0.0, 0.0]);
            }
        }
        assert!(p.largest.load(Ordering::Relaxed) <= 100);
        assert_eq!(t.calls(), n as u64);
        let mut lp64 = vec![0.0f64; n];
        let xd: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        t.log_prob_batch_f64(&xd, &mut lp64).unwrap();
        assert_eq!(t.calls(), 2 * n as u64);
        for (i, (a, b)) in lp64.iter().zip(&lp).enumerate() {
            if x[2 * i] < -1.0 {
                // log p alone is finite there (only the gradient is not)
                assert!(a.is_finite());
            } else {
                assert!((*a as f32 == *b) || (*b == f32::NEG_INFINITY && *a == f64::NEG_INFINITY));
            }
        }
        // small batches are not split into many calls
        let before = p.calls.load(Ordering::Relaxed);
        t.log_prob_batch(&x[..40], &mut lp[..20]).unwrap();
        assert_eq!(p.calls.load(Ordering::Relaxed), before + 1);
    }

    /// A callee that takes one call at a time never sees two (in the DEM target's pipeline
    /// either), and gives the same numbers as when called concurrently.
    #[test]
    fn one_call_at_a_time_when_the_callee_asks() {
        let dem = crate::DemTarget::new(
            crate::NoiseSchedule::geometric(1e-3, 1.0).unwrap(),
            64,
            None,
        )
        .unwrap();
        let n = 40;
        let x: Vec<f32> = (0..2 * n).map(|i| (i as f32 * 0.3).sin() * 0.5).collect();
        let t: Vec<f32> = (0..n).map(|i| (i as f32 + 0.5) / n as f32).collect();
        let mut outs = vec![];
        for concurrent in [true, false] {
            let (p, tg) = probe_with(concurrent);
            let (mut lp, mut g) = (vec![0.0f32; n], vec![0.0f32; 2 * n]);
            tg.log_prob_grad_batch(&x, &mut lp, &mut g).unwrap();
            let mut out = vec![0.0f32; 2 * n];
            dem.estimate(&tg, &x, &t, 9, &mut out).unwrap();
            if !concurrent {
                assert_eq!(p.most_in_flight.load(Ordering::SeqCst), 1);
            }
            assert!(p.largest.load(Ordering::Relaxed) <= 100);
            outs.push((lp, g, out));
        }
        assert_eq!(outs[0], outs[1]);
    }

    #[test]
    fn errors_of_the_energy_stop_the_caller() {
        let (_, t) = probe();
        let x = [0.0f32, 0.0, 200.0, 0.0];
        let (mut lp, mut g) = ([0.0f32; 2], [0.0f32; 4]);
        let e = t.log_prob_grad_batch(&x, &mut lp, &mut g).unwrap_err();
        assert!(matches!(e, Error::External(_)), "{e}");
        let dem = crate::DemTarget::new(
            crate::NoiseSchedule::geometric(1e-3, 1.0).unwrap(),
            16,
            None,
        )
        .unwrap();
        let mut out = [0.0f32; 4];
        assert!(dem.estimate(&t, &x, &[0.0, 0.0], 1, &mut out).is_err());
    }

    #[test]
    fn particle_shapes_must_match() {
        struct Bad;
        impl BatchEnergy for Bad {
            fn name(&self) -> String {
                "bad".into()
            }
            fn dim(&self) -> usize {
                7
            }
            fn particles(&self) -> Option<ParticleShape> {
                Some(ParticleShape {
                    n_particles: 3,
                    spatial_dim: 2,
                })
            }
            fn log_prob_grad_rows(&self, _: &[f64], _: &mut [f64], _: &mut [f64]) -> Result<()> {
                Ok(())
            }
        }
        let e = Target::from_batch(Arc::new(Bad)).unwrap_err().to_string();
        assert!(e.contains("does not match dim 7"), "{e}");
    }
}
