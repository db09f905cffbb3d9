//! Boltzmann targets p(x) ∝ exp(−E(x)): log-density and its analytic gradient.
//!
//! * [`Energy`] is the per-configuration kernel a target implements: `log p(x)` and `∇log p(x)`
//!   for one configuration, in f64, allocation-free.
//! * [`Target`] wraps an `Energy` with what every caller needs: batched, multi-threaded evaluation
//!   of `[N, dim]` f32 arrays, an energy-evaluation counter, and the validity rule below.
//!
//! # Validity rule (invariant)
//! A configuration whose log p or gradient is not finite (e.g. two Lennard-Jones particles at
//! (near-)zero distance, where the energy or the force overflows) is **invalid**: its log p is
//! reported as `−inf` and its gradient as exactly `0`. No NaN ever leaves this module, and the
//! caller tells an invalid configuration by `!logp.is_finite()`. Batch calls return how many
//! configurations were invalid.

pub mod batch;
pub mod double_well;
pub mod gmm;
mod gmm40_table;
pub mod lennard_jones;
pub mod particles;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{Error, Result};
pub use batch::BatchEnergy;
pub use double_well::DoubleWell;
pub use gmm::Gmm;
pub use lennard_jones::LennardJones;
pub use particles::ParticleShape;

/// A log-density log p(x) = −E(x) (+ const) with an analytic gradient, for one configuration.
///
/// Implementations must be pure functions of `x` (no interior state), thread-safe and
/// allocation-free; they are called from many threads at once on hot paths.
pub trait Energy: Send + Sync {
    /// Short name, e.g. `lj13`.
    fn name(&self) -> String;
    /// Number of coordinates of one configuration.
    fn dim(&self) -> usize;
    /// Particle structure (n_particles × spatial_dim = dim) for n-body targets.
    fn particles(&self) -> Option<ParticleShape> {
        None
    }
    /// Whether log p is normalised (integrates to one), e.g. the Gaussian mixture.
    fn is_normalized(&self) -> bool {
        false
    }
    /// The target as a Gaussian mixture, where it is one (for per-mode metrics).
    fn as_mixture(&self) -> Option<&Gmm> {
        None
    }
    /// log p(x). `x.len() == dim()`.
    fn log_prob(&self, x: &[f64]) -> f64;
    /// log p(x), writing ∇ₓ log p(x) into `grad` (overwritten). `x.len() == grad.len() == dim()`.
    fn log_prob_grad(&self, x: &[f64], grad: &mut [f64]) -> f64;
    /// log p and ∇log p for `n = lp.len()` configurations at once, stored **coordinate-major**:
    /// coordinate `d` of configuration `j` is `xs[d * n + j]`, and likewise for `grads`. Applies the
    /// validity rule of [`checked_log_prob_grad`] (an invalid configuration gets log p = −inf and a
    /// zero gradient) and returns the number of invalid configurations.
    ///
    /// The DEM target calls this once per block of Monte-Carlo samples. The default gathers one
    /// configuration at a time; targets override it with a kernel vectorised across
    /// configurations, which the coordinate-major layout makes contiguous. Overrides must agree
    /// with `log_prob_grad`.
    fn log_prob_grad_block(&self, xs: &[f64], lp: &mut [f64], grads: &mut [f64]) -> usize {
        log_prob_grad_each(self, xs, lp, grads)
    }
}

/// Largest `dim` for which [`log_prob_grad_each`] gathers on the stack (larger dims allocate one
/// buffer per call, i.e. per block of configurations).
const GATHER_STACK_DIM: usize = 256;

/// The default [`Energy::log_prob_grad_block`]: gathers each configuration from the
/// coordinate-major block and evaluates it with [`checked_log_prob_grad`]'s rule.
pub fn log_prob_grad_each<E: Energy + ?Sized>(
    energy: &E,
    xs: &[f64],
    lp: &mut [f64],
    grads: &mut [f64],
) -> usize {
    let n = lp.len();
    log_prob_grad_lanes(energy, xs, lp, grads, 0..n)
}

