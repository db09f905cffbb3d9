//! Probe: importance resampling of a trained model's final samples, with two proposals: the
//! model's own probability-flow ODE (below) or a CNF fitted on its samples (`idem nll --out`;
//! the product's `reweight_proposals` option, `idem::importance_resampling`).
//!
//!     cargo run --release --example pf_importance -- RUN REFERENCE.npy [PROPOSALS [KEEP [SEED [CACHE [CNF_DIR]]]]]
//!
//! Draws PROPOSALS (default 5000) ODE samples with exact log q, weights them by p̃/q, resamples
//! KEEP (default 1000) systematically, and prints the metrics against REFERENCE of: the first KEEP
//! ODE samples, the resampled set, and the resampled set after 40 MALA steps.

use std::path::Path;

use candle_core::Device;
use idem::cnf::likelihood::{augmented, integrate_augmented, output_divergence, LogDensities};
use idem::cnf::ode::Dopri5;
use idem::cnf::Cnf;
use idem::energy::particles::remove_mean;
use idem::error::{Error, Result};
use idem::model::{shifted, ScoreModel};
use idem::rng::NormalStream;

/// Points per ODE chunk (the solver's step is shared within a chunk).
const CHUNK: usize = 500;

/// Dimension of the space the flow lives on: (n − 1)·d for particle systems, else dim.
fn flow_dim(model: &ScoreModel) -> usize {
    match model.target.particles() {
        Some(p) => (p.n_particles - 1) * p.spatial_dim,
        None => model.target.dim(),
    }
}

/// `n` samples of the model's probability-flow ODE dx/dt = −½·g(t)²·s_θ(x, t) (Song et al.
/// 2021), integrated from the prior N(0, h(1)·I) at t = 1 to t = 0, with their exact
/// log-density (target coordinates, `[n, dim]`): with da/dt = div v from a(1) = 0,
/// log q(x₀) = log N(x₁; 0, h(1)·I) − a(0), on the mean-free subspace ((n − 1)·d dimensions)
/// for particle systems, −D·ln(`data_scale`) for target coordinates. div v is the exact trace
/// (one backward pass per coordinate); q is the density of these ODE samples, not of the SDE's.
/// Nothing is clipped. Adaptive DOPRI5 over chunks of [`CHUNK`] points.
fn ode_sample_with_log_q(
    model: &ScoreModel,
    n: usize,
    seed: u64,
    solver: &Dopri5,
    mut progress: impl FnMut(usize, usize),
) -> Result<(Vec<f32>, LogDensities)> {
    let dim = model.target.dim();
    let schedule = model.cfg.schedule;
    let h1 = schedule.h(1.0);
    if !(h1.is_finite() && h1 > 0.0) {
        return Err(Error::Config(format!("prior variance h(1) = {h1}")));
    }
    let big_d = flow_dim(model) as f64;
    let s = model.scale();
    let log_prior = |y: &[f64]| -> f64 {
        let sq: f64 = y.iter().map(|v| v * v).sum();
        -0.5 * sq / h1 - 0.5 * big_d * (2.0 * std::f64::consts::PI * h1).ln()
    };
    let mut y1 = vec![0.0f32; n * dim];
    NormalStream::new(seed, 0).fill(&mut y1);
    let sd = h1.sqrt() as f32;
    y1.iter_mut().for_each(|v| *v *= sd);
    if let Some(p) = model.target.particles() {
        remove_mean(&mut y1, p);
    }
    let mean = &model.cfg.prior_mean;
    let mut field = |y: &[f32], t: f64| -> Result<(Vec<f32>, Vec<f64>)> {
        let (sc, div) = output_divergence(
            &model.infer,
            &model.device,
            &shifted(y, mean),
            t as f32,
            dim,
            None,
        )?;
        let a = -0.5 * schedule.g2(t);
        Ok((
            sc.iter().map(|v| (a * f64::from(*v)) as f32).collect(),
            div.iter().map(|d| a * d).collect(),
        ))
    };
    let shift = big_d * s.ln();
    let mut x = Vec::with_capacity(n * dim);
    let mut out = LogDensities {
        log_q: Vec::with_capacity(n),
        nfe: 0,
    };
    for chunk in y1.chunks(CHUNK * dim) {
        let mut state = augmented(chunk, dim);
        let lp1: Vec<f64> = state
            .chunks_exact(dim + 1)
            .map(|row| log_prior(&row[..dim]))
            .collect();
        out.nfe += integrate_augmented(solver, dim, &mut state, 1.0, 0.0, &mut field)?;
        for (row, l1) in state.chunks_exact(dim + 1).zip(lp1) {
            let y: Vec<f32> = row[..dim].iter().map(|&v| v as f32).collect();
            x.extend(shifted(&y, mean).iter().map(|&v| (f64::from(v) * s) as f32));
            out.log_q.push(l1 - row[dim] - shift);
        }
        progress(out.log_q.len(), n);
    }
    Ok((x, out))
}

