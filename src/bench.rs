//! Benchmarks printed by `idem bench`: wall time of the DEM score target at the reference's batch
//! shapes, next to the published PyTorch reference's time on the same 2-core machine.
//!
//! What is timed: one call of [`DemTarget::estimate`] for B points with K Monte-Carlo samples each
//! (noise generation, B·K log p + ∇log p evaluations, online log-sum-exp, normalisation), using
//! all threads of the rayon pool. One warm-up call, then `repeats` timed calls with fresh seeds;
//! the median is reported (and the minimum).
//!
//! Inputs: times t ~ U(0, 1); points near the target's typical set — exact GMM-40 samples; DW-4
//! particles at the corners of a square of side 4; LJ particles on a cubic lattice of spacing 1.1
//! — each with small Gaussian jitter. The cost per sample does not depend on the values except
//! through the GMM's log-sum-exp cut-off, which is why GMM points come from the target itself.

use std::time::Instant;

use rand::RngExt;
use rand_distr::StandardNormal;
use serde::Serialize;

use crate::dem_target::DemTarget;
use crate::energy::{Gmm, Target};
use crate::error::{Error, Result};
use crate::noise_schedule::NoiseSchedule;
use crate::rng::stream;

/// One benchmark shape.
#[derive(Clone, Debug)]
pub struct TargetCase {
    pub task: &'static str,
    pub target: &'static str,
    pub b: usize,
    pub k: usize,
    pub schedule: NoiseSchedule,
    /// σ_b of the blended estimator (`None`: the reference's S_K), target coordinates.
    pub blend_sigma: Option<f64>,
    /// The published reference's time per batch (torch.vmap + autograd, 2 threads): built in,
    /// the figures of `../shared/data/reference/timings.json` (2026-12-03, an Intel Xeon with
    /// AVX-512); replaced by a same-run measurement with [`with_reference_ms`].
    pub reference_ms: f64,
}

/// The reference shapes of issue 2: GMM B=512 K=500, DW-4 B=512 K=1000, LJ-13 B=512 K=1000,
/// LJ-55 B=128 K=1000, with the reference's noise schedules (GMM in target coordinates: the
/// reference's σ ∈ [1e-5, 1] on coordinates divided by 50).
pub fn target_cases() -> Vec<TargetCase> {
    let geo = |a, b| NoiseSchedule::geometric(a, b).expect("valid schedule");
    vec![
        TargetCase {
            task: "gmm",
            target: "gmm40",
            b: 512,
            k: 500,
            schedule: geo(5e-4, 50.0),
            blend_sigma: None,
            reference_ms: 815.9,
        },
        // the `gmm-idem` preset's estimator (blend at the mode width); the reference has no blend,
        // its time is the plain estimator's
        TargetCase {
            task: "gmm-blend",
            target: "gmm40",
            b: 512,
            k: 500,
            schedule: geo(5e-4, 50.0),
            blend_sigma: Some(1.3133),
            reference_ms: 815.9,
        },
        TargetCase {
            task: "dw4",
            target: "dw4",
            b: 512,
            k: 1000,
            schedule: geo(1e-5, 3.0),
            blend_sigma: None,
            reference_ms: 249.7,
        },
        TargetCase {
            task: "lj13",
            target: "lj13",
            b: 512,
            k: 1000,
            schedule: geo(0.01, 2.0),
            blend_sigma: None,
            reference_ms: 14_666.0,
        },
        TargetCase {
            task: "lj55",
            target: "lj55",
            b: 128,
            k: 1000,
            schedule: geo(0.5, 4.0),
            blend_sigma: None,
            reference_ms: 64_632.6,
        },
    ]
}

/// The reference's milliseconds per target from a JSON file in the format of
/// `../shared/data/reference/timings.json`: `{"reference_ms": {"gmm40": {"ms": 571.8, ...}, ...}}`
/// (keys are target names: gmm40, dw4, lj13, lj55). Measure the reference in the same session
/// as idem — the same workload ran 439 and 816 ms on two machines of one kind.
pub fn reference_ms_from_json(text: &str) -> Result<std::collections::BTreeMap<String, f64>> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::Config(format!("reference timings: not JSON ({e})")))?;
    let table = v
        .get("reference_ms")
        .and_then(|t| t.as_object())
        .ok_or_else(|| Error::Config("reference timings: no \"reference_ms\" object".into()))?;
    let mut out = std::collections::BTreeMap::new();
    for (target, entry) in table {
        let ms = entry
            .get("ms")
            .and_then(|m| m.as_f64())
            .filter(|m| m.is_finite() && *m > 0.0)
            .ok_or_else(|| {
                Error::Config(format!(
                    "reference timings: {target} has no positive \"ms\""
                ))
            })?;
        out.insert(target.clone(), ms);
    }
    Ok(out)
}