/// The end of a block kernel vectorised across `L` configurations (lanes `j0..j0 + m` of the
/// coordinate-major block `xs`): writes the lanes' gradients (`g`, one `[f32; L]` row per
/// coordinate) and log p (`acc`); a lane whose f32 result is not finite is re-evaluated with
/// `log_prob_grad` and the validity rule instead. Returns how many lanes are invalid.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn write_block_lanes<E: Energy + ?Sized, const L: usize>(
    energy: &E,
    xs: &[f64],
    lp: &mut [f64],
    grads: &mut [f64],
    j0: usize,
    m: usize,
    acc: &[f64; L],
    g: &[[f32; L]],
) -> usize {
    let n = lp.len();
    // finiteness per lane: v·0 is 0 for finite v and NaN otherwise
    let mut finite = [0.0f32; L];
    for (f, &a) in finite.iter_mut().zip(acc.iter()) {
        *f = (a as f32) * 0.0;
    }
    for (d, gd) in g.iter().enumerate() {
        for (f, &v) in finite.iter_mut().zip(gd.iter()) {
            *f += v * 0.0;
        }
        for (o, &v) in grads[d * n + j0..d * n + j0 + m].iter_mut().zip(gd.iter()) {
            *o = f64::from(v);
        }
    }
    let mut invalid = 0;
    for jj in 0..m {
        if finite[jj] == 0.0 {
            lp[j0 + jj] = acc[jj];
        } else {
            invalid += log_prob_grad_lanes(energy, xs, lp, grads, [j0 + jj]);
        }
    }
    invalid
}

/// [`write_block_lanes`] for kernels that keep their lanes in registers: log p `acc` in f32,
/// and when every lane's result is finite (the common case) no per-lane branch.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn write_lanes_checked<E: Energy + ?Sized, const L: usize, const D: usize>(
    energy: &E,
    xs: &[f64],
    lp: &mut [f64],
    grads: &mut [f64],
    j0: usize,
    m: usize,
    acc: &[f32; L],
    g: &[[f32; L]; D],
) -> usize {
    let n = lp.len();
    // finiteness per lane: v·0 is 0 for finite v and NaN otherwise
    let mut finite = acc.map(|a| a * 0.0);
    for gd in g {
        for (f, &v) in finite.iter_mut().zip(gd.iter()) {
            *f += v * 0.0;
        }
    }
    for (d, gd) in g.iter().enumerate() {
        for (o, &v) in grads[d * n + j0..d * n + j0 + m].iter_mut().zip(gd.iter()) {
            *o = f64::from(v);
        }
    }
    for (o, &a) in lp[j0..j0 + m].iter_mut().zip(acc.iter()) {
        *o = f64::from(a);
    }
    if finite[..m].iter().all(|f| *f == 0.0) {
        return 0;
    }
    let bad = (0..m).filter(|&jj| finite[jj] != 0.0).map(|jj| j0 + jj);
    log_prob_grad_lanes(energy, xs, lp, grads, bad)
}

/// Evaluate the configurations `lanes` of a coordinate-major block (see
/// [`Energy::log_prob_grad_block`]) one at a time with `log_prob_grad` and the validity rule,
/// writing their log p and gradient. Returns how many are invalid. Vectorised kernels use it
/// for the rare lanes their fast arithmetic could not settle.
pub fn log_prob_grad_lanes<E: Energy + ?Sized>(
    energy: &E,
    xs: &[f64],
    lp: &mut [f64],
    grads: &mut [f64],
    lanes: impl IntoIterator<Item = usize>,
) -> usize {
    let dim = energy.dim();
    let n = lp.len();
    assert!(xs.len() == n * dim && grads.len() == n * dim);
    let mut stack = [0.0f64; 2 * GATHER_STACK_DIM];
    let mut heap = Vec::new();
    let buf = if dim <= GATHER_STACK_DIM {
        &mut stack[..2 * dim]
    } else {
        heap.resize(2 * dim, 0.0);
        &mut heap[..]
    };
    let (x, g) = buf.split_at_mut(dim);
    let mut invalid = 0;
    for j in lanes {
        for (d, v) in x.iter_mut().enumerate() {
            *v = xs[d * n + j];
        }
        lp[j] = checked_log_prob_grad_impl(energy, x, g).unwrap_or(f64::NEG_INFINITY);
        invalid += usize::from(lp[j] == f64::NEG_INFINITY);
        for (d, &v) in g.iter().enumerate() {
            grads[d * n + j] = v;
        }
    }
    invalid
}

#[inline(always)]
fn checked_log_prob_grad_impl<E: Energy + ?Sized>(
    energy: &E,
    x: &[f64],
    grad: &mut [f64],
) -> Option<f64> {
    let lp = energy.log_prob_grad(x, grad);
    if lp.is_finite() && grad.iter().all(|g| g.is_finite()) {
        Some(lp)
    } else {
        grad.fill(0.0);
        None
    }
}