use idem::{eval, importance_resampling, io, refine};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: pf_importance RUN REFERENCE.npy [PROPOSALS [KEEP [SEED]]]");
        std::process::exit(2);
    }
    let num = |i: usize, d: usize| args.get(i).map_or(d, |s| s.parse().unwrap());
    let (n_prop, keep, seed) = (num(3, 5000), num(4, 1000), num(5, 1) as u64);
    let model = ScoreModel::load(Path::new(&args[1]), "checkpoint.safetensors", &Device::Cpu)?;
    let target = &model.target;
    let dim = target.dim();
    let reference = io::npy::read(Path::new(&args[2]))?.data;
    let reference = &reference[..reference.len().min(10_000 * dim)];
    let t0 = std::time::Instant::now();
    // cache of the proposals and their log q: CACHE.x.npy / CACHE.lq.npy (argument 6)
    let cache = args.get(6).cloned();
    let cached = cache.as_ref().and_then(|c| {
        let x = io::npy::read(Path::new(&format!("{c}.x.npy"))).ok()?.data;
        let lq = io::npy::read(Path::new(&format!("{c}.lq.npy"))).ok()?.data;
        Some((x, lq.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>()))
    });
    let (x, log_q) = match cached {
        Some(c) => c,
        None => {
            let progress =
                |d: usize, n: usize| eprintln!("  {d}/{n} ({:.0} s)", t0.elapsed().as_secs_f64());
            // argument 7: a CNF directory (`idem nll --out`) as the proposal instead of the ODE
            let (x, lq) = match args.get(7) {
                Some(dir) => Cnf::load(Path::new(dir), &Device::Cpu)?
                    .sample_with_log_q(n_prop, seed, progress)?,
                None => ode_sample_with_log_q(&model, n_prop, seed, &Dopri5::default(), progress)?,
            };
            println!(
                "ODE: {n_prop} samples, nfe {}, {:.1} s",
                lq.nfe,
                t0.elapsed().as_secs_f64()
            );
            if let Some(c) = &cache {
                io::npy::write(Path::new(&format!("{c}.x.npy")), &x, &[n_prop, dim])?;
                let l32: Vec<f32> = lq.log_q.iter().map(|&v| v as f32).collect();
                io::npy::write(Path::new(&format!("{c}.lq.npy")), &l32, &[n_prop])?;
            }
            (x, lq.log_q)
        }
    };
    let n_prop = log_q.len();
    let mut lp = vec![0.0f64; n_prop];
    let xd: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    target.log_prob_batch_f64(&xd, &mut lp)?;
    let log_w: Vec<f64> = lp
        .iter()
        .zip(&log_q)
        .map(|(p, q)| {
            if p.is_finite() {
                p - q
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect();
    let (idx, r) = importance_resampling::systematic(&log_w, keep, seed ^ 0x77)?;
    println!("{r:?}");
    let show = |name: &str, s: &[f32]| -> Result<()> {
        let m = eval::evaluate_with(target, s, reference, true)?;
        let n = s.len() / dim;
        let sd: Vec<f64> = s.iter().map(|&v| f64::from(v)).collect();
        let mut l = vec![0.0f64; n];
        target.log_prob_batch_f64(&sd, &mut l)?;
        let mean = l.iter().filter(|v| v.is_finite()).sum::<f64>() / n as f64;
        let pick = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
        println!(
            "{name}: TV {:.3}  raw W2 {:.3}  aligned {:.3}  energy W2 {:.3}  mean log p {mean:.2}",
            pick("dist_tv"),
            pick("w2"),
            pick("aligned_w2"),
            pick("energy_w2"),
        );
        Ok(())
    };
    show("ODE (unweighted)", &x[..keep * dim])?;
    let res: Vec<f32> = idx
        .iter()
        .flat_map(|&i| x[i * dim..(i + 1) * dim].iter().copied())
        .collect();
    show("resampled", &res)?;
    if let Some(c) = &cache {
        io::npy::write(Path::new(&format!("{c}.res.npy")), &res, &[keep, dim])?;
    }
    let (refined, rep) = refine::refine(target, &res, 40, seed ^ 0x99)?;
    println!(
        "refinement: accept {:.2}, calls {}",
        rep.accept, rep.energy_calls
    );
    show("resampled + 40 MALA", &refined)?;
    Ok(())
}