/// `cases` with their reference times replaced by `reference` (target name → ms); an error
/// naming the targets that `reference` lacks.
pub fn with_reference_ms(
    mut cases: Vec<TargetCase>,
    reference: &std::collections::BTreeMap<String, f64>,
) -> Result<Vec<TargetCase>> {
    let missing: Vec<&str> = cases
        .iter()
        .filter(|c| !reference.contains_key(c.target))
        .map(|c| c.target)
        .collect();
    if !missing.is_empty() {
        return Err(Error::Config(format!(
            "reference timings lack {}; measure them or leave those tasks out with --only",
            missing.join(", ")
        )));
    }
    for c in &mut cases {
        c.reference_ms = reference[c.target];
    }
    Ok(cases)
}

/// Measured figures for one shape (one JSON line with `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct TargetResult {
    pub task: String,
    #[serde(rename = "B")]
    pub b: usize,
    #[serde(rename = "K")]
    pub k: usize,
    /// Median ms per batch.
    pub ms: f64,
    /// Fastest ms per batch.
    pub min_ms: f64,
    /// log p + gradient evaluations per second (B·K / median time).
    pub evals_per_s: f64,
    /// Unordered particle pairs i<j evaluated per second, for pair-potential targets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pair_terms_per_s: Option<f64>,
    /// For Lennard-Jones: the kernel's GFLOP/s over the whole estimate (pairs ×
    /// [`LJ_FLOPS_PER_PAIR`] / time, so noise, weights and accumulation count as time spent at 0
    /// flops) and its fraction of the machine's FMA peak ([`fma_peak_gflops`], measured before
    /// the case).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lj_gflops: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fma_peak_gflops: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fraction_of_fma_peak: Option<f64>,
    pub reference_ms: f64,
    /// reference_ms / ms.
    pub speedup: f64,
    pub threads: usize,
    pub repeats: usize,
}

/// Points at which a case is timed (see module docs).
pub fn bench_points(target: &Target, b: usize, seed: u64) -> Vec<f32> {
    let mut rng = stream(seed, 0);
    let mut jitter = |scale: f32| scale * rng.sample::<f32, _>(StandardNormal);
    match target.particles() {
        None => Gmm::gmm40().sample(b, &mut stream(seed, 1)),
        Some(p) => {
            let side = (p.n_particles as f64)
                .powf(1.0 / p.spatial_dim as f64)
                .ceil() as usize;
            let spacing = if p.spatial_dim == 2 { 4.0 } else { 1.1 };
            let mut x = Vec::with_capacity(b * p.dim());
            for _ in 0..b {
                for i in 0..p.n_particles {
                    let mut idx = i;
                    for _ in 0..p.spatial_dim {
                        x.push((idx % side) as f32 * spacing + jitter(0.05));
                        idx /= side;
                    }
                }
            }
            crate::energy::particles::remove_mean(&mut x, p);
            x
        }
    }
}