/// Evaluate log p and ∇log p at one configuration and apply the validity rule:
/// returns `None` (and zeroes `grad`) when log p or any gradient entry is not finite.
#[inline]
pub fn checked_log_prob_grad(energy: &dyn Energy, x: &[f64], grad: &mut [f64]) -> Option<f64> {
    checked_log_prob_grad_impl(energy, x, grad)
}

/// Outcome of a batched evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Configurations evaluated.
    pub evaluated: usize,
    /// Configurations reported invalid (log p = −inf, gradient 0).
    pub invalid: usize,
}

/// A Boltzmann target: an [`Energy`] kernel or a [`BatchEnergy`], plus batched evaluation and an
/// evaluation counter.
///
/// Cloning shares the energy but starts a fresh counter.
pub struct Target {
    kind: Kind,
    calls: AtomicU64,
}

/// What evaluates a target's log p: a per-configuration Rust kernel or a whole-batch callee.
#[derive(Clone)]
enum Kind {
    Kernel(Arc<dyn Energy>),
    Batch(Arc<dyn BatchEnergy>),
}

impl Clone for Target {
    fn clone(&self) -> Self {
        Self {
            kind: self.kind.clone(),
            calls: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name())
            .field("dim", &self.dim())
            .field("calls", &self.calls())
            .finish()
    }
}

/// Built-in target names with a one-line description, for help texts and `idem targets`.
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "gmm40",
        "40-mode Gaussian mixture in 2-D (the reference GMM-40 instance), normalised",
    ),
    (
        "dw4",
        "4-particle double well in 2-D: sum over pairs i<j of 0.9(d-4)^4 - 4(d-4)^2",
    ),
    (
        "lj13",
        "Lennard-Jones cluster, 13 particles in 3-D (reference conventions)",
    ),
    (
        "lj55",
        "Lennard-Jones cluster, 55 particles in 3-D (reference conventions)",
    ),
    (
        "ljN",
        "Lennard-Jones cluster with any N >= 2 particles in 3-D, e.g. lj38",
    ),
];

impl Target {
    /// Wrap a per-configuration energy kernel.
    pub fn new(energy: impl Energy + 'static) -> Self {
        Self::from_kernel(Arc::new(energy))
    }

    /// Wrap a shared per-configuration energy kernel.
    pub fn from_kernel(energy: Arc<dyn Energy>) -> Self {
        Self {
            kind: Kind::Kernel(energy),
            calls: AtomicU64::new(0),
        }
    }

    /// Wrap an energy evaluated on whole batches ([`batch`] module docs): a Python function, a
    /// model on an accelerator. Fails for `dim() == 0` or a particle shape that does not match
    /// `dim()`.
    pub fn from_batch(energy: Arc<dyn BatchEnergy>) -> Result<Self> {
        let dim = energy.dim();
        if dim == 0 || energy.max_rows() == 0 {
            return Err(Error::Config(format!(
                "target {}: dim and max_rows must be positive",
                energy.name()
            )));
        }
        if let Some(p) = energy.particles() {
            if p.n_particles * p.spatial_dim != dim || p.n_particles < 2 || p.spatial_dim == 0 {
                return Err(Error::Config(format!(
                    "target {}: {} particles × {} spatial dimensions does not match dim {dim} \
                     (needs at least 2 particles)",
                    energy.name(),
                    p.n_particles,
                    p.spatial_dim
                )));
            }
        }
        Ok(Self {
            kind: Kind::Batch(energy),
            calls: AtomicU64::new(0),
        })
    }