/// Time one case.
pub fn run_target_case(case: &TargetCase, repeats: usize, seed: u64) -> Result<TargetResult> {
    let target = Target::by_name(case.target)?;
    let is_lj = case.target.starts_with("lj");
    let peak = is_lj.then(|| fma_peak_gflops(5));
    let dem = DemTarget::new(case.schedule, case.k, None)?.with_blend(case.blend_sigma)?;
    let x = bench_points(&target, case.b, seed);
    let mut rng = stream(seed, 2);
    let t: Vec<f32> = (0..case.b).map(|_| rng.random::<f32>()).collect();
    let mut out = vec![0.0f32; x.len()];
    dem.estimate(&target, &x, &t, seed, &mut out)?; // warm-up
    let mut times = Vec::with_capacity(repeats);
    for r in 0..repeats.max(1) {
        let start = Instant::now();
        dem.estimate(&target, &x, &t, seed.wrapping_add(1 + r as u64), &mut out)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let ms = times[times.len() / 2];
    let evals = (case.b * case.k) as f64;
    let pairs_per_s = target
        .particles()
        .map(|p| evals * p.n_pairs() as f64 / (ms / 1e3));
    let lj_gflops = pairs_per_s
        .filter(|_| is_lj)
        .map(|p| p * LJ_FLOPS_PER_PAIR / 1e9);
    Ok(TargetResult {
        lj_gflops,
        fma_peak_gflops: peak,
        fraction_of_fma_peak: lj_gflops.zip(peak).map(|(g, p)| g / p),
        task: case.task.to_string(),
        b: case.b,
        k: case.k,
        ms,
        min_ms: times[0],
        evals_per_s: evals / (ms / 1e3),
        pair_terms_per_s: pairs_per_s,
        reference_ms: case.reference_ms,
        speedup: case.reference_ms / ms,
        threads: rayon::current_num_threads(),
        repeats: times.len(),
    })
}

/// One EGNN timing shape: the reference architecture of a particle task.
#[derive(Clone, Debug)]
pub struct NetCase {
    pub task: &'static str,
    pub target: &'static str,
    pub layers: usize,
    pub hidden: usize,
    /// Training batch and sampler batch.
    pub train_b: usize,
    pub sample_b: usize,
    /// The published reference's seconds per EGNN train step and per sampler step on this
    /// machine (2 threads), as ms.
    pub reference_train_ms: f64,
    pub reference_sample_ms: f64,
}

/// DW-4 (3×128, train B = 512, sampler B = 1000), LJ-13 (5×128, 512, 1000), LJ-55 (5×128, 128,
/// 128): the reference's architectures and batch sizes; and `lj55-fast` (4×64, 128, 128): the
/// network of the preset of that name, timed against the reference architecture's figures.
pub fn net_cases() -> Vec<NetCase> {
    vec![
        NetCase {
            task: "dw4",
            target: "dw4",
            layers: 3,
            hidden: 128,
            train_b: 512,
            sample_b: 1000,
            reference_train_ms: 140.0,
            reference_sample_ms: 100.0,
        },
        NetCase {
            task: "lj13",
            target: "lj13",
            layers: 5,
            hidden: 128,
            train_b: 512,
            sample_b: 1000,
            reference_train_ms: 4_100.0,
            reference_sample_ms: 3_600.0,
        },
        NetCase {
            task: "lj55",
            target: "lj55",
            layers: 5,
            hidden: 128,
            train_b: 128,
            sample_b: 128,
            reference_train_ms: 22_000.0,
            reference_sample_ms: 7_000.0,
        },
        // the `lj55-fast` preset's network at the same batches, beside the reference
        // architecture's figures: the speed-up is architecture and code together
        NetCase {
            task: "lj55-fast",
            target: "lj55",
            layers: 4,
            hidden: 64,
            train_b: 128,
            sample_b: 128,
            reference_train_ms: 22_000.0,
            reference_sample_ms: 7_000.0,
        },
    ]
}

/// Measured EGNN figures for one shape (one JSON line with `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct NetResult {
    pub task: String,
    pub layers: usize,
    pub hidden: usize,
    #[serde(rename = "B_train")]
    pub b_train: usize,
    #[serde(rename = "B_sample")]
    pub b_sample: usize,
    /// Median ms of one training step: forward, λ-weighted squared-error loss, backward,
    /// gradient-norm clipping and the Adam update.
    pub train_ms: f64,
    /// Median ms of one reverse-SDE step: a forward pass without gradients and the update.
    pub sample_ms: f64,
    pub reference_train_ms: f64,
    pub reference_sample_ms: f64,
    pub train_speedup: f64,
    pub sample_speedup: f64,
    /// Matrix-product GFLOP/s of the fused kernels in the two steps ([`egnn_matmul_flops`] /
    /// time; the element-wise work, gathers and scatters come on top, uncounted).
    pub train_gflops: f64,
    pub sample_gflops: f64,
    /// This machine's single-precision matrix-product throughput measured just before the case
    /// ([`gemm_gflops`]): the ceiling for the two figures above, and the way to tell a slow
    /// host from slow code when timings drift between runs.
    pub machine_gemm_gflops: f64,
    pub threads: usize,
    pub repeats: usize,
}