    /// A built-in target by name: `gmm40`, `dw4`, `lj13`, `lj55`, or `ljN` for any N ≥ 2.
    pub fn by_name(name: &str) -> Result<Self> {
        let lower = name.trim().to_ascii_lowercase();
        match lower.as_str() {
            "gmm40" | "gmm" => Ok(Self::new(Gmm::gmm40())),
            "dw4" => Ok(Self::new(DoubleWell::dw4())),
            _ => {
                if let Some(n) = lower
                    .strip_prefix("lj")
                    .and_then(|s| s.parse::<usize>().ok())
                {
                    if n >= 2 {
                        return Ok(Self::new(LennardJones::reference(n)));
                    }
                }
                Err(Error::UnknownTarget {
                    name: name.to_string(),
                    known: BUILT_IN
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
        }
    }

    /// The per-configuration kernel, for targets that have one (`None` for a [`BatchEnergy`]).
    pub fn kernel(&self) -> Option<&dyn Energy> {
        match &self.kind {
            Kind::Kernel(e) => Some(e.as_ref()),
            Kind::Batch(_) => None,
        }
    }
    /// The whole-batch energy, for targets made with [`Target::from_batch`].
    pub fn batch_energy(&self) -> Option<&dyn BatchEnergy> {
        match &self.kind {
            Kind::Kernel(_) => None,
            Kind::Batch(b) => Some(b.as_ref()),
        }
    }
    /// The target as a Gaussian mixture, where it is one (per-mode metrics).
    pub fn as_mixture(&self) -> Option<&Gmm> {
        self.kernel().and_then(|e| e.as_mixture())
    }
    /// Target name.
    pub fn name(&self) -> String {
        match &self.kind {
            Kind::Kernel(e) => e.name(),
            Kind::Batch(b) => b.name(),
        }
    }
    /// Coordinates per configuration.
    pub fn dim(&self) -> usize {
        match &self.kind {
            Kind::Kernel(e) => e.dim(),
            Kind::Batch(b) => b.dim(),
        }
    }
    /// Particle structure, for n-body targets.
    pub fn particles(&self) -> Option<ParticleShape> {
        match &self.kind {
            Kind::Kernel(e) => e.particles(),
            Kind::Batch(b) => b.particles(),
        }
    }

    /// Total number of configurations evaluated through this target (every log p or
    /// log p + gradient evaluation counts one, including the DEM target's Monte-Carlo samples).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
    /// Record `n` evaluations made directly through [`Target::energy`].
    pub fn add_calls(&self, n: u64) {
        self.calls.fetch_add(n, Ordering::Relaxed);
    }
    /// Reset the counter to zero.
    pub fn reset_calls(&self) {
        self.calls.store(0, Ordering::Relaxed);
    }

    /// Number of configurations in a flat batch `x` (an error unless it is whole rows).
    pub fn rows(&self, x: &[f32]) -> Result<usize> {
        let dim = self.dim();
        if !x.len().is_multiple_of(dim) {
            return Err(Error::Shape(format!(
                "{} values is not a whole number of {}-dimensional configurations for target {}",
                x.len(),
                dim,
                self.name()
            )));
        }
        Ok(x.len() / dim)
    }

    /// log p for a batch `x` of shape `[N, dim]` (row-major), written to `logp` (`[N]`).
    /// Multi-threaded; invalid configurations get `−inf` (see the module's validity rule).
    pub fn log_prob_batch(&self, x: &[f32], logp: &mut [f32]) -> Result<BatchReport> {
        let n = self.rows(x)?;
        if logp.len() != n {
            return Err(Error::Shape(format!(
                "logp has {} entries for {} configurations",
                logp.len(),
                n
            )));
        }
        let dim = self.dim();
        let energy = match &self.kind {
            Kind::Kernel(e) => e.as_ref(),
            Kind::Batch(b) => {
                let xs: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
                let mut lp = vec![0.0f64; n];
                let invalid = self.eval_rows(b.as_ref(), &xs, &mut lp, None)?;
                for (o, &l) in logp.iter_mut().zip(&lp) {
                    *o = l as f32; // −inf stays −inf; an f64 beyond f32 range becomes ±inf
                }
                let extra = to_f32_validity(logp, None, dim);
                self.add_calls(n as u64);
                return Ok(BatchReport {
                    evaluated: n,
                    invalid: invalid + extra,
                });
            }
        };
        let invalid = x
            .par_chunks(dim)
            .zip(logp.par_iter_mut())
            .with_min_len(64)
            .map_init(
                || vec![0.0f64; dim],
                |xs, (xi, out)| {
                    to_f64(xi, xs);
                    // an f64 log p beyond f32 range is invalid too: keep the rule "invalid ⇔ −inf"
                    let lp = energy.log_prob(xs) as f32;
                    if lp.is_finite() {
                        *out = lp;
                        0
                    } else {
                        *out = f32::NEG_INFINITY;
                        1
                    }
                },
            )
            .sum::<usize>();
        self.add_calls(n as u64);
        Ok(BatchReport {
            evaluated: n,
            invalid,
        })
    }

    /// log p and ∇log p for a batch `x` of shape `[N, dim]`; `grad` has the shape of `x`.
    /// Multi-threaded; invalid configurations get log p `−inf` and gradient 0.
    pub fn log_prob_grad_batch(
        &self,
        x: &[f32],
        logp: &mut [f32],
        grad: &mut [f32],
    ) -> Result<BatchReport> {
        let n = self.rows(x)?;
        if logp.len() != n || grad.len() != x.len() {
            return Err(Error::Shape(format!(
                "outputs have {} log p and {} gradient entries for {} configurations of dim {}",
                logp.len(),
                grad.len(),
                n,
                self.dim()
            )));
        }
        let dim = self.dim();
        let energy = match &self.kind {
            Kind::Kernel(e) => e.as_ref(),
            Kind::Batch(b) => {
                let xs: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
                let mut lp = vec![0.0f64; n];
                let mut gs = vec![0.0f64; x.len()];
                let invalid = self.eval_rows(b.as_ref(), &xs, &mut lp, Some(&mut gs))?;
                for (o, &l) in logp.iter_mut().zip(&lp) {
                    *o = l as f32;
                }
                for (o, &g) in grad.iter_mut().zip(&gs) {
                    *o = g as f32;
                }
                let extra = to_f32_validity(logp, Some(grad), dim);
                self.add_calls(n as u64);
                return Ok(BatchReport {
                    evaluated: n,
                    invalid: invalid + extra,
                });
            }
        };
        let invalid = x
            .par_chunks(dim)
            .zip(logp.par_iter_mut())
            .zip(grad.par_chunks_mut(dim))
            .with_min_len(64)
            .map_init(
                || (vec![0.0f64; dim], vec![0.0f64; dim]),
                |(xs, gs), ((xi, out), gi)| {
                    to_f64(xi, xs);
                    let valid = checked_log_prob_grad(energy, xs, gs)
                        .map(|lp| (lp as f32, gs.iter().map(|&g| g as f32)))
                        .filter(|(lp, _)| lp.is_finite());
                    match valid {
                        Some((lp, g32)) => {
                            for (o, g) in gi.iter_mut().zip(g32) {
                                *o = g;
                            }
                            if gi.iter().all(|g| g.is_finite()) {
                                *out = lp;
                                return 0;
                            }
                            gi.fill(0.0);
                            *out = f32::NEG_INFINITY;
                            1
                        }
                        None => {
                            gi.fill(0.0);
                            *out = f32::NEG_INFINITY;
                            1
                        }
                    }
                },
            )
            .sum::<usize>();
        self.add_calls(n as u64);
        Ok(BatchReport {
            evaluated: n,
            invalid,
        })
    }
}

impl Target {
    /// log p and ∇log p in f64 for a batch `x` of shape `[N, dim]` (row-major), through the
    /// energy's block kernel ([`Energy::log_prob_grad_block`], vectorised across configurations
    /// for GMM and DW) in blocks of 64 configurations on all threads. The validity rule applies
    /// (invalid ⇔ log p = −inf, gradient 0). For samplers that keep their state in f64 (MCMC).
    pub fn log_prob_grad_batch_f64(
        &self,
        x: &[f64],
        logp: &mut [f64],
        grad: &mut [f64],
    ) -> Result<BatchReport> {
        const BLOCK: usize = 64;
        let dim = self.dim();
        if !x.len().is_multiple_of(dim) || logp.len() * dim != x.len() || grad.len() != x.len() {
            return Err(Error::Shape(format!(
                "f64 batch: {} values, {} log p and {} gradient entries for dimension {dim}",
                x.len(),
                logp.len(),
                grad.len()
            )));
        }
        let n = logp.len();
        let energy = match &self.kind {
            Kind::Kernel(e) => e.as_ref(),
            Kind::Batch(b) => {
                let invalid = self.eval_rows(b.as_ref(), x, logp, Some(grad))?;
                self.add_calls(n as u64);
                return Ok(BatchReport {
                    evaluated: n,
                    invalid,
                });
            }
        };
        let invalid = x
            .par_chunks(BLOCK * dim)
            .zip(logp.par_chunks_mut(BLOCK))
            .zip(grad.par_chunks_mut(BLOCK * dim))
            .map_init(
                || (vec![0.0f64; BLOCK * dim], vec![0.0f64; BLOCK * dim]),
                |(xs, gs), ((xb, lb), gb)| {
                    let m = lb.len();
                    // row-major → coordinate-major
                    for j in 0..m {
                        for d in 0..dim {
                            xs[d * m + j] = xb[j * dim + d];
                        }
                    }
                    let bad = energy.log_prob_grad_block(&xs[..m * dim], lb, &mut gs[..m * dim]);
                    for j in 0..m {
                        for d in 0..dim {
                            gb[j * dim + d] = gs[d * m + j];
                        }
                    }
                    bad
                },
            )
            .sum::<usize>();
        self.add_calls(n as u64);
        Ok(BatchReport {
            evaluated: n,
            invalid,
        })
    }
}

impl Target {
    /// log p in f64 for a batch `x` of shape `[N, dim]` (row-major): the energy's own log p per
    /// configuration (the values `log_prob_batch` rounds to f32), or whole-batch calls. The
    /// validity rule applies (invalid ⇔ −inf). Multi-threaded; counts `N` calls.
    pub fn log_prob_batch_f64(&self, x: &[f64], logp: &mut [f64]) -> Result<BatchReport> {
        let dim = self.dim();
        if !x.len().is_multiple_of(dim) || logp.len() * dim != x.len() {
            return Err(Error::Shape(format!(
                "f64 batch: {} values and {} log p entries for dimension {dim}",
                x.len(),
                logp.len()
            )));
        }
        let n = logp.len();
        let invalid = match &self.kind {
            Kind::Batch(b) => self.eval_rows(b.as_ref(), x, logp, None)?,
            Kind::Kernel(e) => x
                .par_chunks(dim)
                .zip(logp.par_iter_mut())
                .with_min_len(64)
                .map(|(xi, out)| {
                    let lp = e.log_prob(xi);
                    *out = if lp.is_finite() {
                        lp
                    } else {
                        f64::NEG_INFINITY
                    };
                    usize::from(!lp.is_finite())
                })
                .sum(),
        };
        self.add_calls(n as u64);
        Ok(BatchReport {
            evaluated: n,
            invalid,
        })
    }

    /// Evaluate a [`BatchEnergy`] on row-major f64 configurations `x` in calls of at most
    /// `max_rows` rows (and, when the callee allows concurrent calls, of at most one call's share
    /// per worker thread, so that it runs on all threads), then apply the
    /// validity rule. Does not count calls. Returns the number of invalid configurations.
    pub(crate) fn eval_rows(
        &self,
        b: &dyn BatchEnergy,
        x: &[f64],
        lp: &mut [f64],
        grad: Option<&mut [f64]>,
    ) -> Result<usize> {
        let dim = b.dim();
        let n = lp.len();
        if n == 0 {
            return Ok(0);
        }
        // one call per thread, but no call under MIN_CALL_ROWS rows unless the batch is smaller
        const MIN_CALL_ROWS: usize = 4096;
        let concurrent = b.concurrent_calls();
        let threads = if concurrent {
            rayon::current_num_threads().max(1)
        } else {
            1
        };
        let rows = n
            .div_ceil(threads)
            .max(MIN_CALL_ROWS.min(n))
            .min(b.max_rows())
            .max(1);
        // calls per rayon task: one (concurrent), or all of them in one task (one at a time)
        let limit = if concurrent { 1 } else { usize::MAX };
        match grad {
            Some(grad) => {
                x.par_chunks(rows * dim)
                    .zip(lp.par_chunks_mut(rows))
                    .zip(grad.par_chunks_mut(rows * dim))
                    .with_min_len(limit)
                    .with_max_len(limit)
                    .try_for_each(|((xc, lc), gc)| b.log_prob_grad_rows(xc, lc, gc))?;
                Ok(lp
                    .iter_mut()
                    .zip(grad.chunks_mut(dim))
                    .map(|(l, g)| usize::from(!batch::apply_validity(l, g)))
                    .sum())
            }
            None => {
                x.par_chunks(rows * dim)
                    .zip(lp.par_chunks_mut(rows))
                    .with_min_len(limit)
                    .with_max_len(limit)
                    .try_for_each(|(xc, lc)| b.log_prob_rows(xc, lc))?;
                Ok(lp
                    .iter_mut()
                    .map(|l| usize::from(!batch::apply_validity(l, &mut [])))
                    .sum())
            }
        }
    }
}

/// After an f64 → f32 conversion: rows whose log p or gradient left f32's range (±inf) become
/// invalid (log p −inf, gradient 0), as the kernel path does. Returns how many rows newly
/// became invalid (those already at −inf are not counted again).
fn to_f32_validity(logp: &mut [f32], grad: Option<&mut [f32]>, dim: usize) -> usize {
    let mut extra = 0;
    match grad {
        Some(grad) => {
            for (l, g) in logp.iter_mut().zip(grad.chunks_mut(dim)) {
                if *l == f32::NEG_INFINITY {
                    continue;
                }
                if !(l.is_finite() && g.iter().all(|v| v.is_finite())) {
                    *l = f32::NEG_INFINITY;
                    g.fill(0.0);
                    extra += 1;
                }
            }
        }
        None => {
            for l in logp.iter_mut() {
                if *l != f32::NEG_INFINITY && !l.is_finite() {
                    *l = f32::NEG_INFINITY;
                    extra += 1;
                }
            }
        }
    }
    extra
}

#[inline]
pub(crate) fn to_f64(src: &[f32], dst: &mut [f64]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f64::from(*s);
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers shared by the targets' unit tests.
    use super::Energy;

    /// Central finite-difference gradient in f64 with step `eps`.
    pub fn fd_grad(e: &dyn Energy, x: &[f64], eps: f64) -> Vec<f64> {
        let mut xp = x.to_vec();
        (0..x.len())
            .map(|i| {
                xp[i] = x[i] + eps;
                let fp = e.log_prob(&xp);
                xp[i] = x[i] - eps;
                let fm = e.log_prob(&xp);
                xp[i] = x[i];
                (fp - fm) / (2.0 * eps)
            })
            .collect()
    }

    /// Assert the analytic gradient matches finite differences and `log_prob` matches
    /// `log_prob_grad`'s value.
    pub fn check_gradient(e: &dyn Energy, x: &[f64], rtol: f64) {
        let mut g = vec![0.0; x.len()];
        let lp = e.log_prob_grad(x, &mut g);
        let lp2 = e.log_prob(x);
        assert!(
            (lp - lp2).abs() <= 1e-12 * (1.0 + lp.abs()),
            "log_prob {lp2} vs log_prob_grad {lp}"
        );
        let fd = fd_grad(e, x, 1e-6);
        let scale = g.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, (a, b)) in g.iter().zip(&fd).enumerate() {
            assert!(
                (a - b).abs() <= rtol * scale,
                "grad[{i}]: analytic {a} vs finite difference {b} (scale {scale})"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_name_knows_builtins_and_rejects_others() {
        assert_eq!(Target::by_name("gmm40").unwrap().dim(), 2);
        assert_eq!(Target::by_name("DW4").unwrap().dim(), 8);
        assert_eq!(Target::by_name("lj13").unwrap().dim(), 39);
        assert_eq!(Target::by_name("lj55").unwrap().dim(), 165);
        assert_eq!(
            Target::by_name("lj38")
                .unwrap()
                .particles()
                .unwrap()
                .n_particles,
            38
        );
        for bad in ["lj1", "lj", "foo", "gmm41"] {
            let err = Target::by_name(bad).unwrap_err().to_string();
            assert!(
                err.contains("unknown target") && err.contains("gmm40"),
                "{err}"
            );
        }
    }

    #[test]
    fn batch_rejects_bad_shapes_and_counts_calls() {
        let t = Target::by_name("dw4").unwrap();
        let x = vec![0.5f32; 16];
        let mut lp = vec![0.0f32; 2];
        let mut g = vec![0.0f32; 16];
        assert!(t.log_prob_batch(&x[..15], &mut lp).is_err());
        assert!(t.log_prob_grad_batch(&x, &mut lp, &mut g[..8]).is_err());
        t.log_prob_batch(&x, &mut lp).unwrap();
        t.log_prob_grad_batch(&x, &mut lp, &mut g).unwrap();
        assert_eq!(t.calls(), 4);
        assert_eq!(t.clone().calls(), 0);
    }

    /// Every target's block evaluation (vectorised kernels included) agrees with the
    /// one-configuration path, for block sizes around the kernels' lane width, with invalid
    /// configurations mixed in.
    #[test]
    fn block_evaluation_matches_single_configurations() {
        use crate::rng::NormalStream;
        // beside the built-ins, the kernels' larger working-set sizes: a DW of 8 particles
        // (dim 16) and a mixture of 50 modes
        let dw8 = DoubleWell {
            shape: ParticleShape {
                n_particles: 8,
                spatial_dim: 2,
            },
            ..DoubleWell::dw4()
        };
        let g50 = {
            let means: Vec<f64> = (0..100)
                .map(|i| ((i * 37 % 100) as f64 - 50.0) * 0.8)
                .collect();
            Gmm::new("gmm50", &[1.0; 50], &means, &[1.5; 100]).unwrap()
        };
        let mut targets: Vec<(&str, Target)> = ["gmm40", "dw4", "lj13", "lj5", "lj55"]
            .into_iter()
            .map(|n| (n, Target::by_name(n).unwrap()))
            .collect();
        targets.push(("dw8", Target::new(dw8)));
        targets.push(("gmm50", Target::new(g50)));
        for (name, t) in targets {
            let e = t.kernel().unwrap();
            let dim = e.dim();
            let scale = if name.starts_with("gmm") { 20.0 } else { 1.2 };
            for (b, n) in [1usize, 7, 63, 64, 65, 130].into_iter().enumerate() {
                let mut z = vec![0.0f32; n * dim];
                NormalStream::new(b as u64, 9).fill(&mut z);
                // row-major configurations; make every 5th one invalid or extreme
                let mut rows: Vec<f64> = z.iter().map(|&v| f64::from(v) * scale).collect();
                for j in (0..n).step_by(5) {
                    let r = &mut rows[j * dim..(j + 1) * dim];
                    match j % 3 {
                        0 => r[0] = 1e200,                       // overflow
                        1 => r.copy_from_slice(&vec![0.5; dim]), // all particles coincide
                        _ => r[dim - 1] = f64::NAN,
                    }
                }
                let mut xs = vec![0.0; n * dim];
                for j in 0..n {
                    for d in 0..dim {
                        xs[d * n + j] = rows[j * dim + d];
                    }
                }
                let (mut lp, mut g) = (vec![0.0; n], vec![0.0; n * dim]);
                let invalid = e.log_prob_grad_block(&xs, &mut lp, &mut g);
                let mut expect_invalid = 0;
                let mut gj = vec![0.0; dim];
                for j in 0..n {
                    let want = checked_log_prob_grad(e, &rows[j * dim..(j + 1) * dim], &mut gj);
                    match want {
                        None => {
                            expect_invalid += 1;
                            assert_eq!(lp[j], f64::NEG_INFINITY, "{name} n={n} j={j}");
                            assert!((0..dim).all(|d| g[d * n + j] == 0.0));
                        }
                        Some(l) => {
                            // f32 kernels round the coordinates: a pair at distance d moves by
                            // ~u·max|x| (u = 2⁻²⁴), and LJ's (r_m/d)¹² by 12× that relative
                            // (overlapping LJ-55 draws here: d ≈ 0.15, log p ≈ −1e10)
                            let row = &rows[j * dim..(j + 1) * dim];
                            let cond = match e.particles() {
                                Some(p) if name.starts_with("lj") => {
                                    let xmax = row.iter().fold(0.0f64, |a, v| a.max(v.abs()));
                                    12.0 * f64::from(f32::EPSILON) * xmax
                                        / min_distance(row, p.spatial_dim)
                                }
                                _ => 0.0,
                            };
                            let tol = (1e-5 + cond) * l.abs().max(10.0);
                            assert!(
                                (lp[j] - l).abs() < tol,
                                "{name} n={n} j={j}: {} vs {l}",
                                lp[j]
                            );
                            let gmax = gj.iter().fold(1.0f64, |a, v| a.max(v.abs()));
                            for d in 0..dim {
                                let err = (g[d * n + j] - gj[d]).abs();
                                assert!(err < 1e-4 * gmax, "{name} n={n} j={j} d={d}: {err}");
                            }
                        }
                    }
                }
                assert_eq!(invalid, expect_invalid, "{name} n={n}");
            }
        }
    }

    fn min_distance(x: &[f64], d: usize) -> f64 {
        let n = x.len() / d;
        let mut m = f64::INFINITY;
        for a in 0..n {
            for b in a + 1..n {
                let r2: f64 = (0..d).map(|k| (x[a * d + k] - x[b * d + k]).powi(2)).sum();
                m = m.min(r2.sqrt());
            }
        }
        m
    }

    #[test]
    fn overlapping_lj_particles_are_invalid_never_nan() {
        let t = Target::by_name("lj13").unwrap();
        let mut x = vec![0.0f32; 39];
        for (i, v) in x.iter_mut().enumerate() {
            *v = (i as f32 * 0.37).sin() * 1.5;
        }
        // particle 1 on top of particle 0, then 1e-4 apart (energy ~1e48, beyond f32)
        let mut batch = x.clone();
        batch[3..6].copy_from_slice(&x[0..3]);
        let mut near = x.clone();
        near[3] = x[0] + 1e-4;
        near[4] = x[1];
        near[5] = x[2];
        batch.extend_from_slice(&near);
        batch.extend_from_slice(&x);
        let mut lp = vec![0.0f32; 3];
        let mut g = vec![1.0f32; 39 * 3];
        let rep = t.log_prob_grad_batch(&batch, &mut lp, &mut g).unwrap();
        assert_eq!(rep.invalid, 2);
        assert_eq!(lp[0], f32::NEG_INFINITY);
        assert_eq!(lp[1], f32::NEG_INFINITY);
        assert!(lp[2].is_finite());
        assert!(g[..78].iter().all(|&v| v == 0.0));
        assert!(g.iter().all(|v| v.is_finite()));
        let rep = t.log_prob_batch(&batch, &mut lp).unwrap();
        assert_eq!(rep.invalid, 2);
        assert!(lp[0] == f32::NEG_INFINITY && lp[1] == f32::NEG_INFINITY && lp[2].is_finite());
    }
}