/// Floating-point operations (2 per multiply-add) of the matrix products in the fused CPU EGNN
/// ([`crate::net::egnn_cpu`]) for a batch of `b` configurations of `n` particles, width `h`,
/// `layers` layers. Forward, per configuration and layer: the two edge products
/// (`W₂`, `W_c1`) over the n(n − 1) edges (layer 0, whose edge MLP is symmetric in i and j:
/// over the n(n − 1)/2 pairs), the split first edge layer `P`, `Q` over the n nodes
/// and, except in the last layer, the node MLP (`W_n1` is `[H, 2H]`, `W_n2` `[H, H]`); in layer 0,
/// whose node features depend on t alone, `P`, `Q` and the h-half of `W_n1` take one row per
/// configuration instead of n. Training
/// adds the backward pass (a weight-gradient and an input-gradient product per forward product)
/// and, when the edge activations are not cached, a second forward of the edge products.
pub fn egnn_matmul_flops(
    n: usize,
    h: usize,
    layers: usize,
    b: usize,
    train: bool,
    edges_cached: bool,
) -> f64 {
    let (n, h2, l) = (n as f64, (h * h) as f64, layers as f64);
    let e = n * (n - 1.0);
    let edge = (l - 0.5) * e * 2.0 * h2;
    let pq = ((l - 1.0) * n + 1.0) * 2.0 * h2;
    // non-last layers: [h, agg]·W_n1ᵀ and W_n2 over n rows, except layer 0's h-half (1 row)
    let node = if layers > 1 {
        ((l - 1.0) * n * 3.0 - (n - 1.0)) * h2
    } else {
        0.0
    };
    let forward = edge + pq + node;
    let macs = if train {
        let recompute = if edges_cached { 0.0 } else { edge };
        3.0 * forward + recompute
    } else {
        forward
    };
    2.0 * macs * b as f64
}

/// Rows of the matrix product [`gemm_gflops`] times: the edge rows of one kernel chunk.
const GEMM_ROWS: usize = 768;

/// Single-precision GFLOP/s of `[768 × h]·[h × h]` products (the EGNN's edge layer on one chunk,
/// [`crate::net::dense::gemm_nt`]) run concurrently on every thread of the pool: median of
/// `repeats` timings of 64 products per thread.
pub fn gemm_gflops(h: usize, repeats: usize) -> f64 {
    use crate::net::dense::gemm_nt;
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    let a: Vec<f32> = (0..GEMM_ROWS * h).map(|i| (i % 7) as f32 * 0.1).collect();
    let w: Vec<f32> = (0..h * h).map(|i| (i % 5) as f32 * 0.01).collect();
    let per_thread = 64;
    let (ms, _) = median_ms(repeats, || {
        (0..threads).into_par_iter().for_each(|_| {
            let mut c = vec![0.0f32; GEMM_ROWS * h];
            for _ in 0..per_thread {
                gemm_nt(GEMM_ROWS, h, h, &a, h, &w, h, &mut c, h, false);
            }
            std::hint::black_box(&c);
        });
        Ok(())
    })
    .expect("the product cannot fail");
    let flops = 2.0 * (GEMM_ROWS * h * h) as f64 * (per_thread * threads) as f64;
    flops / (ms * 1e6)
}

/// The machine's f32 FMA peak in GFLOP/s on all threads of the pool (an FMA counts 2 flops):
/// every thread runs 12 independent chains of fused multiply-adds on the widest vectors the CPU
/// has (AVX-512: 16 lanes, AVX2 + FMA: 8 lanes; enough chains to cover the FMA units' latency ×
/// throughput), written with explicit intrinsics — left to the auto-vectoriser, rustc 1.95
/// turned the same loop into gathers and scatters across chains and "measured" 4 GFLOP/s on a
/// Zen 4. Other CPUs: scalar multiply-adds. Median of `repeats`.
pub fn fma_peak_gflops(repeats: usize) -> f64 {
    use rayon::prelude::*;
    const ITERS: usize = 1 << 20;
    let threads = rayon::current_num_threads();
    let mut flops = 0.0;
    let (ms, _) = median_ms(repeats, || {
        flops = (0..threads)
            .into_par_iter()
            .map(|i| {
                let seed = std::hint::black_box(1.0 + i as f32 * 1e-3);
                let (r, flops) = fma_chains(seed, ITERS);
                std::hint::black_box(r);
                flops
            })
            .sum();
        Ok(())
    })
    .expect("cannot fail");
    flops / (ms * 1e6)
}

/// Chains of the FMA peak measurement: `iters` rounds of 12 independent vector FMAs; returns a
/// value depending on every chain and the flops done.
fn fma_chains(seed: f32, iters: usize) -> (f32, f64) {
    const CHAINS: usize = 12;
    let (a, b) = (
        std::hint::black_box(0.999_999f32),
        std::hint::black_box(1e-7f32),
    );
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        if crate::simd::has_avx512() {
            #[target_feature(enable = "avx512f")]
            unsafe fn run(seed: f32, a: f32, b: f32, iters: usize) -> f32 {
                let (va, vb) = (_mm512_set1_ps(a), _mm512_set1_ps(b));
                let mut acc = [_mm512_set1_ps(seed); CHAINS];
                for _ in 0..iters {
                    for v in acc.iter_mut() {
                        *v = _mm512_fmadd_ps(*v, va, vb);
                    }
                }
                acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
            }
            // SAFETY: the CPU has AVX-512F.
            let r = unsafe { run(seed, a, b, iters) };
            return (r, (2 * 16 * CHAINS * iters) as f64);
        }
        if crate::simd::has_avx2() {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn run(seed: f32, a: f32, b: f32, iters: usize) -> f32 {
                let (va, vb) = (_mm256_set1_ps(a), _mm256_set1_ps(b));
                let mut acc = [_mm256_set1_ps(seed); CHAINS];
                for _ in 0..iters {
                    for v in acc.iter_mut() {
                        *v = _mm256_fmadd_ps(*v, va, vb);
                    }
                }
                let mut lanes = [0.0f32; 8];
                let mut total = 0.0;
                for &v in &acc {
                    _mm256_storeu_ps(lanes.as_mut_ptr(), v);
                    total += lanes.iter().sum::<f32>();
                }
                total
            }
            // SAFETY: the CPU has AVX2 and FMA.
            let r = unsafe { run(seed, a, b, iters) };
            return (r, (2 * 8 * CHAINS * iters) as f64);
        }
    }
    let mut acc = [seed; CHAINS];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = *v * a + b;
        }
    }
    (acc.iter().sum(), (2 * CHAINS * iters) as f64)
}

/// Floating-point operations of the Lennard-Jones block kernel per pair and configuration:
/// distance 3 subtractions + 3 FMAs (9), (r_m/d)² one division (1), s³ and s⁶ (3), the log p term
/// (3), the force coefficient (3), the gradient 3 × (subtraction, product, two updates) (12).
pub const LJ_FLOPS_PER_PAIR: f64 = 31.0;

fn median_ms(repeats: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, usize)> {
    f()?; // warm-up
    let mut times = Vec::with_capacity(repeats.max(1));
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times.len()))
}

/// Time the EGNN of one case on the CPU device.
pub fn run_net_case(case: &NetCase, repeats: usize, seed: u64) -> Result<NetResult> {
    use crate::net::optim::Adam;
    use crate::net::{Egnn, EgnnConfig, Params, ScoreNet};
    use candle_core::{Device, Tensor};
    let target = Target::by_name(case.target)?;
    let p = target
        .particles()
        .expect("net benchmarks are particle targets");
    let gemm = gemm_gflops(case.hidden, repeats);
    let dev = Device::Cpu;
    let mut params = Params::new(&dev);
    let cfg = EgnnConfig {
        hidden: case.hidden,
        layers: case.layers,
        ..EgnnConfig::default()
    };
    let net = Egnn::new(
        &mut params,
        p.n_particles,
        p.spatial_dim,
        &cfg,
        &mut stream(seed, 9),
    )?;
    let mut adam = Adam::new(&params)?;
    let dim = target.dim();
    let xb = bench_points(&target, case.train_b, seed);
    let x = Tensor::from_vec(xb, (case.train_b, dim), &dev)?;
    let t = Tensor::from_vec(
        (0..case.train_b)
            .map(|i| (i as f32 + 0.5) / case.train_b as f32)
            .collect::<Vec<_>>(),
        case.train_b,
        &dev,
    )?;
    let y = x.affine(-0.5, 0.0)?;
    let (train_ms, repeats_done) = median_ms(repeats, || {
        let loss = (net.forward(&x, &t)? - &y)?.sqr()?.mean_all()?;
        let grads = loss.backward()?;
        adam.step(&grads, 1e-4, Some(1.0))?;
        Ok(())
    })?;
    let xs = Tensor::from_vec(
        bench_points(&target, case.sample_b, seed ^ 1),
        (case.sample_b, dim),
        &dev,
    )?;
    let ts = Tensor::full(0.5f32, case.sample_b, &dev)?;
    let infer = net.detached();
    let (sample_ms, _) = median_ms(repeats, || {
        let s = infer.forward(&xs, &ts)?;
        let _next = (&xs + s.affine(1e-3, 0.0)?)?;
        Ok(())
    })?;
    let cached = net.caches_edges(case.train_b);
    let flops =
        |b, train| egnn_matmul_flops(p.n_particles, case.hidden, case.layers, b, train, cached);
    Ok(NetResult {
        train_gflops: flops(case.train_b, true) / (train_ms * 1e6),
        sample_gflops: flops(case.sample_b, false) / (sample_ms * 1e6),
        machine_gemm_gflops: gemm,
        task: case.task.to_string(),
        layers: case.layers,
        hidden: case.hidden,
        b_train: case.train_b,
        b_sample: case.sample_b,
        train_ms,
        sample_ms,
        reference_train_ms: case.reference_train_ms,
        reference_sample_ms: case.reference_sample_ms,
        train_speedup: case.reference_train_ms / train_ms,
        sample_speedup: case.reference_sample_ms / sample_ms,
        threads: rayon::current_num_threads(),
        repeats: repeats_done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fma_chains_compute_the_multiply_add_recursion() {
        // v ← a·v + b from v₀ = seed, in every lane of every chain
        let (seed, iters) = (1.5f32, 10);
        let (sum, flops) = fma_chains(seed, iters);
        let lanes = flops / (2.0 * iters as f64);
        assert!(lanes >= 12.0 && lanes.fract() == 0.0, "{lanes}");
        let (a, b) = (0.999_999f64, 1e-7f64);
        let mut v = seed as f64;
        for _ in 0..iters {
            v = a * v + b;
        }
        let per_lane = sum as f64 / lanes;
        assert!((per_lane - v).abs() < 1e-5, "{per_lane} vs {v}");
    }

    #[test]
    fn reference_timings_are_read_and_replace_the_built_in_figures() {
        let text = r#"{"what": "x", "reference_ms": {"gmm40": {"B": 512, "K": 500, "ms": 571.8},
            "dw4": {"ms": 174.4}, "lj13": {"ms": 9000}, "lj55": {"ms": 50000.5}}}"#;
        let r = reference_ms_from_json(text).unwrap();
        let cases = with_reference_ms(target_cases(), &r).unwrap();
        let gmm: Vec<f64> = cases
            .iter()
            .filter(|c| c.target == "gmm40")
            .map(|c| c.reference_ms)
            .collect();
        assert_eq!(gmm, vec![571.8, 571.8]);
        assert_eq!(
            cases
                .iter()
                .find(|c| c.task == "lj55")
                .unwrap()
                .reference_ms,
            50000.5
        );
        // a file without LJ-55 cannot time the LJ-55 case
        let partial = reference_ms_from_json(r#"{"reference_ms": {"gmm40": {"ms": 1}}}"#).unwrap();
        let err = with_reference_ms(target_cases(), &partial)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dw4") && err.contains("lj55"), "{err}");
        for bad in [
            "not json",
            r#"{"ms": 3}"#,
            r#"{"reference_ms": {"dw4": {"ms": -1}}}"#,
            r#"{"reference_ms": {"dw4": {}}}"#,
        ] {
            assert!(reference_ms_from_json(bad).is_err(), "{bad}");
        }
    }
}
